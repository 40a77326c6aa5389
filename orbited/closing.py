"""Closing a TCP connection whose peer may never read what is left to send.

``loseConnection`` sends what Twisted still buffers and closes after; a peer
that has stopped reading (a hung backend, a client that went quiet) keeps it
open for ever, with its descriptor and its buffers, counted by nothing.
Every such close here gets LINGER seconds to finish, then is cut.
"""

from __future__ import annotations

from typing import Any

LINGER = 5.0  # seconds a closing connection may take to flush before it is cut


def close_gracefully(transport: Any, reactor: Any) -> None:
    """loseConnection, cut after LINGER seconds if the peer does not read what is left.

    A registered producer is unregistered first: Twisted waits for a paused one
    to be resumed before it closes."""
    if getattr(transport, "producer", None) is not None:
        transport.unregisterProducer()
    transport.loseConnection()

    def cut() -> None:
        if getattr(transport, "connected", False):
            transport.abortConnection()

    reactor.callLater(LINGER, cut)
