"""``/ws``: a TCPSocket over one RFC 6455 WebSocket (autobahn, on the shared Site).

The endpoint is an autobahn ``WebSocketResource`` in the resource tree; the
lean HTTP layer finds it while traversing an upgrade request and hands the
connection to a :class:`WebSocketSession` with the request head as it came
(:mod:`orbited.http.upgrade`), so no HTTP request object is rendered.

The first text message is ``host:port``; the answer is a text message ``1``
or ``0`` + code, then binary messages carry the bytes both ways.  Backend
bytes go straight to the browser's TCP transport and TCP flow control does
the rest: the browser transport pauses the backend when its buffer fills, the
backend transport pauses reading from the browser.

The data path has a fast lane (:mod:`orbited.transports.wsframes`): complete,
masked, unfragmented binary frames -- all a TCPSocket sends after its
handshake -- are parsed and unmasked here and written back as binary frames
directly, and so is the handshake itself, a small text frame of valid UTF-8;
anything else (other text, fragments, control frames, a frame split
across reads, a frame over the limit) goes through autobahn unchanged, so
autobahn remains the judge of the protocol.  Measured: about half the server
CPU per round trip.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pprint import pformat
from typing import TYPE_CHECKING

import autobahn.twisted.websocket as autobahn_twisted
import autobahn.util as autobahn_util
import autobahn.websocket.protocol as autobahn_protocol
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import succeed
from twisted.internet.main import CONNECTION_DONE as connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from orbited.addresses import peer_text
from orbited.closing import cut_when_stalled, unsent_to_peer
from orbited.directwrite import unsent_bytes
from orbited.http.upgrade import WebSocketEndpoint
from orbited.session import ISession, ISessionProtocol, close_code, close_reason
from orbited.transports.wsframes import binary_frame_header, take_binary_frames, take_text_frame

if TYPE_CHECKING:
    from orbited.context import ServerContext

log = logging.getLogger("orbited.transports.websocket")

SUBPROTOCOL = "binary"
# Bytes waiting to be sent to a browser above which its pings go unanswered (RFC 6455 5.5.3
# lets an endpoint answer only the latest of several pings): a client that sends pings and
# never reads grew the server's buffer of pongs without bound, 4 MB a second on loopback.
PONG_BACKLOG = 64 * 1024
# How much one read of a browser's socket takes, per connection (see ServerProtocol.dataReceived).
# autobahn's cost is per frame (and it copies the rest of the read per frame): a read of 64 KiB
# of 1-byte fragments took 230 ms, with every other session of the process waiting.
READ_MOST = 64 * 1024  # Twisted's FileDescriptor.bufferSize
READ_LEAST = 1024
FRAMES_PER_READ = 64  # more in one read: the next reads are smaller

class _Lazy:
    """A debug-log argument formatted on demand.  autobahn formats its options and
    the names of its methods for debug lines on every connection, read and close
    whether or not debug is on (pformat: 1.6 ms a connect, most of the cost then;
    hltype and hlval: 5 to 7 calls a connect).  Every such call in the two
    modules patched below is an argument of a log call; with debug on, the lines
    read as before."""

    __slots__ = ("args", "function")

    def __init__(self, function: Callable[..., object], *args: object):
        self.function = function
        self.args = args

    def __str__(self) -> str:
        return str(self.function(*self.args))

    def __format__(self, spec: str) -> str:  # txaio formats its lines with str.format
        return format(str(self), spec)


def _lazy(function: Callable[..., object]) -> Callable[..., _Lazy]:
    return lambda *args: _Lazy(function, *args)


autobahn_protocol.pformat = _lazy(pformat)
for _module in (autobahn_protocol, autobahn_twisted):
    _module.hltype = _lazy(autobahn_util.hltype)
    _module.hlval = _lazy(autobahn_util.hlval)


class ServerProtocol(WebSocketServerProtocol):
    """autobahn's server protocol, freed by reference counting once its connection is gone.

    autobahn resolves ``is_closed`` with the protocol itself: a cycle (protocol,
    Deferred, protocol) that only CPython's cyclic collector can free.  With the
    collector's thresholds raised for latency (orbited/cli.py), every closed
    WebSocket, with its transport, buffers and backend connection, then stayed
    in memory until the next full collection.
    """

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # type: ignore[assignment]
        super().connectionLost(reason)
        self.is_closed = succeed(None)

    def dropConnection(self, abort: bool = False) -> None:
        """autobahn's close of the TCP connection, with two faults mended:

        - once a close handshake completed it aborted (RST) when the close was ours, and so also
          when it answered an invalid close frame (a reserved code, a 1-byte payload, a reason
          that is not UTF-8) with its 1002 or 1007: the reset threw that frame away, so the
          browser saw a reset instead of why.  After a completed handshake nothing is left to
          read: the close is a FIN after the frames, as after a browser's valid close;
        - that orderly close waited for every byte written to reach the browser, and a browser
          that sent its close frame and then read nothing (behind a backend that kept sending)
          held its socket, and its backend connection, for as long as it liked: the session
          ends only when the socket does.  Such a close is cut once the browser has taken
          nothing for closing.LINGER seconds."""
        orderly = not abort or self.wasClean
        if self.state == WebSocketServerProtocol.STATE_CLOSED or not orderly:
            super().dropConnection(abort=abort)
            return
        transport = self.transport
        super().dropConnection(abort=False)
        cut_when_stalled(transport, self.factory.context.reactor)

    def onMessageFrame(self, payload: list[bytes]) -> None:
        """One frame of a message: its pieces are added to one buffer once the message has a
        second frame.  autobahn kept every frame's payload as its own bytes object until the
        message ended, and a message sent as 2-byte fragments held about 22 bytes of memory per
        byte of it (93 MB for one ``ws.max_message_size`` message of 4 MiB, a connection)."""
        if self.failedByMe:
            return
        data = self.message_data
        if not data:
            data.extend(payload)  # a message's first frame, most often its only one
            return
        if len(data) != 1 or type(data[0]) is not bytearray:
            data[:] = [bytearray().join(data)]
        whole = data[0]
        for piece in payload:
            whole += piece

    _frames = 0  # frames handled in the read under way

    def dataReceived(self, data: bytes) -> None:
        """A read, and the size of the next: a quarter of it after a read of more than
        ``FRAMES_PER_READ`` frames (down to ``READ_LEAST``), twice it after one of a quarter of that
        or fewer (up to ``READ_MOST``).  The reactor serves every other socket between two reads,
        so a client that sends tiny frames (fragments, pings, small messages by the thousand)
        holds the loop for a few milliseconds a turn instead of a quarter of a second, and
        pays for its frames with its own throughput.  Large messages keep 64 KiB reads.
        (The transport's bufferSize is also where it pauses a producer of writes to it, so that
        connection's backlog of unsent bytes is smaller meanwhile.)"""
        self._frames = 0
        self.receive(data)
        transport = self.transport
        if transport is None:
            return
        size = transport.bufferSize
        if self._frames > FRAMES_PER_READ:
            if size > READ_LEAST:
                transport.bufferSize = max(READ_LEAST, size // 4)
        elif size < READ_MOST and self._frames <= FRAMES_PER_READ // 4:
            transport.bufferSize = min(READ_MOST, size * 2)

    def receive(self, data: bytes) -> None:
        """What a read brings: autobahn's frame parser (subclasses may take a faster path, counting
        the frames they take in ``_frames``)."""
        WebSocketServerProtocol.dataReceived(self, data)

    def onFrameEnd(self) -> bool | None:
        self._frames += 1
        return super().onFrameEnd()

    def onPing(self, payload: bytes) -> None:
        """A pong, unless more than ``PONG_BACKLOG`` bytes already wait for the browser: then
        it is not reading what it is sent, and its pings are read and dropped."""
        if unsent_bytes(self.transport) <= PONG_BACKLOG:
            super().onPing(payload)

    closeUnsent = sys.maxsize  # bytes still on their way to the browser when our close frame was last timed

    def onCloseHandshakeTimeout(self) -> None:
        """autobahn resets a socket whose browser has not answered our close frame within
        ``closeHandshakeTimeout`` (5 s).  That frame waits behind everything sent before it, so a
        browser still reading the tail (a backend's last megabytes, a slow link) lost it.  The
        timeout now runs from the last byte the browser took.  When every byte has reached the
        browser's machine the socket is closed with a FIN, not a reset: a browser still reading
        its receive buffer slowly is not seen taking anything, and a reset may make its system
        throw away what it has not read yet (Windows does; over wss a slow page lost 1.2 MB)."""
        if self.state == WebSocketServerProtocol.STATE_CLOSED:
            super().onCloseHandshakeTimeout()
            return
        left = unsent_to_peer(self.transport)
        if 0 < left < self.closeUnsent:
            self.closeUnsent = left
            self.closeHandshakeTimeoutCall = self.factory._batched_timer.call_later(
                self.closeHandshakeTimeout, self.onCloseHandshakeTimeout)
            return
        if left:
            super().onCloseHandshakeTimeout()
            return
        # autobahn's own timeout, but with an orderly close
        self.closeHandshakeTimeoutCall = None
        self.wasClean = False
        self.wasNotCleanReason = "WebSocket closing handshake timeout (peer did not finish the closing handshake in time)"
        self.wasCloseHandshakeTimeout = True
        self.dropConnection(abort=False)


@implementer(ISession)
class WebSocketSession(ServerProtocol):
    """One browser WebSocket carrying one TCPSocket.

    autobahn's protocol already owns ``state``, ``connected``, ``peer`` and
    ``transport``; the session's own attributes avoid those names.
    """

    transportName = "ws"
    sessionProtocol: ISessionProtocol | None = None
    clientAddress = ""
    hostHeader: str | None = None
    origin: str | None = None

    def onConnect(self, request):
        context: ServerContext = self.factory.context
        if context.sessions.full():
            log.warning("refusing WebSocket from %s: %d sessions open (proxy.max_sessions)",
                        peer_text(self.transport.getPeer()), len(context.sessions.live))
            raise ConnectionDeny(503, "too many sessions")
        headers = request.headers
        self.hostHeader = headers.get("host")
        self.origin = page_origin(request)
        self.clientAddress = peer_text(self.transport.getPeer())
        return SUBPROTOCOL if SUBPROTOCOL in request.protocols else None

    def onOpen(self) -> None:
        # With http.engine = twisted, twisted.web's channel registered itself
        # as this socket's producer (the lean layer never does).  The session
        # protocol registers the backend instead.
        transport = self.transport
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        context: ServerContext = self.factory.context
        context.sessions.add(self)
        self.sessionProtocol = protocol = context.newSessionProtocol()
        protocol.sessionOpened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sessionProtocol.dataReceived(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        protocol, self.sessionProtocol = self.sessionProtocol, None
        if protocol is None:
            return
        self.factory.context.sessions.remove(self)
        if code is None or code == 1006:
            why = "browser connection lost"
        else:
            # a close we started (shutdown's 1001) is not the browser's doing; autobahn reports
            # the code the browser echoed (1000 from many clients), so name the one we sent
            if self.closedByMe and self.localCloseCode is not None:
                sent = self.localCloseReason  # the UTF-8 bytes that went in the frame
                who, code = "closed by the server", self.localCloseCode
                reason = sent.decode("utf-8", "replace") if isinstance(sent, bytes) else sent
            else:
                who = "browser closed"
            why = f"{who} with {code}" + (f" {reason}" if reason else "")
        protocol.sessionClosed(why)

    # Hot path: autobahn's versions build debug-log arguments for every read and
    # write even when debug logging is off; these do the same work without them.

    def receive(self, data: bytes) -> None:
        if (self.state != WebSocketServerProtocol.STATE_OPEN or self.data or self.current_frame is not None
                or self.inside_message or self._perMessageCompress is not None):
            self._dataReceived(data)
            return
        self.trafficStats.incomingOctetsWireLevel += len(data)
        if data[0] == 0x81:  # a whole text frame: the handshake (host:port), once a session
            text, used = take_text_frame(data, self.maxMessagePayloadSize)
            if text is not None:
                if self.autoPingTimeoutCall is not None:
                    self._cancelAutoPingTimeoutCall()  # a data frame is as good as a pong (below too)
                self.onMessage(text, False)
                if self.state != WebSocketServerProtocol.STATE_OPEN or used == len(data):
                    return
                data = data[used:]
        payloads, used = take_binary_frames(data, self.maxMessagePayloadSize)
        self._frames += len(payloads)
        if used and self.autoPingTimeoutCall is not None:
            # as autobahn's own frame path does (autoPingRestartOnAnyTraffic)
            self._cancelAutoPingTimeoutCall()
        for payload in payloads:
            self.onMessage(payload, True)
            if self.state != WebSocketServerProtocol.STATE_OPEN:
                return  # closed by the session protocol: the rest of this read is moot
        if used < len(data):
            self.data += data[used:] if used else data
            self.consumeData()

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if chopsize or sync or self.send_queue or self.logOctets:
            WebSocketServerProtocol.sendData(self, data, sync, chopsize)
            return
        self.transport.write(data)
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif self.state == WebSocketServerProtocol.STATE_CONNECTING:
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)

    # ISession

    # After a close frame has gone either way, the browser will not read what the backend sends
    # (autobahn's sendMessage would raise); onClose tells the session protocol soon after.

    def write(self, data: bytes) -> None:
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        if self._perMessageCompress is None:
            self.transport.write(binary_frame_header(len(data)) + data)
        else:
            self.sendMessage(data, True)

    carrying = False  # answered '1': the socket carries bytes, and keepalives (below) may go

    def answerHandshake(self, reply: str) -> None:
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self.sendMessage(reply.encode("ascii"), False)
            self.carrying = reply == "1"

    def close(self, reason: str, code: int | None = None) -> None:
        # sendCloseFrame, not sendClose: autobahn's sendClose refuses 1001 (going away).
        self.sendCloseFrame(close_code(reason, code), close_reason(reason).encode("utf-8"))

    # The backend reads slowly: the proxy stops reading the browser (flow control).  A pong
    # the browser sends then waits behind data we do not read, so a ping timeout in that
    # time is our silence, not the browser's; a healthy browser was dropped at
    # ping_interval + ping_timeout behind any backend slower than about 70 KB/s.

    reading_paused = False
    paused_since_ping = False  # we stopped reading the browser at some time since the last ping

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()
        self.reading_paused = self.paused_since_ping = True

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()
        self.reading_paused = False

    def _sendAutoPing(self) -> None:
        self.paused_since_ping = self.reading_paused
        WebSocketServerProtocol._sendAutoPing(self)
        if self.carrying:
            # A page cannot see pings: an empty binary message (no bytes for the socket) is how it
            # knows Orbited is there, so that a dead path closes its socket (Orbited.js, after
            # heartbeatTimeout) instead of leaving it open for ever.
            self.write(b"")

    def onAutoPingTimeout(self) -> None:
        if not self.paused_since_ping:
            WebSocketServerProtocol.onAutoPingTimeout(self)
            return
        self.autoPingTimeoutCall = None
        self.autoPingPending = None
        if self.autoPingInterval and self.state == WebSocketServerProtocol.STATE_OPEN:
            self.autoPingPendingCall = self.factory._batched_timer.call_later(self.autoPingInterval,
                                                                             self._sendAutoPing)

    def stopProducing(self) -> None:
        """The session protocol closes us with a reason; nothing to do here."""


def page_origin(request: object) -> str | None:
    """The page's origin as the handshake's version carries it, or None without one.

    RFC 6455 (version 13) browsers send ``Origin``; hybi-10 (version 8) ones
    sent ``Sec-WebSocket-Origin``, which autobahn still accepts.  Reading only
    ``Origin`` let a version-8 handshake from any page pass as "not a browser".
    autobahn reads the header that the request's version defines.
    """
    return getattr(request, "origin", None) or None


def websocket_factory(context: ServerContext, protocol: type = WebSocketSession) -> WebSocketServerFactory:
    """An autobahn factory with Orbited's limits, shared by /ws and the conformance echo."""
    settings = context.config.settings
    # server=None: the 101 carries no Server header, as no other response does
    # (orbited/http/response.py); autobahn's default names itself and its version.
    factory = WebSocketServerFactory(server=None)
    factory.protocol = protocol
    factory.context = context
    max_message = settings["ws.max_message_size"]
    factory.setProtocolOptions(
        maxMessagePayloadSize=max_message,
        maxFramePayloadSize=max_message,
        autoPingInterval=settings["session.ping_interval"],
        autoPingTimeout=settings["session.ping_timeout"],
        openHandshakeTimeout=settings["http.timeout"],
        closeHandshakeTimeout=5,
        tcpNoDelay=True,
        # A sandboxed or file:// page (Origin 'null') is judged by the access policy like any
        # other page, so that it gets 0106 at once; autobahn's own 400 let Orbited.js try the
        # other transports and report 101 seconds later.  origins = * allows it, as it says.
        allowNullOrigin=True,
        failByDrop=False,  # say why (1002, 1007, 1009) before closing, instead of just dropping
        # A GET without Upgrade gets 426, not autobahn's status page: that page names autobahn and
        # its version, and its ?redirect= parameter made the endpoint an open redirect.
        webStatus=False,
    )
    return factory


def websocket_resource(context: ServerContext) -> WebSocketResource:
    factory = websocket_factory(context)
    factory.delegable = True  # a worker process can serve /ws alone (orbited/workers.py)
    return WebSocketEndpoint(factory)
