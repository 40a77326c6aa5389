"""The built-in test servers behave as documented and bind only the interface they are given."""

from __future__ import annotations

import json
import select
import socket
import time

import pytest

from tests.support.procs import OrbitedProcess, free_port, rss_kb, wait_port


def recv_until(sock: socket.socket, needle: bytes, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while needle not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture(scope="module")
def servers():
    ports = {name: free_port() for name in ("http", "echo", "lineecho", "rude", "announce", "monitor")}
    listen = "\n".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items())
    with OrbitedProcess(f"[global]\n[listen]\n{listen}\n", wait_for=ports["http"]) as orbited:
        for port in ports.values():
            wait_port(port, proc=orbited.proc)
        yield ports


def test_echo(servers):
    with socket.create_connection(("127.0.0.1", servers["echo"])) as sock:
        sock.sendall(bytes(range(256)))
        assert recv_until(sock, bytes([255])) == bytes(range(256))


def test_lineecho_echoes_whole_lines_only(servers):
    with socket.create_connection(("127.0.0.1", servers["lineecho"])) as sock:
        sock.sendall(b"partial")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        sock.sendall(b" line\nsecond\n")
        assert recv_until(sock, b"second\n") == b"partial line\nsecond\n"


def test_lineecho_drops_an_endless_line(servers):
    with socket.create_connection(("127.0.0.1", servers["lineecho"])) as sock:
        sock.sendall(b"x" * 70000)
        sock.settimeout(5)
        assert sock.recv(10) == b""


def test_rude_hangs_up(servers):
    with socket.create_connection(("127.0.0.1", servers["rude"])) as sock:
        sock.settimeout(5)
        assert sock.recv(10) == b""


def test_announce_pushes_numbered_messages(servers):
    with socket.create_connection(("127.0.0.1", servers["announce"])) as sock:
        started = time.monotonic()
        data = recv_until(sock, b"message 2\n", timeout=5)
        assert data == b"message 1\nmessage 2\n"
        assert 1.5 < time.monotonic() - started < 4


def test_monitor_sends_init_then_updates(servers):
    with socket.create_connection(("127.0.0.1", servers["monitor"])) as sock:
        data = recv_until(sock, b"~", timeout=5)
        frames = [json.loads(frame) for frame in data.split(b"~") if frame]
        assert frames[0] == ["INIT", ["user", "pid", "cpu", "mem", "connections"]]
        data = data[data.index(b"~") + 1:]
        while data.count(b"~") < 1:
            data += sock.recv(4096)
        kind, fields = json.loads(data.split(b"~")[0])
        assert kind == "UPDATE" and fields["connections"] == 0 and fields["pid"] > 0


def test_test_servers_bind_only_their_interface():
    http, echo = free_port(), free_port()
    with OrbitedProcess(f"[global]\n[listen]\nhttp://127.0.0.1:{http}\necho://127.0.0.2:{echo}\n",
                        wait_for=http) as orbited:
        wait_port(echo, host="127.0.0.2", proc=orbited.proc)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", echo), timeout=2)


@pytest.mark.parametrize("name", ["echo", "lineecho"])
def test_an_echo_stops_reading_a_client_that_does_not_read_and_goes_on_when_it_does(name):
    http, port = free_port(), free_port()
    with OrbitedProcess(f"[global]\n[listen]\nhttp://127.0.0.1:{http}\n{name}://127.0.0.1:{port}\n",
                        wait_for=http) as orbited:
        wait_port(port, proc=orbited.proc)
        before = rss_kb(orbited.proc.pid)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        line, sent, stuck_since = b"x" * 999 + b"\n", 0, None
        while sent < 200 * 1024 * 1024 and (stuck_since is None or time.monotonic() - stuck_since < 1):
            try:
                sent += sock.send(line * 64)  # whole lines: a partial send is finished below
                stuck_since = None
            except BlockingIOError:
                stuck_since = stuck_since or time.monotonic()
                time.sleep(0.01)
        grown = rss_kb(orbited.proc.pid) - before
        assert sent < 64 * 1024 * 1024 and grown < 16 * 1024, (sent, grown)
        rest = (line * 64)[sent % len(line * 64):] if sent % len(line * 64) else b""  # whole lines only
        sent += len(rest)
        received, deadline = 0, time.monotonic() + 30
        while received < sent and time.monotonic() < deadline:  # now it reads: everything comes back
            readable, writable, _ = select.select([sock], [sock] if rest else [], [], 1)
            if writable:
                rest = rest[sock.send(rest):]
            if readable:
                received += len(sock.recv(1 << 20))
        assert received == sent
        sock.close()
