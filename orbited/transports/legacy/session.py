"""One Orbited 0.7 Comet session: the ISession the proxy runs on, over many HTTP requests.

It joins the sans-IO halves (:class:`DownstreamQueue` for packets to the
browser, :class:`UpstreamReader` for POST bodies) to the HTTP requests that
come and go, and to :class:`~orbited.comet.CometSession`'s flow control.
At most one downstream response is attached at a time: a new one ends the
previous one, as in 0.7.

Timers are not per session: the resource's sweep calls :meth:`tick` twice a
second for pings, ping timeouts, stream heartbeats, long-poll holds and the
linger of closed sessions.  An idle session holds a few small objects and no
DelayedCall.

Closing differs from 0.7 where 0.7 lost things: a closed session stays
reachable for ``session.ping_timeout`` seconds (or until the client
acknowledges the ``close`` packet), so a polling client still collects the
last data and the close (0.7 dropped them, and with them the ``0106`` of a
refused connection).  It never reads from or writes to the backend again.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from twisted.web.server import NOT_DONE_YET

from orbited.comet import CometSession, answer_when_writable, no_delay
from orbited.transports.legacy.codec import PacketError
from orbited.transports.legacy.kinds import MAX_PACKETS_PER_RESPONSE, DownstreamKind
from orbited.transports.legacy.queue import CLOSE, OPT, PING, DownstreamQueue
from orbited.transports.legacy.upstream import Close, Data, UpstreamReader

if TYPE_CHECKING:
    from twisted.web.server import Request

    from orbited.context import ServerContext
    from orbited.transports.legacy.resource import LegacyCometResource

log = logging.getLogger("orbited.transports.legacy")

TIMEOUT_REASON = "no request from the browser within session.ping_timeout after a ping"
CLIENT_CLOSE_REASON = "browser closed the socket"


def wire_seconds(value: float) -> bytes:
    """Seconds for an ``opt`` packet: 0.7 clients parseInt() them, so whole and at least 1."""
    return b"%d" % max(1, math.ceil(value))


def ack_of(request: Request) -> int | None:
    values = request.args.get(b"ack")
    if not values:
        return None
    raw = values[0]
    return int(raw) if raw.isdigit() and len(raw) < 16 else None


class Downstream:
    """One downstream HTTP response of a session (a stream, a long-poll, a poll)."""

    __slots__ = ("done", "kind", "last_write", "opened", "request", "session", "written")

    def __init__(self, session: LegacySession, request: Request, kind: DownstreamKind, now: float):
        self.session = session
        self.request = request
        self.kind = kind
        self.written = 0
        self.last_write = now
        self.opened = now
        self.done = False
        for name, value in kind.headers:
            request.setHeader(name, value)
        no_delay(request)
        request.notifyFinish().addBoth(self._gone)

    def _gone(self, _result: object) -> None:
        """The response finished or the browser dropped it."""
        self.done = True
        self.session.downstreamGone(self)

    def write(self, data: bytes, now: float) -> None:
        self.written += len(data)
        self.last_write = now
        self.request.write(data)

    def answer(self, body: bytes) -> None:
        """A whole non-streaming response at once, with a Content-Length."""
        if self.done:
            return
        self.done = True
        request = self.request
        request.setHeader(b"content-length", b"%d" % len(body))
        if body:
            request.write(body)
        request.finish()

    def end(self) -> None:
        if self.done:
            return
        if not self.kind.streaming:
            self.answer(b"")
            return
        self.done = True
        self.request.finish()


class LegacySession(CometSession):
    """The ISession of one 0.7 TCPSocket; the proxy sees nothing of packets or HTTP."""

    transportName = "tcp"

    def __init__(self, context: ServerContext, key: str, client_address: str,
                 host_header: str | None, origin: str | None, home: LegacyCometResource):
        super().__init__(context, key, client_address, host_header, origin)
        self.home = home
        self.queue = DownstreamQueue()
        self.upstream = UpstreamReader()
        self.downstream: Downstream | None = None
        now = home.now()
        self.heard = now  # last request from the browser
        self.pinged = 0.0  # when the unanswered ping went out, 0 if none
        self.linger_until = 0.0
        self.stalled_since = 0.0  # when the backend was paused for want of acks, 0 if not

    def start(self) -> None:
        """Open the session protocol and queue the two ``opt`` packets, as 0.7 did."""
        self.open()
        settings = self.context.config.settings
        self.queue.push(OPT, b"pingTimeout," + wire_seconds(settings["session.ping_timeout"]))
        self.queue.push(OPT, b"pingInterval," + wire_seconds(settings["session.ping_interval"]))

    # ------------------------------------------------------------------ ISession

    def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        if self.queued(self.queue.push_data(data)):
            self.flush()

    def answerHandshake(self, reply: str) -> None:
        if self.closed:
            return
        if self.queued(self.queue.push_data(reply.encode("ascii"), seal=True)):
            self.flush()

    def close(self, reason: str, code: int | None = None) -> None:
        """Queue ``close`` after everything else, release the backend, linger for the client."""
        if self.closed:
            return
        self.queue.push(CLOSE, b"timeout" if reason is TIMEOUT_REASON else b"loseConnection")
        self.linger_until = self.home.now() + self.context.config.settings["session.ping_timeout"]
        self.finish(reason)
        self.flush()

    # ------------------------------------------------------------------ requests

    def touch(self, request: Request) -> None:
        """Any request proves the browser alive and may carry an ack."""
        self.heard = self.home.now()
        self.pinged = 0.0
        ack = ack_of(request)
        if ack is not None:
            self.acknowledge(ack)

    def acknowledge(self, ack: int) -> None:
        released, close_acked = self.queue.ack(ack)
        if released and not self.closed:
            self.stalled_since = 0.0
            self.drained(released)
        if close_acked:
            self.home.forget(self)

    def receive(self, request: Request, body: bytes) -> bytes | int:
        """An upstream POST: deliver its new packets once, answer ``OK`` when the backend can take more."""
        try:
            events = self.upstream.read(body)
        except PacketError as exc:
            return self.home.refuse(request, exc.status, f"bad packets: {exc}")
        for event in events:
            if self.closed:
                break  # the close is queued for the client; its data has nowhere to go
            if event.__class__ is Data:
                if event.payload:
                    self.deliver(event.payload)
            elif event.__class__ is Close:
                self.clientClosed()
        writable = self.whenWritable()
        if writable.called:
            return b"OK"
        answer_when_writable(writable, request, lambda: self._answer_later(request))
        return NOT_DONE_YET

    @staticmethod
    def _answer_later(request: Request) -> None:
        """The backend can take more: answer the POST that waited."""
        request.write(b"OK")
        request.finish()

    def clientClosed(self) -> None:
        """The client sent ``close``: 0.7 closed at once; nothing is left to deliver."""
        if self.closed:
            return
        self.queue.push(CLOSE, b"loseConnection")
        self.finish(CLIENT_CLOSE_REASON)
        self.flush()
        self.home.forget(self)

    def attach(self, request: Request, kind: DownstreamKind) -> int:
        """A new downstream request: it replaces the previous one and gets every unacked packet."""
        previous = self.downstream
        if previous is not None:
            self.downstream = None
            previous.end()
        now = self.home.now()
        downstream = self.downstream = Downstream(self, request, kind, now)
        if kind.prelude:
            downstream.write(kind.prelude, now)
            downstream.written = 0  # 0.7 counted packets only towards MAXBYTES
        self._send(downstream, resend=True)
        return NOT_DONE_YET

    def downstreamGone(self, downstream: Downstream) -> None:
        if self.downstream is downstream:
            self.downstream = None

    # ------------------------------------------------------------------ sending

    def flush(self) -> None:
        downstream = self.downstream
        if downstream is not None and not downstream.done:
            self._send(downstream, resend=False)

    def _send(self, downstream: Downstream, resend: bool) -> None:
        kind = downstream.kind
        packets = self.queue.emit(resend, MAX_PACKETS_PER_RESPONSE)
        if not kind.streaming:
            if packets:
                downstream.answer(kind.frame(packets))
            elif not kind.hold or self.closed:
                downstream.answer(b"")
            return
        if packets:
            now = self.home.now()
            downstream.write(kind.frame(packets), now)
            while self.queue.has_unsent:
                downstream.write(kind.frame(self.queue.emit(False, MAX_PACKETS_PER_RESPONSE)), now)
        if self.closed and not self.queue.has_unsent or downstream.written > kind.max_bytes > 0:
            downstream.end()
        elif kind.acks_on_reconnect and self.queued_bytes > self.high and packets:
            # The client acks only when it reconnects: end the stream so that it
            # does, instead of pausing the backend until the next ping.
            downstream.end()

    # ------------------------------------------------------------------ the sweep

    def tick(self, now: float, interval: float, timeout: float) -> None:
        """Pings, ping timeout, heartbeats, long-poll hold and linger; called by the sweep."""
        if self.closed:
            if now >= self.linger_until:
                self.home.forget(self)
            return
        if self.pinged:
            if now - self.pinged >= timeout:
                log.info("tcp %s %s: closed: %s", self.key, self.clientAddress, TIMEOUT_REASON)
                self.close(TIMEOUT_REASON)
                return
        elif now - self.heard >= interval:
            self.pinged = now
            self.queue.push(PING)
            self.flush()
        if self.producer_paused:
            # Requests without acks keep the pings happy but not the queue.
            if not self.stalled_since:
                self.stalled_since = now
            elif now - self.stalled_since >= interval + timeout:
                reason = (f"browser stopped acknowledging: {self.queue.nbytes} bytes unacknowledged "
                          f"for {now - self.stalled_since:.0f}s")
                log.warning("tcp %s %s: closed: %s", self.key, self.clientAddress, reason)
                self.close(reason)
                return
        downstream = self.downstream
        if downstream is None or downstream.done:
            return
        kind = downstream.kind
        if kind.streaming:
            # The sweep runs every half second; 0.7 clients give up after 6 s of silence.
            if now - downstream.last_write >= kind.heartbeat_interval - 0.5:
                downstream.write(kind.heartbeat, now)
        elif now - downstream.opened >= kind.hold:
            downstream.end()

    def shutdown(self) -> None:
        """The resource forgets this session: end whatever response is attached."""
        downstream, self.downstream = self.downstream, None
        if downstream is not None:
            downstream.end()
