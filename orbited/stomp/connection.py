"""One client's STOMP session, as a state machine with no I/O.

The Twisted shells (``server.py`` for TCP, ``websocket.py`` for /stomp)
feed it bytes with ``receive`` and tell it about the socket with
``congestion_started``/``congestion_ended`` and ``connection_lost``; it
answers through an :class:`Outbox` and a clock it is given.  Everything a
client can do wrong ends in one ERROR frame with a ``message`` header and a
close of this connection only; an unexpected exception is logged and
treated the same way, so no client ever sees a traceback.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from orbited.stomp.codec import (
    V10,
    V11,
    V12,
    VERSIONS,
    Frame,
    FrameParser,
    encode_frame,
    escape,
    whole_number,
)
from orbited.stomp.destinations import Subscription, UnackedBytes, destination_kind
from orbited.stomp.errors import AccessRefused, ProtocolError, StompError

if TYPE_CHECKING:
    from orbited.stomp.broker import StompBroker

log = logging.getLogger("orbited.stomp")

# No version: the STOMP spec makes it optional, and Orbited tells it only to /system/status
# (see orbited/http/response.py on the Server header).
SERVER_NAME = "Orbited"
ACK_MODES = ("auto", "client", "client-individual")


class Outbox(Protocol):
    """What a connection needs from its transport; the shells implement it."""

    def write(self, data: bytes, binary: bool) -> None:
        """Send one frame (or a heart-beat EOL); ``binary`` says the bytes are not UTF-8.
        While ``broker.batch.depth`` is non-zero the outbox may hold it back until ``flush``."""

    def flush(self) -> None:
        """Send what was held back during a batch (see broker.WriteBatch)."""

    def close(self, abort: bool) -> None:
        """Close after what was written is flushed, or at once (``abort``)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class State(Enum):
    AWAITING_CONNECT = "awaiting CONNECT"
    CONNECTED = "connected"
    CLOSED = "closed"


class Transaction:
    __slots__ = ("frames", "size")

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.size = 0


class StompConnection:
    def __init__(self, broker: StompBroker, outbox: Outbox, address: str = "?", transport: str = "tcp"):
        self.broker = broker
        self.outbox = outbox
        self.address = address
        self.transport = transport
        self.clock = broker.clock
        self.parser = FrameParser(broker.limits)
        self.state = State.AWAITING_CONNECT
        self.version: str | None = None
        self.user: str | None = None
        self.session_id = broker.new_session_id()
        self.subscriptions: dict[str, Subscription] = {}
        self._by_number: dict[int, Subscription] = {}
        self._numbers = 0
        self.transactions: dict[str, Transaction] = {}
        self.unacked = UnackedBytes(broker.settings["max_unacked_bytes"], broker.unacked)
        # flow control: set by the shell when the socket's buffer is full
        self.congested = False
        self.pending = 0
        self.max_pending = broker.settings["flow.max_pending"]
        self._pause_reasons: set[str] = set()
        self.publisher = False
        # heart-beats
        self.wrote = False
        self.last_read = self.clock.seconds()
        self.send_interval = 0.0
        self.receive_timeout = 0.0
        self._timers: dict[str, Any] = {}
        self._timers["connect"] = self.clock.callLater(broker.settings["connect_timeout"], self._connect_timeout)
        broker.connection_opened(self)

    def __repr__(self) -> str:
        return f"<StompConnection {self.transport} {self.address} {self.state.value}>"

    # ------------------------------------------------------------------
    # from the shell

    def receive(self, data: bytes) -> None:
        """Bytes from the client, in any pieces."""
        if self.state is State.CLOSED:
            return
        self.last_read = self.clock.seconds()
        self.parser.feed(data)
        with self.broker.batch:
            self._process()

    def connection_lost(self, reason: str = "connection lost") -> None:
        if self.state is not State.CLOSED:
            self._release()

    def congestion_started(self) -> None:
        """The socket's send buffer is full."""
        if self.state is State.CLOSED or self.congested:
            return
        self.congested = True
        self.pending = 0
        self.broker.congestion_started(self)

    def congestion_ended(self) -> None:
        if not self.congested:
            return
        self.congested = False
        self.pending = 0
        self.broker.congestion_ended(self)
        if self.state is State.CLOSED:
            return
        for sub in list(self.subscriptions.values()):
            if sub.target is not None and sub.target.kind == "queue" and sub.active:
                sub.target.dispatch()

    # ------------------------------------------------------------------
    # to the shell

    def send(self, data: bytes, binary: bool = False) -> None:
        """Write one frame; the fan-out hot path."""
        self.outbox.write(data, binary)
        self.wrote = True
        if self.congested:
            self.pending += len(data)
            if self.pending > self.max_pending:
                self.slow_consumer(f"{self.pending} bytes are waiting for it beyond its socket buffer "
                                   f"(flow.max_pending = {self.max_pending})")

    def send_frame(self, frame: Frame) -> None:
        self.send(encode_frame(frame, self.version))

    def pause_reading(self, reason: str) -> None:
        if self.state is State.CLOSED:
            return
        if not self._pause_reasons:
            self.outbox.pause_reading()
        self._pause_reasons.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and self.state is not State.CLOSED:
            # Time spent paused by us does not count against the client's heart-beats.
            self.last_read = self.clock.seconds()
            self.outbox.resume_reading()
            with self.broker.batch:
                self._process()

    @property
    def reading_paused(self) -> bool:
        return bool(self._pause_reasons)

    # ------------------------------------------------------------------
    # failure and closing

    def fail(self, message: str, detail: str = "", frame: Frame | None = None,
             headers: dict[str, str] | None = None, abort: bool = False, level: int = logging.INFO) -> None:
        """Send ERROR (``message`` header, ``detail`` body) and close: the STOMP way to end on an error."""
        if self.state is State.CLOSED:
            return
        error = {"message": message}
        if frame is not None and "receipt" in frame.headers:
            error["receipt-id"] = frame.headers["receipt"]
        error.update(headers or {})
        error["content-type"] = "text/plain"
        log.log(level, "stomp %s %s%s: ERROR %s%s", self.transport, self.address,
                f" ({self.user})" if self.user else "", message, f": {detail}" if detail else "")
        self.outbox.write(encode_frame(Frame("ERROR", error, detail.encode("utf-8")), self.version), False)
        self._release()
        self.outbox.flush()
        self.outbox.close(abort)

    def slow_consumer(self, why: str) -> None:
        self.broker.stats["slow_consumers"] += 1
        self.fail("slow consumer", f"disconnected: {why}", abort=True, level=logging.WARNING)

    def too_many_unacked(self, sub: Subscription) -> None:
        if sub.held is not None and len(sub.unacked) + len(sub.held) >= sub.hold_limit:
            detail = (f"subscription '{sub.id}' on {sub.destination} holds {len(sub.unacked)} unacknowledged "
                      f"messages (its prefetch-count) and {len(sub.held)} held back for it, "
                      f"max_unacked in all")
        elif len(sub.unacked) >= sub.limit:
            detail = (f"subscription '{sub.id}' on {sub.destination} holds {len(sub.unacked)} unacknowledged "
                      f"messages, its limit (max_unacked or prefetch-count)")
        else:
            detail = (f"this connection holds {self.unacked.bytes} bytes of unacknowledged messages "
                      f"(max_unacked_bytes {self.unacked.limit}), or all connections together "
                      f"queue.max_total_bytes")
        self.fail("too many unacknowledged messages", detail, level=logging.WARNING)

    def close(self) -> None:
        """A graceful close from our side (after DISCONNECT)."""
        if self.state is State.CLOSED:
            return
        self._release()
        self.outbox.flush()
        self.outbox.close(False)

    def _release(self) -> None:
        """Leave the broker: timers off, transactions aborted, unacked messages returned."""
        self.state = State.CLOSED
        for timer in self._timers.values():
            if timer is not None and timer.active():
                timer.cancel()
        self._timers.clear()
        self.transactions.clear()
        for sub in list(self.subscriptions.values()):
            self._drop_subscription(sub)
        self._pause_reasons.clear()
        self.broker.connection_closed(self)

    def _connect_timeout(self) -> None:
        self._timers.pop("connect", None)
        if self.state is State.AWAITING_CONNECT:
            self.fail("no CONNECT frame", f"a client must send CONNECT within "
                      f"{self.broker.settings['connect_timeout']:g} s")

    # ------------------------------------------------------------------
    # frames

    def _process(self) -> None:
        parser = self.parser
        while not self._pause_reasons and self.state is not State.CLOSED:
            frame = None
            try:
                frame = parser.next_frame()
                if frame is None:
                    return
                self.handle(frame)
            except AccessRefused as exc:
                self.fail(exc.message, exc.detail, frame, level=logging.WARNING)
            except StompError as exc:
                self.fail(exc.message, exc.detail, frame)
            except Exception:
                log.exception("stomp %s %s: internal error handling %s", self.transport, self.address,
                              frame.command if frame is not None else "input")
                self.fail("internal error", "the broker could not handle this frame", frame,
                          level=logging.ERROR)

    def handle(self, frame: Frame) -> None:
        command = frame.command
        if frame.body and command != "SEND":
            raise ProtocolError("unexpected body", f"the {command} frame must not have a body")
        if self.state is State.AWAITING_CONNECT:
            if command in ("CONNECT", "STOMP"):
                self._connect(frame)
                return
            raise ProtocolError("not connected", f"the first frame must be CONNECT or STOMP, not {command}")
        handler = HANDLERS.get(command)
        if handler is None or (command == "NACK" and self.version == V10):
            if command in ("CONNECT", "STOMP"):
                raise ProtocolError("already connected", f"{command} may only be the first frame")
            if command == "NACK":
                raise ProtocolError("unknown command", "NACK is not part of STOMP 1.0")
            raise ProtocolError("unknown command", f"'{command}' is not a STOMP client frame")
        handler(self, frame)
        if self.state is State.CONNECTED:
            receipt = frame.headers.get("receipt")
            if receipt is not None:
                self.send(b"RECEIPT\nreceipt-id:" + escape(receipt, self.version).encode("utf-8") + b"\n\n\0")

    def _required(self, frame: Frame, name: str) -> str:
        value = frame.headers.get(name)
        if value is None:
            raise ProtocolError(f"missing '{name}' header", f"the {frame.command} frame needs the '{name}' header")
        return value

    # --- CONNECT

    def _connect(self, frame: Frame) -> None:
        headers = frame.headers
        accept = headers.get("accept-version")
        if accept is None:
            version = V10
        else:
            offered = {part.strip() for part in accept.split(",")}
            common = [v for v in VERSIONS if v in offered]
            if not common:
                supported = ",".join(VERSIONS)
                self.fail("unsupported protocol version",
                          f"Supported protocol versions are {' '.join(VERSIONS)}", frame,
                          headers={"version": supported})
                return
            version = common[-1]
        client_beat = (0, 0)
        if version != V10 and "heart-beat" in headers:
            client_beat = parse_heart_beat(headers["heart-beat"])
        self.user = self.broker.permissions.authenticate(headers.get("login"), headers.get("passcode"))
        self.version = version
        self.parser.version = version
        self.state = State.CONNECTED
        timer = self._timers.pop("connect", None)
        if timer is not None and timer.active():
            timer.cancel()
        connected = {"version": version, "server": SERVER_NAME, "session": self.session_id}
        if version != V10:
            sx, sy = self.broker.settings["heartbeat"]
            connected["heart-beat"] = f"{sx},{sy}"
            self._start_heart_beats(client_beat, (sx, sy))
        self.send_frame(Frame("CONNECTED", connected))
        self.broker.connection_ready(self)

    def _start_heart_beats(self, client: tuple[int, int], server: tuple[int, int]) -> None:
        cx, cy = client
        sx, sy = server
        if sx and cy:
            self.send_interval = max(sx, cy) / 1000.0
            self._timers["beat"] = self.clock.callLater(self.send_interval / 2, self._beat)
        if cx and sy:
            period = max(cx, sy) / 1000.0
            self.receive_timeout = period * self.broker.settings["heartbeat.tolerance"]
            self.last_read = self.clock.seconds()
            self._timers["watch"] = self.clock.callLater(self.receive_timeout, self._watch)

    def _beat(self) -> None:
        """Every half interval: if nothing went out in the last one, send an EOL.  The EOL counts
        as output for the next half, so an idle connection gets one per interval, as agreed (not
        one per half interval), and no gap is longer than the interval."""
        if self.state is State.CLOSED:
            return
        wrote, self.wrote = self.wrote, False
        if not wrote:
            self.outbox.write(b"\n", False)
            self.wrote = True
        self._timers["beat"] = self.clock.callLater(self.send_interval / 2, self._beat)

    def _watch(self) -> None:
        if self.state is State.CLOSED:
            return
        now = self.clock.seconds()
        if self._pause_reasons:
            self.last_read = now  # we are not reading; its silence is ours
        silent = now - self.last_read
        if silent >= self.receive_timeout:
            # Not an abort: that would drop the ERROR frame, which a silent but live client should get.
            # A dead one never reads it, and the outbox cuts the connection after its linger time.
            self.fail("heart-beat timeout", f"no data from the client for {silent:.1f} s")
            return
        self._timers["watch"] = self.clock.callLater(self.receive_timeout - silent, self._watch)

    # --- SEND

    def _send(self, frame: Frame) -> None:
        destination = self._required(frame, "destination")
        if destination_kind(destination) is None:
            raise ProtocolError("unknown destination",
                                f"'{destination}': this broker serves /topic/NAME and /queue/NAME")
        if not self.broker.permissions.may_write(self.user, destination):
            raise AccessRefused("access refused", f"'{self.user}' may not send to {destination}")
        self.broker.permissions.check_user_id(self.user, frame.headers)
        name = frame.headers.get("transaction")
        if name is not None:
            self._add_to_transaction(name, frame)
            return
        if not self.publisher:
            self.publisher = True
            self.broker.publisher_added(self)
        self.broker.publish_frame(frame)

    # --- SUBSCRIBE / UNSUBSCRIBE

    def _subscribe(self, frame: Frame) -> None:
        headers = frame.headers
        destination = self._required(frame, "destination")
        header_id = headers.get("id")
        if header_id is None and self.version != V10:
            raise ProtocolError("missing 'id' header", f"STOMP {self.version} SUBSCRIBE needs an 'id' header")
        key = header_id if header_id is not None else destination
        if key in self.subscriptions:
            raise ProtocolError("duplicate subscription", f"this connection already has subscription '{key}'")
        settings = self.broker.settings
        if len(self.subscriptions) >= settings["max_subscriptions"]:
            raise ProtocolError("too many subscriptions",
                                f"a connection may hold {settings['max_subscriptions']} subscriptions")
        ack = headers.get("ack", "auto")
        if ack not in ACK_MODES:
            raise ProtocolError("invalid ack mode", f"ack '{ack}' is not auto, client or client-individual")
        limit = most = settings["max_unacked"]
        prefetch = headers.get("prefetch-count")
        if prefetch is not None:
            count = whole_number(prefetch)
            if count is None:
                raise ProtocolError("invalid prefetch-count", f"'{prefetch}' is not a whole number")
            if count > 0:
                limit = min(limit, count)
        kind = destination_kind(destination)
        if kind is None:
            raise ProtocolError("unknown destination",
                                f"'{destination}': this broker serves /topic/NAME and /queue/NAME")
        # A topic subscriber that asked for prefetch-count has the rest held back for it, up to
        # max_unacked in all (a queue holds messages back by itself).
        hold = most if kind == "topic" and ack != "auto" and limit < most else 0
        if not self.broker.permissions.may_read(self.user, destination):
            raise AccessRefused("access refused", f"'{self.user}' may not subscribe to {destination}")
        self._numbers += 1
        sub = Subscription(self, key, header_id, self._numbers, destination, ack, limit, hold)
        self.subscriptions[key] = sub
        self._by_number[sub.number] = sub
        self.broker.subscribe(sub)

    def _unsubscribe(self, frame: Frame) -> None:
        header_id = frame.headers.get("id")
        if header_id is None:
            if self.version != V10:
                raise ProtocolError("missing 'id' header", f"STOMP {self.version} UNSUBSCRIBE needs an 'id' header")
            destination = self._required(frame, "destination")
            subs = [sub for sub in self.subscriptions.values() if sub.destination == destination]
            if not subs:
                raise ProtocolError("no such subscription", f"no subscription to {destination}")
        else:
            sub = self.subscriptions.get(header_id)
            if sub is None:
                raise ProtocolError("no such subscription", f"no subscription with id '{header_id}'")
            subs = [sub]
        for sub in subs:
            self._drop_subscription(sub)

    def _drop_subscription(self, sub: Subscription) -> None:
        sub.active = False
        self.subscriptions.pop(sub.id, None)
        self._by_number.pop(sub.number, None)
        self.broker.unsubscribe(sub, sub.take_unacked())

    # --- ACK / NACK

    def _find_unacked(self, frame: Frame) -> tuple[Subscription, str]:
        if self.version == V12:
            ack_id = self._required(frame, "id")
            number, _, message_id = ack_id.partition("-")
            sub = self._by_number.get(whole_number(number))
            if sub is not None and message_id in sub.unacked:
                return sub, message_id
            raise ProtocolError("unknown ack id", f"'{ack_id}' names no unacknowledged message")
        message_id = self._required(frame, "message-id")
        if self.version == V11:
            sub_id = self._required(frame, "subscription")
            sub = self.subscriptions.get(sub_id)
            if sub is not None and message_id in sub.unacked:
                return sub, message_id
            raise ProtocolError("unknown message-id",
                                f"subscription '{sub_id}' has no unacknowledged message '{message_id}'")
        for sub in self.subscriptions.values():
            if message_id in sub.unacked:
                return sub, message_id
        raise ProtocolError("unknown message-id", f"no unacknowledged message '{message_id}'")

    def _ack(self, frame: Frame) -> None:
        name = frame.headers.get("transaction")
        self._find_unacked(frame)  # an unknown id is an error now, not at COMMIT
        if name is not None:
            self._add_to_transaction(name, frame)
            return
        self._settle(frame)

    def _settle(self, frame: Frame) -> None:
        sub, message_id = self._find_unacked(frame)
        settled = sub.settle(message_id)
        if frame.command == "NACK" and frame.headers.get("requeue", "true") != "false":
            self.broker.stats["nacked"] += len(settled)
            sub.target.returned(settled)
        elif sub.target is not None and sub.target.kind == "queue":
            sub.target.dispatch()
        sub.release_held()

    # --- transactions

    def _transaction(self, frame: Frame) -> tuple[str, Transaction]:
        name = self._required(frame, "transaction")
        tx = self.transactions.get(name)
        if tx is None:
            raise ProtocolError("unknown transaction", f"no transaction '{name}' is open")
        return name, tx

    def _begin(self, frame: Frame) -> None:
        name = self._required(frame, "transaction")
        if name in self.transactions:
            raise ProtocolError("duplicate transaction", f"transaction '{name}' is already open")
        limit = self.broker.settings["transaction.max_open"]
        if len(self.transactions) >= limit:
            raise ProtocolError("too many transactions", f"a connection may have {limit} open transactions")
        self.transactions[name] = Transaction()

    def _add_to_transaction(self, name: str, frame: Frame) -> None:
        tx = self.transactions.get(name)
        if tx is None:
            raise ProtocolError("unknown transaction", f"no transaction '{name}' is open")
        settings = self.broker.settings
        if len(tx.frames) >= settings["transaction.max_frames"] or \
                tx.size + len(frame.body) > settings["transaction.max_bytes"]:
            raise ProtocolError("transaction too large",
                                f"transaction '{name}' would exceed transaction.max_frames "
                                f"({settings['transaction.max_frames']}) or transaction.max_bytes "
                                f"({settings['transaction.max_bytes']})")
        tx.frames.append(frame)
        tx.size += len(frame.body)

    def _commit(self, frame: Frame) -> None:
        name, tx = self._transaction(frame)
        del self.transactions[name]
        for item in tx.frames:
            if item.command == "SEND":
                if not self.publisher:
                    self.publisher = True
                    self.broker.publisher_added(self)
                self.broker.publish_frame(item)
            else:
                try:
                    self._settle(item)
                except ProtocolError:
                    pass  # settled meanwhile (a cumulative ACK, or the subscription ended): nothing to do

    def _abort(self, frame: Frame) -> None:
        name, _tx = self._transaction(frame)
        del self.transactions[name]

    # --- DISCONNECT

    def _disconnect(self, frame: Frame) -> None:
        receipt = frame.headers.get("receipt")
        if receipt is not None:
            self.send(b"RECEIPT\nreceipt-id:" + escape(receipt, self.version).encode("utf-8") + b"\n\n\0")
        self.close()


MOST_HEART_BEAT = 2**31 - 1  # milliseconds, about 25 days: more is "never" for any timer


def parse_heart_beat(value: str) -> tuple[int, int]:
    parts = [whole_number(part.strip(), MOST_HEART_BEAT) for part in value.split(",")]
    if len(parts) != 2 or None in parts:
        raise ProtocolError("invalid heart-beat header",
                            f"'{value}' is not two whole numbers of milliseconds like 10000,10000")
    return parts[0], parts[1]  # type: ignore[return-value]


HANDLERS = {
    "SEND": StompConnection._send,
    "SUBSCRIBE": StompConnection._subscribe,
    "UNSUBSCRIBE": StompConnection._unsubscribe,
    "ACK": StompConnection._ack,
    "NACK": StompConnection._ack,
    "BEGIN": StompConnection._begin,
    "COMMIT": StompConnection._commit,
    "ABORT": StompConnection._abort,
    "DISCONNECT": StompConnection._disconnect,
}

