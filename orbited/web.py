"""The resource tree every http:// and https:// listener serves, and the site that serves it.

``/static`` (bundled files), ``[static]`` mounts, ``/system``, and the
transports.  Static serving (:class:`~orbited.http.static.StaticFiles`)
never lists directories, never leaves its directory, and never answers with
a ``Location`` that a browser could read as another host (``//evil.example``).

The tree is served by the lean HTTP layer (:mod:`orbited.http`) or, while
``[global] http.engine = twisted`` still exists, by twisted.web's Site.
"""

from __future__ import annotations

import json
import os
import time
from importlib import resources
from typing import TYPE_CHECKING

from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from orbited import __version__
from orbited.forwarding import client_ip, forwarding_header
from orbited.http import LeanSite, Limits
from orbited.http.channel import BODY_MIN_RATE
from orbited.http.parser import DEFAULT_MAX_BODY
from orbited.http.response import error_response
from orbited.http.static import StaticFiles
from orbited.procstats import process_usage

if TYPE_CHECKING:
    from orbited.context import ServerContext


def bundled_static_dir() -> str:
    return str(resources.files("orbited") / "static")


def is_local(request: Request) -> bool:
    """A request from this machine that no proxy relayed (orbited/forwarding.py)."""
    address = client_ip(request)
    return address is not None and address.is_loopback and forwarding_header(request) is None


class StatusResource(Resource):
    """/system/status: what an operator or a monitoring probe wants at a glance."""

    isLeaf = True

    def __init__(self, context: ServerContext):
        super().__init__()
        self.context = context

    def render_GET(self, request: Request) -> bytes:
        mode = self.context.config.settings["status"]
        if mode == "off" or (mode == "local" and not is_local(request)):
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"/system/status is not available to this client ([global] status)\n"
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(status_report(self.context), indent=1).encode() + b"\n"


def status_report(context: ServerContext) -> dict:
    stats = context.stats
    sessions = context.sessions
    up, down = stats.bytes_each_way()
    report = {
        "version": __version__,
        "pid": os.getpid(),
        "uptime": round(time.time() - stats.started, 3),
        "reactor": type(context.reactor).__name__,
        "sessions": {
            "total": len(sessions.live),
            "limit": sessions.cap,
            "by_transport": dict(sessions.by_transport),
        },
        "proxy": {
            "connections": stats.proxied_now,
            "connections_total": stats.proxied_total,
            "bytes_to_backend": up,
            "bytes_from_backend": down,
            **context.lookups.counts,
        },
        "process": process_usage(),
    }
    if context.workers is not None:
        totals = context.workers.totals()
        by_transport = report["sessions"]["by_transport"]
        for name, count in totals["sessions"].items():
            by_transport[name] = by_transport.get(name, 0) + count
        report["sessions"]["total"] += sum(totals["sessions"].values())
        proxy = report["proxy"]
        proxy["connections"] += totals["proxied_now"]
        proxy["connections_total"] += totals["proxied_total"]
        proxy["bytes_to_backend"] += totals["bytes_up"]
        proxy["bytes_from_backend"] += totals["bytes_down"]
        for key in context.lookups.counts:
            proxy[key] += totals["lookups"].get(key, 0)
        report["workers"] = totals["workers"]
        report["worker_handoffs"] = totals["handoffs"]
    if context.broker is not None and hasattr(context.broker, "status"):
        report["broker"] = context.broker.status()
    return report


# No version here: anyone may load this page, and a version tells a scanner which advisories
# to try.  /system/status (loopback by default) and `orbited --version` say it.
SYSTEM_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>Orbited</title></head>
<body><h1>Orbited</h1>
<ul><li><a href="/system/status">/system/status</a> (JSON)</li>
<li><a href="/static/">/static/</a>: Orbited.js and the protocol clients</li>
<li><a href="/demos/">/demos/</a> (when this server was started with the demos)</li></ul>
</body></html>
"""


class SystemResource(Resource):
    def __init__(self, context: ServerContext):
        super().__init__()
        self.putChild(b"status", StatusResource(context))

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return SYSTEM_PAGE

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return notFound()


class RootResource(Resource):
    """'/' shows the INDEX mount if there is one, else a small page about this server."""

    def __init__(self, index: Resource | None):
        super().__init__()
        self.index = index

    def getChild(self, path: bytes, request: Request) -> Resource:
        if self.index is not None:
            return self.index.getChildWithDefault(path, request)
        if path == b"" and not request.postpath:
            return self  # '/'
        # '//tcp/<key>' was '/tcp/<key>' here, and not where the routing to workers (which reads
        # the first segment) sends it: the master, without the worker's sessions, answered 404
        return notFound()

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return SYSTEM_PAGE


class OrbitedRequest(Request):
    """twisted.web's Request, for ``http.engine = twisted``, with two faults of its own mended:

    - no ``Server: TwistedWeb/<version>`` field on every answer: the lean engine sends none
      (docs/http.md), because a version tells a scanner which advisories to try;
      /system/status says it to those allowed to ask;
    - a request whose connection a resource takes over (a WebSocket upgrade) has its body file
      closed: twisted.web closes it only when a request finishes or loses its connection, and a
      taken-over request does neither, so each upgrade sent with a chunked body (or one over
      100 kB, which twisted.web keeps in a temporary file) held a descriptor for good;
    - a body over the site's ``max_body`` (the lean engine's ceiling, :func:`largest_body`) is
      refused with 413 from its Content-Length, or once that much has come chunked: twisted.web
      has no limit and wrote any body to a temporary file first."""

    body_refused = False

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)
        self.body_room = self.channel.site.max_body
        if length is not None and length > self.body_room:
            self.requestHeaders.removeHeader(b"expect")  # no '100 Continue' behind the 413
            self.refuse_body()

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_refused:
            return
        self.body_room -= len(data)
        if self.body_room < 0:
            self.refuse_body()
            return
        super().handleContentChunk(data)

    def refuse_body(self) -> None:
        """A body over the site's ceiling: 413 and close, before it is read (twisted.web would
        write any size to a temporary file, so one client could fill the disk)."""
        self.body_refused = True
        self.content.close()
        transport = self.channel.transport
        transport.write(error_response(413, f"Request body over {self.channel.site.max_body} bytes."))
        transport.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self.body_refused:  # a refused one is answered already, its connection closing
            super().requestReceived(command, path, version)

    def write(self, data: bytes) -> None:
        if not self.startedWriting:  # the head goes out with this write
            self.responseHeaders.removeHeader(b"server")
        super().write(data)

    def render(self, resource: Resource) -> None:
        super().render(resource)
        # (a request finished in render has neither attribute any more: twisted.web deletes them)
        channel = getattr(self, "channel", None)
        content = getattr(self, "content", None)
        if channel is not None and channel.transport is None and content is not None:
            content.close()  # taken over: the new protocol was given the body in render


class OrbitedChannel(HTTPChannel):
    """twisted.web's connection, for ``http.engine = twisted``, held to the lean engine's timeouts
    (docs/http.md, "Timeouts"): a whole request head within ``http.timeout`` of the connection
    opening or of the previous response ending, and a body that keeps coming at ``BODY_MIN_RATE``
    on average after ``http.timeout`` of grace.  twisted.web moved its timeout on at every read, so
    a head or a body trickled a byte per ``http.timeout`` kept its connection for good."""

    _body_deadline: float | None = None  # the latest the body under way may end, at BODY_MIN_RATE

    def resetTimeout(self) -> None:
        """twisted.web calls this on every read: a read alone never moves the deadline on."""

    def allHeadersReceived(self) -> None:
        super().allHeadersReceived()
        if self.length != 0 and self.timeOut:  # a body follows (None: chunked)
            self._body_deadline = self.site.reactor.seconds() + self.timeOut
            self.setTimeout(self.timeOut)

    def rawDataReceived(self, data: bytes) -> None:
        if self._body_deadline is not None and not self._handlingRequest and self.timeOut:
            self._body_deadline += len(data) / BODY_MIN_RATE
            left = self._body_deadline - self.site.reactor.seconds()
            idle = self.setTimeout(max(0.0, min(self.timeOut, left)))
            self.timeOut = idle  # setTimeout changed the idle timeout too; only this deadline moves
        super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        self._body_deadline = None
        super().allContentReceived()


def orbited_channel(site: Site) -> _GenericHTTPChannelProtocol:
    """``OrbitedSite.protocol``: twisted.web's own wrapper (HTTP/2 when TLS negotiates it) around an
    :class:`OrbitedChannel`."""
    return _GenericHTTPChannelProtocol(OrbitedChannel())


class OrbitedSite(Site):
    """``http.engine = twisted``: twisted.web's server for the same tree, kept as a fallback and as
    the baseline the lean layer is measured against (bench/scenarios/http_core.py); access lines go
    to stdlib logging."""

    requestFactory = OrbitedRequest
    protocol = orbited_channel
    max_body = DEFAULT_MAX_BODY  # build_site sets the server's own (largest_body)

    def log(self, request: Request) -> None:
        import logging

        logger = logging.getLogger("orbited.http")
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s", self._logFormatter(self._logDateTime, request))


# Orbited.js and its clients must be the ones the running server speaks to: a browser that
# kept an old copy by heuristic freshness (a tenth of its age since Last-Modified, so days)
# would talk the old protocol after an upgrade.  no-cache keeps the copy but asks each time
# (a 304 while it is current).
BUNDLED_CACHE_CONTROL = b"no-cache"


def static_files(context: ServerContext, directory: str, cache_control: bytes | None = None) -> StaticFiles:
    return StaticFiles(directory, context.reactor, context.config.settings["http.timeout"], cache_control)


def build_root(context: ServerContext, extra_children: dict[bytes, Resource] | None = None) -> Resource:
    """The whole tree; ``extra_children`` lets a caller (the demos) add mounts."""
    config = context.config
    mounts: dict[str, Resource] = {name: static_files(context, directory) for name, directory in config.static}
    root = RootResource(mounts.pop("", None))
    root.putChild(b"static", static_files(context, bundled_static_dir(), BUNDLED_CACHE_CONTROL))
    root.putChild(b"system", SystemResource(context))
    for name, child in transport_children(context).items():
        root.putChild(name, child)
    for name, child in (extra_children or {}).items():
        root.putChild(name, child)
    for name, resource in mounts.items():
        root.putChild(name.encode(), resource)
    return root


def transport_children(context: ServerContext) -> dict[bytes, Resource]:
    """The TCPSocket endpoints (when proxy.enabled) and STOMP over WebSocket."""
    children: dict[bytes, Resource] = {}
    from orbited.stomp import stomp_children
    from orbited.transports.legacy import legacy_resource
    from orbited.transports.sockjs import sockjs_resource

    if context.config.settings["proxy.enabled"]:
        from orbited.transports.websocket import websocket_resource

        children[b"ws"] = websocket_resource(context)
        children[b"sockjs"] = sockjs_resource(context)
        children[b"tcp"] = legacy_resource(context)
    children.update(stomp_children(context))
    return children


def build_site(context: ServerContext, extra_children: dict[bytes, Resource] | None = None) -> LeanSite | OrbitedSite:
    """The factory every http:// and https:// listener shares ([global] http.engine picks which)."""
    settings = context.config.settings
    root = build_root(context, extra_children)
    if settings["http.engine"] == "twisted":
        site = OrbitedSite(root, timeout=settings["http.timeout"])
        site.displayTracebacks = False
        site.max_body = largest_body(context)
        return site
    return lean_site(root, context.reactor, settings["http.timeout"], largest_body(context))


def largest_body(context: ServerContext) -> int:
    """Twice the largest body any endpoint of this server takes: http.max_body (/tcp, /sockjs),
    or the broker's frame.max_size when /stomp/publish is on.  A body a little over an endpoint's
    limit gets that endpoint's 413 on a connection that stays open; a larger one is refused from
    its Content-Length before it is read.  So no connection buffers much more than an endpoint
    takes (a floor of 16 MiB let 40 connections park 660 MB with http.max_body at 64 KiB)."""
    largest = context.config.settings["http.max_body"]
    broker = context.broker
    if broker is not None and broker.settings["publish.enabled"]:
        largest = max(largest, broker.settings["frame.max_size"])
    return 2 * largest


def lean_site(root: Resource, reactor: object = None, timeout: float = 60.0,
              max_body: int = DEFAULT_MAX_BODY) -> LeanSite:
    """``root`` on the lean HTTP layer, buffering request bodies up to ``max_body``."""
    return LeanSite(root, timeout=timeout, limits=Limits(max_body=max_body), reactor=reactor)
