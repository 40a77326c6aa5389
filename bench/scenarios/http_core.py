"""The HTTP layer itself: keep-alive POSTs to a live /tcp session, lean engine vs twisted.web, with wrk.

What every Comet upstream message pays: ``POST /tcp/<key>?ack=0`` with a
0.7 ping packet as the body and ``Content-Type: text/plain;charset=UTF-8``
(what a browser's XHR sends), on keep-alive connections, answered ``OK`` by
the real /tcp resource.  The same Orbited code runs twice, once per
``[global] http.engine`` (``lean``: orbited.http; ``twisted``: twisted.web's
Site), both servers up at once and measured in alternating rounds so that
the machine's background load falls on both alike; the median round of each
is reported.  The body repeats one packet id, so after the first POST the
session drops it as a duplicate: the backend sees nothing, and what is
measured is HTTP plus the resource.

Load: ``wrk -t1 -c20`` (Debian package ``wrk``; ``.ci/test-deps`` installs
it) with a Lua script that POSTs and prints its summary as JSON.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    CpuWindow,
    ScenarioContext,
    SetupError,
    free_port,
    wait_for_quiet,
    wait_port,
)
from bench.profile import Profiler
from orbited.transports.legacy.codec import encode_packets

NAME = "http_core"
ENGINES = ("lean", "twisted")
PEER = "twisted.web (http.engine = twisted)"

BODY = encode_packets([[b"2", b"ping"]])
SCRIPT = """
wrk.method = "POST"
wrk.body = "%s"
wrk.headers["Content-Type"] = "text/plain;charset=UTF-8"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %%d, "duration_us": %%d, "bytes": %%d, "status_errors": %%d, ' ..
    '"connect_errors": %%d, "read_errors": %%d, "write_errors": %%d, "timeouts": %%d, ' ..
    '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "mean_us": %%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


@dataclass(frozen=True)
class Plan:
    connections: int = 20
    warmup: float = 2.0
    seconds: float = 10.0
    rounds: int = 3

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        return cls(warmup=1.0, seconds=3.0, rounds=1) if quick else cls()


def wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SetupError("wrk is not installed: apt-get install wrk (or run .ci/test-deps)")
    return path


@dataclass
class Engine:
    name: str
    proc: Any
    port: int
    key: str
    profiler: Profiler | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tcp/{self.key}?ack=0"


def start(ctx: ScenarioContext, engine: str, backend: int) -> Engine:
    workdir = ctx.workdir / f"orbited-{engine}"
    workdir.mkdir()
    port = free_port()
    config = workdir / "orbited.cfg"
    # Pings far apart: the session must stay up on POSTs alone.
    config.write_text(f"[global]\nuser = root\nhttp.engine = {engine}\nsession.ping_interval = 300\n"
                      f"session.ping_timeout = 300\n\n[listen]\nhttp://127.0.0.1:{port}\n\n"
                      f"[access]\n* -> 127.0.0.1:{backend}\n")
    proc = ctx.procs.start([*ctx.orbited, "--config", str(config)], log=workdir / "server.log", cwd=workdir)
    wait_port(port, proc=proc)
    base = f"http://127.0.0.1:{port}/tcp"
    with urllib.request.urlopen(base, timeout=10) as answer:
        key = answer.read().decode()
    handshake = encode_packets([[b"1", b"data", base64.b64encode(f"127.0.0.1:{backend}".encode())]])
    post = urllib.request.Request(f"{base}/{key}?ack=0", data=handshake, method="POST")
    with urllib.request.urlopen(post, timeout=10) as answer:
        if answer.read() != b"OK":
            raise RuntimeError(f"{engine}: the handshake POST was not answered OK")
    found = Engine(engine, proc, port, key)
    if ctx.profile:
        found.profiler = Profiler(ctx, proc.pid, workdir / "profile.raw")
    return found


def run_wrk(ctx: ScenarioContext, engine: Engine, script: Path, seconds: float, connections: int) -> dict:
    argv = [wrk(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
            "-s", str(script), engine.url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    line = next((line for line in done.stdout.splitlines() if line.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}")
    summary = json.loads(line)
    errors = sum(summary[k] for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts"))
    if errors:
        raise RuntimeError(f"{engine.name}: wrk saw {errors} errors: {summary}")
    return summary


def measure(ctx: ScenarioContext, plan: Plan, engine: Engine, script: Path, round_no: int) -> dict:
    busy = wait_for_quiet()
    run_wrk(ctx, engine, script, plan.warmup, plan.connections)
    window = CpuWindow({"server": engine.proc.pid})
    window.start()
    summary = run_wrk(ctx, engine, script, plan.seconds, plan.connections)
    window.stop()
    seconds = summary["duration_us"] / 1e6
    rate = summary["requests"] / seconds
    result = {
        "rate": rate,
        "p50_ms": summary["p50_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "server_cores": window.cores("server"),
        "server_us_per_request": window.used["server"] / max(1, summary["requests"]) * 1e6,
        "others_cores": window.others / window.seconds if window.seconds else 0.0,
        "busy_before": busy,
        "requests": summary["requests"],
    }
    ctx.log(f"round {round_no} {engine.name}: {rate:,.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
            f"p99 {result['p99_ms']:.2f} ms, server {result['server_cores']:.2f} cores "
            f"({result['server_us_per_request']:.0f} µs/request), others {result['others_cores']:.2f} cores")
    return result


def median_round(rounds: list[dict]) -> dict:
    ordered = sorted(rounds, key=lambda r: r["rate"])
    return ordered[len(ordered) // 2]


def run(ctx: ScenarioContext) -> dict:
    plan = Plan.for_run(ctx.quick)
    wrk()
    script = ctx.workdir / "post.lua"
    script.write_text(SCRIPT % BODY.decode("ascii"))
    backend = free_port()
    # The built-in echo test server is the backend the handshake names; nothing reaches it afterwards.
    echo_cfg = ctx.workdir / "echo.cfg"
    http_port = free_port()
    echo_cfg.write_text(f"[global]\nuser = root\n[listen]\nhttp://127.0.0.1:{http_port}\n"
                        f"echo://127.0.0.1:{backend}\n")
    echo = ctx.procs.start([*ctx.orbited, "--config", str(echo_cfg)], log=ctx.workdir / "echo.log",
                           cwd=ctx.workdir)
    wait_port(backend, proc=echo)
    engines = {name: start(ctx, name, backend) for name in ENGINES}
    rounds: dict[str, list[dict]] = {name: [] for name in ENGINES}
    try:
        for round_no in range(1, plan.rounds + 1):
            order = ENGINES if round_no % 2 else tuple(reversed(ENGINES))
            for name in order:
                rounds[name].append(measure(ctx, plan, engines[name], script, round_no))
    finally:
        for engine in engines.values():
            if engine.profiler is not None:
                summary = engine.profiler.stop()
                if summary is not None:
                    ctx.log(f"profile ({engine.name}): {summary.relative_to(ctx.repo)}")
    data = {"rounds": rounds, "median": {name: median_round(rounds[name]) for name in ENGINES}}
    (ctx.workdir / "raw.json").write_text(json.dumps(data, indent=1))
    return build_result(plan, data)


def build_result(plan: Plan, data: dict) -> dict:
    lean, twisted = data["median"]["lean"], data["median"]["twisted"]

    def metric(name: str, unit: str, key: str, better: str, target: str = "") -> dict:
        return {"name": name, "unit": unit, "orbited": lean[key], "peer": twisted[key], "peer_name": PEER,
                "better": better, "target": target}

    n = plan.connections
    metrics = [
        metric(f"keep-alive POST /tcp/<key>, {n} connections", "requests/s", "rate", "higher", "≥ 3x"),
        metric(f"POST latency p99, {n} connections", "ms", "p99_ms", "lower"),
        metric(f"POST latency p50, {n} connections", "ms", "p50_ms", "lower"),
        metric("server CPU per request", "µs", "server_us_per_request", "lower"),
    ]
    notes = [
        (f"Both engines serve the same resource tree in the same run; {plan.rounds} alternating round(s) of "
         f"{plan.seconds:.0f} s after {plan.warmup:.0f} s of warm-up each, median round reported. "
         f"`wrk -t1 -c{n}` POSTs `{BODY.decode()}` (a 0.7 ping packet, repeated id) to a live session's "
         "`/tcp/<key>?ack=0` with `Content-Type: text/plain;charset=UTF-8`."),
        ("wrk, both servers and the other engineers' test runs share this 2-core machine; the others' load "
         "per round is below."),
    ]
    for name in ENGINES:
        for index, r in enumerate(data["rounds"][name], 1):
            notes.append(f"{name} round {index}: {r['rate']:,.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
                         f"p99 {r['p99_ms']:.2f} ms, server {r['server_cores']:.2f} cores "
                         f"({r['server_us_per_request']:.0f} µs CPU per request), other processes "
                         f"{r['others_cores']:.2f} cores.")
    series = {
        "rounds": {
            "kind": "bar", "title": "keep-alive POST /tcp/<key>, requests/s per round", "xlabel": "round",
            "ylabel": "requests/s",
            "data": {name: {"x": list(range(1, len(data["rounds"][name]) + 1)),
                            "y": [r["rate"] for r in data["rounds"][name]]} for name in ENGINES},
        },
    }
    return {"scenario": NAME, "title": "HTTP layer: lean engine vs twisted.web", "metrics": metrics,
            "notes": notes, "series": series, "raw": data, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
