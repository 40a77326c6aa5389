"""The WebSocket transports of a SockJS service: framed (``/<server>/<session>/websocket``) and raw.

An upgrade request is checked here (400 for a request that is not a
WebSocket handshake), then the HTTP channel's TCP transport is handed to
autobahn, with the same limits as ``/ws`` (``websocket_factory``).  A framed
socket carries SockJS frames (``o``, ``h``, ``a[...]``, ``c[...]``) and takes
JSON arrays of messages; a raw socket carries one message per WebSocket
message and nothing else.  Each socket is one session that ends with it.

Flow control is TCP's: the receiver is the push producer of the socket, so a
browser that reads slowly leaves messages queued in the session (whose
handler bounds them), and a slow handler stops the socket being read.

The hixie-76 handshake is accepted only when the service's options ask for it
(the conformance server); see ``hixie76``.
"""

from __future__ import annotations

import logging
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from orbited.addresses import peer_text
from orbited.session import close_reason
from orbited.transports.sockjs import framing, hixie76
from orbited.transports.sockjs.http_transports import client_address, session_request
from orbited.transports.sockjs.routing import Kind, Route
from orbited.transports.sockjs.service import (
    SessionRefused,
    SessionRequest,
    SockJSService,
)
from orbited.transports.sockjs.session import ReceiverFlow, SockJSSession
from orbited.transports.websocket import ServerProtocol, page_origin

log = logging.getLogger("orbited.sockjs")

BROKEN_FRAMING = (3000, "Broken framing.")
WS_NORMAL = 1000


def ws_close_code(code: int) -> int:
    """A SockJS close code as a WebSocket close code: 1000, 1001 (going away) or 3000-4999."""
    return code if code in (WS_NORMAL, 1001) or 3000 <= code <= 4999 else WS_NORMAL


def send_close(protocol: WebSocketServerProtocol, code: int, reason: str) -> None:
    # sendCloseFrame, not sendClose: autobahn's sendClose refuses 1001.
    protocol.sendCloseFrame(ws_close_code(code), close_reason(reason).encode("utf-8"), isReply=False)


# ---------------------------------------------------------------------------
# RFC 6455 (autobahn)


@implementer(IPushProducer)
class WebSocketReceiver(ReceiverFlow):
    """The receiving side of one autobahn socket, framed or raw."""

    def __init__(self, protocol: SockJSWebSocketProtocol, session: SockJSSession, raw: bool):
        self.protocol = protocol
        self.session = session
        self.raw = raw
        self.paused = False
        self.done = False

    def _send(self, text: bytes) -> None:
        # Once a close frame has gone either way the browser reads nothing more (and autobahn's
        # sendMessage raises); the socket's onClose detaches this receiver soon after.
        if self.protocol.state == WebSocketServerProtocol.STATE_OPEN:
            self.protocol.sendMessage(text, False)

    def send_open(self) -> None:
        if not self.raw:
            self._send(b"o")

    def send_heartbeat(self) -> None:
        if not self.raw:
            self._send(b"h")

    def send_messages(self, messages: list[str]) -> None:
        if self.raw:
            for text in messages:
                self._send(text.encode("utf-8", "replace"))
        else:
            self._send(framing.message_frame(messages).encode("utf-8"))

    def send_close(self, code: int, reason: str) -> None:
        if self.done:
            return
        self.done = True
        if self.raw:
            send_close(self.protocol, code, reason)
        else:
            self._send(framing.close_frame(code, reason).encode("utf-8"))
            send_close(self.protocol, WS_NORMAL, "Normal closure")
        self.session.detach(self)

    def abort(self) -> None:
        self.done = True
        self.protocol.dropConnection(abort=True)

    def pause_reading(self) -> None:
        self.protocol.transport.pauseProducing()

    def resume_reading(self) -> None:
        self.protocol.transport.resumeProducing()



class SockJSWebSocketProtocol(ServerProtocol):
    """One WebSocket of a SockJS service.

    autobahn's protocol owns ``state``, ``connected``, ``peer``, ``transport``
    and ``factory``; the SockJS attributes all start with ``sockjs``.
    """

    sockjsService: SockJSService | None = None
    sockjsRoute: Route | None = None
    sockjsSession: SockJSSession | None = None
    sockjsReceiver: WebSocketReceiver | None = None
    sockjsRaw = False

    def onConnect(self, request: Any) -> None:
        service = self.sockjsService
        route = self.sockjsRoute
        assert service is not None and route is not None
        self.sockjsRaw = route.kind is Kind.RAW_WEBSOCKET
        address = peer_text(self.transport.getPeer())
        headers = request.headers
        info = SessionRequest(route.session_id, "websocket-raw" if self.sockjsRaw else "websocket",
                              address, headers.get("host"), page_origin(request))
        try:
            self.sockjsSession = service.open_session(info, keep=False)
        except SessionRefused as refused:
            log.warning("%s: refused a WebSocket session for %s: %s", service.name, address, refused.message)
            raise ConnectionDeny(refused.status, refused.message) from None

    def onOpen(self) -> None:
        session = self.sockjsSession
        if session is None:
            return
        transport = self.transport
        # The HTTP channel registered itself as this socket's producer.
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        receiver = WebSocketReceiver(self, session, self.sockjsRaw)
        self.sockjsReceiver = receiver
        transport.registerProducer(receiver, True)
        session.attach(receiver)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.sockjsSession
        if session is None:
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            self._broken("binary message that is not UTF-8")
            return
        if self.sockjsRaw:
            session.deliver([text])
            return
        try:
            messages = framing.decode_websocket_message(text)
        except framing.PayloadError:
            self._broken("message that is not a JSON array of strings")
            return
        if messages:
            session.deliver(messages)

    def _broken(self, what: str) -> None:
        session, self.sockjsSession = self.sockjsSession, None
        receiver = self.sockjsReceiver
        if receiver is not None:
            receiver.done = True
        log.info("%s: WebSocket from %s sent a %s; closing it",
                 self.sockjsService.name if self.sockjsService else "sockjs", peer_text(self.transport.getPeer()), what)
        send_close(self, *BROKEN_FRAMING)
        if session is not None:
            session.end(f"browser sent a {what}")

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        session, self.sockjsSession = self.sockjsSession, None
        if session is None:
            return
        if code is None or code == 1006:
            why = "browser connection lost"
        else:
            why = f"browser closed the WebSocket with {code}" + (f" {reason}" if reason else "")
        receiver, self.sockjsReceiver = self.sockjsReceiver, None  # it refers to us
        if receiver is not None and session.receiver is receiver:
            receiver.done = True
            session.detach(receiver, lost=why)
        else:
            session.end(why)


# ---------------------------------------------------------------------------
# hixie-76


@implementer(IPushProducer)
class Hixie76Connection(ReceiverFlow, Protocol):
    """A framed SockJS session over hixie-76: protocol and receiver in one."""

    def __init__(self, session: SockJSSession, key1: str, key2: str, head: bytes, max_message: int):
        self.session = session
        self.key1 = key1
        self.key2 = key2
        self.head = head
        self.key3 = b""
        self.opened = False
        self.decoder = hixie76.FrameDecoder(max_message)
        self.paused = False
        self.done = False

    def connectionMade(self) -> None:
        transport = self.transport
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.registerProducer(self, True)
        # Headers before the 8-byte key: HAProxy forwards that key only once it has them.
        transport.write(self.head)

    def dataReceived(self, data: bytes) -> None:
        try:
            self._received(data)
        except (hixie76.Hixie76Error, framing.PayloadError) as error:
            log.info("hixie-76 WebSocket from %s: %s; closing it", peer_text(self.transport.getPeer()), error)
            self.done = True
            self.session.end(f"browser broke the hixie-76 framing: {error}")
            self.transport.loseConnection()

    def _received(self, data: bytes) -> None:
        if not self.opened:
            self.key3 += data
            if len(self.key3) < hixie76.KEY3_LENGTH:
                return
            key3, data = self.key3[:hixie76.KEY3_LENGTH], self.key3[hixie76.KEY3_LENGTH:]
            self.transport.write(hixie76.challenge_response(self.key1, self.key2, key3))
            self.opened = True
            self.session.attach(self)
        for event in self.decoder.feed(data):
            if isinstance(event, hixie76.CloseRequested):
                self.done = True
                self.transport.write(hixie76.CLOSE_FRAME)
                self.session.detach(self, lost="browser closed the WebSocket")
                self.transport.loseConnection()
                return
            messages = framing.decode_websocket_message(event.text)
            if messages:
                self.session.deliver(messages)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.done:
            return
        self.done = True
        if self.session.receiver is self:
            self.session.detach(self, lost="browser connection lost")
        else:
            self.session.end("browser connection lost")

    # Receiver

    def send_open(self) -> None:
        self.transport.write(hixie76.encode_text(framing.OPEN_FRAME))

    def send_heartbeat(self) -> None:
        self.transport.write(hixie76.encode_text(framing.HEARTBEAT_FRAME))

    def send_messages(self, messages: list[str]) -> None:
        self.transport.write(hixie76.encode_text(framing.message_frame(messages)))

    def send_close(self, code: int, reason: str) -> None:
        if self.done:
            return
        self.done = True
        self.transport.write(hixie76.encode_text(framing.close_frame(code, reason)) + hixie76.CLOSE_FRAME)
        self.transport.loseConnection()
        self.session.detach(self)

    def abort(self) -> None:
        self.done = True
        self.transport.abortConnection()

    def pause_reading(self) -> None:
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        self.transport.resumeProducing()



# ---------------------------------------------------------------------------
# the upgrade


class WebSocketUpgrade:
    """Checks an upgrade request and hands its connection to the right WebSocket protocol."""

    def __init__(self, service: SockJSService, factory: WebSocketServerFactory):
        self.service = service
        self.factory = factory
        self.max_message = getattr(factory, "maxMessagePayloadSize", 0) or 1 << 22

    def render(self, request: Request, route: Route) -> Any:
        upgrade = (request.getHeader("upgrade") or "").strip().lower()
        if upgrade != "websocket":
            return _bad_request(request, 'Not a valid websocket request: can "Upgrade" only to "WebSocket".')
        tokens = {t.strip().lower() for t in (request.getHeader("connection") or "").split(",")}
        if "upgrade" not in tokens:
            return _bad_request(request, 'Not a valid websocket request: "Connection" must be "Upgrade".')
        if request.channel is None or request.channel.transport is None:
            return _bad_request(request, "WebSocket needs HTTP/1.1.")
        key1 = request.getHeader("sec-websocket-key1")
        key2 = request.getHeader("sec-websocket-key2")
        if request.getHeader("sec-websocket-version") is None and key1 and key2:
            return self._hixie76(request, route, key1, key2)
        protocol = self.factory.buildProtocol(request.transport.getPeer())
        protocol.sockjsService = self.service
        protocol.sockjsRoute = route
        replay = request.method + b" " + request.uri + b" HTTP/1.1\r\n"
        for name, values in request.requestHeaders.getAllRawHeaders():
            replay += name + b": " + b",".join(values) + b"\r\n"
        replay += b"\r\n"
        # autobahn parses the handshake itself, from the request as it came.
        _take_over(request, protocol, replay)
        return NOT_DONE_YET

    def _hixie76(self, request: Request, route: Route, key1: str, key2: str) -> Any:
        if not (self.service.options.hixie76 and route.kind is Kind.SESSION):
            return _bad_request(request, "Only supported WebSocket protocol is RFC 6455.")
        try:
            hixie76.check_keys(key1, key2)
        except hixie76.Hixie76Error as error:
            return _bad_request(request, f"Not a valid websocket request: {error}")
        try:
            session = self.service.open_session(session_request(request, route.session_id, "websocket"),
                                                keep=False)
        except SessionRefused as refused:
            log.warning("%s: refused a WebSocket session for %s: %s", self.service.name,
                        client_address(request), refused.message)
            request.setResponseCode(refused.status)
            return refused.message.encode("utf-8")
        scheme = "wss" if request.isSecure() else "ws"
        location = f"{scheme}://{request.getHeader('host') or ''}{request.uri.decode('latin-1')}"
        origin = request.getHeader("origin") or "null"
        head = hixie76.response_head(origin, location)
        _take_over(request, Hixie76Connection(session, key1, key2, head, self.max_message))
        return NOT_DONE_YET


def _bad_request(request: Request, text: str) -> bytes:
    request.setResponseCode(400)
    request.setHeader(b"content-type", b"text/plain; charset=UTF-8")
    return text.encode("utf-8")


def _take_over(request: Request, protocol: Protocol, first: bytes = b"") -> None:
    """Move the request's connection from HTTP to ``protocol``; give it ``first``, then what followed the head.

    On Orbited's own HTTP layer the request hands the connection over
    (``takeover``); on twisted.web the transport is swapped the way
    autobahn's ``WebSocketResource.render`` does it.
    """
    takeover = getattr(request, "takeover", None)
    if takeover is not None:
        transport, rest = takeover()
    else:
        channel = request.channel
        transport, channel.transport = channel.transport, None
        # What came right behind the head (Hixie-76's key3) is still in LineReceiver's buffer,
        # where the HTTP channel would wait for a line end that never comes.
        pending, channel._buffer = getattr(channel, "_buffer", b""), b""
        rest = pending + b"".join(getattr(channel, "_dataBuffer", None) or [])
    if isinstance(transport, ProtocolWrapper):
        transport.wrappedProtocol = protocol  # TLS
    elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
        transport.protocol.wrappedProtocol = protocol
    else:
        transport.protocol = protocol
    protocol.makeConnection(transport)
    # The HTTP side may have paused reading while it handled this request; nothing else comes for it.
    if hasattr(transport, "resumeProducing"):
        transport.resumeProducing()
    data = first + rest
    if data:
        protocol.dataReceived(data)
