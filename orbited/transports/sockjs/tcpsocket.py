"""The TCPSocket service at ``/sockjs``: a SockJS session carrying one proxied TCP connection.

The wire contract (docs/protocol.md, ``/sockjs``):

- the browser's first SockJS message is the plain text ``host:port``
  (optionally ending in ``\\n``), the same handshake as ``/ws``;
- the server's first message is ``1``, or ``0`` + the TCPSocket error code
  followed by the close frame ``c[4000+code,"reason"]``;
- after ``1`` every message, both ways, is the standard base64 (with padding)
  of the bytes.  A message that is not base64 closes the session with
  ``c[1007,...]`` and a logged reason.

:class:`SockJSTCPSocket` is both the SockJS handler of a session and the
:class:`~orbited.session.ISession` the proxy runs on, through
:class:`~orbited.comet.CometSession` (identity, the ``session.max_buffer``
bound with backend pause/resume, upstream backpressure).  The proxy runs
unchanged and never learns it is on SockJS.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import TYPE_CHECKING

from zope.interface import implementer

from orbited.access import normalise_origin
from orbited.comet import CometSession
from orbited.session import ISession, close_code, close_reason
from orbited.transports.sockjs.http_transports import SockJSResource
from orbited.transports.sockjs.service import (
    SessionRefused,
    SessionRequest,
    SockJSOptions,
    SockJSService,
)
from orbited.transports.sockjs.session import ISockJSHandler, SockJSSession
from orbited.transports.sockjs.ws_transports import (
    SockJSWebSocketProtocol,
    WebSocketUpgrade,
)

if TYPE_CHECKING:
    from orbited.context import ServerContext

log = logging.getLogger("orbited.sockjs")

CLOSE_BAD_MESSAGE = 1007  # RFC 6455's "data inconsistent with the message type"

ORIGINLESS_REFUSAL = (
    "this transport carries no Origin header, and its Referer does not name a page that "
    "[global] origins allows (or there is none); use websocket, xhr-streaming, xhr-polling "
    "or eventsource, or set origins = * to let any page use this server"
)




@implementer(ISession, ISockJSHandler)
class SockJSTCPSocket(CometSession):
    """One TCPSocket over one SockJS session."""

    transportName = "sockjs"

    def __init__(self, context: ServerContext, request: SessionRequest):
        super().__init__(context, request.session_id, request.client_address, request.host, request.origin)
        self.transportName = f"sockjs-{request.transport}"
        self.connection: SockJSSession | None = None
        self.handshaken = False

    # ISockJSHandler

    def connectionOpened(self, connection: SockJSSession) -> None:
        self.connection = connection
        self.open()

    def messageReceived(self, text: str) -> None:
        if not self.handshaken:
            self.handshaken = True
            self.deliver(text.encode("utf-8", "replace"))
            return
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            reason = "message is not base64"
            log.warning("%s %s %s: %s (%r...); closing", self.transportName, self.key, self.clientAddress,
                        reason, text[:32])
            self._close(CLOSE_BAD_MESSAGE, reason, discard=True)
            return
        if data:
            self.deliver(data)

    def connectionClosed(self, reason: str) -> None:
        self.connection = None
        self.finish(reason)

    def uploadFrom(self, page: str | None) -> str | None:
        """The Origin rules judge the page that sends the handshake, as on /ws.

        A session opened without an Origin header (an EventSource GET from the same
        origin, or a ``<script>``/``<img>`` of another site, which cannot read the answer)
        takes the page of its first upload as its own, before the handshake is judged:
        otherwise a page of any site could open a session that way and then post the
        handshake and data to it.  Later uploads from another page must be allowed too.
        """
        if page is None:
            return None  # not a browser: every browser names the page on a POST
        origin = normalise_origin(page) or "null"  # a Referer is a whole URL; what cannot be an origin is 'null'
        if self.origin is None and not self.handshaken:
            self.origin = origin
            return None
        if origin == (normalise_origin(self.origin) or "null") or \
                self.context.policy.origin_allowed(origin, self.hostHeader):
            return None
        return "this session belongs to another page, and [global] origins does not allow this one"

    # drained() and whenWritable() come from CometSession.

    # ISession

    def write(self, data: bytes) -> None:
        connection = self.connection
        if connection is None or self.closed:
            return
        text = base64.b64encode(data).decode("ascii")
        if self.queued(len(text)):
            connection.send(text)

    def answerHandshake(self, reply: str) -> None:
        connection = self.connection
        if connection is not None and self.queued(len(reply)):
            connection.send(reply)

    def close(self, reason: str, code: int | None = None) -> None:
        # Over the bound: the browser is not reading, so what is queued will never go.
        self._close(close_code(reason, code), close_reason(reason), discard=self.queued_bytes > self.limit)

    def _close(self, code: int, reason: str, discard: bool) -> None:
        """The SockJS session serves its close frame until it expires; the TCPSocket (the
        backend connection, the proxy.max_sessions slot) is over now."""
        connection = self.connection
        if connection is None:
            return
        connection.close(code, reason, discard=discard)
        self.finish(reason)

    def pauseProducing(self) -> None:
        super().pauseProducing()
        if self.connection is not None:
            self.connection.pauseReading()

    def resumeProducing(self) -> None:
        super().resumeProducing()
        if self.connection is not None:
            self.connection.resumeReading()


def sockjs_options(context: ServerContext) -> SockJSOptions:
    """The /sockjs protocol knobs from [global]: heartbeats and expiry follow session.ping_*."""
    settings = context.config.settings
    return SockJSOptions(
        websocket=True,
        cookie_needed=settings["sockjs.cookie_needed"],
        response_limit=settings["sockjs.response_limit"],
        heartbeat_interval=settings["session.ping_interval"],
        disconnect_delay=settings["session.ping_timeout"],
        client_url=settings["sockjs.client_url"],
        max_body=settings["http.max_body"],
        hixie76=False,
    )


def tcpsocket_service(context: ServerContext) -> SockJSService:
    def new_handler(request: SessionRequest) -> SockJSTCPSocket:
        if context.sessions.full():
            raise SessionRefused(503, "too many sessions (proxy.max_sessions)")
        return SockJSTCPSocket(context, request)

    def originless_refusal(page: str | None, host: str | None) -> str | None:
        return None if context.policy.page_allowed(page, host) else ORIGINLESS_REFUSAL

    return SockJSService("sockjs", new_handler, sockjs_options(context), context.reactor, originless_refusal)


def sockjs_resource(context: ServerContext) -> SockJSResource:
    """``/sockjs``: what ``orbited.web.transport_children`` mounts."""
    from orbited.transports.websocket import websocket_factory

    service = tcpsocket_service(context)
    upgrade = WebSocketUpgrade(service, websocket_factory(context, SockJSWebSocketProtocol))
    return SockJSResource(service, upgrade)
