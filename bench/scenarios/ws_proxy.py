"""/ws TCPSocket tunnel to a TCP echo backend, side by side with websockify 0.13.

Measures, with the same load clients (C for connect bursts, Node for the
rest) and the same Node backends for both servers, on the same machine in the same run: connect latency with 200
clients at once (to the first echoed byte, so Orbited's extra host:port
handshake round trip is paid, not hidden), aggregate echo round trips per
second with 50 and 200 clients, server memory per idle proxied session, how
many sessions one server sustains, and single-stream bulk throughput in both
directions.  The connect bursts also run against ``client/answer_at_once.js``,
a server that answers at once and has no backend: its figure is the floor
that the machine, the kernel and the load client set for any server, and against
``client/bare_proxy.py``, a proxy on Orbited's own reactor with none of Orbited's
features: its figure is what a Twisted proxy costs here, and against Orbited
with the backend named ``localhost`` (each TCPSocket then needs a host-name
lookup).  These are reported without a target.  Each measurement starts a fresh server process.  Every process
runs in its own group and is stopped when the scenario ends, however it ends.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import (
    BENCH,
    CpuWindow,
    JsonLines,
    ScenarioContext,
    c_client,
    free_port,
    group_memory,
    group_pids,
    node,
    node_modules,
    percentile,
    python_venv,
    wait_for_quiet,
    wait_port,
)
from bench.profile import Profiler

NAME = "ws_proxy"

WEBSOCKIFY = ("websockify==0.13.0", "numpy")
CLIENT = BENCH / "client" / "wsload.js"
BACKENDS = BENCH / "client" / "backends.js"
FLOOR = BENCH / "client" / "answer_at_once.js"
BARE_PROXY = BENCH / "client" / "bare_proxy.py"
MIB = 1 << 20


@dataclass(frozen=True)
class Plan:
    """Counts and windows; ``quick`` shrinks them for development runs."""

    connect_clients: int = 200
    connect_rounds: int = 3
    echo_clients: tuple[int, ...] = (50, 200)
    echo_size: int = 32
    echo_warmup: float = 2.0
    echo_seconds: float = 10.0
    repeats: int = 3  # alternating Orbited/peer pairs of echo and bulk runs; the least disturbed pair is reported
    max_repeats: int = 6  # more pairs while no pair has run on a nearly idle machine
    hold_steps: tuple[int, ...] = (1000, 3000, 6000, 9000)
    peer_hold_steps: tuple[int, ...] = (100, 200, 400)
    bulk_bytes: int = 200 * MIB

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        if not quick:
            return cls()
        return cls(connect_rounds=1, repeats=1, max_repeats=1, echo_warmup=1.0, echo_seconds=3.0, hold_steps=(500, 2000),
                   peer_hold_steps=(100, 200), bulk_bytes=50 * MIB)


# --- the servers under test


@dataclass
class Server:
    """One server process in front of one backend port; a fresh one per measurement."""

    label: str
    ctx: ScenarioContext
    proc: Any = None
    port: int = 0
    backend: int = 0
    backends: dict[str, int] = field(default_factory=dict)
    profiler: Profiler | None = None
    background: list[float] = field(default_factory=list)  # busy cores on the machine before each start
    warm_connects = 5  # connects before the measured bursts
    processes = 1  # in its process group when idle

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def handshake(self) -> str | None:
        return None

    @property
    def pgid(self) -> int:
        return self.proc.pid

    def argv(self, workdir: Path) -> list[str]:
        raise NotImplementedError

    def start(self, backends: dict[str, int], backend: str, tag: str) -> Server:
        busy = wait_for_quiet(max_wait=30)
        self.background.append(busy)
        if busy > 0.3:
            self.ctx.log(f"machine still busy ({busy:.2f} cores used by other processes) after 30 s; measuring anyway")
        self.port = free_port()
        self.backend = backends[backend]
        workdir = self.ctx.workdir / f"{self.label}-{tag}"
        index = 1
        while workdir.exists():  # repeated runs of one measurement
            index += 1
            workdir = self.ctx.workdir / f"{self.label}-{tag}-{index}"
        workdir.mkdir()
        self.backends = backends
        self.proc = self.ctx.procs.start(self.argv(workdir), log=workdir / "server.log", cwd=workdir)
        wait_port(self.port, proc=self.proc)
        if self.ctx.profile and isinstance(self, OrbitedServer):
            self.profiler = Profiler(self.ctx, self.proc.pid, workdir / "profile.raw")
        return self

    def stop(self) -> None:
        if self.profiler is not None:
            summary = self.profiler.stop()
            self.profiler = None
            if summary is not None:
                self.ctx.log(f"profile: {summary.relative_to(self.ctx.repo)}")
        if self.proc is not None:
            self.ctx.procs.stop(self.proc)
            self.proc = None


class OrbitedServer(Server):
    extra = ""  # more [global] lines
    backend_host = "127.0.0.1"  # how the handshake and the [access] rules name the backend

    @property
    def handshake(self) -> str:
        return f"{self.backend_host}:{self.backend}"

    def argv(self, workdir: Path) -> list[str]:
        access = "\n".join(f"* -> {self.backend_host}:{port}" for port in self.backends.values())
        config = workdir / "orbited.cfg"
        # Logging as shipped (INFO: one line per connect and per close), like websockify's default.
        config.write_text(f"[global]\nuser = root\nproxy.max_sessions = 0\n{self.extra}\n"
                          f"[listen]\nhttp://127.0.0.1:{self.port}\n\n[access]\n{access}\n")
        return [*self.ctx.orbited, "--config", str(config)]


class OrbitedWorkersServer(OrbitedServer):
    """Orbited as configured for a machine with spare cores: [global] workers = 2.

    Here the load client and the backend share those two cores with it, so this
    is not what workers give on a bigger machine; it shows what they cost and
    give on this one."""

    extra = "workers = 2\n"
    processes = 3  # the master and its two workers
    warm_connects = 20  # both workers serve a few before the measured bursts


class OrbitedByNameServer(OrbitedServer):
    """Orbited as shipped, with the backend named the way pages usually name it: ``localhost``.
    Each TCPSocket then needs a host-name lookup (``[global] proxy.lookup_cache``)."""

    backend_host = "localhost"


class WebsockifyServer(Server):
    bin: Path

    def argv(self, workdir: Path) -> list[str]:
        return [str(self.bin / "websockify"), f"127.0.0.1:{self.port}", f"127.0.0.1:{self.backend}"]


class FloorServer(Server):
    """The connect burst's floor: fixed answers, no backend (client/answer_at_once.js).

    It is warmed with a full burst (the servers under test get 5 connects): V8 compiles its
    handlers only after many calls, and a cold first burst measured 80 ms instead of 13-48.
    A warm floor is the lower, stricter reference."""

    warm_connects = 200

    @property
    def handshake(self) -> str:
        return f"127.0.0.1:{self.backend}"  # answered "1" without a connect

    def argv(self, workdir: Path) -> list[str]:
        return [node(), str(FLOOR), str(self.port)]


class BareProxyServer(Server):
    """The stack's floor: a real proxy on Orbited's reactor without Orbited's features
    (client/bare_proxy.py), started and warmed like Orbited."""

    @property
    def handshake(self) -> str:
        return f"127.0.0.1:{self.backend}"

    def argv(self, workdir: Path) -> list[str]:
        return [self.ctx.python, str(BARE_PROXY), str(self.port)]


# --- the load client


def client(ctx: ScenarioContext, server: Server, mode: str, tag: str, **config: Any) -> JsonLines:
    if mode == "connect":
        # Bursts of connects run the C client: the Node one cost 0.5 ms of CPU a connect, which put the
        # measurement floor (44-72 ms p50 against a server that answers at once) above the figure to resolve.
        url = urlsplit(server.url)
        argv = [str(c_client("wsconnect")), url.hostname, str(url.port), url.path, server.handshake or "-",
                str(config["n"]), str(config["timeout"])]
    else:
        argv = [node(), str(CLIENT), json.dumps({"mode": mode, "url": server.url, "target": server.handshake,
                                                  **config})]
    proc = ctx.procs.start(argv, stdout_pipe=True,
                           stdin=mode in ("hold", "connect"), log=ctx.workdir / f"client-{server.label}-{tag}.log",
                           cwd=BENCH)
    return JsonLines(proc, f"load client ({mode}, {server.label})")


def finish(ctx: ScenarioContext, lines: JsonLines, timeout: float = 60.0) -> None:
    lines.proc.wait(timeout)
    ctx.procs.stop(lines.proc)


def settle(server: Server, processes: int = 1, timeout: float = 30.0) -> None:
    """Wait until a forking server is back to ``processes`` processes (children of closed sessions gone)."""
    deadline = time.monotonic() + timeout
    while len(group_pids(server.pgid)) > processes and time.monotonic() < deadline:
        time.sleep(0.1)


# --- the measurements


def measure_connect(ctx: ScenarioContext, plan: Plan, servers: tuple[Server, ...],
                    backends: dict[str, int]) -> dict[str, dict]:
    """Rounds of simultaneous connects, alternating between the servers so that a burst of
    someone else's load on the shared machine hits one round, not one server."""
    results: dict[str, dict] = {}
    try:
        for server in servers:
            server.start(backends, "echo", "connect")
            warm = client(ctx, server, "connect", "warm", n=server.warm_connects, timeout=60)
            warm.expect("ready", 30)
            warm.send("go")
            warm.expect("connect", 60)
            finish(ctx, warm)
            results[server.label] = {"echo_ms": [], "open_ms": [], "failures": {}, "round_p50": [],
                                     "round_p99": [], "cpu_ms": {"server": 0.0, "client": 0.0},
                                     "background_cores": []}
        for index in range(plan.connect_rounds):
            for server in servers:
                for other in servers:
                    settle(other, other.processes)
                results[server.label]["background_cores"].append(wait_for_quiet(max_wait=30))
                result = results[server.label]
                lines = client(ctx, server, "connect", f"round{index}", n=plan.connect_clients, timeout=120)
                lines.expect("ready", 30)
                window = CpuWindow({"server": server.pgid})
                window.start()
                lines.send("go")
                found = lines.expect("connect", 120)
                window.stop()
                finish(ctx, lines)
                result["cpu_ms"]["server"] += window.used["server"] * 1000
                result["cpu_ms"]["client"] += found["cpu_ms"]  # its own getrusage: below /proc's 10 ms ticks
                samples = found["samples"]
                result["open_ms"] += [s[0] for s in samples]
                result["echo_ms"] += [s[2] for s in samples]
                for why, count in found["failures"].items():
                    result["failures"][why] = result["failures"].get(why, 0) + count
                echo = [s[2] for s in samples]
                result["round_p50"].append(percentile(echo, 50))
                result["round_p99"].append(percentile(echo, 99))
                ctx.log(f"{server.label} connect round {index + 1}: {len(samples)} ok, first echo p50 "
                        f"{result['round_p50'][-1]:.1f} ms, p99 {result['round_p99'][-1]:.1f} ms; server CPU "
                        f"{window.used['server'] * 1000:.0f} ms, client {found['cpu_ms']:.0f} ms")
        for result in results.values():
            # CPU from the go signal to the client's report, per session: what one connect costs each side.
            result["cpu_ms_per_connect"] = {name: ms / max(1, len(result["echo_ms"]))
                                            for name, ms in result.pop("cpu_ms").items()}
            # The median round: one round disturbed by someone else's load does not move it.
            result["p50"] = percentile(result["round_p50"], 50)
            result["p99"] = percentile(result["round_p99"], 50)
        return results
    finally:
        for server in servers:
            server.stop()


def measure_echo(ctx: ScenarioContext, plan: Plan, server: Server, backends: dict[str, int],
                 clients: int, backend_pgid: int) -> dict:
    server.start(backends, "echo", f"echo{clients}")
    try:
        lines = client(ctx, server, "echo", f"echo{clients}", n=clients, size=plan.echo_size,
                       warmup=plan.echo_warmup, duration=plan.echo_seconds, concurrency=50,
                       timeout=plan.echo_warmup + plan.echo_seconds + 120)
        opened = lines.expect("open", 120)
        if opened["sessions"] != clients:
            raise RuntimeError(f"{server.label}: only {opened['sessions']} of {clients} sessions opened: "
                               f"{opened['failures']}")
        window = CpuWindow({"server": server.pgid, "client": lines.proc.pid, "backend": backend_pgid})
        lines.expect("measure-start", plan.echo_warmup + 30)
        window.start()
        end = lines.expect("measure-end", plan.echo_seconds + 30)
        window.stop()
        finish(ctx, lines)
        rate = end["roundTrips"] / end["seconds"]
        per_rt = {name: window.used[name] / max(1, end["roundTrips"]) * 1e6 for name in window.used}
        ctx.log(f"{server.label} echo x{clients}: {rate:,.0f} round trips/s, p50 {end['p50']} ms, "
                f"server {window.cores('server'):.2f} cores ({per_rt['server']:.0f} µs/rt), client "
                f"{window.cores('client'):.2f} cores ({per_rt['client']:.0f} µs/rt), softirq "
                f"{window.irq / window.seconds:.2f} cores, others {window.others / window.seconds:.2f} cores")
        return {
            "rate": rate, "p50_ms": end["p50"], "p99_ms": end["p99"], "errors": end["errors"],
            "per_session_min": end["perSessionMin"], "per_session_max": end["perSessionMax"],
            "cores": {name: window.cores(name) for name in window.used},
            "us_per_round_trip": per_rt,
            "others_cores": window.others / window.seconds,
            "irq_cores": window.irq / window.seconds,
            "steal_cores": window.steal / window.seconds,
        }
    finally:
        server.stop()


def measure_hold(ctx: ScenarioContext, server: Server, backends: dict[str, int], steps: tuple[int, ...]) -> dict:
    server.start(backends, "echo", "hold")
    try:
        # One session opened and closed first, so lazily imported code is in the baseline.
        warm = client(ctx, server, "connect", "hold-warm", n=1, timeout=60)
        warm.expect("ready", 30)
        warm.send("go")
        warm.expect("connect", 60)
        finish(ctx, warm)
        settle(server)
        time.sleep(1.0)
        base = group_memory(server.pgid)
        points = [{"open": 0, "pss": base.pss, "rss": base.rss, "processes": base.processes}]
        lines = client(ctx, server, "hold", "hold", steps=list(steps), concurrency=100, timeout=1800)
        try:
            for step in steps:
                found = lines.expect("step", 900)
                time.sleep(2.0)  # let buffers of the opening burst be freed
                memory = group_memory(server.pgid)
                points.append({"open": found["open"], "pss": memory.pss, "rss": memory.rss,
                               "processes": memory.processes, "failures": found["failures"],
                               "seconds": found["seconds"]})
                ctx.log(f"{server.label} hold {found['open']}/{step} open ({found['failures'] or 'no failures'}) "
                        f"in {found['seconds']:.1f} s: PSS {memory.pss / 1e6:.1f} MB in {memory.processes} "
                        f"processes")
                lines.send("next")
            lines.expect("closed", 120)
        finally:
            finish(ctx, lines, 120)
        top = max(points[1:], key=lambda p: p["open"])
        per_session = (top["pss"] - base.pss) / top["open"] if top["open"] else float("nan")
        return {"points": points, "per_session_bytes": per_session, "max_open": top["open"],
                "total_per_session_bytes": top["pss"] / top["open"] if top["open"] else float("nan")}
    finally:
        server.stop()


def measure_bulk(ctx: ScenarioContext, plan: Plan, server: Server, backends: dict[str, int],
                 direction: str, backend_pgid: int) -> dict:
    server.start(backends, "bulk", f"bulk-{direction}")
    try:
        lines = client(ctx, server, "bulk", f"bulk-{direction}", direction=direction, bytes=plan.bulk_bytes,
                       chunk=65536, timeout=300)
        window = CpuWindow({"server": server.pgid, "client": lines.proc.pid, "backend": backend_pgid})
        window.start()
        found = lines.expect("bulk", 300)
        window.stop()
        finish(ctx, lines)
        ctx.log(f"{server.label} bulk {direction}: {found['mbPerSecond']:.0f} MB/s "
                f"({plan.bulk_bytes / MIB:.0f} MiB in {found['seconds']:.2f} s)")
        return {"mb_per_s": found["mbPerSecond"], "seconds": found["seconds"],
                "server_cpu_s": window.used["server"], "others_cores": window.others / window.seconds,
                "steal_cores": window.steal / window.seconds}
    finally:
        server.stop()


# --- the scenario

QUIET_CORES = 0.25  # other people's load during a window that still counts as a quiet run


def _disturbance(run: dict) -> float:
    """Cores taken from a window by other people's processes and by the hypervisor."""
    return run["others_cores"] + run.get("steal_cores", 0.0)


def quiet_enough(runs: dict[tuple[str, str], list[dict]], kind: str) -> bool:
    """Whether, for every measurement of ``kind``, some alternating pair ran with both servers on a
    nearly idle machine."""
    keys = {key for _label, key in runs if key.startswith(kind)}
    return all(any(max(_disturbance(o), _disturbance(t)) <= QUIET_CORES
                   for o, t in zip(runs[("orbited", key)], runs[("websockify", key)])) for key in keys)


def run(ctx: ScenarioContext) -> dict:
    plan = Plan.for_run(ctx.quick)
    ctx.log("setting up websockify 0.13.0 (+numpy) and the Node client")
    websockify_bin = python_venv("websockify-0.13.0", WEBSOCKIFY)
    node_modules()
    orbited = OrbitedServer("orbited", ctx)
    peer = WebsockifyServer("websockify", ctx)
    peer.bin = websockify_bin
    servers = (orbited, peer)

    backend_proc = ctx.procs.start([node(), str(BACKENDS)], stdout_pipe=True, log=ctx.workdir / "backends.log")
    backends = JsonLines(backend_proc, "backends").next(30)

    references = (OrbitedWorkersServer("orbited_workers", ctx), OrbitedByNameServer("orbited_by_name", ctx),
                  FloorServer("floor", ctx), BareProxyServer("bare_proxy", ctx))
    data: dict[str, dict[str, Any]] = {s.label: {} for s in (*servers, *references)}
    for label, result in measure_connect(ctx, plan, (*servers, *references), backends).items():
        data[label]["connect"] = result
    runs: dict[tuple[str, str], list[dict]] = {}
    for repeat in range(plan.max_repeats):
        if repeat >= plan.repeats and quiet_enough(runs, "echo"):
            break
        for clients in plan.echo_clients:
            for server in servers:
                runs.setdefault((server.label, f"echo{clients}"), []).append(
                    measure_echo(ctx, plan, server, backends, clients, backend_proc.pid))
    data["orbited"]["hold"] = measure_hold(ctx, orbited, backends, plan.hold_steps)
    data["websockify"]["hold"] = measure_hold(ctx, peer, backends, plan.peer_hold_steps)
    for repeat in range(plan.max_repeats):
        if repeat >= plan.repeats and quiet_enough(runs, "bulk"):
            break
        for direction in ("up", "down"):
            for server in servers:
                runs.setdefault((server.label, f"bulk-{direction}"), []).append(
                    measure_bulk(ctx, plan, server, backends, direction, backend_proc.pid))
    for key in sorted({key for _label, key in runs}):
        ours, theirs = runs[("orbited", key)], runs[("websockify", key)]
        rate = "rate" if key.startswith("echo") else "mb_per_s"
        # Runs alternate, so run i of each server ran minutes apart at most.  Report the pair
        # that was least disturbed by other people's load and by the hypervisor (steal): both
        # servers' figures then come from the same quiet stretch of time.
        chosen = min(range(len(ours)), key=lambda i: max(_disturbance(ours[i]), _disturbance(theirs[i])))
        ratios = [o[rate] / t[rate] for o, t in zip(ours, theirs) if t[rate]]
        for label, series in (("orbited", ours), ("websockify", theirs)):
            picked = dict(series[chosen])
            picked["all_rates"] = [run[rate] for run in series]
            picked["all_others"] = [_disturbance(run) for run in series]
            picked["chosen_run"] = chosen
            picked["pair_ratios"] = ratios
            data[label][key] = picked
    (ctx.workdir / "raw.json").write_text(json.dumps(data, indent=1))
    return build_result(plan, data)


def build_result(plan: Plan, data: dict[str, dict[str, Any]]) -> dict:
    o, w = data["orbited"], data["websockify"]
    peer = "websockify 0.13"

    def metric(name: str, unit: str, ours: float, theirs: float, better: str, target: str = "") -> dict:
        return {"name": name, "unit": unit, "orbited": ours, "peer": theirs, "peer_name": peer,
                "better": better, "target": target}

    n = plan.connect_clients
    metrics = [
        metric(f"connect p50, {n} clients at once", "ms", o["connect"]["p50"], w["connect"]["p50"], "lower",
               "≥ 10x lower than websockify"),
        metric(f"connect p99, {n} clients at once", "ms", o["connect"]["p99"], w["connect"]["p99"], "lower"),
    ]
    if "orbited_workers" in data:
        k = data["orbited_workers"]["connect"]
        metrics.append(metric(f"connect p50, {n} clients at once, Orbited with workers = 2", "ms",
                              k["p50"], w["connect"]["p50"], "lower"))
    if "orbited_by_name" in data:
        k = data["orbited_by_name"]["connect"]
        metrics.append(metric(f"connect p50, {n} clients at once, Orbited to a backend named localhost", "ms",
                              k["p50"], w["connect"]["p50"], "lower"))
    if "floor" in data:
        f = data["floor"]["connect"]
        floor_name = "a server that answers at once, no backend (floor)"
        metrics += [
            {**metric(f"connect p50, {n} clients at once, vs the floor", "ms", o["connect"]["p50"], f["p50"],
                      "lower"), "peer_name": floor_name},
        ]
    if "bare_proxy" in data:
        b = data["bare_proxy"]["connect"]
        metrics.append({**metric(f"connect p50, {n} clients at once, vs a bare Twisted proxy", "ms",
                                 o["connect"]["p50"], b["p50"], "lower"),
                        "peer_name": "a proxy on the same reactor without Orbited's features"})
    for clients in plan.echo_clients:
        key = f"echo{clients}"
        metrics.append(metric(f"echo round trips, {clients} clients", "round trips/s", o[key]["rate"],
                              w[key]["rate"], "higher", "≥ 2x websockify"))
    top = f"echo{max(plan.echo_clients)}"
    metrics += [
        metric(f"server CPU per round trip, {max(plan.echo_clients)} clients", "µs",
               o[top]["us_per_round_trip"]["server"], w[top]["us_per_round_trip"]["server"], "lower"),
        metric("server memory per idle proxied session", "KB",
               o["hold"]["per_session_bytes"] / 1000, w["hold"]["per_session_bytes"] / 1000, "lower",
               "≤ 40 KB"),
        metric("concurrent proxied sessions in one server", "sessions", o["hold"]["max_open"],
               w["hold"]["max_open"], "higher", "≥ 9,000"),
        metric(f"bulk upload, one stream of {plan.bulk_bytes // MIB} MiB", "MB/s", o["bulk-up"]["mb_per_s"],
               w["bulk-up"]["mb_per_s"], "higher"),
        metric(f"bulk download, one stream of {plan.bulk_bytes // MIB} MiB", "MB/s", o["bulk-down"]["mb_per_s"],
               w["bulk-down"]["mb_per_s"], "higher"),
    ]
    return {
        "scenario": NAME,
        "title": "/ws TCPSocket tunnel vs websockify 0.13",
        "metrics": metrics,
        "notes": notes(plan, data),
        "series": series(plan, data),
        "raw": data,
    }


def _rates(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def _runs(d: dict) -> str:
    """Each run's rate with the disturbance (other people's cores + steal) it ran under; * marks the one used."""
    return ", ".join(f"{rate:,.0f} [{others:.1f}]{'*' if i == d['chosen_run'] else ''}"
                     for i, (rate, others) in enumerate(zip(d["all_rates"], d["all_others"])))


def _pairs(d: dict) -> str:
    ratios = d["pair_ratios"]
    return (f"Orbited/websockify per alternating pair: {', '.join(f'{r:.2f}' for r in ratios)} "
            f"(median {percentile(ratios, 50):.2f})")


def _burst_figures(c: dict) -> str:
    """A reference server's connect bursts, as the notes quote them."""
    return (f"p50 {c['p50']:.1f} ms (rounds {_rates(c['round_p50'])}), p99 {c['p99']:.1f} ms, "
            f"{c['cpu_ms_per_connect']['server']:.2f} ms of CPU per connect")


def _workers_note(data: dict[str, dict[str, Any]]) -> str:
    k = data["orbited_workers"]["connect"]
    return (f"Workers: the same bursts against Orbited with `[global] workers = 2`, where the master hands "
            f"each /ws connection to a worker process at accept: {_burst_figures(k)} over all three "
            f"processes. The two workers share the machine's two cores with the master, the load client and "
            f"the backend, so this shows what workers cost and give here, not on a machine with spare cores. "
            f"Reported without a target; the target row is Orbited as shipped (one process).")


def _by_name_note(data: dict[str, dict[str, Any]]) -> str:
    k, o = data["orbited_by_name"]["connect"], data["orbited"]["connect"]
    return (f"By name: the same bursts against Orbited as shipped, with pages naming the backend `localhost` "
            f"instead of `127.0.0.1` (so each TCPSocket needs a host-name lookup; `[global] proxy.lookup_cache` "
            f"shares and keeps them): {_burst_figures(k)}, against {o['p50']:.1f} ms and "
            f"{o['cpu_ms_per_connect']['server']:.2f} ms by address.")


def _floor_note(plan: Plan, data: dict[str, dict[str, Any]]) -> str:
    f, w = data["floor"]["connect"], data["websockify"]["connect"]
    return (f"Floor: the same bursts against `bench/client/answer_at_once.js`, a Node server that answers the "
            f"upgrade with a fixed 101, the handshake with '1' and echoes the probe itself, with no backend and "
            f"no TCP connect, alternating with the two servers: {_burst_figures(f)}. "
            f"No server that proxies can go below it on this machine with this client. "
            f"The 10x target needs a p50 of at most {w['p50'] / 10:.1f} ms in this run.")


def _bare_note(data: dict[str, dict[str, Any]]) -> str:
    b, o = data["bare_proxy"]["connect"], data["orbited"]["connect"]
    return (f"Bare proxy: the same bursts against `bench/client/bare_proxy.py`, a proxy on Orbited's reactor "
            f"that answers the upgrade by hand, connects to the backend the handshake names, answers '1' and "
            f"relays, with no HTTP layer, no autobahn, no access or Origin rules, no session registry, no flow "
            f"control and no log lines: {_burst_figures(b)} against "
            f"Orbited's {o['cpu_ms_per_connect']['server']:.2f}. It is what this stack costs before any of "
            f"Orbited's features; the difference is what they cost.")


def notes(plan: Plan, data: dict[str, dict[str, Any]]) -> list[str]:
    o, w = data["orbited"], data["websockify"]
    top = f"echo{max(plan.echo_clients)}"
    oc, wc = o["connect"], w["connect"]
    lines = [
        ("Everything runs on one 2-core machine: the load clients (`bench/client/wsconnect.c`, one epoll loop "
         "in C, for the connect bursts; `bench/client/wsload.js` for the rest: plain `net` sockets, hand-rolled "
         "frames, no npm package), one Node process for the echo and bulk backends "
         "(`bench/client/backends.js`), and the server under test. Each measurement starts a fresh server; "
         "both servers run with their default logging (Orbited: INFO, a line per connect and per close)."),
        (f"Connect latency: from the start of the TCP connect to the first echoed byte through the tunnel, so "
         f"Orbited pays its extra `host:port` handshake round trip and websockify pays none. "
         f"{plan.connect_rounds} round(s) of {plan.connect_clients} clients started in one loop, "
         f"alternating between the servers; the figure is the median round's p50 (p99). Per-round p50: Orbited "
         f"{_rates(oc['round_p50'])} ms, websockify {_rates(wc['round_p50'])} ms. WebSocket handshake alone "
         f"(upgrade answered), p50 over all rounds: Orbited {percentile(oc['open_ms'], 50):.0f} ms, websockify "
         f"{percentile(wc['open_ms'], 50):.0f} ms. CPU per connect: Orbited "
         f"{oc['cpu_ms_per_connect']['server']:.2f} ms in its one process, websockify "
         f"{wc['cpu_ms_per_connect']['server']:.2f} ms over its processes (fork included); the load client "
         f"{oc['cpu_ms_per_connect']['client']:.2f} / {wc['cpu_ms_per_connect']['client']:.2f} ms. Failures: "
         f"Orbited {oc['failures'] or 'none'}, websockify {wc['failures'] or 'none'}."),
        *([_workers_note(data)] if "orbited_workers" in data else []),
        *([_by_name_note(data)] if "orbited_by_name" in data else []),
        *([_floor_note(plan, data)] if "floor" in data else []),
        *([_bare_note(data)] if "bare_proxy" in data else []),
        ("websockify listens with a backlog of 100 (`sock.listen(100)`), so a burst of 200 connects can "
         "overflow its accept queue and leave clients waiting for SYN retransmits (1 s, 3 s); Orbited listens "
         "with 4096. That is part of what is measured."),
    ]
    for clients in plan.echo_clients:
        key = f"echo{clients}"
        parts = []
        for label, d in (("Orbited", o[key]), ("websockify", w[key])):
            us = d["us_per_round_trip"]
            parts.append(
                f"{label} {d['rate']:,.0f}/s (runs [disturbance, cores]: {_runs(d)}), round trip p50 "
                f"{d['p50_ms']} ms, p99 {d['p99_ms']} ms; server {d['cores']['server']:.2f} cores "
                f"({us['server']:.0f} µs of CPU per round trip), client {d['cores']['client']:.2f} cores "
                f"({us['client']:.0f} µs), backend {d['cores']['backend']:.2f} cores, kernel softirq "
                f"{d['irq_cores']:.2f} cores, other people's processes {d['others_cores']:.2f} cores, hypervisor "
                f"steal {d['steal_cores']:.2f} cores; slowest/fastest session "
                f"{d['per_session_min']}/{d['per_session_max']} round trips")
        lines.append(f"Echo, {clients} clients ({plan.echo_size}-byte messages, one in flight per client, "
                     f"{plan.echo_seconds:.0f} s after {plan.echo_warmup:.0f} s of warm-up): "
                     + "; ".join(parts) + f". {_pairs(o[key])}.")
    lines += [
        (f"Load client cost: {o[top]['us_per_round_trip']['client']:.0f} µs (Orbited run) and "
         f"{w[top]['us_per_round_trip']['client']:.0f} µs (websockify run) of CPU per echo round trip. It masks "
         "with a zero key (legal; the servers still run their unmasking code). With 2 cores, client + backend + "
         "server compete: websockify's per-connection processes can spread over both cores, a single Orbited "
         "process can use one; what the client and backend use is taken from both."),
        ("The machine is shared with other engineers' test runs and is a virtual machine whose host is shared "
         "too (hypervisor steal). Before every server start the harness waits (at most 30 s) for it to be "
         "nearly idle. Echo and bulk runs alternate Orbited, websockify, Orbited, ...; a pair is one run of "
         f"each, back to back. There are {plan.repeats} pairs or more, until one pair ran with under "
         f"{QUIET_CORES} cores of disturbance (other people's processes + steal) in both windows, at most "
         f"{plan.max_repeats}; the figures come from the least disturbed pair (marked *), so both servers' "
         "numbers come from the same quiet stretch. Orbited is one process and takes outside load in full; "
         "websockify can move to the other core."),
    ]
    oh, wh = o["hold"], w["hold"]
    lines.append(
        f"Idle-session memory: PSS summed over the server's process group (/proc/PID/smaps_rollup), after "
        f"minus before opening the sessions, divided by the sessions open. Orbited at {oh['max_open']:,} "
        f"sessions: {oh['per_session_bytes'] / 1000:.1f} KB each ({oh['total_per_session_bytes'] / 1000:.1f} KB "
        f"counting the whole process). websockify at {wh['max_open']} sessions: "
        f"{wh['per_session_bytes'] / 1e6:.2f} MB each, in {wh['points'][-1]['processes']} processes. websockify "
        "is not run at 9,000: it forks a process per connection and its children use select(), whose "
        "1,024-descriptor ceiling broke it at about 508 sessions on this machine (reference/peers.md); "
        f"{max(plan.peer_hold_steps)} is the largest count measured for it, and the sessions metric reports "
        "that count, not a measured ceiling. A proxied session costs two sockets in the server; the load "
        "client and the backend are separate processes, each under the 20,000 open-file limit.")
    for label, d in (("Orbited", oh), ("websockify", wh)):
        failed: dict[str, int] = {}
        for point in d["points"][1:]:
            for why, count in (point.get("failures") or {}).items():
                failed[why] = max(failed.get(why, 0), count)
        if failed:
            lines.append(f"{label} failures while opening idle sessions: {failed}.")
    lines.append(
        f"Bulk: one session streams {plan.bulk_bytes // MIB} MiB in 64 KiB binary messages to a sink that acks "
        "every MiB (upload), or reads that much from a source (download); MB = 10^6 bytes; pairs chosen like "
        f"the echo runs. Upload runs [disturbance]: Orbited {_runs(o['bulk-up'])}, websockify "
        f"{_runs(w['bulk-up'])} MB/s; download runs: Orbited {_runs(o['bulk-down'])}, "
        f"websockify {_runs(w['bulk-down'])} MB/s. Server CPU for the reported upload: Orbited "
        f"{o['bulk-up']['server_cpu_s']:.2f} s, websockify {w['bulk-up']['server_cpu_s']:.2f} s. websockify "
        "unmasks with numpy (installed with it, as its docs advise); autobahn with its NVX native masker.")
    return lines


def series(plan: Plan, data: dict[str, dict[str, Any]]) -> dict:
    o, w = data["orbited"], data["websockify"]
    return {
        "connect": {
            "kind": "cdf", "logx": True,
            "title": f"{plan.connect_clients} clients connecting at once: time to first echoed byte",
            "xlabel": "ms from TCP connect (log scale)",
            "data": {"Orbited": o["connect"]["echo_ms"], "websockify 0.13": w["connect"]["echo_ms"],
                     **({"Orbited, workers = 2": data["orbited_workers"]["connect"]["echo_ms"]}
                        if "orbited_workers" in data else {}),
                     **({"floor: answers at once, no backend": data["floor"]["connect"]["echo_ms"]}
                        if "floor" in data else {}),
                     **({"bare Twisted proxy": data["bare_proxy"]["connect"]["echo_ms"]}
                        if "bare_proxy" in data else {})},
        },
        "echo": {
            "kind": "bar", "title": "Aggregate echo round trips per second", "ylabel": "round trips/s",
            "data": {label: {"x": [f"{c} clients" for c in plan.echo_clients],
                             "y": [d[f"echo{c}"]["rate"] for c in plan.echo_clients]}
                     for label, d in (("Orbited", o), ("websockify 0.13", w))},
        },
        "cpu": {
            "kind": "bar", "title": f"CPU per round trip, {max(plan.echo_clients)} clients",
            "ylabel": "µs of CPU per round trip",
            "data": {label: {"x": ["server", "load client", "backend"],
                             "y": [d[f"echo{max(plan.echo_clients)}"]["us_per_round_trip"][k]
                                   for k in ("server", "client", "backend")]}
                     for label, d in (("Orbited", o), ("websockify 0.13", w))},
        },
        "memory": {
            "kind": "line", "logx": True, "logy": True,
            "title": "Server memory (PSS, whole process group) with idle proxied sessions",
            "xlabel": "idle sessions open (the baseline, 0, is drawn at 1)", "ylabel": "MB",
            "data": {label: {"x": [max(1, p["open"]) for p in d["hold"]["points"]],
                             "y": [p["pss"] / 1e6 for p in d["hold"]["points"]]}
                     for label, d in (("Orbited", o), ("websockify 0.13", w))},
        },
    }
