"""What the request parser reports: one request head, its body in pieces, its end; or an error.

Plain data, no I/O.  The parser hands these out one at a time
(:meth:`~orbited.http.parser.RequestParser.next_event`); a server acts on each
in order.  Events are slotted classes rather than frozen dataclasses because
one is made per request on the hot path; treat them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, eq=True)
class RequestHead:
    """A complete request line and header section.

    ``headers`` maps each lower-cased field name to its values in arrival
    order (a name that came twice has two values); values have surrounding
    whitespace removed.  ``raw`` is the head exactly as it came (after any
    empty lines before the request line), for handing the connection to a
    WebSocket implementation that parses the handshake itself.

    Next: :class:`BodyData` events (if the request has a body), then
    :class:`EndOfRequest`.
    """

    method: bytes
    target: bytes
    version: bytes  # b"HTTP/1.1" or b"HTTP/1.0"
    headers: dict[bytes, list[bytes]]
    keep_alive: bool  # the client allows another request on this connection after this one
    content_length: int | None  # None: chunked, or no body
    chunked: bool
    expect_continue: bool  # "Expect: 100-continue" on an HTTP/1.1 request that has a body
    raw: bytes

    def header(self, name: bytes) -> bytes | None:
        """The last value of ``name`` (lower case), or None."""
        values = self.headers.get(name)
        return values[-1] if values else None


@dataclass(slots=True, eq=True)
class BodyData:
    """Some bytes of the request body, in order; their split points mean nothing."""

    data: bytes


@dataclass(slots=True, eq=True)
class EndOfRequest:
    """The request is complete.  The parser pauses until the server calls ``next_request()``."""


END_OF_REQUEST = EndOfRequest()


class NeedData:
    """Nothing more can be parsed from what has been fed (or the parser is paused)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


class RequestError(Exception):
    """The request cannot be served; answer ``status`` with ``detail`` as the text, then close.

    The parser raises nothing else, whatever bytes it is fed.  After one,
    the connection is unusable: the parser raises it again on every call.
    """

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


Event = RequestHead | BodyData | EndOfRequest | NeedData
