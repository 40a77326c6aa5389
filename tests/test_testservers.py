"""The built-in test servers behave as documented and bind only the interface they are given."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.support.procs import OrbitedProcess, free_port, wait_port


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
