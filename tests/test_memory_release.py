"""A closed session is freed at once, by reference counting, on every transport.

The daemon raises CPython's cyclic-collector thresholds so that full
collections stay off the latency path (orbited/cli.py).  The price is that
anything kept alive only by a reference cycle waits for the next full
collection: before these tests, every closed /ws session (autobahn resolves
its ``is_closed`` Deferred with the protocol itself) and every SockJS, STOMP
and backend connection did, and one process grew from 59 to 135 MB over
15,000 /ws connects before it levelled off.  Each test runs real sessions
through a real process, closes them, and asks the probe in
tests/support/gcprobe (loaded with PYTHONPATH; it runs the cyclic collector
every half second and counts what it finds) whether any of their objects
needed the collector.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import stomp as stomppy
from websockets.sync.client import connect as ws_connect

from orbited.testing.sockjs_client import request, stream
from orbited.transports.legacy.client import LegacyClient
from tests.support.backends import running
from tests.support.procs import REPO, OrbitedProcess, free_port, scratch_dir
from tests.support.rawws import masked, raw_upgrade
from tests.support.tlsfiles import make_cert

PROBE = Path(__file__).parent / "support" / "gcprobe"
SESSIONS = 10
# Objects of these modules belong to sessions and connections.  Builtins are left out: the probe's
# own json.dump leaves a few closures each round, and Twisted's LoopingCall one per call.
SESSION_MODULES = ("orbited.", "twisted.internet.tcp", "twisted.protocols.tls", "twisted.web", "autobahn.", "OpenSSL.")


class ProbedServer:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.http, self.https, self.echo, self.stomp = free_port(), free_port(), free_port(), free_port()
        self.closed = free_port()  # allowed, and nothing listens there
        self.hole = free_port()  # allowed; a test's blackhole answers no connect there
        self.probe = scratch_dir("gcprobe-") / "counts.json"
        key, crt = make_cert(self.probe.parent)
        (self.probe.parent / "big.bin").write_bytes(b"b" * 4_000_000)  # streamed, not sent whole
        config = (f"[global]\nsession.ping_interval = 30\nsession.ping_timeout = 1\nproxy.connect_timeout = 1\n"
                  f"[ssl]\nkey = {key}\ncrt = {crt}\n[static]\nfiles = {self.probe.parent}\n"
                  f"[listen]\nhttp://127.0.0.1:{self.http}\nhttps://127.0.0.1:{self.https}\necho://127.0.0.1:{self.echo}\n"
                  f"stomp://127.0.0.1:{self.stomp}\n[access]\n* -> 127.0.0.1:{self.echo}\n* -> 127.0.0.1:{self.closed}\n"
                  f"* -> 127.0.0.1:{self.hole}\n* -> localhost:{self.echo}\n* -> localhost:{self.closed}\n"
                  f"* -> nowhere.invalid:{self.echo}\n")
        # the probe, and this checkout's orbited (not whichever one the venv has installed)
        env = {"PYTHONPATH": os.pathsep.join((str(PROBE), str(REPO))), "ORBITED_GC_PROBE": str(self.probe),
               **(env or {})}
        self.process = OrbitedProcess(config, wait_for=self.http, env=env)

    def counts(self) -> dict[str, int]:
        """The probe's running count, once it has run twice more from now."""
        deadline = time.monotonic() + 10
        while not self.probe.exists():
            assert time.monotonic() < deadline, self.process.log()
            time.sleep(0.1)
        time.sleep(1.1)
        return json.loads(self.probe.read_text())

    def collected_by(self, run: Callable[[], None], settle: float = 0.0) -> dict[str, int]:
        """What of a session's objects the cyclic collector had to free while ``run`` ran."""
        before = self.counts()
        run()
        time.sleep(settle)
        after = self.counts()
        return {name: count - before.get(name, 0) for name, count in after.items()
                if name.startswith(SESSION_MODULES) and count != before.get(name, 0)}


@pytest.fixture(scope="module")
def server():
    probed = ProbedServer()
    with probed.process:
        yield probed
        assert "Traceback" not in probed.process.log()


def test_the_probe_sees_a_cycle(server):
    """These tests must be able to fail: an orbited object left in a cycle on purpose is counted."""
    # SIGUSR2 means nothing to Orbited; the probe answers it by leaving a RequestParser in a cycle
    found = server.collected_by(lambda: os.kill(server.process.proc.pid, signal.SIGUSR2))
    assert found.get("orbited.http.parser.RequestParser") == 1, found


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_ws(server, host):
    def run() -> None:
        for _ in range(SESSIONS):
            with ws_connect(f"ws://127.0.0.1:{server.http}/ws") as ws:
                ws.send(f"{host}:{server.echo}")
                assert ws.recv(10) == "1"
                ws.send(b"ping")
                assert ws.recv(10) == b"ping"
        # a browser that breaks the protocol: autobahn fails the connection
        sock = raw_upgrade(server.http)
        sock.sendall(masked(3, b"x"))
        sock.recv(10)
        sock.close()
    assert server.collected_by(run) == {}


def test_a_closed_session_is_not_kept_until_its_backend_close_is_cut(server):
    """Each close of a backend arms a LINGER (5 s) timer that cuts it if it never flushes.  The
    timer held the backend's transport, and through it the whole session, for those 5 s after
    a close that had finished at once: 2,000 /ws sessions closed in 4 s were all still alive,
    and the process 25 MB larger, 2.5 s later."""
    for _ in range(SESSIONS):
        with ws_connect(f"ws://127.0.0.1:{server.http}/ws") as ws:
            ws.send(f"127.0.0.1:{server.echo}")
            assert ws.recv(10) == "1"
    live = {name: count for name, count in server.counts().items() if name.startswith("live:orbited.proxy.")}
    assert live == {}, live  # within 1.2 s of the last close, well inside LINGER


def test_refused_and_failed_connects(server):
    """A backend that is down (browsers retrying against it) or a destination not allowed."""
    def run() -> None:
        for _ in range(SESSIONS):
            for dest, answer in ((f"127.0.0.1:{server.closed}", "0108"), (f"localhost:{server.closed}", "0108"),
                                 (f"127.0.0.1:{free_port()}", "0106")):
                with ws_connect(f"ws://127.0.0.1:{server.http}/ws") as ws:
                    ws.send(dest)
                    assert ws.recv(10) == answer
    assert server.collected_by(run) == {}


def test_lookups_that_find_no_address(server):
    """A backend's name that does not resolve (the probe answers names under .invalid at once,
    as a resolver would): each lookup, made again for every TCPSocket, left a cycle."""
    def run() -> None:
        for _ in range(SESSIONS):
            with ws_connect(f"ws://127.0.0.1:{server.http}/ws") as ws:
                ws.send(f"nowhere.invalid:{server.echo}")
                assert ws.recv(10) == "0108"
    assert server.collected_by(run) == {}


def test_connects_that_time_out_or_are_abandoned(server):
    """A backend that never answers: the connect times out, or the browser leaves first."""
    def run() -> None:
        for _ in range(2):
            with ws_connect(f"ws://127.0.0.1:{server.http}/ws") as ws:
                ws.send(f"127.0.0.1:{server.hole}")
                assert ws.recv(10) == "0104"  # proxy.connect_timeout = 1
        for _ in range(SESSIONS):
            with ws_connect(f"ws://127.0.0.1:{server.http}/ws") as ws:
                ws.send(f"127.0.0.1:{server.hole}")
                time.sleep(0.05)  # connecting now; the browser goes
    with running("blackhole", server.hole):
        assert server.collected_by(run, settle=0.5) == {}


def test_sessions_that_gave_up_on_a_slow_lookup_are_not_kept_until_it_ends():
    """TCPSockets to a name whose lookup outlasts proxy.connect_timeout (a resolver that does not
    answer) get 0104; they stayed in the lookup's list of receivers, each with its whole session,
    until getaddrinfo returned."""
    slow = ProbedServer(env={"ORBITED_SLOW_LOOKUP": "5"})  # proxy.connect_timeout is 1 s
    with slow.process:
        def timed_out(_: int) -> str:
            with ws_connect(f"ws://127.0.0.1:{slow.http}/ws") as ws:
                ws.send(f"localhost:{slow.echo}")
                return ws.recv(10)
        with ThreadPoolExecutor(SESSIONS) as pool:
            assert set(pool.map(timed_out, range(SESSIONS))) == {"0104"}
        live = {name: count for name, count in slow.counts().items() if name.startswith("live:orbited.proxy.")}
        assert live == {}, live  # 1.2 s after the 0104s, the lookup still under way


def test_sockjs_polling_and_streaming(server):
    def run() -> None:
        for _ in range(SESSIONS):
            url = f"http://127.0.0.1:{server.http}/sockjs/000/{uuid.uuid4().hex}"
            assert request("POST", url + "/xhr").body == b"o\n"
            request("POST", url + "/xhr_send", body=json.dumps([f"127.0.0.1:{server.echo}"]))
            assert request("POST", url + "/xhr").body == b'a["1"]\n'
            request("POST", url + "/xhr_send", body=json.dumps([base64.b64encode(b"ping").decode()]))
            assert request("POST", url + "/xhr").body == b'a["cGluZw=="]\n'
            url = f"http://127.0.0.1:{server.http}/sockjs/000/{uuid.uuid4().hex}"
            receiving = stream("POST", url + "/xhr_streaming")
            request("POST", url + "/xhr_send", body=json.dumps([f"127.0.0.1:{server.echo}"]))
            receiving.close()
    # session.ping_timeout is 1 s: the sessions expire, and their backends close, within 2 s
    assert server.collected_by(run, settle=2.5) == {}


def test_sockjs_websockets(server):
    def run() -> None:
        for _ in range(SESSIONS):
            with ws_connect(f"ws://127.0.0.1:{server.http}/sockjs/000/{uuid.uuid4().hex}/websocket") as ws:
                assert ws.recv(10) == "o"
                ws.send(json.dumps([f"127.0.0.1:{server.echo}"]))
                assert ws.recv(10) == 'a["1"]'
            with ws_connect(f"ws://127.0.0.1:{server.http}/sockjs/websocket") as ws:
                ws.send(f"127.0.0.1:{server.echo}")
                assert ws.recv(10) == "1"
    assert server.collected_by(run) == {}


def test_legacy_tcp(server):
    async def sessions() -> None:
        for transport in ("xhrstream", "longpoll"):
            for _ in range(SESSIONS // 2):
                client = LegacyClient("127.0.0.1", server.http, transport)
                await client.open()
                assert await client.connect("127.0.0.1", server.echo) == "1"
                await client.send(b"ping")
                assert await client.read_exactly(4) == b"ping"
                await client.close()

    def run() -> None:
        asyncio.run(asyncio.wait_for(sessions(), 60))
    assert server.collected_by(run) == {}


def test_stomp_over_tcp_and_websocket(server):
    def run() -> None:
        for _ in range(SESSIONS):
            client = stomppy.Connection([("127.0.0.1", server.stomp)])
            client.connect(wait=True)
            client.disconnect()
            with ws_connect(f"ws://127.0.0.1:{server.http}/stomp", subprotocols=["v12.stomp"]) as ws:
                ws.send("CONNECT\naccept-version:1.2\nhost:/\n\n\0")
                assert ws.recv(10).startswith("CONNECTED")
        with socket.create_connection(("127.0.0.1", server.stomp)) as raw:
            raw.sendall(b"NONSENSE\n\n\0")  # an ERROR frame, then the broker closes
            raw.recv(1000)
    assert server.collected_by(run) == {}


def test_static_downloads_cut_short(server):
    """A browser that leaves in the middle of a large static file (a page closed, a download
    cancelled): its request and the FileSender sending it held each other."""
    def run() -> None:
        for _ in range(SESSIONS):
            with socket.create_connection(("127.0.0.1", server.http)) as client:
                client.sendall(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                assert client.recv(100).startswith(b"HTTP/1.1 200")
    assert server.collected_by(run, settle=0.5) == {}


def test_https_and_wss(server):
    """A browser that goes without a TLS close_notify (most do) left every TLS connection in a
    cycle through the Failure Twisted makes for the unexpected EOF: 1,200 https requests kept
    40 MB until a full collection."""
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE

    def run() -> None:
        for _ in range(SESSIONS):
            with insecure.wrap_socket(socket.create_connection(("127.0.0.1", server.https))) as tls:
                tls.sendall(b"GET /static/Orbited.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while tls.recv(65536):
                    pass
            with ws_connect(f"wss://127.0.0.1:{server.https}/ws", ssl=insecure) as ws:
                ws.send(f"127.0.0.1:{server.echo}")
                assert ws.recv(10) == "1"
    assert server.collected_by(run) == {}


def test_plain_http_requests(server):
    def run() -> None:
        for _ in range(SESSIONS):
            assert request("GET", f"http://127.0.0.1:{server.http}/static/Orbited.js").status == 200
            assert request("GET", f"http://127.0.0.1:{server.http}/nowhere").status == 404
    assert server.collected_by(run) == {}
