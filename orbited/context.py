"""The one object handed down from the service to every resource and protocol.

It carries the config (read once), the current access policy (swapped on
SIGHUP), the counters, the session registry and the backend host names
looked up.  Nothing reads these from a module global: a test builds its own
context and gets its own server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orbited.access import AccessPolicy
from orbited.config import Config
from orbited.lookup import LookupCache
from orbited.proxy import HandshakeDeadlines, TCPSocketProxy
from orbited.session import ISessionProtocol, ServerStats, SessionRegistry


@dataclass
class ServerContext:
    config: Config
    reactor: Any
    policy: AccessPolicy = field(init=False)
    stats: ServerStats = field(default_factory=ServerStats)
    sessions: SessionRegistry = field(init=False)
    handshakes: HandshakeDeadlines = field(init=False)
    lookups: LookupCache = field(init=False)
    broker: Any = None  # the built-in STOMP broker, when a stomp:// listener or /stomp runs
    workers: Any = None  # orbited.workers.WorkerPool when [global] workers > 0

    def __post_init__(self) -> None:
        self.policy = AccessPolicy.from_config(self.config)
        self.sessions = SessionRegistry(self.config.settings["proxy.max_sessions"])
        self.handshakes = HandshakeDeadlines(self.reactor, self.config.settings["proxy.handshake_timeout"])
        self.lookups = LookupCache(self.reactor, self.config.settings["proxy.lookup_cache"])

    def newSessionProtocol(self) -> ISessionProtocol:
        """What runs on every TCPSocket session: the access-checked proxy."""
        return TCPSocketProxy(self)
