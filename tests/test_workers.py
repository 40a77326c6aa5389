"""[global] workers: /ws, /sockjs and /tcp sessions served by worker processes, the rest by the master."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import signal
import socket
import struct
import time
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from orbited.http.parser import Limits
from orbited.testing.sockjs_client import Connection, read_body, request
from orbited.transports.legacy.client import HTTPConnection, LegacyClient
from orbited.transports.legacy.codec import encode_packets
from orbited.worker_routes import ANY, WS, worker_at_accept
from tests.support.procs import OrbitedProcess, free_port, scratch_dir
from tests.support.rawws import masked, upgrade_request
from tests.support.tlsfiles import make_cert


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def worker_pids(orbited: OrbitedProcess) -> list[int]:
    found = []
    for pid in children(orbited.proc.pid):
        try:
            if b"orbited.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue  # exited and reaped since it was listed (a worker the test just killed)
    return sorted(found)


def worker_status(orbited: OrbitedProcess, index: int) -> dict:
    """Worker ``index``'s entry in /system/status; empty between its death and its replacement."""
    return next((w for w in orbited.status()["workers"] if w["index"] == index), {})


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def open_socket(port: int, dest: str):
    ws = ws_connect(f"ws://127.0.0.1:{port}/ws")
    ws.send(dest)
    return ws, ws.recv(10)


@contextmanager
def running(workers: int, settings: str = "", echo_host: str = "127.0.0.1", files_limit: int | None = None):
    """Orbited with ``workers`` on an http:// listener and an echo backend, once every worker is up."""
    port, echo = free_port(), free_port()
    config = (f"[global]\nworkers = {workers}\n{settings}[listen]\nhttp://127.0.0.1:{port}\n"
              f"echo://127.0.0.1:{echo}\n[access]\n" + "".join(f"* -> {host}:{echo}\n" for host in echo_host.split(",")))
    with OrbitedProcess(config, wait_for=port, files_limit=files_limit) as orbited:
        orbited.port, orbited.echo = port, echo
        orbited.wait_workers(workers)
        assert len(worker_pids(orbited)) == workers, orbited.log()
        yield orbited


@pytest.fixture
def cluster():
    with running(2, "shutdown.timeout = 3\n") as orbited:
        yield orbited


def test_sessions_spread_over_workers_and_are_counted(cluster):
    sockets = []
    try:
        for index in range(8):
            ws, answer = open_socket(cluster.port, f"127.0.0.1:{cluster.echo}")
            assert answer == "1"
            ws.send(b"message %d" % index)
            assert ws.recv(10) == b"message %d" % index
            sockets.append(ws)
        status = wait_for(lambda: (s := cluster.status())["proxy"]["connections"] == 8 and s)
        assert status, cluster.status()
        assert status["sessions"]["by_transport"] == {"ws": 8}
        assert sorted(w["sessions"] for w in status["workers"]) == [4, 4]
        assert {w["pid"] for w in status["workers"]} == set(worker_pids(cluster))
        # each worker reports its own process: 4 proxied sessions are 8 descriptors beyond its base
        for worker in status["workers"]:
            assert worker["process"]["rss_bytes"] > 10_000_000
            assert worker["process"]["open_files"] >= 8
        # the proxy ran in the workers: their log lines reach the master's log
        assert "[worker 0] ws 127.0.0.1:" in cluster.log() and "[worker 1] ws 127.0.0.1:" in cluster.log()
    finally:
        for ws in sockets:
            ws.close()


def test_each_worker_remembers_host_names_and_the_status_sums_them():
    with running(2, echo_host="localhost") as orbited:
        for index in range(4):  # in turn: two on each worker
            ws, answer = open_socket(orbited.port, f"localhost:{orbited.echo}")
            assert answer == "1"
            ws.send(b"by name %d" % index)
            assert ws.recv(20) == b"by name %d" % index
            ws.close()
        # each worker looked the name up once and remembered it once; workers report once a second
        counts = wait_for(lambda: (p := orbited.status()["proxy"])["lookups"] == 2 and p["lookups_remembered"] == 2
                          and p)
        assert counts and counts["lookups_shared"] == 0, orbited.status()["proxy"]


def test_access_rules_apply_in_workers_and_reload_with_sighup(cluster):
    other = free_port()
    ws, answer = open_socket(cluster.port, f"127.0.0.1:{other}")
    ws.close()
    assert answer == "0106"
    allow_also(cluster, other)
    cluster.proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert answers_from_both_workers(cluster, other) == {"0108"}  # allowed now; nothing listens there


def allow_also(cluster: OrbitedProcess, dest_port: int) -> None:
    cluster.path.write_text(cluster.path.read_text().replace(
        f"* -> 127.0.0.1:{cluster.echo}", f"* -> 127.0.0.1:{cluster.echo}\n* -> 127.0.0.1:{dest_port}"))


def answers_from_both_workers(cluster: OrbitedProcess, dest_port: int) -> set[str]:
    answers = set()
    for _ in range(4):  # /ws connections alternate between the workers
        ws, answer = open_socket(cluster.port, f"127.0.0.1:{dest_port}")
        ws.close()
        answers.add(answer)
    return answers


def test_a_dead_worker_is_replaced(cluster):
    victim = worker_pids(cluster)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len(pids := worker_pids(cluster)) == 2 and victim not in pids)
    assert "died" in cluster.log()
    for _ in range(4):
        ws, answer = open_socket(cluster.port, f"127.0.0.1:{cluster.echo}")
        ws.close()
        assert answer == "1"


def test_a_worker_that_keeps_dying_young_is_restarted_less_and_less_often(cluster):
    """A crash at start-up would otherwise restart a worker every second, forever."""
    delays = []
    for _ in range(3):
        victim = worker_status(cluster, 1)["pid"]
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: cluster.log().count("worker 1 died") == len(delays) + 1)
        delays.append(cluster.log().split("worker 1 died")[-1].split("starting another in ")[1].split("s")[0])
        assert wait_for(lambda old=victim: (w := worker_status(cluster, 1)).get("ready") and w["pid"] != old, 20)
    assert delays == ["1", "2", "4"]


def test_sigterm_closes_worker_sessions_and_every_process_exits(cluster):
    ws, answer = open_socket(cluster.port, f"127.0.0.1:{cluster.echo}")
    assert answer == "1"
    workers = worker_pids(cluster)
    cluster.proc.send_signal(signal.SIGTERM)
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(10)
    assert closed.value.rcvd.code == 1001
    assert cluster.proc.wait(10) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_every_process_at_once_stops_them_cleanly(cluster, sig):
    """systemd's default KillMode sends SIGTERM to the whole unit, a terminal's Ctrl-C sends
    SIGINT to the whole group: each worker stops on its own signal, then gets the master's
    stop message too."""
    ws, answer = open_socket(cluster.port, f"127.0.0.1:{cluster.echo}")
    assert answer == "1"
    workers = worker_pids(cluster)
    os.killpg(cluster.proc.pid, sig)
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(10)
    assert closed.value.rcvd.code == 1001
    assert cluster.proc.wait(10) == 0
    assert wait_for(lambda: all(not Path(f"/proc/{pid}").exists() for pid in workers), 5)
    log = cluster.log()
    assert "Traceback" not in log and "Unhandled" not in log, log
    assert all(f"worker {index} stopped (exit 0)" in log for index in (0, 1)), log


def test_a_sighup_to_every_process_reloads_and_ends_nothing(cluster):
    """``pkill -HUP orbited`` reaches the workers as well as the master."""
    ws, answer = open_socket(cluster.port, f"127.0.0.1:{cluster.echo}")
    assert answer == "1"
    workers = worker_pids(cluster)
    other = free_port()
    allow_also(cluster, other)
    os.killpg(cluster.proc.pid, signal.SIGHUP)
    time.sleep(1.0)
    ws.send(b"still here")
    assert ws.recv(10) == b"still here"
    assert worker_pids(cluster) == workers
    assert "died" not in cluster.log()
    assert answers_from_both_workers(cluster, other) == {"0108"}
    ws.close()


@pytest.mark.skipif(os.getuid() != 0, reason="privileges can only be dropped by a process started as root")
def test_workers_run_unprivileged():
    port = free_port()
    config = f"[global]\nuser = nobody\nworkers = 1\n[listen]\nhttp://127.0.0.1:{port}\n"
    with OrbitedProcess(config, wait_for=port) as orbited:
        # a worker is started as root (to exec the interpreter) and drops to the user before serving
        assert wait_for(lambda: "[worker 0] dropped privileges to user nobody" in orbited.log()), orbited.log()
        pid = worker_pids(orbited)[0]
        uid_line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if line.startswith("Uid:"))
        assert set(uid_line.split()[1:]) == {"65534"}


def test_tls_connections_stay_in_the_master():
    certs = scratch_dir("certs-")
    key, crt = make_cert(certs)
    port, echo = free_port(), free_port()
    config = (f"[global]\nworkers = 1\n[listen]\nhttps://127.0.0.1:{port}\necho://127.0.0.1:{echo}\n"
              f"[ssl]\nkey = {key}\ncrt = {crt}\n[access]\n* -> 127.0.0.1:{echo}\n")
    import ssl

    context = ssl.create_default_context(cafile=str(crt))
    with OrbitedProcess(config, wait_for=port) as orbited:
        with ws_connect(f"wss://localhost:{port}/ws", ssl=context) as ws:
            ws.send(f"127.0.0.1:{echo}")
            assert ws.recv(10) == "1"
            ws.send(b"over tls")
            assert ws.recv(10) == b"over tls"
        assert "[worker 0] ws" not in orbited.log()


def test_a_whole_upgrade_head_is_handed_over_at_accept_and_a_split_one_after_parsing(cluster):
    """A head that is all there at accept goes to a worker unparsed; one that
    arrives in pieces goes through the HTTP layer first.  Both get a session."""
    ws, answer = open_socket(cluster.port, f"127.0.0.1:{cluster.echo}")
    ws.close()
    assert answer == "1"
    assert cluster.status()["worker_handoffs"] == {"at_accept": 1, "after_parse": 0, "handed_back": 0}

    head = upgrade_request(cluster.port, b"/ws")
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as sock:
        sock.sendall(head[:20])
        time.sleep(0.3)
        sock.sendall(head[20:])
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(1)
        assert reply.startswith(b"HTTP/1.1 101"), reply
        sock.sendall(masked(0x1, f"127.0.0.1:{cluster.echo}".encode()))
        assert sock.recv(10) == b"\x81\x011"
    assert cluster.status()["worker_handoffs"] == {"at_accept": 1, "after_parse": 1, "handed_back": 0}
    assert "Traceback" not in cluster.log()


def test_a_bad_upgrade_head_handed_over_at_accept_gets_its_error(cluster):
    head = upgrade_request(cluster.port, b"/ws").replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 7")
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as sock:
        sock.sendall(head)
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400"), reply
    assert cluster.status()["worker_handoffs"]["at_accept"] == 1
    ws, answer = open_socket(cluster.port, f"127.0.0.1:{cluster.echo}")
    ws.close()
    assert answer == "1"


def test_other_requests_on_a_handoff_listener_are_served_by_the_master(cluster):
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as sock:
        sock.sendall(b"GET /static/Orbited.js HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(12) == b"HTTP/1.1 200"
    assert cluster.status()["worker_handoffs"] == {"at_accept": 0, "after_parse": 0, "handed_back": 0}


def test_the_twisted_http_engine_with_workers_still_serves_everything():
    with running(1, "http.engine = twisted\n") as orbited:
        ws, answer = open_socket(orbited.port, f"127.0.0.1:{orbited.echo}")
        ws.send(b"ping")
        assert ws.recv(10) == b"ping"
        ws.close()
        assert answer == "1"
        assert orbited.status()["worker_handoffs"] == {"at_accept": 0, "after_parse": 0, "handed_back": 0}
        assert "Traceback" not in orbited.log()


def test_max_sessions_applies_per_process_and_a_full_worker_gets_no_more():
    with running(1, "proxy.max_sessions = 2\n") as orbited:
        port, echo = orbited.port, orbited.echo
        sockets = []
        try:
            for _ in range(2):
                ws, answer = open_socket(port, f"127.0.0.1:{echo}")
                assert answer == "1"
                sockets.append(ws)
            # the worker reports itself full within a second; then the master serves, up to its own cap
            assert wait_for(lambda: orbited.status()["workers"][0]["sessions"] == 2)
            time.sleep(1.5)
            for _ in range(2):
                ws, answer = open_socket(port, f"127.0.0.1:{echo}")
                assert answer == "1"
                sockets.append(ws)
            status = orbited.status()
            assert status["sessions"]["total"] == 4 and status["workers"][0]["sessions"] == 2, status
            with pytest.raises(InvalidStatus) as refused:
                open_socket(port, f"127.0.0.1:{echo}")
            assert refused.value.response.status_code == 503
        finally:
            for ws in sockets:
                ws.close()


def legacy_session(port: int, echo: int, transport: str, payload: bytes, hold: float = 0.0,
                   host: str = "127.0.0.1") -> str:
    """An Orbited 0.7 session (its own connections up and down) that echoes ``payload``; its key."""
    async def scenario() -> str:
        client = LegacyClient("127.0.0.1", port, transport, poll_interval=0.02)
        key = await client.open()
        assert await client.connect(host, echo) == "1"
        await client.send(payload)
        assert await client.read_exactly(len(payload)) == payload
        await asyncio.sleep(hold)
        await client.close()
        return key
    return asyncio.run(asyncio.wait_for(scenario(), 30))


def test_legacy_tcp_sessions_spread_over_workers_and_live_where_their_key_says(cluster):
    keys = [legacy_session(cluster.port, cluster.echo, transport, bytes(range(256)) * (index + 1))
            for index, transport in enumerate(("xhrstream", "longpoll", "poll") * 2)]
    assert sorted(key[:2] for key in keys) == ["00", "00", "00", "01", "01", "01"], keys  # round robin
    # while one is open, the worker its key names reports it
    opened: list[str] = []

    async def hold_one() -> None:
        client = LegacyClient("127.0.0.1", cluster.port, "xhrstream")
        opened.append(await client.open())
        assert await client.connect("127.0.0.1", cluster.echo) == "1"
        expected = [0, 0]
        expected[int(opened[0][:2], 16)] = 1
        assert await asyncio.to_thread(wait_for, lambda: sockjs_worker_sessions(cluster) == expected), \
            cluster.status()
        assert cluster.status()["sessions"]["by_transport"] == {"tcp": 1}
        await client.close()
    asyncio.run(asyncio.wait_for(hold_one(), 30))
    assert "Traceback" not in cluster.log()


def test_one_keep_alive_connection_carries_legacy_sessions_of_both_workers(cluster):
    """A 0.7 page's requests for its session, a new session and the master's pages share one connection."""
    async def scenario() -> set[str]:
        conn = await HTTPConnection.open("127.0.0.1", cluster.port)
        owners = set()
        for _ in range(4):
            response = await conn.request("GET", "/tcp")
            key = response.body.decode()
            owners.add(key[:2])
            response = await conn.request("POST", f"/tcp/{key}?ack=0", encode_packets(
                [[b"1", b"data", base64.b64encode(f"127.0.0.1:{cluster.echo}\n".encode())]]))
            assert (response.status, response.body) == (200, b"OK")
            body = b""
            while b"MQ==" not in body:  # the handshake's answer, '1'
                response = await conn.request("GET", f"/tcp/{key}/poll")
                assert response.status == 200
                body += response.body
            response = await conn.request("GET", "/static/Orbited.js")
            assert response.status == 200 and b"TCPSocket" in response.body
        conn.close()
        return owners
    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == {"00", "01"}
    handoffs = cluster.status()["worker_handoffs"]
    assert handoffs == {"at_accept": 1, "after_parse": 3, "handed_back": 4}, handoffs


def test_a_legacy_session_the_master_holds_says_so_in_its_key():
    """http.engine = twisted hands nothing to workers: the master makes and serves the session, and
    its key (prefix ff) would send its requests to the master under the lean engine too."""
    with running(1, "http.engine = twisted\n") as orbited:
        key = legacy_session(orbited.port, orbited.echo, "longpoll", b"held by the master")
        assert key.startswith("ff")
    assert worker_at_accept(b"GET /tcp/" + key.encode() + b"/longpoll HTTP/1.1\r\nHost: h\r\n\r\n", LIMITS, 2) is None


@pytest.mark.parametrize(("head", "target"), [
    (b"GET /tcp HTTP/1.1\r\nHost: h\r\n\r\n", ANY),
    (b"GET /tcp?nocache=0.5 HTTP/1.1\r\nHost: h\r\n\r\n", ANY),
    (b"POST /tcp HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", ANY),
    (b"GET /tcp/00" + b"a" * 30 + b"/xhrstream HTTP/1.1\r\nHost: h\r\n\r\n", 0),
    (b"POST /tcp/01" + b"a" * 30 + b"?ack=3 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nxy", 1),
    (b"GET /tcp/02" + b"a" * 30 + b"/poll HTTP/1.1\r\nHost: h\r\n\r\n", None),  # no worker 2: the master
    (b"GET /tcp/ff" + b"a" * 30 + b"/poll HTTP/1.1\r\nHost: h\r\n\r\n", None),  # the master's own
    (b"GET /tcp/static/HTMLFileFrame.js HTTP/1.1\r\nHost: h\r\n\r\n", None),
    (b"GET /tcp/ HTTP/1.1\r\nHost: h\r\n\r\n", None),
    (b"GET /tcp/0 HTTP/1.1\r\nHost: h\r\n\r\n", None),
    (b"GET /tcpx HTTP/1.1\r\nHost: h\r\n\r\n", None),
])
def test_legacy_requests_go_where_their_key_says(head, target):
    assert worker_at_accept(head, LIMITS, 2) == target


@pytest.mark.parametrize(("head", "target"), [
    # the spellings the resource tree reads the same way: escapes, absolute-form
    (b"GET /tcp/%30%31" + b"a" * 30 + b"/poll HTTP/1.1\r\nHost: h\r\n\r\n", 1),
    (b"GET http://h:8000/tcp/01" + b"a" * 30 + b"/poll HTTP/1.1\r\nHost: h\r\n\r\n", 1),
    (b"GET /%74cp HTTP/1.1\r\nHost: h\r\n\r\n", ANY),
    (b"GET http://h/tcp?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", ANY),
    (b"GET http://h/tcp/static/HTMLFileFrame.js HTTP/1.1\r\nHost: h\r\n\r\n", None),
])
def test_legacy_requests_spelled_otherwise_go_where_their_key_says(head, target):
    assert worker_at_accept(head, LIMITS, 2) == target


def plain_get(port: int, target: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 GET of ``target`` as written (escapes, absolute-form): status and body."""
    with socket.create_connection(("127.0.0.1", port), 10) as conn:
        conn.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_every_spelling_of_a_legacy_session_url_reaches_the_worker_that_holds_it(cluster):
    """A request the resource tree would serve must reach the session's process however the client
    spelled the URL; with workers it went to the master, which answered 404."""
    keys = [plain_get(cluster.port, b"/tcp")[1].strip() for _ in range(2)]
    assert sorted(key[:2] for key in keys) == [b"00", b"01"], keys  # one on each worker
    for key in keys:
        escaped = b"".join(b"%%%02X" % c for c in key[:2]) + key[2:]
        for target in (b"/tcp/" + key + b"/poll", b"/tcp/" + escaped + b"/poll", b"/%74cp/" + key + b"/poll",
                       b"http://127.0.0.1:%d/tcp/%s/poll" % (cluster.port, key)):
            assert plain_get(cluster.port, target)[0] == 200, target
    assert plain_get(cluster.port, b"/tcp/%30%30" + b"0" * 30 + b"/poll")[0] == 404  # no such session
    assert "Traceback" not in cluster.log()


LIMITS = Limits()
UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.mark.parametrize("head", [UPGRADE, UPGRADE.replace(b"/ws ", b"/ws/ "), UPGRADE.replace(b"/ws ", b"/ws?x=1 "),
                                  UPGRADE.replace(b"Upgrade: websocket", b"upgrade: WebSocket")])
def test_upgrade_heads_for_ws_are_recognised(head):
    assert worker_at_accept(head, LIMITS, 2) == WS


@pytest.mark.parametrize("head", [
    UPGRADE[:-2],  # not all there yet
    UPGRADE.replace(b"/ws ", b"/wsx "),
    UPGRADE.replace(b"/ws ", b"/ws/more "),
    UPGRADE.replace(b"GET", b"POST"),
    UPGRADE.replace(b"Upgrade: websocket\r\n", b""),
    UPGRADE.replace(b"Host: h\r\n", b""),  # HTTP/1.1 without Host: the HTTP layer answers 400
    UPGRADE.replace(b"Connection: Upgrade\r\n", b"Connection: Upgrade\r\n folded\r\n"),  # obs-fold: 400
    UPGRADE.replace(b"Host: h", b"Host : h"),
    UPGRADE.replace(b"\r\n\r\n", b"\r\nContent-Length: 5\r\n\r\nhello"),  # a body: not an upgrade to pass on
    b"GET /ws HTTP/2.0\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on a plain port
])
def test_anything_else_goes_the_ordinary_way(head):
    assert worker_at_accept(head, LIMITS, 2) is None


def sockjs_head(path: str, method: str = "POST", body: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def owner(session: str, count: int = 2) -> int:
    return zlib.crc32(session.encode()) % count


def session_for(worker: int, count: int = 2) -> str:
    """A fresh session id that the routing rule gives to ``worker``."""
    while True:
        session = uuid.uuid4().hex
        if owner(session, count) == worker:
            return session


@pytest.mark.parametrize("transport", ["xhr", "xhr_send", "xhr_streaming", "eventsource", "htmlfile", "jsonp",
                                       "jsonp_send"])
def test_sockjs_session_requests_go_to_the_worker_their_session_id_names(transport):
    for count in (1, 2, 3):
        for session in ("a", "b", "c", "0123456789abcdef"):
            head = sockjs_head(f"/sockjs/000/{session}/{transport}?c=x", body=b'["x"]')
            assert worker_at_accept(head, LIMITS, count) == owner(session, count)
    # an id sent percent-encoded is the same session, and so is any other spelling of its URL
    assert worker_at_accept(sockjs_head("/sockjs/000/%61%62/xhr"), LIMITS, 3) == owner("ab", 3)
    assert worker_at_accept(sockjs_head("/%73ockjs/000/ab/xh%72"), LIMITS, 3) == owner("ab", 3)
    assert worker_at_accept(sockjs_head("http://h/sockjs/000/ab/xhr"), LIMITS, 3) == owner("ab", 3)


def test_raw_sockjs_websockets_go_to_any_worker_and_the_rest_of_sockjs_stays():
    raw = UPGRADE.replace(b"/ws ", b"/sockjs/websocket ")
    assert worker_at_accept(raw, LIMITS, 2) == ANY
    assert worker_at_accept(UPGRADE.replace(b"/ws ", b"/sockjs/000/abc/websocket "), LIMITS, 2) == owner("abc")
    for path in ("/sockjs", "/sockjs/", "/sockjs/info", "/sockjs/iframe.html", "/sockjs/websocket",
                 "/sockjs/000/abc", "/sockjs/000/abc/nonsense", "/sockjs//abc/xhr", "/sockjs/000//xhr",
                 "/sockjs/000/abc/xhr/more", "/tcp/abc", "/static/Orbited.js"):
        assert worker_at_accept(sockjs_head(path, "GET"), LIMITS, 2) is None, path
    assert worker_at_accept(sockjs_head("/sockjs/000/abc/xhr")[:-2], LIMITS, 2) is None  # not all there


def sockjs_worker_sessions(orbited: OrbitedProcess) -> list[int]:
    return [w["sessions"] for w in orbited.status()["workers"]]


def sockjs_echo(conn: Connection, base: str, session: str, echo: int, text: bytes, host: str = "127.0.0.1") -> None:
    """Open a session, connect it to the echo backend and echo ``text``, all on ``conn``."""
    def post(url: str, body: str | None = None) -> bytes:
        conn.send_request("POST", url, body=body)
        response = conn.read_head()
        return read_body(conn, response, "POST")

    url = f"{base}/000/{session}"
    assert post(url + "/xhr") == b"o\n"
    assert post(url + "/xhr_send", json.dumps([f"{host}:{echo}"])) == b""
    assert post(url + "/xhr") == b'a["1"]\n'
    assert post(url + "/xhr_send", json.dumps([base64.b64encode(text).decode()])) == b""
    got = b""
    while len(got) < len(text):
        frame = post(url + "/xhr").decode().strip()
        if frame != "h":
            got += b"".join(base64.b64decode(m) for m in json.loads(frame[1:]))
    assert got == text


def test_each_sockjs_session_lives_in_the_worker_its_id_names(cluster):
    base = f"http://127.0.0.1:{cluster.port}/sockjs"
    for worker in (0, 1):
        for index in range(3):
            with Connection(base) as conn:
                sockjs_echo(conn, base, session_for(worker), cluster.echo, b"to worker %d" % index)
    # polling sessions stay open until session.ping_timeout; each worker reports its own
    assert wait_for(lambda: sockjs_worker_sessions(cluster) == [3, 3]), cluster.status()
    assert cluster.status()["sessions"]["by_transport"] == {"sockjs-xhr": 6}


def test_one_keep_alive_connection_carries_sessions_of_both_workers_and_the_masters_pages(cluster):
    """A browser reuses its connections for anything on the origin: a worker hands the
    connection back to the master for a request that is not its own, and the master passes
    it on again."""
    base = f"http://127.0.0.1:{cluster.port}/sockjs"
    with Connection(base) as conn:
        for index, worker in enumerate((0, 1, 1, 0)):
            sockjs_echo(conn, base, session_for(worker), cluster.echo, bytes(range(256)) * (index + 1))
            conn.send_request("GET", f"http://127.0.0.1:{cluster.port}/static/Orbited.js")
            response = conn.read_head()
            assert response.status == 200 and b"TCPSocket" in read_body(conn, response, "GET")
            conn.send_request("GET", base + "/info")
            response = conn.read_head()
            assert json.loads(read_body(conn, response, "GET"))["websocket"] is True
    handoffs = cluster.status()["worker_handoffs"]
    # the first request at accept; then each session's first request comes from the master's
    # pages (after parsing), and each page request is handed back by a worker
    assert handoffs == {"at_accept": 1, "after_parse": 3, "handed_back": 4}, handoffs
    assert wait_for(lambda: sockjs_worker_sessions(cluster) == [2, 2]), cluster.status()
    assert "Traceback" not in cluster.log()


def test_a_stream_and_the_sends_beside_it_meet_in_one_worker_however_they_arrive(cluster):
    """xhr_streaming on one connection; xhr_send on others: whole at accept, a head sent in
    two pieces (parsed by the master), and behind a request for another session."""
    base = f"http://127.0.0.1:{cluster.port}/sockjs"
    session = session_for(1)
    url = f"{base}/000/{session}"
    stream_conn = Connection(base, timeout=10)
    try:
        stream_conn.send_request("POST", url + "/xhr_streaming")
        assert stream_conn.read_head().status == 200
        stream_conn.read_chunk()  # prelude
        assert stream_conn.read_chunk() == b"o\n"
        assert request("POST", url + "/xhr_send", body=json.dumps([f"127.0.0.1:{cluster.echo}"])).status == 204
        assert stream_conn.read_chunk() == b'a["1"]\n'
        body = json.dumps([base64.b64encode(b"split").decode()]).encode()
        head = sockjs_head(url.split(str(cluster.port), 1)[1] + "/xhr_send", body=body)
        with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as sock:
            sock.sendall(head[:25])
            time.sleep(0.3)
            sock.sendall(head[25:])
            assert sock.recv(12) == b"HTTP/1.1 204"
        assert stream_conn.read_chunk() == b'a["c3BsaXQ="]\n'
        with Connection(base) as conn:
            sockjs_echo(conn, base, session_for(0), cluster.echo, b"first")
            conn.send_request("POST", url + "/xhr_send", body=json.dumps([base64.b64encode(b"then").decode()]))
            assert conn.read_head().status == 204
        assert stream_conn.read_chunk() == b'a["dGhlbg=="]\n'
    finally:
        stream_conn.close()
    handoffs = cluster.status()["worker_handoffs"]
    assert handoffs["after_parse"] >= 1 and handoffs["handed_back"] >= 1, handoffs


def test_a_dead_workers_sockjs_sessions_end_and_the_others_go_on(cluster):
    base = f"http://127.0.0.1:{cluster.port}/sockjs"
    doomed, survivor = f"{base}/000/{session_for(0)}", f"{base}/000/{session_for(1)}"
    for url in (doomed, survivor):
        assert request("POST", url + "/xhr").body == b"o\n"
        assert request("POST", url + "/xhr_send", body=json.dumps([f"127.0.0.1:{cluster.echo}"])).status == 204
        assert request("POST", url + "/xhr").body == b'a["1"]\n'
    before = worker_pids(cluster)
    os.kill(before[0], signal.SIGKILL)
    assert wait_for(lambda: len(worker_pids(cluster)) == 2 and worker_pids(cluster) != before), cluster.log()
    cluster.wait_workers(2)
    # the survivor's session is intact; the dead worker's is unknown to its successor
    assert request("POST", survivor + "/xhr_send", body=json.dumps(["b2s="])).status == 204
    assert request("POST", survivor + "/xhr").body == b'a["b2s="]\n'
    assert request("POST", doomed + "/xhr_send", body=json.dumps(["b2s="])).status == 404
    with Connection(base) as conn:
        sockjs_echo(conn, base, session_for(0), cluster.echo, b"after the restart")


def test_a_large_upload_for_another_worker_moves_whole_with_its_connection(cluster):
    """The bytes read behind a head move with the connection, however many: a 300 KB
    xhr_send on a connection a worker was serving goes back through the master to its
    session's worker and arrives whole."""
    base = f"http://127.0.0.1:{cluster.port}/sockjs"
    with Connection(base, timeout=20) as conn:
        sockjs_echo(conn, base, session_for(0), cluster.echo, b"small")
        sockjs_echo(conn, base, session_for(1), cluster.echo, os.urandom(300_000))
    assert cluster.status()["worker_handoffs"]["handed_back"] >= 1


def test_a_worker_whose_master_does_not_read_answers_503_and_loses_no_connection(cluster):
    """A worker hands a connection back over its channel to the master.  With the master
    stopped (SIGSTOP), the channel fills up with hand-backs, each carrying the bytes read behind
    its head; the next request for another worker then gets 503 at once instead of vanishing.
    Once the master runs again, every connection handed back before that is served, and the
    worker's warning, held meanwhile, reaches the log."""
    base = f"http://127.0.0.1:{cluster.port}/sockjs"
    mine, theirs = session_for(0), session_for(1)
    conns: list[Connection] = []

    def post(conn: Connection, session: str, body: str) -> None:
        conn.send_request("POST", f"{base}/000/{session}/xhr_send", body=body)

    def answer(conn: Connection) -> int:
        response = conn.read_head()
        read_body(conn, response, "POST")
        return response.status

    try:
        for _ in range(80):  # enough to fill a 2 MiB channel (1 MiB asked for, doubled by the kernel)
            conn = Connection(base, timeout=20)
            post(conn, mine, "[]")
            assert answer(conn) == 404  # served by worker 0 (no such session), and kept alive there
            conns.append(conn)
        os.kill(cluster.proc.pid, signal.SIGSTOP)
        body = json.dumps(["x" * 60_000])
        for conn in conns:
            post(conn, theirs, body)
        time.sleep(2.0)  # the refusals are immediate; the rest wait for the master
        readable, _, _ = select.select([conn.sock for conn in conns], [], [], 0)
        refused = [conn for conn in conns if conn.sock in readable]
        assert refused and len(refused) < len(conns), len(refused)
        for conn in refused:
            response = conn.read_head()
            assert response.status == 503 and b"cannot be served now" in read_body(conn, response, "POST")
    finally:
        os.kill(cluster.proc.pid, signal.SIGCONT)
    for conn in conns:
        if conn not in refused:
            assert answer(conn) == 404  # handed back, routed to worker 1, which has no such session
        conn.close()
    assert wait_for(lambda: "[worker 0] could not hand a connection back to the master" in cluster.log()), \
        cluster.log()[-3000:]
    with Connection(base) as conn:
        sockjs_echo(conn, base, session_for(1), cluster.echo, b"after the master caught up")


def test_a_worker_that_goes_silent_gets_no_new_connections_until_it_is_heard_again(cluster):
    """A worker stopped (SIGSTOP) or stuck still has a channel that takes thousands of connections
    no one would answer.  After 3 s without a word from it, new /ws connections go to the other
    worker; once it reports again, it takes its share again."""
    pid = worker_status(cluster, 0)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        assert wait_for(lambda: worker_status(cluster, 0)["silent_for"] >= 3.5)
        before = cluster.log().count("[worker 1] ws 127.0.0.1:")
        sockets = [open_socket(cluster.port, f"127.0.0.1:{cluster.echo}") for _ in range(4)]
        assert [answer for _, answer in sockets] == ["1"] * 4  # none waits for the stopped worker
        for ws, _ in sockets:
            ws.send(b"still here")
            assert ws.recv(10) == b"still here"
            ws.close()
        assert wait_for(lambda: cluster.log().count("[worker 1] ws 127.0.0.1:") >= before + 8)  # connect, close
        # new 0.7 sessions too: each is made, and echoes, on the worker that is heard from
        keys = [legacy_session(cluster.port, cluster.echo, "longpoll", b"still here") for _ in range(2)]
        assert [key[:2] for key in keys] == ["01", "01"], keys
        assert f"worker 0 (pid {pid}) has not been heard from" in cluster.log()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_for(lambda: "worker 0 is heard from again" in cluster.log()), cluster.log()[-2000:]
    assert wait_for(lambda: worker_status(cluster, 0)["silent_for"] < 2)
    served_by_0 = cluster.log().count("[worker 0] ws 127.0.0.1:")
    for _ in range(4):
        ws, answer = open_socket(cluster.port, f"127.0.0.1:{cluster.echo}")
        assert answer == "1"
        ws.close()
    assert wait_for(lambda: cluster.log().count("[worker 0] ws 127.0.0.1:") > served_by_0)


def test_a_master_that_was_held_up_does_not_take_its_workers_for_silent(cluster):
    """After the master itself was held up (stopped, or a long pause), its workers' reports
    are waiting in their channels, not read yet: they count, and the connections that queued
    up meanwhile go to the workers as usual."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        os.kill(cluster.proc.pid, signal.SIGSTOP)
        try:
            # connections first, then the workers' next reports: the listener is ready before the channels
            waiting = [pool.submit(open_socket, cluster.port, f"127.0.0.1:{cluster.echo}") for _ in range(6)]
            time.sleep(4.0)
        finally:
            os.kill(cluster.proc.pid, signal.SIGCONT)
        sockets = [future.result(20) for future in waiting]
    assert [answer for _, answer in sockets] == ["1"] * 6
    for ws, _ in sockets:
        ws.close()
    assert wait_for(lambda: cluster.log().count("[worker 0] ws 127.0.0.1:") >= 3
                    and cluster.log().count("[worker 1] ws 127.0.0.1:") >= 3)
    assert "has not been heard from" not in cluster.log()


def test_a_worker_silent_past_workers_timeout_is_killed_and_replaced():
    """As gunicorn's timeout: a worker stopped or stuck answers none of its sessions, so after
    workers.timeout without a word the master kills it and starts another."""
    with running(2, "workers.timeout = 4\n") as orbited:
        old = worker_status(orbited, 0)["pid"]
        os.kill(old, signal.SIGSTOP)  # SIGKILL ends a stopped process too
        assert wait_for(lambda: f"worker 0 (pid {old}) has not been heard from" in orbited.log()
                        and "(workers.timeout); killing it" in orbited.log(), 20), orbited.log()[-2000:]
        assert wait_for(lambda: old not in worker_pids(orbited) and len(worker_pids(orbited)) == 2, 15)
        orbited.wait_workers(2)
        assert wait_for(lambda: "worker 0 died (exit -9)" in orbited.log())
        for _ in range(4):  # the replacement takes its share
            ws, answer = open_socket(orbited.port, f"127.0.0.1:{orbited.echo}")
            assert answer == "1"
            ws.close()
        assert wait_for(lambda: "[worker 0] ws 127.0.0.1:" in orbited.log())


def proc_uid(pid: int) -> int:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
    return int(line.split()[1])


@pytest.mark.skipif(os.getuid() != 0, reason="privileges can only be dropped by a process started as root")
def test_workers_that_drop_to_nobody_serve_every_tcpsocket_transport():
    """Workers build everything before their privilege drop, as the master does: after it, this
    image's interpreter (under /root) cannot be read, and a worker that mounted /tcp after the
    drop died at start with ModuleNotFoundError, leaving the master to run with no workers."""
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    with running(2, "user = nobody\n", echo_host="localhost") as orbited:
        assert {proc_uid(pid) for pid in worker_pids(orbited)} == {nobody}, orbited.log()
        for _ in range(2):  # one on each worker
            ws, answer = open_socket(orbited.port, f"localhost:{orbited.echo}")
            with ws:
                assert answer == "1"
                ws.send(b"by name, after the drop")
                assert ws.recv(10) == b"by name, after the drop"
        base = f"http://127.0.0.1:{orbited.port}/sockjs"
        for worker in (0, 1):
            with Connection(base) as conn:
                sockjs_echo(conn, base, session_for(worker), orbited.echo, b"sockjs %d" % worker, host="localhost")
        for transport in ("xhrstream", "longpoll"):
            key = legacy_session(orbited.port, orbited.echo, transport, b"0.7 after the drop", host="localhost")
            assert key[:2] in ("00", "01")
        assert wait_for(lambda: orbited.status()["proxy"]["connections_total"] == 6), orbited.status()
        assert "Traceback" not in orbited.log() and "CRITICAL" not in orbited.log()


def test_a_worker_that_cannot_be_started_is_tried_again_later(tmp_path):
    """spawn's OSError (here: no such interpreter; after a privilege drop, one the master may no
    longer run) is logged and retried with the back-off, not a traceback that left the slot empty."""
    from twisted.internet.task import Clock

    from orbited.config import quickstart
    from orbited.context import ServerContext
    from orbited.workers import WorkerPool

    clock = Clock()
    pool = WorkerPool(ServerContext(quickstart(), clock), 1, [])
    pool.python = str(tmp_path / "no-such-python")
    with caplog_of("orbited.workers") as records:
        pool.spawn(0)
        clock.advance(1)  # the first retry, 1 s later, fails the same way
        clock.advance(1.5)
    assert pool.workers == [None]
    messages = [r.getMessage() for r in records]
    assert len(messages) == 2 and all(m.startswith("cannot start worker 0: ") for m in messages), messages
    assert messages[0].endswith("starting another in 1s") and messages[1].endswith("starting another in 2s")
    assert [call.getTime() for call in clock.getDelayedCalls()] == [3.0]  # tried at 1, next in 2: backing off
    for call in clock.getDelayedCalls():
        call.cancel()


@contextmanager
def caplog_of(name: str):
    import logging

    records: list = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def cluster_by_name():
    with running(2, "shutdown.timeout = 3\n", echo_host="127.0.0.1,localhost") as orbited:
        yield orbited


def test_status_counters_since_start_survive_a_worker_that_dies(cluster_by_name):
    """connections_total, bytes and lookups count since start: a worker replaced after SIGKILL
    took its counters with it, and the totals went back."""
    cluster = cluster_by_name
    for host in ("127.0.0.1", "localhost") * 2:
        ws, answer = open_socket(cluster.port, f"{host}:{cluster.echo}")
        with ws:
            assert answer == "1"
            ws.send(b"x" * 100)
            assert ws.recv(10) == b"x" * 100

    def proxy() -> dict:
        return cluster.status()["proxy"]

    assert wait_for(lambda: proxy()["connections_total"] == 4 and proxy()["bytes_to_backend"] == 400), proxy()
    before = proxy()
    old = worker_status(cluster, 0)["pid"]
    os.kill(old, signal.SIGKILL)
    assert wait_for(lambda: worker_status(cluster, 0).get("pid") not in (None, old)
                    and worker_status(cluster, 0).get("ready")), cluster.log()
    after = proxy()
    for key in ("connections_total", "bytes_to_backend", "bytes_from_backend", "lookups"):
        assert after[key] == before[key], (key, before, after)


def test_a_worker_out_of_descriptors_closes_what_it_cannot_take_and_goes_on():
    """Requests for worker 0's sessions reach it whatever it reports; once its descriptors run
    out, the ones it cannot take are closed, it says so once, and its own sessions carry on."""
    with running(2, files_limit=64) as orbited:
        sockets = [open_socket(orbited.port, f"127.0.0.1:{orbited.echo}") for _ in range(2)]  # one on each
        assert [answer for _, answer in sockets] == ["1", "1"]
        held = []
        for _ in range(80):  # idle keep-alive connections on worker 0, past its limit
            sock = socket.create_connection(("127.0.0.1", orbited.port), timeout=5)
            sock.sendall(sockjs_head(f"/sockjs/1/{session_for(0)}/xhr_send", body=b'["x"]'))
            held.append(sock)
        statuses = []
        for sock in held:
            try:
                statuses.append(sock.recv(12))
            except OSError:
                statuses.append(b"")
        assert b"HTTP/1.1 404" in statuses and b"" in statuses, statuses  # served, then closed
        for sock in held:
            sock.close()
        for ws, _ in sockets:
            ws.send(b"still here")
            assert ws.recv(10) == b"still here"
            ws.close()
        log = orbited.log()
    assert log.count("out of file descriptors (open-file limit 64): new connections are closed on hand-over") == 1, log
    assert "Traceback" not in log and "went away" not in log and "died" not in log, log



def test_a_client_that_resets_its_connection_at_once_costs_the_workers_nothing(cluster):
    """A request, then a TCP reset at once (SO_LINGER 0, or a browser closing with data unread):
    the worker handed that connection found it gone (getpeername: ENOTCONN), took the error for
    its channel's, and shut down with every session on it."""
    sockets = [open_socket(cluster.port, f"127.0.0.1:{cluster.echo}") for _ in range(2)]  # one on each
    before = sorted(worker_pids(cluster))
    for path in (b"/ws", b"/sockjs/0/abc/xhr") * 20:
        sock = socket.create_connection(("127.0.0.1", cluster.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        method = b"GET" if path == b"/ws" else b"POST"
        sock.sendall(method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n")
        sock.close()
    time.sleep(1)
    for ws, _ in sockets:
        ws.send(b"still here")
        assert ws.recv(10) == b"still here"
        ws.close()
    assert sorted(worker_pids(cluster)) == before
    log = cluster.log()
    assert "Unhandled Error" not in log and "went away" not in log and "died" not in log, log


def test_a_session_s_request_while_its_worker_is_away_is_503_not_a_session_in_the_master(cluster):
    """Served by the master instead, it made the session there; once the worker was back, its
    uploads got 404 and its polls a second 'o' from a second session."""
    os.kill(worker_status(cluster, 0)["pid"], signal.SIGKILL)
    url = f"http://127.0.0.1:{cluster.port}/sockjs/1/{session_for(0)}/xhr"
    answers = []
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline and 503 not in answers:
        try:
            answers.append(request("POST", url).status)
        except OSError:
            answers.append(0)  # handed to the worker as it died
    assert 503 in answers and 200 not in answers, answers
    assert wait_for(lambda: worker_status(cluster, 0).get("ready"))
    response = request("POST", url)
    assert (response.status, response.body) == (200, b"o\n")  # opened in its worker, the one place it lives


def test_a_doubled_slash_is_404_in_every_process(cluster):
    """'//tcp/<key>' was '/tcp/<key>' to the master's resource tree and 'not /tcp' to the routing:
    200 in one process, and with workers a 404 from the master, which does not hold the session."""
    key = request("GET", f"http://127.0.0.1:{cluster.port}/tcp").body.decode()
    assert key[:2] in ("00", "01"), key  # made by a worker
    for path in (f"/tcp/{key}/poll", f"//tcp/{key}/poll", "//system/status"):
        status = request("GET", f"http://127.0.0.1:{cluster.port}{path}").status
        assert status == (200 if path.startswith("/tcp") else 404), (path, status)
