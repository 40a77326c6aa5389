"""stomp.py 9 (STOMP 1.0, 1.1, 1.2) against the real ``orbited`` and against RabbitMQ.

Every scenario here is one the STOMP specifications fix (or where both
brokers are documented to agree), so each runs against both brokers and
must pass on both.  Destinations are unique per test, so the shared
RabbitMQ keeps no state between tests.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import socket
import time
import uuid

import pytest
import stomp

from tests.support.procs import OrbitedProcess, free_port

pytestmark = pytest.mark.timeout(120)

VERSIONS = ("1.0", "1.1", "1.2")
CONNECTIONS = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}
TIMEOUT = 10.0


def orbited_config(http: int, stomp_port: int, extra: str = "") -> str:
    return f"""\
[listen]
http://127.0.0.1:{http}
stomp://127.0.0.1:{stomp_port}
[access]
* -> localhost:{stomp_port}
[stomp]
heartbeat = 100,500
{extra}
"""


@pytest.fixture(scope="module")
def orbited_broker():
    http, port = free_port(), free_port()
    proc = OrbitedProcess(orbited_config(http, port), wait_for=port)
    proc.start()
    proc.stomp_port = port
    proc.http_port = http
    yield proc
    proc.stop()
    assert "Traceback" not in proc.log(), proc.log()


@pytest.fixture(params=["orbited", "rabbitmq"])
def broker_port(request) -> int:
    if request.param == "orbited":
        return request.getfixturevalue("orbited_broker").stomp_port
    return request.getfixturevalue("rabbitmq").port


class Collector(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.messages: queue.Queue = queue.Queue()
        self.receipts: queue.Queue = queue.Queue()
        self.errors: list = []
        self.heartbeat_timeouts = 0
        self.disconnects = 0

    def on_message(self, frame) -> None:
        self.messages.put(frame)

    def on_receipt(self, frame) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def on_error(self, frame) -> None:
        self.errors.append(frame)

    def on_heartbeat_timeout(self) -> None:
        self.heartbeat_timeouts += 1

    def on_disconnected(self) -> None:
        self.disconnects += 1

    def next(self, timeout: float = TIMEOUT):
        return self.messages.get(timeout=timeout)

    def none(self, wait: float = 0.5) -> bool:
        try:
            frame = self.messages.get(timeout=wait)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected message {frame}")


class Client:
    """One stomp.py connection and what it received."""

    def __init__(self, port: int, version: str, heartbeats: tuple[int, int] = (0, 0)):
        self.version = version
        options = {"auto_decode": False}
        if version != "1.0":
            options.update(heartbeats=heartbeats, vhost="/")  # RabbitMQ reads 'host' as its virtual host
        self.conn = CONNECTIONS[version]([("127.0.0.1", port)], **options)
        self.inbox = Collector()
        self.conn.set_listener("collector", self.inbox)
        self.conn.connect("guest", "guest", wait=True, headers={"host": "/"})
        self._sub = 0

    def subscribe(self, destination: str, ack: str = "auto", sub_id: str | None = None) -> str:
        self._sub += 1
        sub_id = sub_id or f"sub-{self._sub}"
        self.conn.subscribe(destination, id=sub_id, ack=ack, headers={"receipt": f"s-{sub_id}"})
        assert self.inbox.receipts.get(timeout=TIMEOUT) == f"s-{sub_id}"
        return sub_id

    def unsubscribe(self, sub_id: str) -> None:
        if self.version == "1.0":
            self.conn.unsubscribe(id=sub_id, headers={"receipt": f"u-{sub_id}"})
        else:
            self.conn.unsubscribe(sub_id, headers={"receipt": f"u-{sub_id}"})
        assert self.inbox.receipts.get(timeout=TIMEOUT) == f"u-{sub_id}"

    def send(self, destination: str, body: bytes | str, **headers) -> None:
        self.conn.send(destination, body, headers=headers)

    def sync(self) -> None:
        """Wait until the broker has handled everything sent so far (a receipt round trip)."""
        token = uuid.uuid4().hex
        self.conn.send_frame("BEGIN", {"transaction": token, "receipt": token})
        assert self.inbox.receipts.get(timeout=TIMEOUT) == token
        self.conn.send_frame("ABORT", {"transaction": token})

    def ack(self, frame, nack: bool = False) -> None:
        method = self.conn.nack if nack else self.conn.ack
        headers = frame.headers
        if self.version == "1.0":
            self.conn.ack(headers["message-id"])
        elif self.version == "1.1":
            method(headers["message-id"], headers["subscription"])
        else:
            method(headers["ack"])

    def close(self) -> None:
        if self.conn.is_connected():
            self.conn.disconnect()

    def drop(self) -> None:
        """Vanish without DISCONNECT, as a crashed client would."""
        self.conn.transport.disconnect_socket()


@pytest.fixture
def clients(broker_port):
    made: list[Client] = []

    def make(version: str, heartbeats: tuple[int, int] = (0, 0)) -> Client:
        client = Client(broker_port, version, heartbeats)
        made.append(client)
        return client

    yield make
    for client in made:
        with contextlib.suppress(OSError, stomp.exception.StompException):
            client.close()


def unique(kind: str) -> str:
    return f"/{kind}/test-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_topic_fans_out_to_current_subscribers(clients, version):
    topic = unique("topic")
    a, b, publisher = clients(version), clients(version), clients(version)
    a.subscribe(topic)
    b.subscribe(topic)
    publisher.send(topic, "hello")
    for client in (a, b):
        frame = client.inbox.next()
        assert frame.body == b"hello"
        assert frame.headers["destination"] == topic
        assert frame.headers["message-id"]
        if version != "1.0":
            assert frame.headers["subscription"] == "sub-1"
    late = clients(version)
    late.subscribe(topic)
    late.inbox.none()


@pytest.mark.parametrize("version", VERSIONS)
def test_queue_gives_each_message_to_one_subscriber_and_holds_messages(clients, version):
    name = unique("queue")
    publisher = clients(version)
    a = clients(version)
    sub_id = a.subscribe(name)  # the queue exists before anything is held (RabbitMQ creates it on SUBSCRIBE)
    a.unsubscribe(sub_id)
    a.close()
    for i in range(3):
        publisher.send(name, f"held {i}")
    publisher.sync()
    a, b = clients(version), clients(version)
    a.subscribe(name)
    assert [a.inbox.next().body for _ in range(3)] == [b"held 0", b"held 1", b"held 2"]
    b.subscribe(name)
    for i in range(10):
        publisher.send(name, f"m{i}")
    got = []
    for client in (a, b):
        while True:
            try:
                got.append((client, client.inbox.next(timeout=1.5).body))
            except queue.Empty:
                break
    assert sorted(body for _, body in got) == sorted(f"m{i}".encode() for i in range(10))
    assert {client for client, _ in got} == {a, b}


def holding_three(clients, version: str, ack: str):
    """A subscriber (``ack`` mode) on a fresh queue, holding m0, m1, m2 unacknowledged."""
    name = unique("queue")
    subscriber, publisher = clients(version), clients(version)
    subscriber.subscribe(name, ack=ack)
    for i in range(3):
        publisher.send(name, f"m{i}")
    return name, subscriber, [subscriber.inbox.next() for _ in range(3)]


@pytest.mark.parametrize("version", VERSIONS)
def test_client_ack_is_cumulative_and_unacked_messages_go_to_another_subscriber(clients, version):
    name, a, frames = holding_three(clients, version, "client")
    if version == "1.2":
        assert all(frame.headers.get("ack") for frame in frames)
    a.ack(frames[1])  # covers m0 and m1
    a.sync()
    a.drop()
    b = clients(version)
    b.subscribe(name, ack="client")
    again = b.inbox.next()
    assert again.body == b"m2"
    assert again.headers.get("redelivered") == "true"
    b.ack(again)
    b.inbox.none()


@pytest.mark.parametrize("version", VERSIONS)
def test_client_individual_ack(clients, version):
    name, a, frames = holding_three(clients, version, "client-individual")
    a.ack(frames[2])  # only m2
    a.sync()
    a.drop()
    b = clients(version)
    b.subscribe(name, ack="client-individual")
    assert sorted([b.inbox.next().body, b.inbox.next().body]) == [b"m0", b"m1"]
    b.inbox.none()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nack_puts_a_queue_message_back(clients, version):
    name = unique("queue")
    a, publisher = clients(version), clients(version)
    a.subscribe(name, ack="client-individual")
    publisher.send(name, "retry me")
    first = a.inbox.next()
    a.ack(first, nack=True)
    again = a.inbox.next()
    assert again.body == b"retry me"
    assert again.headers.get("redelivered") == "true"
    a.ack(again)
    a.inbox.none()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_returned_messages_keep_publish_order(clients, version):
    """A NACKed message comes back after the ones its subscriber still holds; when that
    subscriber drops, the next one gets them all in publish order on both brokers."""
    name, a, frames = holding_three(clients, version, "client-individual")
    a.ack(frames[1], nack=True)
    assert a.inbox.next().body == b"m1"
    a.sync()
    a.drop()
    b = clients(version)
    b.subscribe(name)
    assert [b.inbox.next().body for _ in range(3)] == [b"m0", b"m1", b"m2"]


@pytest.mark.parametrize("version", VERSIONS)
def test_topic_prefetch_holds_messages_back_until_acked(clients, version):
    """A client-ack topic subscriber at its prefetch-count gets the rest as it ACKs (Orbited
    disconnected it)."""
    topic = unique("topic")
    sub, publisher = clients(version), clients(version)
    sub.conn.subscribe(topic, id="p", ack="client-individual", headers={"prefetch-count": "2", "receipt": "s-p"})
    assert sub.inbox.receipts.get(timeout=TIMEOUT) == "s-p"
    for i in range(4):
        publisher.send(topic, f"m{i}")
    first, second = sub.inbox.next(), sub.inbox.next()
    assert [first.body, second.body] == [b"m0", b"m1"]
    sub.inbox.none()
    sub.ack(first)
    assert sub.inbox.next().body == b"m2"
    sub.ack(second)
    assert sub.inbox.next().body == b"m3"
    assert sub.conn.is_connected()

@pytest.mark.parametrize("version", VERSIONS)
def test_transactions_commit_and_abort(clients, version):
    topic = unique("topic")
    sub, publisher = clients(version), clients(version)
    sub.subscribe(topic)
    publisher.conn.begin("tx1")
    publisher.conn.send(topic, b"one", transaction="tx1")
    publisher.conn.send(topic, b"two", transaction="tx1")
    publisher.sync()
    sub.inbox.none()
    publisher.conn.commit("tx1")
    assert [sub.inbox.next().body, sub.inbox.next().body] == [b"one", b"two"]
    publisher.conn.begin("tx2")
    publisher.conn.send(topic, b"never", transaction="tx2")
    publisher.conn.abort("tx2")
    publisher.sync()
    sub.inbox.none()


@pytest.mark.parametrize("version", VERSIONS)
def test_ack_inside_a_transaction(clients, version):
    name = unique("queue")
    a, publisher = clients(version), clients(version)
    a.subscribe(name, ack="client-individual" if version != "1.0" else "client")
    publisher.send(name, "job")
    frame = a.inbox.next()
    a.conn.begin("t")
    headers = frame.headers
    if version == "1.0":
        a.conn.ack(headers["message-id"], transaction="t")
    elif version == "1.1":
        a.conn.ack(headers["message-id"], headers["subscription"], transaction="t")
    else:
        a.conn.ack(headers["ack"], transaction="t")
    a.conn.abort("t")  # the ACK is rolled back: the message is still unacknowledged
    a.sync()
    a.drop()
    b = clients(version)
    b.subscribe(name)
    assert b.inbox.next().body == b"job"


@pytest.mark.parametrize("version", VERSIONS)
def test_receipts(clients, version):
    client = clients(version)
    topic = unique("topic")
    client.conn.send(topic, b"x", headers={"receipt": "r-send"})
    assert client.inbox.receipts.get(timeout=TIMEOUT) == "r-send"
    client.conn.subscribe(topic, id="s", headers={"receipt": "r-sub"})
    assert client.inbox.receipts.get(timeout=TIMEOUT) == "r-sub"
    if version == "1.0":
        client.conn.unsubscribe(id="s", headers={"receipt": "r-unsub"})
    else:
        client.conn.unsubscribe("s", headers={"receipt": "r-unsub"})
    assert client.inbox.receipts.get(timeout=TIMEOUT) == "r-unsub"
    client.conn.disconnect(receipt="r-bye")
    assert not client.conn.is_connected()


@pytest.mark.parametrize("version", VERSIONS)
def test_binary_bodies_with_nuls(clients, version):
    topic = unique("topic")
    sub, publisher = clients(version), clients(version)
    sub.subscribe(topic)
    body = bytes(range(256)) + b"\0\0end\0"
    publisher.send(topic, body, **{"content-type": "application/octet-stream"})
    frame = sub.inbox.next()
    assert frame.body == body
    assert frame.headers["content-length"] == str(len(body))


@pytest.mark.parametrize("version", VERSIONS)
def test_non_ascii_headers_with_escaping(clients, version):
    topic = unique("topic")
    sub, publisher = clients(version), clients(version)
    sub.subscribe(topic)
    value = "grüße 日本語" if version == "1.0" else "grüße: 日本語\nline two \\ back"
    publisher.send(topic, "été ☃".encode(), **{"x-note": value})
    frame = sub.inbox.next()
    assert frame.headers["x-note"] == value
    assert frame.body == "été ☃".encode()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_heart_beats_keep_an_idle_connection_open(clients, version):
    topic = unique("topic")
    client = clients(version, heartbeats=(500, 500))
    client.subscribe(topic)
    time.sleep(4)  # idle, far longer than the heart-beat period
    assert client.inbox.heartbeat_timeouts == 0 and client.conn.is_connected()
    client.send(topic, "still here")
    assert client.inbox.next().body == b"still here"


def raw_connect(port: int, heart_beat: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(f"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:{heart_beat}"
                 "\n\n\0".encode())
    data = b""
    while b"\0" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return sock, data


def test_broker_closes_a_client_whose_heart_beats_stop(broker_port):
    sock, connected = raw_connect(broker_port, "500,0")
    assert connected.startswith(b"CONNECTED")
    started = time.monotonic()
    sock.settimeout(30)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    elapsed = time.monotonic() - started
    sock.close()
    assert 0.4 < elapsed < 20


def test_client_detects_a_dead_broker(orbited_broker):
    """SIGSTOP the broker: stomp.py notices the missing heart-beats (orbited only: RabbitMQ is shared)."""
    http, port = free_port(), free_port()
    with OrbitedProcess(orbited_config(http, port), wait_for=port) as proc:
        client = Client(port, "1.2", heartbeats=(0, 500))
        time.sleep(2)
        assert client.inbox.heartbeat_timeouts == 0
        proc.proc.send_signal(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 10
            while client.inbox.heartbeat_timeouts == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.proc.send_signal(signal.SIGCONT)
        assert client.inbox.heartbeat_timeouts >= 1
        client.drop()


def test_unknown_destination_prefix_is_an_error_on_both(broker_port):
    sock, _ = raw_connect(broker_port, "0,0")
    sock.sendall(b"SEND\ndestination:/nonsense/place\n\nx\0")
    data = b""
    sock.settimeout(TIMEOUT)
    while b"\0" not in data:  # RabbitMQ sends this ERROR but keeps the connection; ours closes
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    assert data.lstrip(b"\n").startswith(b"ERROR\n") and b"message:" in data


def test_a_forged_user_id_is_refused_on_both(broker_port):
    """user-id on a SEND must be the sender's login (guest here); another is an ERROR."""
    topic = unique("topic")
    sub, _ = raw_connect(broker_port, "0,0")
    sub.sendall(f"SUBSCRIBE\ndestination:{topic}\nid:s\nreceipt:r\n\n\0".encode())
    assert read_frame(sub).startswith(b"RECEIPT\n")
    sender, _ = raw_connect(broker_port, "0,0")
    sender.sendall(f"SEND\ndestination:{topic}\nuser-id:guest\n\nsigned\0"
                   f"SEND\ndestination:{topic}\nuser-id:someone-else\n\nforged\0".encode())
    assert read_frame(sender).startswith(b"ERROR\n")
    received = read_frame(sub)
    assert b"user-id:guest" in received and received.endswith(b"signed\0")
    with pytest.raises(socket.timeout):  # and the forged one never comes
        read_frame(sub, timeout=1.0)
    sub.close()
    sender.close()


def read_frame(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """The next frame (heart-beat EOLs skipped), or what came before the socket closed."""
    data = b""
    sock.settimeout(timeout)
    while b"\0" not in data.lstrip(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data.lstrip(b"\r\n")
