"""Which SockJS resource a path under a service's base URL names, and which methods it allows.

Sans-IO: path segments in, a :class:`Route` (or None: 404) out.  The URL
scheme is the protocol's:

- ``/`` (and the bare base URL): the greeting;
- ``/info``: server capabilities;
- ``/iframe.html``, ``/iframe-<anything>.html``: the cross-domain iframe page;
- ``/websocket``: a raw WebSocket (no SockJS framing);
- ``/<server>/<session>/<transport>``: a session request.  ``server`` and
  ``session`` are any non-empty segments without dots; ``server`` only exists
  for load balancers and is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    GREETING = "greeting"
    INFO = "info"
    IFRAME = "iframe"
    RAW_WEBSOCKET = "raw websocket"
    SESSION = "session"


class Transport(Enum):
    """Session transports, by their URL segment."""

    WEBSOCKET = "websocket"
    XHR = "xhr"
    XHR_SEND = "xhr_send"
    XHR_STREAMING = "xhr_streaming"
    EVENTSOURCE = "eventsource"
    HTMLFILE = "htmlfile"
    JSONP = "jsonp"
    JSONP_SEND = "jsonp_send"

    @property
    def methods(self) -> tuple[bytes, ...]:
        return _METHODS[self]

    @property
    def receives(self) -> bool:
        """True for transports that carry frames to the browser (as opposed to *_send)."""
        return self not in (Transport.XHR_SEND, Transport.JSONP_SEND)


_METHODS: dict[Transport, tuple[bytes, ...]] = {
    Transport.WEBSOCKET: (b"GET",),
    Transport.XHR: (b"OPTIONS", b"POST"),
    Transport.XHR_SEND: (b"OPTIONS", b"POST"),
    Transport.XHR_STREAMING: (b"OPTIONS", b"POST"),
    Transport.EVENTSOURCE: (b"GET",),
    Transport.HTMLFILE: (b"GET",),
    Transport.JSONP: (b"GET",),
    Transport.JSONP_SEND: (b"POST",),
}

_KIND_METHODS: dict[Kind, tuple[bytes, ...]] = {
    Kind.GREETING: (b"GET",),
    Kind.INFO: (b"OPTIONS", b"GET"),
    Kind.IFRAME: (b"GET",),
    Kind.RAW_WEBSOCKET: (b"GET",),
}

# sockjs-client versions its iframe URL: /iframe-1.6.1.html; any such name works.
_IFRAME = re.compile(r"iframe[0-9a-z._\-]*\.html")
_SEGMENT = re.compile(r"[^/.]+")
MAX_SEGMENT = 256


@dataclass(frozen=True)
class Route:
    kind: Kind
    transport: Transport | None = None
    session_id: str = ""

    @property
    def methods(self) -> tuple[bytes, ...]:
        """Methods this resource answers; others get 405 with these in ``Allow``."""
        if self.transport is not None:
            return self.transport.methods
        return _KIND_METHODS[self.kind]


def route(segments: list[str]) -> Route | None:
    """The resource named by the path segments after the base URL, or None for 404."""
    if not segments or segments == [""]:
        return Route(Kind.GREETING)
    if len(segments) == 1:
        (name,) = segments
        if name == "info":
            return Route(Kind.INFO)
        if name == "websocket":
            return Route(Kind.RAW_WEBSOCKET)
        if _IFRAME.fullmatch(name):
            return Route(Kind.IFRAME)
        return None
    if len(segments) == 3:
        server, session, name = segments
        if not (_good_segment(server) and _good_segment(session)):
            return None
        try:
            transport = Transport(name)
        except ValueError:
            return None
        return Route(Kind.SESSION, transport, session)
    return None


def _good_segment(segment: str) -> bool:
    return len(segment) <= MAX_SEGMENT and _SEGMENT.fullmatch(segment) is not None
