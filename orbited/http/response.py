"""Response bytes (sans-IO): status lines, header names, the Date header, chunk framing, error answers.

Everything here is a pure function of its arguments (the Date cache reads
the wall clock it is given), so a response head is built with one join and
written with one ``transport.write``.

No ``Server`` header is sent: it costs bytes on every Comet response and
tells a scanner the version; ``/system/status`` says it to those allowed.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

PHRASES: dict[int, bytes] = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}
NO_BODY_STATUSES = frozenset((204, 304)) | frozenset(range(100, 200))

# Names whose conventional spelling is not Title-Case (the same list as twisted.web's Headers).
_SPECIAL_NAMES = {
    b"content-md5": b"Content-MD5", b"dnt": b"DNT", b"etag": b"ETag", b"p3p": b"P3P", b"te": b"TE",
    b"www-authenticate": b"WWW-Authenticate", b"x-xss-protection": b"X-XSS-Protection",
}
_canonical_cache: dict[bytes, bytes] = {}
MAX_CANONICAL_CACHE = 512


def canonical_name(name: bytes) -> bytes:
    """``content-type`` -> ``Content-Type``: how twisted.web spelled names, and what raw clients grep for."""
    found = _canonical_cache.get(name)
    if found is not None:
        return found
    lower = name.lower()
    spelled = _SPECIAL_NAMES.get(lower) or b"-".join(part.capitalize() for part in lower.split(b"-"))
    if len(_canonical_cache) < MAX_CANONICAL_CACHE:
        _canonical_cache[name] = spelled
    return spelled


def status_line(version: bytes, code: int, phrase: bytes | None = None) -> bytes:
    """``HTTP/1.1 200 OK``, without its CRLF (:func:`head_bytes` adds line ends)."""
    if phrase is None:
        phrase = PHRASES.get(code, b"Unknown")
    return b"%s %d %s" % (version, code, phrase)


class DateHeader:
    """The ``Date:`` line, formatted at most once a second."""

    __slots__ = ("line", "second")

    def __init__(self) -> None:
        self.second = -1
        self.line = b""

    def get(self, now: float | None = None) -> bytes:
        second = int(time.time() if now is None else now)
        if second != self.second:
            self.second = second
            self.line = b"Date: " + formatdate(second, usegmt=True).encode("ascii") + b"\r\n"
        return self.line


DATE = DateHeader()


_field_prefixes: dict[bytes, bytes] = {}


def head_bytes(status: bytes, headers: dict[bytes, list[bytes]], extra: bytes = b"") -> bytes:
    """A response head: ``status`` (a status line), every header, ``extra`` lines, the empty line."""
    parts = [status]
    prefixes = _field_prefixes
    for name, values in headers.items():
        prefix = prefixes.get(name)
        if prefix is None:
            prefix = b"\r\n" + canonical_name(name) + b": "
            if len(prefixes) < MAX_CANONICAL_CACHE:
                prefixes[name] = prefix
        for value in values:
            parts.append(prefix)
            parts.append(value)
    parts.append(b"\r\n")
    parts.append(extra)
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never empty: an empty chunk ends the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def error_response(status: int, detail: str, now: float | None = None) -> bytes:
    """The whole answer to a request that cannot be served: a short text, then the server closes."""
    body = detail.encode("utf-8", "replace") + b"\n"
    return (status_line(b"HTTP/1.1", status) + b"\r\n" + DATE.get(now)
            + b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % len(body) + body)
