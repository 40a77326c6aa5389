"""The TCPSocket proxy: handshake, access check, backend connect, relay.

The browser's first message names a backend (``host:port``).  The proxy
checks the Origin and the ``[access]`` rules, connects with a timeout, answers
``1`` or ``0`` + code, then relays bytes both ways with flow control.  Codes
are Orbited 0.7's, so old pages keep their error handling.  It runs on any
:class:`~orbited.session.ISession` and never knows the transport.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from twisted.internet import error as neterror
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer, IResolutionReceiver
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

from orbited.access import normalise_origin
from orbited.addresses import host_port
from orbited.closing import close_gracefully
from orbited.lookup import canonical_host, host_name_problem, is_ip_literal, zone_problem
from orbited.session import ISession, ISessionProtocol

if TYPE_CHECKING:
    from orbited.context import ServerContext

log = logging.getLogger("orbited.proxy")

MAX_HANDSHAKE = 512
MAX_EARLY_DATA = 65536  # bytes a client may send behind the handshake before the answer


class ProxyError(Enum):
    """TCPSocket error codes; the value is what the browser receives after '0'."""

    INVALID_HANDSHAKE = 102
    CONNECT_TIMEOUT = 104
    UNAUTHORIZED = 106
    CONNECT_FAILED = 108

    @property
    def reply(self) -> str:
        return f"0{self.value}"


class HandshakeError(ValueError):
    """The first message is not ``host:port``."""


@dataclass(frozen=True)
class Destination:
    host: str
    port: int

    def __str__(self) -> str:
        return host_port(self.host, self.port)


def parse_destination(data: bytes) -> Destination:
    """``b'host:port'``, ``b'[v6]:port'``, optionally ending in a newline."""
    if len(data) > MAX_HANDSHAKE:
        raise HandshakeError(f"handshake longer than {MAX_HANDSHAKE} bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise HandshakeError("handshake is not ASCII") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise HandshakeError("expected '[address]:port'")
        try:
            problem = zone_problem(ipaddress.IPv6Address(host))
        except ValueError:
            raise HandshakeError("bracketed host is not an IPv6 address") from None
        if problem:
            raise HandshakeError(problem)
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise HandshakeError("expected 'host:port'")
        if ":" in host:
            raise HandshakeError("an IPv6 address goes in brackets: '[address]:port'")
        problem = host_name_problem(host)
        if problem:
            raise HandshakeError(problem)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise HandshakeError("port is not a number from 1 to 65535")
    return Destination(canonical_host(host), int(port_text))


class State(Enum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


@implementer(ISessionProtocol)
class TCPSocketProxy:
    """One browser socket tunnelled to one backend TCP connection."""

    def __init__(self, context: ServerContext):
        self.context = context
        self.session: ISession | None = None
        self.phase = State.HANDSHAKE
        self.destination: Destination | None = None
        self.backend: BackendConnection | None = None
        self.pending: Any = None  # while connecting: what stopConnecting() cancels
        self.opened_at = 0.0
        self.bytes_up = 0
        self.bytes_down = 0
        self.early: list[bytes] = []
        self.early_size = 0

    # ISessionProtocol

    def sessionOpened(self, session: ISession) -> None:
        self.session = session
        self.context.handshakes.add(self)

    def dataReceived(self, data: bytes) -> None:
        if self.phase is State.OPEN:
            self.bytes_up += len(data)
            self.backend.transport.write(data)
        elif self.phase is State.HANDSHAKE:
            self._handshake(data)
        elif self.phase is State.CONNECTING:
            # A client may pipeline data behind the handshake; hold a little of it.
            self.early.append(data)
            self.early_size += len(data)
            if self.early_size > MAX_EARLY_DATA:
                self._refuse(ProxyError.INVALID_HANDSHAKE,
                             f"more than {MAX_EARLY_DATA} bytes sent before the answer to the handshake")

    def sessionClosed(self, reason: str) -> None:
        phase, self.phase = self.phase, State.CLOSED
        if phase is State.HANDSHAKE:
            self.context.handshakes.remove(self)
            log.info("%s: closed before its handshake (%s)", self._describe(), reason)
        if phase is State.CONNECTING:
            self._stop_connecting()
            log.info("%s -> %s: browser side closed while connecting (%s)", self._describe(), self.destination,
                     reason)
        if self.backend is not None:
            # Everything the browser sent goes first; what the backend sends meanwhile is dropped.
            close_gracefully(self.backend.transport, self.context.reactor)
        if phase is State.OPEN:
            self._log_close(f"browser side closed ({reason})")

    def _stop_connecting(self) -> None:
        """Cancel the backend connect under way (the connect, or the lookup and its attempts)."""
        self.early = []
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.stopConnecting()

    # handshake and connect

    def _describe(self) -> str:
        s = self.session
        origin = f", Origin {s.origin}" if s.origin else ""
        return f"{s.transportName} {s.clientAddress} (Host {s.hostHeader}{origin})"

    def _handshake(self, data: bytes) -> None:
        context = self.context
        context.handshakes.remove(self)
        try:
            self.destination = dest = parse_destination(data)
        except HandshakeError as exc:
            self._refuse(ProxyError.INVALID_HANDSHAKE, f"invalid handshake {data[:64]!r}: {exc}")
            return
        session = self.session
        policy = context.policy
        if not policy.origin_allowed(session.origin, session.hostHeader):
            hint = (f"'origins = {session.origin}'" if normalise_origin(session.origin) is not None else
                    "'origins = *' (the only way to allow a page without an origin of its own)")
            self._refuse(ProxyError.UNAUTHORIZED, f"refused Origin {session.origin!r} for {dest}; to allow "
                         f"it add {hint} to [global]")
            return
        if not policy.destination_allowed(session.hostHeader, dest.host, dest.port):
            self._refuse(
                ProxyError.UNAUTHORIZED,
                f"unauthorized connect to {dest}; to allow it add "
                f"'{policy.hint_for_destination(session.hostHeader, dest.host, dest.port)}' to [access]",
            )
            return
        self.phase = State.CONNECTING
        timeout = context.config.settings["proxy.connect_timeout"]
        if is_ip_literal(dest.host):
            self.pending = BackendFactory(self).connect(context.reactor, dest.host, dest.port, timeout)
        else:
            self.pending = HostnameConnect(self, context.reactor, dest.host, dest.port, timeout)

    def handshakeTimedOut(self, timeout: float) -> None:
        if self.phase is State.HANDSHAKE:
            self._refuse(ProxyError.INVALID_HANDSHAKE,
                         f"no handshake (host:port) within proxy.handshake_timeout ({timeout:g} s)")

    def connectFailed(self, reason: Failure) -> None:
        if self.phase is not State.CONNECTING:
            return
        self.pending = None
        # Our own close cancels only after leaving CONNECTING, so a timeout seen here is the
        # connect timeout (of connectTCP, or of HostnameConnect's lookup and attempts).
        if reason.check(neterror.TimeoutError):
            self._refuse(ProxyError.CONNECT_TIMEOUT, f"connect to {self.destination} timed out")
        else:
            self._refuse(ProxyError.CONNECT_FAILED,
                         f"connect to {self.destination} failed: {reason.getErrorMessage()}")

    def backendConnected(self, backend: BackendConnection) -> None:
        if self.phase is not State.CONNECTING:
            backend.transport.loseConnection()
            return
        self.pending = None
        self.phase = State.OPEN
        self.backend = backend
        self.opened_at = time.monotonic()
        stats = self.context.stats
        stats.proxied_now += 1
        stats.proxied_total += 1
        stats.live.add(self)
        session = self.session
        transport = backend.transport
        transport.setTcpNoDelay(True)
        # Each side pauses the other when its own outgoing buffer is full.
        session.registerProducer(backend, True)
        transport.registerProducer(session, True)
        log.info("%s -> %s connected", self._describe(), self.destination)
        session.answerHandshake("1")
        if self.early:
            early, self.early = self.early, []
            self.bytes_up += self.early_size
            transport.writeSequence(early)

    def backendData(self, data: bytes) -> None:
        if self.phase is not State.OPEN:
            return  # the browser side is gone: read only so that the backend's close is not a reset
        self.bytes_down += len(data)
        self.session.write(data)

    def backendEnded(self, backend: BackendConnection) -> None:
        """The backend sent EOF.  It may still read (a half-close): what the browser sent before it
        hears of the close is flushed to it, then the connection is closed."""
        if self.phase is State.OPEN:
            self.backendLost(Failure(neterror.ConnectionDone()))
        close_gracefully(backend.transport, self.context.reactor, peer_done=True)

    def backendLost(self, reason: Failure) -> None:
        self.backend = None
        if self.phase is not State.OPEN:
            return
        self.phase = State.CLOSED
        why = "backend closed" if reason.check(neterror.ConnectionDone) else \
            f"backend lost: {reason.getErrorMessage()}"
        self._log_close(why)
        self.session.close(why)

    def _log_close(self, why: str) -> None:
        stats = self.context.stats
        stats.proxied_now -= 1
        stats.live.discard(self)
        stats.bytes_to_backend += self.bytes_up
        stats.bytes_from_backend += self.bytes_down
        log.info("%s -> %s closed after %.1fs, %d bytes up, %d down: %s",
                 self._describe(), self.destination, time.monotonic() - self.opened_at,
                 self.bytes_up, self.bytes_down, why)

    def _refuse(self, code: ProxyError, why: str) -> None:
        phase, self.phase = self.phase, State.CLOSED  # before the stop below reports a failed connect
        if phase is State.CONNECTING:
            # Refused while connecting (too much early data): the connect must not go on, counted
            # by no session (proxy.max_sessions) and holding a descriptor until its timeout.
            self._stop_connecting()
        # refused while connecting (too much early data): name the backend, as every connect-phase line does
        who = self._describe() + (f" -> {self.destination}" if phase is State.CONNECTING else "")
        if code is ProxyError.UNAUTHORIZED:
            log.warning("%s: %s", who, why)
        else:
            log.info("%s: %s", who, why)
        self.session.answerHandshake(code.reply)
        self.session.close(why, code.value)


@implementer(IHalfCloseableProtocol, IPushProducer)
class BackendConnection(Protocol):
    """The backend end of one proxied socket.

    Half-closeable: on a plain protocol Twisted closes the socket at the backend's EOF and
    throws away what it still buffers for it, which a backend that only shut its sending side
    would have read.

    It is the browser side's producer (pausing and resuming the backend's reading) in place
    of its transport, whose ``stopProducing`` is a ``loseConnection``: Twisted calls it when
    the browser's connection is lost, and that close stopped reading the backend, turning
    the close into a reset that threw away the browser's last bytes.  The proxy closes the
    backend itself (``sessionClosed``)."""

    def __init__(self, proxy: TCPSocketProxy):
        self.proxy = proxy

    def connectionMade(self) -> None:
        self.proxy.backendConnected(self)

    def dataReceived(self, data: bytes) -> None:
        self.proxy.backendData(data)

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """The browser side is gone; sessionClosed closes the backend gracefully."""

    def readConnectionLost(self) -> None:
        self.proxy.backendEnded(self)

    def writeConnectionLost(self) -> None:
        """Our FIN is out (orbited.closing); the backend's EOF or the close watch ends the rest."""

    def connectionLost(self, reason: Failure = neterror.ConnectionDone) -> None:  # type: ignore[assignment]
        self.proxy.backendLost(reason)


class BackendFactory(ClientFactory):
    """Factory for one connect attempt: it reports the failure to its proxy."""

    noisy = False

    def __init__(self, proxy: TCPSocketProxy):
        self.proxy = proxy
        self.attempt: Any = None  # the connecting twisted.internet.tcp.Client, until it connects or fails

    def connect(self, reactor: Any, host: str, port: int, timeout: float) -> Any:
        """``connectTCP`` to an address; returns the connector (``stopConnecting`` cancels)."""
        connector = reactor.connectTCP(host, port, self, timeout=timeout)
        self.attempt = getattr(connector, "transport", None)  # twisted.internet.tcp's; IConnector has none
        return connector

    def buildProtocol(self, addr: object) -> BackendConnection:
        self.attempt = None
        return BackendConnection(self.proxy)

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        self.forget_attempt()
        self.proxy.connectFailed(reason)

    def forget_attempt(self) -> None:
        attempt, self.attempt = self.attempt, None
        if attempt is not None:
            # While connecting, Twisted's Client points its doRead and doWrite at its own
            # doConnect, and removes them only once connected: after a refused connect, a
            # timeout or a cancel, every failed Client would wait for a full cyclic collection.
            vars(attempt).pop("doRead", None)
            vars(attempt).pop("doWrite", None)

    def clientConnectionLost(self, connector: Any, reason: Failure) -> None:
        # Twisted's Client and Connector refer to each other to the end; left so, every closed
        # backend connection (and the session behind it) waits for a full cyclic collection.
        connector.transport = None


@implementer(IResolutionReceiver)
class HostnameConnect(BackendFactory):
    """A backend named by host name: look it up (getaddrinfo, in Twisted's thread pool, unless
    ``proxy.lookup_cache`` still knows it), then try its addresses one after another, all within
    one ``proxy.connect_timeout``.

    Twisted's HostnameEndpoint does this (racing the addresses, Happy Eyeballs), but it builds
    a class for every call and leaves each session behind it in reference cycles, which wait
    for a full collection (rare by design: orbited/cli.py).  One at a time suits a backend
    near Orbited: ``localhost`` for a backend that listens on 127.0.0.1 only refuses ::1 at
    once, and the next address is tried.
    """

    def __init__(self, proxy: TCPSocketProxy, reactor: Any, host: str, port: int, timeout: float):
        super().__init__(proxy)
        self.reactor = reactor
        self.host = host
        self.port = port
        self.addresses: list[Any] = []
        self.connector: Any = None
        self.failure: Failure | None = None  # the last attempt's
        self.done = False
        self.deadline = reactor.callLater(timeout, self._timed_out)
        self.lookups = proxy.context.lookups
        self.trying: Any = None  # the address being connected to, once one is tried
        self.lookups.resolveHostName(self, host, port)

    # IResolutionReceiver

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        if not self.done:
            self._next()

    # attempts

    def _next(self) -> None:
        if not self.addresses:
            self._finish(self.failure or Failure(neterror.DNSLookupError(f"no address for {self.host}")))
            return
        address = self.trying = self.addresses.pop(0)
        remaining = max(self.deadline.getTime() - self.reactor.seconds(), 0.001)
        self.connector = self.connect(self.reactor, address.host, self.port, remaining)

    def buildProtocol(self, addr: object) -> BackendConnection:
        self.connector = None  # connected: nothing to stop
        self._stop()
        self.lookups.answered(self.host, self.port, self.trying.host)
        return super().buildProtocol(addr)

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        self.forget_attempt()
        self.connector = None
        if not self.done:
            self.lookups.failed(self.host, self.port, self.trying.host)
            self.failure = reason
            self._next()

    def _timed_out(self) -> None:
        self._finish(Failure(neterror.TimeoutError(f"connect to {self.host} timed out")))

    def _finish(self, reason: Failure) -> None:
        self._stop()
        if self.trying is not None:  # no address answered in time: the next TCPSocket looks the name up afresh
            self.lookups.forget(self.host, self.port)
            self.lookups.failed(self.host, self.port, self.trying.host)
        self.proxy.connectFailed(reason)

    def _stop(self) -> None:
        self.done = True
        self.lookups.abandon(self, self.host, self.port)  # if its lookup is still under way
        if self.deadline.active():
            self.deadline.cancel()
        connector, self.connector = self.connector, None
        if connector is not None:
            connector.stopConnecting()

    def stopConnecting(self) -> None:
        """The browser went: a lookup under way still ends (getaddrinfo cannot be stopped), unheard."""
        self._stop()


class HandshakeDeadlines:
    """TCPSockets that have not sent their handshake yet, oldest first.

    A socket that never says where to go would hold its session (and its
    place under ``proxy.max_sessions``) for as long as it answers pings.  One
    check a second over the oldest entries closes those past
    ``proxy.handshake_timeout``, instead of a timer per session: browsers
    send the handshake at once, so nearly every entry leaves within one
    loop iteration of arriving, and the check only runs while entries wait.
    """

    def __init__(self, reactor: Any, timeout: float):
        self.reactor = reactor
        self.timeout = timeout
        self.waiting: dict[TCPSocketProxy, float] = {}  # insertion order is deadline order
        self.loop: LoopingCall | None = None

    def add(self, proxy: TCPSocketProxy) -> None:
        self.waiting[proxy] = self.reactor.seconds() + self.timeout
        if self.loop is None:
            self.loop = LoopingCall(self.check)
            self.loop.clock = self.reactor
            self.loop.start(1.0, now=False)

    def remove(self, proxy: TCPSocketProxy) -> None:
        self.waiting.pop(proxy, None)

    def check(self) -> None:
        now = self.reactor.seconds()
        waiting = self.waiting
        while waiting:
            proxy, due = next(iter(waiting.items()))
            if due > now:
                return
            del waiting[proxy]
            proxy.handshakeTimedOut(self.timeout)
        if self.loop is not None:
            self.loop.stop()
            self.loop = None
