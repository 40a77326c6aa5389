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
                                                ("twisted-epoll", "EPollReactor"),
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
    import socket
    INSTALL
    from twisted.internet import protocol, reactor, threads
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
        d = threads.deferToThread(client_side)
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

# The end of a child that fills the dict ``out`` from ``client_side`` (run in a thread against the
# reactor): stop a moment after it returns (connects still under way finish), print ``key value`` lines.
CLIENT_SIDE_THEN_REPORT = """
    def main():
        d = threads.deferToThread(client_side)
        d.addBoth(lambda result: (out.setdefault("thread", repr(result)), reactor.callLater(0.2, reactor.stop)))

    reactor.callWhenRunning(main)
    reactor.run()
    for key in sorted(out):
        print(key, out[key])
"""


def run_report(child: str, which: str) -> dict[str, str]:
    """Run a child ending in CLIENT_SIDE_THEN_REPORT on reactor ``which``; its report as a dict."""
    lines = run_child(child.replace("INSTALL", INSTALLERS[which]), timeout=90).splitlines()
    return dict(line.split(" ", 1) for line in lines)


@pytest.mark.parametrize("which", ["lean", "stock"])
def test_echo_a_failing_handler_and_a_hangup_behave_as_on_twisteds_epoll_reactor(which: str) -> None:
    out = run_child(EVENTS_CHILD.replace("INSTALL", INSTALLERS[which]))
    before, thread, lost, failures = out.splitlines()
    assert before == repr(b"one") + " " + repr(b"") + " " + repr("two, ünïcode".encode())
    assert thread == "None"  # the client thread finished without an exception
    # the failing connection was closed with its error; the hung-up and the closed one ended cleanly
    assert lost == str(["ConnectionDone", "ConnectionDone", "ValueError"])
    assert failures == "1"  # the handler's exception was logged once


# Writes: made during event handling they leave at the end of the iteration without an EPOLLOUT
# registration; what the kernel does not take waits for EPOLLOUT; a timer's write leaves before the
# loop waits again; a pull producer streams intact; loseConnection after a write delivers, then closes.
WRITES_CHILD = """
    import hashlib, io, socket, time
    INSTALL
    from twisted.internet import protocol, reactor, threads
    from twisted.protocols.basic import FileSender

    BIG = bytes(range(256)) * (32 * 4096)  # 32 MiB: more than the kernel's buffers take at once
    out = {}

    class Server(protocol.Protocol):
        def dataReceived(self, data):
            command = data.strip()
            if command == b"echo":
                self.transport.write(b"echoed")
                out["registered_after_echo"] = self.transport.fileno() in reactor._writes
            elif command == b"big":
                self.transport.write(BIG)
            elif command == b"timer":
                reactor.callLater(0.2, self.transport.write, b"from a timer")
            elif command == b"file":
                FileSender().beginFileTransfer(io.BytesIO(BIG), self.transport).addCallback(
                    lambda _: self.transport.loseConnection())
            elif command == b"bye":
                self.transport.write(b"last words")
                self.transport.loseConnection()

    port = reactor.listenTCP(0, protocol.Factory.forProtocol(Server), interface="127.0.0.1")
    address = ("127.0.0.1", port.getHost().port)

    def read_exactly(sock, n):
        chunks, got = [], 0
        while got < n:
            chunk = sock.recv(min(1 << 20, n - got))
            assert chunk, "closed early"
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def read_to_end(sock):
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)

    def client_side():
        with socket.create_connection(address) as s:
            s.settimeout(10)
            s.sendall(b"echo")
            out["echo"] = s.recv(100)
            s.sendall(b"big")
            time.sleep(0.5)  # not reading: the server must wait for EPOLLOUT
            out["registered_while_full"] = reactor._writes and True
            out["big"] = hashlib.sha256(read_exactly(s, len(BIG))).hexdigest() == hashlib.sha256(BIG).hexdigest()
            s.sendall(b"timer")
            started = time.monotonic()
            out["timer"] = s.recv(100)
            out["timer_delay_ok"] = 0.15 < time.monotonic() - started < 1.0
        with socket.create_connection(address) as s:
            s.settimeout(10)
            s.sendall(b"file")
            out["file"] = read_to_end(s) == BIG
        with socket.create_connection(address) as s:
            s.settimeout(10)
            s.sendall(b"bye")
            out["bye"] = read_to_end(s)
""" + CLIENT_SIDE_THEN_REPORT


@pytest.mark.parametrize("which", ["lean", "stock"])
def test_writes_leave_intact_in_order_and_without_waiting(which: str) -> None:
    out = run_report(WRITES_CHILD, which)
    assert out["thread"] == "None"
    assert out["echo"] == repr(b"echoed")
    assert out["big"] == "True" and out["file"] == "True"
    assert out["registered_while_full"] == "True"  # the rest waited for EPOLLOUT
    assert out["timer"] == repr(b"from a timer") and out["timer_delay_ok"] == "True"
    assert out["bye"] == repr(b"last words")
    # the lean reactor sent the echo within the iteration, with no epoll registration at all
    assert out["registered_after_echo"] == ("False" if which == "lean" else "True")


# The short paths for plain TCP: a read event goes straight to the protocol, and a write the kernel
# takes whole skips doWrite.  What they must not skip: a partial send (the tail waits for EPOLLOUT),
# a streaming producer paused by a full buffer (resumed once it drains), a client still connecting
# (its doRead/doWrite is doConnect), a refused connect, and a read error or EOF.
PLAIN_TCP_CHILD = """
    import hashlib, socket, time
    INSTALL
    from twisted.internet import protocol, reactor, threads
    from twisted.internet.error import ConnectionRefusedError

    CHUNK = bytes(range(256)) * 160  # 40 KiB: under Twisted's bufferSize, so the short path sends it
    TOTAL = 400  # chunks: 16 MiB, far more than the kernel buffers while the peer sleeps
    out = {"paused": 0, "resumed": 0}

    class Pusher:
        \"\"\"A streaming producer writing one chunk per loop iteration while not paused.\"\"\"

        def __init__(self, transport):
            self.transport = transport
            self.sent = 0
            self.paused = False
            self.digest = hashlib.sha256()

        def pauseProducing(self):
            out["paused"] += 1
            self.paused = True

        def resumeProducing(self):
            out["resumed"] += 1
            self.paused = False
            self.next()

        def stopProducing(self):
            pass

        def next(self):
            if self.paused:
                return
            if self.sent == TOTAL:
                self.transport.unregisterProducer()
                self.transport.loseConnection()
                out["server_digest"] = self.digest.hexdigest()
                return
            # one chunk per iteration (the short path sends it), and every third iteration two, which
            # is more than bufferSize and pauses the producer with nothing sent yet
            for _ in range(2 if self.sent % 3 == 2 and self.sent + 2 <= TOTAL else 1):
                self.sent += 1
                self.digest.update(CHUNK)
                self.transport.write(CHUNK)
            reactor.callLater(0, self.next)

    class Server(protocol.Protocol):
        def dataReceived(self, data):
            if data == b"push":
                pusher = Pusher(self.transport)
                self.transport.registerProducer(pusher, True)
                pusher.next()
            else:
                self.transport.write(data.upper())

    class Client(protocol.Protocol):
        def connectionMade(self):
            self.transport.write(b"from a twisted client")

        def dataReceived(self, data):
            out["client_got"] = data
            self.transport.loseConnection()

    class ClientFactory(protocol.ClientFactory):
        protocol = Client

        def clientConnectionFailed(self, connector, reason):
            out["refused"] = reason.check(ConnectionRefusedError) is not None

    port = reactor.listenTCP(0, protocol.Factory.forProtocol(Server), interface="127.0.0.1")
    address = ("127.0.0.1", port.getHost().port)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: a connect is refused
    reactor.connectTCP("127.0.0.1", address[1], ClientFactory())
    reactor.connectTCP("127.0.0.1", closed.getsockname()[1], ClientFactory())

    def client_side():
        with socket.create_connection(address) as s:
            s.settimeout(20)
            s.sendall(b"push")
            time.sleep(0.5)  # not reading: the server's sends go partial, then its buffer fills
            digest = hashlib.sha256()
            got = 0
            while chunk := s.recv(1 << 20):
                digest.update(chunk)
                got += len(chunk)
            out["pushed_bytes"] = got
            out["client_digest"] = digest.hexdigest()
""" + CLIENT_SIDE_THEN_REPORT


@pytest.mark.parametrize("which", ["lean", "stock"])
def test_partial_sends_paused_producers_and_connecting_clients_keep_twisteds_behaviour(which: str) -> None:
    out = run_report(PLAIN_TCP_CHILD, which)
    assert out["thread"] == "None"
    assert out["client_got"] == repr(b"FROM A TWISTED CLIENT")
    assert out["refused"] == "True"
    assert out["pushed_bytes"] == str(400 * 256 * 160)
    assert out["client_digest"] == out["server_digest"]
    # the full buffer paused the producer (Twisted asks again on each write over bufferSize), and
    # draining resumed it: all 16 MiB arrived
    assert int(out["paused"]) >= 1 and int(out["resumed"]) >= 1


def test_the_short_paths_read_twisteds_own_tcp_attributes():
    """orbited.reactor's _read and _send_all (and directwrite.sends_directly) use these attributes as
    Twisted's doRead and doWrite do; a Twisted that renames one must fail here, not in production."""
    from twisted.internet import abstract, tcp

    from orbited import reactor as lean

    assert lean.PLAIN_TCP == {tcp.Server, tcp.Client}
    for cls in lean.PLAIN_TCP:
        assert cls.doRead is tcp.Connection.doRead and cls.doWrite is abstract.FileDescriptor.doWrite
        assert cls.TLS is False and isinstance(cls.SEND_LIMIT, int) and isinstance(cls.bufferSize, int)
    transport = tcp.Connection(__import__("socket").socket(), None, reactor=object())
    for name in ("dataBuffer", "offset", "_tempDataBuffer", "_tempDataLen", "disconnecting",
                 "_writeDisconnecting", "_writeDisconnected", "producer", "streamingProducer", "producerPaused",
                 "connected", "socket", "protocol"):
        assert hasattr(transport, name), name
    transport.socket.close()


@pytest.mark.parametrize("which", ["lean", "stock"])
def test_a_call_scheduled_by_the_end_of_iteration_flush_runs_without_waiting_for_a_timer(which: str) -> None:
    """A connect refused at once is seen while the writes of an iteration go out; the attempt on
    the next address (HostnameConnect) is a callLater(0).  The poll's timeout was reckoned before
    the flush, so the attempt waited for the next timer: 1 s, past a short connect_timeout."""
    out = run_child("""
        import socket, time
        INSTALL
        from twisted.internet import protocol, reactor
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
        closed.close()
        started = time.monotonic()

        class Attempt(protocol.ClientFactory):
            def __init__(self, port):
                self.port = port

            def buildProtocol(self, addr):
                print(f"{time.monotonic() - started:.3f}")
                reactor.stop()
                return protocol.Protocol()

            def clientConnectionFailed(self, connector, reason):
                reactor.connectTCP("127.0.0.1", port, Attempt(port), timeout=5)

        reactor.callLater(0, reactor.connectTCP, "127.0.0.1", refused, Attempt(refused), timeout=5)
        reactor.callLater(3, reactor.callLater, 30, lambda: None)  # a far timer, as the sweep is
        reactor.callLater(8, reactor.stop)
        reactor.run()
    """.replace("INSTALL", INSTALLERS[which]))
    assert float(out.strip()) < 0.5, out
