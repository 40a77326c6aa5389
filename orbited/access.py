"""Who may open which backend: the ``[access]`` rules and the Origin allow-list.

Deny by default.  A destination is allowed when some rule names exactly that
host and port and its source is ``*`` or the request's ``Host`` header, as in
Orbited 0.7.  A browser page is allowed when its ``Origin`` has the same host
as the ``Host`` header (any port), or is listed in ``[global] origins``; a
JSONP, htmlfile or iframe request, which carries no ``Origin`` header, is
judged by its ``Referer``.
Pure functions of their arguments: no sockets, no logging, no globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from orbited.addresses import host_port
from orbited.config import AccessRule, Config
from orbited.lookup import canonical_authority, canonical_host

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalise_origin(origin: str) -> str | None:
    """'HTTPS://Example.com:443' -> 'https://example.com'; None if it is not an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 literal, in the form browsers send ([::ffff:7f00:1], not [::FFFF:127.0.0.1])
        host = f"[{canonical_host(host)}]"
    if port is None or port == DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def host_of(host_header: str) -> str:
    """The host part of a Host header: 'Example.com:8000' -> 'example.com', '[0::1]:80' -> '::1'."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return canonical_host(value[1 : value.find("]")]) if "]" in value else value
    return value.rpartition(":")[0] if ":" in value else value


@dataclass(frozen=True)
class AccessPolicy:
    rules: tuple[AccessRule, ...]
    origins: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Config) -> AccessPolicy:
        return cls(config.access, tuple(config.settings["origins"]))

    @property
    def any_origin(self) -> bool:
        return "*" in self.origins

    def page_allowed(self, page: str | None, host_header: str | None) -> bool:
        """May the page that made a request without an ``Origin`` header (JSONP, htmlfile, the
        SockJS iframe) use this server?  ``page`` is the origin its ``Referer`` names.

        A browser always sends ``Origin`` where it can, so a request without one was made by
        a ``<script>``, a form or an iframe, and may come from any site's page.  Its Referer
        is the only word on which page that is: a browser will not forge it, and a page that
        hides it (``Referrer-Policy: no-referrer``) cannot be checked and is refused unless
        every origin is allowed.
        """
        if self.any_origin:
            return True
        return page is not None and self.origin_allowed(page, host_header)

    def origin_allowed(self, origin: str | None, host_header: str | None) -> bool:
        """May a page from ``origin`` use this server, reached as ``host_header``?

        No Origin header means no browser sent it; the access rules still apply.
        """
        if origin is None:
            return True
        if self.any_origin:
            return True
        normal = normalise_origin(origin)
        if normal is None:
            return False  # includes the opaque 'null' origin of sandboxed pages
        if host_header and host_of(urlsplit(normal).netloc) == host_of(host_header):
            return True
        return any(normal == normalise_origin(allowed) for allowed in self.origins)

    def destination_allowed(self, host_header: str | None, host: str, port: int) -> bool:
        source = canonical_authority(host_header or "")
        host = host.lower()
        for rule in self.rules:
            if rule.port == port and rule.host == host and (rule.source == "*" or rule.source == source):
                return True
        return False

    def hint_for_destination(self, host_header: str | None, host: str, port: int) -> str:
        """The [access] line an operator would add to allow this connection."""
        return f"{host_header or '*'} -> {host_port(host, port)}"
