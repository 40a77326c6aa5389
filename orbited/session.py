"""The seam between transports and what runs on top of them.

A transport adapter (``/ws``, ``/sockjs``, ``/tcp``) turns its wire protocol
into one :class:`ISession`; the proxy consumes it as an
:class:`ISessionProtocol`.  The proxy never learns which transport carries it
and a transport never learns what a backend is.  Flow control crosses the seam
the Twisted way: a session is an ``IPushProducer`` (it can stop reading from
the browser) and an ``IConsumer`` (it pauses a registered producer when the
browser reads slowly).
"""

from __future__ import annotations

import logging
import resource
import time
from collections import Counter

from twisted.internet.interfaces import IConsumer, IPushProducer
from zope.interface import Attribute, Interface

log = logging.getLogger("orbited.session")

# Close reason used for every session when the server stops.
SHUTDOWN_REASON = "server shutting down"

# The close codes a browser sees, the same on /ws and /sockjs: 4000 + the TCPSocket
# error code (4106 for Unauthorized) after a refused handshake, 1001 at shutdown,
# 1000 otherwise.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
ERROR_CLOSE_BASE = 4000
MAX_CLOSE_REASON = 123  # bytes of UTF-8 in a WebSocket close frame; SockJS keeps the same bound


def close_code(reason: str, code: int | None) -> int:
    """The close code for ``ISession.close(reason, code)``."""
    if code is not None:
        return ERROR_CLOSE_BASE + code
    return CLOSE_GOING_AWAY if reason == SHUTDOWN_REASON else CLOSE_NORMAL


def close_reason(reason: str) -> str:
    """``reason`` cut to the close-frame bound, between characters."""
    return reason.encode("utf-8")[:MAX_CLOSE_REASON].decode("utf-8", "ignore")


class ISession(IPushProducer, IConsumer):
    """One browser socket, whatever carries it.

    ``write`` never blocks and never drops: when the browser is slow the
    session pauses its registered producer, and a session whose buffer
    still overflows (a producer that ignores pauses) closes with a reason.
    ``pauseProducing``/``resumeProducing`` stop and restart reading from the
    browser.  ``stopProducing`` is a no-op: the session protocol decides
    when and why a session closes, and gives the reason.
    """

    transportName = Attribute("Short transport name for logs and /system/status, e.g. 'ws'.")
    clientAddress = Attribute("The browser's 'ip:port' as seen by this server.")
    hostHeader = Attribute("The Host header of the request that created the session, or None.")
    origin = Attribute("The Origin header of that request, or None when no browser sent one.")

    def write(data: bytes) -> None:
        """Send ``data`` to the browser."""

    def answerHandshake(reply: str) -> None:
        """Send the one-line TCPSocket handshake answer ('1' or '0' + code) as the
        transport's clients expect it (a text message on /ws)."""

    def close(reason: str, code: int | None = None) -> None:
        """Close towards the browser once queued data is flushed.  ``code`` is a
        TCPSocket error code (102-108) when the close is an error."""


class ISessionProtocol(Interface):
    """What runs on a session: the TCPSocket proxy."""

    def sessionOpened(session: ISession) -> None:
        """The browser side is ready; ``session`` is the way back."""

    def dataReceived(data: bytes) -> None:
        """One message from the browser (the first is the handshake)."""

    def sessionClosed(reason: str) -> None:
        """The browser side is gone; release everything."""


def file_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def default_session_cap() -> int:
    """Two descriptors a proxied session, and room for listeners and logs."""
    return max(16, (file_limit() - 256) // 2)


class SessionRegistry:
    """Live sessions: counted for /system/status, capped, closed on shutdown."""

    def __init__(self, cap: int = 0):
        self.cap = cap or default_session_cap()
        self.live: set[ISession] = set()
        self.by_transport: Counter[str] = Counter()

    def full(self) -> bool:
        return len(self.live) >= self.cap

    def add(self, session: ISession) -> None:
        self.live.add(session)
        self.by_transport[session.transportName] += 1

    def remove(self, session: ISession) -> None:
        if session in self.live:
            self.live.discard(session)
            self.by_transport[session.transportName] -= 1
            if not self.by_transport[session.transportName]:
                del self.by_transport[session.transportName]

    def close_all(self, reason: str = SHUTDOWN_REASON) -> None:
        for session in list(self.live):
            try:
                session.close(reason)
            except Exception:  # one broken session must not stop the shutdown of the rest
                log.exception("closing %r during shutdown failed", session)


class ServerStats:
    """Counters shown at /system/status.

    Byte counts live on each proxied connection (one integer add per
    message) and are folded in here when it closes; ``live`` lets the
    status page add the open ones without touching the hot path.
    """

    def __init__(self, clock: float | None = None):
        self.started = time.time() if clock is None else clock
        self.proxied_now = 0
        self.proxied_total = 0
        self.bytes_to_backend = 0
        self.bytes_from_backend = 0
        self.live: set = set()

    def bytes_each_way(self) -> tuple[int, int]:
        up = self.bytes_to_backend + sum(proxy.bytes_up for proxy in self.live)
        down = self.bytes_from_backend + sum(proxy.bytes_down for proxy in self.live)
        return up, down
