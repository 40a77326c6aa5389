"""The built-in STOMP broker: destinations, connections, flow control, the publish API.

No sockets: it is given a clock (anything with Twisted's ``seconds`` and
``callLater``) and reaches clients only through their
:class:`~orbited.stomp.connection.StompConnection`.  One instance per
server lives at ``context.broker``; server-side code publishes with
:meth:`StompBroker.publish`.

Flow control, in two steps.  While some subscriber's socket buffer is full,
the broker stops reading from every connection that publishes, so a burst
reaches everyone without loss and without growing buffers.  A subscriber
that stays full longer than ``flow.pause_publishers`` stops holding the
others back; its backlog may then grow to ``flow.max_pending`` bytes (or
last ``flow.stall_timeout`` seconds), after which it is disconnected with
an ERROR and a log line.  Nothing is dropped silently.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import Counter
from typing import Any

from orbited.session import file_limit
from orbited.stomp.codec import Limits
from orbited.stomp.connection import StompConnection
from orbited.stomp.destinations import (
    NOT_FORWARDED,
    Message,
    Queue,
    Subscription,
    Topic,
    UnackedBytes,
    WaitingTotal,
    destination_kind,
)
from orbited.stomp.errors import AccessRefused, DestinationFull, ProtocolError
from orbited.stomp.permissions import StompPermissions
from orbited.stomp.settings import StompSettings

log = logging.getLogger("orbited.stomp")

SHUTDOWN_MESSAGE = "server shutting down"
OVERFLOW_LOG_INTERVAL = 10.0  # seconds between two log lines about the same full queue
NEW_QUEUES = ""  # the key under which messages refused a new queue (queue.max_queues) are spaced, whatever their queue
# A client earns back this many seconds of flow.pause_publishers per second it holds no one
# back, so in the long run it can keep publishers paused about 1/11 of the time at most.
PAUSE_REFILL = 0.1
MIN_PAUSE = 0.05  # seconds: a budget smaller than this pauses no one
PATIENCE_CHECK = 0.05  # seconds between checks of the budgets of subscribers holding publishers back
BUDGETS_KEPT = 1024  # budgets of clients with no connection kept before the full ones are forgotten


class WriteBatch:
    """Holds back the writes that one input causes, so each client gets one write for it.

    A publisher's read may hold dozens of SEND frames; without this every
    subscriber would get one socket write per message.  ``with batch:``
    around the handling of one input; outboxes that see ``depth > 0`` keep
    their data and register in ``held``; when the outermost ``with`` ends,
    each of them is flushed once.  No I/O here: ``flush`` is the shell's.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.held: list[Any] = []

    def __enter__(self) -> WriteBatch:
        self.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if not self.depth and self.held:
            held, self.held = self.held, []
            for outbox in held:
                outbox.flush()


def client_of(conn: StompConnection) -> str:
    """The host a connection comes from ('127.0.0.1', '[::1]'): its client, for budgets."""
    return conn.address.rpartition(":")[0] or conn.address


class StompBroker:
    def __init__(self, settings: StompSettings, clock: Any):
        self.settings = settings
        self.clock = clock
        self.limits = Limits(settings["frame.max_size"], settings["frame.max_headers"],
                             settings["frame.max_header_size"])
        self.permissions = StompPermissions(settings)
        self.max_connections = settings["max_connections"] or max(16, file_limit() - 256)
        self.topics: dict[str, Topic] = {}
        self.queues: dict[str, Queue] = {}
        self.waiting = WaitingTotal()  # body bytes in all queues (queue.max_total_bytes)
        # and delivered, not yet acknowledged, over all connections (bounded by the same key)
        self.unacked = UnackedBytes(settings["queue.max_total_bytes"])
        self.connections: set[StompConnection] = set()
        self.publishers: set[StompConnection] = set()
        # clients (by host) whose congested subscribers hold publishers back -> (the shared time at
        # which their budget runs out, those subscribers)
        self.blocking: dict[str, tuple[float, set[StompConnection]]] = {}
        # each client's pause budget: (seconds left, as of when); see congestion_started
        self.budgets: dict[str, tuple[float, float]] = {}
        self.shared_time = 0.0  # advances at 1/n of real time while n subscribers block
        self.shared_at = 0.0  # the real time it was last advanced
        self.patience_check: Any = None
        self.stalled: dict[StompConnection, Any] = {}  # congested subscribers: their stall timers
        self.versions: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self._node = os.urandom(4).hex()
        self._message_numbers = itertools.count(1)
        self._session_ids = itertools.count(1)
        self._overflow_logged: dict[str, tuple[float | None, int]] = {}
        self.batch = WriteBatch()

    # ------------------------------------------------------------------
    # identities

    def new_message(self, destination: str, headers: dict[str, str], body: bytes) -> Message:
        """A message with the next number in publish order and a message-id made from it."""
        number = next(self._message_numbers)
        return Message(destination, f"{self._node}-{number}", headers, body, number=number)

    def new_session_id(self) -> str:
        return f"{self._node}-s{next(self._session_ids)}"

    # ------------------------------------------------------------------
    # connections

    def full(self) -> bool:
        return len(self.connections) >= self.max_connections

    def connection_opened(self, conn: StompConnection) -> None:
        self.connections.add(conn)
        self.stats["connections_total"] += 1

    def connection_ready(self, conn: StompConnection) -> None:
        self.versions[conn.version] += 1

    def connection_closed(self, conn: StompConnection) -> None:
        self.connections.discard(conn)
        self.publishers.discard(conn)
        if conn.version is not None:
            self.versions[conn.version] -= 1
            if not self.versions[conn.version]:
                del self.versions[conn.version]
        self._forget_congestion(conn)

    # ------------------------------------------------------------------
    # flow control

    def publisher_added(self, conn: StompConnection) -> None:
        self.publishers.add(conn)
        if self.blocking:
            conn.pause_reading("flow")

    def congestion_started(self, conn: StompConnection) -> None:
        """``conn``'s socket buffer is full: pause every publisher, within its budget.

        Each subscriber may hold publishers back for ``flow.pause_publishers``
        seconds, and earns that time back at PAUSE_REFILL seconds per second
        it does not.  A fresh allowance on every episode let a subscriber that
        stops reading for 1.5 s and reads for 0.3 s, over and over, keep every
        publisher paused 83% of the time without ever being a slow consumer.
        Clients that hold publishers back at the same time share the cost
        (each pays 1/n of the time while n do): a burst that fills every
        subscriber's buffer is the load itself, and pausing the publishers
        for it is the point, so it does not use up anyone's budget.
        The budget is a client's (its host), not a connection's: 20 connections
        that never read, each with a fresh budget and each paying 1/20, kept
        every publisher paused 88% of the time.
        """
        settings = self.settings
        self.stalled[conn] = self.clock.callLater(settings["flow.stall_timeout"], self._stall_timeout, conn)
        patience = settings["flow.pause_publishers"]
        if patience <= 0:
            return
        client = client_of(conn)
        if client in self.blocking:
            self.blocking[client][1].add(conn)  # already holding publishers back, on its budget
            return
        now = self.clock.seconds()
        left, since = self.budgets.get(client, (patience, now))
        left = min(patience, left + (now - since) * PAUSE_REFILL)
        self.budgets[client] = (left, now)
        if len(self.budgets) > len(self.connections) + BUDGETS_KEPT:
            self._forget_full_budgets(patience, now)
        if left < MIN_PAUSE:
            self.stats["pauses_refused"] += 1
            return
        first = not self.blocking
        self._advance()
        self.blocking[client] = (self.shared_time + left, {conn})
        if self.patience_check is None or not self.patience_check.active():
            self.patience_check = self.clock.callLater(PATIENCE_CHECK, self._check_patience)
        if first:
            self.stats["publisher_pauses"] += 1
            for publisher in list(self.publishers):
                publisher.pause_reading("flow")

    def congestion_ended(self, conn: StompConnection) -> None:
        self._forget_congestion(conn)

    def _forget_congestion(self, conn: StompConnection) -> None:
        timer = self.stalled.pop(conn, None)
        if timer is not None and timer.active():
            timer.cancel()
        client = client_of(conn)
        conns = self.blocking.get(client, (0.0, set()))[1]
        if conn in conns:
            conns.discard(conn)
            if not conns:
                self._stop_blocking(client)
                if not self.blocking:
                    self._resume_publishers()

    def _forget_full_budgets(self, patience: float, now: float) -> None:
        """Clients whose budget has refilled cost nothing to forget: they would start full."""
        for client, (left, since) in list(self.budgets.items()):
            if client not in self.blocking and left + (now - since) * PAUSE_REFILL >= patience:
                del self.budgets[client]

    def _advance(self) -> None:
        """Move the shared clock on: it runs at 1/n of real time while n subscribers block."""
        now = self.clock.seconds()
        if self.blocking:
            self.shared_time += (now - self.shared_at) / len(self.blocking)
        self.shared_at = now

    def _stop_blocking(self, client: str) -> None:
        """``client`` holds no one back any more: charge its budget for its share of the pause."""
        self._advance()
        runs_out, _conns = self.blocking.pop(client)
        now = self.clock.seconds()
        self.budgets[client] = (max(0.0, runs_out - self.shared_time), now)

    def _check_patience(self) -> None:
        """Subscribers whose budget ran out no longer hold anyone back."""
        self.patience_check = None
        if not self.blocking:
            return
        self._advance()
        for client in [client for client, (runs_out, _) in self.blocking.items() if runs_out <= self.shared_time + 1e-9]:
            self._stop_blocking(client)
        if self.blocking:
            self.patience_check = self.clock.callLater(PATIENCE_CHECK, self._check_patience)
        else:
            self._resume_publishers()

    def _stall_timeout(self, conn: StompConnection) -> None:
        self.stalled.pop(conn, None)
        if conn.congested:
            conn.slow_consumer(f"its socket buffer stayed full for {self.settings['flow.stall_timeout']:g} s "
                               "(flow.stall_timeout)")

    def _resume_publishers(self) -> None:
        for publisher in list(self.publishers):
            publisher.resume_reading("flow")
            if self.blocking:  # resuming one re-congested someone: stop here, the rest stay paused
                break

    # ------------------------------------------------------------------
    # subscriptions

    def subscribe(self, sub: Subscription) -> None:
        name = sub.destination
        if destination_kind(name) == "topic":
            target: Topic | Queue | None = self.topics.get(name)
            if target is None:
                target = self.topics[name] = Topic(name)
        else:
            target = self._queue(name, create=True)
        sub.target = target
        target.add(sub)

    def unsubscribe(self, sub: Subscription, returned: list[Message]) -> None:
        target = sub.target
        if target is None:
            return
        target.remove(sub)
        if returned:
            target.returned(returned)
        self._maybe_forget(target)

    def _queue(self, name: str, create: bool) -> Queue | None:
        queue = self.queues.get(name)
        if queue is None and create:
            settings = self.settings
            queue = self.queues[name] = Queue(name, settings["queue.max_messages"], settings["queue.max_bytes"],
                                              settings["queue.overflow"], self.waiting)
        return queue

    def _maybe_forget(self, target: Topic | Queue) -> None:
        if not target:
            if target.kind == "topic":
                self.topics.pop(target.name, None)
            else:
                self.queues.pop(target.name, None)
                self._overflow_logged.pop(target.name, None)  # kept for live queues only

    # ------------------------------------------------------------------
    # publishing

    def publish_frame(self, frame: Any) -> None:
        """A SEND frame the connection has checked (destination and permission)."""
        headers = {k: v for k, v in frame.headers.items() if k not in NOT_FORWARDED}
        self.route(self.new_message(frame.headers["destination"], headers, frame.body))

    def publish(self, destination: str, body: bytes | str, headers: dict[str, str] | None = None,
                user: str | None = None) -> str:
        """Put a message on ``destination`` from server-side code; returns its message-id.

        ``user`` (a [stomp] login) makes the write permission rules apply, and a
        ``user-id`` header must then name it; None is trusted server code.
        Raises ProtocolError for a destination this broker does not serve,
        AccessRefused, or DestinationFull when a queue with
        ``queue.overflow = reject`` is full.
        """
        if destination_kind(destination) is None:
            raise ProtocolError("unknown destination",
                                f"'{destination}': this broker serves /topic/NAME and /queue/NAME")
        if user is not None:
            if not self.permissions.may_write(user, destination):
                raise AccessRefused("access refused", f"'{user}' may not send to {destination}")
            self.permissions.check_user_id(user, headers or {})
        if isinstance(body, str):
            body = body.encode("utf-8")
            headers = {"content-type": "text/plain;charset=utf-8", **(headers or {})}
        if len(body) > self.limits.max_frame_size:
            raise ProtocolError("message too large", f"{len(body)} bytes exceed frame.max_size "
                                f"({self.limits.max_frame_size})")
        headers = {str(k): str(v) for k, v in (headers or {}).items() if k not in NOT_FORWARDED}
        for name, value in headers.items():
            if not name or "\0" in name or "\0" in value:  # no frame could carry it to a subscriber
                raise ProtocolError("invalid header", f"header {name!r}: a name must not be empty, and no "
                                    "header may hold a NUL character")
        message = self.new_message(destination, headers, body)
        with self.batch:
            self.route(message)
        return message.message_id

    def route(self, message: Message) -> None:
        stats = self.stats
        stats["messages_in"] += 1
        name = message.destination
        if name.startswith("/topic/"):
            topic = self.topics.get(name)
            if topic is not None:
                stats["deliveries"] += topic.publish(message)
            return
        queue = self.queues.get(name)
        if queue is None:
            # a new queue with nobody on it, so it will hold the message: is there room for one more?
            if self.waiting.holding >= self.settings["queue.max_queues"]:
                self._overflow(name, 1, f"queue.max_queues ({self.settings['queue.max_queues']}) queues "
                               "already hold messages", what="new")
                return
            queue = self._queue(name, create=True)
        try:
            dropped = queue.publish(message)
        except DestinationFull:
            self._maybe_forget(queue)  # a queue made for a refused message holds nothing
            raise
        if dropped:
            self._overflow(name, len(dropped), f"it holds queue.max_messages ({queue.max_messages}) "
                           f"or queue.max_bytes ({queue.max_bytes})")
        if self.waiting.bytes > self.settings["queue.max_total_bytes"]:
            self._over_total(queue, message)
        self._maybe_forget(queue)

    def _over_total(self, queue: Queue, message: Message) -> None:
        """All queues together hold more than queue.max_total_bytes: refuse the new message
        (reject), or drop the oldest messages of the largest queues (drop-oldest), so that one
        queue that nobody reads cannot cost every other queue its messages."""
        limit = self.settings["queue.max_total_bytes"]
        why = f"the queues together hold queue.max_total_bytes ({limit})"
        if self.settings["queue.overflow"] == "reject":
            if queue.take_back(message):
                self._maybe_forget(queue)
                raise DestinationFull("queue full", f"{queue.name} cannot take the message: {why}")
            return  # it went out at once; taken-back messages keep the total over until they go
        while self.waiting.bytes > limit:
            # A scan of the queues, but only while over the bound: an overload, not the usual path.
            largest = max(self.queues.values(), key=lambda q: q.waiting_bytes, default=None)
            count = largest.drop_oldest(self.waiting.bytes - limit) if largest is not None else 0
            if not count:
                return  # nothing waits anywhere (cannot happen while the total is kept right)
            self._overflow(largest.name, count, why + "; it is the largest")
            self._maybe_forget(largest)

    def _overflow(self, name: str, count: int, why: str, what: str = "oldest") -> None:
        """Messages dropped (drop-oldest) or the new one refused (reject): ``what`` says which
        were dropped, the oldest of a full queue or a new one that has no queue to go to.

        Log lines are spaced per queue, and the spacing is remembered only while the queue
        lives.  New messages refused for want of a queue share one spacing (NEW_QUEUES): keyed
        by their names, a client sending to /queue/x-1, x-2, ... once queue.max_queues was
        reached wrote one WARNING per message and left one entry per name for ever."""
        if self.settings["queue.overflow"] == "reject":
            raise DestinationFull("queue full", f"{name} cannot take the message: {why}")
        self.stats["dropped"] += count
        now = self.clock.seconds()
        key = NEW_QUEUES if what == "new" else name  # a queue name is never empty
        last, pending = self._overflow_logged.get(key, (None, 0))
        pending += count
        if last is None or now - last >= OVERFLOW_LOG_INTERVAL:
            if what == "new":
                log.warning("no room for a new queue: dropped %d new message(s) since the last report (the "
                            "latest for %s), because %s", pending, name, why)
            else:
                log.warning("queue %s is full: dropped %d %s message(s) since the last report, because %s",
                            name, pending, what, why)
            self._overflow_logged[key] = (now, 0)
        else:
            self._overflow_logged[key] = (last, pending)

    # ------------------------------------------------------------------
    # operations

    def status(self) -> dict:
        queues = sorted(self.queues.values(), key=lambda q: -len(q.waiting))
        return {
            "connections": len(self.connections),
            "by_version": dict(self.versions),
            "publishers": len(self.publishers),
            "congested": sum(1 for conn in self.connections if conn.congested),
            "publishers_paused": bool(self.blocking),
            "topics": len(self.topics),
            "queues": len(self.queues),
            "waiting_messages": sum(len(q.waiting) for q in self.queues.values()),
            "waiting_bytes": self.waiting.bytes,
            "unacked_bytes": self.unacked.bytes,
            "largest_queues": {q.name: q.status() for q in queues[:10]},
            "development_mode": self.permissions.development_mode,
            **{name: self.stats[name] for name in ("connections_total", "messages_in", "dropped",
                                                   "nacked", "slow_consumers", "publisher_pauses",
                                                   "pauses_refused")},
            "deliveries": self.stats["deliveries"] + self.waiting.delivered,  # topics' and queues'
        }

    stopping = False  # shutdown() has begun: WebSocket clients are closed with 1001 (going away)

    def shutdown(self) -> None:
        """SIGTERM: every client gets ERROR 'server shutting down' and is closed."""
        self.stopping = True
        for conn in list(self.connections):
            conn.fail(SHUTDOWN_MESSAGE, "the broker is stopping")
