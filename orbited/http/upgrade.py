"""Handing a connection from HTTP to another protocol (WebSocket), and finding WebSocket endpoints.

A WebSocket endpoint in the resource tree is an autobahn
``WebSocketResource``.  When traversal for a request that asks to upgrade
ends at one, the connection goes to a protocol from its factory with the
request head exactly as received plus whatever the client sent after it:
autobahn parses the handshake itself, so no request object is rendered.

The transport swap follows autobahn's own ``WebSocketResource.render``: over
TLS the transport is a ``ProtocolWrapper`` whose ``wrappedProtocol`` is
replaced; over TCP the transport's ``protocol`` is.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.protocols.policies import ProtocolWrapper

from orbited.http.events import RequestHead


def wants_websocket(head: RequestHead) -> bool:
    """A GET with ``Upgrade: websocket`` (the Connection header is autobahn's to check)."""
    if head.method != b"GET":
        return False
    upgrade = head.headers.get(b"upgrade")
    return upgrade is not None and any(b"websocket" in value.lower() for value in upgrade)


class WebSocketEndpoint(WebSocketResource):
    """autobahn's ``WebSocketResource``, except that a request that is not a WebSocket upgrade
    is answered here, in HTTP, on either engine.

    autobahn answered it itself on the raw connection: ``426 HTTP Upgrade header missing``
    without the ``Upgrade`` field RFC 9110 15.5.22 requires, and ``405 HTTP method "POST" not
    allowed`` without ``Allow`` (15.5.6), neither with a Date or a length, and closed the
    connection.  Upgrades still go to autobahn: on the lean engine straight from the parsed
    head (:func:`websocket_factory_of`), on twisted.web through ``render``."""

    def render(self, request: Any) -> Any:
        method = request.method
        if method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"this URL takes WebSocket connections only: GET with Upgrade: websocket\n"
        upgrade = request.getHeader(b"upgrade")
        if method == b"HEAD" or upgrade is None or b"websocket" not in upgrade.lower():
            request.setResponseCode(426, b"Upgrade Required")  # twisted.web has no phrase for it
            request.setHeader(b"upgrade", b"websocket")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"this URL takes WebSocket connections only: GET with Upgrade: websocket\n"
        return super().render(request)


def websocket_factory_of(resource: Any) -> Any:
    """The autobahn factory behind a WebSocket endpoint of the tree, or None.

    autobahn keeps it in the private ``_factory``; tests/test_http_channel.py
    pins that, so an autobahn upgrade that renames it fails a test instead of
    silently falling back to the slower render path.
    """
    if isinstance(resource, WebSocketResource):
        return getattr(resource, "_factory", None)
    return None


def replayable_head(head: RequestHead) -> bytes:
    """The head for a parser that wants CRLF line ends: as received when it has them, else rebuilt."""
    raw = head.raw
    if raw.count(b"\n") == raw.count(b"\r\n"):
        return raw
    lines = [head.method + b" " + head.target + b" " + head.version]
    for name, values in head.headers.items():
        lines.extend(name + b": " + value for value in values)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def protocol_of(transport: Any) -> Any:
    """The protocol a transport currently delivers to."""
    if isinstance(transport, ProtocolWrapper):
        return transport.wrappedProtocol
    inner = getattr(transport, "protocol", None)
    if isinstance(inner, ProtocolWrapper):
        return inner.wrappedProtocol
    return inner


def hand_over(transport: Any, protocol: Any, data: bytes = b"") -> None:
    """Connect ``protocol`` to ``transport`` in place of the HTTP channel and give it ``data``."""
    if isinstance(transport, ProtocolWrapper):
        transport.wrappedProtocol = protocol
    elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
        transport.protocol.wrappedProtocol = protocol
    else:
        transport.protocol = protocol
    protocol.makeConnection(transport)
    if data:
        protocol.dataReceived(data)


def is_plain_tcp(transport: Any) -> bool:
    """A socket Orbited can pass to another process: TCP without TLS in this process."""
    from twisted.internet.interfaces import ISSLTransport, ITCPTransport

    return (transport is not None and ITCPTransport.providedBy(transport)
            and not ISSLTransport.providedBy(transport) and hasattr(transport, "socket"))
