"""The lean HTTP server's factory: a ``twisted.web`` resource tree served by :class:`HTTPChannel`.

Traversal and rendering keep twisted.web's contract, so every resource in
the tree runs unchanged: ``getChildWithDefault`` over the decoded path
segments (``prepath``/``postpath``) until a leaf, then ``render``, which
returns bytes (sent with a Content-Length) or ``NOT_DONE_YET`` (the
resource writes and finishes later).  A method the resource lacks is a 405
with ``Allow``; HEAD falls back to GET with the body left out, as in
twisted.web.  An exception in a resource is logged once and answered 500
(or the connection is dropped if the response had begun).

The site also owns the connections' idle sweep (one LoopingCall for all of
them, see :mod:`orbited.http.channel`) and the access log (``orbited.http``
at DEBUG).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.web.error import UnsupportedMethod
from twisted.web.server import NOT_DONE_YET

from orbited.addresses import peer_text
from orbited.http.channel import HTTPChannel
from orbited.http.events import RequestHead
from orbited.http.parser import Limits
from orbited.http.request import Request, path_segments
from orbited.http.upgrade import hand_over, replayable_head, websocket_factory_of
from orbited.logs import Tally

log = logging.getLogger("orbited.http")

SERVER_METHODS = b"GET, HEAD, POST, OPTIONS"
PIPELINE_SLACK = 64 * 1024  # bytes buffered beyond one head while a response is in progress


class LeanSite(Factory):
    """Serves ``resource`` (a twisted.web resource tree) on every listener it is given to."""

    noisy = False

    def __init__(self, resource: Any, timeout: float = 60.0, limits: Limits | None = None,
                 reactor: Any = None):
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.resource = resource
        self.timeout = timeout
        self.limits = limits or Limits()
        self.reactor = reactor
        self.pipeline_limit = self.limits.max_head + PIPELINE_SLACK
        self.stopping = False
        # decides for each request head whether another process serves it (route(channel, head) -> bool):
        # the pool in the master, the worker's hand-back in a worker; None without workers
        self.router: Any = None
        self._watched: set[HTTPChannel] = set()
        self._sweep = LoopingCall(self.sweep)
        self._sweep.clock = reactor
        self.sweep_interval = min(1.0, timeout / 2)
        # Any client can make TLS fail, scanners by the thousand: INFO, the first in full, then counts.
        self._tls_failures = Tally(log, "TLS with %s failed: %s", "TLS failed on %d more connection(s)",
                                   call_later=reactor.callLater, level=logging.INFO)

    def buildProtocol(self, addr: Any) -> HTTPChannel:
        return HTTPChannel(self)

    def stopFactory(self) -> None:
        """The last listener stopped (shutdown): responses from now on close their connection."""
        self.stopping = True
        if self._sweep.running:
            self._sweep.stop()

    # --- timeouts

    def now(self) -> float:
        return self.reactor.seconds()

    def watch(self, channel: HTTPChannel) -> None:
        """From now on ``channel`` must deliver a whole request head within ``timeout``."""
        channel.deadline = self.reactor.seconds() + self.timeout
        self._watched.add(channel)
        if not self._sweep.running:
            self._sweep.start(self.sweep_interval, now=False)

    def unwatch(self, channel: HTTPChannel) -> None:
        self._watched.discard(channel)

    def sweep(self) -> None:
        now = self.reactor.seconds()
        for channel in [channel for channel in self._watched if channel.deadline <= now]:
            try:
                channel.timedOut()
            except Exception:  # one broken connection must not stop the sweep for the rest
                log.exception("closing a timed-out connection failed")
                self._watched.discard(channel)

    def tls_failed(self, peer: Any, error: Exception) -> None:
        """A TLS connection ended with an OpenSSL error (a handshake the client refused, with the
        alert it sent, such as 'unknown ca' for a certificate it does not trust; an old protocol;
        not TLS at all): without this line an operator saw browsers fail and an empty log."""
        reasons = [part[2] for part in error.args[0] if len(part) == 3] if error.args and isinstance(
            error.args[0], list) else []
        reason = ", ".join(r for r in reasons if r) or str(error) or error.__class__.__name__
        if reason == "http request":
            reason = "plain HTTP sent to an https:// port"
        self._tls_failures(peer_text(peer), reason)

    # --- traversal and rendering

    def resourceFor(self, request: Request) -> Any:
        """twisted.web's getChildForRequest over the decoded path segments."""
        segments = path_segments(request.path)
        request.postpath = segments
        prepath = request.prepath
        resource = self.resource
        while segments and not resource.isLeaf:
            name = segments.pop(0)
            prepath.append(name)
            resource = resource.getChildWithDefault(name, request)
        return resource

    def has_delegable_endpoints(self) -> bool:
        """Whether the tree has what workers serve (orbited/workers.py): the TCPSocket endpoints,
        /ws with /sockjs beside it, mounted when ``proxy.enabled``."""
        children = getattr(self.resource, "children", {})
        return bool(getattr(websocket_factory_of(children.get(b"ws")), "delegable", False))

    def upgrade(self, channel: HTTPChannel, request: Request, head: RequestHead) -> bool:
        """Hand a WebSocket upgrade to the endpoint's autobahn protocol; False if it is not one."""
        request.site = self
        try:
            resource = request._resource = self.resourceFor(request)
        except Exception:
            log.exception("traversal failed for %s", request.uri[:200])
            channel.refuse(500, "internal server error")
            return True
        factory = websocket_factory_of(resource)
        if factory is None:
            return False
        protocol = factory.buildProtocol(channel.peer)
        if protocol is None:
            return False  # the render path answers 500, as autobahn does
        transport, rest = channel.detach()
        hand_over(transport, protocol, replayable_head(head) + rest)
        return True

    def render(self, request: Request) -> None:
        request.site = self
        try:
            if request.path[:1] != b"/":
                body = self._without_path(request)
            else:
                resource = request._resource
                if resource is None:
                    resource = self.resourceFor(request)
                try:
                    body = resource.render(request)
                except UnsupportedMethod as unsupported:
                    body = self._unsupported(request, resource, unsupported.allowedMethods)
        except Exception:
            log.exception("error answering %s %s", request.method.decode("latin-1"),
                          request.uri[:200].decode("latin-1"))
            body = self._failed(request)
        if body is NOT_DONE_YET:
            return
        if not isinstance(body, bytes):
            log.error("%s %s: the resource returned %r, not bytes", request.method.decode("latin-1"),
                      request.uri[:200].decode("latin-1"), type(body))
            body = self._failed(request)
            if body is NOT_DONE_YET:
                return
        request.respond(body)

    @staticmethod
    def _unsupported(request: Request, resource: Any, allowed: Any) -> Any:
        allowed = tuple(allowed or ())
        if request.method == b"HEAD" and b"GET" in allowed:
            request.method = b"GET"
            try:
                return resource.render(request)  # the request is head-only: no body is sent
            finally:
                request.method = b"HEAD"
        request.setResponseCode(405)
        request.setHeader(b"allow", b", ".join(allowed))
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"method not allowed here\n"

    @staticmethod
    def _without_path(request: Request) -> bytes:
        """``OPTIONS *`` (the server's methods) and CONNECT (not a proxy)."""
        request.setHeader(b"allow", SERVER_METHODS)
        if request.method == b"OPTIONS":
            return b""
        request.setResponseCode(405)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"not a proxy\n"

    @staticmethod
    def _failed(request: Request) -> Any:
        if request.startedWriting:
            channel = request.channel
            if channel is not None and channel.transport is not None:
                channel.transport.abortConnection()
            return NOT_DONE_YET
        request.setResponseCode(500)
        request.responseHeaders.raw.clear()
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"internal server error\n"

    # --- the access log

    def log(self, request: Request) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        peer = request.getClientAddress()
        log.debug('%s - - [%s] "%s %s %s" %d %d "%s" "%s"', getattr(peer, "host", "-"),
                  time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
                  request.method.decode("latin-1"), request.uri[:500].decode("latin-1"),
                  request.clientproto.decode("latin-1"), request.code, request.sentLength,
                  (request.getHeader(b"referer") or b"-").decode("latin-1"),
                  (request.getHeader(b"user-agent") or b"-").decode("latin-1"))
