"""One client connection: requests parsed, answered one at a time, kept alive or closed.

The Twisted shell around :class:`~orbited.http.parser.RequestParser`.  It
never decides what to answer (that is the site's resource tree); it decides
when: a request is rendered once its body is in, the next pipelined request
only once the previous response is finished, and while a response is in
progress further bytes are only buffered (reading pauses when more than
``site.pipeline_limit`` wait).

Timeouts cost nothing per read.  The site's sweep closes a connection whose
``deadline`` passed; the deadline is set when the connection opens and when
a response ends (a whole request head must arrive by then: an idle client
and a slowloris client are the same case), and moved on each piece of a
request body, but never past what ``BODY_MIN_RATE`` allows (a body trickled
a byte per ``http.timeout`` would otherwise hold its connection for ever).  While a response is in progress (a long-poll, a stream) the
connection is not watched at all.

Bad requests get their status and a short text, then the connection closes;
nothing a peer sends raises out of here or touches another connection.  The
close lingers (RFC 9112 section 9.6): the server stops writing, then reads
and drops what the client still sends until the client closes or
``http.timeout`` passes.  Closed at once, a socket with unread bytes resets
the connection, and the reset discards the answer in the client's buffers:
a client uploading a body too large for the server got a broken pipe or a
reset instead of its 413.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from orbited.addresses import peer_text
from orbited.directwrite import unsent_bytes
from orbited.http.events import NEED_DATA, BodyData, EndOfRequest, RequestError, RequestHead
from orbited.http.parser import RequestParser
from orbited.http.request import Request
from orbited.http.response import CONTINUE, error_response
from orbited.http.upgrade import protocol_of, wants_websocket

if TYPE_CHECKING:
    from orbited.http.site import LeanSite

log = logging.getLogger("orbited.http")

HOLD_POLL = 0.002  # seconds to the first check whether a held request's predecessor has left
HOLD_POLL_MOST = 0.25  # the checks back off to this: a client that never reads costs next to nothing
# A pipelined request is answered only once less than this of the previous responses waits
# to be sent (Twisted's FileDescriptor.bufferSize, where it pauses a producer): a client that
# pipelines requests and reads no answers must not grow the server's memory.
UNSENT_MOST = 64 * 1024
# A request body must come at least this fast on average (bytes/s), after a first http.timeout
# of grace: each byte earns 1/BODY_MIN_RATE s more (Apache mod_reqtimeout's body=N,MinRate=500).
# Moving the deadline on each read alone (nginx's client_body_timeout) let a client hold a
# connection for months by trickling a megabyte body a byte per http.timeout.
BODY_MIN_RATE = 500


class HTTPChannel(Protocol):
    """The HTTP/1.1 server side of one connection."""

    # TCP_NODELAY is on for every connection: small Comet answers must not wait for Nagle.
    noDelay = True

    def __init__(self, site: LeanSite):
        self.site = site
        self.parser = RequestParser(site.limits)
        self.request: Request | None = None  # being read, or being answered
        self.responding = False  # the request was rendered and its response is not finished
        self.closing = False  # no more requests on this connection
        self.closeAfterResponse = False
        self.readPaused = False
        self.deadline = 0.0
        self._body_deadline = 0.0  # the latest the body under way may end, at BODY_MIN_RATE (see _body)
        self._advancing = False
        self._held: RequestHead | None = None  # waits for the response before it to leave (see _head)
        self.peer: Any = None
        self.host: Any = None
        self.secure = False
        self.send: Callable[[bytes], None] = self._not_connected

    # --- connection events

    def connectionMade(self) -> None:
        transport = self.transport
        try:
            transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass  # not TCP (a UNIX socket, a test transport)
        self.peer = transport.getPeer()
        self.host = transport.getHost()
        self.secure = ISSLTransport.providedBy(transport)
        # every response byte goes through here (sent at the end of the loop iteration: orbited.reactor)
        self.send = transport.write
        self.site.watch(self)

    @staticmethod
    def _not_connected(data: bytes) -> None:
        raise RuntimeError("not connected")

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return  # refused, timed out or closing after this response: nothing more is read
        parser = self.parser
        parser.feed(data)
        if self.responding:
            if parser.buffered > self.site.pipeline_limit and not self.readPaused:
                self.readPaused = True
                self.transport.pauseProducing()
            return
        self._advance()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closing = True
        self.site.unwatch(self)
        if self.secure and reason is not None and reason.check(SSL.Error):
            self.site.tls_failed(self.peer, reason.value)  # the handshake, most often: before any request
        request, self.request = self.request, None
        if request is not None and self.responding:
            self.responding = False
            request.connectionLost(reason or Failure(ConnectionError("connection lost")))

    # --- reading requests

    def _advance(self) -> None:
        """Turn buffered bytes into requests until one is being answered or more bytes are needed."""
        if self._advancing:
            return  # a response finished inside render(); the loop below carries on
        self._advancing = True
        try:
            parser = self.parser
            while not self.responding and not self.closing and self._held is None:
                try:
                    event = parser.next_event()
                except RequestError as error:
                    self.refuse(error.status, error.detail)
                    return
                kind = event.__class__
                if kind is BodyData:
                    self._body(event.data)  # type: ignore[attr-defined]
                elif kind is RequestHead:
                    self._head(event)  # type: ignore[arg-type]
                elif kind is EndOfRequest:
                    self._dispatch()
                else:
                    assert event is NEED_DATA
                    return
        finally:
            self._advancing = False

    def _head(self, head: RequestHead) -> None:
        router = self.site.router
        # A pipelined request behind responses the kernel has not taken yet waits until
        # they have left: all of them if it moves to another process (which could answer
        # before the rest of this response is sent), else all but UNSENT_MOST.
        if self._behind_unsent(head):
            self._hold(head)
            return
        if router is not None and router.route(self, head):
            return  # another process serves it (orbited.workers)
        request = self.request = Request(self, head)
        self.closeAfterResponse = not head.keep_alive
        if wants_websocket(head) and self.site.upgrade(self, request, head):
            return
        if head.expect_continue:
            self.send(CONTINUE)
        if self.parser.in_body:
            self.deadline = self._body_deadline = self.site.now() + self.site.timeout

    def _body(self, data: bytes) -> None:
        """A piece of the request body: kept, and the deadline moved to ``http.timeout`` from now,
        but no further than the body's average rate allows (``BODY_MIN_RATE``)."""
        self.request.content.write(data)  # type: ignore[union-attr]
        self._body_deadline += len(data) / BODY_MIN_RATE
        self.deadline = min(self.site.now() + self.site.timeout, self._body_deadline)

    def _behind_unsent(self, head: RequestHead) -> bool:
        unsent = unsent_bytes(self.transport)
        if not unsent:
            return False
        router = self.site.router
        moves = router is not None and not router.stays(self, head)
        return unsent > (0 if moves else UNSENT_MOST)

    def _hold(self, head: RequestHead) -> None:
        self._held = head
        if not self.readPaused:
            self.transport.pauseProducing()
        self.site.reactor.callLater(HOLD_POLL, self._release_held, HOLD_POLL, unsent_bytes(self.transport))

    def _release_held(self, waited: float, unsent: int) -> None:
        head = self._held
        if head is None or self.closing or self.transport is None:
            self._held = None
            return
        if self._behind_unsent(head):
            # The idle sweep bounds the wait (the connection is watched since its last
            # response); a client that is reading what waits gets http.timeout afresh.
            now_unsent = unsent_bytes(self.transport)
            if now_unsent < unsent:
                self.deadline = self.site.now() + self.site.timeout
            waited = min(waited * 2, HOLD_POLL_MOST)
            self.site.reactor.callLater(waited, self._release_held, waited, now_unsent)
            return
        self._held = None
        if not self.readPaused:
            self.transport.resumeProducing()
        self._head(head)
        self._advance()

    def _dispatch(self) -> None:
        request = self.request
        assert request is not None
        self.responding = True
        self.site.unwatch(self)
        request.content.seek(0)
        transport = self.transport
        self.site.render(request)
        if self.transport is None and not self.closing:
            # The resource took the connection the twisted.web way
            # (request.channel.transport = None, as autobahn does).
            self._tookOver(transport)

    # --- answering

    def keepAliveAfter(self, request: Request, close_delimited: bool) -> bool:
        """Asked by a response about to send its head: may the connection stay open after it?"""
        if close_delimited or self.site.stopping:
            self.closeAfterResponse = True
        return not self.closeAfterResponse

    def requestDone(self, request: Request) -> None:
        """The response to ``request`` is complete: log it, then close or read the next request."""
        if request is not self.request:
            return
        self.site.log(request)
        self.request = None
        self.responding = False
        transport = self.transport
        if transport is None:
            return
        if self.closeAfterResponse:
            self.closing = True
            transport.loseConnection()
            return
        self.parser.next_request()
        self.site.watch(self)
        if self.readPaused:
            self.readPaused = False
            transport.resumeProducing()
        if self.parser.buffered:
            self._advance()

    def refuse(self, status: int, detail: str) -> None:
        """Answer a request that cannot be served, then close (lingering, see :meth:`_linger`)."""
        if self.closing or self.transport is None:
            return
        log.debug("%s: %d %s", peer_text(self.peer), status, detail)
        self.closing = True
        self.site.unwatch(self)
        if self.responding:
            self.transport.loseConnection()
            return
        self.request = None
        self.send(error_response(status, detail))
        if status == 408:
            self.transport.loseConnection()  # the client is sending nothing: nothing to wait for
        else:
            self._linger()

    def _linger(self) -> None:
        """Close after the answer without resetting the connection under it: stop writing (a FIN
        after the answer on plain TCP, a close_notify over TLS), keep reading and dropping what
        the client still sends (dataReceived ignores a closing connection), and close when the
        client does or the sweep finds ``http.timeout`` passed (:meth:`timedOut`), so nothing is
        held longer than by an idle connection."""
        transport = self.transport
        if self.readPaused:
            self.readPaused = False
            transport.resumeProducing()
        if self.secure:
            # TLS: close_notify, then the TLS layer reads on until the client's close_notify
            transport.loseConnection()
        elif hasattr(transport, "loseWriteConnection"):
            transport.loseWriteConnection()
        self.site.watch(self)

    def timedOut(self) -> None:
        """The sweep found the deadline passed: 408 if a request was under way, else just close."""
        if self.closing:  # lingering after a refusal (_linger): the client had its time
            self.site.unwatch(self)
            if self.transport is not None:
                self.transport.abortConnection()
            return
        parser = self.parser
        if parser.head_started or parser.in_body:
            self.refuse(408, "request not received within http.timeout")
            return
        self.closing = True
        self.site.unwatch(self)
        if self.transport is not None:
            self.transport.loseConnection()

    # --- handing the connection to another protocol

    def detach(self) -> tuple[Any, bytes]:
        """Stop being the connection's protocol; returns the transport and the unread bytes."""
        transport = self.transport
        self.closing = True
        self.responding = False
        self.request = None
        self.site.unwatch(self)
        self.transport = None
        if self.readPaused:
            self.readPaused = False
            transport.resumeProducing()
        return transport, self.parser.take_buffer()

    def _tookOver(self, transport: Any) -> None:
        self.transport = transport
        _, leftover = self.detach()
        if leftover:
            protocol = protocol_of(transport)
            if protocol is not None and protocol is not self:
                protocol.dataReceived(leftover)

    @property
    def _dataBuffer(self) -> list[bytes]:
        """twisted.web's name for bytes read after the request (SockJS's hixie-76 reads it once)."""
        return [self.parser.take_buffer()]

