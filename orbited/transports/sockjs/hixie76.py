"""The hixie-76 (draft-00) WebSocket handshake and framing, for the SockJS conformance suite only.

Browsers stopped speaking hixie-76 in 2011 and it has no client-to-server
masking, so ``/sockjs`` never offers it.  The SockJS protocol suite still
checks it (``Websocket.test_haproxy``: response headers must be sent before
the 8-byte key arrives, as HAProxy requires), so the conformance server turns
it on.  Sans-IO: header values and bytes in, bytes and events out.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

KEY3_LENGTH = 8
_TEXT_START = 0x00
_TEXT_END = 0xFF
CLOSE_FRAME = b"\xff\x00"


class Hixie76Error(ValueError):
    """The peer broke the handshake or the framing; drop the connection."""


def _key_number(key: str) -> int:
    digits = "".join(c for c in key if c.isdigit())
    spaces = key.count(" ")
    if not digits or spaces == 0:
        raise Hixie76Error("Sec-WebSocket-Key has no digits or no spaces")
    number = int(digits)
    if number % spaces or number // spaces > 0xFFFFFFFF:
        raise Hixie76Error("Sec-WebSocket-Key is not a multiple of its space count")
    return number // spaces


def challenge_response(key1: str, key2: str, key3: bytes) -> bytes:
    """The 16 bytes the server sends once it has the client's 8-byte key3."""
    if len(key3) != KEY3_LENGTH:
        raise Hixie76Error("key3 must be 8 bytes")
    packed = struct.pack(">II", _key_number(key1), _key_number(key2)) + key3
    return hashlib.md5(packed, usedforsecurity=False).digest()


def check_keys(key1: str, key2: str) -> None:
    """Raise Hixie76Error now rather than after the response headers went out."""
    _key_number(key1)
    _key_number(key2)


def response_head(origin: str, location: str) -> bytes:
    """The 101 response headers, sent before key3 arrives."""
    lines = [
        "HTTP/1.1 101 WebSocket Protocol Handshake",
        "Upgrade: WebSocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Origin: {origin}",
        f"Sec-WebSocket-Location: {location}",
        "", "",
    ]
    return "\r\n".join(lines).encode("utf-8")


def encode_text(text: str) -> bytes:
    return b"\x00" + text.encode("utf-8") + b"\xff"


@dataclass(frozen=True)
class TextMessage:
    text: str


@dataclass(frozen=True)
class CloseRequested:
    """The peer sent the closing frame; answer with CLOSE_FRAME and drop the connection."""


class FrameDecoder:
    """Bytes in, :class:`TextMessage` / :class:`CloseRequested` out; bounded by ``max_message``."""

    def __init__(self, max_message: int):
        self.max_message = max_message
        self.buffer = bytearray()
        self.closed = False

    def feed(self, data: bytes) -> list[TextMessage | CloseRequested]:
        if self.closed:
            return []
        self.buffer += data
        events: list[TextMessage | CloseRequested] = []
        buffer = self.buffer
        while buffer:
            kind = buffer[0]
            if kind == _TEXT_START:
                end = buffer.find(_TEXT_END, 1)
                if end < 0:
                    if len(buffer) - 1 > self.max_message:
                        raise Hixie76Error(f"message longer than {self.max_message} bytes")
                    break
                try:
                    text = bytes(buffer[1:end]).decode("utf-8")
                except UnicodeDecodeError:
                    raise Hixie76Error("text frame is not UTF-8") from None
                del buffer[:end + 1]
                events.append(TextMessage(text))
            elif kind == _TEXT_END:
                if len(buffer) < 2:
                    break
                if buffer[1] != 0x00:
                    raise Hixie76Error("length-prefixed frames are not supported")
                self.closed = True
                buffer.clear()
                events.append(CloseRequested())
            else:
                raise Hixie76Error(f"unknown frame type 0x{kind:02x}")
        return events
