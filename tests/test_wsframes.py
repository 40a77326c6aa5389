"""The /ws fast lane: it takes exactly the frames it should, and leaves every other byte."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from orbited.transports.wsframes import binary_frame_header, take_binary_frames, take_text_frame, unmask


def masked_frame(payload: bytes, opcode: int = 2, fin: bool = True, mask: bytes | None = None,
                 rsv: int = 0) -> bytes:
    """A client frame built the long way round (RFC 6455 section 5.2)."""
    mask = mask if mask is not None else os.urandom(4)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_unmask_matches_the_definition_at_every_size():
    for n in (0, 1, 3, 4, 5, 511, 512, 513, 70000):
        payload, mask = os.urandom(n), os.urandom(4)
        assert unmask(payload, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_takes_every_complete_binary_frame(payloads, data):
    wire = b"".join(masked_frame(p) for p in payloads)
    cut = data.draw(st.integers(0, len(wire)))
    taken, used = take_binary_frames(wire[:cut])
    assert taken == payloads[: len(taken)]
    # what is left starts exactly at a frame boundary, and is incomplete
    boundaries = [0]
    for p in payloads:
        boundaries.append(boundaries[-1] + len(masked_frame(p, mask=b"\0\0\0\0")))
    assert used in boundaries
    assert boundaries.index(used) == len(taken)
    rest, _ = take_binary_frames(wire[used:cut])
    assert rest == []


def test_big_frames_use_the_long_lengths():
    for n in (125, 126, 65535, 65536, 300000):
        payload = os.urandom(n)
        assert take_binary_frames(masked_frame(payload)) == ([payload], len(masked_frame(payload, mask=b"abcd")))


def test_stops_at_anything_else():
    ok = masked_frame(b"first")
    for other in (masked_frame(b"text", opcode=1), masked_frame(b"frag", fin=False),
                  masked_frame(b"ping", opcode=9), masked_frame(b"close", opcode=8),
                  masked_frame(b"rsv", rsv=4), b"\x82\x05hello",  # unmasked
                  b"\x82\xfe\x00\x05" + b"mask" + b"12345",  # 16-bit length used for 5 bytes
                  masked_frame(b"x" * 200)):
        taken, used = take_binary_frames(ok + other, limit=100)
        assert taken == [b"first"] and used == len(ok)


def test_server_frame_headers():
    assert binary_frame_header(5) == b"\x82\x05"
    assert binary_frame_header(126) == b"\x82\x7e\x00\x7e"
    assert binary_frame_header(65536) == b"\x82\x7f" + (65536).to_bytes(8, "big")


@settings(max_examples=30)
@given(st.binary(max_size=5000))
def test_garbage_never_raises(data):
    taken, used = take_binary_frames(data, limit=1000)
    assert 0 <= used <= len(data) and all(len(p) <= 1000 for p in taken)


def test_takes_a_small_whole_text_frame_of_valid_utf8():
    handshake = "[::1]:8001 héllo 𝄞".encode()
    frame = masked_frame(handshake, opcode=1)
    assert take_text_frame(frame) == (handshake, len(frame))
    after = masked_frame(b"bytes")
    assert take_text_frame(frame + after) == (handshake, len(frame))  # what follows is left to the caller
    assert take_text_frame(masked_frame(b"", opcode=1)) == (b"", 6)


def test_leaves_every_other_text_frame_to_autobahn():
    ok = b"127.0.0.1:8001"
    for other in (
        masked_frame(b"\xed\xa0\x80", opcode=1),  # a surrogate: not UTF-8 (autobahn closes with 1007)
        masked_frame(b"caf\xc3", opcode=1),  # cut inside a character
        masked_frame(ok, opcode=1)[:-1],  # not all there yet
        masked_frame(ok, opcode=1, fin=False),  # a first fragment
        masked_frame(ok, opcode=1, rsv=4),  # a reserved bit
        bytes((0x81, len(ok))) + ok,  # unmasked
        masked_frame(b"x" * 126, opcode=1),  # a 16-bit length: never a handshake
        masked_frame(ok),  # binary
    ):
        assert take_text_frame(other) == (None, 0), other
    assert take_text_frame(masked_frame(ok, opcode=1), limit=len(ok) - 1) == (None, 0)  # over ws.max_message_size
    assert take_text_frame(masked_frame(ok, opcode=1), limit=len(ok)) == (ok, 6 + len(ok))


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_text_garbage_never_raises(data):
    text, used = take_text_frame(data, limit=1000)
    assert (text is None and used == 0) or 6 <= used <= len(data)
