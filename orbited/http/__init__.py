"""A lean HTTP/1.1 server for Orbited's resource tree, in place of twisted.web's per-request machinery.

Measured here, twisted.web was most of the cost of every Comet round trip
(line parsing, Headers objects, Content-Type parsing on every POST,
per-read timeout resets); docs/http.md has the figures and the rules.

- ``events``, ``parser``, ``chunked``: requests from bytes (sans-IO), with limits;
- ``response``: response heads, Date, chunk framing, error answers (sans-IO);
- ``headers``, ``request``: the part of twisted.web's Request the resources use;
- ``channel``: one connection (the Twisted protocol);
- ``site``: the factory: traversal, rendering, the idle sweep, the access log;
- ``upgrade``: handing a connection to autobahn for WebSocket endpoints;
- ``static``: files from a directory, for both HTTP engines;
- ``conditional``: If-Modified-Since and If-None-Match without ETags (sans-IO).

Nothing here knows about sessions or transports: it serves any
``twisted.web.resource.IResource`` tree.
"""

from orbited.http.parser import Limits, RequestParser
from orbited.http.request import Request
from orbited.http.site import LeanSite

__all__ = ["LeanSite", "Limits", "Request", "RequestParser"]
