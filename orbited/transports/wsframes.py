"""The RFC 6455 frames a TCPSocket uses after its handshake, without autobahn's general machinery.

After ``1``, a browser's TCPSocket sends only binary messages, and browsers
send each as one masked frame.  Parsing exactly that case here, and leaving
every other case to autobahn (which stays the reference for the protocol),
halves the per-message cost.  Pure functions over bytes: no I/O, no state.
"""

from __future__ import annotations

from autobahn.websocket.xormasker import create_xor_masker

SMALL = 512  # below this, Python's big-int XOR beats the native masker's call overhead


def unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return b""
    if n < SMALL:
        key = int.from_bytes((mask * ((n >> 2) + 1))[:n], "little")
        return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")
    return create_xor_masker(mask, n).process(payload)


def binary_frame_header(length: int) -> bytes:
    """FIN + binary opcode, unmasked (server to client), with the minimal length encoding."""
    if length < 126:
        return bytes((0x82, length))
    if length < 65536:
        return b"\x82\x7e" + length.to_bytes(2, "big")
    return b"\x82\x7f" + length.to_bytes(8, "big")


def take_text_frame(data: bytes, limit: int = 0) -> tuple[bytes | None, int]:
    """The payload of one small, complete, masked, final text frame of valid UTF-8 at the start of
    ``data`` (a TCPSocket's ``host:port``), and how many bytes it used; ``(None, 0)`` for anything
    else, which the caller hands to a full WebSocket implementation to judge."""
    if len(data) < 6 or data[0] != 0x81:
        return None, 0
    length = data[1] ^ 0x80  # the mask bit must be set: then this is the 7-bit length
    if length >= 126 or (limit and length > limit):
        return None, 0
    end = 6 + length
    if end > len(data):
        return None, 0
    payload = unmask(data[6:end], data[2:6])
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return None, 0
    return payload, end


def take_binary_frames(data: bytes, limit: int = 0) -> tuple[list[bytes], int]:
    """Payloads of the complete, masked, final binary frames at the start of ``data``.

    Returns the payloads and how many bytes they used; it stops (without
    judging) at the first frame that is anything else: another opcode, not
    final, reserved bits set, unmasked, a non-minimal or over-``limit``
    length, or not all there yet.  The caller hands the rest to a full
    WebSocket implementation, which decides what it is.
    """
    payloads: list[bytes] = []
    pos = 0
    end_of_data = len(data)
    while end_of_data - pos >= 6:
        if data[pos] != 0x82:
            break
        second = data[pos + 1]
        if not second & 0x80:
            break
        length = second & 0x7F
        start = pos + 2
        if length == 126:
            if end_of_data - start < 6:
                break
            length = int.from_bytes(data[start:start + 2], "big")
            if length < 126:
                break
            start += 2
        elif length == 127:
            if end_of_data - start < 12:
                break
            length = int.from_bytes(data[start:start + 8], "big")
            if length < 65536 or length >= 1 << 63:
                break
            start += 8
        if limit and length > limit:
            break
        body = start + 4
        end = body + length
        if end > end_of_data:
            break
        payloads.append(unmask(data[body:end], data[start:body]))
        pos = end
    return payloads, pos
