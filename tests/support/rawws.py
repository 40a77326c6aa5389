"""A WebSocket client by hand, for tests that must break the protocol or leave a close unanswered."""

from __future__ import annotations

import socket
import struct


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
    """One client frame (FIN set) with a zero mask key, so the payload goes as it is."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return head + b"\0\0\0\0" + payload


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """The opcode and payload of the next (unmasked) server frame."""
    first, second = _exactly(sock, 2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", _exactly(sock, 2))[0]
    elif size == 127:
        size = struct.unpack("!Q", _exactly(sock, 8))[0]
    return first & 0x0F, _exactly(sock, size)


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError(data)
        data += chunk
    return data
