"""Host names: which ones can be looked up at all, and lookups whose every failure is heard.

Twisted's resolver runs ``getaddrinfo`` in its thread pool and treats a
``gaierror`` as "no address".  Anything else ``getaddrinfo`` raises (a
``UnicodeError`` from the idna codec for a label over 63 characters, or the
codec failing to import once privileges are dropped) fails a Deferred that
nobody reads: the receiver is never told the lookup ended, so the browser
waited out ``proxy.connect_timeout`` for 0104 and the log never said why.
Here such a failure is logged with its reason and reported as "no address",
so the session gets 0108 at once.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

log = logging.getLogger("orbited.proxy")


def host_name_problem(host: str) -> str | None:
    """Why ``getaddrinfo`` could never look ``host`` up, or None.

    The idna codec, which ``getaddrinfo`` applies to every name, refuses an
    empty label (``a..b``) and one over 63 characters; DNS takes at most 253
    characters in all.  An ASCII name (every handshake's) is checked without
    the codec, which costs a few microseconds on every connect.
    """
    if host.isascii():
        encoded = host
        if not all(0 < len(label) < 64 for label in host.removesuffix(".").split(".")):
            return f"'{host}' is not a host name (a label is empty or longer than 63 characters)"
    else:
        try:
            encoded = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            return f"'{host}' is not a host name ({exc.__cause__ or exc})"
    if len(encoded.removesuffix(".")) > 253:
        return f"'{host}' is not a host name (longer than 253 characters)"
    return None


def reporting_getaddrinfo(reactor: Any) -> Any:
    """``socket.getaddrinfo`` for Twisted's resolver: any failure becomes a logged ``gaierror``."""

    def lookup(host: str, port: int, family: int = 0, socktype: int = 0, proto: int = 0, flags: int = 0) -> Any:
        try:
            return socket.getaddrinfo(host, port, family, socktype, proto, flags)
        except socket.gaierror:
            raise
        except Exception as exc:  # the one thing that must not happen is silence
            # This runs in a pool thread: the log line is written from the reactor's.
            reactor.callFromThread(log.error, "looking up %s failed: %s: %s", host, type(exc).__name__, exc)
            raise socket.gaierror(socket.EAI_FAIL, str(exc)) from exc

    return lookup


def install(reactor: Any) -> None:
    """Give the reactor a resolver whose lookups end, one way or the other, for every name."""
    from twisted.internet._resolver import GAIResolver

    reactor.installNameResolver(GAIResolver(reactor, reactor.getThreadPool, reporting_getaddrinfo(reactor)))
