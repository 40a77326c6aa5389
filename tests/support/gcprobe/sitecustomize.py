"""Loaded into an Orbited process under test (PYTHONPATH) when ORBITED_GC_PROBE names a file.

It counts what only CPython's cyclic collector frees: every half second it runs
a collection that keeps what it finds (DEBUG_SAVEALL), adds the types to a
running count, writes the count to the file as JSON, and lets the objects go.
A closed session that the collector has to free shows up there; one freed by
reference counting never does.  Each round also writes how many orbited objects
of each type are alive, under "live:<type>", so that a test can see a closed
session still held by something (a timer) though no cycle keeps it.
ORBITED_SLOW_LOOKUP=SECONDS makes every getaddrinfo of 'localhost' take that
long, as a resolver that does not answer would, without asking one; a name
under .invalid (RFC 2606) is answered "no such name" at once, without asking one.  SIGUSR2 makes it leave one orbited object in a
cycle, so that a test can check the probe would see one.  Test support only:
never imported by Orbited.
"""

import os

if os.environ.get("ORBITED_GC_PROBE"):
    import socket as _socket
    import time as _time

    _getaddrinfo = _socket.getaddrinfo

    def _probe_getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        if isinstance(host, str) and host.endswith(".invalid"):
            raise _socket.gaierror(_socket.EAI_NONAME, "Name or service not known")
        if host == "localhost" and os.environ.get("ORBITED_SLOW_LOOKUP"):
            _time.sleep(float(os.environ["ORBITED_SLOW_LOOKUP"]))
        return _getaddrinfo(host, *args, **kwargs)

    _socket.getaddrinfo = _probe_getaddrinfo

if os.environ.get("ORBITED_GC_PROBE"):
    import orbited.cli as _cli

    _tune = _cli.tune_garbage_collector

    def _tune_and_probe() -> None:
        import collections
        import gc
        import json

        from twisted.internet.task import LoopingCall

        _tune()
        path = os.environ["ORBITED_GC_PROBE"]
        found: collections.Counter = collections.Counter()

        def probe() -> None:
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                gc.collect()
                found.update(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.collect()  # what was just saved, freed for good
            live = collections.Counter(f"live:{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()
                                       if isinstance(type(o).__module__, str) and type(o).__module__.startswith("orbited."))
            with open(path + ".tmp", "w") as out:
                json.dump({**found, **live}, out)
            os.replace(path + ".tmp", path)

        def leave_a_cycle() -> None:
            """SIGUSR2: one orbited object kept only by a cycle, so a test can check the probe sees it."""
            from orbited.http.parser import RequestParser

            cycle: list = [RequestParser()]
            cycle.append(cycle)

        import signal

        from twisted.internet import reactor

        signal.signal(signal.SIGUSR2, lambda signum, frame: reactor.callFromThread(leave_a_cycle))
        LoopingCall(probe).start(0.5)

    _cli.tune_garbage_collector = _tune_and_probe
