"""One SockJS session: its state, its outgoing queue, its one receiving connection, its timers.

A session outlives the HTTP requests that carry it.  Requests that carry
frames to the browser are *receivers* (an xhr poll, an xhr_streaming or
eventsource response, a WebSocket); at most one is attached at a time, a
second one gets ``c[2010,"Another connection still open"]``.  The session
sends ``o`` to its first receiver, ``h`` every ``heartbeat_interval`` while a
receiver waits, queued messages as ``a[...]`` frames, and after
:meth:`SockJSSession.close` the close frame to every receiver that comes,
until it expires ``disconnect_delay`` seconds after its last receiver left.
A receiver that the network drops ends the session at once (the browser's
state is unknown), and so does one that stops reading for ``disconnect_delay``
seconds (its browser is stalled; what waits for it would never go).  A
WebSocket session lives exactly as long as its socket.

The session knows nothing of HTTP or WebSocket (receivers do) nor of what runs
on it (its :class:`ISockJSHandler` does).  Its only outside dependency is a
clock (``IReactorTime``), so tests drive it with ``twisted.internet.task.Clock``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from zope.interface import Interface

log = logging.getLogger("orbited.sockjs")

ANOTHER_CONNECTION = (2010, "Another connection still open")
NORMAL_CLOSURE = (1000, "Normal closure")


class ISockJSHandler(Interface):
    """What runs on a SockJS session: an echo service, or the TCPSocket adapter."""

    def connectionOpened(connection: SockJSSession) -> None:
        """The open frame went out; ``connection`` is the way back (send, close)."""

    def messageReceived(text: str) -> None:
        """One message from the browser, in order."""

    def connectionClosed(reason: str) -> None:
        """The session is over (closed and expired, or its browser vanished); called once."""

    def drained(size: int) -> None:
        """``size`` characters of messages left the queue for a receiving connection."""

    def whenWritable() -> defer.Deferred:
        """Fires when the handler can take more messages; an upload is answered only then."""

    def uploadFrom(page: str | None) -> str | None:
        """An upload (xhr_send, jsonp_send) made by ``page`` (its Origin header, else its Referer,
        else None) is about to deliver messages: None to go on, or why to refuse it with 403."""


class SockJSHandler:
    """A handler with the optional parts filled in: no flow control, nothing to release."""

    connection: SockJSSession | None = None

    def connectionOpened(self, connection: SockJSSession) -> None:
        self.connection = connection

    def messageReceived(self, text: str) -> None:
        pass

    def connectionClosed(self, reason: str) -> None:
        self.connection = None

    def drained(self, size: int) -> None:
        pass

    def whenWritable(self) -> defer.Deferred:
        return defer.succeed(None)

    def uploadFrom(self, page: str | None) -> str | None:
        return None


class Receiver(Protocol):
    """A connection that carries frames to the browser (HTTP response or WebSocket).

    ``paused`` is True while its transport's buffer is full: the session then
    keeps messages queued.  A receiver reports pauses and resumes with
    :meth:`SockJSSession.receiver_paused` / :meth:`SockJSSession.receiver_resumed`
    and its end with :meth:`SockJSSession.detach`.  ``done`` is True once it
    will carry nothing more.
    """

    paused: bool
    done: bool

    def send_open(self) -> None: ...

    def send_heartbeat(self) -> None: ...

    def send_messages(self, messages: list[str]) -> None: ...

    def send_close(self, code: int, reason: str) -> None:
        """Send the close frame and end this receiver."""

    def abort(self) -> None:
        """Drop the connection without a close frame (its browser stopped reading)."""

    def pause_reading(self) -> None:
        """Stop reading messages from the browser, where this receiver also carries them."""

    def resume_reading(self) -> None: ...


class ReceiverFlow:
    """The IPushProducer half every receiver shares: its transport's buffer filled or
    drained, so the session holds or resumes messages.  A receiver's end is reported
    by the receiver itself (notifyFinish, onClose, connectionLost), so stopProducing
    does nothing."""

    session: SockJSSession
    paused: bool
    done: bool

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self.session.receiver_paused(self)

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            if not self.done:
                self.session.receiver_resumed(self)

    def stopProducing(self) -> None:
        pass


class State(Enum):
    CONNECTING = "connecting"  # no receiver has had the open frame yet
    OPEN = "open"
    CLOSING = "closing"  # closed by the handler; the close frame is served until expiry
    CLOSED = "closed"


class SockJSSession:
    """One session; created by :class:`~orbited.transports.sockjs.service.SockJSService`."""

    def __init__(self, session_id: str, handler: Any, clock: Any, heartbeat_interval: float,
                 disconnect_delay: float, forget: Callable[[SockJSSession], None] | None = None,
                 bound_to_receiver: bool = False):
        self.session_id = session_id
        self.handler = handler
        self.clock = clock
        self.heartbeat_interval = heartbeat_interval
        self.disconnect_delay = disconnect_delay
        self.forget = forget
        self.bound_to_receiver = bound_to_receiver
        self.state = State.CONNECTING
        self.receiver: Receiver | None = None
        self.queue: list[str] = []
        self.queued_size = 0
        self.close_code, self.close_reason = NORMAL_CLOSURE
        self.reading_paused = False
        self._timer: IDelayedCall | None = None
        self._due = 0.0  # when the heartbeat or the expiry is due
        self._stall: IDelayedCall | None = None
        self._arm(disconnect_delay)

    def __repr__(self) -> str:
        return f"<SockJSSession {self.session_id!r} {self.state.value}>"

    # ------------------------------------------------------------------
    # timers: a heartbeat while a receiver waits, an expiry while none does.
    # A poll attaches and detaches a receiver every few milliseconds, and each
    # moves what is due (heartbeat on attach, expiry on detach).  Moving a
    # reactor DelayedCall costs a cancel and a heap push; here a move only
    # records ``_due``.  The one DelayedCall is replaced only when the new
    # time is sooner than it; when it fires early it re-arms itself for
    # ``_due``.  A polling session so arms at most two timers per
    # ``disconnect_delay`` instead of one per poll, off the path that answers it.

    def _arm(self, delay: float) -> None:
        due = self.clock.seconds() + delay
        self._due = due
        timer = self._timer
        if timer is not None:
            if timer.getTime() <= due:
                return  # it fires first and re-arms for _due
            timer.cancel()
        self._timer = self.clock.callLater(delay, self._fire)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fire(self) -> None:
        self._timer = None
        early = self._due - self.clock.seconds()
        if early > 0:
            self._timer = self.clock.callLater(early, self._fire)
            return
        receiver = self.receiver
        if receiver is None:
            self._expire()
            return
        # Re-arm first: a polling receiver ends on its heartbeat and detach
        # moves this timer to the expiry.
        self._arm(self.heartbeat_interval)
        if not receiver.paused:  # a stalled stream has data pending anyway
            receiver.send_heartbeat()

    def _expire(self) -> None:
        if self.state is State.CLOSING:
            self._end(self.close_reason)
        else:
            self._end(f"no receiving connection for {self.disconnect_delay:g}s")

    # ------------------------------------------------------------------
    # receivers

    def attach(self, receiver: Receiver) -> None:
        """A receiving connection arrived for this session."""
        if self.receiver is not None:
            receiver.send_close(*ANOTHER_CONNECTION)
            return
        if self.state is State.CLOSED:
            receiver.send_close(self.close_code, self.close_reason)
            return
        # The timer stays: it becomes the heartbeat below, or the expiry again if
        # this receiver ends at once (a poll answered with what was queued).
        self.receiver = receiver
        if self.reading_paused:
            receiver.pause_reading()
        if self.state is State.CLOSING:
            # What was queued before the close, then the close frame; the
            # expiry restarts when this receiver ends.
            self.flush(force=True)
            if self.receiver is receiver:
                receiver.send_close(self.close_code, self.close_reason)
            return
        if self.state is State.CONNECTING:
            receiver.send_open()
            self.state = State.OPEN
            self.handler.connectionOpened(self)
        if self.receiver is receiver:
            self.flush()
        if self.receiver is receiver:
            self._arm(self.heartbeat_interval)

    def detach(self, receiver: Receiver, lost: str | None = None) -> None:
        """``receiver`` ended: normally (``lost`` None) or because its connection dropped."""
        if receiver is not self.receiver:
            return  # a receiver that was turned away
        self.receiver = None
        self._cancel_stall()
        if self.state is State.CLOSED:
            return
        if lost is not None:
            self._end(lost)
        elif self.bound_to_receiver:
            self._end(self.close_reason if self.state is State.CLOSING else "receiver closed")
        else:
            self._arm(self.disconnect_delay)

    def end(self, reason: str) -> None:
        """End the session now, whatever its state (its only connection is gone)."""
        receiver, self.receiver = self.receiver, None
        if receiver is not None and not receiver.done:
            receiver.abort()
        self._end(reason)

    def _end(self, reason: str) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self._cancel_timer()
        self._cancel_stall()
        self.queue = []
        self.queued_size = 0
        if self.forget is not None:
            self.forget(self)
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.connectionClosed(reason)

    # ------------------------------------------------------------------
    # messages

    def deliver(self, messages: list[str]) -> None:
        """Messages from the browser, in order; ignored unless the session is open."""
        for text in messages:
            if self.state is not State.OPEN:
                return
            self.handler.messageReceived(text)

    def send(self, text: str) -> bool:
        """Queue one message for the browser; False when the session no longer takes any."""
        if self.state is not State.OPEN:
            return False
        receiver = self.receiver
        if receiver is not None and not receiver.paused and not self.queue:
            # The common case, a receiver waiting with nothing queued: straight through.
            receiver.send_messages([text])
            handler = self.handler
            if handler is not None:
                handler.drained(len(text))
            return True
        self.queue.append(text)
        self.queued_size += len(text)
        if receiver is not None and not receiver.paused:
            self.flush()
        return True

    def flush(self, force: bool = False) -> None:
        """Send everything queued to the receiver, unless it is paused (``force`` overrides)."""
        receiver = self.receiver
        if receiver is None or not self.queue or (receiver.paused and not force):
            return
        messages, self.queue = self.queue, []
        size, self.queued_size = self.queued_size, 0
        receiver.send_messages(messages)
        handler = self.handler
        if handler is not None:
            handler.drained(size)

    def close(self, code: int = NORMAL_CLOSURE[0], reason: str = NORMAL_CLOSURE[1],
              discard: bool = False) -> bool:
        """Close towards the browser: queued messages first, then ``c[code,reason]``.

        ``discard`` drops what is queued, and the connection of a receiver
        that stopped reading: for a browser closed because it never drains.
        """
        if self.state not in (State.CONNECTING, State.OPEN):
            return False
        self.state = State.CLOSING
        self.close_code, self.close_reason = code, reason
        if discard:
            self.queue = []
            self.queued_size = 0
        receiver = self.receiver
        if receiver is None:
            return True
        if discard and receiver.paused:
            self.receiver = None
            receiver.abort()
            self._end(reason)
            return True
        self.flush(force=True)
        if self.receiver is receiver:
            receiver.send_close(code, reason)
        return True

    # ------------------------------------------------------------------
    # upstream flow control

    def pauseReading(self) -> None:
        """The handler is slow: stop reading messages where the transport can (WebSocket)."""
        self.reading_paused = True
        if self.receiver is not None:
            self.receiver.pause_reading()

    def resumeReading(self) -> None:
        self.reading_paused = False
        if self.receiver is not None:
            self.receiver.resume_reading()

    # ------------------------------------------------------------------
    # downstream flow control: the receiver's transport buffer

    def receiver_paused(self, receiver: Receiver) -> None:
        """``receiver``'s buffer is full; if it stays full for ``disconnect_delay``, the browser is stalled."""
        if receiver is self.receiver and self._stall is None and self.state is not State.CLOSED:
            self._stall = self.clock.callLater(self.disconnect_delay, self._stalled)

    def receiver_resumed(self, receiver: Receiver) -> None:
        """``receiver`` has room again: send what waited."""
        if receiver is self.receiver:
            self._cancel_stall()
            self.flush()

    def _cancel_stall(self) -> None:
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        reason = f"browser stopped reading for {self.disconnect_delay:g}s"
        log.warning("SockJS session %r: %s, %d characters waiting; closing it",
                    self.session_id, reason, self.queued_size)
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            receiver.abort()
        self._end(reason)

    def whenWritable(self) -> defer.Deferred:
        """Fires when an upload may be answered (at once unless the handler is slow)."""
        handler = self.handler
        if handler is None or self.state is not State.OPEN:
            return defer.succeed(None)
        return handler.whenWritable()
