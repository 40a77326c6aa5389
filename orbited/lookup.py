"""Host names: which ones can be looked up at all, lookups whose every failure is heard, and
lookups shared and remembered.

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

import ipaddress
import logging
import socket
import string
from typing import Any

from twisted.internet._resolver import GAIResolver, HostResolution
from twisted.internet.interfaces import IHostnameResolver, IResolutionReceiver
from zope.interface import implementer

log = logging.getLogger("orbited.proxy")

_NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._")


def host_name_problem(host: str) -> str | None:
    """Why no TCPSocket could reach ``host`` by name, or None.

    A handshake is ASCII and its host name has letters, digits, ``-``, ``.``
    and ``_`` only, so an ``[access]`` rule for any other name could never
    match.  The idna codec, which ``getaddrinfo`` applies to every name,
    refuses an empty label (``a..b``) and one over 63 characters; DNS takes at
    most 253 characters in all.  The set test costs well under a microsecond
    on every connect, against 3.7 µs for the codec.  An IP address (IPv6 from
    ``[access]`` brackets) is not a name and passes.
    """
    if not host.isascii():
        try:
            encoded = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            return f"'{host}' is not a host name ({exc.__cause__ or exc})"
        return f"'{host}' is not a host name a TCPSocket can send (not ASCII): write it as '{encoded}'"
    if not _NAME_CHARACTERS.issuperset(host):
        if ":" in host and is_ip_literal(host):
            return None
        return f"'{host}' is not a host name (only letters, digits, '-', '.' and '_')"
    if not all(0 < len(label) < 64 for label in host.removesuffix(".").split(".")):
        return f"'{host}' is not a host name (a label is empty or longer than 63 characters)"
    if len(host.removesuffix(".")) > 253:
        return f"'{host}' is not a host name (longer than 253 characters)"
    return None


def zone_problem(address: ipaddress.IPv6Address) -> str | None:
    """Why the zone id of an IPv6 literal (``fe80::1%eth0``) could never be used, or None.

    ``ipaddress`` takes any text after ``%``; ``getaddrinfo`` takes a zone on a link-local
    address only (``fe80::/10``: the zone says which link) and names an interface with it, so a
    ``[listen]`` line ``[::1%lo]`` passed ``--check`` and then stopped start-up with "Name or
    service not known", and a rule for it refused every TCPSocket (0108).  An interface name
    here is letters, digits, ``-``, ``.`` and ``_`` (or the interface's number), so a handshake's
    zone can carry nothing else into a log line or a close reason.
    """
    zone = address.scope_id
    if zone is None:
        return None
    bare = str(address).partition("%")[0]
    if not address.is_link_local:
        return f"'{address}': a zone id (%{zone}) belongs to a link-local address (fe80::/10) only; write [{bare}]"
    if not _NAME_CHARACTERS.issuperset(zone) or len(zone) > 15:
        return f"'{address}': '{zone}' is not an interface name"
    return None


def canonical_host(host: str) -> str:
    """A host as rules and handshakes are compared: a name in lower case, an IP literal in its
    one written form ([0:0::1] and [::1], [::ffff:7f00:1] and [::ffff:127.0.0.1] are each one)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def canonical_authority(text: str) -> str:
    """A ``Host`` header or an ``[access]`` SOURCE as the rules compare it: lower case, an IPv6
    literal in its one written form (``[0:0::1]:8000`` and ``[::1]:8000`` are one).  Browsers
    send the compressed form (the URL standard's); a rule written another way never matched."""
    value = text.strip().lower()
    end = value.find("]")
    if value.startswith("[") and end > 0:
        return f"[{canonical_host(value[1:end])}]{value[end + 1:]}"
    return value


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def reporting_getaddrinfo(reactor: Any) -> Any:
    """``socket.getaddrinfo`` for Twisted's resolver: any failure is "no address", the odd ones logged.

    No exception leaves the pool thread, though Twisted's resolver would turn a ``gaierror``
    into "no address" too: an exception crosses into the reactor as a Failure, which its
    resolver catches inside a coroutine whose frame its traceback then holds, in a cycle
    with the Deferred and the lookup's receiver.  Every lookup of a name that does not
    resolve (a backend's name gone from DNS, asked again by every TCPSocket) left one
    such cycle for the next full collection, rare by design (orbited/cli.py).
    """

    def lookup(host: str, port: int, family: int = 0, socktype: int = 0, proto: int = 0, flags: int = 0) -> Any:
        try:
            return socket.getaddrinfo(host, port, family, socktype, proto, flags)
        except socket.gaierror:
            return []
        except Exception as exc:  # noqa: BLE001 (logged: the one thing that must not happen is silence)
            # This runs in a pool thread: the log line is written from the reactor's.
            reactor.callFromThread(log.error, "looking up %s failed: %s: %s", host, type(exc).__name__, exc)
            return []

    return lookup


def install(reactor: Any) -> None:
    """Give the reactor a resolver whose lookups end, one way or the other, for every name."""
    reactor.installNameResolver(GAIResolver(reactor, reactor.getThreadPool, reporting_getaddrinfo(reactor)))


@implementer(IHostnameResolver)
class LookupCache:
    """Backend host names' addresses, shared by lookups under way and kept ``ttl`` seconds.

    Each lookup is a trip through Twisted's thread pool: a queue, a thread
    that must win the GIL from the busy reactor thread, and a wake-up of the
    reactor to deliver.  For a burst of 200 TCPSockets to ``localhost`` that
    cost 0.74 ms of CPU per connect against 0.45 ms to ``127.0.0.1``, and a
    median of 110 against 65 ms, though getaddrinfo itself takes 10 µs.
    Only names that ``[access]`` allows are ever looked up, so the cache
    holds at most one entry per rule.  A stale entry costs one failed
    TCPSocket: ``forget`` drops a name whose every address failed.

    The address that last answered is offered first, as browsers do: a name
    with an IPv6 and an IPv4 address (``localhost`` in Debian's /etc/hosts)
    for a backend that listens on IPv4 only was refused at ``::1`` by every
    TCPSocket before it tried ``127.0.0.1``, 0.51 against 0.41 ms of CPU per
    connect in a burst of 200.
    """

    def __init__(self, reactor: Any, ttl: float):
        self.reactor = reactor
        self.ttl = ttl
        self.known: dict[tuple[str, int], tuple[float, list[Any]]] = {}  # (host, port) -> (until, addresses)
        self.waiting: dict[tuple[str, int], dict[Any, None]] = {}  # receivers of the lookup under way, in order
        self.preferred: dict[tuple[str, int], str] = {}  # the address that last answered, kept across lookups
        # for /system/status: getaddrinfo calls made, and TCPSockets answered by one under way or from memory
        self.counts = {"lookups": 0, "lookups_shared": 0, "lookups_remembered": 0}

    def resolveHostName(self, resolutionReceiver: Any, hostName: str, portNumber: int = 0,
                        addressTypes: Any = None, transportSemantics: str = "TCP") -> Any:
        if addressTypes is not None or transportSemantics != "TCP":
            return self.reactor.nameResolver.resolveHostName(resolutionReceiver, hostName, portNumber,
                                                             addressTypes, transportSemantics)
        resolution = HostResolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        key = (hostName, portNumber)
        entry = self.known.get(key)
        if entry is not None:
            if entry[0] > self.reactor.seconds():
                self.counts["lookups_remembered"] += 1
                _deliver(resolutionReceiver, self._ordered(key, entry[1]))
                return resolution
            del self.known[key]
        waiters = self.waiting.get(key)
        if waiters is not None:
            self.counts["lookups_shared"] += 1
            waiters[resolutionReceiver] = None
            return resolution
        self.counts["lookups"] += 1
        self.waiting[key] = {resolutionReceiver: None}
        self.reactor.nameResolver.resolveHostName(_Lookup(self, key), hostName, portNumber)
        return resolution

    def found(self, key: tuple[str, int], addresses: list[Any]) -> None:
        if addresses and self.ttl > 0:
            self.known[key] = (self.reactor.seconds() + self.ttl, addresses)
        addresses = self._ordered(key, addresses)
        for receiver in self.waiting.pop(key, {}):
            try:
                _deliver(receiver, addresses)
            except Exception:  # one receiver's fault must not keep the others waiting
                log.exception("delivering the addresses of %s failed", key[0])

    def abandon(self, receiver: Any, host: str, port: int) -> None:
        """``receiver`` no longer wants the lookup under way (its connect timed out, its browser
        left): let it go now.  Kept until getaddrinfo returned, every TCPSocket that gave up on a
        slow lookup (a resolver that does not answer: 5 s a try) stayed in memory, session and
        all, after its browser had its 0104."""
        waiters = self.waiting.get((host, port))
        if waiters is not None:
            waiters.pop(receiver, None)

    def forget(self, host: str, port: int) -> None:
        self.known.pop((host, port), None)

    def answered(self, host: str, port: int, address: str) -> None:
        """``address`` of ``host`` took a connect: offer it first from now on."""
        self.preferred[(host, port)] = address

    def failed(self, host: str, port: int, address: str) -> None:
        """A connect to ``address`` failed or timed out: if it was the one offered first, no
        longer (a backend that moved to another of the name's addresses was refused for good)."""
        if self.preferred.get((host, port)) == address:
            del self.preferred[(host, port)]

    def _ordered(self, key: tuple[str, int], addresses: list[Any]) -> list[Any]:
        preferred = self.preferred.get(key)
        if preferred is None or not addresses or addresses[0].host == preferred:
            return addresses
        return sorted(addresses, key=lambda address: address.host != preferred)  # stable: the rest keep their order


def _deliver(receiver: Any, addresses: list[Any]) -> None:
    for address in addresses:
        receiver.addressResolved(address)
    receiver.resolutionComplete()


@implementer(IResolutionReceiver)
class _Lookup:
    """The one receiver of a lookup that several TCPSockets wait for."""

    def __init__(self, cache: LookupCache, key: tuple[str, int]):
        self.cache = cache
        self.key = key
        self.addresses: list[Any] = []

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        self.cache.found(self.key, self.addresses)
