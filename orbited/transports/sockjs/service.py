"""A SockJS service: its options, its table of live sessions and the handler each session runs.

The same class serves ``/sockjs`` (each session runs the TCPSocket adapter)
and the conformance server's ``/echo``, ``/close``... (each session runs a
tiny test handler); only the handler factory and the options differ.  No
HTTP here: the Twisted resources in ``http_transports`` and
``ws_transports`` turn requests into calls on this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orbited.transports.sockjs.pages import DEFAULT_CLIENT_URL
from orbited.transports.sockjs.session import SockJSSession


@dataclass(frozen=True)
class SockJSOptions:
    """Protocol knobs; the defaults are sockjs-node's."""

    websocket: bool = True  # offer the websocket transports (and say so in /info)
    cookie_needed: bool = False  # set JSESSIONID on session requests, for sticky load balancers
    response_limit: int = 128 * 1024  # bytes a streaming response carries before it is ended
    heartbeat_interval: float = 25.0  # seconds between 'h' frames while a receiver waits
    disconnect_delay: float = 5.0  # seconds a session lives without a receiver
    client_url: str = DEFAULT_CLIENT_URL  # sockjs-client script the iframe page loads
    max_body: int = 1 << 20  # largest xhr_send/jsonp_send body; larger ones get 413
    hixie76: bool = False  # accept the obsolete hixie-76 WebSocket handshake (conformance only)


@dataclass(frozen=True)
class SessionRequest:
    """What a handler factory learns about the request that creates a session."""

    session_id: str
    transport: str  # URL name: 'xhr_streaming', 'websocket', ... ('websocket-raw' for /websocket)
    client_address: str  # 'ip:port'
    host: str | None  # Host header
    origin: str | None  # Origin header, None when the browser sent none


class SessionRefused(Exception):
    """A handler factory cannot take another session; the request gets ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


HandlerFactory = Callable[[SessionRequest], Any]


class SockJSService:
    """Sessions by id, each with the handler ``handler_factory`` made for it.

    ``originless_refusal`` is asked on every request of a transport that
    cannot carry a checkable Origin header (jsonp, htmlfile, the iframe page),
    with the page that made it (its ``Origin`` header if it has one, else its
    ``Referer``, else None) and its ``Host`` header: it returns None to serve
    it, or the reason to refuse it with 403.
    """

    def __init__(self, name: str, handler_factory: HandlerFactory, options: SockJSOptions, clock: Any,
                 originless_refusal: Callable[[str | None, str | None], str | None] = lambda page, host: None):
        self.name = name
        self.handler_factory = handler_factory
        self.options = options
        self.clock = clock
        self.originless_refusal = originless_refusal
        self.sessions: dict[str, SockJSSession] = {}

    def find(self, session_id: str) -> SockJSSession | None:
        return self.sessions.get(session_id)

    def open_session(self, request: SessionRequest, keep: bool = True) -> SockJSSession:
        """A new session running a new handler; ``keep`` False for WebSocket sessions.

        A WebSocket session is not entered in the table: it lives as long as its
        socket, and two sockets may use the same session id (protocol 0.3.3).
        Raises SessionRefused.
        """
        handler = self.handler_factory(request)
        options = self.options
        session = SockJSSession(
            request.session_id, handler, self.clock, options.heartbeat_interval, options.disconnect_delay,
            forget=self._forget if keep else None, bound_to_receiver=not keep,
        )
        if keep:
            self.sessions[request.session_id] = session
        return session

    def _forget(self, session: SockJSSession) -> None:
        if self.sessions.get(session.session_id) is session:
            del self.sessions[session.session_id]
