"""The Twisted shell of a SockJS service: one leaf resource answering every URL under its base.

It routes (``routing``), sets the headers the protocol requires (CORS with
credentials, caching, JSESSIONID), turns receiving requests into
:class:`HttpReceiver` objects attached to sessions, and upload requests into
messages delivered to them.  Framing lives in ``framing``, session rules in
``session``; WebSocket upgrades are handed to ``ws_transports``.

Every request gets an HTTP answer: 404 for unknown URLs and sessions, 405
with ``Allow`` for a wrong method, 413 for an upload over ``max_body``, 500
with the protocol's text for a broken payload, 403 for an Origin-less
transport the service refuses, 503 when the handler factory refuses a session.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from orbited.addresses import peer_text
from orbited.comet import answer_when_writable, no_delay, request_body
from orbited.transports.sockjs import framing, pages
from orbited.transports.sockjs.routing import Kind, Route, Transport, route
from orbited.transports.sockjs.service import (
    SessionRefused,
    SessionRequest,
    SockJSService,
)
from orbited.transports.sockjs.session import ReceiverFlow, SockJSSession

if TYPE_CHECKING:
    from orbited.transports.sockjs.ws_transports import WebSocketUpgrade

log = logging.getLogger("orbited.sockjs")

NO_CACHE = b"no-store, no-cache, no-transform, must-revalidate, max-age=0"
ONE_YEAR = 365 * 24 * 60 * 60
TEXT_PLAIN = b"text/plain; charset=UTF-8"
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9._\-+/=]{1,128}")

# Receiving transports that stream (the others answer one frame), and those with no Origin header.
STREAMING = (Transport.XHR_STREAMING, Transport.EVENTSOURCE, Transport.HTMLFILE)
ORIGINLESS = (Transport.HTMLFILE, Transport.JSONP, Transport.JSONP_SEND)
# The wires without a callback hold no state: one each serves every request.
_WIRES: dict[Transport, framing.Wire] = {
    Transport.XHR: framing.Wire(),
    Transport.XHR_STREAMING: framing.StreamingWire(),
    Transport.EVENTSOURCE: framing.EventSourceWire(),
}


def client_address(request: Request) -> str:
    return peer_text(request.getClientAddress())


def page_of(request: Request) -> str | None:
    """The page that made a request: its Origin header, else its Referer (a ``<script>``, a form
    or an iframe sends no Origin, or not always), else None."""
    return request.getHeader("origin") or request.getHeader("referer")


def session_request(request: Request, session_id: str, transport: str) -> SessionRequest:
    return SessionRequest(session_id, transport, client_address(request),
                          request.getHeader("host"), request.getHeader("origin"))


@implementer(IPushProducer)
class HttpReceiver(ReceiverFlow):
    """One receiving HTTP response: a poll (one frame) or a stream (frames up to a byte limit).

    It is the response's push producer, so a browser that reads slowly pauses
    it and the session keeps messages queued (bounded by its handler).
    """

    def __init__(self, request: Request, session: SockJSSession, wire: framing.Wire,
                 limit: int | None):
        self.request = request
        self.session = session
        self.wire = wire
        self.limit = limit  # None: polling, the first frame ends the response
        self.sent = 0
        self.paused = False
        self.done = False
        if limit is not None:
            request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._finished)
        no_delay(request)  # frames are small and must not wait for the browser's delayed ACK (Nagle)

    # Receiver

    def send_open(self) -> None:
        self._write(framing.OPEN_FRAME)

    def send_heartbeat(self) -> None:
        self._write(framing.HEARTBEAT_FRAME)

    def send_messages(self, messages: list[str]) -> None:
        self._write(framing.message_frame(messages))

    def send_close(self, code: int, reason: str) -> None:
        self._write(framing.close_frame(code, reason), last=True)

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        self._release()
        channel = self.request.channel
        if channel is not None and channel.transport is not None:
            channel.transport.abortConnection()

    def pause_reading(self) -> None:
        """Uploads come on other requests, which wait on the handler instead."""

    def resume_reading(self) -> None:
        pass

    # writing

    def _write(self, frame: str, last: bool = False) -> None:
        if self.done:
            return
        data = self.wire.encode(frame)
        request = self.request
        if self.limit is None:
            request.setHeader(b"content-length", b"%d" % len(data))
            request.write(data)
            self._end()
            return
        request.write(data)
        self.sent += len(data)
        if last or self.sent >= self.limit:
            self._end()

    def _end(self) -> None:
        self.done = True
        self._release()
        self.request.finish()
        self.session.detach(self)

    def _release(self) -> None:
        request = self.request
        if self.limit is None or request.producer is None:
            return
        if request.channel is not None:
            request.unregisterProducer()
        else:
            request.producer = None  # the connection is gone, and its channel with it

    def _finished(self, result: Any) -> None:
        if self.done:
            return
        # The browser went away before the response ended.
        self.done = True
        self._release()
        why = "browser connection lost"
        if isinstance(result, Failure):
            why += f" ({result.getErrorMessage()})"
        self.session.detach(self, lost=why)



class SockJSResource(Resource):
    """Everything under one service's base URL."""

    isLeaf = True

    def __init__(self, service: SockJSService, websocket: WebSocketUpgrade | None = None):
        super().__init__()
        self.service = service
        self.options = service.options
        self.websocket = websocket if service.options.websocket else None
        self.iframe, self.iframe_etag = pages.iframe_page(service.options.client_url)

    # dispatch

    def render(self, request: Request) -> Any:
        request.defaultContentType = None
        try:
            # Strict: with 'replace', /1/%ffq/xhr and /1/%feq/xhr were one session here, and two
            # with workers (which route the raw bytes).
            found = route([segment.decode("utf-8") for segment in request.postpath])
        except UnicodeDecodeError:
            found = None
        if found is None:
            return self._status(request, 404, "Not found.")
        method = request.method
        allowed = found.methods
        if method not in allowed and not (method == b"HEAD" and found.kind is not Kind.SESSION
                                          and b"GET" in allowed):
            request.setResponseCode(405)
            request.setHeader(b"allow", b", ".join(allowed))
            return b""
        if found.kind is Kind.GREETING:
            request.setHeader(b"content-type", TEXT_PLAIN)
            return pages.GREETING
        if found.kind is Kind.INFO:
            return self._info(request, method)
        if found.kind is Kind.IFRAME:
            return self._iframe(request)
        if found.kind is Kind.RAW_WEBSOCKET or found.transport is Transport.WEBSOCKET:
            if self.websocket is None:
                return self._status(request, 404, "WebSocket is disabled for this service.")
            return self.websocket.render(request, found)
        return self._session_request(request, found, method)

    def _session_request(self, request: Request, found: Route, method: bytes) -> Any:
        transport = found.transport
        assert transport is not None
        self._cookie(request)
        if transport in ORIGINLESS:
            refusal = self._originless(request, transport.value)
            if refusal is not None:
                return refusal
        if method == b"OPTIONS":
            return self._options(request, b"OPTIONS, POST")
        if transport is Transport.XHR_SEND:
            return self._upload(request, found, form=False)
        if transport is Transport.JSONP_SEND:
            return self._upload(request, found, form=True)
        return self._receive(request, found)

    # fixed pages

    def _info(self, request: Request, method: bytes) -> bytes:
        if method == b"OPTIONS":
            return self._options(request, b"OPTIONS, GET")
        self._cors(request)
        request.setHeader(b"cache-control", NO_CACHE)
        request.setHeader(b"content-type", b"application/json; charset=UTF-8")
        return pages.info(self.websocket is not None, self.options.cookie_needed)

    def _iframe(self, request: Request) -> bytes:
        refusal = self._originless(request, "iframe")
        if refusal is not None:
            return refusal
        self._cache_for_a_year(request)
        request.setHeader(b"vary", b"Referer")  # the answer depends on it when origins are restricted
        request.setHeader(b"etag", self.iframe_etag)
        if request.getHeader(b"if-none-match") == self.iframe_etag:
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-type", b"text/html; charset=UTF-8")
        return self.iframe

    def _options(self, request: Request, methods: bytes) -> bytes:
        request.setResponseCode(204)
        self._cors(request)
        self._cache_for_a_year(request)
        request.setHeader(b"access-control-max-age", b"%d" % ONE_YEAR)
        request.setHeader(b"access-control-allow-methods", methods)
        return b""

    # receiving transports

    def _receive(self, request: Request, found: Route) -> Any:
        transport = found.transport
        assert transport is not None
        wire: framing.Wire
        if transport in (Transport.HTMLFILE, Transport.JSONP):
            callback = _query(request, b"c") or _query(request, b"callback")
            if callback is None:
                return self._status(request, 500, '"callback" parameter required')
            if not framing.valid_callback(callback):
                return self._status(request, 500, 'invalid "callback" parameter')
            wire = framing.HtmlFileWire(callback) if transport is Transport.HTMLFILE else framing.JsonpWire(callback)
        else:
            wire = _WIRES[transport]
        session = self.service.find(found.session_id)
        if session is None:
            try:
                session = self.service.open_session(session_request(request, found.session_id, transport.value))
            except SessionRefused as refused:
                log.warning("%s: refused a session for %s: %s", self.service.name,
                            client_address(request), refused.message)
                return self._status(request, refused.status, refused.message)
        if transport is not Transport.HTMLFILE and transport is not Transport.JSONP:
            self._cors(request)
        if transport is Transport.JSONP:
            request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"cache-control", NO_CACHE)
        request.setHeader(b"content-type", wire.content_type)
        streaming = transport in STREAMING
        if streaming:
            request.write(wire.prelude)
        receiver = HttpReceiver(request, session, wire, self.options.response_limit if streaming else None)
        session.attach(receiver)
        return NOT_DONE_YET

    # uploads

    def _upload(self, request: Request, found: Route, form: bool) -> Any:
        body = request_body(request, self.options.max_body)
        if body is None:
            log.warning("%s: %s from %s over http.max_body (%d bytes)", self.service.name,
                        found.transport.value if found.transport else "upload",
                        client_address(request), self.options.max_body)
            return self._status(request, 413, f"Request body larger than {self.options.max_body} bytes.")
        session = self.service.find(found.session_id)
        if session is None:
            return self._status(request, 404, "No such session.")
        page = page_of(request)
        refusal = session.handler.uploadFrom(page)
        if refusal is not None:
            log.warning("%s: refused %s to session %s from %s (page %s): %s", self.service.name,
                        found.transport.value if found.transport else "upload", found.session_id,
                        client_address(request), page, refusal)
            return self._status(request, 403, refusal)
        try:
            if form:
                messages = framing.decode_form_payload(body, request.getHeader("content-type"))
            else:
                messages = framing.decode_payload(body)
        except framing.PayloadError as error:
            return self._status(request, error.status, error.message)
        session.deliver(messages)
        if not form:
            self._cors(request)
        request.setHeader(b"cache-control", NO_CACHE)
        request.setHeader(b"content-type", TEXT_PLAIN)
        if form:
            request.setResponseCode(200)
            answer = b"ok"
        else:
            request.setResponseCode(204)
            answer = b""
        writable = session.whenWritable()
        if writable.called:
            return answer
        # The handler is slow: the browser sends its next upload only after this answer.

        def answer_now() -> None:
            request.setHeader(b"content-length", b"%d" % len(answer))
            request.write(answer)
            request.finish()

        answer_when_writable(writable, request, answer_now)
        writable.addErrback(lambda failure: log.error("%s: upload answer failed: %s", self.service.name,
                                                      failure.getErrorMessage()))
        return NOT_DONE_YET

    # headers

    def _cors(self, request: Request) -> None:
        origin = request.getHeader(b"origin")
        if origin:
            request.setHeader(b"access-control-allow-origin", origin)
            request.setHeader(b"access-control-allow-credentials", b"true")
        else:
            request.setHeader(b"access-control-allow-origin", b"*")
        request.setHeader(b"vary", b"Origin")
        headers = request.getHeader(b"access-control-request-headers")
        if headers:
            request.setHeader(b"access-control-allow-headers", headers)

    def _cookie(self, request: Request) -> None:
        if not self.options.cookie_needed:
            return
        value = request.getCookie(b"JSESSIONID")
        text = value.decode("latin-1") if value else ""
        if not _COOKIE_VALUE.fullmatch(text):
            text = "dummy"
        request.addCookie(b"JSESSIONID", text.encode("latin-1"), path=b"/")

    @staticmethod
    def _cache_for_a_year(request: Request) -> None:
        request.setHeader(b"cache-control", b"public, max-age=%d" % ONE_YEAR)
        request.setHeader(b"expires", http.datetimeToString(time.time() + ONE_YEAR))

    def _originless(self, request: Request, what: str) -> bytes | None:
        page = page_of(request)
        refusal = self.service.originless_refusal(page, request.getHeader("host"))
        if refusal is None:
            return None
        log.warning("%s: refused %s from %s (page %s): %s", self.service.name, what, client_address(request),
                    page or "not named: no Origin or Referer", refusal)
        return self._status(request, 403, refusal)

    @staticmethod
    def _status(request: Request, code: int, text: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", TEXT_PLAIN)
        return text.encode("utf-8")


def _query(request: Request, name: bytes) -> str | None:
    values = request.args.get(name) if request.args else None
    if not values:
        return None
    return values[0].decode("utf-8", "replace")
