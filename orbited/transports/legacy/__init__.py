"""``/tcp``: Orbited 0.7's own Comet protocol, so pages that bundled the 0.7 Orbited.js keep working.

- ``codec``: the length-prefixed packet encoding (sans-IO);
- ``queue``: downstream ids, acks and resend (sans-IO);
- ``upstream``: POST bodies to events, de-duplicated by packet id (sans-IO);
- ``kinds``: xhrstream, htmlfile, sse, longpoll and poll as data;
- ``session``: the ISession the proxy runs on;
- ``resource``: the URL layout on twisted.web and the shared timer sweep.

The proxy handshake (``host:port`` -> ``1`` or ``0`` + code) is the same
:class:`~orbited.proxy.TCPSocketProxy` that ``/ws`` and ``/sockjs`` use.
"""

from orbited.transports.legacy.resource import LegacyCometResource, legacy_resource

__all__ = ["LegacyCometResource", "legacy_resource"]
