"""/tcp (Orbited 0.7 wire protocol): echo round trips over xhrstream and longpoll, idle-session cost.

Measures, against an echo backend (the harness's Node ``backends.js``):
echo round trips per second with 50 sessions over ``xhrstream`` and over
``longpoll`` (one 32-byte message in flight per session, as a 0.7 page does:
one POST, the echo back on the downstream), and server memory (PSS) and file
descriptors per idle xhrstream session with 5,000 sessions open.

The issue states its targets against Orbited 0.7.11 (CPython 2.7, Twisted
20.3), so that is the peer the targets are judged on.  0.7.11 was never
released to PyPI: when a copy of its ``daemon/`` directory is on this machine
(``$ORBITED_0711_DAEMON``, else ``bench/.work/peers/orbited-0.7.11/daemon``;
bench/README.md says where to get one; it is never committed), the scenario
runs it with Twisted 20.3.0 for CPython 2.7 (pyenv) on the same backend with
the same client in the same run, alternating with Orbited, for the echo loads
and the idle sessions.  Without it, the targets fall back to the figures the
issue records for 0.7.11 on this machine kind, and the report says so.
Orbited 0.7.10, the last release on PyPI, with Twisted 10.2 (the newest that
still has ``reactor.listenWith``, which 0.7.10 calls), runs too when pyenv
has a 2.7, as a second same-run peer without targets.  None of this is ever
needed by CI.

The load client is in this file (``python -m bench.scenarios.legacy_comet
client JSON``): raw asyncio protocols with prebuilt requests, so that its cost
per message stays small next to the server's.  It prints one JSON object per
line, like the harness's Node clients.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH,
    PEERS,
    CpuWindow,
    JsonLines,
    ScenarioContext,
    SetupError,
    free_port,
    group_memory,
    node,
    node_modules,
    percentile,
    python27,
    python27_packages,
    wait_for_quiet,
    wait_port,
)

NAME = "legacy_comet"
BACKENDS = BENCH / "client" / "backends.js"

# Orbited 0.7.11 on CPython 2.7.18 + Twisted 20.3, same machine kind, same load shape, as the issue records it:
# the targets' baseline when 0.7.11 cannot run here.
PEER = "Orbited 0.7.11 (issue's figures)"
PEER_XHRSTREAM_RATE, PEER_XHRSTREAM_P99 = 2085.0, 53.0
PEER_LONGPOLL_RATE, PEER_LONGPOLL_P99 = 1281.0, 122.0
PEER_KB_PER_SESSION, PEER_FDS_PER_SESSION = 46.0, 3.0

PEER0711_DAEMON_ENV = "ORBITED_0711_DAEMON"
PEER0711_REQUIREMENTS = ("twisted==20.3.0", "zope.interface<5", "demjson==2.2.4", "morbid==0.8.7.3")
PEER0710_REQUIREMENTS = ("twisted==10.2.0", "zope.interface<5", "demjson==2.2.4", "morbid==0.8.7.3", "orbited==0.7.10")
# Twisted 16 dropped Request.received_headers, which 0.7.11 reads twice (the Host header when a session is
# made, tcp-encoding on each POST); this puts back the dict view that Twisted 10-15 gave, nothing else.
PEER0711_PRELUDE = ("import twisted.web.http as http; "
                    "http.Request.received_headers = property(lambda self: self.getAllHeaders()); ")
LOGGING_0711 = ("[loggers]\nkeys = root\n\n[handlers]\nkeys = console\n\n[formatters]\nkeys = generic\n\n"
                "[logger_root]\nlevel = WARN\nhandlers = console\n\n[handler_console]\nclass = StreamHandler\n"
                "args = (sys.stderr,)\nlevel = WARN\nformatter = generic\n\n[formatter_generic]\n"
                "format = %(asctime)s %(levelname)s [%(name)s] %(message)s\n")
# 0.7.10's own [logging] form, warnings and errors only.
LOGGING_0710 = "[logging]\ndebug =\ninfo =\naccess =\nwarn = STDERR\nerror = STDERR\nenabled.default = warn,error\n"


def this_run(version: str) -> str:
    """A 0.7 release's name in the report's peer column."""
    return f"Orbited {version} (this run)"


def run_key(version: str) -> str:
    """What names a 0.7 release's rows in raw.json: "0.7.11" -> "0711"."""
    return version.replace(".", "")


@dataclass(frozen=True)
class OldOrbited:
    """An Orbited 0.7 release on CPython 2.7, run as a same-run peer."""

    version: str
    pythonpath: str
    prelude: str
    logging: str

    @property
    def key(self) -> str:
        return run_key(self.version)


def server_label(old: OldOrbited | None = None, reactor: str | None = None) -> str:
    """The server's name in logs: Orbited (with a non-default reactor), or a 0.7 release."""
    if old is not None:
        return f"orbited{old.key}"
    return f"orbited-{reactor}" if reactor else "orbited"


def orbited_0711() -> OldOrbited:
    """0.7.11 from a copy of its daemon/ directory (not on PyPI) with Twisted 20.3 from PyPI."""
    given = os.environ.get(PEER0711_DAEMON_ENV)
    daemon = Path(given) if given else PEERS / "orbited-0.7.11" / "daemon"
    if not (daemon / "orbited" / "start.py").is_file():
        raise SetupError(f"no Orbited 0.7.11 sources at {daemon} (set {PEER0711_DAEMON_ENV}; see bench/README.md)")
    lib = python27_packages("orbited-0.7.11", PEER0711_REQUIREMENTS)
    return OldOrbited("0.7.11", f"{daemon}{os.pathsep}{lib}", PEER0711_PRELUDE, LOGGING_0711)


def orbited_0710() -> OldOrbited:
    lib = python27_packages("orbited-0.7.10", PEER0710_REQUIREMENTS)
    return OldOrbited("0.7.10", str(lib), "", LOGGING_0710)


@dataclass(frozen=True)
class Plan:
    sessions: int = 50
    size: int = 32
    warmup: float = 3.0
    seconds: float = 10.0
    idle_sessions: int = 5000
    repeats: int = 3  # echo runs per server and transport, alternating servers; the median run is reported

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        return cls(warmup=1.0, seconds=3.0, idle_sessions=1000, repeats=1) if quick else cls()


# =========================================================================== the load client
#
# Everything below runs in the client process.  It speaks just enough HTTP/1.1
# for the answers of both servers (Content-Length and chunked bodies, chunked streams).


class Chunked:
    """Incremental decoder of a chunked body; ``done`` once the last (empty) chunk came."""

    __slots__ = ("buffer", "done", "left")

    def __init__(self) -> None:
        self.buffer = b""
        self.left = -1  # bytes left in the current chunk, -1 when a size line is due
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buffer = self.buffer + data
        out = []
        while buffer and not self.done:
            if self.left < 0:
                end = buffer.find(b"\r\n")
                if end < 0:
                    break
                line = buffer[:end]
                buffer = buffer[end + 2:]
                if not line:
                    continue  # the CRLF after a chunk
                self.left = int(line.split(b";")[0], 16)
                if self.left == 0:
                    self.done = True  # no trailers from either server: the final CRLF follows
                    buffer = buffer[2:]
                continue
            take = buffer[: self.left]
            out.append(take)
            self.left -= len(take)
            buffer = buffer[len(take):]
            if self.left == 0:
                self.left = -1
        self.buffer = buffer
        return b"".join(out)


def packets(data: bytes, state: list) -> list[tuple[int, bytes, bytes]]:
    """Downstream packets (id, name, last argument) from stream bytes; ``state`` = [buffer, args]."""
    buffer = state[0] + data
    args = state[1]
    out = []
    pos = 0
    size = len(buffer)
    while pos < size:
        if not args:
            while pos < size and buffer[pos] in b" x":
                pos += 1
            if pos >= size:
                break
        comma = buffer.find(b",", pos)
        if comma < 0:
            break
        end = comma + 1 + int(buffer[pos + 1:comma])
        if end > size:
            break
        args.append(buffer[comma + 1:end])
        last = buffer[pos] == 0x30
        pos = end
        if last:
            out.append((int(args[0]) if args[0].isdigit() else 0, args[1], args[-1]))
            args = []
    state[0] = buffer[pos:]
    state[1] = args
    return out


class Connection(asyncio.Protocol):
    """A raw HTTP/1.1 client connection, one request at a time.

    A response resolves the request's future with (status, body), whether its
    body has a Content-Length or is chunked (Orbited 0.7 answers everything
    chunked).  A request made with ``stream=True`` resolves with the status as
    soon as the head is in, and its chunked body goes to ``on_stream`` piece
    by piece (the xhrstream downstream).
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.head_done = False
        self.streaming = False
        self.length = -1
        self.chunked: Chunked | None = None
        self.body: list[bytes] = []
        self.waiter: asyncio.Future | None = None
        self.on_stream = None  # callback(bytes) for a streamed body
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def request(self, raw: bytes, stream: bool = False) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.head_done = False
        self.streaming = stream
        self.transport.write(raw)
        return self.waiter

    def _resolve(self, result: Any) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    def _chunks(self, data: bytes) -> None:
        decoded = self.chunked.feed(data)  # type: ignore[union-attr]
        if self.streaming:
            self.on_stream(decoded)
            return
        self.body.append(decoded)
        if self.chunked.done:  # type: ignore[union-attr]
            body, self.body = b"".join(self.body), []
            self.head_done = False
            self.chunked = None
            self._resolve((self.status, body))

    def data_received(self, data: bytes) -> None:
        if self.head_done and self.chunked is not None:
            self._chunks(data)
            return
        self.buffer += data
        if not self.head_done:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            self.buffer = self.buffer[end + 4:]
            self.head_done = True
            self.status = int(head[9:12])
            marker = head.find(b"content-length:")
            if marker >= 0:
                line_end = head.find(b"\r\n", marker)
                self.length = int(head[marker + 15: line_end if line_end > 0 else len(head)])
                self.chunked = None
            else:
                self.length = -1
                self.chunked = Chunked()
                if self.streaming:
                    self._resolve(self.status)
                rest, self.buffer = self.buffer, b""
                if rest:
                    self._chunks(rest)
                return
        if self.length >= 0 and len(self.buffer) >= self.length:
            body = self.buffer[: self.length]
            self.buffer = self.buffer[self.length:]
            self.head_done = False
            self._resolve((self.status, body))


async def connect(host: str, port: int) -> Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Connection, host, port)
    return protocol


def get(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def post(path: str, host: str, body: bytes) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


class Session:
    """One 0.7 session as a page holds it: an upstream connection and a downstream one."""

    def __init__(self, host: str, port: int, transport: str, target: str):
        self.host, self.port, self.transport, self.target = host, port, transport, target
        self.hostport = f"{host}:{port}"
        self.last_id = 0
        self.up_id = 0
        self.state: list = [b"", []]
        self.expect: asyncio.Future | None = None
        self.waiting = 0
        self.got = b""

    async def open(self, keep_upstream: bool = True) -> None:
        self.up = await connect(self.host, self.port)
        status, key = await self.up.request(get(f"/tcp?nocache={random.random()}", self.hostport))
        if status != 200:
            raise RuntimeError(f"GET /tcp: {status}")
        self.key = key.decode()
        self.down = await connect(self.host, self.port)
        self.down.on_stream = self.stream_data
        self.opened = asyncio.get_running_loop().create_future()
        self.poll()
        await self.opened
        reply = await self.roundtrip(f"{self.target}\n".encode(), expect=1)
        if reply != b"1":
            raise RuntimeError(f"handshake answered {reply!r}")
        if not keep_upstream:
            self.up.transport.close()

    def poll(self) -> None:
        ack = f"?ack={self.last_id}" if self.last_id else ""
        waiter = self.down.request(get(f"/tcp/{self.key}/{self.transport}{ack}", self.hostport),
                                   stream=self.transport == "xhrstream")
        if self.transport == "longpoll":
            waiter.add_done_callback(self.poll_done)

    def poll_done(self, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        status, body = future.result()
        if status != 200:
            return
        self.stream_data(body)
        self.poll()

    def stream_data(self, data: bytes) -> None:
        for packet_id, name, arg in packets(data, self.state):
            self.last_id = max(self.last_id, packet_id)
            if name == b"open" and not self.opened.done():
                self.opened.set_result(None)
            elif name == b"data":
                self.got += base64.b64decode(arg)
                if self.expect is not None and len(self.got) >= self.waiting:
                    expect, self.expect = self.expect, None
                    got, self.got = self.got, b""
                    expect.set_result(got)
            elif name == b"ping" and self.transport == "xhrstream":
                self.up_id += 1
                body = b"1%d,%d14,ping00," % (len(str(self.up_id)), self.up_id)
                asyncio.ensure_future(self.up.request(
                    post(f"/tcp/{self.key}?ack={self.last_id}", self.hostport, body)))

    async def roundtrip(self, payload: bytes, expect: int = 0) -> bytes:
        """POST ``payload``; the bytes that come back, once there are ``expect`` (default: as many)."""
        self.up_id += 1
        data = base64.b64encode(payload)
        ident = b"%d" % self.up_id
        body = b"1%d,%s14,data0%d,%s" % (len(ident), ident, len(data), data)
        self.waiting = expect or len(payload)
        self.expect = echoed = asyncio.get_running_loop().create_future()
        status, _ = await self.up.request(post(f"/tcp/{self.key}?ack={self.last_id}", self.hostport, body))
        if status != 200:
            raise RuntimeError(f"POST: {status}")
        return await asyncio.wait_for(echoed, 30)


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def echo_client(config: dict) -> None:
    host, port = "127.0.0.1", config["port"]
    sessions = [Session(host, port, config["transport"], config["target"]) for _ in range(config["n"])]
    await asyncio.gather(*(s.open() for s in sessions))
    emit("open", sessions=len(sessions))
    payload = b"m" * config["size"]
    start = time.monotonic()
    measure_from = start + config["warmup"]
    measure_to = measure_from + config["duration"]
    counts = [0] * len(sessions)
    latencies: list[float] = []
    started = False

    async def loop(index: int, session: Session) -> None:
        nonlocal started
        while True:
            t0 = time.monotonic()
            if t0 >= measure_to:
                return
            got = await session.roundtrip(payload)
            t1 = time.monotonic()
            if got != payload:
                raise RuntimeError(f"echo mismatch: {got!r}")
            if t0 >= measure_from:
                if not started:
                    started = True
                    emit("measure-start")
                counts[index] += 1
                latencies.append((t1 - t0) * 1000)

    await asyncio.gather(*(loop(i, s) for i, s in enumerate(sessions)))
    latencies.sort()
    emit("measure-end", roundTrips=sum(counts), seconds=config["duration"],
         p50=round(percentile(latencies, 50), 2), p99=round(percentile(latencies, 99), 2),
         perSessionMin=min(counts), perSessionMax=max(counts))


async def hold_client(config: dict) -> None:
    host, port = "127.0.0.1", config["port"]
    sessions: list[Session] = []
    limit = asyncio.Semaphore(100)

    async def open_one() -> None:
        async with limit:
            session = Session(host, port, "xhrstream", config["target"])
            await session.open(keep_upstream=False)
            sessions.append(session)

    started = time.monotonic()
    await asyncio.gather(*(open_one() for _ in range(config["n"])))
    emit("step", open=len(sessions), seconds=round(time.monotonic() - started, 2))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for session in sessions:
        session.down.transport.close()
    emit("closed")


def client_main(argv: list[str]) -> None:
    config = json.loads(argv[0])
    # uvloop (a `bench` extra) roughly halves the client's CPU per round trip, which
    # shares the two cores with the server it measures; plain asyncio otherwise.
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(echo_client(config) if config["mode"] == "echo" else hold_client(config))


# =========================================================================== the scenario


def orbited_config(workdir: Path, port: int, backend: int, reactor: str | None = None) -> Path:
    config = workdir / "orbited.cfg"
    # Pings far apart so that idle sessions stay idle while they are measured.
    chosen = f"reactor = {reactor}\n" if reactor else ""
    config.write_text(f"[global]\n{chosen}user = root\nproxy.max_sessions = 0\nsession.ping_interval = 300\n"
                      f"session.ping_timeout = 60\n\n[listen]\nhttp://127.0.0.1:{port}\n\n"
                      f"[access]\n* -> 127.0.0.1:{backend}\n")
    return config


def fresh_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... for repeated runs of one measurement."""
    path, index = base, 1
    while path.exists():
        index += 1
        path = base.with_name(f"{base.name}-{index}")
    path.mkdir()
    return path


def orbited07_config(workdir: Path, port: int, backend: int, old: OldOrbited) -> Path:
    config = workdir / "orbited07.cfg"
    # 0.7 refuses to start as root without a user; its own logging form, warnings and errors only.
    config.write_text(f"[global]\nreactor = epoll\nuser = root\nsession.ping_interval = 300\n"
                      f"session.ping_timeout = 60\n\n[listen]\nhttp://127.0.0.1:{port}\n\n"
                      f"[access]\n* -> 127.0.0.1:{backend}\n\n{old.logging}")
    return config


def start_server(ctx: ScenarioContext, backend: int, tag: str, old: OldOrbited | None = None,
                 reactor: str | None = None):
    """A fresh Orbited (``reactor``: its [global] reactor), or a fresh ``old`` 0.7, on a free port;
    (process, port)."""
    busy = wait_for_quiet()
    if busy > 0.3:
        ctx.log(f"machine still busy ({busy:.2f} cores used by other processes); measuring anyway")
    port = free_port()
    env = None
    if old is None:
        workdir = fresh_dir(ctx.workdir / f"orbited-{tag}")
        argv = [*ctx.orbited, "--config", str(orbited_config(workdir, port, backend, reactor))]
    else:
        workdir = fresh_dir(ctx.workdir / f"orbited{old.key}-{tag}")
        launch = (f"import sys; {old.prelude}from orbited.start import main; "
                  "sys.argv = ['orbited', '--config', sys.argv[1]]; main()")
        argv = [str(python27()), "-c", launch, str(orbited07_config(workdir, port, backend, old))]
        env = {"PYTHONPATH": old.pythonpath}
    proc = ctx.procs.start(argv, log=workdir / "server.log", cwd=workdir, env=env)
    wait_port(port, proc=proc)
    return proc, port


def start_client(ctx: ScenarioContext, tag: str, **config: Any) -> JsonLines:
    argv = [ctx.python, "-m", "bench.scenarios.legacy_comet", "client", json.dumps(config)]
    proc = ctx.procs.start(argv, stdout_pipe=True, stdin=config.get("mode") == "hold",
                           log=ctx.workdir / f"client-{tag}.log", cwd=ctx.repo)
    return JsonLines(proc, f"legacy client ({tag})")


def measure_echo(ctx: ScenarioContext, plan: Plan, backend: int, backend_pid: int, transport: str,
                 old: OldOrbited | None = None, reactor: str | None = None) -> dict:
    """Orbited (``reactor``: its [global] reactor), or the ``old`` 0.7, under the echo load."""
    label = server_label(old, reactor)
    proc, port = start_server(ctx, backend, f"echo-{transport}", old, reactor)
    try:
        lines = start_client(ctx, f"echo-{transport}-{label}", mode="echo", port=port, transport=transport,
                             target=f"127.0.0.1:{backend}", n=plan.sessions, size=plan.size,
                             warmup=plan.warmup, duration=plan.seconds)
        lines.expect("open", 120)
        window = CpuWindow({"server": proc.pid, "client": lines.proc.pid, "backend": backend_pid})
        lines.expect("measure-start", plan.warmup + 30)
        window.start()
        end = lines.expect("measure-end", plan.seconds + 60)
        window.stop()
        lines.proc.wait(30)
        rate = end["roundTrips"] / end["seconds"]
        per_rt = {name: window.used[name] / max(1, end["roundTrips"]) * 1e6 for name in window.used}
        ctx.log(f"{label} {transport} x{plan.sessions}: {rate:,.0f} round trips/s, p50 {end['p50']} ms, p99 "
                f"{end['p99']} ms, server {window.cores('server'):.2f} cores ({per_rt['server']:.0f} µs/rt), "
                f"client {window.cores('client'):.2f} cores ({per_rt['client']:.0f} µs/rt)")
        return {"rate": rate, "p50_ms": end["p50"], "p99_ms": end["p99"],
                "per_session_min": end["perSessionMin"], "per_session_max": end["perSessionMax"],
                "cores": {name: window.cores(name) for name in window.used}, "us_per_round_trip": per_rt,
                "others_cores": window.others / window.seconds}
    finally:
        ctx.procs.stop(proc)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def measure_idle(ctx: ScenarioContext, plan: Plan, backend: int, old: OldOrbited | None = None) -> dict:
    label = server_label(old)
    proc, port = start_server(ctx, backend, "idle", old)
    try:
        warm = start_client(ctx, "idle-warm", mode="hold", port=port, target=f"127.0.0.1:{backend}", n=1)
        warm.expect("step", 60)
        warm.send("next")
        warm.expect("closed", 30)
        warm.proc.wait(30)
        time.sleep(1.0)
        base_memory, base_fds = group_memory(proc.pid), fd_count(proc.pid)
        lines = start_client(ctx, "idle", mode="hold", port=port, target=f"127.0.0.1:{backend}",
                             n=plan.idle_sessions)
        step = lines.expect("step", 900)
        time.sleep(2.0)
        memory, fds = group_memory(proc.pid), fd_count(proc.pid)
        lines.send("next")
        lines.expect("closed", 120)
        lines.proc.wait(60)
        opened = step["open"]
        result = {
            "open": opened, "seconds": step["seconds"],
            "bytes_per_session": (memory.pss - base_memory.pss) / opened,
            "rss_bytes_per_session": (memory.rss - base_memory.rss) / opened,
            "fds_per_session": (fds - base_fds) / opened,
            "base_pss": base_memory.pss, "pss": memory.pss, "base_fds": base_fds, "fds": fds,
        }
        ctx.log(f"{label} idle: {opened} xhrstream sessions in {step['seconds']} s: "
                f"{result['bytes_per_session'] / 1000:.1f} KB and {result['fds_per_session']:.2f} fds each")
        return result
    finally:
        ctx.procs.stop(proc)


def median_run(done: list[dict]) -> dict:
    """The run with the median rate, plus every run's rate (this VM's speed drifts between runs)."""
    return {**sorted(done, key=lambda run: run["rate"])[len(done) // 2], "rates": [run["rate"] for run in done]}


def old_peers(ctx: ScenarioContext) -> list[OldOrbited]:
    """The 0.7 releases that can run here, 0.7.11 (the targets' peer) first."""
    found = []
    for make in (orbited_0711, orbited_0710):
        try:
            found.append(make())
        except SetupError as exc:
            ctx.log(f"no same-run peer: {exc}")
    return found


def run(ctx: ScenarioContext) -> dict:
    plan = Plan.for_run(ctx.quick)
    node_modules()
    backend_proc = ctx.procs.start([node(), str(BACKENDS)], stdout_pipe=True, log=ctx.workdir / "backends.log")
    backend = JsonLines(backend_proc, "backends").next(30)["echo"]
    olds = old_peers(ctx)
    data: dict[str, Any] = {}
    for transport in ("xhrstream", "longpoll"):
        # This VM's speed drifts by a third within minutes: alternate the servers, keep each one's median run.
        runs: dict[str, list[dict]] = {transport: [], **{f"{transport}{old.key}": [] for old in olds}}
        for _ in range(plan.repeats):
            runs[transport].append(measure_echo(ctx, plan, backend, backend_proc.pid, transport))
            for old in olds:
                runs[f"{transport}{old.key}"].append(measure_echo(ctx, plan, backend, backend_proc.pid, transport,
                                                                  old))
        for key, done in runs.items():
            data[key] = median_run(done)
    data["idle"] = measure_idle(ctx, plan, backend)
    for old in olds:
        if old.version == "0.7.11":
            data[f"idle{old.key}"] = measure_idle(ctx, plan, backend, old)
    (ctx.workdir / "raw.json").write_text(json.dumps(data, indent=1))
    return build_result(plan, data)


def build_result(plan: Plan, data: dict[str, Any]) -> dict:
    x, lp, idle = data["xhrstream"], data["longpoll"], data["idle"]
    ran_0711 = "xhrstream0711" in data
    ran_0710 = "xhrstream0710" in data

    def metric(name: str, unit: str, ours: float, theirs: float, better: str, target: str = "",
               peer_name: str = PEER) -> dict:
        return {"name": name, "unit": unit, "orbited": ours, "peer": theirs, "peer_name": peer_name,
                "better": better, "target": target}

    def baseline(transport: str, field: str, recorded: float) -> tuple[float, str]:
        """0.7.11's figure from this run when it ran here, else the one the issue records."""
        if ran_0711:
            return data[f"{transport}0711"][field], this_run("0.7.11")
        return recorded, PEER

    n = plan.sessions
    metrics = []
    for transport, ours, rate, p99 in (("xhrstream", x, PEER_XHRSTREAM_RATE, PEER_XHRSTREAM_P99),
                                       ("longpoll", lp, PEER_LONGPOLL_RATE, PEER_LONGPOLL_P99)):
        theirs, name = baseline(transport, "rate", rate)
        metrics.append(metric(f"echo round trips, {n} sessions, {transport}", "round trips/s", ours["rate"],
                              theirs, "higher", "≥ 3x Orbited 0.7.11", name))
        theirs, name = baseline(transport, "p99_ms", p99)
        metrics.append(metric(f"echo round trip p99, {n} sessions, {transport}", "ms", ours["p99_ms"], theirs,
                              "lower", peer_name=name))
    if "idle0711" in data:
        old_idle, idle_peer = data["idle0711"], this_run("0.7.11")
        old_kb, old_fds = old_idle["bytes_per_session"] / 1000, old_idle["fds_per_session"]
    else:
        old_kb, old_fds, idle_peer = PEER_KB_PER_SESSION, PEER_FDS_PER_SESSION, PEER
    metrics += [
        metric(f"server memory per idle xhrstream session ({idle['open']:,} open)", "KB",
               idle["bytes_per_session"] / 1000, old_kb, "lower", "≤ 20 KB", idle_peer),
        metric(f"server file descriptors per idle xhrstream session ({idle['open']:,} open)", "fds",
               idle["fds_per_session"], old_fds, "lower", "≤ 2", idle_peer),
    ]
    if ran_0711:
        for transport, ours in (("xhrstream", x), ("longpoll", lp)):
            metrics.append(metric(f"server CPU per round trip, {transport}", "µs",
                                  ours["us_per_round_trip"]["server"],
                                  data[f"{transport}0711"]["us_per_round_trip"]["server"], "lower",
                                  peer_name=this_run("0.7.11")))
    if ran_0710:
        for transport, ours in (("xhrstream", x), ("longpoll", lp)):
            d = data[f"{transport}0710"]
            metrics.append(metric(f"echo round trips, {n} sessions, {transport}, vs 0.7.10", "round trips/s",
                                  ours["rate"], d["rate"], "higher", peer_name=this_run("0.7.10")))
            metrics.append(metric(f"echo round trip p99, {n} sessions, {transport}, vs 0.7.10", "ms",
                                  ours["p99_ms"], d["p99_ms"], "lower", peer_name=this_run("0.7.10")))
    if ran_0711:
        judged = ("The targets are judged on Orbited 0.7.11, the issue's peer, run in this run: CPython 2.7.18, "
                  "Twisted 20.3.0, epoll reactor, from a copy of its daemon/ directory (never committed; "
                  "bench/README.md), with one shim: Twisted 16 dropped Request.received_headers, which 0.7.11 "
                  "reads, so the launcher puts back the dict view Twisted 10-15 gave. "
                  f"The issue's recorded figures for it, for comparison: {PEER_XHRSTREAM_RATE:,.0f} round trips/s "
                  f"on xhrstream, {PEER_LONGPOLL_RATE:,.0f} on longpoll, {PEER_KB_PER_SESSION:.0f} KB and "
                  f"{PEER_FDS_PER_SESSION:.0f} descriptors per session.")
    else:
        judged = ("Orbited 0.7.11 could not run here (no copy of its sources; bench/README.md), so the targets "
                  "are judged on its figures as the issue records them for this machine kind (CPython 2.7.18, "
                  "Twisted 20.3).")
    if ran_0710:
        judged += (" Orbited 0.7.10 (PyPI; CPython 2.7, Twisted 10.2.0, epoll reactor) ran too, on the same "
                   "backend with the same client; its figures are the 'vs 0.7.10' rows, without targets.")
    notes = [
        judged,
        (f"Load: {n} sessions, one {plan.size}-byte message in flight each (POST one data packet, wait for the "
         f"echo on the downstream), {plan.seconds:.0f} s after {plan.warmup:.0f} s warm-up; the Node echo "
         "backend of `bench/client/backends.js`; the client is the raw-asyncio one in this file (it speaks "
         "every server's HTTP: 0.7 answers everything chunked). "
         f"{plan.repeats} run(s) per server and transport, alternating servers; each figure is the server's "
         "median run, since this VM's speed drifts by up to a third within minutes."),
    ]
    runs = [(label, d) for label, d in (("xhrstream", x), ("longpoll", lp))]
    for version in ("0.7.11", "0.7.10"):
        runs += [(f"{transport}, Orbited {version}", data[f"{transport}{run_key(version)}"])
                 for transport in ("xhrstream", "longpoll") if f"{transport}{run_key(version)}" in data]
    for label, d in runs:
        us = d["us_per_round_trip"]
        notes.append(
            f"{label}: {d['rate']:,.0f} round trips/s (median of runs: "
            f"{', '.join(f'{rate:,.0f}' for rate in d['rates'])}), p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms; server "
            f"{d['cores']['server']:.2f} cores ({us['server']:.0f} µs CPU per round trip), client "
            f"{d['cores']['client']:.2f} cores ({us['client']:.0f} µs), backend {d['cores']['backend']:.2f} "
            f"cores, other processes {d['others_cores']:.2f} cores; sessions did "
            f"{d['per_session_min']}-{d['per_session_max']} round trips each.")
    for label, d in (("Orbited", idle), ("Orbited 0.7.11", data.get("idle0711"))):
        if d is None:
            continue
        notes.append(
            f"Idle sessions, {label}: {d['open']:,} xhrstream sessions, each a live stream plus a proxied "
            f"backend connection (upstream connections closed after the handshake, as an idle page's would be), "
            f"opened in {d['seconds']} s. PSS of the server process after minus before, divided by the sessions: "
            f"{d['bytes_per_session'] / 1000:.1f} KB (RSS {d['rss_bytes_per_session'] / 1000:.1f} KB); "
            f"descriptors {d['base_fds']} -> {d['fds']}.")
    return {"scenario": NAME, "title": "/tcp Orbited 0.7 wire protocol vs Orbited 0.7",
            "metrics": metrics, "notes": notes,
            "series": {"echo": {"xhrstream": x, "longpoll": lp}, "idle": idle}, "raw": data}


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "client":
    client_main(sys.argv[2:])
