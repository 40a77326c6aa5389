"""HTTP/1.1 requests from bytes (sans-IO): ``feed(bytes)``, then ``next_event()`` until NEED_DATA.

No sockets, no clock, no regular expressions: every check is a bounded
``find``/``split``/``translate`` over bytes already in memory, so the cost of
a request is linear in its size whatever the peer sends.

Decisions (RFC 9112 leaves some to the server; docs/http.md lists them too):

- Line ends: CRLF or a bare LF (RFC 9112 2.2 allows a recipient to accept
  LF; twisted.web did).  A CR anywhere else in the head is a 400.
- Empty lines before a request line are skipped (old browsers sent a CRLF
  after a POST body).
- obs-fold (a header line starting with a space or tab) is a 400: no
  browser sends it, and servers that unfold it disagree with proxies that
  do not, which is how requests get smuggled.
- Whitespace between a field name and its colon is a 400 (RFC 9112 5.1).
- Request targets: origin-form (``/path?query``), absolute-form
  (``http://host/path``), ``*`` (OPTIONS only); authority-form only for
  CONNECT.  Bytes outside visible ASCII are a 400.
- Versions: ``HTTP/1.0`` and ``HTTP/1.1``; another ``HTTP/x.y`` is a 505.
- An HTTP/1.1 request needs exactly one Host header (400 otherwise).
- Framing: Transfer-Encoding wins over nothing: a request with both it and
  Content-Length is a 400 (a smuggling attempt or a broken client); a
  transfer coding other than a lone ``chunked`` is a 501; Transfer-Encoding
  on HTTP/1.0 is a 400; several Content-Length values must agree.
- Limits: request line ``max_request_line`` (414), whole head ``max_head``
  and ``max_headers`` fields (431), body ``max_body`` (413, raised as soon
  as a Content-Length or the chunk sizes say so, before reading the body).
- Keep-alive: HTTP/1.1 unless ``Connection: close``; HTTP/1.0 only with
  ``Connection: keep-alive``.
- Pipelining: after :class:`EndOfRequest` the parser is paused (it returns
  NEED_DATA and keeps what it is fed) until :meth:`next_request`, so
  requests are answered strictly in order and the server decides when to
  look at the next one.
"""

from __future__ import annotations

from dataclasses import dataclass

from orbited.http.chunked import CHUNKED_DONE, ChunkedReader
from orbited.http.events import (
    END_OF_REQUEST,
    NEED_DATA,
    BodyData,
    Event,
    RequestError,
    RequestHead,
)

# RFC 9110 5.6.2 tchar
TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# visible ASCII: what a request target may contain
TARGET_CHARS = bytes(range(0x21, 0x7F))
# field-value: visible ASCII, obs-text, space and tab; a head is that plus line ends
VALUE_CHARS = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t"
HEAD_CHARS = VALUE_CHARS + b"\r\n"
DIGITS = b"0123456789"
MAX_LENGTH_DIGITS = 18  # a Content-Length longer than this is nonsense, and int() of it is not free
MAX_LEADING_EMPTY_LINES = 8
DEFAULT_MAX_BODY = 16 * 1024 * 1024

_HEAD, _BODY_LENGTH, _BODY_CHUNKED, _END, _DONE, _ERROR = range(6)
SUPPORTED_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one request; what a peer can make the server hold in memory."""

    max_head: int = 8192  # request line + fields + line ends -> 431
    max_request_line: int = 8192  # -> 414
    max_headers: int = 100  # fields -> 431
    max_body: int = DEFAULT_MAX_BODY  # -> 413


class RequestParser:
    """One connection's requests, one at a time; see the module docstring for the rules."""

    __slots__ = ("_body_left", "_buffer", "_chunked", "_error", "_scanned", "_state", "limits")

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self._buffer = b""
        self._state = _HEAD
        self._scanned = 0  # how far the head buffer was already searched for its end
        self._body_left = 0
        self._chunked: ChunkedReader | None = None
        self._error: RequestError | None = None

    # --- input

    def feed(self, data: bytes) -> None:
        """Add bytes from the peer.  Never raises; errors come from :meth:`next_event`."""
        if self._buffer:
            self._buffer += data
        else:
            self._buffer = data

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet turned into events."""
        return len(self._buffer)

    @property
    def head_started(self) -> bool:
        """True when bytes of a request head are waiting for the rest of it."""
        return self._state == _HEAD and bool(self._buffer)

    @property
    def in_body(self) -> bool:
        return self._state in (_BODY_LENGTH, _BODY_CHUNKED)

    def peek_buffer(self) -> bytes:
        """What :meth:`take_buffer` would return, left in place."""
        return self._buffer

    def take_buffer(self) -> bytes:
        """Everything fed and not parsed (after a head: what followed it), for a protocol switch."""
        data, self._buffer = self._buffer, b""
        self._state = _DONE
        return data

    def next_request(self) -> None:
        """The response to the last request is complete; parse the next one."""
        if self._state == _DONE:
            self._state = _HEAD
            self._scanned = 0

    # --- output

    def next_event(self) -> Event:
        """The next event, or NEED_DATA.  Raises :class:`RequestError` (and again on every later call)."""
        if self._error is not None:
            raise self._error
        try:
            state = self._state
            if state == _HEAD:
                return self._head()
            if state == _BODY_LENGTH:
                return self._body_length()
            if state == _BODY_CHUNKED:
                return self._body_chunked()
            if state == _END:
                self._state = _DONE
                return END_OF_REQUEST
            return NEED_DATA
        except RequestError as error:
            self._state = _ERROR
            self._error = error
            self._buffer = b""
            raise

    # --- the head

    def _head(self) -> Event:
        buffer = self._buffer
        if not buffer:
            return NEED_DATA
        if buffer[0] in (0x0D, 0x0A):
            buffer = self._buffer = _skip_empty_lines(buffer)
            if not buffer or buffer == b"\r":
                return NEED_DATA
        limits = self.limits
        start = max(0, self._scanned - 2)
        end = _head_end(buffer, start, limits.max_head)
        if end < 0:
            self._scanned = len(buffer)
            if len(buffer) > limits.max_request_line and buffer.find(b"\n", 0, limits.max_request_line + 1) < 0:
                raise RequestError(414, f"request line over {limits.max_request_line} bytes")
            if len(buffer) >= limits.max_head:
                raise RequestError(431, f"request head over {limits.max_head} bytes")
            return NEED_DATA
        raw = buffer[:end]
        self._buffer = buffer[end:]
        self._scanned = 0
        head = self._parse_head(raw)
        if head.chunked:
            self._state = _BODY_CHUNKED
            self._chunked = ChunkedReader(limits.max_body, max_trailer=limits.max_head,
                                          max_trailers=limits.max_headers)
        elif head.content_length:
            self._state = _BODY_LENGTH
            self._body_left = head.content_length
        else:
            self._state = _END
        return head

    def _parse_head(self, raw: bytes) -> RequestHead:
        limits = self.limits
        # One pass over the whole head for characters no part of it may hold,
        # instead of one per field; then every CR must start a CRLF.
        if raw.translate(None, HEAD_CHARS):
            raise RequestError(400, "control character in the request head")
        crlf = raw.count(b"\r\n")
        if raw.count(b"\r") != crlf:
            raise RequestError(400, "bare CR in the request head")
        if crlf == raw.count(b"\n"):
            lines = raw[:-4].split(b"\r\n")
        else:  # some bare LF line ends
            lines = [line[:-1] if line[-1:] == b"\r" else line for line in raw.split(b"\n")]
            del lines[-2:]
        request_line = lines[0]
        if len(request_line) > limits.max_request_line:
            raise RequestError(414, f"request line over {limits.max_request_line} bytes")
        method, target, version = _request_line(request_line)
        if len(lines) - 1 > limits.max_headers:
            raise RequestError(431, f"more than {limits.max_headers} header fields")
        headers: dict[bytes, list[bytes]] = {}
        for index in range(1, len(lines)):
            name, colon, value = lines[index].partition(b":")
            if not colon or not name or name.translate(None, TOKEN_CHARS):
                raise RequestError(400, _field_problem(lines[index], name, colon))
            value = value.strip(b" \t")
            name = name.lower()
            existing = headers.get(name)
            if existing is None:
                headers[name] = [value]
            else:
                existing.append(value)
        return _framing(method, target, version, headers, raw, limits.max_body)

    # --- bodies

    def _body_length(self) -> Event:
        buffer = self._buffer
        if not buffer:
            return NEED_DATA
        left = self._body_left
        if len(buffer) <= left:
            self._buffer = b""
            self._body_left = left - len(buffer)
            if not self._body_left:
                self._state = _END
            return BodyData(buffer)
        self._buffer = buffer[left:]
        self._body_left = 0
        self._state = _END
        return BodyData(buffer[:left])

    def _body_chunked(self) -> Event:
        reader = self._chunked
        assert reader is not None
        data, self._buffer = reader.read(self._buffer)
        if data is None:
            return NEED_DATA
        if data is CHUNKED_DONE:
            self._chunked = None
            self._state = _DONE
            return END_OF_REQUEST
        return BodyData(data)  # type: ignore[arg-type]


def _field_problem(line: bytes, name: bytes, colon: bytes) -> str:
    if line[:1] in (b" ", b"\t"):
        return "obsolete line folding in a header field"
    if not colon:
        return "header line without a colon"
    return "bad header field name"


def _skip_empty_lines(buffer: bytes) -> bytes:
    """Drop empty lines before a request line; a lone trailing CR waits for its LF."""
    for _ in range(MAX_LEADING_EMPTY_LINES):
        if buffer[:2] == b"\r\n":
            buffer = buffer[2:]
        elif buffer[:1] == b"\n":
            buffer = buffer[1:]
        elif buffer == b"\r":
            return buffer
        elif buffer[:1] == b"\r":
            raise RequestError(400, "bare CR before the request line")
        else:
            return buffer
    if buffer[:1] in (b"\r", b"\n"):
        raise RequestError(400, "too many empty lines before the request line")
    return buffer


def _head_end(buffer: bytes, start: int, limit: int) -> int:
    """Index just past the empty line that ends the head, or -1; looks no further than ``limit``."""
    crlf = buffer.find(b"\n\r\n", start, limit)
    lf = buffer.find(b"\n\n", start, limit)
    if crlf < 0:
        return -1 if lf < 0 else lf + 2
    if lf < 0 or crlf < lf:
        return crlf + 3
    return lf + 2


def _request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    parts = line.split(b" ")
    if len(parts) != 3:
        if b"\r" in line:
            raise RequestError(400, "bare CR in the request line")
        raise RequestError(400, "malformed request line")
    method, target, version = parts
    if not method or method.translate(None, TOKEN_CHARS):
        raise RequestError(400, "malformed request method")
    if version not in SUPPORTED_VERSIONS:
        if (len(version) == 8 and version[:5] == b"HTTP/" and version[5:6].isdigit()
                and version[6:7] == b"." and version[7:8].isdigit()):
            raise RequestError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        raise RequestError(400, "malformed HTTP version")
    if not target or target.translate(None, TARGET_CHARS):
        raise RequestError(400, "malformed request target")
    first = target[0]
    if first != 0x2F:  # '/'
        if target == b"*":
            if method != b"OPTIONS":
                raise RequestError(400, "'*' is a target for OPTIONS only")
        elif method == b"CONNECT":
            pass  # authority-form; answered 405 by the resources
        elif not _absolute_form(target):
            raise RequestError(400, "malformed request target")
    return method, target, version


def _absolute_form(target: bytes) -> bool:
    scheme, sep, rest = target.partition(b"://")
    return bool(sep) and scheme.lower() in (b"http", b"https") and bool(rest)


def _tokens(values: list[bytes] | None) -> list[bytes]:
    """The comma-separated tokens of a list-valued field, lower-cased."""
    if not values:
        return []
    out = []
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t")
            if item:
                out.append(item.lower())
    return out


def _framing(method: bytes, target: bytes, version: bytes, headers: dict[bytes, list[bytes]],
             raw: bytes, max_body: int) -> RequestHead:
    http11 = version == b"HTTP/1.1"
    if http11:
        hosts = headers.get(b"host")
        if hosts is None or len(hosts) != 1:
            raise RequestError(400, "an HTTP/1.1 request needs exactly one Host header")
    connection = headers.get(b"connection")
    if connection is None:
        keep_alive = http11
    else:
        tokens = _tokens(connection)
        keep_alive = b"close" not in tokens if http11 else b"keep-alive" in tokens and b"close" not in tokens
    transfer = headers.get(b"transfer-encoding")
    lengths = headers.get(b"content-length")
    chunked = False
    length: int | None = None
    if transfer is not None:
        if not http11:
            raise RequestError(400, "Transfer-Encoding on an HTTP/1.0 request")
        if lengths is not None:
            raise RequestError(400, "both Transfer-Encoding and Content-Length")
        codings = _tokens(transfer)
        if codings != [b"chunked"]:
            if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
                # RFC 9112 6.3: without a final chunked the body length is unknowable
                raise RequestError(400, "chunked must be the final transfer coding, once")
            raise RequestError(501, f"unsupported transfer coding {codings[0].decode('latin-1')!r}")
        chunked = True
    elif lengths is not None:
        length = _content_length(lengths)
        if length > max_body:
            raise RequestError(413, f"request body over {max_body} bytes")
    expect = headers.get(b"expect")
    expect_continue = (http11 and expect is not None and (chunked or bool(length))
                       and b"100-continue" in _tokens(expect))
    return RequestHead(method, target, version, headers, keep_alive, length, chunked, expect_continue, raw)


def _content_length(values: list[bytes]) -> int:
    if len(values) == 1:
        value = values[0]
        if value.isdigit() and len(value) <= MAX_LENGTH_DIGITS:
            return int(value)
    seen: bytes | None = None
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t")
            if not item or len(item) > MAX_LENGTH_DIGITS or item.translate(None, DIGITS):
                raise RequestError(400, "bad Content-Length")
            if seen is not None and int(item) != int(seen):
                raise RequestError(400, "conflicting Content-Length values")
            seen = item
    if seen is None:
        raise RequestError(400, "bad Content-Length")
    return int(seen)
