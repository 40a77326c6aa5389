"""STOMP fan-out: 1 publisher, 1,000 subscribers on one topic, Orbited's broker beside RabbitMQ.

Four measurements in one run, each against a fresh broker: Orbited over TCP
(``stomp://``) and over WebSocket (``/stomp``), RabbitMQ 3.10's STOMP plugin
over TCP and its Web-STOMP plugin over WebSocket.  The publisher always
speaks STOMP over TCP; the subscribers use the transport under test.

Each measurement has two phases:

- *paced*: the publisher sends 10,000 deliveries/s worth (10 messages/s to
  1,000 subscribers); we report p50/p99 publish-to-receive latency;
- *flat out*: the publisher writes as fast as the broker reads (each broker
  applies its own flow control); we report deliveries/s received by all
  subscribers together, and latency under that load.

Each message body carries the publisher's ``CLOCK_MONOTONIC`` nanoseconds,
so latency is measured per delivery across processes.  The load client (the
publisher and all subscribers) is one C process, ``bench/client/stompload.c``
with one epoll loop: the Python client it replaced spent ~26 µs of CPU per
delivery, so reading the 1,000 deliveries of one publish took it ~26 ms, which
dominated the p99 latency it reported for both brokers.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from dataclasses import dataclass
from typing import Any

from bench.common import CpuWindow, SetupError, c_client, free_port, wait_for_quiet, wait_port
from tests.support.peers import RABBITMQ_BIN, rabbitmq_env  # the same loopback-only node setup as the tests'

NAME = "stomp_fanout"
TOPIC = "/topic/bench-fanout"
TARGET_DELIVERIES = 50000
TARGET_RATE = 10000  # deliveries/s of the paced phase
TARGET_P99_MS = 50  # publish-to-receive p99 at TARGET_RATE
BODY_SIZE = 64


@dataclass(frozen=True)
class Plan:
    subscribers: int = 1000
    paced_seconds: float = 10.0
    flat_seconds: float = 10.0
    warmup: float = 1.0

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        return cls(subscribers=200, paced_seconds=3.0, flat_seconds=3.0, warmup=0.5) if quick else cls()


# ==========================================================================
# the brokers


def _root_user_line() -> str:
    return f"user = {pwd.getpwuid(os.getuid()).pw_name}\n" if os.getuid() == 0 else ""


def start_orbited(ctx: Any, label: str) -> dict:
    http, stomp = free_port(), free_port()
    cfg = ctx.workdir / f"{label}.cfg"
    cfg.write_text(f"""\
[global]
{_root_user_line()}session.ping_interval = 600
session.ping_timeout = 600
[listen]
http://127.0.0.1:{http}
stomp://127.0.0.1:{stomp}
[access]
* -> localhost:{stomp}
[stomp]
heartbeat = 0,0
""")
    proc = ctx.procs.start([*ctx.orbited, "--config", cfg, "--log-level", "warning"],
                           log=ctx.workdir / f"{label}.log", cwd=ctx.workdir)
    wait_port(stomp, proc=proc)
    return {"proc": proc, "pub_port": stomp, "tcp_port": stomp, "ws_port": http, "ws_path": "/stomp",
            "stop": lambda: ctx.procs.stop(proc)}


def start_rabbitmq(ctx: Any) -> dict:
    """RabbitMQ 3.10 (Debian) with the STOMP and Web-STOMP plugins, all state in the work dir."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        raise SetupError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    work = ctx.workdir / "rabbitmq"
    for sub in ("home", "mnesia", "log"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    stomp_port, ws_port, amqp_port, dist_port, epmd_port = (free_port() for _ in range(5))
    (work / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{amqp_port}\n"
        f"stomp.listeners.tcp.1 = 127.0.0.1:{stomp_port}\n"
        f"web_stomp.tcp.port = {ws_port}\n"
        "web_stomp.tcp.ip = 127.0.0.1\n"
        "loopback_users = none\n")
    env = rabbitmq_env(work, f"bench{stomp_port}", amqp_port, dist_port, epmd_port)
    full_env = {**os.environ, **env}
    subprocess.run([str(RABBITMQ_BIN / "rabbitmq-plugins"), "enable", "--offline", "rabbitmq_stomp",
                    "rabbitmq_web_stomp"], env=full_env, check=True, capture_output=True)
    proc = ctx.procs.start([RABBITMQ_BIN / "rabbitmq-server"], log=work / "out", env=env)
    wait_port(stomp_port, timeout=90)
    wait_port(ws_port, timeout=60)
    subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "await_startup", "--timeout", "60"], env=full_env,
                   check=True, capture_output=True, timeout=90)
    version = subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "version"], env=full_env, capture_output=True,
                             text=True, timeout=60).stdout.strip() or "3.10"

    def stop() -> None:
        subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "stop"], env=full_env, capture_output=True, timeout=60)
        ctx.procs.stop(proc)
        subprocess.run(["epmd", "-kill"], env=full_env, capture_output=True, timeout=20)

    return {"proc": proc, "pub_port": stomp_port, "tcp_port": stomp_port, "ws_port": ws_port, "ws_path": "/ws",
            "stop": stop, "version": version}


# ==========================================================================
# one measurement


def measure(ctx: Any, broker: dict, transport: str, plan: Plan, label: str) -> dict:
    binary = c_client("stompload")  # before waiting for quiet: the first use compiles it
    busy = wait_for_quiet(max_wait=60)  # other people's load on this shared machine
    port = broker["tcp_port"] if transport == "tcp" else broker["ws_port"]
    # stompload PORT TRANSPORT WS_PATH PUB_PORT SUBSCRIBERS NAME:RATE:SECONDS:WARMUP...
    argv = [str(binary), str(port), transport, broker["ws_path"], str(broker["pub_port"]), str(plan.subscribers),
            f"paced:{TARGET_RATE / plan.subscribers}:{plan.paced_seconds}:{plan.warmup}",
            f"flat:0:{plan.flat_seconds}:{plan.warmup}"]
    ctx.log(f"{label}: {plan.subscribers} subscribers over {transport}")
    client = ctx.procs.start(argv, log=ctx.workdir / f"{label}-client.log", stdout_pipe=True)
    groups = {"broker": os.getpgid(broker["proc"].pid), "client": os.getpgid(client.pid)}
    windows: dict[str, CpuWindow] = {}
    result: dict | None = None
    for raw in client.stdout:
        line = raw.decode().strip()
        if line.startswith("PHASE "):
            _, name, what = line.split()
            if what == "start":
                windows[name] = CpuWindow(groups)
                windows[name].start()
            else:
                windows[name].stop()
        elif line.startswith("RESULT "):
            result = json.loads(line[7:])
    client.wait(60)
    if result is None:
        log = (ctx.workdir / f"{label}-client.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{label}: the load client failed:\n{log}")
    result["busy_cores_before"] = round(busy, 2)
    for name, window in windows.items():
        result["phases"][name]["cpu_cores"] = {"broker": round(window.cores("broker"), 2),
                                               "client": round(window.cores("client"), 2),
                                               "others": round(window.others / window.seconds, 2)}
    ctx.log(f"{label}: {json.dumps(result['phases'])}")
    return result


def run(ctx: Any) -> dict:
    plan = Plan.for_run(ctx.quick)
    results: dict[str, dict] = {}
    rabbit = start_rabbitmq(ctx)
    try:
        peer_name = f"RabbitMQ {rabbit['version']} (Debian, rabbitmq_stomp / rabbitmq_web_stomp)"
        for transport in ("tcp", "ws"):
            results[f"rabbitmq-{transport}"] = measure(ctx, rabbit, transport, plan, f"rabbitmq-{transport}")
    finally:
        rabbit["stop"]()
    for transport in ("tcp", "ws"):
        orbited = start_orbited(ctx, f"orbited-{transport}")
        try:
            results[f"orbited-{transport}"] = measure(ctx, orbited, transport, plan, f"orbited-{transport}")
        finally:
            orbited["stop"]()

    def phase(key: str, name: str) -> dict:
        return results[key]["phases"][name]

    metrics = []
    for transport, shown in (("tcp", "TCP stomp://"), ("ws", "WebSocket /stomp (RabbitMQ: Web-STOMP /ws)")):
        ours, theirs = f"orbited-{transport}", f"rabbitmq-{transport}"
        delivered, peer_delivered = (round(phase(key, "flat")["deliveries_per_s"]) for key in (ours, theirs))
        metrics.append({
            "name": f"fan-out deliveries/s, {shown}, 1 publisher -> {plan.subscribers} subscribers",
            "unit": "deliveries/s",
            "orbited": delivered,
            "peer": peer_delivered,
            "peer_name": peer_name, "better": "higher",
            "target": f">= {TARGET_DELIVERIES}/s and >= RabbitMQ",
            "met": delivered >= TARGET_DELIVERIES and delivered >= peer_delivered,
        })
        for pct in ("p50", "p99"):
            latency = round(phase(ours, "paced")["latency_ms"][pct], 2)
            metrics.append({
                "name": f"publish-to-receive latency {pct} at {TARGET_RATE} deliveries/s, {shown}",
                "unit": "ms",
                "orbited": latency,
                "peer": round(phase(theirs, "paced")["latency_ms"][pct], 2),
                "peer_name": peer_name, "better": "lower",
                "target": f"< {TARGET_P99_MS} ms" if pct == "p99" else "(none)",
                **({"met": latency < TARGET_P99_MS} if pct == "p99" else {}),
            })
        metrics.append({
            "name": f"latency p99 while flat out, {shown}",
            "unit": "ms",
            "orbited": round(phase(ours, "flat")["latency_ms"]["p99"], 1),
            "peer": round(phase(theirs, "flat")["latency_ms"]["p99"], 1),
            "peer_name": peer_name, "better": "lower", "target": "(none)",
        })
    notes = [
        (f"{plan.subscribers} subscribers and 1 publisher on {TOPIC}, {BODY_SIZE}-byte bodies, auto ack, STOMP 1.2; "
        "the publisher always uses STOMP over TCP, the subscribers the transport named."),
        (f"Paced phase: {TARGET_RATE / plan.subscribers:g} messages/s for {plan.paced_seconds:g} s; flat-out phase: "
        f"the publisher writes as fast as the broker reads, {plan.flat_seconds:g} s, first {plan.warmup:g} s not "
        "counted. Each broker's own flow control sets the pace (Orbited pauses publishers while a subscriber's "
        "socket buffer is full)."),
        ("Load client: one C process (bench/client/stompload.c: one epoll loop, nonblocking sockets, fixed "
        "buffers) for the publisher and all subscribers, on the same 2-core machine; its CPU is reported beside "
        "each broker's."),
    ]
    for key, result in results.items():
        for name, data in result["phases"].items():
            notes.append(f"{key} {name} (machine busy {result['busy_cores_before']} cores before): "
                         f"{data['published']} messages published, {data['missing']} deliveries "
                         f"missing after 20 s, CPU cores {data.get('cpu_cores')}, latency ms "
                         f"{ {k: round(v, 2) for k, v in data['latency_ms'].items()} }")
    return {"scenario": NAME, "title": "STOMP fan-out: 1 publisher, 1,000 subscribers on one topic",
            "metrics": metrics, "notes": notes, "series": {"results": results}}

