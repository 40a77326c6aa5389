"""The Orbited 0.7 packet codec: bytes in, packets out, and back (sans-IO).

A packet is a list of arguments; each argument goes on the wire as a flag
(``1``: more arguments follow, ``0``: last one), its length in decimal, a
comma and the raw bytes.  ``[b"1", b"opt", b"pingTimeout,30"]`` is
``11,113,opt014,pingTimeout,30``.  The same encoding runs both ways on
xhrstream, longpoll and poll; htmlfile and sse carry the same packets as
JSON arrays of strings.

Nothing here touches a socket, a clock or a session.  Malformed input raises
:class:`PacketError` and nothing else, whatever the bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

# An argument length longer than this many digits is garbage, not a packet
# (ten digits already allow 9 GB, far beyond any body we accept).
MAX_LENGTH_DIGITS = 10
# Arguments in one packet: 0.7 packets have two or three; a few spare.
MAX_ARGUMENTS = 8

Packet = list[bytes]


class PacketError(ValueError):
    """The bytes are not Orbited 0.7 packets; ``status`` is the HTTP answer for them."""

    status = 400


def encode_packet(args: Sequence[bytes]) -> bytes:
    """One packet, e.g. ``[b"4", b"ping"]`` -> ``b"11,404,ping"``."""
    if not args:
        raise PacketError("a packet has at least one argument")
    last = len(args) - 1
    return b"".join(b"%s%d,%s" % (b"0" if i == last else b"1", len(arg), arg)
                    for i, arg in enumerate(args))


def encode_packets(packets: Iterable[Sequence[bytes]]) -> bytes:
    """Packets are simply concatenated."""
    return b"".join(encode_packet(packet) for packet in packets)


class PacketDecoder:
    """Incremental decoder: ``feed(bytes)`` returns the packets it completed.

    Split input anywhere; the decoder keeps the unfinished tail.  With
    ``skip=b" x"`` it ignores the xhrstream prelude spaces and ``x``
    heartbeats that a server writes between packets (never inside one).
    """

    __slots__ = ("_args", "_buffer", "_skip", "max_argument")

    def __init__(self, skip: bytes = b"", max_argument: int = 1 << 30):
        self._buffer = bytearray()
        self._args: list[bytes] = []
        self._skip = skip
        self.max_argument = max_argument

    @property
    def pending(self) -> bool:
        """True while a packet has started and not finished."""
        return bool(self._args) or any(b not in self._skip for b in self._buffer)

    def feed(self, data: bytes) -> list[Packet]:
        buffer = self._buffer
        buffer += data
        packets: list[Packet] = []
        pos = 0
        size = len(buffer)
        skip = self._skip
        while pos < size:
            if not self._args and skip:
                while pos < size and buffer[pos] in skip:
                    pos += 1
                if pos == size:
                    break
            flag = buffer[pos]
            if flag not in (0x30, 0x31):  # b"0", b"1"
                raise PacketError(f"expected flag 0 or 1 at byte {pos}, found {bytes([flag])!r}")
            comma = buffer.find(b",", pos + 1, pos + 2 + MAX_LENGTH_DIGITS)
            if comma < 0:
                if size - pos - 1 > MAX_LENGTH_DIGITS:
                    raise PacketError("argument length is not a number followed by ','")
                digits = bytes(buffer[pos + 1 : size])
                if digits and not digits.isdigit():
                    raise PacketError(f"argument length {digits!r} is not a number")
                break
            digits = bytes(buffer[pos + 1 : comma])
            if not digits.isdigit():
                raise PacketError(f"argument length {digits!r} is not a number")
            length = int(digits)
            if length > self.max_argument:
                raise PacketError(f"argument of {length} bytes is over the limit of {self.max_argument}")
            end = comma + 1 + length
            if end > size:
                break
            self._args.append(bytes(buffer[comma + 1 : end]))
            pos = end
            if flag == 0x30:
                packets.append(self._args)
                self._args = []
            elif len(self._args) >= MAX_ARGUMENTS:
                raise PacketError(f"packet has more than {MAX_ARGUMENTS} arguments")
        del buffer[:pos]
        return packets


def decode_packets(data: bytes, max_argument: int = 1 << 30) -> list[Packet]:
    """A whole body: every packet, or PacketError if anything is left over.

    The same grammar and errors as :class:`PacketDecoder` (tests/test_legacy_codec.py
    checks them against each other on arbitrary bytes), but over immutable bytes in one
    pass: every upstream POST body goes through here, and the incremental decoder's
    bytearray bookkeeping was the largest single cost of a /tcp round trip in Python.
    """
    packets: list[Packet] = []
    args: list[bytes] = []
    find = data.find
    pos = 0
    size = len(data)
    while pos < size:
        flag = data[pos]
        if flag != 0x30 and flag != 0x31:  # b"0", b"1"
            raise PacketError(f"expected flag 0 or 1 at byte {pos}, found {bytes([flag])!r}")
        comma = find(b",", pos + 1, pos + 2 + MAX_LENGTH_DIGITS)
        if comma < 0:
            if size - pos - 1 > MAX_LENGTH_DIGITS:
                raise PacketError("argument length is not a number followed by ','")
            digits = data[pos + 1 :]
            if digits and not digits.isdigit():
                raise PacketError(f"argument length {digits!r} is not a number")
            raise PacketError("body ends inside a packet")
        digits = data[pos + 1 : comma]
        if not digits.isdigit():
            raise PacketError(f"argument length {digits!r} is not a number")
        length = int(digits)
        if length > max_argument:
            raise PacketError(f"argument of {length} bytes is over the limit of {max_argument}")
        end = comma + 1 + length
        if end > size:
            raise PacketError("body ends inside a packet")
        args.append(data[comma + 1 : end])
        pos = end
        if flag == 0x30:
            packets.append(args)
            args = []
        elif len(args) >= MAX_ARGUMENTS:
            raise PacketError(f"packet has more than {MAX_ARGUMENTS} arguments")
    if args:
        raise PacketError("body ends inside a packet")
    return packets


# --------------------------------------------------------------------------
# htmlfile and sse: the same packets as JSON arrays of strings


def packets_json(packets: Iterable[Sequence[bytes]]) -> bytes:
    """``[["1","opt","pingTimeout,30"],["2","open"]]``, safe inside a <script> element.

    Arguments are ASCII on the server side (ids, names, base64, reasons); any
    other byte is decoded as Latin-1 so that nothing can fail here.
    """
    text = json.dumps([[arg.decode("latin-1") for arg in packet] for packet in packets],
                      separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode("ascii")
