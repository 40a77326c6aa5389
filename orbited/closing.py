"""Closing a TCP connection so that the peer gets every byte written before the close.

It must never cut a peer that is still reading, and never hold for ever one
that is not.  A plain ``loseConnection`` fails both ways:

- it stops reading.  A socket closed while bytes from its peer wait unread
  is reset (RST), and the kernel throws away what it had not sent yet, up to
  its whole send buffer (megabytes on loopback): a backend that kept talking
  while the browser's last bytes were on their way lost them.  So the write
  side is shut after the flush (FIN) and reading goes on, the protocol
  dropping what arrives, until the peer closes too or everything written has
  reached it;
- a peer that has stopped reading (a hung backend, a client that went quiet)
  keeps it open for ever, with its descriptor and its buffers, counted by
  nothing.  Such a close is cut once the peer has taken nothing for LINGER
  seconds.  A slow peer that still reads is not: it gets the tail, however
  long that takes (a fixed LINGER cut megabytes from a backend reading a
  few hundred KB/s).
"""

from __future__ import annotations

import fcntl
import struct
import termios
import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp

from orbited.directwrite import unsent_bytes

LINGER = 5.0  # seconds a closing connection may go without its peer taking any byte, then it is cut
FIRST_CHECK = 0.05  # the first look at a closing connection; the wait doubles up to LINGER
_OUTQ = struct.pack("i", 0)


def unsent_to_peer(transport: Any) -> int:
    """Bytes written to ``transport`` that have not reached its peer: Twisted's buffers and the
    kernel's send queue (SIOCOUTQ: sent but unacknowledged, or not sent yet).

    Twisted refills the kernel's queue from its buffer as the peer reads, so the kernel's
    count alone stays level while a slow peer makes progress; a TLS connection's buffer is
    that of the TCP transport under its TLS protocol."""
    waiting = unsent_bytes(transport)
    under = getattr(transport, "transport", None)  # TLSMemoryBIOProtocol's TCP transport
    if under is not None:
        waiting += unsent_bytes(under)
    try:
        fileno = transport.getHandle().fileno()
    except AttributeError:  # closed (Twisted drops the socket), or not a socket at all
        return waiting
    try:
        waiting += struct.unpack("i", fcntl.ioctl(fileno, termios.TIOCOUTQ, _OUTQ))[0]
    except (OSError, ValueError, TypeError):  # closed meanwhile, or not a TCP socket
        pass
    return waiting


def close_gracefully(transport: Any, reactor: Any, peer_done: bool = False) -> None:
    """Send what is left, then close; cut only a peer that takes nothing for LINGER seconds.

    ``peer_done``: the peer has closed its side (EOF), so there is nothing left to read.
    Otherwise reading goes on (resumed if it was paused) and the protocol must drop what
    arrives; a half-closeable protocol should call ``loseConnection`` on its peer's EOF.
    A registered producer is unregistered first: Twisted waits for a paused one to be
    resumed before it closes."""
    if getattr(transport, "producer", None) is not None:
        transport.unregisterProducer()
    if peer_done or not isinstance(transport, tcp.Connection) or transport.TLS:
        transport.loseConnection()
    else:
        transport.loseWriteConnection()
        transport.resumeProducing()
    cut_when_stalled(transport, reactor, _lose)


def _lose(transport: Any) -> None:
    transport.loseConnection()


def cut_when_stalled(transport: Any, reactor: Any, delivered: Callable[[Any], object] | None = None) -> None:
    """Watch a closing connection: abort it once its peer has taken nothing for LINGER seconds.

    ``delivered(transport)`` is called instead once every byte written has reached the peer
    (closing then loses nothing, even with a reset); without it such a connection is left to
    its protocol to finish, and cut LINGER seconds later if it has not.  The watch holds the
    transport weakly: the reactor keeps one that is still open, and one that has closed must
    not be kept, with its protocol and the whole session behind it, until the next look
    (5,000 sessions held at 1,000 closes a second when that was LINGER seconds)."""
    reactor.callLater(FIRST_CHECK, _watch, weakref.ref(transport), reactor, delivered, FIRST_CHECK,
                      unsent_to_peer(transport), reactor.seconds())


def _watch(closing: weakref.ref, reactor: Any, delivered: Callable[[Any], object] | None, wait: float,
           left: int, progressed: float) -> None:
    """One look at a closing connection; the next one comes twice as late, at most LINGER."""
    transport = closing()
    if transport is None or not getattr(transport, "connected", False) or getattr(transport, "disconnected", False):
        return
    now_left = unsent_to_peer(transport)
    now = reactor.seconds()
    if now_left == 0 and delivered is not None:
        delivered(transport)
        return
    if now_left < left:
        progressed = now
    elif now - progressed >= LINGER:
        transport.abortConnection()
        return
    wait = min(wait * 2, LINGER)
    reactor.callLater(wait, _watch, closing, reactor, delivered, wait, now_left, progressed)
