"""What every HTTP (Comet) transport's session shares: identity, flow control, lifetime.

A Comet session outlives the HTTP requests that carry it: downstream
responses come and go, upstream POSTs arrive one by one.  This base class
holds the parts that do not depend on the wire format (SockJS frames or
Orbited 0.7 packets):

- the ISession identity (transport name, client address, Host, Origin);
- the bound on bytes queued for the browser: above ``high`` the backend is
  paused, below ``low`` it is resumed, above ``limit`` (``session.max_buffer``)
  the session is closed as stalled, with a logged reason;
- upstream backpressure: while the backend is slow the session is paused and
  upstream handlers wait on :meth:`whenWritable` before answering, so a client
  that sends one POST at a time cannot outrun the backend; one that sends them
  in parallel without waiting (no Orbited or SockJS client does) may deliver
  ``limit`` bytes while the backend reads nothing, then the session is closed
  with a logged reason;
- opening and closing exactly once, the registry, the session protocol.

Subclasses own the framing and call ``queued``/``drained`` as bytes enter and
leave their queue.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer

from orbited.addresses import peer_text
from orbited.session import ISessionProtocol

if TYPE_CHECKING:
    from twisted.web.server import Request

    from orbited.context import ServerContext

MAX_WAITING_UPLOADS = 16  # answers a session holds for a slow backend; browsers wait for each one

log = logging.getLogger("orbited.comet")


def no_delay(request: Request) -> None:
    """Small packets go out at once: Nagle plus the client's delayed ACK cost 40 ms a round trip.

    The lean HTTP layer sets TCP_NODELAY on every connection and its channel
    says so (``noDelay``), so a streaming or polling response costs no
    setsockopt.  TEMPORARY, until ``http.engine = twisted`` goes: on
    twisted.web it is set here, once per connection.
    """
    channel = request.channel
    if channel is None or getattr(channel, "noDelay", False):
        return
    channel.noDelay = True
    try:
        request.transport.setTcpNoDelay(True)
    except (AttributeError, OSError):
        pass  # not a TCP socket (a test transport, a UNIX socket)


def request_identity(request: Request) -> tuple[str, str | None, str | None]:
    """(client 'ip:port', Host header, Origin header) of the request that creates a session."""
    address = peer_text(request.getClientAddress())
    host, origin = request.getHeader(b"host"), request.getHeader(b"origin")
    # Twisted hands back bytes for a bytes name; the access policy compares text.
    return (address, host.decode("latin-1") if host is not None else None,
            origin.decode("latin-1") if origin is not None else None)


def new_session_key(prefix: str = "") -> str:
    """32 lowercase hex characters, the shape 0.7 clients expect; a routing ``prefix`` replaces the first ones."""
    return prefix + secrets.token_hex(16)[len(prefix):]


class CometSession:
    """Base of the SockJS and Orbited 0.7 sessions; implements the ISession bookkeeping."""

    transportName = "comet"

    def __init__(self, context: ServerContext, key: str, client_address: str,
                 host_header: str | None, origin: str | None):
        self.context = context
        self.key = key
        self.clientAddress = client_address
        self.hostHeader = host_header
        self.origin = origin
        limit = context.config.settings["session.max_buffer"]
        self.limit = limit
        self.high = max(1, limit // 4)
        self.low = self.high // 2
        self.queued_bytes = 0
        self.producer: IPushProducer | None = None
        self.producer_paused = False
        self.upstream_paused = False
        self.unread_upstream = 0  # bytes delivered since the backend last stopped reading
        self._writable: list[defer.Deferred] = []
        self.protocol: ISessionProtocol | None = None
        self.closed = False
        self.close_reason: str | None = None

    # lifetime

    def open(self) -> None:
        """Register and start the session protocol (the proxy)."""
        self.context.sessions.add(self)
        self.protocol = self.context.newSessionProtocol()
        self.protocol.sessionOpened(self)

    def deliver(self, data: bytes) -> None:
        """One message from the browser, in order."""
        if self.protocol is None or self.closed:
            return
        if self.upstream_paused:
            self.unread_upstream += len(data)
            if self.unread_upstream > self.limit:
                self._uploads_not_waiting(f"{self.unread_upstream} bytes sent while the backend read "
                                          f"nothing, over session.max_buffer {self.limit}")
                return
        self.protocol.dataReceived(data)

    def finish(self, reason: str) -> None:
        """The session is over on the browser side (closed, expired, timed out); release all."""
        if self.protocol is None:
            self.closed = True
            return
        protocol, self.protocol = self.protocol, None
        self.closed = True
        self.close_reason = self.close_reason or reason
        self.context.sessions.remove(self)
        self._release_waiters()
        # the backend connection: it refers back to us through the proxy
        self.producer, self.producer_paused = None, False
        protocol.sessionClosed(reason)

    # downstream accounting (subclasses call these)

    def queued(self, nbytes: int) -> bool:
        """Count bytes entering the browser queue; False when the session had to be closed."""
        self.queued_bytes += nbytes
        if self.queued_bytes > self.limit:
            reason = (f"browser stopped reading: {self.queued_bytes} bytes queued, "
                      f"over session.max_buffer {self.limit}")
            log.warning("%s %s %s: %s", self.transportName, self.key, self.clientAddress, reason)
            self.close(reason)
            return False
        if self.queued_bytes > self.high and self.producer is not None and not self.producer_paused:
            self.producer_paused = True
            self.producer.pauseProducing()
        return True

    def drained(self, nbytes: int) -> None:
        """Count bytes leaving the queue (sent, or acknowledged where the transport has acks)."""
        self.queued_bytes = max(0, self.queued_bytes - nbytes)
        if self.producer_paused and self.queued_bytes <= self.low and self.producer is not None:
            self.producer_paused = False
            self.producer.resumeProducing()

    # IConsumer

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer
        self.producer_paused = False
        if self.queued_bytes > self.high:
            self.producer_paused = True
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self.producer = None
        self.producer_paused = False

    # IPushProducer: the backend is slow, hold upstream

    def pauseProducing(self) -> None:
        if not self.upstream_paused:  # Twisted asks again on every write while its buffer is full
            self.upstream_paused = True
            self.unread_upstream = 0

    def resumeProducing(self) -> None:
        self.upstream_paused = False
        self._release_waiters()

    def stopProducing(self) -> None:
        """The session protocol closes us with a reason; nothing to do here."""

    def whenWritable(self) -> defer.Deferred:
        """Fires when upstream may continue (at once unless the backend is slow).

        Cancel it when the request that waits is gone: each waiter holds its request.
        A client that keeps posting without waiting for answers (pings and empty bodies
        deliver nothing, so the byte bound in :meth:`deliver` never sees them) gets
        MAX_WAITING_UPLOADS answers held, then its session is closed."""
        if not self.upstream_paused or self.closed:
            return defer.succeed(None)
        if len(self._writable) >= MAX_WAITING_UPLOADS:
            self._uploads_not_waiting(f"{len(self._writable)} wait while the backend reads nothing")
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred(canceller=self._forget_waiter)
        self._writable.append(waiter)
        return waiter

    def _uploads_not_waiting(self, what: str) -> None:
        reason = f"uploads not waiting for their answers: {what}"
        log.warning("%s %s %s: %s", self.transportName, self.key, self.clientAddress, reason)
        self.close(reason)

    def _forget_waiter(self, waiter: defer.Deferred) -> None:
        if waiter in self._writable:
            self._writable.remove(waiter)

    def _release_waiters(self) -> None:
        waiters, self._writable = self._writable, []
        for waiter in waiters:
            waiter.callback(None)

    # ISession methods subclasses must provide: write, answerHandshake, close

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def answerHandshake(self, reply: str) -> None:
        raise NotImplementedError

    def close(self, reason: str, code: int | None = None) -> None:
        raise NotImplementedError


def answer_when_writable(writable: defer.Deferred, request: Any, answer: Any) -> None:
    """Call ``answer()`` when ``writable`` fires, unless ``request``'s client left first (then
    the wait is cancelled, so the session holds no request of a client that is gone)."""
    request.notifyFinish().addErrback(lambda _failure: writable.cancel())
    writable.addCallback(lambda _: None if request.finished else answer())
    writable.addErrback(lambda failure: failure.trap(defer.CancelledError))


def request_body(request: Any, limit: int) -> bytes | None:
    """The request body, or None when it is longer than ``limit``.  Measured, not taken from
    ``Content-Length``: the HTTP layer has already checked that header (a list of equal values
    is legal) or decoded a chunked body, and both engines hand over the body they read."""
    content = request.content
    if content is None:
        return b""
    content.seek(0, 2)
    size = content.tell()
    if size > limit:
        return None
    content.seek(0)
    return content.read()
