"""``/tcp``: the Orbited 0.7 URL layout on twisted.web.

- ``/tcp`` (any method) creates a session and answers its 32-hex key;
- ``/tcp/<key>`` (POST) carries upstream packets, answers ``OK``;
- ``/tcp/<key>/<transport>`` opens a downstream response;
- ``/tcp/static/...`` is the bundled static directory again, for the
  htmlfile page's relative ``../static/HTMLFileFrame.js``;
- an unknown key is a 404 (the htmlfile close page for htmlfile requests).

One sweep every half second drives every session's timers, so an idle
session costs no DelayedCall.  Bad requests get a status and a short text,
never a traceback, and never touch another session.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource

from orbited.addresses import peer_text
from orbited.comet import new_session_key, no_delay, request_body, request_identity
from orbited.transports.legacy.kinds import KINDS
from orbited.transports.legacy.session import LegacySession
from orbited.web import bundled_static_dir, static_files
from orbited.worker_routes import MASTER_KEYS, legacy_key_prefix

if TYPE_CHECKING:
    from twisted.web.server import Request

    from orbited.context import ServerContext

log = logging.getLogger("orbited.transports.legacy")

SWEEP_INTERVAL = 0.5
UNKNOWN_SESSION_BODY = b"<script>alert('whoops');</script>"
HTMLFILE_CLOSE_PAGE = (b'<html><head><script src="../../static/HTMLFileClose.js"></script>'
                       b"</head><body></body></html>")


def _text(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


class LegacyCometResource(Resource):
    """The ``/tcp`` mount: session creation, lookup by key, the sweep."""

    def __init__(self, context: ServerContext, key_prefix: str = ""):
        super().__init__()
        self.context = context
        self.key_prefix = key_prefix  # with workers: which process holds the session (orbited/worker_routes.py)
        self.sessions: dict[bytes, LegacySession] = {}
        self.putChild(b"static", static_files(context, bundled_static_dir()))
        self.sweep = LoopingCall(self.tick)
        self.sweep.clock = context.reactor

    def now(self) -> float:
        return self.context.reactor.seconds()

    # --- creation

    def render(self, request: Request) -> bytes:
        if request.method == b"HEAD":
            return refuse_head(request)
        context = self.context
        request.setHeader(b"cache-control", b"no-cache, must-revalidate")
        if context.sessions.full():
            log.warning("refusing /tcp session from %s: %d sessions open (proxy.max_sessions)",
                        peer_text(request.getClientAddress()), len(context.sessions.live))
            return self.refuse(request, 503, "too many sessions")
        key = new_session_key(self.key_prefix)
        while key.encode() in self.sessions:
            key = new_session_key(self.key_prefix)
        address, host, origin = request_identity(request)
        session = LegacySession(context, key, address, _text(host), _text(origin), self)
        self.sessions[key.encode()] = session
        session.start()
        if not self.sweep.running:
            self.sweep.start(SWEEP_INTERVAL, now=False)
        request.setHeader(b"content-type", b"text/plain")
        return key.encode()

    # --- lookup

    def getChild(self, path: bytes, request: Request) -> Resource:
        session = self.sessions.get(path)
        if session is not None:
            return SessionEndpoint(session)
        if b"htmlfile" in request.path:
            return HTMLFILE_CLOSE
        return UNKNOWN_SESSION

    def forget(self, session: LegacySession) -> None:
        """Drop a session for good: later requests for its key get 404."""
        if self.sessions.get(session.key.encode()) is session:
            del self.sessions[session.key.encode()]
        if not session.closed:
            session.close("session dropped")
        session.shutdown()

    def tick(self) -> None:
        settings = self.context.config.settings
        interval = settings["session.ping_interval"]
        timeout = settings["session.ping_timeout"]
        now = self.now()
        for session in list(self.sessions.values()):
            try:
                session.tick(now, interval, timeout)
            except Exception:  # one broken session must not stop the timers of the rest
                log.exception("tcp %s: timer failed; dropping the session", session.key)
                self.forget(session)
        if not self.sessions and self.sweep.running:
            self.sweep.stop()

    @staticmethod
    def refuse(request: Request, status: int, why: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return why.encode("utf-8", "replace") + b"\n"


class SessionEndpoint(Resource):
    """``/tcp/<key>`` and ``/tcp/<key>/<transport>`` for one live session."""

    isLeaf = True

    def __init__(self, session: LegacySession):
        # Resource.__init__ would build a children dict per request for nothing.
        self.session = session

    def render(self, request: Request) -> bytes | int:
        if request.method == b"HEAD":
            return refuse_head(request)
        session = self.session
        home = session.home
        postpath = request.postpath
        if not postpath or postpath == [b""]:
            return self.upstream(request)
        if len(postpath) == 1 and postpath[0] in KINDS:
            session.touch(request)
            if session.home.sessions.get(session.key.encode()) is not session:
                return _unknown(request)  # the ack covered the close: the session is gone
            return session.attach(request, KINDS[postpath[0]])
        return home.refuse(request, 404, "no such transport")

    def upstream(self, request: Request) -> bytes | int:
        session = self.session
        home = session.home
        limit = session.context.config.settings["http.max_body"]
        body = request_body(request, limit)
        if body is None:
            return home.refuse(request, 413, f"request body over http.max_body ({limit} bytes)")
        request.setHeader(b"cache-control", b"no-cache, must-revalidate")
        request.setHeader(b"content-type", b"text/plain")
        no_delay(request)
        session.touch(request)
        return session.receive(request, body)


def refuse_head(request: Request) -> bytes:
    """0.7 takes any method, but a HEAD can use no answer of /tcp's: it would make a session whose
    key it never sees, or hold a stream whose bytes are never sent, and with it its connection."""
    request.setHeader(b"allow", b"GET, POST")
    return LegacyCometResource.refuse(request, 405, "HEAD has no use on /tcp: GET or POST")


def _unknown(request: Request) -> bytes:
    if b"htmlfile" in request.path:
        return HTMLFILE_CLOSE.render(request)
    return UNKNOWN_SESSION.render(request)


class _Fixed(Resource):
    isLeaf = True

    def __init__(self, status: int, body: bytes):
        super().__init__()
        self.status = status
        self.body = body

    def render(self, request: Request) -> bytes:
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", b"text/html")
        request.setHeader(b"cache-control", b"no-cache, must-revalidate")
        return self.body


UNKNOWN_SESSION = _Fixed(404, UNKNOWN_SESSION_BODY)
HTMLFILE_CLOSE = _Fixed(200, HTMLFILE_CLOSE_PAGE)


def legacy_resource(context: ServerContext) -> LegacyCometResource:
    """The master's ``/tcp``; with workers, its keys say that the master holds their sessions."""
    workers = context.config.settings["workers"]
    return LegacyCometResource(context, legacy_key_prefix(MASTER_KEYS) if workers else "")
