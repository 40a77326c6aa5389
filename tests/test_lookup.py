"""orbited.lookup: every host-name lookup ends, with the real resolver on a real reactor.

Each case runs in a child interpreter (a reactor is installed once per process).
A lookup that fails with something other than gaierror -- the idna codec's
UnicodeError here; an idna codec that cannot be imported after the privilege
drop in production -- used to leave the receiver waiting forever, so the
browser got 0104 at the connect timeout and the log said nothing.
"""

from __future__ import annotations

import json

import pytest

from tests.test_reactor import run_child

CHILD = """
    import json, logging
    from orbited.cli import install_reactor
    install_reactor(REACTOR)
    from twisted.internet import reactor

    lines = []

    class Lines(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logging.getLogger("orbited").addHandler(Lines())
    results = {}

    class Receiver:
        def __init__(self, name):
            self.name = name
            self.addresses = []

        def resolutionBegan(self, resolution):
            pass

        def addressResolved(self, address):
            self.addresses.append(address.host)

        def resolutionComplete(self):
            results[self.name] = self.addresses
            if len(results) == 2:
                reactor.stop()

    def start():
        # 'a..b' makes getaddrinfo raise UnicodeError (empty label), not gaierror.
        reactor.nameResolver.resolveHostName(Receiver("a..b"), "a..b", 80)
        reactor.nameResolver.resolveHostName(Receiver("localhost"), "localhost", 80)

    reactor.callWhenRunning(start)
    reactor.callLater(10, reactor.stop)
    reactor.run()
    print(json.dumps({"results": results, "lines": lines}))
"""


@pytest.mark.parametrize("reactor_name", ["default", "twisted-epoll"])
def test_a_lookup_that_fails_oddly_ends_at_once_and_is_logged(reactor_name: str) -> None:
    out = json.loads(run_child(CHILD.replace("REACTOR", repr(reactor_name))))
    results, lines = out["results"], out["lines"]
    assert results.get("a..b") == [], out  # ended, with no address (-> 0108), not left hanging
    assert "127.0.0.1" in results.get("localhost", []), out  # ordinary lookups still work
    assert any(line.startswith("looking up a..b failed: UnicodeError") for line in lines), lines
