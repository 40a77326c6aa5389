"""The lean HTTP layer in a real ``orbited`` process, over raw sockets: keep-alive, pipelining,
HTTP/1.0, chunked uploads, limits, malformed requests, slowloris, disconnects, WebSocket hand-over, TLS."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
import uuid

import pytest

from orbited.transports.legacy.codec import decode_packets, encode_packets
from tests.support.procs import OrbitedProcess, free_port, rss_kb, scratch_dir
from tests.support.rawws import raw_upgrade
from tests.support.tlsfiles import make_cert


class Raw:
    """One client connection that reads whole responses (Content-Length, chunked or close-delimited)."""

    def __init__(self, port: int, sock: socket.socket | None = None):
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> bytes:
        data = self.sock.recv(65536)
        self.buffer += data
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._more():
                raise ConnectionError(f"closed mid-line: {self.buffer!r}")
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._more():
                raise ConnectionError("closed mid-body")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def head(self) -> tuple[int, dict[bytes, bytes]]:
        status = int(self._line().split(b" ", 2)[1])
        headers = {}
        while line := self._line():
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def response(self, head_only: bool = False) -> tuple[int, dict[bytes, bytes], bytes]:
        status, headers = self.head()
        if head_only or status in (204, 304):
            return status, headers, b""
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while size := int(self._line().split(b";")[0], 16):
                body += self._exactly(size)
                self._exactly(2)
            self._line()
            return status, headers, body
        if b"content-length" in headers:
            return status, headers, self._exactly(int(headers[b"content-length"]))
        while self._more():
            pass
        body, self.buffer = self.buffer, b""
        return status, headers, body

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection within ``timeout`` (what it sent is discarded)."""
        self.sock.settimeout(timeout)
        try:
            while self._more():
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def get(path: str, extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


@pytest.fixture(scope="module")
def server():
    port, echo = free_port(), free_port()
    config = (f"[global]\nhttp.max_body = 1000\n[listen]\nhttp://127.0.0.1:{port}\necho://127.0.0.1:{echo}\n"
              f"[access]\n* -> 127.0.0.1:{echo}\n")
    with OrbitedProcess(config, wait_for=port) as orbited:
        orbited.port, orbited.echo = port, echo
        yield orbited


def new_tcp_session(client: Raw) -> str:
    client.send(get("/tcp"))
    status, _, key = client.response()
    assert status == 200 and len(key) == 32
    return key.decode()


def handshake_packets(port: int) -> bytes:
    return encode_packets([[b"1", b"data", base64.b64encode(f"127.0.0.1:{port}\n".encode())]])


# --------------------------------------------------------------------------- connections


def test_keep_alive_serves_many_requests_on_one_connection(server):
    client = Raw(server.port)
    for _ in range(20):
        client.send(get("/system/status"))
        status, headers, body = client.response()
        assert status == 200 and json.loads(body)["version"]
        assert headers[b"content-length"] == str(len(body)).encode() and b"date" in headers
        assert b"server" not in headers and b"connection" not in headers
    client.close()


def test_pipelined_requests_come_back_in_order(server):
    client = Raw(server.port)
    client.send(get("/system/status") + get("/static/JSON.js") + get("/nowhere") + get("/static/JSON.js",
                                                                                      version="1.1")
                + b"HEAD /static/JSON.js HTTP/1.1\r\nHost: x\r\n\r\n" + get("/system/status"))
    statuses = []
    for index in range(6):
        status, _, _ = client.response(head_only=index == 4)
        statuses.append(status)
    assert statuses == [200, 200, 404, 200, 200, 200]
    client.close()


def test_a_client_that_pipelines_and_reads_nothing_does_not_grow_the_server(server):
    """Each request is answered only once less than 64 KiB of earlier answers waits to be sent,
    so 2,000 pipelined 45 KB answers (90 MB) stay in the client's requests, not in server memory."""
    client = Raw(server.port, socket.socket())
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.sock.settimeout(10)
    client.sock.connect(("127.0.0.1", server.port))
    before = rss_kb(server.proc.pid)
    client.send(get("/static/Orbited.js") * 2000)
    time.sleep(1.5)
    grown = rss_kb(server.proc.pid) - before
    assert grown < 24 * 1024, f"server grew {grown} KiB"
    sizes = {len(client.response()[2]) for _ in range(2000)}  # then every answer comes, in order
    assert len(sizes) == 1 and sizes.pop() > 40_000
    client.close()


def test_http10_is_close_delimited_when_streaming_and_closes_after_one_answer(server):
    client = Raw(server.port)
    key = new_tcp_session(client)
    client.close()
    stream = Raw(server.port)
    stream.send(f"GET /tcp/{key}/xhrstream HTTP/1.0\r\n\r\n".encode())
    status, headers = stream.head()
    assert status == 200 and b"content-length" not in headers and b"transfer-encoding" not in headers
    assert headers[b"connection"] == b"close"
    while len(stream.buffer) < 256:
        stream._more()
    assert stream.buffer.startswith(b" " * 256)  # the prelude, not a chunk size line
    stream.close()
    plain = Raw(server.port)
    plain.send(get("/system/status", version="1.0"))
    status, headers, body = plain.response()
    assert status == 200 and headers[b"connection"] == b"close" and json.loads(body)
    assert plain.closed()
    kept = Raw(server.port)
    kept.send(get("/system/status", "Connection: keep-alive\r\n", version="1.0") * 2)
    assert kept.response()[1][b"connection"] == b"keep-alive"
    assert kept.response()[0] == 200
    kept.close()


def test_a_chunked_upload_reaches_the_backend(server):
    client = Raw(server.port)
    key = new_tcp_session(client)
    body = handshake_packets(server.echo)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (body[:5], body[5:])) + b"0\r\n\r\n"
    client.send(f"POST /tcp/{key} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + chunked)
    status, _, answer = client.response()
    assert (status, answer) == (200, b"OK")
    deadline = time.monotonic() + 10
    data = b""
    while b"MQ==" not in data and time.monotonic() < deadline:  # base64 of the proxy's "1"
        client.send(get(f"/tcp/{key}/poll"))
        data += client.response()[2]
    assert any(packet[1:] == [b"data", b"MQ=="] for packet in decode_packets(data))
    client.close()


# --------------------------------------------------------------------------- limits and bad requests


def test_an_oversize_head_is_431(server):
    client = Raw(server.port)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n")
    status, headers, body = client.response()
    assert status == 431 and headers[b"connection"] == b"close" and body
    assert client.closed()


def test_an_oversize_body_is_413_from_the_endpoint_and_the_connection_lives_on(server):
    client = Raw(server.port)
    key = new_tcp_session(client)
    big = b"x" * 2000  # over http.max_body = 1000
    client.send(f"POST /tcp/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(big)}\r\n\r\n".encode() + big)
    status, headers, body = client.response()
    assert status == 413 and b"http.max_body" in body and b"connection" not in headers
    client.send(get("/system/status"))
    assert client.response()[0] == 200
    client.close()


def test_a_body_over_twice_http_max_body_is_413_before_it_is_read(server):
    """No endpoint here takes more than http.max_body, so no connection buffers much more: 40
    connections each parking 16 MB (the layer's old floor) held 660 MB with max_body 64 KiB."""
    client = Raw(server.port)
    key = new_tcp_session(client)
    client.send(f"POST /tcp/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: 2001\r\n\r\n".encode())
    status, headers, _ = client.response()  # answered from the head: the body is never sent
    assert status == 413 and headers[b"connection"] == b"close"
    assert client.closed()


def test_a_body_over_the_server_ceiling_is_413_before_it_is_sent(server):
    client = Raw(server.port)
    client.send(b"POST /tcp/x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
    status, headers, _ = client.response()
    assert status == 413 and headers[b"connection"] == b"close"
    assert client.closed()


@pytest.fixture(scope="module")
def twisted_server():
    """The same limits on http.engine = twisted."""
    port = free_port()
    config = f"[global]\nhttp.engine = twisted\nhttp.max_body = 1000\n[listen]\nhttp://127.0.0.1:{port}\n"
    with OrbitedProcess(config, wait_for=port) as orbited:
        orbited.port = port
        yield orbited


@pytest.mark.parametrize("engine", ["server", "twisted_server"])
def test_a_body_over_the_ceiling_is_refused_on_either_engine_before_it_is_stored(request, engine):
    """twisted.web has no body limit: it wrote any body to a temporary file before a resource
    saw it, so one client could fill the disk ('Content-Length: 400000000', or chunks without
    end).  Both engines answer 413 from the length, and cut a chunked body at the ceiling."""
    server = request.getfixturevalue(engine)
    client = Raw(server.port)
    client.send(b"POST /tcp/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 400000000\r\n\r\n")
    status, headers, _ = client.response()  # at once: the body is never sent
    assert status == 413 and headers[b"connection"] == b"close"
    assert client.closed()
    client = Raw(server.port)
    client.send(b"POST /tcp/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(40):  # 40 KB, far over the ceiling (twice http.max_body), and never ended
        client.send(b"400\r\n" + b"x" * 1024 + b"\r\n")
    status, headers, _ = client.response()
    assert status == 413 and headers[b"connection"] == b"close"
    assert client.closed()
    assert server.status()["version"]


@pytest.mark.parametrize("chunked", [False, True])
def test_a_client_that_sends_its_whole_oversize_body_still_reads_the_413(server, chunked):
    """http.client sends the whole body before it reads: the server closed as soon as it had
    answered, with the client's bytes still arriving, and the kernel's reset cost the client the
    answer (BrokenPipeError or ConnectionResetError instead of a 413).  The close lingers now."""
    import http.client

    body = b"\0" * (32 << 20)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    if chunked:
        connection.request("POST", "/tcp/x", body=iter([body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20)]),
                           encode_chunked=True)
    else:
        connection.request("POST", "/tcp/x", body=body)
    response = connection.getresponse()
    assert response.status == 413 and response.getheader("connection") == "close"
    assert b"request body over 2000 bytes" in response.read()
    connection.close()
    assert server.status()["version"]


@pytest.mark.parametrize("request_line", [b"GET /", b"GET  / HTTP/1.1", b"\x16\x03\x01\x02\x00\x01", b"G\x00T / HTTP/1.1"])
def test_a_malformed_request_line_is_400(server, request_line):
    client = Raw(server.port)
    client.send(request_line + b"\r\nHost: x\r\n\r\n")
    status, headers, _ = client.response()
    assert status == 400 and headers[b"connection"] == b"close"
    assert client.closed()
    assert server.status()["version"]  # the server is fine


def test_bare_lf_and_absolute_form_requests_are_served(server):
    client = Raw(server.port)
    client.send(b"GET http://127.0.0.1/system/status HTTP/1.1\nHost: 127.0.0.1\n\n")
    assert client.response()[0] == 200
    client.close()


# --------------------------------------------------------------------------- timeouts


def test_slowloris_is_cut_and_idle_connections_close():
    port = free_port()
    with OrbitedProcess(f"[global]\nhttp.timeout = 1\n[listen]\nhttp://127.0.0.1:{port}\n", wait_for=port):
        slow = Raw(port)
        slow.send(b"GET /system/status HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        cut = False
        while time.monotonic() - started < 6:
            time.sleep(0.2)
            try:
                slow.send(b"X-Loris: still typing\r\n")
            except OSError:
                cut = True
                break
            slow.sock.settimeout(0.01)
            try:
                if not slow._more():
                    cut = True
                    break
            except TimeoutError:
                pass
        assert cut or slow.closed(1)
        assert time.monotonic() - started < 5  # http.timeout 1 s, sweep every 0.5 s, slack for a busy machine
        assert slow.buffer.startswith(b"HTTP/1.1 408 ")
        idle = Raw(port)
        idle.send(get("/system/status"))
        assert idle.response()[0] == 200
        started = time.monotonic()
        assert idle.closed(5) and time.monotonic() - started < 4


def trickle(client: Raw, pieces: list[bytes], every: float, within: float) -> bool:
    """Send ``pieces`` one per ``every`` seconds; True if the server cut the connection within
    ``within`` seconds (what it answered stays in ``client.buffer``)."""
    started = time.monotonic()
    for piece in pieces:
        if time.monotonic() - started > within:
            return False
        time.sleep(every)
        try:
            client.send(piece)
        except OSError:
            return True
        client.sock.settimeout(0.01)
        try:
            if not client._more():
                return True
        except TimeoutError:
            pass
        except ConnectionResetError:
            return True
    return client.closed(within)


@pytest.mark.parametrize("engine", ["lean", "twisted"])
def test_a_trickled_body_is_cut_and_a_slow_but_fair_one_is_not(engine):
    """Each piece of a body moved the http.timeout deadline on, so a client sending a byte a second
    (or one per http.timeout) held its connection for as long as its Content-Length allowed: a
    megabyte body, months.  A body must now average 500 bytes/s after a first http.timeout of grace."""
    port = free_port()
    config = f"[global]\nhttp.engine = {engine}\nhttp.timeout = 1\n[listen]\nhttp://127.0.0.1:{port}\n"
    with OrbitedProcess(config, wait_for=port):
        slow = Raw(port)
        slow.send(b"POST /tcp/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        assert trickle(slow, [b"x"] * 1000, every=0.2, within=6)  # 5 bytes/s: each read is well within 1 s
        assert time.monotonic() - started < 5  # 1 s of grace, then the sweep (every 0.5 s), slack for load
        if engine == "lean":
            assert slow.buffer.startswith(b"HTTP/1.1 408 ")
        fair = Raw(port)
        fair.send(b"POST /tcp/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n")
        for _ in range(10):  # 1,200 bytes/s for 2.5 s, longer than http.timeout
            time.sleep(0.25)
            fair.send(b"x" * 300)
        assert fair.response()[0] == 404  # answered by the resource, not cut


@pytest.mark.parametrize("engine", ["lean", "twisted"])
def test_a_trickled_head_is_cut_on_either_engine(engine):
    """twisted.web moved its timeout on at every read, so a head sent a byte a second was never
    cut with http.engine = twisted; a whole head must arrive within http.timeout on both."""
    port = free_port()
    config = f"[global]\nhttp.engine = {engine}\nhttp.timeout = 1\n[listen]\nhttp://127.0.0.1:{port}\n"
    with OrbitedProcess(config, wait_for=port):
        slow = Raw(port)
        started = time.monotonic()
        head = b"GET /system/status HTTP/1.1\r\nHost: x\r\nX-Loris: " + b"z" * 100
        assert trickle(slow, [bytes([byte]) for byte in head], every=0.2, within=6)
        assert time.monotonic() - started < 5
        idle = Raw(port)
        idle.send(get("/system/status"))
        assert idle.response()[0] == 200  # the next request on the same connection has its own http.timeout
        time.sleep(0.6)
        idle.send(get("/system/status"))
        assert idle.response()[0] == 200
        started = time.monotonic()
        assert idle.closed(5) and time.monotonic() - started < 4


# --------------------------------------------------------------------------- disconnects


def test_a_client_that_leaves_mid_stream_ends_its_session():
    """The transport hears of it (notifyFinish errback), closes the session, and the backend goes."""
    port, echo = free_port(), free_port()
    config = (f"[global]\n[listen]\nhttp://127.0.0.1:{port}\necho://127.0.0.1:{echo}\n"
              f"[access]\n* -> 127.0.0.1:{echo}\n")
    with OrbitedProcess(config, wait_for=port) as orbited:
        base = f"/sockjs/000/{uuid.uuid4().hex}"
        stream = Raw(port)
        stream.send(f"POST {base}/xhr_streaming HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        status, _ = stream.head()
        assert status == 200
        upload = Raw(port)
        body = json.dumps([f"127.0.0.1:{echo}"]).encode()
        upload.send(f"POST {base}/xhr_send HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body)
        assert upload.response()[0] == 204
        deadline = time.monotonic() + 10
        while b'a["1"]' not in stream.buffer and time.monotonic() < deadline:
            stream._more()
        assert orbited.status()["proxy"]["connections"] == 1
        stream.close()
        deadline = time.monotonic() + 10
        while orbited.status()["proxy"]["connections"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert orbited.status()["proxy"]["connections"] == 0
        assert "browser connection lost" in orbited.log()


# --------------------------------------------------------------------------- WebSocket hand-over and TLS

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def ws_handshake(path: str = "/ws") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def masked(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = b"\x0a\x0b\x0c\x0d"
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame(client: Raw) -> bytes:
    header = client._exactly(2)
    size = header[1] & 0x7F
    assert size < 126
    return client._exactly(size)


@pytest.mark.parametrize("engine", ["lean", "twisted"])
def test_a_websocket_url_answers_plain_http_in_http(engine):
    """autobahn answered a request to /ws that was no upgrade itself, on the raw connection:
    '426 HTTP Upgrade header missing' without the Upgrade field RFC 9110 requires, '405 HTTP
    method "POST" not allowed' without Allow, no length, and the connection closed."""
    port = free_port()
    with OrbitedProcess(f"[global]\nhttp.engine = {engine}\n[listen]\nhttp://127.0.0.1:{port}\n", wait_for=port):
        client = Raw(port)
        client.send(get("/ws") + b"HEAD /ws HTTP/1.1\r\nHost: x\r\n\r\n"
                    + b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + get("/system/status"))
        status, headers, body = client.response()
        assert (status, headers[b"upgrade"]) == (426, b"websocket") and b"WebSocket" in body
        assert headers[b"content-type"] == b"text/plain; charset=utf-8"
        status, headers, _ = client.response(head_only=True)
        assert (status, headers[b"upgrade"]) == (426, b"websocket")
        status, headers, _ = client.response()
        assert (status, headers[b"allow"]) == (405, b"GET, HEAD")
        assert client.response()[0] == 200  # the same connection, kept alive throughout
        client.close()
        ws = raw_upgrade(port)  # and the upgrade itself still works
        ws.close()


@pytest.mark.parametrize("engine", ["lean", "twisted"])
def test_websocket_upgrades_with_a_body_hold_no_descriptor(engine):
    """twisted.web keeps a chunked (or over 100 kB) request body in a temporary file and closes
    it when the request finishes or loses its connection; a request whose connection autobahn
    took over does neither, so every such upgrade held a descriptor until the process ended."""
    port, echo = free_port(), free_port()
    config = (f"[global]\nhttp.engine = {engine}\n[listen]\nhttp://127.0.0.1:{port}\necho://127.0.0.1:{echo}\n"
              f"[access]\n* -> 127.0.0.1:{echo}\n")
    with OrbitedProcess(config, wait_for=port) as orbited:
        before = orbited.status()["process"]["open_files"]
        for _ in range(20):
            client = Raw(port)
            client.send(ws_handshake().replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
            assert client.head()[0] == 101
            client.close()
        time.sleep(0.5)
        assert orbited.status()["process"]["open_files"] <= before + 2


def test_websocket_with_the_first_message_in_the_same_packet_as_the_handshake(server):
    client = Raw(server.port)
    client.send(ws_handshake() + masked(f"127.0.0.1:{server.echo}".encode()))
    status, headers = client.head()
    assert status == 101 and headers[b"sec-websocket-accept"] == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert read_frame(client) == b"1"
    client.send(masked(b"ping-pong", opcode=0x2))
    assert read_frame(client) == b"ping-pong"
    client.close()


def test_websocket_and_http_over_tls():
    certs = scratch_dir("certs-")
    key, crt = make_cert(certs)
    port, echo = free_port(), free_port()
    config = (f"[global]\n[listen]\nhttps://127.0.0.1:{port}\necho://127.0.0.1:{echo}\n"
              f"[access]\n* -> 127.0.0.1:{echo}\n[ssl]\nkey = {key}\ncrt = {crt}\n")
    context = ssl.create_default_context(cafile=str(crt))
    with OrbitedProcess(config, wait_for=port):
        def connect() -> Raw:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            return Raw(port, context.wrap_socket(raw, server_hostname="localhost"))
        client = connect()
        client.send(get("/system/status") * 2)
        assert client.response()[0] == client.response()[0] == 200
        client.close()
        ws = connect()
        ws.send(ws_handshake() + masked(f"127.0.0.1:{echo}".encode()))
        assert ws.head()[0] == 101
        assert read_frame(ws) == b"1"
        ws.send(masked(b"over tls", opcode=0x2))
        assert read_frame(ws) == b"over tls"
        ws.close()
        refused = connect()  # a refusal over TLS: the answer, then close_notify at once
        refused.send(b"GARBAGE\r\n\r\n")
        assert refused.response()[0] == 400
        assert refused.closed(timeout=2)
