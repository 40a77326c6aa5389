"""``/sockjs`` in a real ``orbited`` process: TCPSockets over every SockJS transport, limits, failures.

The browser side is spoken by hand here (raw HTTP, websockets), so each check
sees the exact frames; ``test_sockjs_browser`` does the same through
sockjs-client in Chromium.  Every test runs twice: on one process, and on a
master with two workers, where each session lives in the worker its id
names and every request of it must get there (orbited/worker_routes.py).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
import uuid
from urllib.parse import quote, unquote

import pytest
from websockets.sync.client import connect as ws_connect

from orbited.testing.sockjs_client import Connection, request, stream
from tests.support.backends import SlowBackend, never_reading, running
from tests.support.procs import OrbitedProcess, free_port
from tests.support.rawws import masked, raw_upgrade

PAYLOAD = bytes(range(256)) + "héllo ✓".encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def frames_of(data: bytes) -> list[str]:
    return [line for line in data.decode().split("\n") if line]


def messages(frame: str) -> list[str]:
    assert frame.startswith("a"), frame
    return json.loads(frame[1:])


class Server:
    def __init__(self, extra: str = "", backends: tuple[int, ...] = (), workers: int = 0):
        self.port = free_port()
        self.echo = free_port()
        self.workers = workers
        config = (
            f"[global]\nworkers = {workers}\nsession.ping_interval = 30\nsession.ping_timeout = 2\n" + extra
            + f"\n[listen]\nhttp://127.0.0.1:{self.port}\necho://127.0.0.1:{self.echo}\n"
            + "[access]\n" + "".join(f"* -> 127.0.0.1:{port}\n" for port in (self.echo, *backends))
        )
        self.process = OrbitedProcess(config, wait_for=self.port)
        self.base = f"http://127.0.0.1:{self.port}/sockjs"

    def session(self) -> str:
        return f"{self.base}/000/{uuid.uuid4().hex}"

    def page(self) -> dict[str, str]:
        """The Referer a page of this server's own host sends (JSONP and htmlfile are judged by it)."""
        return {"Referer": f"http://127.0.0.1:{self.port}/app/index.html"}

    def connections(self) -> int:
        return self.process.status()["proxy"]["connections"]

    def wait_connections(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.connections() != count:
            assert time.monotonic() < deadline, f"proxy connections stayed at {self.connections()}, not {count}"
            time.sleep(0.05)

    def __enter__(self) -> Server:
        self.process.start()
        self.process.wait_workers(self.workers)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop()


@pytest.fixture(scope="module", params=[0, 2], ids=["one-process", "workers"])
def workers(request):
    return request.param


@pytest.fixture(scope="module")
def server(workers):
    with Server(workers=workers) as running:
        yield running


def poll_until(url: str, wanted: int) -> list[str]:
    """xhr-poll until ``wanted`` messages arrived."""
    got: list[str] = []
    while len(got) < wanted:
        r = request("POST", url + "/xhr", timeout=10)
        assert r.status == 200
        for frame in frames_of(r.body):
            if frame != "h":
                got += messages(frame)
    return got


def send(url: str, *texts: str) -> None:
    r = request("POST", url + "/xhr_send", body=json.dumps(list(texts)))
    assert r.status == 204, r.body


# ---------------------------------------------------------------------------
# every transport carries a TCPSocket


def test_xhr_polling_round_trip(server):
    url = server.session()
    assert request("POST", url + "/xhr").body == b"o\n"
    send(url, f"127.0.0.1:{server.echo}")
    assert poll_until(url, 1) == ["1"]
    send(url, b64(PAYLOAD))
    assert base64.b64decode("".join(poll_until(url, 1))) == PAYLOAD


def stream_frames(transport: str, chunk: bytes) -> list[str]:
    """The SockJS frames in one chunk of a streaming response, whatever the wire."""
    text = chunk.decode()
    if transport.startswith("eventsource"):
        return [unquote(line[len("data: "):]) for line in text.split("\r\n") if line.startswith("data: ")]
    if transport.startswith("htmlfile"):
        return [json.loads(found) for found in re.findall(r'p\((".*?")\);', text)]
    return frames_of(chunk)


@pytest.mark.parametrize(("method", "transport"), [("POST", "xhr_streaming"), ("GET", "eventsource"),
                                                    ("GET", "htmlfile?c=cb")])
def test_streaming_round_trip(server, method, transport):
    url = server.session()
    s = stream(method, f"{url}/{transport}", server.page())
    assert s.status == 200
    s.read()  # prelude
    assert stream_frames(transport, s.read()) == ["o"]
    send(url, f"127.0.0.1:{server.echo}\n")
    assert stream_frames(transport, s.read()) == ['a["1"]']
    send(url, b64(PAYLOAD[:100]), b64(PAYLOAD[100:]))
    got = b""
    while len(got) < len(PAYLOAD):
        for frame in stream_frames(transport, s.read()):
            got += b"".join(base64.b64decode(m) for m in messages(frame))
    assert got == PAYLOAD
    s.close()


def test_jsonp_round_trip(server):
    url = server.session()
    assert request("GET", url + "/jsonp?c=cb", server.page()).body == b'/**/cb("o");\r\n'
    form = {"Content-Type": "application/x-www-form-urlencoded", **server.page()}
    r = request("POST", url + "/jsonp_send", form, body="d=" + quote(json.dumps([f"127.0.0.1:{server.echo}"])))
    assert r.body == b"ok"
    assert request("GET", url + "/jsonp?c=cb", server.page()).body == b'/**/cb("a[\\"1\\"]");\r\n'


def test_websocket_round_trip(server):
    with ws_connect(server.session().replace("http:", "ws:") + "/websocket") as ws:
        assert ws.recv() == "o"
        ws.send(json.dumps([f"127.0.0.1:{server.echo}"]))
        assert ws.recv() == 'a["1"]'
        ws.send(json.dumps([b64(PAYLOAD)]))
        got = b""
        while len(got) < len(PAYLOAD):
            got += b"".join(base64.b64decode(m) for m in messages(ws.recv()))
        assert got == PAYLOAD


def test_raw_websocket_round_trip(server):
    with ws_connect(server.base.replace("http:", "ws:") + "/websocket") as ws:
        ws.send(f"127.0.0.1:{server.echo}")
        assert ws.recv() == "1"
        ws.send(b64(b"raw"))
        assert base64.b64decode(ws.recv()) == b"raw"


def test_a_version_8_websocket_is_judged_by_its_sec_websocket_origin(server):
    """hybi-10 (version 8) browsers named the page in Sec-WebSocket-Origin, not Origin."""
    dest = f"127.0.0.1:{server.echo}"
    for page, refused in ((b"http://evil.example", True), (f"http://127.0.0.1:{server.port}".encode(), False)):
        header = b"Sec-WebSocket-Origin: %s\r\n" % page
        raw = raw_upgrade(server.port, b"/sockjs/websocket", version=8, headers=header)
        raw.sendall(masked(1, dest.encode()))
        answer = b"0106" if refused else b"1"
        assert raw.recv(2 + len(answer)) == bytes((0x81, len(answer))) + answer, page
        raw.close()
        framed = raw_upgrade(server.port, f"/sockjs/000/{uuid.uuid4().hex}/websocket".encode(), version=8,
                             headers=header)
        assert framed.recv(3) == b"\x81\x01o"
        framed.sendall(masked(1, json.dumps([dest]).encode()))
        answer = b'a["0106"]' if refused else b'a["1"]'
        assert framed.recv(2 + len(answer)) == bytes((0x81, len(answer))) + answer, page
        framed.close()


def test_info_says_websocket_and_no_cookie(server):
    info = json.loads(request("GET", server.base + "/info").body)
    assert info["websocket"] is True and info["cookie_needed"] is False


# ---------------------------------------------------------------------------
# refusals and bad input


def test_unauthorized_destination_gets_0106_and_a_4106_close(server):
    url = server.session()
    request("POST", url + "/xhr")
    send(url, "127.0.0.1:1")
    r = request("POST", url + "/xhr")
    frames = frames_of(r.body)
    if frames == ['a["0106"]']:
        frames = frames_of(request("POST", url + "/xhr").body)
    else:
        assert frames[0] == 'a["0106"]'
        frames = frames[1:]
    code, reason = json.loads(frames[-1][1:])
    assert code == 4106 and "unauthorized" in reason


def test_a_page_with_origin_null_gets_0106_at_once(server):
    """A sandboxed or file:// page: its own uploads were refused as 'another page' with a 403 it
    cannot read, and Orbited.js reported 101 (unreachable) seconds later."""
    url = server.session()
    null = {"Origin": "null"}
    request("POST", url + "/xhr", null)
    r = request("POST", url + "/xhr_send", null, body=json.dumps([f"127.0.0.1:{server.echo}"]))
    assert r.status == 204, r.body
    frames = frames_of(request("POST", url + "/xhr", null).body)
    if frames == ['a["0106"]']:
        frames = frames_of(request("POST", url + "/xhr", null).body)
    else:
        assert frames[0] == 'a["0106"]', frames
        frames = frames[1:]
    code, reason = json.loads(frames[-1][1:])
    assert code == 4106 and "Origin" in reason


def test_bad_base64_closes_with_1007_and_releases_the_backend(workers):
    with Server("session.ping_timeout = 10\n", workers=workers) as server:
        url = server.session()
        request("POST", url + "/xhr")
        send(url, f"127.0.0.1:{server.echo}")
        assert poll_until(url, 1) == ["1"]
        server.wait_connections(1)
        send(url, "%%% not base64 %%%")
        assert request("POST", url + "/xhr").body == b'c[1007,"message is not base64"]\n'
        assert "message is not base64" in server.process.log()
        # released at once, though the session serves its close frame to polls until it expires
        server.wait_connections(0, timeout=2)
        assert request("POST", url + "/xhr").body == b'c[1007,"message is not base64"]\n'


def send_path_to(server: Server, backend: socket.socket) -> tuple[socket.socket, str]:
    """A session whose TCPSocket reached ``backend``: the backend's end (for the test never to
    read) and the session's xhr_send path, for uploads sent by hand."""
    url = server.session()
    request("POST", url + "/xhr")
    send(url, f"127.0.0.1:{backend.getsockname()[1]}")
    assert poll_until(url, 1) == ["1"]
    conn, _ = backend.accept()
    return conn, url.split(f":{server.port}", 1)[1] + "/xhr_send"


def test_uploads_that_do_not_wait_for_their_answers_are_bounded():
    """sockjs-client sends one xhr_send at a time and waits for its 204, which waits for the
    backend; a client that sends them in parallel to a backend that reads nothing gets
    session.max_buffer bytes through, then its session is closed (server memory grew by every
    body, all of it held for the backend)."""
    backend = never_reading()
    port = backend.getsockname()[1]
    with Server("http.max_body = 1000000\n", backends=(port,)) as server:
        conn, path = send_path_to(server, backend)
        body = json.dumps([b64(b"x" * 600_000)]).encode()
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        uploads = []
        for _ in range(150):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(head + body)  # and never wait for the answer
            uploads.append(sock)
        deadline = time.monotonic() + 10
        while "uploads not waiting for their answers" not in server.process.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = server.process.log()
        for sock in uploads:
            sock.close()
    conn.close()
    backend.close()
    assert "the backend read nothing, over session.max_buffer 1048576" in log, log
    up = int(re.search(r"closed after [0-9.]+s, (\d+) bytes up", log).group(1))  # 90 MB before
    assert up < 4 * 1024 * 1024, up


def test_answers_held_for_a_slow_backend_are_let_go_with_their_clients_and_bounded():
    """Each upload waits for the backend before its answer; one whose client left was held for
    good (its request with it), and uploads that carry nothing never counted: memory grew with
    every connection a client opened."""
    backend = never_reading()
    port = backend.getsockname()[1]
    with Server("session.ping_timeout = 30\n", backends=(port,)) as server:
        conn, path = send_path_to(server, backend)

        def upload(body: bytes) -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
                         .encode() + body)
            return sock

        for _ in range(100):  # until the backend is paused: an answer is held
            sock = upload(json.dumps([b64(b"x" * 200_000)]).encode())
            sock.settimeout(1)
            try:
                sock.recv(100)
            except TimeoutError:
                sock.close()
                break
            sock.close()
        else:
            raise AssertionError("the backend was never paused")
        for _ in range(100):  # held answers whose clients left: let go
            upload(b"[]").close()
            time.sleep(0.01)
        time.sleep(0.5)
        assert "uploads not waiting" not in server.process.log()
        assert server.process.status()["sessions"]["total"] == 1
        waiting = [upload(b"[]") for _ in range(17)]  # clients that stay: 16 are held, then closed
        deadline = time.monotonic() + 5
        while "uploads not waiting for their answers: 16 wait" not in server.process.log():
            assert time.monotonic() < deadline, server.process.log()
            time.sleep(0.05)
        for sock in waiting:
            sock.close()
    conn.close()
    backend.close()


@pytest.mark.parametrize("raw", [False, True], ids=["framed", "raw"])
def test_backend_data_while_the_websocket_closes_is_dropped_quietly(raw, workers):
    """A browser that breaks the WebSocket protocol gets a close frame and the socket waits for
    its reply; what the backend sends meanwhile must not raise (it was an unhandled error that
    ended the session as 'backend lost')."""
    backend = socket.socket()
    backend.bind(("127.0.0.1", 0))
    backend.listen(1)
    port = backend.getsockname()[1]
    with Server(backends=(port,), workers=workers) as server:
        if raw:
            browser = raw_upgrade(server.port, b"/sockjs/websocket")
            browser.sendall(masked(1, f"127.0.0.1:{port}".encode()))
            answer = b"\x81\x011"
        else:
            browser = raw_upgrade(server.port, f"/sockjs/000/{uuid.uuid4().hex}/websocket".encode())
            assert browser.recv(3) == b"\x81\x01o"
            browser.sendall(masked(1, json.dumps([f"127.0.0.1:{port}"]).encode()))
            answer = b'\x81\x06a["1"]'
        conn, _ = backend.accept()
        assert browser.recv(len(answer)) == answer
        browser.sendall(masked(3, b"x"))  # a reserved opcode: autobahn fails the connection (1002)
        assert browser.recv(2)[0] == 0x88  # its close frame; the browser never answers it
        conn.sendall(b"late data")  # arrives while the WebSocket is closing
        conn.settimeout(10)
        assert conn.recv(10) == b""  # the backend is closed once the WebSocket is gone
        conn.close()
        browser.close()
        server.wait_connections(0)
        log = server.process.log()
    backend.close()
    assert "Traceback" not in log and "Unhandled" not in log, log
    closed = [line for line in log.splitlines() if "closed after" in line]
    assert len(closed) == 1 and "backend lost" not in closed[0], closed


def test_unknown_session_is_404(server):
    assert request("POST", server.session() + "/xhr_send", body='["x"]').status == 404


def test_broken_json_is_500_with_the_protocol_text(server):
    url = server.session()
    request("POST", url + "/xhr")
    r = request("POST", url + "/xhr_send", body='["x')
    assert r.status == 500 and b"Broken JSON encoding." in r.body
    r = request("POST", url + "/xhr_send", body="")
    assert r.status == 500 and b"Payload expected." in r.body


def test_bodies_over_http_max_body_get_413(workers):
    with Server("http.max_body = 1000\n", workers=workers) as small:
        url = small.session()
        request("POST", url + "/xhr")
        r = request("POST", url + "/xhr_send", body=json.dumps(["x" * 1000]))
        assert r.status == 413
        r = request("POST", url + "/jsonp_send", {"Content-Type": "text/plain", **small.page()},
                    body=json.dumps(["x" * 1000]))
        assert r.status == 413
        assert request("POST", url + "/xhr_send", body=json.dumps(["x" * 10])).status == 204
        assert "over http.max_body" in small.process.log()


def test_too_many_sessions_get_503():
    """In one process: with workers the cap is each process's (tests/test_workers.py)."""
    with Server("proxy.max_sessions = 1\n") as tiny:
        assert request("POST", tiny.session() + "/xhr").body == b"o\n"
        assert request("POST", tiny.session() + "/xhr").status == 503


ORIGINLESS = (("GET", "/jsonp?c=cb"), ("GET", "/htmlfile?c=cb"), ("POST", "/jsonp_send"))


def originless_refused(server: Server, headers: dict[str, str]) -> set[bool]:
    """Whether each request that carries no checkable Origin (the iframe pages included) got 403.
    (Each goes to a fresh session: a jsonp_send to one that does not exist is served with 404.)"""
    refused = set()
    for method, path in (*((method, server.session() + suffix) for method, suffix in ORIGINLESS),
                         ("GET", server.base + "/iframe.html"), ("GET", server.base + "/iframe-1.6.1.html")):
        answer = stream(method, path, headers)  # the head is enough: htmlfile streams on
        refused.add(answer.status == 403)
        answer.close()
    return refused


def test_originless_transports_are_judged_by_the_referer(workers):
    """JSONP, htmlfile and the iframe page carry no Origin header, so any site's page could use
    them; the Referer names the page, and it must pass the Origin rules."""
    with Server("", workers=workers) as same_host:  # the default rule: the Host header's host
        assert originless_refused(same_host, same_host.page()) == {False}
        assert originless_refused(same_host, {"Referer": "http://evil.example/attack.html"}) == {True}
        assert originless_refused(same_host, {}) == {True}  # a page that hides its Referer
        r = request("GET", same_host.session() + "/jsonp?c=cb", {"Referer": "http://evil.example/"})
        assert b"Origin" in r.body and b"[global] origins" in r.body
        assert "refused jsonp" in same_host.process.log() and "page http://evil.example/" in same_host.process.log()
    with Server("origins = http://app.example\n", workers=workers) as listed:
        assert originless_refused(listed, {"Referer": "http://app.example/chat/"}) == {False}
        assert originless_refused(listed, {"Referer": "http://other.example/"}) == {True}
        assert originless_refused(listed, {}) == {True}
        assert request("POST", listed.session() + "/xhr", {"Origin": "http://app.example"}).body == b"o\n"
    with Server("origins = *\n", workers=workers) as anyone:
        assert originless_refused(anyone, {}) == {False}


def test_a_session_opened_without_origin_is_judged_by_the_page_that_sends_the_handshake(workers):
    """Another site's <img> or <script> can open an EventSource session (no Origin header; it
    cannot read the answer) and then post to it: the posting page is the one judged."""
    with Server("", workers=workers) as server:
        def upload(url: str, origin: str, *texts: str) -> int:
            return request("POST", url + "/xhr_send", {"Origin": origin, "Content-Type": "text/plain"},
                           body=json.dumps(list(texts))).status

        def open_eventsource(referer: str):
            url = server.session()
            events = stream("GET", url + "/eventsource", {"Referer": referer})
            events.read()  # prelude
            assert stream_frames("eventsource", events.read()) == ["o"]
            return url, events

        url, events = open_eventsource("http://evil.example/attack.html")
        assert upload(url, "http://evil.example", f"127.0.0.1:{server.echo}") == 204
        assert stream_frames("eventsource", events.read()) == ['a["0106"]']
        assert server.connections() == 0
        events.close()
        # a post that names its page only by Referer (a whole URL) is judged by that page's origin
        url, events = open_eventsource("http://evil.example/attack.html")
        assert request("POST", url + "/xhr_send", {"Referer": "http://evil.example/attack.html"},
                       body=json.dumps([f"127.0.0.1:{server.echo}"])).status == 204
        assert stream_frames("eventsource", events.read()) == ['a["0106"]']
        events.close()
        assert "'origins = http://evil.example' to [global]" in server.process.log()
        # the same-origin page this is for: its own EventSource, its own posts
        own = f"http://127.0.0.1:{server.port}"
        url, events = open_eventsource(own + "/app/")
        assert upload(url, own, f"127.0.0.1:{server.echo}") == 204
        assert stream_frames("eventsource", events.read()) == ['a["1"]']
        # once the session is the page's, another site's post to it is refused outright
        assert upload(url, "http://evil.example", b64(b"x")) == 403
        assert upload(url, own, b64(b"ok")) == 204
        assert stream_frames("eventsource", events.read()) == [f'a["{b64(b"ok")}"]']
        events.close()
        assert "belongs to another page" in server.process.log()


def test_disallowed_origin_gets_0106(workers):
    with Server("origins = http://app.example\n", workers=workers) as strict:
        url = strict.session()
        request("POST", url + "/xhr", {"Origin": "http://evil.example"})
        send(url, f"127.0.0.1:{strict.echo}")
        assert poll_until(url, 1) == ["0106"]


# ---------------------------------------------------------------------------
# sessions end, and their backends go with them


@pytest.mark.parametrize(("method", "transport"), [("POST", "xhr_streaming"), ("GET", "eventsource"),
                                                    ("POST", "xhr"), ("websocket", "websocket")])
def test_a_browser_that_vanishes_releases_its_backend_at_once(method, transport, workers):
    with Server("session.ping_timeout = 30\n", workers=workers) as server:
        url = server.session()
        if method == "websocket":
            ws = ws_connect(url.replace("http:", "ws:") + "/websocket")
            assert ws.recv() == "o"
            ws.send(json.dumps([f"127.0.0.1:{server.echo}"]))
            assert ws.recv() == 'a["1"]'
            server.wait_connections(1)
            ws.socket.close()  # no close handshake: the network dropped it
        else:
            request("POST", url + "/xhr")
            send(url, f"127.0.0.1:{server.echo}")
            assert poll_until(url, 1) == ["1"]
            waiting = Connection(url)  # a receiver that waits
            waiting.send_request(method, f"{url}/{transport}")
            if transport != "xhr":  # a poll's head only comes with its frame
                waiting.read_head()
                waiting.read_chunk()
            server.wait_connections(1)
            time.sleep(0.1)
            waiting.close()
        server.wait_connections(0, timeout=3)  # at once, not after ping_timeout
        assert "browser connection lost" in server.process.log()



def test_the_uploads_of_a_browser_that_vanishes_reach_a_talking_backend_whole(workers):
    """Uploads, then the receiving stream drops: the backend used to be closed with a
    loseConnection that stopped reading it, so a backend that talked meanwhile turned the close
    into a reset and lost what the kernel had not sent yet (32 KB of 600 KB arrived)."""
    payload = bytes(range(256)) * 2400
    backend = SlowBackend(rate=1_000_000, echo=True)
    with Server(backends=(backend.port,), workers=workers) as server:
        url = server.session()
        receiving = stream("POST", url + "/xhr_streaming")
        receiving.read()  # prelude
        send(url, f"127.0.0.1:{backend.port}")
        opened = b""
        while b'a["1"]' not in opened:
            opened += receiving.read()
        for start in range(0, len(payload), 99_999):
            send(url, b64(payload[start:start + 99_999]))
        receiving.close()  # the browser vanishes
        received = backend.wait()
    assert len(received) == len(payload) and received == payload


def test_a_session_without_receiver_for_ping_timeout_is_closed(workers):
    with Server("session.ping_timeout = 1\n", workers=workers) as quick:
        url = quick.session()
        request("POST", url + "/xhr")
        send(url, f"127.0.0.1:{quick.echo}")
        assert poll_until(url, 1) == ["1"]
        quick.wait_connections(1)
        time.sleep(1.5)
        quick.wait_connections(0, timeout=2)
        assert "no receiving connection for 1s" in quick.process.log()
        assert request("POST", url + "/xhr").body == b"o\n"  # a new session


def test_heartbeats_follow_ping_interval(workers):
    with Server("session.ping_interval = 1\n", workers=workers) as quick:
        url = quick.session()
        s = stream("POST", url + "/xhr_streaming")
        s.read()
        assert s.read() == b"o\n"
        started = time.monotonic()
        assert s.read() == b"h\n"
        assert 0.8 < time.monotonic() - started < 4  # 1 s, with room for a loaded machine
        s.close()


def test_a_stalled_browser_is_closed_with_a_logged_reason(workers):
    """A streaming browser that stops reading: the backend is paused, then the session closed."""
    source = free_port()
    with running("source", source, 64 << 20):
        # A response limit that never ends the stream: the only way out is the stall.
        with Server("session.ping_timeout = 1\nsockjs.response_limit = 1000000000\n",
                    backends=(source,), workers=workers) as server:
            url = server.session()
            request("POST", url + "/xhr")
            send(url, f"127.0.0.1:{source}")
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            path = url.split(str(server.port), 1)[1]
            sock.sendall(f"POST {path}/xhr_streaming HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
            assert b"200 OK" in sock.recv(100)
            # ...and never reads again, while the backend has 64 MB to send.
            deadline = time.monotonic() + 15
            while "browser stopped reading" not in server.process.log():
                assert time.monotonic() < deadline, server.process.log()
                time.sleep(0.1)
            server.wait_connections(0, timeout=5)
            sock.close()
            assert request("POST", url + "/xhr").body == b"o\n"  # that session is gone
            assert server.process.status()["proxy"]["bytes_from_backend"] < 8 << 20  # paused, not drained


def test_a_browser_that_never_polls_again_is_closed_after_ping_timeout(workers):
    source = free_port()
    with running("source", source, 64 << 20):
        with Server("session.ping_timeout = 1\n", backends=(source,), workers=workers) as server:
            url = server.session()
            request("POST", url + "/xhr")
            send(url, f"127.0.0.1:{source}")
            first = frames_of(request("POST", url + "/xhr").body)
            assert messages(first[0])[0] == "1"
            server.wait_connections(1)
            time.sleep(0.5)
            status = server.process.status()
            # The backend is paused at a quarter of session.max_buffer; memory stays bounded.
            assert status["proxy"]["bytes_from_backend"] < 4 << 20
            server.wait_connections(0, timeout=5)
            assert "no receiving connection for 1s" in server.process.log()
