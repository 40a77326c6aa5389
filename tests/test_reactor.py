"""orbited.reactor: the epoll reactor without per-event log context, on real sockets.

Each case runs in a child interpreter, because a reactor is installed once
per process and the test process must not get one.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(__import__("select"), "epoll"), reason="needs epoll")


def run_child(code: str, timeout: float = 30) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize(("name", "expected"), [(None, "LeanEPollReactor"), ("default", "LeanEPollReactor"),
                                                ("epoll", "LeanEPollReactor"), ("poll", "PollReactor"),
                                                ("select", "SelectReactor")])
def test_install_reactor_installs_the_lean_epoll_reactor_by_default(name: str | None, expected: str) -> None:
    out = run_child(f"""
        from orbited.cli import install_reactor
        install_reactor({name!r})
        from twisted.internet import reactor
        print(type(reactor).__name__)
    """)
    assert out.strip() == expected


# One child: an echo server, a protocol that raises in dataReceived, and a peer that hangs up;
# the loop must log the failure, drop only that connection, and keep serving the others.
EVENTS_CHILD = """
    import socket, sys
    INSTALL
    from twisted.internet import protocol, reactor
    from twisted.python import log

    errors = []
    log.addObserver(lambda event: errors.append(event) if event.get("isError") else None)
    lost = []

    class Echo(protocol.Protocol):
        def dataReceived(self, data):
            if data == b"boom":
                raise ValueError("handler failed")
            self.transport.write(data)

        def connectionLost(self, reason):
            lost.append(reason.type.__name__)

    port = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
    address = ("127.0.0.1", port.getHost().port)
    results = {}

    def exchange(sock, data):
        sock.sendall(data)
        sock.settimeout(5)
        return sock.recv(100)

    def client_side():
        good = socket.create_connection(address)
        bad = socket.create_connection(address)
        hangup = socket.create_connection(address)
        results["before"] = exchange(good, b"one")
        bad.sendall(b"boom")
        bad.settimeout(5)
        results["bad_eof"] = bad.recv(100)
        hangup.close()
        results["after"] = exchange(good, "two, ünïcode".encode())
        good.close()

    def main():
        d = __import__("twisted.internet.threads", fromlist=["deferToThread"]).deferToThread(client_side)
        d.addBoth(lambda result: (results.setdefault("thread", repr(result)),
                                  reactor.callLater(0.5, reactor.stop)))

    reactor.callWhenRunning(main)
    reactor.run()
    print(repr(results["before"]), repr(results["bad_eof"]), repr(results["after"]))
    print(results["thread"])
    print(sorted(lost))
    print(sum("handler failed" in str(e.get("failure", "")) for e in errors))
"""


INSTALLERS = {"lean": "from orbited import reactor as lean; lean.install()",
              "stock": "from twisted.internet import epollreactor; epollreactor.install()"}


@pytest.mark.parametrize("which", ["lean", "stock"])
def test_echo_a_failing_handler_and_a_hangup_behave_as_on_twisteds_epoll_reactor(which: str) -> None:
    out = run_child(EVENTS_CHILD.replace("INSTALL", INSTALLERS[which]))
    before, thread, lost, failures = out.splitlines()
    assert before == repr(b"one") + " " + repr(b"") + " " + repr("two, ünïcode".encode())
    assert thread == "None"  # the client thread finished without an exception
    # the failing connection was closed with its error; the hung-up and the closed one ended cleanly
    assert lost == str(["ConnectionDone", "ConnectionDone", "ValueError"])
    assert failures == "1"  # the handler's exception was logged once
