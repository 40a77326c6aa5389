"""``stomp://`` listeners: the Twisted shell around :class:`StompConnection` for TCP.

The protocol is the connection's outbox and also the push producer of its
own transport: Twisted calls ``pauseProducing`` when the socket's send
buffer is full and ``resumeProducing`` when it drained, which is how the
broker learns a subscriber is slow.  Frames are written straight to the
transport; nothing on this path logs or copies.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from orbited.addresses import peer_text
from orbited.closing import close_gracefully
from orbited.directwrite import write_now
from orbited.stomp.broker import StompBroker
from orbited.stomp.codec import Frame, encode_frame
from orbited.stomp.connection import StompConnection

log = logging.getLogger("orbited.stomp")

@implementer(IPushProducer)
class StompProtocol(Protocol):
    connection: StompConnection | None = None

    def __init__(self, broker: StompBroker, reactor: Any):
        self.broker = broker
        self.batch = broker.batch
        self.reactor = reactor
        self._closing = False
        self._held: list[bytes] | None = None

    def connectionMade(self) -> None:
        transport = self.transport
        if hasattr(transport, "setTcpNoDelay"):
            transport.setTcpNoDelay(True)
        transport.registerProducer(self, True)
        self.connection = StompConnection(self.broker, self, peer_text(transport.getPeer()), "tcp")

    def dataReceived(self, data: bytes) -> None:
        self.connection.receive(data)

    def connectionLost(self, reason: object = None) -> None:
        connection, self.connection = self.connection, None  # it refers to us (its outbox)
        if connection is not None:
            connection.connection_lost("connection lost")

    # IPushProducer: the transport's send buffer filled up or drained.

    def pauseProducing(self) -> None:
        self.connection.congestion_started()

    def resumeProducing(self) -> None:
        self.connection.congestion_ended()

    def stopProducing(self) -> None:
        """The connection is going; connectionLost does the cleanup."""

    # Outbox

    def write(self, data: bytes, binary: bool = False) -> None:
        held = self._held
        if held is not None:
            held.append(data)
        elif self.batch.depth:
            self._held = [data]
            self.batch.held.append(self)
        else:
            write_now(self.transport, data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held:
            write_now(self.transport, held[0] if len(held) == 1 else b"".join(held))

    def close(self, abort: bool) -> None:
        if self._closing:
            return
        self._closing = True
        if abort:
            self.transport.abortConnection()
        else:
            close_gracefully(self.transport, self.reactor)

    def pause_reading(self) -> None:
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        self.transport.resumeProducing()


class RefusedProtocol(Protocol):
    """The broker is at max_connections: say so in STOMP and hang up."""

    def connectionMade(self) -> None:
        error = Frame("ERROR", {"message": "too many connections", "content-type": "text/plain"},
                      b"the broker is at its connection limit (max_connections); try again later")
        self.transport.write(encode_frame(error, None))
        self.transport.loseConnection()


class StompFactory(Factory):
    def __init__(self, broker: StompBroker, reactor: Any):
        self.broker = broker
        self.reactor = reactor

    def buildProtocol(self, addr: object) -> Protocol:
        if self.broker.full():
            log.warning("refusing STOMP connection from %s: %d connections open (max_connections)",
                        peer_text(addr), len(self.broker.connections))
            return RefusedProtocol()
        return StompProtocol(self.broker, self.reactor)
