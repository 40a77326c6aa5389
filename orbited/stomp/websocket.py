"""``/stomp``: STOMP over WebSocket, a second front door to the same broker.

Subprotocols ``v12.stomp``, ``v11.stomp`` and ``v10.stomp`` (the highest
the client offers is chosen; the STOMP version itself is negotiated by
CONNECT as over TCP).  A WebSocket message may carry one frame, several, or
part of one.  Frames we send are one message each: text when the frame is
UTF-8, binary when its body is not.

Pages from other origins are refused as on ``/ws`` (same host as the Host
header, or ``[global] origins``).  Delivery writes pre-built, unmasked
WebSocket frames straight to the TCP transport (no compression is ever
negotiated here), because autobahn's ``sendMessage`` costs several times
the rest of a fan-out delivery.  autobahn's protocol owns ``state``,
``connected`` and ``peer``; nothing here assigns them.
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING, Any

from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from orbited.addresses import peer_text
from orbited.closing import cut_when_stalled
from orbited.directwrite import write_now
from orbited.session import CLOSE_GOING_AWAY, CLOSE_NORMAL
from orbited.stomp.connection import StompConnection
from orbited.transports.websocket import ServerProtocol, page_origin, websocket_factory

if TYPE_CHECKING:
    from orbited.context import ServerContext

log = logging.getLogger("orbited.stomp")

SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")
STATE_OPEN = WebSocketProtocol.STATE_OPEN


def frame_header(length: int, binary: bool) -> bytes:
    """RFC 6455 header of one unmasked, unfragmented server frame."""
    first = 0x82 if binary else 0x81
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


@implementer(IPushProducer)
class SocketBuffer:
    """Told by the TCP transport when its send buffer is full or drained."""

    def __init__(self, connection: StompConnection):
        self.connection = connection

    def pauseProducing(self) -> None:
        self.connection.congestion_started()

    def resumeProducing(self) -> None:
        self.connection.congestion_ended()

    def stopProducing(self) -> None:
        pass


class StompWebSocket(ServerProtocol):
    stompConnection: StompConnection | None = None
    _socketBuffer: SocketBuffer | None = None
    _closingStomp = False
    _heldFrames: list[bytes] | None = None

    def onConnect(self, request: Any) -> str | None:
        context: ServerContext = self.factory.context
        headers = request.headers
        origin = page_origin(request)
        if not context.policy.origin_allowed(origin, headers.get("host")):
            log.warning("refusing /stomp WebSocket from %s: origin %s is not allowed ([global] origins)",
                        peer_text(self.transport.getPeer()), origin)
            raise ConnectionDeny(403, "origin not allowed")
        if context.broker.full():
            log.warning("refusing /stomp WebSocket from %s: %d connections open (max_connections)",
                        peer_text(self.transport.getPeer()), len(context.broker.connections))
            raise ConnectionDeny(503, "too many connections")
        for name in SUBPROTOCOLS:
            if name in request.protocols:
                return name
        return None

    def onOpen(self) -> None:
        context: ServerContext = self.factory.context
        transport = self.transport
        # The HTTP channel registered itself as this socket's producer; we take its place.
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        self.stompConnection = connection = StompConnection(context.broker, self,
                                                            peer_text(transport.getPeer()), "ws")
        self._socketBuffer = SocketBuffer(connection)
        transport.registerProducer(self._socketBuffer, True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.stompConnection is not None:
            self.stompConnection.receive(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        connection, self.stompConnection = self.stompConnection, None
        self._socketBuffer = None  # it refers to the connection, which refers to us
        if connection is not None:
            connection.connection_lost("websocket closed")

    # Outbox

    def write(self, data: bytes, binary: bool = False) -> None:
        if self.state != STATE_OPEN:
            return  # closing: the peer will not read it
        if self._perMessageCompress is not None:
            self.flush()
            self.sendMessage(data, binary)
            return
        frame = frame_header(len(data), binary) + data
        held = self._heldFrames
        if held is not None:
            held.append(frame)
        elif self.stompConnection is not None and self.stompConnection.broker.batch.depth:
            self._heldFrames = [frame]
            self.stompConnection.broker.batch.held.append(self)
        else:
            write_now(self.transport, frame)

    def flush(self) -> None:
        held, self._heldFrames = self._heldFrames, None
        if held and self.state == STATE_OPEN:
            write_now(self.transport, held[0] if len(held) == 1 else b"".join(held))

    def close(self, abort: bool) -> None:
        if self._closingStomp:
            return
        self._closingStomp = True
        transport = self.transport
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        if abort:
            self.dropConnection(abort=True)
            return
        if self.state == STATE_OPEN:
            # 1001 (going away) at shutdown, as /ws says it; sendCloseFrame because autobahn's
            # sendClose refuses 1001
            self.sendCloseFrame(CLOSE_GOING_AWAY if self.factory.context.broker.stopping else CLOSE_NORMAL)
        else:
            self.dropConnection(abort=False)
        # A publisher the broker stopped reading from (flow control) must be read again, or its
        # answer to our close waits behind the frames it sent meanwhile and the close takes the
        # full close-handshake timeout; the TCP shell's close_gracefully reads on the same way.
        transport.resumeProducing()
        # Not a fixed deadline: a client still reading the frames before its RECEIPT or ERROR
        # slowly was cut with them (10 s after the close); one that takes nothing is cut.
        cut_when_stalled(transport, self.factory.context.reactor)

    def pause_reading(self) -> None:
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        self.transport.resumeProducing()


def stomp_websocket_factory(context: ServerContext) -> Any:
    return websocket_factory(context, StompWebSocket)
