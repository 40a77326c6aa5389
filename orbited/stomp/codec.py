"""STOMP frames to bytes and back, for STOMP 1.0, 1.1 and 1.2.

Pure bytes in, frames out, and the reverse: no sockets, no clock, no
logging.  The parser takes a stream in arbitrary pieces, honours
``content-length`` (so bodies may hold NULs), skips the EOLs allowed between
frames (heart-beats), applies each version's header escaping, and enforces
size limits before it buffers more than they allow.  Anything that is not a
frame raises :class:`FrameError`, never another exception.

Version rules, as the specifications state them:

- 1.0: lines end in LF; no header escaping.  We also accept CR LF, as many
  1.0 clients sent it.
- 1.1: lines end in LF; ``\\n``, ``\\c`` and ``\\\\`` are escapes in header
  names and values; a CR is an ordinary octet.
- 1.2: lines end in LF or CR LF; ``\\r`` is an escape too.
- Every version: CONNECT, STOMP and CONNECTED frames are never escaped;
  an undefined escape is a fatal protocol error; the first of repeated
  headers wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from orbited.stomp.errors import FrameError

V10, V11, V12 = "1.0", "1.1", "1.2"
VERSIONS = (V10, V11, V12)

UNESCAPED_COMMANDS = frozenset({"CONNECT", "STOMP", "CONNECTED"})
BODY_COMMANDS = frozenset({"SEND", "MESSAGE", "ERROR"})


@dataclass(frozen=True)
class Limits:
    """What one frame may hold; beyond these the peer gets an ERROR and is closed."""

    max_frame_size: int = 1048576  # header block plus body, in bytes
    max_headers: int = 128
    max_header_size: int = 8192  # one header line, in bytes


@dataclass
class Frame:
    """One STOMP frame.  ``headers`` keeps the first value of each name, in order."""

    command: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


# --------------------------------------------------------------------------
# header escaping

_ESCAPES_11 = {"\\": "\\\\", "\n": "\\n", ":": "\\c"}
_ESCAPES_12 = {**_ESCAPES_11, "\r": "\\r"}
_UNESCAPES_11 = {"\\\\": "\\", "\\n": "\n", "\\c": ":"}
_UNESCAPES_12 = {**_UNESCAPES_11, "\\r": "\r"}
_SPECIAL_11 = re.compile(r"[\\\n:]")
_SPECIAL_12 = re.compile(r"[\\\n:\r]")
_ESCAPE_SEQ = re.compile(r"\\(.|$)", re.DOTALL)


def escape(text: str, version: str | None) -> str:
    """A header name or value as it goes on the wire for ``version``.

    1.0 has no escaping, so CR and LF (which would end the line) become
    spaces there; ``None`` (an un-negotiated connection) is treated as 1.0.
    """
    if version == V12:
        return _SPECIAL_12.sub(lambda m: _ESCAPES_12[m.group(0)], text) if _SPECIAL_12.search(text) else text
    if version == V11:
        return _SPECIAL_11.sub(lambda m: _ESCAPES_11[m.group(0)], text) if _SPECIAL_11.search(text) else text
    if "\n" in text or "\r" in text:
        return text.replace("\r", " ").replace("\n", " ")
    return text


def escape_name(name: str, version: str | None) -> str:
    """Like :func:`escape`; a 1.0 name cannot hold ':' either, so it becomes '_'."""
    if version in (V11, V12):
        return escape(name, version)
    return escape(name, version).replace(":", "_")


def unescape(raw: str, version: str | None) -> str:
    """Undo :func:`escape`; an undefined escape such as ``\\t`` raises FrameError."""
    if "\\" not in raw or version not in (V11, V12):
        return raw
    table = _UNESCAPES_12 if version == V12 else _UNESCAPES_11

    def replace(match: re.Match[str]) -> str:
        sequence = match.group(0)
        try:
            return table[sequence]
        except KeyError:
            shown = sequence if match.group(1) else "a trailing '\\'"
            raise FrameError("invalid header escape",
                             f"'{shown}' is not a STOMP {version} escape (use \\\\, \\n, \\c"
                             + (", \\r" if version == V12 else "") + ")") from None

    return _ESCAPE_SEQ.sub(replace, raw)


# --------------------------------------------------------------------------
# encoding


def encode_headers(headers: dict[str, str], version: str | None, escaped: bool = True) -> bytes:
    """``name:value\\n`` lines; ``escaped=False`` for CONNECT/CONNECTED frames."""
    if escaped and version in (V11, V12):
        lines = [f"{escape(k, version)}:{escape(v, version)}\n" for k, v in headers.items()]
    else:
        lines = [f"{escape_name(k, None)}:{escape(v, None)}\n" for k, v in headers.items()]
    return "".join(lines).encode("utf-8", "surrogateescape")


def encode_frame(frame: Frame, version: str | None) -> bytes:
    """The wire form of ``frame``.  Frames with a body get an exact ``content-length``."""
    headers = frame.headers
    if frame.body or "content-length" in headers:
        headers = {k: v for k, v in headers.items() if k != "content-length"}
        headers["content-length"] = str(len(frame.body))
    escaped = frame.command not in UNESCAPED_COMMANDS
    return b"".join((frame.command.encode("ascii"), b"\n", encode_headers(headers, version, escaped),
                     b"\n", frame.body, b"\0"))


# --------------------------------------------------------------------------
# parsing

_EOL_OCTETS = re.compile(rb"[\r\n]*")
_CR = 13
MAX_COMMAND = 64


def _check_command(raw: bytes) -> str:
    if not raw or len(raw) > MAX_COMMAND or not raw.isascii() or not raw.isalpha():
        shown = repr(raw[:40])[2:-1]  # printable, whatever the bytes were
        raise FrameError("malformed frame", f"'{shown}' is not a STOMP command")
    return raw.decode("ascii")


class FrameParser:
    """A stream of bytes in, whole frames out.

    ``feed(data)``, then call ``next_frame()`` until it returns None.  Set
    ``version`` once a version is negotiated: before that (the CONNECT
    frame) nothing is unescaped and CR LF is accepted.  The buffer never
    holds more than one frame's limit beyond what the caller fed in one go.
    """

    def __init__(self, limits: Limits | None = None, version: str | None = None):
        self.limits = limits or Limits()
        self.version = version
        self._buffer = bytearray()
        self._pos = 0
        # The frame being read: its header block is parsed once, then we wait for the body.
        self._pending: tuple[str, dict[str, str], int, int] | None = None  # command, headers, body start, length
        self._scanned = 0  # for bodies without content-length: how far the NUL search got

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._pos

    def feed(self, data: bytes) -> None:
        self._compact()
        self._buffer += data

    def _compact(self) -> None:
        """Drop the bytes of frames already read."""
        if self._pos:
            del self._buffer[: self._pos]
            if self._pending is not None:
                command, headers, start, length = self._pending
                self._pending = (command, headers, start - self._pos, length)
                self._scanned = max(0, self._scanned - self._pos)
            self._pos = 0

    def frames(self) -> list[Frame]:
        """Every complete frame buffered now (convenience for tests and simple callers)."""
        out = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None once none is left.  On None the bytes of the frames read
        go at once, not at the next ``feed``: a client that sent one large message and then
        stayed quiet kept all of it in its buffer (200 idle clients after a 500 KB SEND each
        held 100 MB)."""
        if self._pending is None and not self._read_header_block():
            self._compact()
            return None
        frame = self._read_body()
        if frame is None:
            self._compact()
        return frame

    # ------------------------------------------------------------------

    def _crlf(self) -> bool:
        return self.version != V11

    def _skip_eols(self) -> None:
        """Skip heart-beats and the EOLs after a frame: LF, or CR LF (a lone CR is not one).
        Searches in C, not a loop over octets: that cost about 100 ns of the reactor's one
        thread per octet, so a client sending nothing but EOLs (each a valid heart-beat) made
        the broker parse only 5 MB/s and kept every other client waiting meanwhile."""
        buf, pos = self._buffer, self._pos
        end = _EOL_OCTETS.match(buf, pos).end()
        if buf.find(b"\r", pos, end) >= 0:  # a CR is an EOL only before an LF
            lone = buf.find(b"\r\r", pos, end)
            if lone >= 0:
                end = lone
            elif buf[end - 1] == _CR:
                end -= 1
        self._pos = end

    def _read_header_block(self) -> bool:
        self._skip_eols()
        buf, pos = self._buffer, self._pos
        if pos >= len(buf):
            return False
        limits = self.limits
        header_cap = min(limits.max_frame_size, (limits.max_headers + 1) * (limits.max_header_size + 2) + 2)
        end = buf.find(b"\n\n", pos, pos + header_cap)
        if self._crlf():
            end_crlf = buf.find(b"\n\r\n", pos, pos + header_cap)
            if end_crlf >= 0 and (end < 0 or end_crlf < end):
                end = end_crlf
                body_start = end + 3
            else:
                body_start = end + 2
        else:
            body_start = end + 2
        if end < 0:
            self._check_partial_header(pos, header_cap)
            return False
        block = bytes(buf[pos:end])
        command, headers = self._parse_header_block(block)
        length = -1
        raw_length = headers.get("content-length")
        if raw_length is not None:
            length = whole_number(raw_length)
            if length is None:
                raise FrameError("invalid content-length", f"content-length '{raw_length}' is not a number of octets")
            if body_start - pos + length > limits.max_frame_size:
                raise FrameError("frame too large",
                                 f"content-length {length} exceeds the limit of {limits.max_frame_size} octets")
        self._pending = (command, headers, body_start, length)
        self._scanned = body_start
        return True

    def _check_partial_header(self, pos: int, header_cap: int) -> None:
        buf = self._buffer
        available = len(buf) - pos
        # Reject what is not STOMP (TLS, HTTP, noise) as soon as its first line shows it.
        first_lf = buf.find(b"\n", pos, pos + MAX_COMMAND + 2)
        if first_lf < 0:
            if available > MAX_COMMAND + 1:
                _check_command(bytes(buf[pos: pos + MAX_COMMAND + 1]))
        else:
            line = bytes(buf[pos:first_lf])
            _check_command(line[:-1] if line.endswith(b"\r") and self._crlf() else line)
        if available >= header_cap:
            raise FrameError("frame headers too large",
                             f"no end of headers within {header_cap} octets")
        # A single line over the limit need not wait for the rest of the block.
        last_lf = buf.rfind(b"\n", pos)
        line_start = pos if last_lf < 0 else last_lf + 1
        if len(buf) - line_start > self.limits.max_header_size + 1:
            raise FrameError("header line too long",
                             f"a header line exceeds {self.limits.max_header_size} octets")
        newlines = buf.count(b"\n", pos)
        if newlines > self.limits.max_headers + 1:
            raise FrameError("too many headers", f"more than {self.limits.max_headers} headers in one frame")

    def _parse_header_block(self, block: bytes) -> tuple[str, dict[str, str]]:
        limits = self.limits
        lines = block.split(b"\n")
        if self._crlf():
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        command = _check_command(lines[0])
        if b"\0" in block:  # passed on in a MESSAGE, it would end that frame early for every subscriber
            raise FrameError("malformed header", "a header holds a NUL octet")
        if len(lines) - 1 > limits.max_headers:
            raise FrameError("too many headers", f"more than {limits.max_headers} headers in one frame")
        escaped = command not in UNESCAPED_COMMANDS and self.version in (V11, V12)
        version = self.version
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if len(line) > limits.max_header_size:
                raise FrameError("header line too long", f"a header line exceeds {limits.max_header_size} octets")
            name, sep, value = line.partition(b":")
            if not sep:
                shown = repr(line[:80])[2:-1]
                raise FrameError("malformed header", f"header line '{shown}' has no ':'")
            if not name:
                raise FrameError("malformed header", "a header line has an empty name")
            try:
                key = name.decode("utf-8")
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise FrameError("malformed header", "a header is not valid UTF-8") from None
            if escaped:
                key = unescape(key, version)
                text = unescape(text, version)
            if key not in headers:
                headers[key] = text
        return command, headers

    def _read_body(self) -> Frame | None:
        command, headers, start, length = self._pending  # type: ignore[misc]
        buf = self._buffer
        if length >= 0:
            end = start + length
            if len(buf) <= end:
                return None
            if buf[end] != 0:
                raise FrameError("malformed frame",
                                 f"the body is longer than its content-length {length} (no NUL after it)")
        else:
            end = buf.find(b"\0", self._scanned)
            if end < 0:
                self._scanned = len(buf)
                if len(buf) - self._pos > self.limits.max_frame_size:
                    raise FrameError("frame too large",
                                     f"frame exceeds the limit of {self.limits.max_frame_size} octets")
                return None
            if end - self._pos > self.limits.max_frame_size:
                raise FrameError("frame too large", f"frame exceeds the limit of {self.limits.max_frame_size} octets")
        body = bytes(buf[start:end])
        self._pos = end + 1
        self._pending = None
        return Frame(command, headers, body)


def whole_number(text: str, most: int = 2**63 - 1) -> int | None:
    """``text`` as a whole number of ASCII digits up to ``most``, else None.

    ``str.isdigit`` also takes '²' and other Unicode digits, which ``int``
    then refuses with a ValueError; and a number of 400 digits overflows the
    float of a timer.  Either was an 'internal error' with a traceback in the
    log, where the client had sent an invalid header."""
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if value <= most else None
