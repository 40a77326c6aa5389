"""The ``chunked`` transfer coding of a request body, decoded (sans-IO; RFC 9112 section 7.1).

Bytes in, body bytes out.  Chunk extensions are read and ignored; trailer
fields are read, bounded and dropped (nothing in Orbited uses them).  Every
line is bounded, so a peer cannot make it buffer more than ``max_line``
bytes while looking for a line end, and the decoded body is bounded by
``max_body`` (413).  Line ends may be CRLF or a bare LF, as in the head.
"""

from __future__ import annotations

from orbited.http.events import RequestError

HEX_DIGITS = b"0123456789abcdefABCDEF"
MAX_SIZE_DIGITS = 16

_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDone:
    """Returned once by :meth:`ChunkedReader.read` when the last chunk and the trailers are in."""

    __slots__ = ()


CHUNKED_DONE = ChunkedDone()


class ChunkedReader:
    """Decodes one chunked body; :meth:`read` is called with the unparsed bytes until it says done."""

    __slots__ = ("left", "max_body", "max_line", "max_trailer", "max_trailers", "state", "total",
                 "trailer_bytes", "trailers")

    def __init__(self, max_body: int, max_line: int = 4096, max_trailer: int = 8192, max_trailers: int = 100):
        self.max_body = max_body
        self.max_line = max_line
        self.max_trailer = max_trailer
        self.max_trailers = max_trailers
        self.state = _SIZE
        self.left = 0  # bytes of the current chunk not yet returned
        self.total = 0  # body bytes so far
        self.trailers = 0
        self.trailer_bytes = 0

    def read(self, buffer: bytes) -> tuple[bytes | ChunkedDone | None, bytes]:
        """One step: ``(body bytes, rest)``, ``(None, rest)`` when more input is needed,
        or ``(CHUNKED_DONE, rest)`` at the end.  Raises :class:`RequestError`."""
        while buffer:
            state = self.state
            if state == _DATA:
                left = self.left
                if len(buffer) <= left:
                    self.left = left - len(buffer)
                    if not self.left:
                        self.state = _DATA_END
                    return buffer, b""
                self.left = 0
                self.state = _DATA_END
                return buffer[:left], buffer[left:]
            if state == _DATA_END:
                if buffer[:2] == b"\r\n":
                    buffer = buffer[2:]
                elif buffer[:1] == b"\n":
                    buffer = buffer[1:]
                elif buffer == b"\r":
                    return None, buffer
                else:
                    raise RequestError(400, "chunk data is not followed by a line end")
                self.state = _SIZE
                continue
            if state == _DONE:
                return CHUNKED_DONE, buffer
            end = buffer.find(b"\n", 0, self.max_line + 1)
            if end < 0:
                if len(buffer) > self.max_line:
                    raise RequestError(400 if state == _SIZE else 431, "chunk line too long")
                return None, buffer
            line = buffer[:end]
            buffer = buffer[end + 1:]
            if line[-1:] == b"\r":
                line = line[:-1]
            if b"\r" in line:
                raise RequestError(400, "bare CR in a chunk line")
            if state == _SIZE:
                self._size_line(line)
            else:
                self._trailer_line(line, end + 1)
                if self.state == _DONE:
                    return CHUNKED_DONE, buffer
        return None, buffer

    def _size_line(self, line: bytes) -> None:
        digits = line.split(b";", 1)[0].rstrip(b" \t")
        if not digits or len(digits) > MAX_SIZE_DIGITS or digits.translate(None, HEX_DIGITS):
            raise RequestError(400, "bad chunk size")
        size = int(digits, 16)
        self.total += size
        if self.total > self.max_body:
            raise RequestError(413, f"request body over {self.max_body} bytes")
        if size:
            self.left = size
            self.state = _DATA
        else:
            self.state = _TRAILER

    def _trailer_line(self, line: bytes, size: int) -> None:
        if not line:
            self.state = _DONE
            return
        self.trailers += 1
        self.trailer_bytes += size
        if self.trailers > self.max_trailers or self.trailer_bytes > self.max_trailer:
            raise RequestError(431, "too many trailer fields")
        if b":" not in line or line[:1] in (b" ", b"\t"):
            raise RequestError(400, "bad trailer field")
