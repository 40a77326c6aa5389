"""The real ``orbited`` process as a STOMP server: bad input, slow consumers, /stomp, publishing, shutdown.

Bad input must get an ERROR frame with a ``message`` header and a clean
close, never a traceback, and must not disturb any other client.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import websocket  # websocket-client

from tests.support.procs import OrbitedProcess, free_port, rss_kb
from tests.support.rawws import masked, raw_upgrade, read_frame, upgrade

pytestmark = pytest.mark.timeout(120)


def config(http: int, stomp_port: int, stomp_section: str = "", access: str | None = None) -> str:
    rule = access if access is not None else f"* -> localhost:{stomp_port}"
    return f"""\
[global]
status = on
[listen]
http://127.0.0.1:{http}
stomp://127.0.0.1:{stomp_port}
[access]
{rule}
[stomp]
frame.max_size = 65536
frame.max_headers = 32
frame.max_header_size = 1024
connect_timeout = 2
{stomp_section}
"""


class Server:
    def __init__(self, stomp_section: str = "", access: str | None = None):
        self.http, self.port = free_port(), free_port()
        self.proc = OrbitedProcess(config(self.http, self.port, stomp_section, access), wait_for=self.port)

    def __enter__(self) -> Server:
        self.proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()

    def log(self) -> str:
        return self.proc.log()


@pytest.fixture(scope="module")
def server():
    with Server() as srv:
        yield srv
    assert "Traceback" not in srv.log(), srv.log()


class Raw:
    """A STOMP client on a bare socket: exactly the bytes we choose."""

    def __init__(self, port: int, connect: bool = True, version: str = "1.2", extra: str = ""):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        if connect:
            self.sock.sendall(f"CONNECT\naccept-version:{version}\nhost:/\n{extra}\n\0".encode())
            assert self.frame().startswith(b"CONNECTED")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self) -> bytes:
        """The next frame, up to its NUL (no content-length bodies with NULs here)."""
        while b"\0" not in self.buffer.lstrip(b"\r\n"):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buffer)
            self.buffer += chunk
        self.buffer = self.buffer.lstrip(b"\r\n")
        frame, _, self.buffer = self.buffer.partition(b"\0")
        return frame

    def error_then_close(self) -> bytes:
        """Read an ERROR frame and then the end of the stream; return the ERROR frame."""
        frame = self.frame()
        assert frame.startswith(b"ERROR\n"), frame
        assert b"\nmessage:" in frame
        rest = self.buffer
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        assert rest.strip(b"\r\n") == b"", rest
        self.sock.close()
        return frame

    def close(self) -> None:
        self.sock.close()


def header(frame: bytes, name: str) -> str:
    for line in frame.split(b"\n\n", 1)[0].split(b"\n")[1:]:
        key, _, value = line.partition(b":")
        if key.decode() == name:
            return value.decode()
    raise KeyError(name)


BAD_INPUT = [
    (b"SEND\ndestination:/topic/a\n\nx\0", False, "not connected"),
    (b"HELLO\n\n\0", True, "unknown command"),
    (b"send\n\n\0", True, "unknown command"),
    (b"SEND\nno colon here\n\n\0", True, "malformed header"),
    (b"SEND\ndestination:/topic/a\nx:bad\\tescape\n\n\0", True, "invalid header escape"),
    (b"SEND\ndestination:/topic/a\ncontent-length:999999\n\n", True, "frame too large"),
    (b"SEND\ndestination:/topic/a\n\n" + b"x" * 70000, True, "frame too large"),
    (b"SEND\ndestination:/topic/a\nbig:" + b"h" * 2000 + b"\n\n\0", True, "header line too long"),
    (b"SEND\n" + b"".join(b"h%d:v\n" % i for i in range(40)) + b"\n\0", True, "too many headers"),
    (b"SEND\ndestination:/topic/a\ncontent-length:1\n\nxyz\0", True, "malformed frame"),
    (b"SEND\ndestination:/topic/a\ncontent-length:abc\n\nx\0", True, "invalid content-length"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)), False, "malformed frame"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False, "malformed frame"),
    (b"SUBSCRIBE\ndestination:/topic/a\n\n\0", True, "missing 'id' header"),
    (b"SEND\n\nx\0", True, "missing 'destination' header"),
    (b"UNSUBSCRIBE\nid:zz\n\n\0", True, "no such subscription"),
    (b"ACK\nid:zz\n\n\0", True, "unknown ack id"),
    (b"COMMIT\ntransaction:zz\n\n\0", True, "unknown transaction"),
    (b"CONNECT\naccept-version:1.2\n\n\0", True, "already connected"),
    (b"SUBSCRIBE\nid:1\ndestination:/topic/a\n\nbody\0", True, "unexpected body"),
]


@pytest.mark.parametrize("data, connect, message", BAD_INPUT, ids=[m for _, _, m in BAD_INPUT])
def test_bad_input_gets_error_and_clean_close_and_others_carry_on(server, data, connect, message):
    bystander = Raw(server.port)
    bystander.send(b"SUBSCRIBE\nid:1\ndestination:/topic/bystander\nreceipt:ok\n\n\0")
    assert bystander.frame().startswith(b"RECEIPT")
    bad = Raw(server.port, connect=connect)
    bad.send(data)
    error = bad.error_then_close()
    assert header(error, "message") == message
    bystander.send(b"SEND\ndestination:/topic/bystander\n\nstill fine\0")
    assert bystander.frame().endswith(b"\n\nstill fine")
    bystander.close()
    assert "Traceback" not in server.log()


def test_bad_input_in_pieces(server):
    bad = Raw(server.port)
    for octet in b"SEND\ndestination:/topic/a\nx:\\q\n\n\0":
        bad.send(bytes([octet]))
    assert header(bad.error_then_close(), "message") == "invalid header escape"


def test_unsupported_version(server):
    raw = Raw(server.port, connect=False)
    raw.send(b"CONNECT\naccept-version:2.0\nhost:/\n\n\0")
    error = raw.error_then_close()
    assert header(error, "version") == "1.0,1.1,1.2"


def test_silent_connection_is_closed_after_connect_timeout(server):
    raw = Raw(server.port, connect=False)
    started = time.monotonic()
    assert header(raw.error_then_close(), "message") == "no CONNECT frame"
    assert 1.5 < time.monotonic() - started < 6


def test_a_client_that_misses_its_heart_beats_gets_error_then_close():
    # The ERROR frame must reach the socket before the close (an abort would drop it).
    with Server(stomp_section="heartbeat = 0,500\n") as srv:
        raw = Raw(srv.port, extra="heart-beat:500,0\n")  # promises a beat every 500 ms, then is silent
        started = time.monotonic()
        error = raw.error_then_close()
        assert header(error, "message") == "heart-beat timeout"
        assert 0.8 < time.monotonic() - started < 5


def test_error_over_websocket(server):
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.http}/stomp", subprotocols=["v12.stomp"])
    assert ws.getsubprotocol() == "v12.stomp"
    ws.send("CONNECT\naccept-version:1.2\nhost:/\n\n\0")
    assert ws.recv().startswith("CONNECTED")
    ws.send("SEND\ndestination:/topic/a\nbad\n\n\0")
    error = ws.recv()
    assert error.startswith("ERROR\n") and "message:malformed header" in error
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE and frame.data[:2] == b"\x03\xe8"  # 1000, normal closure
    ws.close()


def test_websocket_frames_split_across_messages_and_several_per_message(server):
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.http}/stomp", subprotocols=["v10.stomp", "v11.stomp"])
    assert ws.getsubprotocol() == "v11.stomp"
    for piece in ("CONN", "ECT\naccept-version:1.1\nhost:/\n", "\n\0"):
        ws.send(piece)
    assert ws.recv().startswith("CONNECTED\nversion:1.1")
    ws.send("SUBSCRIBE\nid:s\ndestination:/queue/ws-split\n\n\0SEND\ndestination:/queue/ws-split\n\none\0"
            "SEND\ndestination:/queue/ws-split\ncontent-length:4\n\nt\0w")
    ws.send("o\0")
    first, second = ws.recv(), ws.recv()
    assert first.endswith("\n\none\0") and second.endswith("\n\nt\0wo\0")
    ws.send_binary(b"SEND\ndestination:/queue/ws-split\ncontent-length:2\n\n\xff\xfe\0")
    opcode, data = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_BINARY and data.endswith(b"\n\n\xff\xfe\0")
    ws.close()


def test_a_websocket_publisher_held_by_flow_control_is_closed_at_once_after_an_error():
    """A /stomp client the broker stopped reading from (it publishes to a slow subscriber) that
    gets an ERROR must be read again: its answer to our close waited behind the frames it had
    sent, and the connection stayed open for the whole 5 s close-handshake timeout."""
    with Server("max_unacked = 3\npublish.enabled = 1\nflow.pause_publishers = 30\n"
                "flow.stall_timeout = 60") as srv:
        slow = Raw(srv.port)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.send(b"SUBSCRIBE\nid:s\ndestination:/topic/flood\nreceipt:r\n\n\0")
        assert slow.frame().startswith(b"RECEIPT")
        ws = raw_upgrade(srv.http, b"/stomp", headers=b"Sec-WebSocket-Protocol: v12.stomp\r\n")
        ws.sendall(masked(1, b"CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:b\ndestination:/topic/b\n"
                             b"ack:client\nreceipt:r\n\n\0"))
        assert read_frame(ws)[1].startswith(b"CONNECTED") and read_frame(ws)[1].startswith(b"RECEIPT")
        flood = masked(1, b"SEND\ndestination:/topic/flood\n\n" + b"x" * 60000 + b"\0")
        answered = threading.Event()
        stop = threading.Event()
        writer = ws.dup()  # its own timeout: the reader's must not cut a blocked send short

        def publish() -> None:
            writer.settimeout(30)
            while not stop.is_set():
                writer.sendall(flood)
            writer.sendall(masked(8, b"\x03\xe8"))  # a browser answers the close after what it sent
            answered.set()

        threading.Thread(target=publish, daemon=True).start()
        deadline = time.monotonic() + 20
        while not srv.proc.status(srv.http)["broker"]["publishers_paused"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for i in range(4):  # the fourth unacknowledged message is one too many
            assert post(srv.http, "/stomp/publish/topic/b", b"m%d" % i)[0] == 200
        ws.settimeout(10)
        frames = [read_frame(ws) for _ in range(5)]
        assert frames[3][1].startswith(b"ERROR\nmessage:too many unacknowledged messages")
        assert frames[4] == (8, b"\x03\xe8")
        closed_at = time.monotonic()
        stop.set()
        with pytest.raises((EOFError, ConnectionResetError)):
            while True:
                read_frame(ws)
        assert time.monotonic() - closed_at < 2 and answered.wait(2)
        for sock in (ws, writer, slow.sock):
            sock.close()

def test_websocket_refuses_foreign_origin(server):
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(f"ws://127.0.0.1:{server.http}/stomp", origin="https://evil.example")
    assert info.value.status_code == 403
    # hybi-10 (version 8) browsers named the page in Sec-WebSocket-Origin instead
    sock, head = upgrade(server.http, b"/stomp", version=8, headers=b"Sec-WebSocket-Origin: https://evil.example\r\n")
    sock.close()
    assert head.startswith(b"HTTP/1.1 403"), head


def test_status_shows_the_broker(server):
    raw = Raw(server.port, version="1.1")
    status = server.proc.status(server.http)
    assert status["broker"]["connections"] >= 1
    assert "1.1" in status["broker"]["by_version"]
    raw.close()


def test_slow_consumer_is_disconnected_and_others_get_everything():
    with Server("flow.pause_publishers = 0.5\nflow.max_pending = 1048576\nflow.stall_timeout = 60") as srv:
        slow = Raw(srv.port)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.send(b"SUBSCRIBE\nid:s\ndestination:/topic/flood\nreceipt:r\n\n\0")
        assert slow.frame().startswith(b"RECEIPT")
        fast = Raw(srv.port)
        fast.send(b"SUBSCRIBE\nid:f\ndestination:/topic/flood\nreceipt:r\n\n\0")
        assert fast.frame().startswith(b"RECEIPT")
        publisher = Raw(srv.port)
        count = 12000
        frame = b"SEND\ndestination:/topic/flood\n\n" + b"x" * 1000 + b"\0"
        flood = threading.Thread(target=publisher.send,
                                 args=(frame * count + b"SEND\ndestination:/topic/flood\n\nlast\0",))
        flood.start()
        received = 0
        fast.sock.settimeout(30)
        data = b""
        while received < count + 1:
            chunk = fast.sock.recv(1 << 20)
            assert chunk
            data += chunk
            received += chunk.count(b"\0")
        assert data.rstrip(b"\0").endswith(b"last")
        flood.join()
        deadline = time.monotonic() + 20
        while "slow consumer" not in srv.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "slow consumer" in srv.log()
        status = srv.proc.status(srv.http)
        assert status["broker"]["slow_consumers"] == 1
        for raw in (slow, fast, publisher):
            raw.close()
        assert "Traceback" not in srv.log()


def test_sigterm_sends_error_to_clients():
    with Server() as srv:
        raw = Raw(srv.port)
        srv.proc.proc.send_signal(signal.SIGTERM)
        assert header(raw.error_then_close(), "message") == "server shutting down"
        assert srv.proc.proc.wait(10) == 0


def test_sigterm_closes_websocket_clients_with_going_away():
    """/ws closes with 1001 (going away) at shutdown; /stomp said 1000, a normal closure, so a
    page could not tell a stopping server from a broker that ended its session."""
    with Server() as srv:
        ws = websocket.create_connection(f"ws://127.0.0.1:{srv.http}/stomp", subprotocols=["v12.stomp"])
        ws.send("CONNECT\naccept-version:1.2\nhost:/\n\n\0")
        assert ws.recv().startswith("CONNECTED")
        srv.proc.proc.send_signal(signal.SIGTERM)
        error = ws.recv()
        assert error.startswith("ERROR\n") and "message:server shutting down" in error
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE and frame.data[:2] == b"\x03\xe9"  # 1001
        ws.close()
        assert srv.proc.proc.wait(10) == 0


# --------------------------------------------------------------------------
# POST /stomp/publish


def post(port: int, path: str, body: bytes = b"hi", headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                     headers={"content-type": "text/plain", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if exc.headers.get("content-type") == "application/json" else {}


def test_publish_endpoint_is_off_by_default(server):
    code, _ = post(server.http, "/stomp/publish/topic/a")
    assert code == 404


def test_publish_endpoint():
    with Server("publish.enabled = 1") as srv:
        sub = Raw(srv.port)
        sub.send(b"SUBSCRIBE\nid:s\ndestination:/topic/news\nreceipt:r\n\n\0")
        assert sub.frame().startswith(b"RECEIPT")
        code, answer = post(srv.http, "/stomp/publish/topic/news?priority=5", "grüße".encode())
        assert code == 200 and answer["destination"] == "/topic/news" and answer["message-id"]
        frame = sub.frame()
        assert frame.endswith("\n\ngrüße".encode())
        assert header(frame, "content-type") == "text/plain"
        assert header(frame, "priority") == "5"
        assert post(srv.http, "/stomp/publish/elsewhere/x")[0] == 404
        assert post(srv.http, "/stomp/publish/topic/news", headers={"origin": "https://evil.example"})[0] == 403
        assert post(srv.http, "/stomp/publish/topic/news", b"x" * 70000)[0] == 413
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{srv.http}/stomp/publish/topic/news", timeout=5)
        assert info.value.code == 405 and info.value.headers["allow"] == "POST, OPTIONS"
        for method in ("PUT", "DELETE", "HEAD"):
            # RFC 9110 15.5.6: a 405 lists what the target takes (it said 'HEAD, GET, POST')
            request = urllib.request.Request(f"http://127.0.0.1:{srv.http}/stomp/publish/topic/news", method=method)
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(request, timeout=5)
            assert (method, info.value.code, info.value.headers["allow"]) == (method, 405, "POST, OPTIONS")


def test_publish_endpoint_answers_cors_for_the_pages_it_allows():
    """A page on an allowed origin (here the same host, another port) was let post, but got no
    Access-Control-Allow-Origin, so it could not read the answer (a network error in the page,
    after the message was published), and its preflight (JSON, credentials) got 405."""
    with Server("publish.enabled = 1") as srv:
        url = f"http://127.0.0.1:{srv.http}/stomp/publish/topic/news"
        page = "http://127.0.0.1:3000"
        preflight = urllib.request.Request(url, method="OPTIONS", headers={
            "origin": page, "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, authorization"})
        with urllib.request.urlopen(preflight, timeout=5) as response:
            assert response.status == 204
            assert response.headers["access-control-allow-origin"] == page
            assert response.headers["access-control-allow-methods"] == "POST"
            assert response.headers["access-control-allow-headers"] == "content-type, authorization"
            assert response.headers["access-control-allow-credentials"] == "true"
        request = urllib.request.Request(url, data=b"{}", method="POST",
                                         headers={"origin": page, "content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200 and response.headers["access-control-allow-origin"] == page
            assert response.headers["vary"] == "Origin"
        for origin in ("https://evil.example", None):  # a refused page, and no page at all
            refused = urllib.request.Request(url, method="OPTIONS", headers={"origin": origin} if origin else {})
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(refused, timeout=5)
            assert info.value.code == 403 and "access-control-allow-origin" not in info.value.headers
        code, _ = post(srv.http, "/stomp/publish/topic/news", headers={"origin": "https://evil.example"})
        assert code == 403


def test_publish_endpoint_needs_an_access_rule_and_a_listed_client():
    with Server("publish.enabled = 1", access="otherhost:80 -> localhost:61613") as srv:
        code, answer = post(srv.http, "/stomp/publish/topic/news")
        assert code == 403 and "[access]" in answer["error"]
    with Server("publish.enabled = 1\npublish.clients = 10.0.0.0/8") as srv:
        code, answer = post(srv.http, "/stomp/publish/topic/news")
        assert code == 403 and "publish.clients" in answer["error"]


def test_publish_endpoint_refuses_what_a_proxy_relayed():
    """nginx on this host posts from loopback for any outside client: its headers give it away."""
    with Server("publish.enabled = 1") as srv:
        assert post(srv.http, "/stomp/publish/topic/news")[0] == 200
        for name in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            code, answer = post(srv.http, "/stomp/publish/topic/news", headers={name: "for=203.0.113.7"})
            assert code == 403 and name.lower() in answer["error"] and "proxy" in answer["error"], name


def test_publish_endpoint_with_users():
    # (indented: tests.support.procs would read a line starting 'user' as [global] user)
    section = "publish.enabled = 1\n user.app = s3cret\n user.reader = r\nwrite /topic/* = app\nread /topic/* = *"
    with Server(section) as srv:
        def auth(user: str, password: str) -> dict:
            return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

        assert post(srv.http, "/stomp/publish/topic/news")[0] == 401
        assert post(srv.http, "/stomp/publish/topic/news", headers=auth("app", "wrong"))[0] == 401
        assert post(srv.http, "/stomp/publish/topic/news", headers=auth("reader", "r"))[0] == 403
        assert post(srv.http, "/stomp/publish/topic/news", headers=auth("app", "s3cret"))[0] == 200
        # user-id, as on a SEND, must be the login: a forged one is refused
        assert post(srv.http, "/stomp/publish/topic/news?user-id=app", headers=auth("app", "s3cret"))[0] == 200
        code, answer = post(srv.http, "/stomp/publish/topic/news?user-id=reader", headers=auth("app", "s3cret"))
        assert code == 403 and "user-id" in answer["error"]


def test_max_connections():
    with Server("max_connections = 2") as srv:
        first, second = Raw(srv.port), Raw(srv.port)
        third = Raw(srv.port, connect=False)
        assert header(third.error_then_close(), "message") == "too many connections"
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(f"ws://127.0.0.1:{srv.http}/stomp")
        assert info.value.status_code == 503
        first.close()
        second.close()
        assert "refusing STOMP connection" in srv.log()


def test_queues_together_stay_within_max_total_bytes():
    """Parked messages cannot grow the broker without bound across many queues: past
    queue.max_total_bytes the largest queue loses its oldest (logged), and the status says how
    much waits."""
    with Server("queue.max_total_bytes = 20000") as srv:
        publisher = Raw(srv.port)
        body = b"x" * 1000
        for i in range(30):  # 30,000 bytes over 3 queues nobody reads
            publisher.send(b"SEND\ndestination:/queue/q%d\nreceipt:r%d\n\n" % (i % 3, i) + body + b"\0")
            assert publisher.frame().startswith(b"RECEIPT")
        status = srv.proc.status(srv.http)["broker"]
        assert status["waiting_bytes"] <= 20000 and status["waiting_messages"] == 20
        subscriber = Raw(srv.port)
        for i in range(3):
            subscriber.send(b"SUBSCRIBE\nid:s%d\ndestination:/queue/q%d\nreceipt:go%d\n\n\0" % (i, i, i))
        frames = [subscriber.frame() for _ in range(23)]  # 3 receipts and what was kept
        assert sum(f.startswith(b"MESSAGE") for f in frames) == 20
        assert srv.proc.status(srv.http)["broker"]["waiting_bytes"] == 0
        publisher.close()
        subscriber.close()
        assert "queue.max_total_bytes" in srv.log() and "Traceback" not in srv.log()


@pytest.mark.parametrize(("transport", "messages"), [("tcp", 100), ("websocket", 300)])
def test_a_slow_subscriber_gets_its_backlog_and_the_receipt_of_its_disconnect(transport, messages):
    """A subscriber reading a backlog slowly sends DISCONNECT with a receipt, then a heart-beat.
    Over TCP the close stopped reading, the unread heart-beat turned it into a reset and the
    kernel threw away what it had not sent: 10 of 100 MESSAGEs and no RECEIPT arrived.  Over
    /stomp the socket was cut 10 s after the close, reading or not.  Now all of it arrives."""
    body = b"x" * 10000
    with Server() as srv:
        if transport == "tcp":
            sub = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            sub.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            send, recv = sub.sendall, lambda: sub.recv(4096)
        else:
            ws = websocket.create_connection(f"ws://127.0.0.1:{srv.http}/stomp", subprotocols=["v12.stomp"],
                                             timeout=30, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 16384),))

            def recv() -> bytes:
                try:
                    return ws.recv().encode()
                except websocket.WebSocketConnectionClosedException:
                    return b""

            send = lambda data: ws.send(data.decode())
        send(b"CONNECT\naccept-version:1.2\nhost:/\n\n\0")
        assert recv().startswith(b"CONNECTED")
        send(b"SUBSCRIBE\nid:1\ndestination:/topic/backlog\nreceipt:sub\n\n\0")
        got = b""
        while b"receipt-id:sub" not in got:
            got += recv()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as pub:
            pub.sendall(b"CONNECT\naccept-version:1.2\nhost:/\n\n\0")
            pub.recv(1000)
            for _ in range(messages):
                pub.sendall(b"SEND\ndestination:/topic/backlog\ncontent-length:10000\n\n" + body + b"\0")
            pub.sendall(b"DISCONNECT\nreceipt:pub\n\n\0")
            pub.recv(1000)
        send(b"DISCONNECT\nreceipt:bye\n\n\0")
        started, got, beat = time.monotonic(), bytearray(), False
        while data := recv():
            got += data
            time.sleep(len(data) / 250_000)  # a subscriber reading 250 KB/s
            if not beat and time.monotonic() - started > 0.5:
                send(b"\n")  # a heart-beat, after the broker stopped reading
                beat = True
        assert got.count(b"MESSAGE\n") == messages and got.endswith(b"receipt-id:bye\n\n\0"), got[-100:]


def test_a_quiet_client_does_not_keep_its_last_message(server):
    """The frame parser dropped the bytes of the frames it had read only when more bytes came:
    a client that sent one large message and then stayed quiet (no heart-beats) kept all of it
    in the server, 200 such clients after a 500 KB SEND each 100 MB."""
    body = b"x" * 60_000  # frame.max_size is 65536 here
    clients = []
    before = rss_kb(server.proc.proc.pid)
    for _ in range(300):
        client = Raw(server.port)
        client.send(b"SEND\ndestination:/topic/nobody\nreceipt:r\n\n" + body + b"\0")
        assert client.frame().startswith(b"RECEIPT")
        clients.append(client)
    grown = rss_kb(server.proc.proc.pid) - before
    for client in clients:
        client.close()
    assert grown < 9 * 1024, f"300 quiet clients grew the server {grown} KiB"


def test_unacknowledged_messages_cost_their_bodies_not_twice(server):
    """A delivered message kept its encoded MESSAGE frame beside its body until it was
    acknowledged: 30 MB of unacknowledged bodies held 59 MB, twice what max_unacked_bytes and
    queue.max_total_bytes, which count bodies, allow."""
    subscriber = Raw(server.port)
    subscriber.send(b"SUBSCRIBE\nid:1\ndestination:/queue/unacked\nack:client-individual\nreceipt:r\n\n\0")
    assert subscriber.frame().startswith(b"RECEIPT")
    publisher = Raw(server.port)
    before = rss_kb(server.proc.proc.pid)
    count, body = 250, b"u" * 60_000  # 15 MB, under max_unacked_bytes (16 MiB)
    for _ in range(count):
        publisher.send(b"SEND\ndestination:/queue/unacked\n\n" + body + b"\0")
    for _ in range(count):
        assert subscriber.frame().startswith(b"MESSAGE")
    grown = rss_kb(server.proc.proc.pid) - before
    publisher.close()
    subscriber.close()
    assert grown < 21 * 1024, f"15 MB of unacknowledged messages grew the server {grown} KiB"
