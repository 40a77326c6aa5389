"""Which process serves a request when ``[global] workers`` is set: the routing rule, sans-IO.

A ``/ws`` WebSocket, and a raw ``/sockjs/websocket``, live on one connection,
so any worker may take them.  A ``/sockjs`` session spans many HTTP requests
on several connections (a stream and the ``xhr_send`` beside it, every
poll), and only the process that holds the session can answer them, so
every request of one session goes to one worker: number
``crc32(session id) mod N``.  SockJS puts the session id in the URL for this
very purpose (sockjs-node relies on a sticky load balancer instead).  An
Orbited 0.7 ``/tcp`` session is created by a request to ``/tcp``, which any
worker may take; the process that creates it writes its own number in the
first two hex digits of the key it answers (``legacy_key_prefix``), and every
``/tcp/<key>`` request goes where the key says.  The rest (/stomp, static
files, /system, ``/sockjs/info``, ``/tcp/static``) needs the master's state or
is not worth a hop, and stays there.

The master applies the rule when it accepts a connection (to the bytes it
peeks at) and to each request head it parses; a worker applies it to each
request head on a connection it was given, and hands the connection back to
the master when the answer is not itself.  Both sides use this function on
the same bytes, so a connection never goes round in circles.
"""

from __future__ import annotations

import zlib

from orbited.http.events import END_OF_REQUEST, RequestError, RequestHead
from orbited.http.parser import Limits, RequestParser
from orbited.http.request import path_of, path_segments
from orbited.http.upgrade import wants_websocket
from orbited.transports.sockjs.routing import Transport

WS = -1  # any worker, straight to its /ws WebSocket protocol (no HTTP layer in between)
ANY = -2  # any worker, through its HTTP layer

MASTER_KEYS = 0xFF  # the /tcp key prefix of a session the master holds (at most 64 workers)
_SESSION_TRANSPORTS = frozenset(transport.value.encode("ascii") for transport in Transport)  # URL segments


def worker_for(head: RequestHead, count: int) -> int | None:
    """``WS`` or ``ANY``, the index of the one worker that must serve this request, or None: the master.

    It reads the path as the resource tree does (absolute-form targets, escapes), so that every
    spelling of a session's URL reaches the process that holds the session."""
    segments = path_segments(path_of(head.target))
    first, rest = segments[0], segments[1:]
    if first == b"ws" and not any(rest):  # /ws, /ws/
        return WS if wants_websocket(head) else None
    if first == b"tcp":
        if not rest:
            return ANY  # a new 0.7 session
        owner = legacy_key_owner(rest[0])
        return owner if owner is not None and owner < count else None
    if first != b"sockjs":
        return None
    if len(rest) == 3:
        server, session, transport = rest
        if not server or not session or transport not in _SESSION_TRANSPORTS:
            return None  # the master's /sockjs answers 404 as the worker's would
        return zlib.crc32(session) % count
    if rest == [b"websocket"] and wants_websocket(head):
        return ANY
    return None


def legacy_key_prefix(owner: int) -> str:
    """The first two hex digits of the /tcp keys that process ``owner`` (``MASTER_KEYS``: the master) hands out."""
    return f"{owner:02x}"


def legacy_key_owner(key: bytes) -> int | None:
    head = key[:2]
    if len(head) != 2 or not all(c in b"0123456789abcdef" for c in head):
        return None
    return int(head, 16)


def worker_at_accept(data: bytes, limits: Limits, count: int) -> int | None:
    """``worker_for`` the first request of a connection, from bytes peeked at accept.

    Only one whole head that the HTTP layer's own parser accepts counts, so
    this path takes nothing the HTTP layer would refuse; a partial, refused or
    odd head (None) goes the ordinary way, where the rule is applied again
    after parsing.  A WebSocket upgrade must also be all there is (it has no
    body); a SockJS request's body may follow, for the worker to read.
    """
    parser = RequestParser(limits)
    parser.feed(data)
    try:
        head = parser.next_event()
        if not isinstance(head, RequestHead):
            return None
        target = worker_for(head, count)
        if target is not None and target < 0 and parser.next_event() is not END_OF_REQUEST:
            return None
    except RequestError:
        return None
    return target
