"""A WebSocket client by hand, for tests that must break the protocol or leave a close unanswered."""

from __future__ import annotations

import socket


def upgrade_request(port: int, path: bytes, version: int = 13, headers: bytes = b"") -> bytes:
    return (b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: %d\r\n%s\r\n" % (port, version, headers))


def upgrade(port: int, path: bytes = b"/ws", version: int = 13, headers: bytes = b"") -> tuple[socket.socket, bytes]:
    """The socket and the response head, whatever the status."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(upgrade_request(port, path, version, headers))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    return sock, head


def raw_upgrade(port: int, path: bytes = b"/ws", version: int = 13, headers: bytes = b"") -> socket.socket:
    """A WebSocket client that only does what the test tells it: no close replies, no pongs."""
    sock, head = upgrade(port, path, version, headers)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def masked(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload  # a zero mask key
