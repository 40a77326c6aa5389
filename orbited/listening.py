"""Listening sockets: Twisted's TCP port, with ``[listen]``'s "every interface" meaning both IP versions.

A ``[listen]`` line without a host (``http://:8000``, the quickstart's) binds ``::`` and
promises IPv4 clients too.  Whether an IPv6 socket on ``::`` takes IPv4 connections is
the system's default (Linux's ``net.ipv6.bindv6only``, 1 on some installations; FreeBSD's
``net.inet6.ip6.v6only``, 1 by default): where it is 1, every IPv4 client was refused
and nothing said so.  Here the socket says it itself.  An explicit ``http://[::]:8000``
keeps the system's default (where it is IPv6-only, an ``http://0.0.0.0:8000`` line can join it).
Nothing here reads the config: the service says which port is which.
"""

from __future__ import annotations

import socket

from twisted.internet import tcp


class ListeningPort(tcp.Port):
    """``reactor.listenTCP``'s port; ``every_interface`` (set before ``startListening``) makes
    an IPv6 socket take IPv4 clients as well."""

    every_interface = False

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        if self.every_interface and skt.family == socket.AF_INET6:
            skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        return skt
