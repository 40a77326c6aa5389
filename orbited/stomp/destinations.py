"""Messages, subscriptions, and the two kinds of destination: topics and queues.

A ``/topic/`` gives every message to each current subscriber and keeps
nothing.  A ``/queue/`` gives each message to one subscriber in turn,
skipping subscribers whose socket is full or who hold as many
unacknowledged messages as they may, and holds messages nobody can take,
up to its bound.  No I/O: a subscription writes through its connection's
``send``, which the Twisted shell implements.

The hot path is fan-out, so a message is encoded once per STOMP version
(everything after the ``subscription`` header) and each delivery is one
concatenation and one write.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from orbited.stomp.codec import V12, encode_headers, escape
from orbited.stomp.errors import DestinationFull

if TYPE_CHECKING:
    from orbited.stomp.connection import StompConnection

TOPIC_PREFIX = "/topic/"
QUEUE_PREFIX = "/queue/"

# Headers of a SEND frame that do not travel on to the MESSAGE frame.
NOT_FORWARDED = frozenset({"destination", "transaction", "receipt", "content-length", "message-id",
                           "subscription", "ack", "redelivered"})


_publish_order = attrgetter("number")


def destination_kind(destination: str) -> str | None:
    """'topic', 'queue', or None for a destination this broker does not serve."""
    if destination.startswith(TOPIC_PREFIX) and len(destination) > len(TOPIC_PREFIX):
        return "topic"
    if destination.startswith(QUEUE_PREFIX) and len(destination) > len(QUEUE_PREFIX):
        return "queue"
    return None


class Message:
    """One published message; immutable once made, shared by every delivery.

    ``number`` is its place in publish order (the broker's count), by which a queue puts
    returned messages back where they were.

    It keeps no encoded copy of itself: a message waiting for its ACK is held
    for as long as the client takes, and a copy beside the body doubled what
    the unacknowledged bytes really cost (30 MB of bodies held 59 MB), against
    the bounds max_unacked_bytes and queue.max_total_bytes set on bodies.  A
    topic encodes a message once per STOMP version for all its subscribers
    (Topic.publish); a queue message goes to one subscriber.
    """

    __slots__ = ("binary", "body", "destination", "headers", "message_id", "number", "redelivered")

    def __init__(self, destination: str, message_id: str, headers: dict[str, str], body: bytes,
                 redelivered: bool = False, number: int = 0):
        self.destination = destination
        self.message_id = message_id
        self.number = number
        self.headers = headers
        self.body = body
        self.redelivered = redelivered
        try:
            body.decode("utf-8")
            self.binary = False
        except UnicodeDecodeError:
            self.binary = True  # over WebSocket it must travel in a binary message

    @property
    def size(self) -> int:
        return len(self.body)

    def tail(self, version: str | None) -> bytes:
        """The MESSAGE frame from the header after ``subscription``/``ack`` to the NUL."""
        headers = {"destination": self.destination, "message-id": self.message_id}
        if self.redelivered:
            headers["redelivered"] = "true"
        headers.update(self.headers)
        headers["content-length"] = str(len(self.body))
        return b"".join((encode_headers(headers, version), b"\n", self.body, b"\0"))

    def redelivery(self) -> Message:
        return Message(self.destination, self.message_id, self.headers, self.body, redelivered=True,
                       number=self.number)


class Subscription:
    """One SUBSCRIBE of one connection."""

    __slots__ = (
        "ack",
        "active",
        "auto",
        "connection",
        "destination",
        "held",
        "hold_limit",
        "id",
        "individual",
        "limit",
        "number",
        "prefix",
        "target",
        "unacked",
        "version",
    )

    def __init__(self, connection: StompConnection, key: str, header_id: str | None, number: int,
                 destination: str, ack: str, limit: int, hold_limit: int = 0):
        self.connection = connection
        self.id = key  # the id header, or in 1.0 without one the destination
        self.number = number
        self.destination = destination
        self.target: Topic | Queue | None = None
        self.ack = ack
        self.auto = ack == "auto"
        self.individual = ack == "client-individual"
        self.version = connection.version
        line = b""
        if header_id is not None:
            line = b"subscription:" + escape(header_id, self.version).encode("utf-8", "surrogateescape") + b"\n"
        self.prefix = b"MESSAGE\n" + line
        self.limit = limit
        self.unacked: OrderedDict[str, Message] = OrderedDict()
        # A topic subscription whose prefetch-count lowered ``limit``: what arrives while it holds
        # ``limit`` unacknowledged messages waits here, as in RabbitMQ, until ACKs make room.
        # Delivered and held together stay within ``hold_limit`` (max_unacked) and their bytes
        # count against the connection's max_unacked_bytes; past either it is disconnected.
        self.hold_limit = hold_limit
        self.held: deque[Message] | None = deque() if hold_limit else None
        self.active = True

    def ack_id(self, message: Message) -> str:
        return f"{self.number}-{message.message_id}"

    def ready(self) -> bool:
        """May a queue give this subscription a message now?"""
        connection = self.connection
        return not connection.congested and (self.auto or (
            len(self.unacked) < self.limit and not connection.unacked.full()))

    def deliver(self, message: Message, tail: bytes | None = None) -> None:
        """``tail``: ``message.tail(self.version)``, when the caller has it already."""
        if self.auto:
            self.connection.send(self.prefix + (message.tail(self.version) if tail is None else tail), message.binary)
            return
        unacked = self.connection.unacked
        held = self.held
        if held is not None and (held or len(self.unacked) >= self.limit):
            if len(self.unacked) + len(held) >= self.hold_limit or unacked.full():
                self.connection.too_many_unacked(self)
                return
            held.append(message)
            unacked.add(message.size)
            return
        if len(self.unacked) >= self.limit or unacked.full():
            self.connection.too_many_unacked(self)
            return
        unacked.add(message.size)
        self._hand_over(message, tail)

    def _hand_over(self, message: Message, tail: bytes | None) -> None:
        """Send a client-acknowledged message, whose bytes are counted already, and await its ACK."""
        self.unacked[message.message_id] = message
        if tail is None:
            tail = message.tail(self.version)
        if self.version == V12:
            ack = b"ack:" + self.ack_id(message).encode("ascii") + b"\n"
            self.connection.send(self.prefix + ack + tail, message.binary)
        else:
            self.connection.send(self.prefix + tail, message.binary)

    def release_held(self) -> None:
        """Send held-back topic messages, oldest first, as far as ACKs made room."""
        held = self.held
        while held and len(self.unacked) < self.limit:
            self._hand_over(held.popleft(), None)

    def settle(self, message_id: str) -> list[Message]:
        """Remove what an ACK or NACK of ``message_id`` covers: one message, or (mode
        'client') it and every earlier one.  Raises KeyError when it is not unacked."""
        if message_id not in self.unacked:
            raise KeyError(message_id)
        if self.individual:
            settled = [self.unacked.pop(message_id)]
        else:
            settled = []
            while True:
                key, message = self.unacked.popitem(last=False)
                settled.append(message)
                if key == message_id:
                    break
        self.connection.unacked.remove(sum(message.size for message in settled))
        return settled

    def take_unacked(self) -> list[Message]:
        """Every unacknowledged message, to go back to its queue (the subscription ends);
        held-back topic messages are dropped."""
        returned = list(self.unacked.values())
        self.unacked.clear()
        size = sum(message.size for message in returned)
        if self.held:  # held-back topic messages: nobody else wants them
            size += sum(message.size for message in self.held)
            self.held.clear()
        self.connection.unacked.remove(size)
        return returned


class Topic:
    kind = "topic"

    def __init__(self, name: str):
        self.name = name
        self.subscribers: list[Subscription] = []

    def __bool__(self) -> bool:  # kept while someone listens
        return bool(self.subscribers)

    def add(self, sub: Subscription) -> None:
        self.subscribers.append(sub)

    def remove(self, sub: Subscription) -> None:
        try:
            self.subscribers.remove(sub)
        except ValueError:
            pass

    def publish(self, message: Message) -> int:
        """Give ``message`` to every subscriber; returns the number of deliveries."""
        subscribers = self.subscribers
        if not subscribers:
            return 0
        binary = message.binary
        tails: dict[Any, bytes] = {}
        count = 0
        # A delivery may disconnect a hopeless subscriber, which edits the list: walk a copy.
        for sub in subscribers.copy():
            if not sub.active:
                continue
            count += 1
            version = sub.version
            tail = tails.get(version)
            if tail is None:
                tail = tails[version] = message.tail(version)
            if sub.auto:
                sub.connection.send(sub.prefix + tail, binary)
            else:
                sub.deliver(message, tail)
        return count

    def returned(self, messages: list[Message]) -> None:
        """Unacknowledged topic messages of a leaving or NACKing subscriber are dropped:
        every other subscriber already has its own copy."""

    def status(self) -> dict:
        return {"subscribers": len(self.subscribers)}


class WaitingTotal:
    """Body bytes waiting in all of one broker's queues together, and how many queues hold any,
    kept by the queues as they change, so that ``queue.max_total_bytes`` and
    ``queue.max_queues`` are checked without a pass over every queue; and how many messages
    the queues have given to subscribers (/system/status counts them with the topics')."""

    __slots__ = ("bytes", "delivered", "holding")

    def __init__(self) -> None:
        self.bytes = 0
        self.holding = 0
        self.delivered = 0


class UnackedBytes:
    """Body bytes delivered and not yet acknowledged: one connection's, within the broker's.

    A client that reads its messages and never ACKs them held gigabytes: each subscription's
    ``max_unacked`` counts messages, and bytes were bounded by nothing.  Past either bound a
    queue keeps its messages (bounded by its own limits) and a topic subscriber is
    disconnected, as at ``max_unacked``."""

    __slots__ = ("bytes", "limit", "parent")

    def __init__(self, limit: int, parent: UnackedBytes | None = None):
        self.bytes = 0
        self.limit = limit
        self.parent = parent

    def full(self) -> bool:
        return self.bytes >= self.limit or (self.parent is not None and self.parent.full())

    def add(self, size: int) -> None:
        self.bytes += size
        if self.parent is not None:
            self.parent.bytes += size

    def remove(self, size: int) -> None:
        self.bytes -= size
        if self.parent is not None:
            self.parent.bytes -= size


class Queue:
    kind = "queue"

    def __init__(self, name: str, max_messages: int, max_bytes: int, overflow: str, total: WaitingTotal):
        self.name = name
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.overflow = overflow
        self.subscribers: list[Subscription] = []
        self.waiting: deque[Message] = deque()
        self.waiting_bytes = 0
        self.total = total  # the broker's, shared by all its queues
        self.counted = False  # among total.holding
        self.dropped = 0
        self._next = 0
        self._dispatching = False
        self._again = False

    def __bool__(self) -> bool:  # kept while it holds messages or someone listens
        return bool(self.subscribers or self.waiting)

    def add(self, sub: Subscription) -> None:
        self.subscribers.append(sub)
        self.dispatch()

    def remove(self, sub: Subscription) -> None:
        try:
            index = self.subscribers.index(sub)
        except ValueError:
            return
        del self.subscribers[index]
        if index < self._next:
            self._next -= 1

    def publish(self, message: Message) -> list[Message]:
        """Queue ``message`` and deliver what can be delivered.

        Returns the messages dropped to stay within the bound (drop-oldest);
        raises DestinationFull instead when the overflow policy is reject.
        """
        waiting = self.waiting
        waiting.append(message)
        self.waiting_bytes += message.size
        self.total.bytes += message.size
        self.dispatch()
        dropped: list[Message] = []
        while waiting and (len(waiting) > self.max_messages or self.waiting_bytes > self.max_bytes):
            if self.overflow == "reject":
                if not self.take_back(message):
                    break  # the new message went out; returned ones keep the queue over its bound
                raise DestinationFull("queue full", f"{self.name} holds {len(waiting)} messages "
                                      f"({self.waiting_bytes} bytes), its bound; the message was refused")
            dropped.append(self._pop_oldest())
        self.dropped += len(dropped)
        self.settle()
        return dropped

    def take_back(self, message: Message) -> bool:
        """Remove ``message`` if it is still the newest waiting one (a refused publish)."""
        if not self.waiting or self.waiting[-1] is not message:
            return False
        self.waiting.pop()
        self.waiting_bytes -= message.size
        self.total.bytes -= message.size
        self.settle()
        return True

    def settle(self) -> None:
        """Keep ``total.holding`` right after the waiting messages changed (idempotent)."""
        holding = bool(self.waiting)
        if holding is not self.counted:
            self.counted = holding
            self.total.holding += 1 if holding else -1

    def drop_oldest(self, excess: int) -> int:
        """Drop the oldest waiting messages until ``excess`` bytes are freed or none wait; how many."""
        count = 0
        while excess > 0 and self.waiting:
            excess -= self._pop_oldest().size
            count += 1
        self.dropped += count
        self.settle()
        return count

    def _pop_oldest(self) -> Message:
        old = self.waiting.popleft()
        self.waiting_bytes -= old.size
        self.total.bytes -= old.size
        return old

    def returned(self, messages: list[Message]) -> None:
        """Unacknowledged messages come back (disconnect, UNSUBSCRIBE, NACK), marked redelivered,
        to their places in publish order, as RabbitMQ requeues them, and are offered to
        subscribers again.  A subscriber holds them in the order it received them, which after
        a redelivery is not publish order (m0, m2, then m1 again): put back in that order, the
        next consumer got them reordered.  ``waiting`` stays in publish order (new messages go
        to the end), so only the waiting messages older than a returned one are merged.
        Taking them back never fails, so they may hold the queue over its bound for a while;
        the bound counts them when the next message is published."""
        if messages:
            back = sorted((message.redelivery() for message in messages), key=_publish_order)
            waiting = self.waiting
            older = []
            while waiting and waiting[0].number < back[-1].number:
                older.append(waiting.popleft())
            waiting.extendleft(reversed(list(heapq.merge(back, older, key=_publish_order))))
            size = sum(message.size for message in back)
            self.waiting_bytes += size
            self.total.bytes += size
        self.dispatch()

    def dispatch(self) -> None:
        """Give waiting messages to ready subscribers, round-robin."""
        if self._dispatching:
            self._again = True  # a delivery led back here (e.g. a disconnect returned messages)
            return
        self._dispatching = True
        try:
            while True:
                self._again = False
                waiting = self.waiting
                while waiting:
                    sub = self._next_ready()
                    if sub is None:
                        break
                    message = waiting.popleft()
                    self.waiting_bytes -= message.size
                    self.total.bytes -= message.size
                    self.total.delivered += 1
                    sub.deliver(message)
                if not self._again:
                    return
        finally:
            self._dispatching = False
            self.settle()

    def _next_ready(self) -> Subscription | None:
        subscribers = self.subscribers
        count = len(subscribers)
        start = self._next
        for step in range(count):
            index = (start + step) % count
            sub = subscribers[index]
            if sub.ready():
                self._next = (index + 1) % count
                return sub
        return None

    def status(self) -> dict:
        return {"subscribers": len(self.subscribers), "waiting": len(self.waiting),
                "waiting_bytes": self.waiting_bytes, "dropped": self.dropped}
