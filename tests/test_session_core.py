"""The proxy state machine and the Comet session base, driven without sockets.

Real-socket behaviour is covered by test_ws_proxy.py; these pin down the
orderings that are hard to provoke over the network (a close while
connecting, a connect that lands after the close, watermarks).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from orbited.comet import CometSession
from orbited.config import load_text
from orbited.context import ServerContext
from orbited.proxy import BackendConnection, HostnameConnect, State, TCPSocketProxy
from orbited.session import ISession
from tests.support.fakes import RecordingProducer


@implementer(ISession)
class FakeSession:
    transportName = "fake"
    clientAddress = "127.0.0.1:1"
    hostHeader = "localhost:8000"
    origin = None

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.answers: list[str] = []
        self.closed: tuple[str, int | None] | None = None
        self.producer = None
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def answerHandshake(self, reply: str) -> None:
        self.answers.append(reply)

    def close(self, reason: str, code: int | None = None) -> None:
        self.closed = (reason, code)

    def registerProducer(self, producer, streaming) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


def make(access: str = "* -> 127.0.0.1:7000\n* -> backend.example:7000") -> tuple[TCPSocketProxy, FakeSession,
                                                                                    MemoryReactorClock]:
    reactor = MemoryReactorClock()
    context = ServerContext(load_text(f"[access]\n{access}\n", "t.cfg"), reactor)
    proxy = TCPSocketProxy(context)
    session = FakeSession()
    verifyObject(ISession, session)
    proxy.sessionOpened(session)
    return proxy, session, reactor


class TCPStringTransport(StringTransport):
    nodelay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled


def connect_backend(proxy: TCPSocketProxy) -> StringTransport:
    transport = TCPStringTransport()
    backend = BackendConnection(proxy)
    backend.makeConnection(transport)
    return transport


def test_allowed_handshake_connects_with_the_configured_timeout():
    proxy, session, reactor = make()
    proxy.dataReceived(b"127.0.0.1:7000\n")
    host, port, _factory, timeout, _bind = reactor.tcpClients[0]
    assert (host, port, timeout) == ("127.0.0.1", 7000, 10.0)
    assert proxy.phase is State.CONNECTING and session.answers == []
    transport = connect_backend(proxy)
    assert session.answers == ["1"] and proxy.phase is State.OPEN
    # flow control both ways (the browser side pauses the backend through its protocol, whose
    # stopProducing does not close it: orbited.proxy.BackendConnection)
    assert session.producer is proxy.backend and proxy.backend.transport is transport
    assert transport.producer is session
    assert transport.nodelay
    proxy.dataReceived(b"to backend")
    assert transport.value() == b"to backend"
    proxy.backendData(b"to browser")
    assert session.written == [b"to browser"]


def test_denied_handshake_never_connects():
    proxy, session, reactor = make()
    proxy.dataReceived(b"127.0.0.1:22")
    assert reactor.tcpClients == []
    assert session.answers == ["0106"] and session.closed[1] == 106


def test_close_while_connecting_cancels_the_connect():
    proxy, session, reactor = make()
    proxy.dataReceived(b"127.0.0.1:7000")
    connector = reactor.connectors[0]
    proxy.sessionClosed("browser gone")
    assert connector.stoppedConnecting
    # a connection that lands anyway is dropped, and no answer is sent
    transport = connect_backend(proxy)
    assert transport.disconnecting and session.answers == []


def test_no_handshake_within_the_timeout_gets_0102_and_only_then():
    proxy, session, reactor = make()  # opened at 0 s; proxy.handshake_timeout is 30 s
    late, late_session = TCPSocketProxy(proxy.context), FakeSession()
    reactor.advance(10)
    late.sessionOpened(late_session)  # opened at 10 s
    reactor.advance(20)  # 30 s: the first is due, the second not
    reactor.advance(1)
    assert session.answers == ["0102"] and session.closed[1] == 102
    assert "proxy.handshake_timeout" in session.closed[0]
    assert late_session.answers == [] and late_session.closed is None
    late.dataReceived(b"127.0.0.1:7000")  # in time: no longer watched
    reactor.advance(20)
    assert late_session.answers == [] and late_session.closed is None
    assert reactor.getDelayedCalls() == [] and not proxy.context.handshakes.waiting  # the check stops when idle


def test_a_session_closed_before_its_handshake_is_forgotten():
    proxy, session, reactor = make()
    proxy.sessionClosed("browser gone")
    assert not proxy.context.handshakes.waiting
    reactor.advance(31)
    assert session.answers == [] and reactor.getDelayedCalls() == []


def test_timeout_and_refusal_map_to_104_and_108():
    proxy, session, _ = make()
    proxy.dataReceived(b"127.0.0.1:7000")
    proxy.connectFailed(Failure(error.TimeoutError()))
    assert session.answers == ["0104"] and session.closed[1] == 104
    proxy, session, _ = make()
    proxy.dataReceived(b"127.0.0.1:7000")
    proxy.connectFailed(Failure(error.ConnectionRefusedError()))
    assert session.answers == ["0108"] and session.closed[1] == 108


def test_early_data_is_held_then_flushed_and_bounded():
    proxy, session, _ = make()
    proxy.dataReceived(b"127.0.0.1:7000")
    proxy.dataReceived(b"early")
    transport = connect_backend(proxy)
    assert transport.value() == b"early" and proxy.bytes_up == 5
    proxy, session, _ = make()
    proxy.dataReceived(b"127.0.0.1:7000")
    proxy.dataReceived(b"x" * 70000)
    assert session.answers == ["0102"]


def test_backend_close_closes_the_session_once_and_counts():
    proxy, session, _ = make()
    proxy.dataReceived(b"127.0.0.1:7000")
    connect_backend(proxy)
    stats = proxy.context.stats
    assert stats.proxied_now == 1 and proxy in stats.live
    proxy.backendLost(Failure(error.ConnectionDone()))
    assert session.closed == ("backend closed", None)
    assert stats.proxied_now == 0 and not stats.live
    proxy.sessionClosed("later")  # the browser side's own close afterwards changes nothing
    assert stats.proxied_now == 0


class ScriptedResolver:
    """An IHostnameResolver that answers when the test says so."""

    def __init__(self) -> None:
        self.asked: list[tuple[Any, str, int]] = []

    def resolveHostName(self, receiver, host, portNumber=0, addressTypes=None, transportSemantics="TCP"):
        self.asked.append((receiver, host, portNumber))
        receiver.resolutionBegan(None)

    def answer(self, *addresses: str) -> None:
        receiver, _host, port = self.asked.pop(0)
        for address in addresses:
            receiver.addressResolved((IPv6Address if ":" in address else IPv4Address)("TCP", address, port))
        receiver.resolutionComplete()


def resolving(access: str = "* -> backend.example:7000") -> tuple[TCPSocketProxy, FakeSession, MemoryReactorClock,
                                                                   ScriptedResolver]:
    proxy, session, reactor = make(access)
    resolver = ScriptedResolver()
    reactor.nameResolver = resolver
    proxy.dataReceived(b"backend.example:7000")
    assert resolver.asked[0][1:] == ("backend.example", 7000) and proxy.phase is State.CONNECTING
    return proxy, session, reactor, resolver


def test_a_host_name_s_addresses_are_tried_in_turn_within_one_timeout():
    proxy, session, reactor, resolver = resolving()
    reactor.advance(2)  # the lookup took 2 of the 10 s
    resolver.answer("::1", "127.0.0.1")
    host, port, factory, timeout, _ = reactor.tcpClients[0]
    assert (host, port, timeout) == ("::1", 7000, 8.0)
    reactor.advance(1)
    factory.clientConnectionFailed(reactor.connectors[0], Failure(error.ConnectionRefusedError()))
    host, port, factory, timeout, _ = reactor.tcpClients[1]
    assert (host, port, timeout) == ("127.0.0.1", 7000, 7.0) and session.answers == []
    factory.buildProtocol(None).makeConnection(TCPStringTransport())
    assert session.answers == ["1"] and proxy.phase is State.OPEN
    assert connect_deadlines(reactor) == []  # the deadline went with the connect
    reactor.advance(60)
    assert session.answers == ["1"] and session.closed is None


def test_a_host_name_with_no_address_or_only_refusals_gets_0108():
    _proxy, session, reactor, resolver = resolving()
    resolver.answer()
    assert session.answers == ["0108"] and "no address for backend.example" in session.closed[0]
    _proxy, session, reactor, resolver = resolving()
    resolver.answer("::1", "127.0.0.1")
    for index in (0, 1):
        factory = reactor.tcpClients[index][2]
        factory.clientConnectionFailed(reactor.connectors[index], Failure(error.ConnectionRefusedError()))
    assert len(reactor.tcpClients) == 2
    assert session.answers == ["0108"] and "refused" in session.closed[0]


def test_a_host_name_lookup_or_attempts_past_the_timeout_get_0104():
    _proxy, session, reactor, resolver = resolving()
    reactor.advance(10)  # the lookup never came back
    assert session.answers == ["0104"] and "timed out" in session.closed[0]
    resolver.answer("127.0.0.1")  # late: nothing more happens
    assert reactor.tcpClients == [] and session.answers == ["0104"]
    _proxy, session, reactor, resolver = resolving()
    resolver.answer("127.0.0.1")
    reactor.advance(10)  # the connect never came back
    assert session.answers == ["0104"] and reactor.connectors[0].stoppedConnecting


def test_a_browser_that_leaves_while_a_host_name_connects_stops_it():
    proxy, session, reactor, resolver = resolving()
    proxy.sessionClosed("browser gone")
    resolver.answer("127.0.0.1")  # a lookup cannot be stopped; what it finds is not used
    assert reactor.tcpClients == [] and connect_deadlines(reactor) == []
    proxy, session, reactor, resolver = resolving()
    resolver.answer("127.0.0.1")
    proxy.sessionClosed("browser gone")
    assert reactor.connectors[0].stoppedConnecting and session.answers == []
    assert connect_deadlines(reactor) == []


def second_socket(proxy: TCPSocketProxy) -> tuple[TCPSocketProxy, FakeSession]:
    """Another TCPSocket on the same server (context, cache and reactor) as ``proxy``."""
    other, session = TCPSocketProxy(proxy.context), FakeSession()
    other.sessionOpened(session)
    return other, session


def test_sockets_to_one_name_share_its_lookup_and_then_remember_it():
    proxy, _session, reactor, resolver = resolving()
    other, _other_session = second_socket(proxy)
    other.dataReceived(b"backend.example:7000")
    assert len(resolver.asked) == 1  # the lookup under way is shared
    resolver.answer("127.0.0.1")
    assert [client[:2] for client in reactor.tcpClients] == [("127.0.0.1", 7000)] * 2
    reactor.advance(5)
    third, _ = second_socket(proxy)
    third.dataReceived(b"backend.example:7000")
    assert resolver.asked == [] and reactor.tcpClients[2][:2] == ("127.0.0.1", 7000)  # remembered
    reactor.advance(6)  # proxy.lookup_cache (10 s) has passed
    fourth, _ = second_socket(proxy)
    fourth.dataReceived(b"backend.example:7000")
    assert len(resolver.asked) == 1


def test_a_name_whose_addresses_all_failed_is_looked_up_afresh():
    proxy, session, reactor, resolver = resolving()
    resolver.answer("127.0.0.1")
    reactor.tcpClients[0][2].clientConnectionFailed(reactor.connectors[0], Failure(error.ConnectionRefusedError()))
    assert session.answers == ["0108"]
    other, other_session = second_socket(proxy)
    other.dataReceived(b"backend.example:7000")
    assert len(resolver.asked) == 1  # not the failed address again from the cache
    resolver.answer("127.0.0.2")
    assert reactor.tcpClients[1][:2] == ("127.0.0.2", 7000)
    # a connect that times out (a dead address) is forgotten too
    reactor.advance(10)
    assert other_session.answers == ["0104"]
    third, _ = second_socket(proxy)
    third.dataReceived(b"backend.example:7000")
    assert len(resolver.asked) == 1


def test_the_address_that_answered_is_tried_first_from_then_on():
    """A name with an IPv6 and an IPv4 address, for a backend on IPv4 only (localhost on Debian)."""
    proxy, _session, reactor, resolver = resolving()
    resolver.answer("::1", "127.0.0.1")
    reactor.tcpClients[0][2].clientConnectionFailed(reactor.connectors[0], Failure(error.ConnectionRefusedError()))
    assert reactor.tcpClients[1][0] == "127.0.0.1"
    reactor.tcpClients[1][2].buildProtocol(None).makeConnection(TCPStringTransport())
    other, _ = second_socket(proxy)
    other.dataReceived(b"backend.example:7000")
    assert reactor.tcpClients[2][0] == "127.0.0.1"  # from the cache, the answering address first
    reactor.tcpClients[2][2].buildProtocol(None).makeConnection(TCPStringTransport())
    reactor.advance(11)  # the cache has expired; a fresh lookup gives ::1 first again
    third, _ = second_socket(proxy)
    third.dataReceived(b"backend.example:7000")
    resolver.answer("::1", "127.0.0.1")
    assert reactor.tcpClients[3][0] == "127.0.0.1"
    assert [a.host for a in third.pending.addresses] == ["::1"]  # still tried if 127.0.0.1 fails
    # the backend moves to ::1: the address that answered before times out, and is first no more
    reactor.advance(11)
    fourth, _ = second_socket(proxy)
    fourth.dataReceived(b"backend.example:7000")
    resolver.answer("::1", "127.0.0.1")
    assert reactor.tcpClients[-1][0] == "::1"  # kept first, a dead address refused every TCPSocket


def test_no_address_is_not_remembered_and_lookup_cache_0_remembers_nothing():
    proxy, session, reactor, resolver = resolving()
    resolver.answer()
    assert session.answers == ["0108"]
    other, _ = second_socket(proxy)
    other.dataReceived(b"backend.example:7000")
    assert len(resolver.asked) == 1
    resolver.answer("127.0.0.1")
    reactor = MemoryReactorClock()
    context = ServerContext(load_text("[global]\nproxy.lookup_cache = 0\n[access]\n* -> backend.example:7000\n",
                                      "t.cfg"), reactor)
    reactor.nameResolver = resolver = ScriptedResolver()
    sockets = [TCPSocketProxy(context) for _ in range(3)]
    for proxy in sockets:
        proxy.sessionOpened(FakeSession())
        proxy.dataReceived(b"backend.example:7000")
    assert len(resolver.asked) == 1  # shared while under way even so
    resolver.answer("127.0.0.1")
    again = TCPSocketProxy(context)
    again.sessionOpened(FakeSession())
    again.dataReceived(b"backend.example:7000")
    assert len(resolver.asked) == 1  # but not remembered


def test_a_receiver_that_fails_does_not_keep_the_others_waiting():
    proxy, _session, reactor, resolver = resolving()
    other, _other_session = second_socket(proxy)
    other.dataReceived(b"backend.example:7000")
    proxy.pending.addressResolved = None  # the first waiter's delivery raises
    resolver.answer("127.0.0.1")
    assert [client[:2] for client in reactor.tcpClients] == [("127.0.0.1", 7000)]  # the second one's
    assert other.pending.addresses == [] and other.pending.connector is not None


def connect_deadlines(reactor: MemoryReactorClock) -> list[Any]:
    return [call for call in reactor.getDelayedCalls() if isinstance(getattr(call.func, "__self__", None),
                                                                       HostnameConnect)]


def test_hostname_destinations_get_one_timeout_for_lookup_and_connect():
    proxy, session, reactor = make()  # the memory reactor's resolver answers 127.0.0.1 at once
    proxy.dataReceived(b"backend.example:7000")
    assert proxy.phase is State.CONNECTING
    reactor.advance(9)
    assert session.answers == []
    reactor.advance(2)  # the memory reactor never completes the connect
    assert session.answers == ["0104"]


class CometProbe(CometSession):
    transportName = "probe"

    def write(self, data: bytes) -> None:
        self.queued(len(data))

    def answerHandshake(self, reply: str) -> None:
        pass

    def close(self, reason: str, code: int | None = None) -> None:
        self.finish(reason)


def comet(max_buffer: int = 4000) -> CometProbe:
    context = ServerContext(load_text(f"[global]\nsession.max_buffer = {max_buffer}\n", "t.cfg"),
                            MemoryReactorClock())
    session = CometProbe(context, "k" * 32, "127.0.0.1:1", "localhost", None)
    session.open()
    return session


def test_comet_watermarks_pause_and_resume_the_backend():
    session = comet(4000)
    producer = RecordingProducer()
    session.registerProducer(producer, True)
    session.write(b"x" * 900)
    assert not producer.paused
    session.write(b"x" * 200)  # over high (1000)
    assert producer.paused
    session.drained(500)  # 600 left: above low (500)
    assert producer.paused
    session.drained(200)
    assert not producer.paused


def test_comet_overflow_closes_with_a_reason():
    session = comet(4000)
    session.write(b"x" * 4001)
    assert session.closed and "browser stopped reading" in session.close_reason
    assert session not in session.context.sessions.live


def test_comet_upstream_waits_while_the_backend_is_slow():
    session = comet()
    assert session.whenWritable().called
    session.pauseProducing()
    waiter = session.whenWritable()
    assert not waiter.called
    session.resumeProducing()
    assert waiter.called
    session.pauseProducing()
    waiter = session.whenWritable()
    session.finish("gone")  # a closing session releases its waiters
    assert waiter.called
