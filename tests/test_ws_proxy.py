"""TCPSocket over /ws against real backends: handshake codes, Origin, bytes, closes, flow control."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.support.backends import SlowBackend, never_reading, pattern, pattern_digest, running
from tests.support.procs import OrbitedProcess, free_port, rss_kb
from tests.support.rawws import masked, raw_upgrade


@contextmanager
def orbited_with(access: str = "", extra_global: str = "", extra_listen: str = ""):
    port, echo = free_port(), free_port()
    config = (f"[global]\nproxy.connect_timeout = 1\n{extra_global}\n[listen]\nhttp://127.0.0.1:{port}\n"
              f"echo://127.0.0.1:{echo}\n{extra_listen}\n[access]\n* -> 127.0.0.1:{echo}\n{access}\n")
    with OrbitedProcess(config, wait_for=port) as orbited:
        orbited.port, orbited.echo = port, echo
        yield orbited


def open_socket(port: int, dest: str, **kwargs):
    ws = ws_connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["binary"], max_size=None, **kwargs)
    ws.send(dest)
    return ws, ws.recv(10)


def refused(port: int, dest, **kwargs) -> tuple[str, int, str]:
    """(handshake answer, close code, close reason) for a handshake that must fail."""
    with ws_connect(f"ws://127.0.0.1:{port}/ws", **kwargs) as ws:
        ws.send(dest)
        answer = ws.recv(10)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(10)
    return answer, closed.value.rcvd.code, closed.value.rcvd.reason


class Listener:
    """A backend that only counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0

    def count(self, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()
            except TimeoutError:
                pass
        return self.accepted


def test_echo_and_the_subprotocol():
    with orbited_with() as orbited:
        ws, answer = open_socket(orbited.port, f"127.0.0.1:{orbited.echo}\n")
        with ws:
            assert answer == "1"
            assert ws.subprotocol == "binary"
            assert "Server" not in ws.response.headers  # no name and version for scanners, as over HTTP
            ws.send(b"hello")
            assert ws.recv(10) == b"hello"
            ws.send("héllo wörld 𝄞")  # text messages reach the backend as their UTF-8 bytes
            assert ws.recv(10) == "héllo wörld 𝄞".encode()
        # no subprotocol offered: still served
        with ws_connect(f"ws://127.0.0.1:{orbited.port}/ws") as plain:
            plain.send(f"127.0.0.1:{orbited.echo}")
            assert plain.recv(10) == "1" and plain.subprotocol is None
        log = orbited.log()
        assert f"-> 127.0.0.1:{orbited.echo} connected" in log
        assert "closed after" in log and "bytes up" in log


def test_a_request_without_upgrade_gets_426_not_a_status_page_or_a_redirect():
    with orbited_with(extra_listen=f"stomp://127.0.0.1:{free_port()}") as orbited:  # /stomp: the broker runs
        # (/sockjs/websocket answers such a GET with the SockJS protocol's own 400)
        for path in ("/ws", "/ws?redirect=http://evil.example", "/ws?redirect=http://evil.example&after=1",
                     "/stomp"):
            with socket.create_connection(("127.0.0.1", orbited.port), timeout=5) as sock:
                # (Connection: close: the 426 keeps the connection open otherwise, and this reads to the end)
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 426 "), (path, answer)
            assert b"Location" not in answer and b"evil.example" not in answer, (path, answer)
            assert b"utobahn" not in answer, (path, answer)


def test_data_pipelined_behind_the_handshake_is_delivered():
    with orbited_with() as orbited:
        with ws_connect(f"ws://127.0.0.1:{orbited.port}/ws") as ws:
            ws.send(f"127.0.0.1:{orbited.echo}")
            ws.send(b"early one ")
            ws.send(b"early two")
            assert ws.recv(10) == "1"
            received = b""
            while len(received) < 19:
                received += ws.recv(10)
            assert received == b"early one early two"
        with ws_connect(f"ws://127.0.0.1:{orbited.port}/ws") as ws:
            ws.send(f"127.0.0.1:{orbited.echo}")
            ws.send(b"x" * 70000)  # more than the 64 KiB held before the answer
            answer = ws.recv(10)
            assert answer in ("0102", "1")
            if answer == "1":  # the connect won the race: then it all went through
                received = b""
                while len(received) < 70000:
                    received += ws.recv(10)
                assert received == b"x" * 70000


@pytest.mark.parametrize("size", [1, 125, 126, 255, 256, 65535, 65536, 300_000, 1_048_576])
def test_all_byte_values_round_trip_exactly(size):
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    with orbited_with() as orbited:
        ws, answer = open_socket(orbited.port, f"127.0.0.1:{orbited.echo}")
        with ws:
            assert answer == "1"
            ws.send(payload)
            received = b""
            while len(received) < size:
                received += ws.recv(10)
            assert received == payload


@pytest.mark.parametrize("garbage", [
    "no-port-here", "host:", ":80", "host:0", "host:65536", "host:http", "a:b:c", "[::1]", "[not-ip]:80",
    "bad host:80", "x" * 600 + ":80", b"\xff\xfe:80", "",
])
def test_garbage_handshakes_get_0102(garbage):
    with orbited_with() as orbited:
        answer, code, reason = refused(orbited.port, garbage)
        assert answer == "0102" and code == 4102 and "invalid handshake" in reason


def test_no_handshake_within_the_timeout_gets_0102():
    with orbited_with(extra_global="proxy.handshake_timeout = 1") as orbited:
        with ws_connect(f"ws://127.0.0.1:{orbited.port}/ws", subprotocols=["binary"]) as ws:
            started = time.monotonic()
            assert ws.recv(10) == "0102"  # sent nothing at all
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(10)
            assert 0.9 < time.monotonic() - started < 5
        assert closed.value.rcvd.code == 4102 and "handshake_timeout" in closed.value.rcvd.reason
        deadline = time.monotonic() + 5
        while orbited.status()["sessions"]["total"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert orbited.status()["sessions"]["total"] == 0  # its place under proxy.max_sessions is free


def test_denied_destination_gets_0106_and_backend_never_sees_it():
    backend = Listener()
    with orbited_with() as orbited:
        answer, code, reason = refused(orbited.port, f"127.0.0.1:{backend.port}")
        assert (answer, code) == ("0106", 4106)
        assert "unauthorized" in reason
        assert backend.count(1.0) == 0
        assert f"* -> 127.0.0.1:{backend.port}" in orbited.log() or \
               f"127.0.0.1:{orbited.port} -> 127.0.0.1:{backend.port}" in orbited.log()
    backend.sock.close()


def test_access_rule_source_is_the_host_header():
    other = Listener()
    port = free_port()
    config = (f"[global]\n[listen]\nhttp://127.0.0.1:{port}\n"
              f"[access]\nlocalhost:{port} -> 127.0.0.1:{other.port}\n")
    with OrbitedProcess(config, wait_for=port):
        # reached as 127.0.0.1:PORT: the rule for 'localhost:PORT' does not apply
        assert refused(port, f"127.0.0.1:{other.port}")[0] == "0106"
        with ws_connect(f"ws://localhost:{port}/ws") as ws:
            ws.send(f"127.0.0.1:{other.port}")
            assert ws.recv(10) == "1"
        assert other.count(1.0) == 1
    other.sock.close()


def test_closed_port_gets_0108():
    dead = free_port()
    with orbited_with(access=f"* -> 127.0.0.1:{dead}") as orbited:
        answer, code, reason = refused(orbited.port, f"127.0.0.1:{dead}")
        assert (answer, code) == ("0108", 4108) and "failed" in reason


def test_backend_that_never_answers_gets_0104_after_the_timeout():
    port = free_port()
    with running("blackhole", port):
        with orbited_with(access=f"* -> 127.0.0.1:{port}") as orbited:
            started = time.monotonic()
            answer, code, reason = refused(orbited.port, f"127.0.0.1:{port}")
            elapsed = time.monotonic() - started
            assert (answer, code) == ("0104", 4104) and "timed out" in reason
            assert 0.8 < elapsed < 5  # proxy.connect_timeout = 1


def test_hostname_and_ipv6_destinations():
    six = socket.socket(socket.AF_INET6)
    six.bind(("::1", 0))
    six.listen(4)
    port6 = six.getsockname()[1]

    def echo_once() -> None:
        conn, _ = six.accept()
        with conn:
            conn.sendall(conn.recv(100))

    thread = threading.Thread(target=echo_once, daemon=True)
    thread.start()
    with orbited_with(access=f"* -> [::1]:{port6}") as orbited:
        ws, answer = open_socket(orbited.port, f"[::1]:{port6}")
        with ws:
            assert answer == "1"
            ws.send(b"over ipv6")
            assert ws.recv(10) == b"over ipv6"
    port = free_port()
    echo = free_port()
    config = (f"[global]\n[listen]\nhttp://127.0.0.1:{port}\necho://127.0.0.1:{echo}\n"
              f"[access]\n* -> localhost:{echo}\n")
    with OrbitedProcess(config, wait_for=port) as orbited:
        for _ in range(3):
            ws, answer = open_socket(port, f"LOCALHOST:{echo}")  # names compare case-insensitively
            with ws:
                assert answer == "1"
                ws.send(b"by name")
                assert ws.recv(10) == b"by name"
        proxy = orbited.status(port)["proxy"]
        # one lookup; the next two sockets got its answer from proxy.lookup_cache
        assert (proxy["lookups"], proxy["lookups_shared"], proxy["lookups_remembered"]) == (1, 0, 2), proxy
    six.close()


def test_origin_rules():
    with orbited_with() as orbited:
        dest = f"127.0.0.1:{orbited.echo}"
        host = f"127.0.0.1:{orbited.port}"
        answer, code, reason = refused(orbited.port, dest, origin="http://evil.example")
        assert (answer, code) == ("0106", 4106) and "Origin" in reason
        assert "origins = http://evil.example" in orbited.log()
        # sandboxed and file:// pages: refused as any other page, at once (autobahn's 400 made
        # Orbited.js try its other transports and report 101 seconds later)
        answer, code, reason = refused(orbited.port, dest, origin="null")
        assert (answer, code) == ("0106", 4106) and "Origin" in reason
        assert "'origins = *' (the only way" in reason  # 'origins = null' would stop --check and start-up
        # same host as the Host header, any port: a page on :3000 may use Orbited on another port
        for origin in ("http://127.0.0.1:3000", "https://127.0.0.1", f"http://{host}"):
            ws, answer = open_socket(orbited.port, dest, origin=origin)
            ws.close()
            assert answer == "1", origin
        # no Origin header: not a browser; the access rules alone decide
        ws, answer = open_socket(orbited.port, dest)
        ws.close()
        assert answer == "1"
    with orbited_with(extra_global="origins = https://app.example:8443 http://other.example") as orbited:
        dest = f"127.0.0.1:{orbited.echo}"
        for origin in ("https://app.example:8443", "HTTP://other.example:80"):
            ws, answer = open_socket(orbited.port, dest, origin=origin)
            ws.close()
            assert answer == "1", origin
        assert refused(orbited.port, dest, origin="https://app.example")[0] == "0106"
    with orbited_with(extra_global="origins = *") as orbited:
        ws, answer = open_socket(orbited.port, f"127.0.0.1:{orbited.echo}", origin="http://anything.example")
        ws.close()
        assert answer == "1"


def test_a_version_8_handshake_is_judged_by_its_sec_websocket_origin():
    """hybi-10 (version 8) browsers named the page in Sec-WebSocket-Origin, not Origin; autobahn
    accepts version 8, so reading only Origin let any page's version-8 socket through."""
    with orbited_with() as orbited:
        dest = f"127.0.0.1:{orbited.echo}".encode()
        for page, expected in ((b"http://evil.example", b"0106"), (b"http://127.0.0.1:3000", b"1")):
            sock = raw_upgrade(orbited.port, b"/ws", version=8, headers=b"Sec-WebSocket-Origin: %s\r\n" % page)
            sock.sendall(masked(1, dest))
            assert sock.recv(2 + len(expected)) == bytes((0x81, len(expected))) + expected, page
            sock.close()
        assert "refused Origin 'http://evil.example'" in orbited.log()


def test_backend_close_closes_the_websocket_with_1000():
    rude = free_port()
    with orbited_with(access=f"* -> 127.0.0.1:{rude}", extra_listen=f"rude://127.0.0.1:{rude}") as orbited:
        ws, answer = open_socket(orbited.port, f"127.0.0.1:{rude}")
        with ws:
            assert answer == "1"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(10)
            assert closed.value.rcvd.code == 1000 and "backend closed" in closed.value.rcvd.reason


def raw_backend() -> tuple[socket.socket, int]:
    """A listening socket the test accepts from and reads itself: a backend whose every byte it controls."""
    backend = socket.socket()
    backend.bind(("127.0.0.1", 0))
    backend.listen(1)
    return backend, backend.getsockname()[1]


def test_browser_close_closes_the_backend():
    backend, port = raw_backend()
    with orbited_with(access=f"* -> 127.0.0.1:{port}") as orbited:
        ws, answer = open_socket(orbited.port, f"127.0.0.1:{port}")
        conn, _ = backend.accept()
        assert answer == "1"
        ws.send(b"bye")
        conn.settimeout(10)
        assert conn.recv(10) == b"bye"
        ws.close()
        assert conn.recv(10) == b""  # EOF: the backend connection was closed
        conn.close()
    backend.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_close_reason_cannot_forge_a_log_line(workers):
    """The browser's close reason is logged; a newline in it must not start a line of its own."""
    with orbited_with(extra_global=f"workers = {workers}") as orbited:
        ws, answer = open_socket(orbited.port, f"127.0.0.1:{orbited.echo}")
        assert answer == "1"
        ws.close(1000, "bye\n2026-11-29 05:31:00,000 CRITICAL [orbited.service] forged")
        deadline = time.monotonic() + 10
        while "closed after" not in orbited.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = orbited.log().splitlines()
    [closed] = [line for line in lines if "closed after" in line]
    assert "bye\\n2026-11-29 05:31:00,000 CRITICAL" in closed
    assert not any(line.startswith("2026-11-29 05:31:00,000") for line in lines), lines


def sockets_of(pid: int) -> int:
    """The sockets a process has open (its other descriptors come and go: a thread pool's pipe)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def test_a_backend_that_stops_reading_is_cut_off_after_the_browser_goes():
    """Closing sends what is buffered first; a backend that never reads would hold that close,
    its descriptor and its buffers for ever, counted by no session.  It gets LINGER seconds."""
    backend = never_reading()
    port = backend.getsockname()[1]
    # Orbited does not read a browser while the backend does not read: it learns that the
    # browser left at the next unanswered ping
    pings = "session.ping_interval = 1\nsession.ping_timeout = 1\n"
    with orbited_with(access=f"* -> 127.0.0.1:{port}", extra_global=pings) as orbited:
        fds = lambda: sockets_of(orbited.proc.pid)
        time.sleep(0.3)  # the start-up check's connection is closed by now
        before = fds()
        browser = raw_upgrade(orbited.port)
        browser.sendall(masked(1, f"127.0.0.1:{port}".encode()))
        conn, _ = backend.accept()  # and never read
        assert browser.recv(3) == b"\x81\x011"
        browser.settimeout(0.5)
        try:
            frames = masked(2, b"x" * 125) * 512
            for _ in range(128):  # until Orbited's buffer to the backend is full and it stops reading us
                browser.sendall(frames)
        except TimeoutError:
            pass
        browser.close()
        deadline = time.monotonic() + 15
        while fds() > before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fds() == before, orbited.log()
    conn.close()
    backend.close()


def test_backend_data_while_the_browser_side_closes_is_dropped_quietly():
    """A browser that breaks the protocol gets a close frame and the socket waits for its reply;
    what the backend sends meanwhile has nowhere to go and must not raise (it was logged as an
    unhandled error and ended the session as 'backend lost')."""
    backend, port = raw_backend()
    with orbited_with(access=f"* -> 127.0.0.1:{port}") as orbited:
        browser = raw_upgrade(orbited.port)
        browser.sendall(masked(1, f"127.0.0.1:{port}".encode()))
        conn, _ = backend.accept()
        assert browser.recv(3) == b"\x81\x011"  # the text message "1"
        browser.sendall(masked(3, b"x"))  # a reserved opcode: autobahn fails the connection (1002)
        close = browser.recv(2)
        assert close[0] == 0x88, close  # its close frame; the browser never answers it
        conn.sendall(b"late data")  # arrives while the WebSocket is closing
        conn.settimeout(10)
        assert conn.recv(10) == b""  # the backend is closed once the WebSocket is gone
        conn.close()
        browser.close()
        deadline = time.monotonic() + 5
        while "closed after" not in orbited.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = orbited.log()
    backend.close()
    assert "Traceback" not in log and "Unhandled" not in log, log
    closed = [line for line in log.splitlines() if "closed after" in line]
    assert len(closed) == 1 and "backend lost" not in closed[0], closed
    # what the browser did wrong is an INFO line: a WARNING is for the operator
    assert 'INFO [autobahn] failing WebSocket connection (code=1002): "data frame using reserved opcode 3"' in log
    assert "WARNING" not in log, log


def read_until_closed(sock: socket.socket, timeout: float = 10) -> tuple[bytes, str]:
    """Everything the server sends until it closes, and how: 'FIN' or 'RESET'."""
    sock.settimeout(timeout)
    received = b""
    try:
        while data := sock.recv(65536):
            received += data
    except ConnectionResetError:
        return received, "RESET"
    return received, "FIN"


@pytest.mark.parametrize("close", [(999).to_bytes(2, "big"), (5000).to_bytes(2, "big"), b"\x03",
                                   (1000).to_bytes(2, "big") + b"\xff"])
def test_an_invalid_close_frame_is_answered_with_why_not_a_reset(close):
    """autobahn answers a close frame with a reserved code, a 1-byte payload or a reason that is not
    UTF-8 with 1002 (1007), takes the browser's frame as the reply to it, and aborted the socket:
    the reset threw the answer away, so the browser saw a reset and never learnt why."""
    with orbited_with() as orbited:
        browser = raw_upgrade(orbited.port)
        browser.sendall(masked(8, close))
        received, how = read_until_closed(browser)
        expected = 1007 if close.endswith(b"\xff") else 1002
        assert received[:1] == b"\x88" and int.from_bytes(received[2:4], "big") == expected, received
        assert how == "FIN"
        browser.close()


def test_a_browser_that_closes_and_never_reads_is_cut_with_its_backend():
    """A browser that sent its close frame and then read nothing, behind a backend that kept
    sending, held its socket and its backend connection for as long as it stayed connected: the
    orderly close waited for every byte to reach it, and the session ended only with the socket."""
    backend, port = raw_backend()
    with orbited_with(access=f"* -> 127.0.0.1:{port}") as orbited:
        browser = raw_upgrade(orbited.port)
        browser.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        browser.sendall(masked(1, f"127.0.0.1:{port}".encode()))
        conn, _ = backend.accept()
        conn.setblocking(False)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # until Orbited stops reading it: the browser reads nothing
            try:
                conn.send(b"x" * 65536)
            except BlockingIOError:
                time.sleep(0.05)
        browser.sendall(masked(8, (1000).to_bytes(2, "big")))
        conn.setblocking(True)
        conn.settimeout(15)
        started = time.monotonic()
        while conn.recv(65536):  # what Orbited wrote, until it closes the backend (TimeoutError: never)
            pass
        assert time.monotonic() - started < 12  # closing.LINGER (5 s) without progress, then cut
        _, how = read_until_closed(browser, timeout=5)  # the browser's socket is gone too
        assert how in ("FIN", "RESET")
        conn.close()
        browser.close()
    backend.close()


def test_a_ping_flood_from_a_browser_that_never_reads_does_not_grow_the_server():
    """Every ping was answered, and a client that sent pings and read nothing grew the server's
    buffer of pongs without bound (74 MB in 20 s on loopback).  Pongs now go only while little
    waits for the browser; a browser that reads gets its pong as before."""
    with orbited_with() as orbited:
        browser = raw_upgrade(orbited.port)
        browser.sendall(masked(9, b"are you there"))
        assert browser.recv(64) == b"\x8a\x0dare you there"
        flood = raw_upgrade(orbited.port)
        flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        before = rss_kb(orbited.proc.pid)
        pings = masked(9, b"p" * 125) * 1000
        for _ in range(200):  # 26 MB of pings
            flood.sendall(pings)
        time.sleep(1)  # the server reads the last of them
        browser.sendall(masked(9, b"still there"))
        assert browser.recv(64) == b"\x8a\x0bstill there"
        assert rss_kb(orbited.proc.pid) - before < 8 * 1024
        flood.close()
        browser.close()


def test_a_message_in_tiny_fragments_costs_its_size_and_arrives_whole():
    """autobahn kept each fragment's payload as its own bytes object until the message ended: a
    message sent as 2-byte fragments held about 22 bytes of server memory per byte of it (93 MB
    for one 4 MiB message), so ws.max_message_size did not bound what a connection could hold."""
    with orbited_with(extra_global="ws.max_message_size = 1048576") as orbited:
        browser = raw_upgrade(orbited.port)
        browser.sendall(masked(1, f"127.0.0.1:{orbited.echo}".encode()))
        assert browser.recv(3) == b"\x81\x011"
        message = os.urandom(1 << 20)
        before = rss_kb(orbited.proc.pid)
        first, rest = masked(2, message[:2]), [message[i:i + 2] for i in range(2, len(message) - 2, 2)]
        browser.sendall(bytes([first[0] & 0x7F]) + first[1:])  # not final
        for start in range(0, len(rest), 4096):
            browser.sendall(b"".join(b"\x00\x82\0\0\0\0" + piece for piece in rest[start:start + 4096]))
        time.sleep(1)  # the server reads the last of them
        held = rss_kb(orbited.proc.pid) - before
        browser.sendall(masked(0, message[-2:]))  # the final fragment
        received = b""
        browser.settimeout(10)
        while len(received) < len(message) + 10:
            received += browser.recv(1 << 20)
            payloads = []
            pos = 0
            while pos + 2 <= len(received):
                length, start = received[pos + 1] & 0x7F, pos + 2
                if length == 126:
                    length, start = int.from_bytes(received[start:start + 2], "big"), start + 2
                elif length == 127:
                    length, start = int.from_bytes(received[start:start + 8], "big"), start + 8
                if start + length > len(received):
                    break
                payloads.append(received[start:start + length])
                pos = start + length
            if sum(map(len, payloads)) == len(message):
                break
        assert b"".join(payloads) == message
        assert held < 6 * 1024, held  # KiB: twice the message at most
        browser.close()


def test_a_browser_sending_tiny_frames_does_not_hold_up_the_others():
    """autobahn's cost is per frame (and it copies the rest of the read per frame): a browser
    sending 64 KiB messages as 1-byte fragments made each 64 KiB read of its socket take about a
    quarter of a second, and every other session of the process waited (echo round trips of
    other browsers: median 220 ms, was 0.5 ms).  Its reads now shrink while it does that."""
    with orbited_with() as orbited:
        flooder = raw_upgrade(orbited.port)
        flooder.sendall(masked(1, f"127.0.0.1:{orbited.echo}".encode()))
        assert flooder.recv(3) == b"\x81\x011"
        first = masked(2, b"F")
        message = bytes([first[0] & 0x7F]) + first[1:] + b"\x00\x81\0\0\0\0F" * 65534 + masked(0, b"F")
        stop = threading.Event()

        def flood() -> None:
            try:
                while not stop.is_set():
                    flooder.sendall(message)
            except OSError:
                pass  # the end of the test

        def drain() -> None:
            try:
                while flooder.recv(1 << 20):  # the echoes
                    pass
            except OSError:
                pass

        threads = [threading.Thread(target=flood, daemon=True), threading.Thread(target=drain, daemon=True)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1)  # the flood is under way
            ws, answer = open_socket(orbited.port, f"127.0.0.1:{orbited.echo}")
            assert answer == "1"
            took = []
            with ws:
                for _ in range(30):
                    sent, got = os.urandom(64), b""
                    start = time.monotonic()
                    ws.send(sent)
                    while len(got) < len(sent):
                        got += ws.recv(10)
                    took.append(time.monotonic() - start)
                    assert got == sent
                    time.sleep(0.05)
            took.sort()
            assert took[len(took) // 2] < 0.05, took  # the median round trip
        finally:
            stop.set()
            flooder.shutdown(socket.SHUT_RDWR)
            flooder.close()
            for thread in threads:
                thread.join(5)


def test_message_over_the_limit_closes_with_1009():
    with orbited_with(extra_global="ws.max_message_size = 10000") as orbited:
        ws, answer = open_socket(orbited.port, f"127.0.0.1:{orbited.echo}")
        assert answer == "1"
        with ws:
            ws.send(b"x" * 10001)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(10)
            assert closed.value.rcvd.code == 1009
        # a client that answers any close with 1000 (websocket-client does): the log names
        # the code the server sent, not the one echoed
        browser = raw_upgrade(orbited.port)
        browser.sendall(masked(1, f"127.0.0.1:{orbited.echo}".encode()))
        assert browser.recv(3) == b"\x81\x011"
        for index in range(100):  # 10,100 bytes in one fragmented message: over the limit
            frame = bytearray(masked(2 if index == 0 else 0, b"x" * 101))
            frame[0] &= 0x7F  # not the final fragment
            browser.sendall(bytes(frame))
        assert browser.recv(2)[0] == 0x88
        browser.sendall(masked(8, b"\x03\xe8"))
        browser.close()
        deadline = time.monotonic() + 5
        while orbited.log().count("closed after") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "(closed by the server with 1009 received WebSocket message size 10100" in orbited.log().splitlines()[-1]


def test_session_cap_answers_503():
    with orbited_with(extra_global="proxy.max_sessions = 2") as orbited:
        first, _ = open_socket(orbited.port, f"127.0.0.1:{orbited.echo}")
        second, _ = open_socket(orbited.port, f"127.0.0.1:{orbited.echo}")
        with pytest.raises(InvalidStatus) as refused_status:
            ws_connect(f"ws://127.0.0.1:{orbited.port}/ws")
        assert refused_status.value.response.status_code == 503
        first.close()
        second.close()


class PeakRSS(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, rss_kb(pid), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(0.02)


MEMORY_BOUND_KB = 40_000  # growth of the server's RSS while 200 MB pass through


def test_fast_backend_slow_browser_keeps_memory_bounded():
    nbytes = 200 * 1024 * 1024
    port = free_port()
    with running("source", port, nbytes):
        with orbited_with(access=f"* -> 127.0.0.1:{port}") as orbited:
            baseline = rss_kb(orbited.proc.pid)
            watch = PeakRSS(orbited.proc.pid)
            watch.start()
            ws, answer = open_socket(orbited.port, f"127.0.0.1:{port}", max_queue=2)
            assert answer == "1"
            digest, total, started = hashlib.sha256(), 0, time.monotonic()
            with ws:
                while total < nbytes:
                    data = ws.recv(30)
                    digest.update(data)
                    total += len(data)
                    if total < 20 * 1024 * 1024:
                        time.sleep(0.002)  # a slow reader for the first 20 MB
            watch.running = False
            watch.join()
            assert total == nbytes and digest.hexdigest() == pattern_digest(nbytes)
            growth = watch.peak - baseline
            assert growth < MEMORY_BOUND_KB, f"server RSS grew {growth} KB"
            assert time.monotonic() - started < 120


def test_slow_backend_fast_browser_keeps_memory_bounded():
    nbytes = 100 * 1024 * 1024
    port = free_port()
    with running("sink", port, 4) as sink:
        with orbited_with(access=f"* -> 127.0.0.1:{port}") as orbited:
            baseline = rss_kb(orbited.proc.pid)
            watch = PeakRSS(orbited.proc.pid)
            watch.start()
            ws, answer = open_socket(orbited.port, f"127.0.0.1:{port}")
            assert answer == "1"
            sent_during_stall = 0
            started = time.monotonic()
            with ws:
                for piece in pattern(nbytes):
                    ws.send(piece)
                    if time.monotonic() - started < 3.5:
                        sent_during_stall += len(piece)
            # the backend read nothing for 4 s: the browser must have been held back
            assert sent_during_stall < 30 * 1024 * 1024
            total, digest = sink.stdout.readline().split()
            watch.running = False
            watch.join()
            assert int(total) == nbytes and digest == pattern_digest(nbytes)
            growth = watch.peak - baseline
            assert growth < MEMORY_BOUND_KB, f"server RSS grew {growth} KB"


def test_many_sessions_at_once():
    with orbited_with() as orbited:
        sockets = []
        try:
            for _ in range(200):
                ws, answer = open_socket(orbited.port, f"127.0.0.1:{orbited.echo}")
                assert answer == "1"
                sockets.append(ws)
            assert orbited.status()["proxy"]["connections"] == 200
            for index, ws in enumerate(sockets):
                ws.send(b"%d" % index)
            for index, ws in enumerate(sockets):
                assert ws.recv(10) == b"%d" % index
        finally:
            for ws in sockets:
                ws.close()


def test_irc_through_ws_to_real_ngircd(ngircd):
    with orbited_with(access=f"* -> 127.0.0.1:{ngircd.port}") as orbited:
        alice, a = open_socket(orbited.port, f"127.0.0.1:{ngircd.port}")
        bob, b = open_socket(orbited.port, f"127.0.0.1:{ngircd.port}")
        assert a == b == "1"

        def read_until(ws, needle: bytes, limit: float = 10) -> bytes:
            data, deadline = b"", time.monotonic() + limit
            while needle not in data:
                data += ws.recv(max(0.1, deadline - time.monotonic()))
            return data

        with alice, bob:
            alice.send(b"NICK alice\r\nUSER alice 0 * :Alice\r\n")
            bob.send(b"NICK bob\r\nUSER bob 0 * :Bob\r\n")
            read_until(alice, b" 001 alice ")
            read_until(bob, b" 001 bob ")
            alice.send(b"JOIN #orbited\r\n")
            read_until(alice, b" 366 alice #orbited ")
            bob.send(b"JOIN #orbited\r\n")
            read_until(bob, b" 366 bob #orbited ")
            alice.send("PRIVMSG #orbited :héllo from alice\r\n".encode())
            got = read_until(bob, b"PRIVMSG #orbited")
            assert ":alice!" in got.decode() and "héllo from alice" in got.decode()
            alice.send(b"QUIT :bye\r\n")


def test_stomp_through_ws_to_real_rabbitmq(rabbitmq):
    with orbited_with(access=f"* -> 127.0.0.1:{rabbitmq.port}") as orbited:
        ws, answer = open_socket(orbited.port, f"127.0.0.1:{rabbitmq.port}")
        assert answer == "1"

        def frame(ws, needle: bytes) -> bytes:
            data, deadline = b"", time.monotonic() + 15
            while needle not in data or b"\x00" not in data[data.index(needle):]:
                data += ws.recv(max(0.1, deadline - time.monotonic()))
            return data

        with ws:
            ws.send(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
            assert frame(ws, b"CONNECTED").startswith(b"CONNECTED\n")
            ws.send(b"SUBSCRIBE\nid:0\ndestination:/queue/orbited-ws\nreceipt:r1\n\n\x00")
            assert b"receipt-id:r1" in frame(ws, b"RECEIPT")
            body = bytes(range(1, 256)) + b"\x00 binary"
            ws.send(b"SEND\ndestination:/queue/orbited-ws\ncontent-length:%d\n\n" % len(body) + body + b"\x00")
            message = frame(ws, b"MESSAGE")
            head, _, rest = message.partition(b"\n\n")
            assert b"destination:/queue/orbited-ws" in head
            assert rest.startswith(body)
            ws.send(b"DISCONNECT\nreceipt:bye\n\n\x00")
            assert b"receipt-id:bye" in frame(ws, b"RECEIPT")


def test_autobahn_debug_arguments_are_formatted_only_when_a_debug_line_is_written():
    """orbited.transports.websocket makes autobahn's per-connection debug arguments lazy."""
    import autobahn.twisted.websocket as autobahn_twisted
    import autobahn.util
    import autobahn.websocket.protocol as autobahn_protocol

    from orbited.transports import websocket

    calls: list[int] = []
    lazy = websocket._Lazy(lambda value: calls.append(value) or f"<{value}>", 7)
    assert calls == []
    txaio_line = "{func} {func:>4}"  # txaio fills its log lines with str.format
    assert txaio_line.format(func=lazy) == "<7>  <7>" and calls == [7, 7]
    method = autobahn_protocol.WebSocketServerProtocol.processHandshake
    for module in (autobahn_protocol, autobahn_twisted):
        assert isinstance(module.hltype(method), websocket._Lazy)
        assert str(module.hltype(method)) == autobahn.util.hltype(method)
        assert str(module.hlval(5)) == autobahn.util.hlval(5)
    assert str(autobahn_protocol.pformat([("utf8validateIncoming", True)])) == "[('utf8validateIncoming', True)]"


def test_a_browser_that_keeps_sending_is_alive_without_answering_pings():
    """autobahn restarts its ping timer on any data frame; the fast path for whole binary frames
    skipped that, and a browser sending every 0.3 s was dropped as silent after ping + timeout."""
    with orbited_with(extra_global="session.ping_interval = 1\nsession.ping_timeout = 1\n") as orbited:
        sock = raw_upgrade(orbited.port)
        sock.sendall(masked(1, f"127.0.0.1:{orbited.echo}".encode()))
        received = b""
        started = time.monotonic()
        while time.monotonic() - started < 4.5:
            sock.sendall(masked(2, b"tick"))  # never a pong
            time.sleep(0.3)
            sock.settimeout(0.05)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            assert chunk, f"dropped after {time.monotonic() - started:.1f} s"
            received += chunk
        assert received.count(b"tick") >= 12
        # read before our own close below, which is logged as that same line once Orbited sees it
        assert "browser connection lost" not in orbited.log()
        sock.close()


def test_an_open_socket_gets_an_empty_message_every_ping_interval_so_a_page_sees_orbited_is_there():
    """A page cannot see WebSocket pings: with only those, a /ws socket whose Orbited was stopped
    or whose network path died stayed open in the page for ever.  Each ping now comes with an
    empty binary message (no bytes for the socket); Orbited.js closes with 101 without them."""
    port = free_port()
    with running("sink", port, 0) as sink:  # a backend that never sends anything
        with orbited_with(access=f"* -> 127.0.0.1:{port}",
                          extra_global="session.ping_interval = 0.5\nsession.ping_timeout = 5\n") as orbited:
            ws, answer = open_socket(orbited.port, f"127.0.0.1:{port}")
            assert answer == "1"
            with ws:
                started = time.monotonic()
                keepalives = [ws.recv(3) for _ in range(3)]
                assert keepalives == [b"", b"", b""]
                assert time.monotonic() - started < 2.9
            assert sink.stdout.readline().split()[0] == "0"  # nothing reached the backend
        # refused (0106): the handshake answer is the only message, never followed by a keepalive
        with orbited_with(extra_global="session.ping_interval = 0.5\nsession.ping_timeout = 5\n") as orbited:
            ws, answer = open_socket(orbited.port, "127.0.0.1:9")
            assert answer == "0106"
            with pytest.raises(ConnectionClosed):
                ws.recv(2)
            ws.close()


def test_a_slow_backend_does_not_get_its_browser_dropped_by_the_ping_timeout():
    """Flow control stops reading the browser while the backend is slow; the browser's pong then
    waits behind data we do not read.  The session was dropped at ping interval + timeout."""
    nbytes = 16 * 1024 * 1024
    port = free_port()
    with running("sink", port, 4) as sink:
        with orbited_with(access=f"* -> 127.0.0.1:{port}",
                          extra_global="session.ping_interval = 1\nsession.ping_timeout = 1\n") as orbited:
            ws, answer = open_socket(orbited.port, f"127.0.0.1:{port}")
            assert answer == "1"
            with ws:
                for piece in pattern(nbytes):
                    ws.send(piece)
            total, digest = sink.stdout.readline().split()
            assert int(total) == nbytes and digest == pattern_digest(nbytes)
            assert "browser connection lost" not in orbited.log()


def connects_under_way(port: int) -> int:
    """TCP connects to 127.0.0.1:``port`` this machine has in SYN-SENT (state 02 of /proc/net/tcp)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[2] == f"0100007F:{port:04X}" and line.split()[3] == "02")


def test_refusing_early_data_or_a_closing_browser_stops_the_backend_connect():
    """A session refused for too much data before its answer (0102) left its backend connect
    running: counted by no session (past proxy.max_sessions) until the connect timeout."""
    port = free_port()
    with running("blackhole", port):
        with orbited_with(access=f"* -> 127.0.0.1:{port}", extra_global="proxy.connect_timeout = 30\n") as orbited:
            fillers = connects_under_way(port)  # the blackhole's own, which fill its accept queue
            for _ in range(5):
                with ws_connect(f"ws://127.0.0.1:{orbited.port}/ws", max_size=None) as ws:
                    ws.send(f"127.0.0.1:{port}")
                    ws.send(b"x" * 70000)  # more than MAX_EARLY_DATA before the answer
                    assert ws.recv(10) == "0102"
            deadline = time.monotonic() + 5
            while connects_under_way(port) > fillers and time.monotonic() < deadline:
                time.sleep(0.1)
            assert connects_under_way(port) == fillers
            assert f"-> 127.0.0.1:{port}: more than 65536 bytes sent before the answer" in orbited.log()
            # a browser that goes while its connect is under way: stopped too, and logged
            ws = ws_connect(f"ws://127.0.0.1:{orbited.port}/ws")
            ws.send(f"127.0.0.1:{port}")
            time.sleep(0.3)
            assert connects_under_way(port) == fillers + 1
            ws.close()
            deadline = time.monotonic() + 5
            while "browser side closed while connecting" not in orbited.log() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert connects_under_way(port) == fillers
            assert f"-> 127.0.0.1:{port}: browser side closed while connecting" in orbited.log()


# ---------------------------------------------------------------------------
# end of stream: every byte written before a close reaches the other side


def test_a_browser_that_closes_right_after_sending_has_every_byte_delivered_to_a_talking_backend():
    """The browser's close used to close the backend with Twisted's loseConnection, which stops
    reading: a backend that talked back meanwhile left bytes unread, the close became a reset, and
    the kernel threw away the up to megabytes of browser data it had not sent yet (24 KB of 3 MB
    arrived).  Now the backend gets a FIN after the last byte, and what it says meanwhile is dropped."""
    payload = b"".join(pattern(3_000_000))
    backend = SlowBackend(rate=1_000_000, echo=True)
    with orbited_with(access=f"* -> 127.0.0.1:{backend.port}") as orbited:
        ws, answer = open_socket(orbited.port, f"127.0.0.1:{backend.port}")
        assert answer == "1"
        for start in range(0, len(payload), 100_000):
            ws.send(payload[start:start + 100_000])
        ws.close()
        received = backend.wait()
        assert len(received) == len(payload) and received == payload
        assert "Traceback" not in orbited.log()


def test_a_slow_backend_gets_the_whole_tail_after_the_browser_closes():
    """A backend reading 1 MB/s was cut 5 s (closing.LINGER) after the browser closed, with
    megabytes still buffered for it; the log said they had gone up.  The cut is now for a
    backend that takes nothing for LINGER seconds, not one that reads slowly."""
    payload = b"".join(pattern(8_000_000))
    backend = SlowBackend(rate=1_000_000)
    with orbited_with(access=f"* -> 127.0.0.1:{backend.port}", extra_global="ws.max_message_size = 9000000") \
            as orbited:
        ws, answer = open_socket(orbited.port, f"127.0.0.1:{backend.port}")
        assert answer == "1"
        ws.send(payload)
        ws.close()
        received = backend.wait()
        assert len(received) == len(payload) and received == payload


def test_a_backend_that_shuts_its_sending_side_still_gets_what_the_browser_sent():
    """A backend's EOF (shutdown(SHUT_WR)) closed the connection at once: Twisted threw away
    what it still buffered for a backend that was still reading (740 KB of 3 MB counted as
    sent up).  Now that is flushed to it before the close."""
    payload = b"".join(pattern(3_000_000))
    backend = SlowBackend(rate=1_000_000, half_close_after=200_000)
    with orbited_with(access=f"* -> 127.0.0.1:{backend.port}") as orbited:
        ws, answer = open_socket(orbited.port, f"127.0.0.1:{backend.port}")
        assert answer == "1"
        try:
            for start in range(0, len(payload), 500_000):
                ws.send(payload[start:start + 500_000])
        except ConnectionClosed:
            pass  # the close may come while the browser still sends
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(10)
        assert closed.value.rcvd.code == 1000 and "backend closed" in closed.value.rcvd.reason
        received = backend.wait()
        deadline = time.monotonic() + 5
        while "closed after" not in orbited.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        [line] = [line for line in orbited.log().splitlines() if "closed after" in line]
    sent_up = int(line.split(" bytes up")[0].rsplit(" ", 1)[1])
    assert sent_up > 0 and len(received) == sent_up and received == payload[:sent_up], (len(received), line)


@pytest.mark.parametrize("receive_buffer", [16384, 0], ids=["small-buffer", "system-buffer"])
@pytest.mark.parametrize("path", ["/ws", "/sockjs/websocket"])
def test_a_slow_browser_reads_the_whole_tail_before_the_close(path, receive_buffer):
    """Our close frame waits behind everything sent before it; autobahn reset the socket if the
    browser had not answered it within 5 s (closeHandshakeTimeout), so a browser still reading a
    backend's last megabytes lost them (6.5 of 8 MB).  The timeout now runs from the last byte
    the browser took; and once every byte is in the browser's receive buffer (the system's own
    size holds megabytes), the close is a FIN: the reset lost what it had not read yet."""
    nbytes = 3_000_000
    port = free_port()
    with running("source", port, nbytes), orbited_with(access=f"* -> 127.0.0.1:{port}") as orbited:
        raw = path != "/ws"
        with ws_connect(f"ws://127.0.0.1:{orbited.port}{path}", max_size=None, max_queue=1) as ws:
            if receive_buffer:
                ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            ws.send(f"127.0.0.1:{port}")
            assert ws.recv(10) == "1"
            received = bytearray()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    message = ws.recv(20)
                    received += base64.b64decode(message) if raw else message
                    time.sleep(len(message) / 500_000)  # a browser reading 500 KB/s
    assert len(received) == nbytes and received == b"".join(pattern(nbytes))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
