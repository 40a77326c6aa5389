"""The broker core and one connection's state machine, driven with bytes and a fake clock."""

from __future__ import annotations

import hashlib
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from orbited.config import ConfigError, load_text
from orbited.inifile import Entry, Section
from orbited.stomp.broker import StompBroker
from orbited.stomp.codec import Frame, FrameParser, encode_frame
from orbited.stomp.connection import State, StompConnection
from orbited.stomp.errors import AccessRefused, DestinationFull, ProtocolError
from orbited.stomp.settings import StompSettings


class FakeOutbox:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed: bool | None = None  # None: open; else abort flag
        self.paused = False
        self.writes = 0

    def write(self, data: bytes, binary: bool) -> None:
        self.data += data
        self.writes += 1

    def flush(self) -> None:
        pass

    def close(self, abort: bool) -> None:
        self.closed = abort

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class Client:
    """A connection plus a parser of what the broker sent it."""

    def __init__(self, broker: StompBroker, address: str = "test"):
        self.outbox = FakeOutbox()
        self.conn = StompConnection(broker, self.outbox, address)
        self.parser = FrameParser()
        self.version: str | None = None

    def send(self, command: str, body: bytes = b"", **headers: str) -> None:
        headers = {k.replace("_", "-"): v for k, v in headers.items()}
        self.conn.receive(encode_frame(Frame(command, headers, body), self.version))

    def frames(self) -> list[Frame]:
        self.parser.feed(bytes(self.outbox.data))
        self.outbox.data.clear()
        return self.parser.frames()

    def connect(self, version: str = "1.2", **headers: str) -> Frame:
        if version != "1.0":
            headers.setdefault("accept_version", version)
        self.send("CONNECT", **headers)
        [frame] = self.frames()
        assert frame.command == "CONNECTED", frame
        self.version = version
        self.parser.version = version
        return frame

    @property
    def closed(self) -> bool:
        return self.conn.state is State.CLOSED


def make_broker(text: str = "", clock: Clock | None = None) -> StompBroker:
    section = Section("stomp", 1)
    for number, line in enumerate(text.strip().splitlines(), start=2):
        key, _, value = line.partition("=")
        section.entries.append(Entry(key.strip(), value.strip(), number))
    return StompBroker(StompSettings.from_section(section), clock or Clock())


@pytest.fixture
def broker() -> StompBroker:
    return make_broker()


def connected(broker: StompBroker, version: str = "1.2", address: str = "test", **headers: str) -> Client:
    client = Client(broker, address)
    client.connect(version, **headers)
    return client


# --------------------------------------------------------------------------
# CONNECT


@pytest.mark.parametrize("offer, chosen", [(None, "1.0"), ("1.0", "1.0"), ("1.1", "1.1"), ("1.0,1.1,1.2", "1.2"),
                                           ("1.1,2.0", "1.1"), ("1.2,1.0", "1.2")])
def test_version_negotiation(broker, offer, chosen):
    client = Client(broker)
    headers = {} if offer is None else {"accept_version": offer}
    client.send("CONNECT", **headers)
    [frame] = client.frames()
    assert frame.command == "CONNECTED"
    assert frame.headers["version"] == chosen
    assert frame.headers["server"] == "Orbited"  # no version for scanners, as over HTTP
    assert ("heart-beat" in frame.headers) == (chosen != "1.0")


def test_stomp_command_connects(broker):
    client = Client(broker)
    client.send("STOMP", accept_version="1.2", host="x")
    assert client.frames()[0].command == "CONNECTED"


def test_no_common_version(broker):
    client = Client(broker)
    client.send("CONNECT", accept_version="2.0,3.1")
    [frame] = client.frames()
    assert frame.command == "ERROR"
    assert frame.headers["version"] == "1.0,1.1,1.2"
    assert frame.headers["message"] == "unsupported protocol version"
    assert client.closed and client.outbox.closed is False


@pytest.mark.parametrize("command", ["SEND", "SUBSCRIBE", "ACK", "DISCONNECT", "FOO"])
def test_frames_before_connect(broker, command):
    client = Client(broker)
    client.send(command, destination="/queue/a")
    [frame] = client.frames()
    assert frame.command == "ERROR" and frame.headers["message"] == "not connected"
    assert client.closed


def test_connect_timeout():
    clock = Clock()
    broker = make_broker("connect_timeout = 3", clock)
    client = Client(broker)
    clock.advance(2.9)
    assert not client.closed
    clock.advance(0.2)
    assert client.frames()[0].headers["message"] == "no CONNECT frame"
    assert client.outbox.closed is False
    assert not broker.connections


def test_second_connect_is_an_error(broker):
    client = connected(broker)
    client.send("CONNECT", accept_version="1.2")
    assert client.frames()[0].headers["message"] == "already connected"


def test_unknown_command_and_error_carries_receipt_id(broker):
    client = connected(broker)
    client.send("FROB", receipt="r1")
    [frame] = client.frames()
    assert frame.headers["message"] == "unknown command"
    assert frame.headers["receipt-id"] == "r1"
    assert client.closed


def test_nack_is_not_10(broker):
    client = connected(broker, "1.0")
    client.send("NACK", message_id="x")
    assert "1.0" in client.frames()[0].body.decode()


def test_body_on_subscribe_is_an_error(broker):
    client = connected(broker)
    client.send("SUBSCRIBE", b"oops", id="1", destination="/topic/a")
    assert client.frames()[0].headers["message"] == "unexpected body"


def test_malformed_bytes_error_and_close(broker):
    client = connected(broker)
    client.conn.receive(b"SEND\nbad header line\n\n\0")
    [frame] = client.frames()
    assert frame.command == "ERROR" and frame.headers["message"] == "malformed header"
    assert client.closed


def test_receipts_on_every_frame(broker):
    client = connected(broker)
    client.send("SUBSCRIBE", id="s", destination="/topic/a", receipt="1")
    client.send("BEGIN", transaction="t", receipt="2")
    client.send("SEND", b"x", destination="/queue/q", transaction="t", receipt="3")
    client.send("ABORT", transaction="t", receipt="4")
    client.send("UNSUBSCRIBE", id="s", receipt="5")
    client.send("DISCONNECT", receipt="6")
    frames = client.frames()
    assert [(f.command, f.headers["receipt-id"]) for f in frames] == [("RECEIPT", str(i)) for i in range(1, 7)]
    assert client.closed and client.outbox.closed is False


# --------------------------------------------------------------------------
# authentication and permissions

SECURE = """
user.alice = secret
user.bob = sha256:{}
read /topic/news* = *
read /queue/jobs = bob
write /topic/news* = alice
write /queue/* = alice bob
""".format(hashlib.sha256(b"hunter2").hexdigest())


def test_development_mode_accepts_any_login(broker):
    assert broker.permissions.development_mode
    client = connected(broker, login="whoever", passcode="anything")
    assert client.conn.user == "whoever"


@pytest.mark.parametrize("login, passcode, ok", [("alice", "secret", True), ("bob", "hunter2", True),
                                                 ("alice", "wrong", False), ("carol", "x", False),
                                                 (None, None, False)])
def test_authentication(login, passcode, ok):
    broker = make_broker(SECURE)
    client = Client(broker)
    headers = {"accept_version": "1.2"}
    if login:
        headers.update(login=login, passcode=passcode)
    client.send("CONNECT", **headers)
    [frame] = client.frames()
    assert frame.command == ("CONNECTED" if ok else "ERROR")
    if not ok:
        assert frame.headers["message"] == "access refused"


def test_anonymous_when_allowed():
    broker = make_broker(SECURE + "anonymous = 1")
    client = connected(broker)
    assert client.conn.user == "anonymous"
    client.send("SUBSCRIBE", id="1", destination="/topic/news")
    client.send("SUBSCRIBE", id="2", destination="/queue/jobs")
    assert client.frames()[0].headers["message"] == "access refused"


def test_destination_rules():
    broker = make_broker(SECURE)
    alice = connected(broker, login="alice", passcode="secret")
    bob = connected(broker, login="bob", passcode="hunter2")
    bob.send("SUBSCRIBE", id="1", destination="/topic/news/world")
    bob.send("SUBSCRIBE", id="2", destination="/queue/jobs")
    alice.send("SEND", b"n", destination="/topic/news/world")
    alice.send("SEND", b"j", destination="/queue/jobs")
    assert [f.body for f in bob.frames()] == [b"n", b"j"]
    bob.send("SEND", b"no", destination="/topic/news/world")
    [frame] = bob.frames()
    assert frame.headers["message"] == "access refused" and bob.closed
    alice.send("SUBSCRIBE", id="3", destination="/queue/jobs")
    assert alice.frames()[0].headers["message"] == "access refused"


def test_publish_api_checks_permissions_only_for_a_user():
    broker = make_broker(SECURE)
    bob = connected(broker, login="bob", passcode="hunter2")
    bob.send("SUBSCRIBE", id="1", destination="/topic/news")
    broker.publish("/topic/news", "from the server")
    with pytest.raises(AccessRefused):
        broker.publish("/topic/news", "x", user="bob")
    [frame] = bob.frames()
    assert frame.body == b"from the server" and frame.headers["content-type"].startswith("text/plain")


def test_a_user_id_header_must_name_the_sender():
    """RabbitMQ refuses a SEND whose user-id is not the sender's login, so subscribers may trust
    it; ours passed any user-id on, and a client could sign its messages as anyone."""
    broker = make_broker(SECURE)
    alice = connected(broker, login="alice", passcode="secret")
    bob = connected(broker, login="bob", passcode="hunter2")
    bob.send("SUBSCRIBE", id="1", destination="/topic/news")
    alice.send("SEND", b"mine", destination="/topic/news", user_id="alice")
    [frame] = bob.frames()
    assert frame.headers["user-id"] == "alice"
    alice.send("SEND", b"forged", destination="/topic/news", user_id="bob")
    [error] = alice.frames()
    assert error.headers["message"] == "access refused" and alice.closed
    assert bob.frames() == []
    with pytest.raises(AccessRefused):
        broker.publish("/topic/news", "x", {"user-id": "bob"}, user="alice")
    broker.publish("/topic/news", "server", {"user-id": "system"})  # server code is trusted
    assert bob.frames()[0].headers["user-id"] == "system"


# --------------------------------------------------------------------------
# topics and queues


def test_topic_fans_out_and_keeps_nothing(broker):
    subs = [connected(broker, v) for v in ("1.0", "1.1", "1.2")]
    for i, client in enumerate(subs):
        client.send("SUBSCRIBE", id=f"s{i}", destination="/topic/t")
    publisher = connected(broker)
    publisher.send("SEND", b"one", destination="/topic/t", x_custom="a:b")
    for i, client in enumerate(subs):
        [frame] = client.frames()
        assert frame.body == b"one"
        assert frame.headers["subscription"] == f"s{i}"
        assert frame.headers["destination"] == "/topic/t"
        assert frame.headers["x-custom"] == "a:b"
        assert "ack" not in frame.headers
    late = connected(broker)
    late.send("SUBSCRIBE", id="x", destination="/topic/t")
    assert late.frames() == []
    assert broker.stats["deliveries"] == 3


def test_message_ids_are_unique(broker):
    client = connected(broker)
    client.send("SUBSCRIBE", id="s", destination="/topic/t")
    for _ in range(5):
        client.send("SEND", b"x", destination="/topic/t")
    ids = [f.headers["message-id"] for f in client.frames()]
    assert len(set(ids)) == 5


def test_queue_holds_then_round_robins(broker):
    publisher = connected(broker)
    for i in range(4):
        publisher.send("SEND", str(i).encode(), destination="/queue/q")
    a = connected(broker)
    a.send("SUBSCRIBE", id="a", destination="/queue/q")
    assert [f.body for f in a.frames()] == [b"0", b"1", b"2", b"3"]
    b = connected(broker)
    b.send("SUBSCRIBE", id="b", destination="/queue/q")
    for i in range(4, 8):
        publisher.send("SEND", str(i).encode(), destination="/queue/q")
    got_a, got_b = [f.body for f in a.frames()], [f.body for f in b.frames()]
    assert sorted([got_a, got_b]) == [[b"4", b"6"], [b"5", b"7"]]  # alternating, one each in turn


def test_unknown_destination(broker):
    client = connected(broker)
    client.send("SEND", b"x", destination="/exchange/amq.topic")
    assert client.frames()[0].headers["message"] == "unknown destination"
    with pytest.raises(ProtocolError):
        broker.publish("/nowhere", b"x")


def test_subscribe_rules(broker):
    client = connected(broker, "1.1")
    client.send("SUBSCRIBE", destination="/topic/a")
    assert client.frames()[0].headers["message"] == "missing 'id' header"
    client = connected(broker)
    client.send("SUBSCRIBE", id="1", destination="/topic/a")
    client.send("SUBSCRIBE", id="1", destination="/topic/b")
    assert client.frames()[0].headers["message"] == "duplicate subscription"
    client = connected(broker)
    client.send("SUBSCRIBE", id="1", destination="/topic/a", ack="sometimes")
    assert client.frames()[0].headers["message"] == "invalid ack mode"
    client = connected(broker)
    client.send("UNSUBSCRIBE", id="nope")
    assert client.frames()[0].headers["message"] == "no such subscription"


def test_10_subscription_without_id(broker):
    client = connected(broker, "1.0")
    client.send("SUBSCRIBE", destination="/topic/a")
    client.send("SEND", b"x", destination="/topic/a")
    [frame] = client.frames()
    assert "subscription" not in frame.headers
    client.send("UNSUBSCRIBE", destination="/topic/a")
    client.send("SEND", b"y", destination="/topic/a")
    assert client.frames() == []
    assert not broker.topics


# --------------------------------------------------------------------------
# acknowledgements


def test_client_ack_is_cumulative_and_unacked_go_to_another_subscriber(broker):
    a = connected(broker)
    a.send("SUBSCRIBE", id="a", destination="/queue/q", ack="client")
    for i in range(3):
        broker.publish("/queue/q", str(i))
    frames = a.frames()
    assert [f.body for f in frames] == [b"0", b"1", b"2"]
    assert all("ack" in f.headers for f in frames)
    a.send("ACK", id=frames[1].headers["ack"])  # acks 0 and 1
    b = connected(broker)
    b.send("SUBSCRIBE", id="b", destination="/queue/q")
    a.conn.connection_lost()
    [again] = b.frames()
    assert again.body == b"2"
    assert again.headers["redelivered"] == "true"
    assert again.headers["message-id"] == frames[2].headers["message-id"]


def test_client_individual_ack(broker):
    a = connected(broker, "1.1")
    a.send("SUBSCRIBE", id="a", destination="/queue/q", ack="client-individual")
    for i in range(3):
        broker.publish("/queue/q", str(i))
    frames = a.frames()
    a.send("ACK", subscription="a", message_id=frames[2].headers["message-id"])
    a.send("UNSUBSCRIBE", id="a")
    b = connected(broker)
    b.send("SUBSCRIBE", id="b", destination="/queue/q")
    assert [f.body for f in b.frames()] == [b"0", b"1"]


def test_10_ack_by_message_id(broker):
    a = connected(broker, "1.0")
    a.send("SUBSCRIBE", id="a", destination="/queue/q", ack="client")
    broker.publish("/queue/q", "x")
    [frame] = a.frames()
    a.send("ACK", message_id=frame.headers["message-id"], receipt="r")
    assert a.frames()[0].command == "RECEIPT"
    a.conn.connection_lost()
    assert not broker.queues


def test_nack_requeues_queue_messages_and_drops_topic_ones(broker):
    a = connected(broker)
    a.send("SUBSCRIBE", id="q", destination="/queue/q", ack="client-individual")
    a.send("SUBSCRIBE", id="t", destination="/topic/t", ack="client")
    broker.publish("/queue/q", "job")
    broker.publish("/topic/t", "news")
    job, news = a.frames()
    a.send("NACK", id=news.headers["ack"])
    a.send("NACK", id=job.headers["ack"])
    [again] = a.frames()
    assert again.body == b"job" and again.headers["redelivered"] == "true"
    a.send("NACK", id=again.headers["ack"], requeue="false")
    assert a.frames() == []
    assert broker.stats["nacked"] == 2


def test_returned_messages_go_back_in_publish_order(broker):
    """A NACKed message given again to its only subscriber came after the ones it still held,
    so at a disconnect they all went back in delivery order: m0, m2, m1.  RabbitMQ requeues
    each message to its place, and the next consumer gets m0, m1, m2 (found by running the
    same frames against both)."""
    a = connected(broker)
    a.send("SUBSCRIBE", id="a", destination="/queue/q", ack="client-individual")
    for i in range(3):
        broker.publish("/queue/q", f"m{i}")
    frames = a.frames()
    a.send("NACK", id=frames[1].headers["ack"])
    [again] = a.frames()
    assert again.body == b"m1"
    a.conn.connection_lost()
    b = connected(broker)
    b.send("SUBSCRIBE", id="b", destination="/queue/q")
    assert [f.body for f in b.frames()] == [b"m0", b"m1", b"m2"]


def test_returned_messages_merge_with_earlier_returned_ones(broker):
    """Messages that came back once and were given to another subscriber come back again in
    publish order, not in the order that subscriber received them (m1, m3, m0, m2, m4)."""
    a, b = connected(broker), connected(broker)
    a.send("SUBSCRIBE", id="a", destination="/queue/q", ack="client")
    b.send("SUBSCRIBE", id="b", destination="/queue/q", ack="client")
    for i in range(4):
        broker.publish("/queue/q", f"m{i}")
    assert [f.body for f in a.frames()] == [b"m0", b"m2"]
    assert [f.body for f in b.frames()] == [b"m1", b"m3"]
    broker.publish("/queue/q", "m4")
    assert [f.body for f in a.frames()] == [b"m4"]
    a.conn.connection_lost()  # m0, m2, m4 come back, and b takes them after its m1, m3
    assert [f.body for f in b.frames()] == [b"m0", b"m2", b"m4"]
    b.conn.connection_lost()
    c = connected(broker)
    c.send("SUBSCRIBE", id="c", destination="/queue/q")
    assert [f.body for f in c.frames()] == [b"m0", b"m1", b"m2", b"m3", b"m4"]


@pytest.mark.parametrize("version, headers", [("1.2", {"id": "nope"}), ("1.1", {"subscription": "a", "message_id": "x"}),
                                              ("1.0", {"message_id": "x"}), ("1.2", {})])
def test_unknown_ack(broker, version, headers):
    a = connected(broker, version)
    a.send("SUBSCRIBE", id="a", destination="/queue/q", ack="client")
    a.send("ACK", **headers)
    [frame] = a.frames()
    assert frame.command == "ERROR"


def test_ack_of_auto_subscription_is_an_error(broker):
    a = connected(broker)
    a.send("SUBSCRIBE", id="a", destination="/queue/q")
    broker.publish("/queue/q", "x")
    [frame] = a.frames()
    a.send("ACK", id=f"1-{frame.headers['message-id']}")
    assert a.frames()[0].headers["message"] == "unknown ack id"


def test_queue_respects_unacked_limit_and_prefetch(broker):
    a = connected(broker)
    a.send("SUBSCRIBE", id="a", destination="/queue/q", ack="client-individual", prefetch_count="2")
    for i in range(5):
        broker.publish("/queue/q", str(i))
    frames = a.frames()
    assert [f.body for f in frames] == [b"0", b"1"]
    a.send("ACK", id=frames[0].headers["ack"])
    assert [f.body for f in a.frames()] == [b"2"]
    assert broker.status()["deliveries"] == 3  # queues' deliveries count too (they were 0)


def test_topic_subscriber_over_unacked_limit_is_disconnected():
    broker = make_broker("max_unacked = 3")
    a = connected(broker)
    a.send("SUBSCRIBE", id="a", destination="/topic/t", ack="client")
    other = connected(broker)
    other.send("SUBSCRIBE", id="o", destination="/topic/t")
    for i in range(4):
        broker.publish("/topic/t", str(i))
    frames = a.frames()
    assert frames[-1].headers["message"] == "too many unacknowledged messages"
    assert len(other.frames()) == 4


def test_topic_prefetch_holds_messages_back_until_acked():
    """prefetch-count on a client-ack topic subscription holds the rest back, as RabbitMQ does
    (it was a disconnect), within max_unacked messages in all; the held ones count as the
    connection's unacknowledged bytes and are dropped when the subscription ends."""
    broker = make_broker("max_unacked = 6")
    a = connected(broker)
    a.send("SUBSCRIBE", id="a", destination="/topic/t", ack="client", prefetch_count="2")
    for i in range(5):
        broker.publish("/topic/t", str(i))
    frames = a.frames()
    assert [f.body for f in frames] == [b"0", b"1"] and not a.closed
    assert broker.status()["unacked_bytes"] == 5
    a.send("ACK", id=frames[1].headers["ack"])  # cumulative: room for two more
    frames = a.frames()
    assert [f.body for f in frames] == [b"2", b"3"]
    a.send("NACK", id=frames[0].headers["ack"])  # a NACK makes room too (the topic drops m2)
    assert [f.body for f in a.frames()] == [b"4"]
    broker.publish("/topic/t", "5")
    assert a.frames() == [] and not a.closed
    a.send("UNSUBSCRIBE", id="a")
    assert broker.status()["unacked_bytes"] == 0


def test_topic_prefetch_backlog_is_bounded_by_max_unacked():
    broker = make_broker("max_unacked = 4")
    a = connected(broker)
    a.send("SUBSCRIBE", id="a", destination="/topic/t", ack="client-individual", prefetch_count="1")
    other = connected(broker)
    other.send("SUBSCRIBE", id="o", destination="/topic/t")
    for i in range(5):
        broker.publish("/topic/t", str(i))
    frames = a.frames()
    assert [f.body for f in frames[:-1]] == [b"0"]
    assert frames[-1].headers["message"] == "too many unacknowledged messages"
    assert b"held back" in frames[-1].body
    assert len(other.frames()) == 5 and broker.status()["unacked_bytes"] == 0

def test_unacknowledged_bytes_are_bounded_per_connection_and_in_all():
    """max_unacked counts messages; a client that reads 100 KB messages and never ACKs held
    gigabytes.  Its queues keep what it may not take; its topic subscriptions are cut."""
    broker = make_broker("max_unacked_bytes = 4096\nqueue.max_total_bytes = 10000")
    a = connected(broker)
    for sub in ("x", "y"):  # two subscriptions share the connection's bound
        a.send("SUBSCRIBE", id=sub, destination="/queue/q", ack="client-individual")
    for i in range(20):
        broker.publish("/queue/q", str(i % 10) * 1000)
    frames = a.frames()
    assert len(frames) == 5 and broker.status()["unacked_bytes"] == 5000  # 4,000 is under the bound
    a.send("ACK", id=frames[0].headers["ack"])
    a.send("ACK", id=frames[1].headers["ack"])
    assert len(a.frames()) == 2 and broker.status()["unacked_bytes"] == 5000
    b = connected(broker)  # all connections together: queue.max_total_bytes
    b.send("SUBSCRIBE", id="b", destination="/queue/q", ack="client")
    assert len(b.frames()) == 5 and broker.status()["unacked_bytes"] == 10000
    c = connected(broker)
    c.send("SUBSCRIBE", id="c", destination="/queue/q", ack="client")
    assert c.frames() == []  # the rest stays in the queue
    c.send("SUBSCRIBE", id="t", destination="/topic/t", ack="client")
    broker.publish("/topic/t", "t")
    assert c.frames()[-1].headers["message"] == "too many unacknowledged messages"
    a.conn.connection_lost()
    b.conn.connection_lost()
    assert broker.status()["unacked_bytes"] == 0  # returned to the queue, and counted no more


# --------------------------------------------------------------------------
# transactions


def test_transaction_commit_and_abort(broker):
    sub = connected(broker)
    sub.send("SUBSCRIBE", id="s", destination="/queue/q", ack="client-individual")
    pub = connected(broker)
    pub.send("BEGIN", transaction="t1")
    pub.send("SEND", b"a", destination="/queue/q", transaction="t1")
    pub.send("SEND", b"b", destination="/queue/q", transaction="t1")
    assert sub.frames() == []
    pub.send("COMMIT", transaction="t1")
    a, b = sub.frames()
    assert (a.body, b.body) == (b"a", b"b")
    pub.send("BEGIN", transaction="t2")
    pub.send("SEND", b"c", destination="/queue/q", transaction="t2")
    pub.send("ABORT", transaction="t2")
    assert sub.frames() == []
    # acks in a transaction: aborted ones stay unacked
    sub.send("BEGIN", transaction="x")
    sub.send("ACK", id=a.headers["ack"], transaction="x")
    sub.send("ABORT", transaction="x")
    sub.send("BEGIN", transaction="y")
    sub.send("ACK", id=b.headers["ack"], transaction="y")
    sub.send("COMMIT", transaction="y")
    assert list(sub.conn.subscriptions["s"].unacked) == [a.headers["message-id"]]


@pytest.mark.parametrize("frames, message", [
    ([("COMMIT", {"transaction": "nope"})], "unknown transaction"),
    ([("ABORT", {"transaction": "nope"})], "unknown transaction"),
    ([("BEGIN", {})], "missing 'transaction' header"),
    ([("BEGIN", {"transaction": "t"}), ("BEGIN", {"transaction": "t"})], "duplicate transaction"),
    ([("SEND", {"transaction": "nope", "destination": "/queue/q"})], "unknown transaction"),
])
def test_transaction_errors(broker, frames, message):
    client = connected(broker)
    for command, headers in frames:
        client.send(command, **headers)
    assert client.frames()[-1].headers["message"] == message


def test_transaction_bounds():
    broker = make_broker("transaction.max_frames = 2\ntransaction.max_open = 1")
    client = connected(broker)
    client.send("BEGIN", transaction="t")
    client.send("BEGIN", transaction="u")
    assert client.frames()[0].headers["message"] == "too many transactions"
    client = connected(broker)
    client.send("BEGIN", transaction="t")
    for _ in range(3):
        client.send("SEND", b"x", destination="/queue/q", transaction="t")
    assert client.frames()[0].headers["message"] == "transaction too large"


def test_disconnect_aborts_open_transactions(broker):
    sub = connected(broker)
    sub.send("SUBSCRIBE", id="s", destination="/topic/t")
    pub = connected(broker)
    pub.send("BEGIN", transaction="t")
    pub.send("SEND", b"x", destination="/topic/t", transaction="t")
    pub.send("DISCONNECT")
    assert sub.frames() == []


# --------------------------------------------------------------------------
# queue bounds


def test_queue_drops_oldest_past_its_bound_and_logs(caplog):
    broker = make_broker("queue.max_messages = 3")
    with caplog.at_level(logging.WARNING, "orbited.stomp"):
        for i in range(5):
            broker.publish("/queue/q", str(i))
    assert "queue /queue/q is full" in caplog.text
    client = connected(broker)
    client.send("SUBSCRIBE", id="s", destination="/queue/q")
    assert [f.body for f in client.frames()] == [b"2", b"3", b"4"]
    assert broker.stats["dropped"] == 2


def test_queue_byte_bound():
    broker = make_broker("queue.max_bytes = 2048")
    for _ in range(3):
        broker.publish("/queue/q", b"x" * 1000)
    assert len(broker.queues["/queue/q"].waiting) == 2


def test_queue_reject_policy():
    broker = make_broker("queue.max_messages = 2\nqueue.overflow = reject")
    broker.publish("/queue/q", "1")
    broker.publish("/queue/q", "2")
    with pytest.raises(DestinationFull):
        broker.publish("/queue/q", "3")
    client = connected(broker)
    client.send("SEND", b"4", destination="/queue/q")
    assert client.frames()[0].headers["message"] == "queue full"


def test_max_queues():
    broker = make_broker("queue.max_queues = 2")
    for name in ("a", "b", "c"):
        broker.publish(f"/queue/{name}", "x")
    assert set(broker.queues) == {"/queue/a", "/queue/b"}


def test_total_bound_drops_the_oldest_of_the_largest_queue(caplog):
    broker = make_broker("queue.max_total_bytes = 4096")
    for i in range(3):
        broker.publish("/queue/big", b"%d" % i + b"x" * 999)
    broker.publish("/queue/small", b"s" * 500)
    with caplog.at_level(logging.WARNING, "orbited.stomp"):
        broker.publish("/queue/small", b"t" * 1000)  # 4,500 bytes in all: over by 404
    assert "queue /queue/big is full" in caplog.text and "queue.max_total_bytes" in caplog.text
    assert [m.body[:1] for m in broker.queues["/queue/big"].waiting] == [b"1", b"2"]
    assert len(broker.queues["/queue/small"].waiting) == 2  # the small queue keeps everything
    assert broker.waiting.bytes == 3500 == broker.status()["waiting_bytes"]
    assert broker.stats["dropped"] == 1


def test_total_bound_with_reject_refuses_the_new_message():
    broker = make_broker("queue.max_total_bytes = 2048\nqueue.overflow = reject")
    broker.publish("/queue/a", b"x" * 1000)
    broker.publish("/queue/b", b"x" * 1000)
    with pytest.raises(DestinationFull):
        broker.publish("/queue/c", b"x" * 100)
    assert "/queue/c" not in broker.queues and broker.waiting.bytes == 2000
    client = connected(broker)
    client.send("SEND", b"y" * 100, destination="/queue/a")
    error = client.frames()[0]
    assert error.command == "ERROR" and error.headers["message"] == "queue full"
    assert b"queue.max_total_bytes" in error.body
    assert len(broker.queues["/queue/a"].waiting) == 1


def test_total_follows_deliveries_and_returns(broker):
    """The total is kept by each change to a queue; it must match the queues' own counts."""
    client = connected(broker)
    client.send("SUBSCRIBE", id="s", destination="/queue/q", ack="client")
    for i in range(5):
        broker.publish("/queue/q", b"m%d" % i)
        broker.publish("/queue/other", b"o%d" % i)
    assert broker.waiting.bytes == sum(q.waiting_bytes for q in broker.queues.values()) == 10
    client.send("DISCONNECT")  # its five unacknowledged messages go back to /queue/q
    assert broker.waiting.bytes == sum(q.waiting_bytes for q in broker.queues.values()) == 20
    taker = connected(broker)
    taker.send("SUBSCRIBE", id="t", destination="/queue/q")
    taker.send("SUBSCRIBE", id="u", destination="/queue/other")
    assert broker.waiting.bytes == 0 and not any(q.waiting for q in broker.queues.values())


def test_empty_destinations_are_forgotten(broker):
    client = connected(broker)
    client.send("SUBSCRIBE", id="1", destination="/topic/t")
    client.send("SUBSCRIBE", id="2", destination="/queue/q")
    broker.publish("/queue/q", "x")
    client.send("DISCONNECT")
    assert not broker.topics and not broker.queues and not broker.connections


# --------------------------------------------------------------------------
# heart-beats


def test_heart_beats_sent_when_idle_and_dead_client_detected():
    clock = Clock()
    broker = make_broker("heartbeat = 1000,2000\nheartbeat.tolerance = 1.5", clock)
    client = Client(broker)
    client.send("CONNECT", accept_version="1.2", heart_beat="500,3000")
    [frame] = client.frames()
    assert frame.headers["heart-beat"] == "1000,2000"
    # we send every max(1000, 3000) = 3 s; the client every max(500, 2000) = 2 s
    clock.advance(1.5)
    client.conn.receive(b"\n")
    clock.advance(1.5)
    assert client.outbox.data == b"\n"
    client.outbox.data.clear()
    client.conn.receive(b"\n")  # the client's heart-beat
    clock.advance(2.9)
    assert not client.closed
    clock.advance(0.2)  # 3.1 s > 1.5 x 2 s of silence
    assert client.closed and client.outbox.closed is False  # graceful: the ERROR frame is sent first
    assert b"heart-beat timeout" in client.outbox.data


def test_traffic_counts_as_heart_beat():
    clock = Clock()
    broker = make_broker("heartbeat = 1000,1000", clock)
    client = Client(broker)
    client.send("CONNECT", accept_version="1.2", heart_beat="1000,1000")
    client.send("SUBSCRIBE", id="s", destination="/topic/t")
    client.frames()
    for _ in range(10):
        clock.advance(0.5)
        broker.publish("/topic/t", "tick")
        client.send("SEND", b"x", destination="/topic/other")
    assert [f.body for f in client.frames()] == [b"tick"] * 10
    assert not client.closed


def test_no_heart_beats_when_either_side_declines():
    clock = Clock()
    broker = make_broker("heartbeat = 0,0", clock)
    client = Client(broker)
    client.send("CONNECT", accept_version="1.2", heart_beat="100,100")
    client.frames()
    clock.advance(60)
    assert client.outbox.data == b"" and not client.closed


def test_bad_heart_beat_header(broker):
    client = Client(broker)
    client.send("CONNECT", accept_version="1.2", heart_beat="fast")
    assert client.frames()[0].headers["message"] == "invalid heart-beat header"


# --------------------------------------------------------------------------
# flow control


def slow_subscriber_and_publisher(clock: Clock, stall_timeout: int) -> tuple[StompBroker, Client, Client]:
    """A subscriber to /topic/t and a publisher that has sent it '1', pause_publishers 2 s."""
    broker = make_broker(f"flow.pause_publishers = 2\nflow.stall_timeout = {stall_timeout}", clock)
    slow = connected(broker)
    slow.send("SUBSCRIBE", id="s", destination="/topic/t")
    pub = connected(broker)
    pub.send("SEND", b"1", destination="/topic/t")
    return broker, slow, pub


def test_congested_subscriber_pauses_publishers_then_stops_holding_them():
    clock = Clock()
    broker, slow, pub = slow_subscriber_and_publisher(clock, 10)
    slow.conn.congestion_started()
    assert pub.outbox.paused and pub.conn.reading_paused
    # frames that arrive meanwhile wait in the parser
    pub.conn.receive(encode_frame(Frame("SEND", {"destination": "/topic/t"}, b"2"), "1.2"))
    assert [f.body for f in slow.frames()] == [b"1"]
    slow.conn.congestion_ended()
    assert not pub.outbox.paused
    assert [f.body for f in slow.frames()] == [b"2"]
    slow.conn.congestion_started()
    clock.advance(2.1)  # patience over: publishers go on
    assert not pub.outbox.paused
    clock.advance(8)  # stall_timeout
    assert slow.closed and slow.outbox.closed is True
    assert broker.stats["slow_consumers"] == 1


def test_slow_consumer_past_max_pending_is_disconnected(caplog):
    broker = make_broker("flow.max_pending = 65536\nflow.pause_publishers = 0")
    slow = connected(broker)
    slow.send("SUBSCRIBE", id="s", destination="/topic/t")
    fast = connected(broker)
    fast.send("SUBSCRIBE", id="f", destination="/topic/t")
    slow.conn.congestion_started()
    with caplog.at_level(logging.WARNING, "orbited.stomp"):
        for _ in range(100):
            broker.publish("/topic/t", b"x" * 1000)
    assert slow.closed and slow.outbox.closed is True
    assert "slow consumer" in caplog.text
    assert len(fast.frames()) == 100


def test_queue_skips_congested_subscribers(broker):
    a = connected(broker)
    a.send("SUBSCRIBE", id="a", destination="/queue/q")
    b = connected(broker)
    b.send("SUBSCRIBE", id="b", destination="/queue/q")
    a.conn.congestion_started()
    for i in range(3):
        broker.publish("/queue/q", str(i))
    assert a.frames() == [] and len(b.frames()) == 3
    b.conn.congestion_started()
    broker.publish("/queue/q", "held")
    a.conn.congestion_ended()
    assert [f.body for f in a.frames()] == [b"held"]


def test_new_publisher_is_paused_during_congestion(broker):
    slow = connected(broker)
    slow.send("SUBSCRIBE", id="s", destination="/topic/t")
    slow.conn.congestion_started()
    pub = connected(broker)
    pub.send("SEND", b"1", destination="/topic/t")
    assert pub.outbox.paused


def test_shutdown_sends_error_to_everyone(broker):
    clients = [connected(broker) for _ in range(3)]
    broker.shutdown()
    for client in clients:
        assert client.frames()[0].headers["message"] == "server shutting down"
        assert client.closed
    assert not broker.connections


def test_status(broker):
    client = connected(broker)
    client.send("SUBSCRIBE", id="s", destination="/queue/q", ack="client")
    broker.publish("/queue/q", "x")
    status = broker.status()
    assert status["connections"] == 1 and status["by_version"] == {"1.2": 1}
    assert status["queues"] == 1 and status["development_mode"] is True


def test_internal_error_is_an_error_frame_not_a_crash(broker, monkeypatch, caplog):
    client = connected(broker)
    monkeypatch.setattr(broker, "publish_frame", lambda frame: 1 / 0)
    with caplog.at_level(logging.ERROR, "orbited.stomp"):
        client.send("SEND", b"x", destination="/topic/t")
    assert client.frames()[0].headers["message"] == "internal error"
    other = connected(broker)
    assert other.conn.state is State.CONNECTED


# --------------------------------------------------------------------------
# [stomp] config


def config_problems(text: str) -> list[str]:
    try:
        config = load_text("[listen]\nstomp://127.0.0.1:61613\n[stomp]\n" + text)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return [str(p) for p in config.warnings]


def test_config_defaults_and_values():
    assert config_problems("") == []
    assert config_problems("heartbeat = 0,5000\nqueue.overflow = reject\npublish.enabled = 1") == []


@pytest.mark.parametrize("line, fragment", [
    ("heartbeat = fast", "heartbeat"),
    ("queue.overflow = explode", "queue.overflow"),
    ("frame.max_size = 10", "at least"),
    ("publish.clients = not-an-ip", "publish.clients"),
    ("user.alice =", "empty password"),
    ("user.anonymous = x", "anonymous"),
    ("user.bob = sha256:abc", "64 hex"),
    ("read topic = *", "destination pattern"),
])
def test_config_errors_name_the_line(line, fragment):
    problems = config_problems(line)
    assert problems and fragment in problems[0] and ":4:" in problems[0]
    assert "warning" not in problems[0]


def test_config_warnings():
    assert "unknown key 'colour'" in config_problems("colour = blue")[0]
    assert "development mode" in " ".join(config_problems("read /topic/* = alice"))
    assert "no user.* key for carol" in " ".join(config_problems("user.alice = x\nread /topic/* = carol"))


def test_legacy_morbid_listener_form_warns():
    config = load_text("[listen]\nstomp://:61613 /etc/morbid.cfg\n")
    assert "morbid config" in str(config.warnings[0])
    assert config.listeners[0].scheme == "stomp"


def test_quickstart_runs_the_broker():
    from orbited.config import quickstart

    config = quickstart()
    assert [(lst.scheme, lst.host, lst.port) for lst in config.listeners if lst.scheme == "stomp"] == \
        [("stomp", "127.0.0.1", 61613)]


def test_attach_and_in_process_publish():
    from orbited import stomp
    from orbited.context import ServerContext

    context = ServerContext(load_text("[listen]\nstomp://127.0.0.1:61613\n[stomp]\nmax_unacked = 7\n"), Clock())
    stomp.attach(context)
    broker = context.broker
    assert broker.settings["max_unacked"] == 7
    stomp.attach(context)
    assert context.broker is broker  # once per server
    client = connected(broker)
    client.send("SUBSCRIBE", id="s", destination="/queue/jobs")
    message_id = stomp.publish(context, "/queue/jobs", b"\x00binary", {"x-kind": "job"})
    [frame] = client.frames()
    assert frame.body == b"\x00binary" and frame.headers["message-id"] == message_id
    assert set(stomp.stomp_children(context)) == {b"stomp"}


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=48) | st.sampled_from(
    [b"CONNECT\naccept-version:1.2\n\n\0", b"SUBSCRIBE\nid:1\ndestination:/queue/q\nack:client\n\n\0",
     b"SEND\ndestination:/queue/q\n\nx\0", b"ACK\nid:1-x\n\n\0", b"BEGIN\ntransaction:t\n\n\0",
     b"COMMIT\ntransaction:t\n\n\0", b"NACK\nid:zz\n\n\0", b"\n", b"DISCONNECT\n\n\0"]), max_size=12))
def test_any_input_ends_in_frames_or_one_error_never_an_exception(chunks):
    broker = make_broker()
    client = Client(broker)
    for chunk in chunks:
        client.conn.receive(chunk)
    frames = client.frames()
    errors = [f for f in frames if f.command == "ERROR"]
    assert len(errors) <= 1
    if errors:
        assert frames[-1] is errors[0] and client.closed and errors[0].headers["message"]
    assert all(f.command in ("CONNECTED", "MESSAGE", "RECEIPT", "ERROR") for f in frames)


# --------------------------------------------------------------------------
# found by a fresh-eyes audit: each of these failed on the code before it


@pytest.mark.parametrize(("frames", "message"), [
    ([("SUBSCRIBE", {"id": "s", "destination": "/topic/t", "prefetch-count": "²"})], "invalid prefetch-count"),
    ([("ACK", {"id": "²-x"})], "unknown ack id"),
])
def test_unicode_digits_in_a_header_are_an_invalid_header_not_an_internal_error(frames, message, caplog):
    """str.isdigit takes '²'; int() then raised, logged as an internal error with a traceback."""
    client = connected(make_broker())
    with caplog.at_level(logging.INFO, "orbited.stomp"):
        for command, headers in frames:
            client.send(command, **{k.replace("-", "_"): v for k, v in headers.items()})
    assert client.frames()[0].headers["message"] == message
    assert "Traceback" not in caplog.text and "internal error" not in caplog.text


@pytest.mark.parametrize("beat", ["²,0", "0,²", "1," + "9" * 400, "1,2147483648", "1,2,3", " , "])
def test_a_heart_beat_no_timer_can_take_is_invalid_and_counts_no_version(beat, caplog):
    broker = make_broker()
    client = Client(broker)
    with caplog.at_level(logging.INFO, "orbited.stomp"):
        client.send("CONNECT", accept_version="1.2", heart_beat=beat)
    assert client.frames()[0].headers["message"] == "invalid heart-beat header"
    assert client.closed and "Traceback" not in caplog.text
    assert broker.status()["by_version"] == {}  # was {"1.2": -1}: version set, never counted


def test_a_connect_frame_with_a_body_is_refused(broker):
    client = Client(broker)
    client.send("CONNECT", b"a body", accept_version="1.2")
    assert client.frames()[0].headers["message"] == "unexpected body" and client.closed


def test_a_nul_in_a_header_is_refused_not_passed_on():
    broker = make_broker()
    sub = connected(broker)
    sub.send("SUBSCRIBE", id="s", destination="/topic/t")
    pub = connected(broker)
    pub.conn.receive(b"SEND\ndestination:/topic/t\nx-evil:a\0b\n\nbody\0")
    assert pub.frames()[0].headers["message"] == "malformed header"
    assert sub.frames() == []
    with pytest.raises(ProtocolError):
        broker.publish("/topic/t", "x", {"": "v"})  # the HTTP publish API's ?=v
    with pytest.raises(ProtocolError):
        broker.publish("/topic/t", "x", {"a\0b": "c"})
    assert sub.frames() == []


def test_idle_heart_beats_go_once_per_interval():
    clock = Clock()
    client = Client(make_broker("heartbeat = 200,0", clock))
    client.connect(heart_beat="0,200")
    client.outbox.data.clear()
    for _ in range(200):
        clock.advance(0.01)  # 2 s
    beats = client.outbox.data.count(b"\n")
    assert 9 <= beats <= 11, beats  # every 0.2 s, not every 0.1 s
    # and with traffic no gap is longer than the interval
    client.outbox.data.clear()
    last, longest = clock.seconds(), 0.0
    for step in range(200):
        if step % 13 == 0:
            client.conn.send(b"MESSAGE\n\n\0")
        clock.advance(0.01)
        if client.outbox.data:
            longest, last = max(longest, clock.seconds() - last), clock.seconds()
            client.outbox.data.clear()
    assert longest <= 0.2 + 1e-9, longest


def test_max_queues_counts_queues_that_hold_messages(caplog):
    broker = make_broker("queue.max_queues = 1")
    listener = connected(broker)
    listener.send("SUBSCRIBE", id="s", destination="/queue/a")  # a queue with nobody's messages in it
    broker.publish("/queue/b", "held")  # the one queue that may hold messages
    assert broker.status()["waiting_messages"] == 1 and broker.stats["dropped"] == 0
    with caplog.at_level(logging.WARNING, "orbited.stomp"):
        broker.publish("/queue/c", "one too many")
    assert broker.stats["dropped"] == 1
    assert "dropped 1 new message(s)" in caplog.text and "oldest" not in caplog.text
    broker.publish("/queue/a", "for the listener")  # an existing queue takes messages as ever
    assert [f.body for f in listener.frames()] == [b"for the listener"]


def test_messages_for_ever_new_queues_log_once_and_leave_nothing_behind(caplog):
    """Past queue.max_queues, a client sending to /queue/x-1, x-2, ... got one WARNING per message,
    and the broker kept an entry per name for ever (its log spacing was keyed by queue name)."""
    clock = Clock()
    broker = make_broker("queue.max_queues = 1\nqueue.max_messages = 1", clock)
    broker.publish("/queue/held", "the one queue that may hold messages")
    with caplog.at_level(logging.WARNING, "orbited.stomp"):
        for number in range(1000):
            broker.publish(f"/queue/x-{number}", "no room")
        clock.advance(10)
        broker.publish("/queue/x-last", "no room")
    assert broker.stats["dropped"] == 1001
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "dropped 1 new message(s)" in lines[0] and "dropped 1000 new message(s)" in lines[1], lines
    assert "/queue/x-last" in lines[1]
    # a full queue's spacing is remembered while the queue lives, and no longer
    broker.publish("/queue/held", "drops the oldest")
    listener = connected(broker)
    listener.send("SUBSCRIBE", id="s", destination="/queue/held")
    listener.send("UNSUBSCRIBE", id="s")
    assert broker.status()["queues"] == 0
    assert len(broker._overflow_logged) <= 1, broker._overflow_logged


def test_a_refused_message_leaves_no_queue_behind():
    broker = make_broker("queue.overflow = reject\nqueue.max_bytes = 1024\nqueue.max_queues = 2")
    for name in ("/queue/x", "/queue/y"):
        with pytest.raises(DestinationFull):
            broker.publish(name, b"x" * 2000)
    assert broker.status()["queues"] == 0
    broker.publish("/queue/z", "fits")
    assert broker.status()["waiting_messages"] == 1


def test_a_subscriber_pauses_publishers_within_a_budget_not_once_per_episode():
    """Stop reading 1.5 s, read 0.3 s, again and again: publishers were paused 83% of the time."""
    clock = Clock()
    _broker, slow, pub = slow_subscriber_and_publisher(clock, 100)
    paused = 0.0
    for _ in range(20):
        slow.conn.congestion_started()
        for _ in range(15):
            paused += 0.1 if pub.outbox.paused else 0.0
            clock.advance(0.1)
        slow.conn.congestion_ended()
        clock.advance(0.3)
    # 1.5 s, then 0.53 s, then about 0.16 s a cycle (a tenth of the time it paused no one): not 30 s
    assert 4 < paused < 6, paused
    # a subscriber that stays quiet earns its budget back
    clock.advance(20)
    slow.conn.congestion_started()
    assert pub.outbox.paused
    clock.advance(2.05)
    assert not pub.outbox.paused


def test_subscribers_that_fill_up_together_share_the_pause_budget():
    """A burst that fills every subscriber's buffer is the load itself: publishers stay paused
    while it lasts (here 5 s against a 2 s budget), as the per-episode patience did."""
    clock = Clock()
    broker = make_broker("flow.pause_publishers = 2\nflow.stall_timeout = 100", clock)
    subscribers = [connected(broker, address=f"10.0.0.{i}:4000") for i in range(10)]  # ten clients
    pub = connected(broker)
    pub.send("SEND", b"1", destination="/topic/t")
    for sub in subscribers:
        sub.conn.congestion_started()
    for _ in range(50):
        clock.advance(0.1)
        assert pub.outbox.paused
    for sub in subscribers:
        sub.conn.congestion_ended()
    assert not pub.outbox.paused
    left = [broker.budgets[f"10.0.0.{i}"][0] for i in range(10)]
    assert all(1.4 < budget < 1.6 for budget in left), left  # each paid 0.5 s of the 5
    # one of them alone pays in full: its remaining 1.5 s
    subscribers[0].conn.congestion_started()
    clock.advance(1.4)
    assert pub.outbox.paused
    clock.advance(0.2)
    assert not pub.outbox.paused


def test_one_client_s_many_connections_share_one_pause_budget():
    """20 connections that never read, each with a budget of its own and each paying 1/20,
    kept every publisher paused 88% of the time; reconnecting gave fresh budgets."""
    clock = Clock()
    broker = make_broker("flow.pause_publishers = 2\nflow.stall_timeout = 100", clock)
    pub = connected(broker, address="10.0.0.1:5000")
    pub.send("SEND", b"1", destination="/topic/t")
    paused = 0.0
    for _ in range(3):  # connect, stall together, leave; again
        attackers = [connected(broker, address=f"6.6.6.6:{port}") for port in range(20)]
        for attacker in attackers:
            attacker.conn.congestion_started()
        for _ in range(100):
            paused += 0.1 if pub.outbox.paused else 0.0
            clock.advance(0.1)
        for attacker in attackers:
            attacker.conn.connection_lost()
    assert 3 <= paused < 4.5, paused  # its 2 s, then what it earned back at 0.1 s a second: not 3 x 10 s
    assert not pub.outbox.paused
