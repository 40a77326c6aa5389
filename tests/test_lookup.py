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

# What the children below share: a receiver that records the addresses each lookup gave.
RECEIVER = """
    got = []

    class Receiver:
        def __init__(self, name=""):
            self.name = name
            self.addresses = []

        def resolutionBegan(self, resolution):
            pass

        def addressResolved(self, address):
            self.addresses.append(address.host)

        def resolutionComplete(self):
            got.append((self.name, self.addresses))
"""

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
RECEIVER

    def stop_at_two():
        if len(got) == 2:
            reactor.stop()
        else:
            reactor.callLater(0.01, stop_at_two)

    def start():
        # 'a..b' makes getaddrinfo raise UnicodeError (empty label), not gaierror.
        reactor.nameResolver.resolveHostName(Receiver("a..b"), "a..b", 80)
        reactor.nameResolver.resolveHostName(Receiver("localhost"), "localhost", 80)
        stop_at_two()

    reactor.callWhenRunning(start)
    reactor.callLater(10, reactor.stop)
    reactor.run()
    print(json.dumps({"results": dict(got), "lines": lines}))
""".replace("RECEIVER", RECEIVER)


@pytest.mark.parametrize("reactor_name", ["default", "twisted-epoll"])
def test_a_lookup_that_fails_oddly_ends_at_once_and_is_logged(reactor_name: str) -> None:
    out = json.loads(run_child(CHILD.replace("REACTOR", repr(reactor_name))))
    results, lines = out["results"], out["lines"]
    assert results.get("a..b") == [], out  # ended, with no address (-> 0108), not left hanging
    assert "127.0.0.1" in results.get("localhost", []), out  # ordinary lookups still work
    # UnicodeError up to Python 3.12; 3.13's idna codec raises its subclass UnicodeEncodeError
    failed = ("looking up a..b failed: UnicodeError", "looking up a..b failed: UnicodeEncodeError")
    assert any(line.startswith(failed) for line in lines), lines


SHARED_CHILD = """
    import json
    from orbited.cli import install_reactor
    install_reactor("default")
    from twisted.internet import reactor
    from twisted.internet._resolver import GAIResolver
    from orbited.lookup import LookupCache, reporting_getaddrinfo

    calls = []
    real = reporting_getaddrinfo(reactor)

    def counting(*args):
        calls.append(args[0])
        return real(*args)

    reactor.installNameResolver(GAIResolver(reactor, reactor.getThreadPool, counting))
    cache = LookupCache(reactor, 10)
RECEIVER

    def ask(count, then):
        start = len(got)
        for _ in range(count):
            cache.resolveHostName(Receiver(), "localhost", 80)

        def check():
            if len(got) - start < count:
                reactor.callLater(0.01, check)
            else:
                then()
        check()

    steps = []

    def burst():
        ask(20, later)

    def later():
        steps.append(len(calls))
        ask(1, forgotten)

    def forgotten():
        steps.append(len(calls))
        cache.forget("localhost", 80)
        ask(1, done)

    def done():
        steps.append(len(calls))
        reactor.stop()

    reactor.callWhenRunning(burst)
    reactor.callLater(20, reactor.stop)
    reactor.run()
    print(json.dumps({"steps": steps, "got": [addresses for _, addresses in got]}))
""".replace("RECEIVER", RECEIVER)


def test_twenty_lookups_of_one_name_at_once_make_one_getaddrinfo_call_in_the_real_thread_pool() -> None:
    out = json.loads(run_child(SHARED_CHILD))
    assert out["steps"] == [1, 1, 2], out  # the burst, a later socket (remembered), after forget
    assert len(out["got"]) == 22 and all("127.0.0.1" in addresses for addresses in out["got"]), out
