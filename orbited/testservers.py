"""Backends for trying Orbited out and for its tests: echo, lineecho, rude, announce, monitor.

The same five Orbited 0.7 shipped (its ``announce`` crashed; this one works).
They bind the interface their ``[listen]`` line names, like every listener,
and never accept more than they can bound: ``lineecho`` drops a client
whose line grows past 64 KiB, and both echoes stop reading a client that
does not read what they send.
"""

from __future__ import annotations

import json
import os
import pwd
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import implementer

if TYPE_CHECKING:
    from orbited.context import ServerContext


@implementer(IPushProducer)
class ReadsAsItSends:
    """An echo stops reading while what it sent waits for the client: a client that sends and
    never reads would otherwise have the whole process buffer its echo without bound."""

    transport: Any

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class Echo(ReadsAsItSends, Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class LineEcho(ReadsAsItSends, LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 65536

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.transport.loseConnection()


class Rude(Protocol):
    """Hangs up at once: how a page sees a backend that closes immediately."""

    def connectionMade(self) -> None:
        self.factory.reactor.callLater(0.0001, self.transport.loseConnection)


class Announce(Protocol):
    """Sends 'message N' every second: a backend that pushes without being asked."""

    def connectionMade(self) -> None:
        self.count = 0
        self.call = self.factory.reactor.callLater(1, self.tick)

    def tick(self) -> None:
        self.count += 1
        self.transport.write(b"message %d\n" % self.count)
        self.call = self.factory.reactor.callLater(1, self.tick)

    def connectionLost(self, reason: object = None) -> None:
        if self.call.active():
            self.call.cancel()


MONITOR_FIELDS = ("user", "pid", "cpu", "mem", "connections")


def process_sample(stats_connections: int) -> dict:
    """This process's user, pid, CPU seconds and resident MB, read from /proc."""
    pid = os.getpid()
    cpu = mem = 0.0
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = round((int(fields[11]) + int(fields[12])) / ticks, 2)
        with open(f"/proc/{pid}/statm") as handle:
            mem = round(int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6, 1)
    except (OSError, IndexError, ValueError):
        pass
    return {
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "pid": pid,
        "cpu": cpu,
        "mem": mem,
        "connections": stats_connections,
    }


class Monitor(Protocol):
    """'~'-terminated JSON frames: ["INIT", fields], then ["UPDATE", changes] each second."""

    def connectionMade(self) -> None:
        self.last: dict = {}
        self.send(["INIT", list(MONITOR_FIELDS)])
        self.tick()

    def send(self, frame: list) -> None:
        self.transport.write(json.dumps(frame).encode() + b"~")

    def tick(self) -> None:
        sample = process_sample(self.factory.context.stats.proxied_now)
        changed = {key: value for key, value in sample.items() if self.last.get(key) != value}
        self.last = sample
        if changed:
            self.send(["UPDATE", changed])
        self.call = self.factory.reactor.callLater(1, self.tick)

    def connectionLost(self, reason: object = None) -> None:
        call = getattr(self, "call", None)
        if call is not None and call.active():
            call.cancel()


PROTOCOLS = {
    "echo": Echo,
    "lineecho": LineEcho,
    "rude": Rude,
    "announce": Announce,
    "monitor": Monitor,
}


def test_server_factory(scheme: str, context: ServerContext) -> Factory:
    factory = Factory.forProtocol(PROTOCOLS[scheme])
    factory.noisy = False
    factory.reactor = context.reactor
    factory.context = context
    return factory
