"""The SockJS session state machine on a fake clock, and the TCPSocket adapter on top of it."""

from __future__ import annotations

import base64

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet import defer
from twisted.internet.task import Clock

from orbited.config import load_text
from orbited.context import ServerContext
from orbited.session import SHUTDOWN_REASON
from orbited.transports.sockjs.service import SessionRefused, SessionRequest, SockJSOptions, SockJSService
from orbited.transports.sockjs.session import SockJSHandler, SockJSSession, State
from orbited.transports.sockjs.tcpsocket import SockJSTCPSocket, tcpsocket_service
from tests.support.fakes import RecordingProducer, RecordingProxy

HEARTBEAT = 25.0
DELAY = 5.0


class FakeReceiver:
    """Records what a session sends; ``polling`` receivers end after one frame, like xhr."""

    def __init__(self, session: SockJSSession | None = None, polling: bool = False):
        self.session = session
        self.polling = polling
        self.frames: list[object] = []
        self.paused = False
        self.done = False
        self.aborted = False
        self.reading = True

    def _sent(self, frame: object, last: bool = False) -> None:
        assert not self.done, "a frame after the end"
        self.frames.append(frame)
        if last or self.polling:
            self.done = True
            if self.session is not None:
                self.session.detach(self)

    def send_open(self) -> None:
        self._sent("o")

    def send_heartbeat(self) -> None:
        self._sent("h")

    def send_messages(self, messages: list[str]) -> None:
        self._sent(list(messages))

    def send_close(self, code: int, reason: str) -> None:
        self._sent((code, reason), last=True)

    def abort(self) -> None:
        self.done = self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def lose(self) -> None:
        """The network dropped this receiver."""
        self.done = True
        self.session.detach(self, lost="browser connection lost")


class Recorder(SockJSHandler):
    def __init__(self, echo: bool = False, close_on_open: tuple[int, str] | None = None):
        self.echo = echo
        self.close_on_open = close_on_open
        self.messages: list[str] = []
        self.closed: list[str] = []
        self.drained_total = 0
        self.opened = 0

    def connectionOpened(self, connection: SockJSSession) -> None:
        super().connectionOpened(connection)
        self.opened += 1
        if self.close_on_open:
            connection.close(*self.close_on_open)

    def messageReceived(self, text: str) -> None:
        self.messages.append(text)
        if self.echo:
            self.connection.send(text)

    def connectionClosed(self, reason: str) -> None:
        self.closed.append(reason)

    def drained(self, size: int) -> None:
        self.drained_total += size


@pytest.fixture
def clock() -> Clock:
    return Clock()


def new_session(clock: Clock, handler: Recorder | None = None, bound: bool = False) -> SockJSSession:
    forgotten: list[SockJSSession] = []
    session = SockJSSession("s1", handler or Recorder(), clock, HEARTBEAT, DELAY,
                            forget=forgotten.append, bound_to_receiver=bound)
    session.forgotten = forgotten  # type: ignore[attr-defined]
    return session


def receiver(session: SockJSSession, polling: bool = False) -> FakeReceiver:
    r = FakeReceiver(session, polling)
    session.attach(r)
    return r


# ---------------------------------------------------------------------------
# opening, messages, one receiver


def test_first_receiver_gets_the_open_frame_then_the_handler_runs(clock):
    handler = Recorder()
    session = new_session(clock, handler)
    r = receiver(session)
    assert r.frames == ["o"]
    assert session.state is State.OPEN and handler.opened == 1 and handler.connection is session


def test_messages_go_straight_to_a_waiting_receiver_in_order(clock):
    handler = Recorder(echo=True)
    session = new_session(clock, handler)
    r = receiver(session)
    session.deliver(["a", "b"])
    assert handler.messages == ["a", "b"]
    assert r.frames == ["o", ["a"], ["b"]]
    assert handler.drained_total == 2


def test_polling_receivers_collect_what_queued_between_polls(clock):
    handler = Recorder(echo=True)
    session = new_session(clock, handler)
    assert receiver(session, polling=True).frames == ["o"]
    session.deliver(["a", "b", "c"])
    assert session.queue == ["a", "b", "c"] and session.queued_size == 3
    assert receiver(session, polling=True).frames == [["a", "b", "c"]]
    assert handler.drained_total == 3 and session.queue == []


def test_a_second_receiver_is_turned_away_and_the_first_keeps_the_session(clock):
    session = new_session(clock, Recorder(echo=True))
    first = receiver(session)
    second = receiver(session)
    assert second.frames == [(2010, "Another connection still open")]
    assert session.receiver is first
    session.deliver(["x"])
    assert first.frames[-1] == ["x"] and second.frames == [(2010, "Another connection still open")]


def test_messages_are_ignored_unless_open(clock):
    handler = Recorder()
    session = new_session(clock, handler)
    session.deliver(["early"])
    receiver(session, polling=True)
    session.close(3000, "bye")
    session.deliver(["late"])
    assert handler.messages == []
    assert session.send("x") is False


# ---------------------------------------------------------------------------
# heartbeats and expiry


def test_heartbeat_every_interval_while_a_receiver_waits(clock):
    session = new_session(clock)
    r = receiver(session)
    clock.advance(HEARTBEAT - 0.1)
    assert r.frames == ["o"]
    clock.advance(0.1)
    assert r.frames == ["o", "h"]
    clock.advance(HEARTBEAT)
    assert r.frames == ["o", "h", "h"]


def test_a_heartbeat_ends_a_poll_and_the_expiry_starts(clock):
    handler = Recorder()
    session = new_session(clock, handler)
    receiver(session, polling=True)
    poll = receiver(session, polling=True)
    clock.advance(HEARTBEAT)
    assert poll.frames == ["h"] and session.receiver is None
    clock.advance(DELAY)
    assert session.state is State.CLOSED and handler.closed == [f"no receiving connection for {DELAY:g}s"]


def test_session_expires_after_the_delay_without_a_receiver(clock):
    handler = Recorder()
    session = new_session(clock, handler)
    receiver(session, polling=True)
    clock.advance(DELAY - 0.1)
    assert session.state is State.OPEN
    session.send("x")
    assert receiver(session, polling=True).frames == [["x"]]  # a poll in time resets the expiry
    clock.advance(DELAY - 0.1)
    assert session.state is State.OPEN
    clock.advance(0.2)
    assert session.state is State.CLOSED
    assert session.forgotten == [session]  # type: ignore[attr-defined]
    assert handler.closed == ["no receiving connection for 5s"]


def test_polls_move_the_expiry_and_heartbeat_without_a_timer_each(clock):
    """Each poll moves what is due; the times stay exact though the reactor sees one timer per delay."""
    armed: list[float] = []
    call_later = clock.callLater
    clock.callLater = lambda delay, *a, **kw: armed.append(delay) or call_later(delay, *a, **kw)
    handler = Recorder()
    session = new_session(clock, handler)
    receiver(session, polling=True)
    for _ in range(40):  # 20 s of polls, a message every 0.5 s
        poll = receiver(session, polling=True)
        clock.advance(0.3)
        session.send("x")
        assert poll.frames == [["x"]]
        clock.advance(0.2)
    assert session.state is State.OPEN
    # At most two per delay (an early firing during a poll re-arms for its heartbeat, the next
    # detach for the expiry); the old way armed one per poll, 40 here.
    assert len(armed) <= 2 * 20 / DELAY + 2, armed

    waiting = receiver(session, polling=True)  # the expiry is still armed: it fires early and re-arms
    clock.advance(HEARTBEAT - 0.01)
    assert waiting.frames == []
    clock.advance(0.02)
    assert waiting.frames == ["h"] and session.receiver is None  # the heartbeat ended the poll

    clock.advance(DELAY - 0.02)
    assert session.state is State.OPEN
    clock.advance(0.02)
    assert session.state is State.CLOSED and handler.closed == [f"no receiving connection for {DELAY:g}s"]
    assert not [c for c in clock.getDelayedCalls() if c.active()]


def test_a_session_nobody_receives_from_expires_too(clock):
    handler = Recorder()
    session = new_session(clock, handler)
    clock.advance(DELAY)
    assert session.state is State.CLOSED and handler.closed and handler.opened == 0


def test_no_timers_left_after_the_end(clock):
    session = new_session(clock)
    r = receiver(session)
    r.lose()
    assert clock.getDelayedCalls() == []


# ---------------------------------------------------------------------------
# closing


def test_close_sends_the_frame_to_the_receiver_and_to_every_later_one_until_expiry(clock):
    handler = Recorder()
    session = new_session(clock, handler)
    r = receiver(session)
    session.close(3000, "Go away!")
    assert r.frames[-1] == (3000, "Go away!") and r.done
    for _ in range(3):
        clock.advance(DELAY - 1)
        assert receiver(session, polling=True).frames == [(3000, "Go away!")]
    assert handler.closed == []
    clock.advance(DELAY)
    assert session.state is State.CLOSED and handler.closed == ["Go away!"]


def test_close_on_open_over_polling(clock):
    handler = Recorder(close_on_open=(3000, "Go away!"))
    session = new_session(clock, handler)
    assert receiver(session, polling=True).frames == ["o"]
    assert receiver(session, polling=True).frames == [(3000, "Go away!")]


def test_close_on_open_over_streaming(clock):
    session = new_session(clock, Recorder(close_on_open=(3000, "Go away!")))
    r = receiver(session)
    assert r.frames == ["o", (3000, "Go away!")] and r.done
    assert receiver(session).frames == [(3000, "Go away!")]


def test_queued_messages_go_before_the_close_frame(clock):
    session = new_session(clock, Recorder())
    receiver(session, polling=True)
    session.send("a")
    session.send("b")
    session.close(1000, "done")
    assert receiver(session, polling=True).frames == [["a", "b"]]
    assert receiver(session, polling=True).frames == [(1000, "done")]
    stream = new_session(clock, Recorder())
    receiver(stream, polling=True)
    stream.send("a")
    stream.close(1000, "done")
    assert receiver(stream).frames == [["a"], (1000, "done")]


def test_a_paused_receiver_still_gets_the_queue_then_the_close(clock):
    session = new_session(clock, Recorder())
    r = receiver(session)
    r.paused = True
    session.send("a")
    assert r.frames == ["o"]
    session.close(1000, "done")
    assert r.frames == ["o", ["a"], (1000, "done")]


def test_discarding_close_drops_the_queue_and_aborts_a_stalled_receiver(clock):
    handler = Recorder()
    session = new_session(clock, handler)
    r = receiver(session)
    r.paused = True
    session.send("a" * 100)
    session.close(1000, "stalled", discard=True)
    assert r.aborted and r.frames == ["o"]
    assert session.state is State.CLOSED and handler.closed == ["stalled"]


def test_discarding_close_without_a_receiver_keeps_only_the_close_frame(clock):
    session = new_session(clock, Recorder())
    receiver(session, polling=True)
    session.send("a")
    session.close(1000, "stalled", discard=True)
    assert receiver(session, polling=True).frames == [(1000, "stalled")]


def test_close_twice_is_harmless(clock):
    session = new_session(clock, Recorder())
    receiver(session, polling=True)
    assert session.close(3000, "one") is True
    assert session.close(3001, "two") is False
    assert receiver(session, polling=True).frames == [(3000, "one")]


# ---------------------------------------------------------------------------
# receivers that vanish


def test_a_receiver_lost_by_the_network_ends_the_session(clock):
    handler = Recorder()
    session = new_session(clock, handler)
    r = receiver(session)
    r.lose()
    assert session.state is State.CLOSED and handler.closed == ["browser connection lost"]


def test_a_turned_away_receiver_that_vanishes_changes_nothing(clock):
    session = new_session(clock, Recorder())
    first = receiver(session)
    second = FakeReceiver(session)
    session.attach(second)
    session.detach(second, lost="gone")
    assert session.state is State.OPEN and session.receiver is first


def test_websocket_sessions_end_with_their_receiver(clock):
    handler = Recorder()
    session = new_session(clock, handler, bound=True)
    r = receiver(session)
    session.close(3000, "bye")
    assert r.frames[-1] == (3000, "bye")
    assert session.state is State.CLOSED and handler.closed == ["bye"]
    other = new_session(clock, Recorder(), bound=True)
    receiver(other)
    other.end("browser connection lost")
    assert other.state is State.CLOSED


# ---------------------------------------------------------------------------
# flow control


def test_a_paused_receiver_keeps_messages_queued_until_it_resumes(clock):
    handler = Recorder()
    session = new_session(clock, handler)
    r = receiver(session)
    r.paused = True
    session.send("a")
    session.send("bb")
    assert r.frames == ["o"] and session.queued_size == 3 and handler.drained_total == 0
    r.paused = False
    session.receiver_resumed(r)
    assert r.frames == ["o", ["a", "bb"]] and handler.drained_total == 3


def test_a_receiver_paused_for_the_delay_is_a_stalled_browser(clock, caplog):
    handler = Recorder()
    session = new_session(clock, handler)
    r = receiver(session)
    r.paused = True
    session.receiver_paused(r)
    session.send("a")
    clock.advance(DELAY - 1)
    assert r.frames == ["o"]
    r.paused = False
    session.receiver_resumed(r)  # resumed in time: all is well
    assert session.state is State.OPEN and r.frames == ["o", ["a"]]
    r.paused = True
    session.receiver_paused(r)
    clock.advance(DELAY)
    assert r.aborted and session.state is State.CLOSED
    assert handler.closed == [f"browser stopped reading for {DELAY:g}s"]
    assert "stopped reading" in caplog.text


def test_no_heartbeat_into_a_full_buffer(clock):
    session = SockJSSession("s", Recorder(), clock, 1.0, 10.0)
    r = receiver(session)
    r.paused = True
    clock.advance(3)
    assert r.frames == ["o"]
    r.paused = False
    clock.advance(1)
    assert r.frames == ["o", "h"]


def test_reading_pauses_reach_the_receiver_and_new_receivers(clock):
    session = new_session(clock)
    r = receiver(session)
    session.pauseReading()
    assert not r.reading
    session.resumeReading()
    assert r.reading
    session.pauseReading()
    bound = new_session(clock, bound=True)
    bound.pauseReading()
    assert not receiver(bound).reading


def test_when_writable_asks_the_handler_while_open(clock):
    waiter: defer.Deferred = defer.Deferred()

    class Slow(Recorder):
        def whenWritable(self) -> defer.Deferred:
            return waiter

    session = new_session(clock, Slow())
    assert session.whenWritable().called  # not open yet
    receiver(session)
    assert session.whenWritable() is waiter


# ---------------------------------------------------------------------------
# the service


def test_service_keeps_http_sessions_and_forgets_them_at_the_end(clock):
    handlers: list[Recorder] = []

    def factory(request: SessionRequest) -> Recorder:
        if request.session_id == "full":
            raise SessionRefused(503, "too many")
        handlers.append(Recorder())
        return handlers[-1]

    service = SockJSService("t", factory, SockJSOptions(disconnect_delay=DELAY), clock)
    info = SessionRequest("abc", "xhr", "127.0.0.1:1", "h", None)
    session = service.open_session(info)
    assert service.find("abc") is session
    ws = service.open_session(SessionRequest("abc", "websocket", "127.0.0.1:2", "h", None), keep=False)
    assert service.find("abc") is session and ws is not session
    clock.advance(DELAY)
    assert service.find("abc") is None
    with pytest.raises(SessionRefused):
        service.open_session(SessionRequest("full", "xhr", "127.0.0.1:3", "h", None))


# ---------------------------------------------------------------------------
# the TCPSocket adapter


def tcp_context(clock: Clock, extra: str = "") -> tuple[ServerContext, list[RecordingProxy]]:
    context = ServerContext(load_text("[global]\nsession.ping_interval = 25\nsession.ping_timeout = 5\n"
                                      "session.max_buffer = 1000\n" + extra), clock)
    proxies: list[RecordingProxy] = []

    def new_protocol() -> RecordingProxy:
        proxies.append(RecordingProxy())
        return proxies[-1]

    context.newSessionProtocol = new_protocol  # type: ignore[method-assign]
    return context, proxies


def tcp_session(clock: Clock, context: ServerContext) -> tuple[SockJSSession, SockJSTCPSocket]:
    service = tcpsocket_service(context)
    session = service.open_session(SessionRequest("k1", "xhr_streaming", "127.0.0.1:9", "h:1", "http://h:1"))
    return session, session.handler


def test_tcpsocket_handshake_then_base64_both_ways(clock):
    context, proxies = tcp_context(clock)
    session, adapter = tcp_session(clock, context)
    r = receiver(session)
    proxy = proxies[0]
    assert proxy.session is adapter and adapter in context.sessions.live
    assert adapter.transportName == "sockjs-xhr_streaming" and adapter.origin == "http://h:1"
    session.deliver(["127.0.0.1:7\n"])
    adapter.answerHandshake("1")
    session.deliver([base64.b64encode(bytes(range(256))).decode()])
    assert proxy.data == [b"127.0.0.1:7\n", bytes(range(256))]
    adapter.write("é\x00".encode())
    assert r.frames[1:] == [["1"], [base64.b64encode("é\x00".encode()).decode()]]
    assert adapter.queued_bytes == 0


def test_tcpsocket_refusal_closes_with_4000_plus_code(clock):
    context, proxies = tcp_context(clock)
    session, adapter = tcp_session(clock, context)
    r = receiver(session)
    session.deliver(["10.0.0.1:22"])
    adapter.answerHandshake("0106")
    adapter.close("unauthorized connect to 10.0.0.1:22", 106)
    assert r.frames[1:] == [["0106"], (4106, "unauthorized connect to 10.0.0.1:22")]
    clock.advance(5)
    assert proxies[0].closed == ["unauthorized connect to 10.0.0.1:22"]
    assert adapter not in context.sessions.live


def test_tcpsocket_bad_base64_closes_the_session(clock):
    context, proxies = tcp_context(clock)
    session, _ = tcp_session(clock, context)
    r = receiver(session)
    session.deliver(["127.0.0.1:7", "not base64!"])
    assert r.frames[-1] == (1007, "message is not base64")
    session.deliver([base64.b64encode(b"late").decode()])
    assert proxies[0].data == [b"127.0.0.1:7"]
    clock.advance(5)
    assert proxies[0].closed


def test_tcpsocket_close_codes(clock):
    context, _ = tcp_context(clock)
    session, adapter = tcp_session(clock, context)
    r = receiver(session)
    adapter.close(SHUTDOWN_REASON)
    assert r.frames[-1] == (1001, SHUTDOWN_REASON)
    session, adapter = tcp_session(clock, context)
    r = receiver(session)
    adapter.close("backend closed" + "x" * 200)
    code, reason = r.frames[-1]
    assert code == 1000 and len(reason.encode()) <= 123


def test_tcpsocket_a_browser_that_never_drains_is_closed_and_released(clock, caplog):
    context, proxies = tcp_context(clock)
    session, adapter = tcp_session(clock, context)
    receiver(session, polling=True)
    backend = RecordingProducer()
    adapter.registerProducer(backend, True)
    adapter.write(b"x" * 300)  # 400 base64 characters: over high (250), under the bound (1000)
    assert backend.paused
    adapter.write(b"x" * 600)
    assert "session.max_buffer" in caplog.text
    assert session.queue == []  # discarded: nobody would ever read it
    assert receiver(session, polling=True).frames[0][0] == 1000
    clock.advance(5)
    assert proxies[0].closed and adapter not in context.sessions.live


def test_tcpsocket_backend_resumes_when_the_browser_drains(clock):
    context, _ = tcp_context(clock)
    session, adapter = tcp_session(clock, context)
    receiver(session, polling=True)
    backend = RecordingProducer()
    adapter.registerProducer(backend, True)
    adapter.write(b"x" * 300)
    assert backend.paused
    receiver(session, polling=True)
    assert not backend.paused and adapter.queued_bytes == 0


def test_tcpsocket_slow_backend_holds_uploads_and_websocket_reads(clock):
    context, _ = tcp_context(clock)
    session, adapter = tcp_session(clock, context)
    r = receiver(session)
    adapter.pauseProducing()
    waiter = session.whenWritable()
    assert not waiter.called and not r.reading
    adapter.resumeProducing()
    assert waiter.called and r.reading


def test_tcpsocket_service_refuses_when_full_and_originless_pages_it_cannot_confirm(clock):
    context, _ = tcp_context(clock, "proxy.max_sessions = 1\norigins = http://app.example\n")
    service = tcpsocket_service(context)
    assert service.originless_refusal(None, "h") is not None
    assert service.originless_refusal("http://evil.example/page", "h") is not None
    assert service.originless_refusal("http://app.example/page", "h") is None
    first = service.open_session(SessionRequest("a", "xhr", "127.0.0.1:1", "h", None))
    receiver(first, polling=True)
    with pytest.raises(SessionRefused) as refused:
        service.open_session(SessionRequest("b", "xhr", "127.0.0.1:2", "h", None))
    assert refused.value.status == 503
    open_context, _ = tcp_context(clock, "origins = *\n")
    assert tcpsocket_service(open_context).originless_refusal(None, "h") is None


# ---------------------------------------------------------------------------
# any sequence of events keeps the session's promises

class SessionMachine(RuleBasedStateMachine):
    """Receivers come and go (normally, lost, paused), messages are sent, the clock runs, the handler closes."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.handler = Recorder()
        self.session = SockJSSession("m", self.handler, self.clock, HEARTBEAT, DELAY)
        self.receivers: list[FakeReceiver] = []
        self.sent: list[str] = []
        self.counter = 0

    def live(self) -> list[FakeReceiver]:
        return [r for r in self.receivers if not r.done]

    @rule(polling=st.booleans())
    def a_receiver_arrives(self, polling: bool) -> None:
        r = FakeReceiver(self.session, polling)
        self.receivers.append(r)
        self.session.attach(r)

    @precondition(lambda self: self.live())
    @rule(data=st.data())
    def a_receiver_is_lost(self, data) -> None:
        r = data.draw(st.sampled_from(self.live()))
        r.lose()

    @precondition(lambda self: self.live())
    @rule(data=st.data(), paused=st.booleans())
    def a_receiver_pauses_or_resumes(self, data, paused: bool) -> None:
        r = data.draw(st.sampled_from(self.live()))
        r.paused = paused
        if paused:
            self.session.receiver_paused(r)
        else:
            self.session.receiver_resumed(r)

    @rule()
    def the_handler_sends(self) -> None:
        self.counter += 1
        text = f"m{self.counter}"
        if self.session.send(text):
            self.sent.append(text)

    @rule(code=st.sampled_from([1000, 3000, 4106]))
    def the_handler_closes(self, code: int) -> None:
        self.session.close(code, "bye")

    @rule(seconds=st.sampled_from([0.5, 4.0, 5.0, 25.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def at_most_one_receiver_and_it_is_live(self) -> None:
        attached = self.session.receiver
        assert attached is None or (attached in self.receivers and not attached.done)

    @invariant()
    def messages_arrive_once_in_order(self) -> None:
        received = [m for r in self.receivers for f in r.frames if isinstance(f, list) for m in f]
        # receivers are used one after the other, so their frames concatenate in time order
        assert received == self.sent[:len(received)]
        if self.session.state is State.OPEN and self.session.receiver is not None \
                and not self.session.receiver.paused:
            assert received == self.sent and not self.session.queue

    @invariant()
    def one_open_frame_at_most_and_first(self) -> None:
        opens = [(r, i) for r in self.receivers for i, f in enumerate(r.frames) if f == "o"]
        assert len(opens) <= 1
        if opens:
            assert opens[0][1] == 0

    @invariant()
    def closed_once_and_quiet_after(self) -> None:
        assert len(self.handler.closed) <= 1
        if self.session.state is State.CLOSED:
            assert self.handler.closed and self.session.receiver is None
            assert not [c for c in self.clock.getDelayedCalls() if c.active()]
        else:
            assert not self.handler.closed


TestSessionMachine = SessionMachine.TestCase
TestSessionMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
