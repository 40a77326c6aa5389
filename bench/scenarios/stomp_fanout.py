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
so latency is measured per delivery across processes.  The load client is
one stdlib-only process (this file run with ``--client``): one epoll loop,
raw sockets, and a parser that only finds the timestamps, so that the
client's own CPU stays well under one core at 100,000 deliveries/s.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import select
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAME = "stomp_fanout"
TOPIC = "/topic/bench-fanout"
TARGET_DELIVERIES = 50000
TARGET_RATE = 10000  # deliveries/s of the paced phase
BODY_SIZE = 64
IN_FLIGHT = 200  # messages the flat-out publisher may have ahead of the slowest delivery count


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
# the load client (stdlib only; runs as its own process)

STAMP = re.compile(rb"T(\d{19})")


def ws_frame(payload: bytes) -> bytes:
    """A masked client text frame (RFC 6455 requires masking from clients)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes((0x81, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big") if n else b""
    return header + mask + masked


def read_until(sock: socket.socket, buffer: bytes, marker: bytes) -> tuple[bytes, bytes]:
    """Blocking read until ``marker`` and the NUL after it; returns (through it, rest)."""
    while True:
        index = buffer.find(marker)
        if index >= 0:
            end = buffer.find(b"\0", index)
            if end >= 0:
                return buffer[: end + 1], buffer[end + 1:]
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed while waiting for {marker!r}: {buffer[-300:]!r}")
        buffer += chunk


def open_subscriber(args: dict, number: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", args["port"]), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = b""
    wrap = (lambda data: data)
    if args["transport"] == "ws":
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET {args['ws_path']} HTTP/1.1\r\nHost: 127.0.0.1:{args['port']}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Protocol: v12.stomp\r\n\r\n").encode())
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the WebSocket handshake")
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"WebSocket handshake refused: {head[:200]!r}")
        wrap = ws_frame
    sock.sendall(wrap(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0"))
    _, buffer = read_until(sock, buffer, b"CONNECTED")
    sock.sendall(wrap(f"SUBSCRIBE\nid:s{number}\ndestination:{TOPIC}\nreceipt:r{number}\n\n\0".encode()))
    _, buffer = read_until(sock, buffer, f"receipt-id:r{number}".encode())
    return sock, buffer


def client_main(args: dict) -> None:
    count = args["subscribers"]
    subs: dict[int, socket.socket] = {}
    carry: dict[int, bytes] = {}
    started = time.monotonic()
    for number in range(count):
        sock, rest = open_subscriber(args, number)
        sock.setblocking(False)
        subs[sock.fileno()] = sock
        carry[sock.fileno()] = rest
    connect_seconds = time.monotonic() - started
    pub = socket.create_connection(("127.0.0.1", args["pub_port"]), timeout=30)
    pub.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pub.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0")
    read_until(pub, b"", b"CONNECTED")
    pub.setblocking(False)
    pubfd = pub.fileno()
    poller = select.epoll()
    for fd in subs:
        poller.register(fd, select.EPOLLIN)
    poller.register(pubfd, select.EPOLLIN)

    padding = b"x" * (BODY_SIZE - 20)
    prefix = b"SEND\ndestination:%s\ncontent-length:%d\n\n" % (TOPIC.encode(), BODY_SIZE)

    def frames(n: int) -> bytes:
        stamp = b"T%019d" % time.monotonic_ns()
        return (prefix + stamp + padding + b"\0") * n

    state = {"received": 0, "window_received": 0}
    latencies: list[int] = []
    window = {"from_ns": 1 << 62, "to_ns": 1 << 62}

    def drain_ready(timeout: float) -> None:
        for fd, _event in poller.poll(timeout):
            if fd == pubfd:
                try:
                    if not pub.recv(65536):
                        raise ConnectionError("the broker closed the publisher")
                except BlockingIOError:
                    pass
                continue
            sock = subs[fd]
            try:
                chunk = sock.recv(262144)
            except BlockingIOError:
                continue
            if not chunk:
                raise ConnectionError("the broker closed a subscriber")
            data = carry[fd] + chunk
            cut = data.rfind(b"\0")
            if cut < 0:
                carry[fd] = data
                continue
            carry[fd] = data[cut + 1:]
            stamps = STAMP.findall(data, 0, cut)
            if not stamps:
                continue
            now = time.monotonic_ns()
            state["received"] += len(stamps)
            low, high = window["from_ns"], window["to_ns"]
            for raw in stamps:
                sent = int(raw)
                if low <= sent < high:
                    latencies.append(now - sent)
            if low <= now < high:
                state["window_received"] += len(stamps)

    results: dict[str, Any] = {"connect_seconds": connect_seconds, "subscribers": count, "phases": {}}
    sent_total = 0
    for phase in args["phases"]:
        name, rate, seconds, warmup = phase["name"], phase["rate"], phase["seconds"], phase["warmup"]
        print(f"PHASE {name} start", flush=True)
        latencies.clear()
        state["window_received"] = 0
        begin = time.monotonic()
        begin_ns = time.monotonic_ns()
        window["from_ns"] = begin_ns + int(warmup * 1e9)
        window["to_ns"] = begin_ns + int(seconds * 1e9)
        pending = b""
        sent = 0
        while True:
            now = time.monotonic()
            if now - begin >= seconds:
                break
            if rate:
                due = int((now - begin) * rate) - sent
                if due > 0:
                    pending += frames(due)
                    sent += due
            elif len(pending) < 65536:
                # Flat out, but closed-loop: at most IN_FLIGHT messages not yet received by every
                # subscriber, so a broker that queues without bound does not just pile up a backlog.
                in_flight = sent_total + sent - state["received"] / count
                room = min(64, int(IN_FLIGHT - in_flight))
                if room > 0:
                    pending += frames(room)
                    sent += room
            if pending:
                try:
                    written = pub.send(pending)
                    pending = pending[written:]
                except BlockingIOError:
                    pass
            drain_ready(0.001 if rate else 0.0005)
        window["to_ns"] = time.monotonic_ns()
        print(f"PHASE {name} end", flush=True)
        # Unsent bytes never reached the broker: take back the messages they held.
        sent -= pending.count(b"\0")
        pending = b""
        sent_total += sent
        expected = sent_total * count
        deadline = time.monotonic() + 20
        while state["received"] < expected and time.monotonic() < deadline:
            drain_ready(0.05)
        measured = (window["to_ns"] - window["from_ns"]) / 1e9
        ordered = sorted(latencies)

        def pct(p: float, ordered: list[int] = ordered) -> float:
            return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] / 1e6 if ordered else float("nan")

        results["phases"][name] = {
            "published": sent,
            "deliveries_per_s": state["window_received"] / measured if measured > 0 else 0.0,
            "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": pct(100), "n": len(ordered)},
            "missing": max(0, expected - state["received"]),
        }
        state["received"] = min(state["received"], expected)
    results["cpu_seconds"] = sum(os.times()[:2])
    print("RESULT " + json.dumps(results), flush=True)
    for sock in subs.values():
        sock.close()
    pub.close()


# ==========================================================================
# the brokers


def _root_user_line() -> str:
    return f"user = {pwd.getpwuid(os.getuid()).pw_name}\n" if os.getuid() == 0 else ""


def start_orbited(ctx: Any, label: str) -> dict:
    from bench.common import free_port, wait_port

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


RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def start_rabbitmq(ctx: Any) -> dict:
    """RabbitMQ 3.10 (Debian) with the STOMP and Web-STOMP plugins, all state in the work dir."""
    from bench.common import SetupError, free_port, wait_port
    from tests.support.peers import rabbitmq_env  # the same loopback-only node setup as the tests'

    if not (RABBIT_BIN / "rabbitmq-server").exists():
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
    subprocess.run([str(RABBIT_BIN / "rabbitmq-plugins"), "enable", "--offline", "rabbitmq_stomp",
                    "rabbitmq_web_stomp"], env=full_env, check=True, capture_output=True)
    proc = ctx.procs.start([RABBIT_BIN / "rabbitmq-server"], log=work / "out", env=env)
    wait_port(stomp_port, timeout=90)
    wait_port(ws_port, timeout=60)
    subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "await_startup", "--timeout", "60"], env=full_env,
                   check=True, capture_output=True, timeout=90)
    version = subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "version"], env=full_env, capture_output=True,
                             text=True, timeout=60).stdout.strip() or "3.10"

    def stop() -> None:
        subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "stop"], env=full_env, capture_output=True, timeout=60)
        ctx.procs.stop(proc)
        subprocess.run(["epmd", "-kill"], env=full_env, capture_output=True, timeout=20)

    return {"proc": proc, "pub_port": stomp_port, "tcp_port": stomp_port, "ws_port": ws_port, "ws_path": "/ws",
            "stop": stop, "version": version}


# ==========================================================================
# one measurement


def measure(ctx: Any, broker: dict, transport: str, plan: Plan, label: str) -> dict:
    from bench.common import CpuWindow, wait_for_quiet

    busy = wait_for_quiet(max_wait=60)  # other people's load on this shared machine
    args = {
        "port": broker["tcp_port"] if transport == "tcp" else broker["ws_port"],
        "transport": transport,
        "ws_path": broker["ws_path"],
        "pub_port": broker["pub_port"],
        "subscribers": plan.subscribers,
        "phases": [
            {"name": "paced", "rate": TARGET_RATE / plan.subscribers, "seconds": plan.paced_seconds,
             "warmup": plan.warmup},
            {"name": "flat", "rate": 0, "seconds": plan.flat_seconds, "warmup": plan.warmup},
        ],
    }
    ctx.log(f"{label}: {plan.subscribers} subscribers over {transport}")
    client = ctx.procs.start([ctx.python, __file__, "--client", json.dumps(args)],
                             log=ctx.workdir / f"{label}-client.log", stdout_pipe=True)
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
        metrics.append({
            "name": f"fan-out deliveries/s, {shown}, 1 publisher -> {plan.subscribers} subscribers",
            "unit": "deliveries/s",
            "orbited": round(phase(ours, "flat")["deliveries_per_s"]),
            "peer": round(phase(theirs, "flat")["deliveries_per_s"]),
            "peer_name": peer_name, "better": "higher",
            "target": f">= {TARGET_DELIVERIES}/s and >= RabbitMQ",
        })
        for pct in ("p50", "p99"):
            metrics.append({
                "name": f"publish-to-receive latency {pct} at {TARGET_RATE} deliveries/s, {shown}",
                "unit": "ms",
                "orbited": round(phase(ours, "paced")["latency_ms"][pct], 2),
                "peer": round(phase(theirs, "paced")["latency_ms"][pct], 2),
                "peer_name": peer_name, "better": "lower",
                "target": "< 50 ms" if pct == "p99" else "(none)",
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
        ("Load client: one stdlib Python process (epoll, raw sockets, timestamp-only parsing) on the same 2-core "
        "machine; its CPU is reported beside each broker's."),
    ]
    for key, result in results.items():
        for name, data in result["phases"].items():
            notes.append(f"{key} {name} (machine busy {result['busy_cores_before']} cores before): "
                         f"{data['published']} messages published, {data['missing']} deliveries "
                         f"missing after 20 s, CPU cores {data.get('cpu_cores')}, latency ms "
                         f"{ {k: round(v, 2) for k, v in data['latency_ms'].items()} }")
    return {"scenario": NAME, "title": "STOMP fan-out: 1 publisher, 1,000 subscribers on one topic",
            "metrics": metrics, "notes": notes, "series": {"results": results}}


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--client":
    client_main(json.loads(sys.argv[2]))
