"""How Orbited writes an address in its log lines and answers: ``host:port``, an IPv6 host in
brackets (``[::1]:8000``), so that the port can never be read as part of the address.

One writer for every line.  Lines that used other forms were ambiguous or hard to read:
autobahn's peer string ``tcp6:::1:48438`` (which colon starts the port?) and Twisted's
``IPv6Address(type='TCP', host='::1', port=48448, flowInfo=0, scopeID=0)``.

An IPv4 client of a dual-stack listener (``http://:8000``, the quickstart's) reaches
Orbited as an IPv4-mapped IPv6 address; it is written as the IPv4 address it is
(``127.0.0.1:52834``, not ``[::ffff:127.0.0.1]:52834``), as the rules that trust a client
address read it (orbited/forwarding.py), so that one client reads the same on every
listener and a log search for its address finds it.  Nothing here opens a socket or
looks a name up.
"""

from __future__ import annotations

import ipaddress
from typing import Any

_MAPPED = "::ffff:"


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as the IP address it names (an IPv4-mapped IPv6 one as the IPv4 address it is,
    as a dual-stack socket reports IPv4 clients), or None for a name, '' or anything else."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def host_port(host: str, port: int) -> str:
    """``host`` and ``port`` as one would write them in a URL: ``[::1]:8000``, ``127.0.0.1:8000``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_text(peer: Any) -> str:
    """A connection's far end (a Twisted ``IPv4Address`` or ``IPv6Address``) as ``host:port``.

    What has no host and port (a UNIX socket, a test transport) is written ``?:0``.
    """
    host = str(getattr(peer, "host", "?"))
    if host.startswith(_MAPPED) and "." in host:  # Twisted gives '::ffff:127.0.0.1' for a mapped peer
        host = host[len(_MAPPED):]
    return host_port(host, getattr(peer, "port", 0))
