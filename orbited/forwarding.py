"""Who sent a request, for the rules that trust a client address, and requests a proxy relayed.

nginx or HAProxy on the same host connects from loopback with every outside
client's request, so a rule that trusts a client address (``/system/status``
for loopback clients, ``[stomp] publish.clients``) must not trust one a
proxy relayed.  The headers a proxy adds give such a request away.  Orbited
does not take the client's address from them: a client can send them
itself, and they are true only behind a proxy configured to replace them.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from orbited.addresses import ip_of

# RFC 7239's header, and the two older conventions (nginx, HAProxy, most load balancers).
FORWARDING_HEADERS = (b"forwarded", b"x-forwarded-for", b"x-real-ip")


def forwarding_header(request: Any) -> str | None:
    """The name of the first forwarding header the request carries, or None."""
    for name in FORWARDING_HEADERS:
        if request.getHeader(name) is not None:
            return name.decode("ascii")
    return None


def client_ip(request: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The request's peer address (an IPv4-mapped IPv6 one as IPv4), or None (a UNIX socket)."""
    return ip_of(getattr(request.getClientAddress(), "host", ""))
