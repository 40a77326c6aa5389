"""One request and its response: the part of ``twisted.web.server.Request`` Orbited's resources use.

Resources written for twisted.web run unchanged on it (``render_GET``,
``NOT_DONE_YET``, ``notifyFinish``, producers).  What it does differently,
on purpose:

- ``args`` holds the query string only; a POST body is never parsed as a
  form (SockJS and the publish endpoint read ``content`` themselves).
- The response head goes out with the first body bytes in one
  ``transport.write``; a response finished without any write gets
  ``Content-Length: 0`` instead of an empty chunked body.
- ``write`` after the connection is gone is ignored, as in twisted.web;
  ``finish`` then is ignored too (twisted.web raised).
- ``notifyFinish`` on a finished or disconnected request fires at once.
- A resource takes the connection over with :meth:`Request.takeover`
  (WebSocket upgrades).  For code written against twisted.web, setting
  ``request.channel.transport = None`` (what autobahn's
  ``WebSocketResource.render`` does) is noticed too, and the bytes read
  after the head are passed on to the new protocol.
"""

from __future__ import annotations

import math
from io import BytesIO
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from twisted.web.http import CACHED, NOT_MODIFIED, PRECONDITION_FAILED, datetimeToString

from orbited.http.conditional import not_modified
from orbited.http.headers import RequestHeaders, ResponseHeaders, _name, _value
from orbited.http.response import DATE, LAST_CHUNK, NO_BODY_STATUSES, PHRASES, chunk, head_bytes, status_line

if TYPE_CHECKING:
    from orbited.http.channel import HTTPChannel
    from orbited.http.events import RequestHead

HTTP11 = b"HTTP/1.1"
_TRANSFER_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_CLOSE = b"Connection: close\r\n"


def parse_query(query: bytes) -> dict[bytes, list[bytes]]:
    """``a=1&b=&a=2`` -> {a: [1, 2], b: [b'']}; ``+`` is a space; a name without ``=`` has value b''."""
    args: dict[bytes, list[bytes]] = {}
    for item in query.split(b"&"):
        if not item:
            continue
        name, _, value = item.partition(b"=")
        if b"+" in name or b"%" in name:
            name = unquote_to_bytes(name.replace(b"+", b" "))
        if b"+" in value or b"%" in value:
            value = unquote_to_bytes(value.replace(b"+", b" "))
        args.setdefault(name, []).append(value)
    return args


def parse_cookies(values: list[bytes] | None) -> dict[bytes, bytes]:
    cookies: dict[bytes, bytes] = {}
    for header in values or ():
        for item in header.split(b";"):
            name, equals, value = item.partition(b"=")
            if equals:
                cookies[name.strip()] = value.strip()
    return cookies


def path_of(target: bytes) -> bytes:
    """The path of a request target: ``/a?b`` -> ``/a``; ``http://h/a?b`` -> ``/a``."""
    path = target.split(b"?", 1)[0]
    if path[:1] == b"/" or b"://" not in path:
        return path
    return b"/" + path.split(b"://", 1)[1].partition(b"/")[2]


def path_segments(path: bytes) -> list[bytes]:
    """The segments resources are found by (``/a/b%2Fc`` -> ``[b"a", b"b/c"]``): decoded one by
    one, so an encoded ``/`` stays inside its segment.  The master's choice of worker
    (orbited.worker_routes) reads the same segments as the resource tree, or a request
    spelled with escapes would go to a process that does not hold its session."""
    segments = path[1:].split(b"/")
    if b"%" in path:
        segments = [unquote_to_bytes(segment) if b"%" in segment else segment for segment in segments]
    return segments


class Request:
    """An HTTP request being answered; made by :class:`~orbited.http.channel.HTTPChannel`."""

    # Class-level defaults keep __init__ short: one of these is made per request.
    defaultContentType: bytes | None = b"text/html"
    code = 200
    code_message = b"OK"
    startedWriting = False
    finished = False
    chunked = False
    producer: Any = None
    streamingProducer = False
    lastModified: int | None = None
    etag: bytes | None = None
    sentLength = 0
    site: Any = None
    _disconnected = False
    _headOnly = False
    _noBody = False
    _args: dict[bytes, list[bytes]] | None = None
    _cookies: dict[bytes, bytes] | None = None
    _setCookies: list[bytes] | None = None
    _notifications: list[Deferred] | None = None
    _resource: Any = None  # found early for an upgrade request
    _lost: Failure | None = None

    def __init__(self, channel: HTTPChannel, head: RequestHead):
        self.channel: HTTPChannel | None = channel
        self._channel = channel  # kept after a disconnect, for addresses
        self.transport = channel.transport
        self.method = method = head.method
        self.uri = head.target
        self.path = path_of(head.target)
        self.clientproto = head.version
        self.requestHeaders = RequestHeaders(head.headers)
        self.responseHeaders = ResponseHeaders({})
        self.content = BytesIO()
        self.prepath: list[bytes] = []
        self.postpath: list[bytes] = []
        if method == b"HEAD":
            self._headOnly = True

    def __repr__(self) -> str:
        return f"<Request {self.method.decode('latin-1')} {self.uri.decode('latin-1')} {self.code}>"

    # --- what came in

    @property
    def args(self) -> dict[bytes, list[bytes]]:
        """Query arguments only (never a POST body)."""
        args = self._args
        if args is None:
            query = self.uri.partition(b"?")[2]
            args = self._args = parse_query(query) if query else {}
        return args

    @args.setter
    def args(self, value: dict[bytes, list[bytes]]) -> None:
        self._args = value

    def getHeader(self, key: bytes | str) -> Any:
        """The last value of a request header, or None; a str name gets a str value."""
        if isinstance(key, bytes):
            values = self.requestHeaders.raw.get(key.lower())
            return values[-1] if values else None
        values = self.requestHeaders.raw.get(key.encode("latin-1").lower())
        return values[-1].decode("utf-8", "replace") if values else None

    def getAllHeaders(self) -> dict[bytes, bytes]:
        return {name: values[-1] for name, values in self.requestHeaders.raw.items()}

    @property
    def received_cookies(self) -> dict[bytes, bytes]:
        cookies = self._cookies
        if cookies is None:
            cookies = self._cookies = parse_cookies(self.requestHeaders.raw.get(b"cookie"))
        return cookies

    def getCookie(self, key: bytes) -> bytes | None:
        return self.received_cookies.get(key)

    def getClientAddress(self) -> Any:
        return self._channel.peer

    def getHost(self) -> Any:
        return self._channel.host

    def isSecure(self) -> bool:
        return self._channel.secure

    def getRequestHostname(self) -> bytes:
        host = self.getHeader(b"host")
        if host:
            if host[:1] == b"[":
                return host.split(b"]", 1)[0] + b"]"
            return host.rsplit(b":", 1)[0]
        return str(getattr(self.getHost(), "host", "")).encode("ascii", "replace")

    # --- the response head

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        if not isinstance(code, int):
            raise TypeError(f"HTTP response code must be int, not {type(code).__name__}")
        self.code = code
        self.code_message = message if message is not None else PHRASES.get(code, b"Unknown Status")

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        if value.__class__ is not bytes or b"\r" in value or b"\n" in value:  # type: ignore[operator]
            value = _value(value)
        self.responseHeaders.raw[name.lower() if name.__class__ is bytes else _name(name)] = [value]

    def addCookie(self, k: bytes | str, v: bytes | str, expires: Any = None, domain: Any = None,
                  path: Any = None, max_age: Any = None, comment: Any = None, secure: bool | None = None,
                  httpOnly: bool = False, sameSite: Any = None) -> None:
        def clean(value: bytes | str) -> bytes:
            return _value(value).replace(b";", b" ")

        cookie = clean(k) + b"=" + clean(v)
        for label, value in ((b"Expires", expires), (b"Domain", domain), (b"Path", path),
                             (b"Max-Age", max_age), (b"Comment", comment)):
            if value is not None:
                cookie += b"; " + label + b"=" + clean(value if not isinstance(value, int) else str(value))
        if secure:
            cookie += b"; Secure"
        if httpOnly:
            cookie += b"; HttpOnly"
        if sameSite:
            same = clean(sameSite).lower()
            if same not in (b"lax", b"strict", b"none") or (same == b"none" and not secure):
                raise ValueError(f"invalid value for sameSite: {same!r}")
            cookie += b"; SameSite=" + same
        if self._setCookies is None:
            self._setCookies = []
        self._setCookies.append(cookie)

    def setLastModified(self, when: float) -> bytes | None:
        """Record Last-Modified; returns CACHED (and sets 304) when If-Modified-Since says the client has it."""
        when = math.ceil(when)
        if not self.lastModified or self.lastModified < when:
            self.lastModified = when
        # twisted.web's contract: If-Modified-Since alone (If-None-Match is for setETag)
        if not_modified(None, self.getHeader(b"if-modified-since"), self.lastModified):
            self.setResponseCode(NOT_MODIFIED)
            return CACHED
        return None

    def setETag(self, etag: bytes) -> bytes | None:
        if etag:
            self.etag = etag
        tags = self.getHeader(b"if-none-match")
        if tags:
            tags = tags.split()
            if etag in tags or b"*" in tags:
                self.setResponseCode(NOT_MODIFIED if self.method in (b"HEAD", b"GET") else PRECONDITION_FAILED)
                return CACHED
        return None

    def redirect(self, url: bytes | str) -> None:
        self.setResponseCode(302)
        self.setHeader(b"location", url)

    # --- the body

    def write(self, data: bytes) -> None:
        if self.finished:
            raise RuntimeError("Request.write called on a request after Request.finish was called.")
        if self._disconnected:
            return
        if not self.startedWriting:
            self._start(data)
            return
        if data and not self._noBody:
            self.sentLength += len(data)
            self._channel.send(chunk(data) if self.chunked else data)

    def writeSequence(self, pieces: list[bytes]) -> None:
        self.write(b"".join(pieces))

    def _start(self, data: bytes, complete: bool = False) -> None:
        """Send the head, with ``data`` after it; ``complete``: ``data`` is the whole body."""
        self.startedWriting = True
        channel = self.channel
        assert channel is not None
        code = self.code
        headers = self.responseHeaders.raw
        headers.pop(b"connection", None)
        headers.pop(b"transfer-encoding", None)
        no_body_status = code in NO_BODY_STATUSES
        self._noBody = no_body = self._headOnly or no_body_status
        if no_body_status:
            headers.pop(b"content-length", None)
        else:
            if complete and not no_body and b"content-length" not in headers:
                headers[b"content-length"] = [b"%d" % len(data)]
            if b"content-type" not in headers and self.defaultContentType is not None:
                length = headers.get(b"content-length")
                if not (length and length[0] == b"0"):
                    headers[b"content-type"] = [self.defaultContentType]
        if self.lastModified is not None and b"last-modified" not in headers:
            headers[b"last-modified"] = [datetimeToString(self.lastModified)]
        if self.etag is not None:
            headers[b"etag"] = [self.etag]
        if self._setCookies:
            headers[b"set-cookie"] = self._setCookies
        extra = DATE.get()
        close_delimited = False
        if not no_body and b"content-length" not in headers:
            if self.clientproto == HTTP11:
                self.chunked = True
                extra += _TRANSFER_CHUNKED
            else:
                close_delimited = True
        if channel.keepAliveAfter(self, close_delimited):
            if self.clientproto != HTTP11:
                extra += _KEEP_ALIVE
        else:
            extra += _CLOSE
        head = head_bytes(status_line(self.clientproto, code, self.code_message), headers, extra)
        if no_body or not data:
            channel.send(head)
            return
        self.sentLength = len(data)
        channel.send(head + (chunk(data) if self.chunked else data))

    def finish(self) -> None:
        if self.finished or self._disconnected:
            return
        if not self.startedWriting:
            self._start(b"", complete=True)
        elif self.chunked and not self._noBody:
            self._channel.send(LAST_CHUNK)
        self.finished = True
        if self.producer is not None:
            self.unregisterProducer()
        channel = self.channel
        if channel is not None:
            channel.requestDone(self)
        notifications, self._notifications = self._notifications, None
        for waiter in notifications or ():
            waiter.callback(None)

    def respond(self, body: bytes) -> None:
        """Answer with the whole body at once: Content-Length, head and body in one write."""
        if self._disconnected or self.finished:
            return
        if self.startedWriting:
            self.write(body)
        elif self._headOnly:
            # the GET's length: the body rendered, unless the resource set it without a body
            # (a static file's HEAD); an empty GET answer has Content-Length: 0 too
            if body or b"content-length" not in self.responseHeaders.raw:
                self.responseHeaders.raw[b"content-length"] = [b"%d" % len(body)]
            self._start(b"", complete=False)
        else:
            self._start(body, complete=True)
        self.finish()

    def notifyFinish(self) -> Deferred:
        """Fires with None when the response is complete, or errbacks when the connection is lost first."""
        if self.finished:
            return succeed(None)
        if self._disconnected:
            return fail(self._lost)
        waiter: Deferred = Deferred()
        if self._notifications is None:
            self._notifications = []
        self._notifications.append(waiter)
        return waiter

    # --- producers (IConsumer)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.producer is not None:
            raise ValueError(f"registering producer {producer} before previous one ({self.producer}) "
                             "was unregistered")
        self.producer = producer
        self.streamingProducer = streaming
        if self._disconnected:
            producer.stopProducing()
            return
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        if self.producer is None:
            return
        self.producer = None
        if not self._disconnected:
            self.transport.unregisterProducer()

    # --- the connection

    def takeover(self) -> tuple[Any, bytes]:
        """Detach the connection from HTTP for another protocol (a WebSocket).

        Returns the transport and the bytes the client sent after this
        request's head.  The caller connects its protocol to the transport
        (:func:`orbited.http.upgrade.hand_over` does it) and owns the
        connection from then on; this request is never answered.
        """
        channel = self.channel
        if channel is None:
            raise RuntimeError("the connection is gone")
        return channel.detach()

    def connectionLost(self, reason: Failure) -> None:
        """The connection closed before the response was finished."""
        self._disconnected = True
        self._lost = reason
        self.channel = None
        # The transport has stopped the producer.  Kept, it and this request held each other (a
        # FileSender's consumer is its request): every static download cut short was left in a
        # cycle, with its connection, until a full collection (rare by design: orbited/cli.py).
        self.producer = None
        notifications, self._notifications = self._notifications, None
        for waiter in notifications or ():
            waiter.errback(reason)
