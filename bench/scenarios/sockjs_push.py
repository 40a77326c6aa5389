"""/sockjs: 1,000 sessions receiving pushed messages over xhr-streaming and xhr-polling, vs sockjs-node 0.3.24.

Each server gets 1,000 open sessions, then two measured windows on them:

- latency: every session is pushed one message every 500 ms (2,000 msg/s
  offered, spread evenly over the interval); messages delivered per second and
  the latency from the push to its arrival in the client (p50, p99);
- capacity: one message every 20 ms per session (50,000 msg/s offered, more
  than either server delivers on this machine); messages delivered per second.

The latency window is then measured four more times on each server (fresh
server, fresh sessions), alternating between the servers, and the median
window is reported: a single window moved by about 0.7 ms of p50 from run to
run, and its p99 by a factor of two.

The two servers do not push the same way, by their nature:

- Orbited: each session is a SockJS TCPSocket through ``/sockjs`` (the
  ``host:port`` handshake, answer ``1``, then base64) to a TCP backend in C
  (bench/client/pushbackend.c) that writes timestamped lines to the
  connections on the schedule.  Orbited relays: TCP read, base64, SockJS
  frame, HTTP chunk.  The backend skips a connection with over 64 KiB unsent
  (Orbited paused it), and counts the skips.  It is in C so that the pusher,
  which is not the server under test, keeps to the schedule and gets a
  slot's 50 messages out at once: the Node backend it replaced pushed only
  36,000-38,000 of the 50,000 messages/s offered (so it, not Orbited, set the
  capacity figure) and took about 1 ms per slot.  What it still costs (about 13 us per
  message) is mostly the kernel's loopback send, which delivers into
  Orbited's socket.
- Orbited with ``[global] workers = 2``, as an operator runs it on this
  2-core machine: the master hands each session's requests to one of two
  worker processes (by session id), so a slot's messages are relayed on both
  cores.  The targets are judged on this one; Orbited in one process (the
  default, ``workers = 0``) is reported beside it without a target.
- sockjs-node 0.3.24: a 15-line server whose own handler writes the same
  timestamped messages to its connections on the same schedule, in-process.
  The targets are judged against this one.  It has no way of its own to use
  a second core: its HTTP transports keep a session's state in one process,
  so several processes need a sticky load balancer in front.
- sockjs-node 0.3.24 relaying (rows without a target): each session opens a
  TCP connection to the same C push backend and writes what it reads to the
  SockJS connection as text.  This is the same load as Orbited's, backend
  hop included (minus base64), and it separates the cost of that hop from
  the cost of the server.

So Orbited does more work per message than the in-process peer (a TCP hop
and base64) but its pusher runs in another process; sockjs-node pushes from
its own event loop.

The load client and the peer are small Node programs written into the
scenario's scratch directory from this file.  Timestamps are CLOCK_MONOTONIC
milliseconds in every process (``process.hrtime`` in Node, ``clock_gettime``
in C), one clock for the whole machine, so latencies compare across processes
without the per-process offset of ``performance.timeOrigin``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    PEERS,
    CpuWindow,
    JsonLines,
    ScenarioContext,
    SetupError,
    c_client,
    free_port,
    node,
    wait_port,
)
from bench.measure import wait_for_quiet

NAME = "sockjs_push"
PEER_NAME = "sockjs-node 0.3.24"
PEER_PACKAGE = "sockjs@0.3.24"
RELAY_NAME = "sockjs-node 0.3.24 relaying"
WORKERS = 2  # Orbited's judged configuration: one worker per core of this machine
TRANSPORTS = {"xhr_streaming": "xhr-streaming", "xhr": "xhr-polling"}


@dataclass(frozen=True)
class Plan:
    sessions: int = 1000
    latency_interval_ms: int = 500  # phase 1: 2 messages/s per session, well within both servers' means
    capacity_interval_ms: int = 20  # phase 2: 50 messages/s per session, more than either can deliver
    slots: int = 20  # sessions are spread over this many evenly spaced push times per interval
    size: int = 32  # bytes of each pushed message (a timestamp, padded)
    warmup: float = 5.0
    seconds: float = 15.0
    open_concurrency: int = 50
    # Latency windows per server, alternating between the servers; the median is reported.  One window
    # each moved by about 0.7 ms of p50 from one run to the next on this shared machine, and one run's
    # three windows of one server had p99s from 4.9 to 9.8 ms (sockjs-node's: 3.7 to 6.8).
    latency_windows: int = 5

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        return cls(sessions=200, warmup=2.0, seconds=4.0, latency_windows=1) if quick else cls()

    def offered(self, interval_ms: int) -> float:
        return self.sessions * 1000.0 / interval_ms


# =========================================================================== Node programs

PUSH_SCHEDULE_JS = r"""
// The push schedule, the same as bench/client/pushbackend.c's: each connection belongs to one of `slots` evenly
// spaced slots of the interval and gets one timestamped message per interval in its slot, so the
// load is spread evenly (independent sessions, not one broadcast).  stdin: 'stats' prints the
// counters, 'interval MS' changes the rate.
const SLOTS = cfg.slots;
const slots = Array.from({ length: SLOTS }, () => new Set());
let nextSlot = 0, tick = 0, timer = null, sent = 0, skipped = 0;
function join(conn) {
  const slot = slots[nextSlot++ % SLOTS];
  slot.add(conn);
  return () => slot.delete(conn);
}
function schedule(interval) {
  if (timer) clearInterval(timer);
  timer = setInterval(() => {
    const slot = slots[tick++ % SLOTS];
    if (!slot.size) return;
    const stamp = (Number(process.hrtime.bigint()) / 1e6).toFixed(3).padEnd(cfg.size - 1, ' ');
    push(slot, stamp);
  }, interval / SLOTS);
}
schedule(cfg.interval);
require('readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.trim().split(' ');
  if (cmd === 'interval') { schedule(+arg); return; }
  process.stdout.write(JSON.stringify({ event: 'stats', sent, skipped }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
"""

SOCKJS_PEER_JS = r"""
// sockjs-node 0.3.24 pushing the same messages on the same schedule from its own handler.
'use strict';
const http = require('http');
const cfg = JSON.parse(process.argv[2]);
const sockjs = require(cfg.sockjs);
const service = sockjs.createServer({ log: () => {}, heartbeat_delay: 25000, disconnect_delay: 5000 });
service.on('connection', (conn) => conn.on('close', join(conn)));
const server = http.createServer();
service.installHandlers(server, { prefix: '/sockjs' });
server.maxConnections = 100000;
server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
  process.stdout.write(JSON.stringify({ event: 'ready', port: server.address().port }) + '\n');
});
function push(slot, stamp) {
  for (const conn of slot) { conn.write(stamp); sent++; }  // no backpressure in sockjs-node: it queues
}

""" + PUSH_SCHEDULE_JS

SOCKJS_RELAY_JS = r"""
// sockjs-node 0.3.24 relaying each session from its own TCP connection to the push backend
// (bench/client/pushbackend.c, the one behind Orbited): the same hop Orbited makes, without base64.
'use strict';
const http = require('http');
const net = require('net');
const cfg = JSON.parse(process.argv[2]);
const sockjs = require(cfg.sockjs);
const service = sockjs.createServer({ log: () => {}, heartbeat_delay: 25000, disconnect_delay: 5000 });
service.on('connection', (conn) => {
  const backend = net.connect({ host: '127.0.0.1', port: cfg.backend, noDelay: true });
  backend.setEncoding('latin1');
  backend.on('data', (text) => conn.write(text));  // no backpressure in sockjs-node: it queues
  backend.on('error', () => conn.close());
  backend.on('close', () => conn.close());
  conn.on('close', () => backend.destroy());
});
const server = http.createServer();
service.installHandlers(server, { prefix: '/sockjs' });
server.maxConnections = 100000;
server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
  process.stdout.write(JSON.stringify({ event: 'ready', port: server.address().port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
"""

CLIENT_JS = r"""
// The SockJS load client: n sessions over xhr_streaming or xhr (polling), raw HTTP/1.1 on `net`.
// It measures the age of every pushed message on arrival.  With `target` it first does Orbited's
// TCPSocket handshake (xhr_send ["host:port"], answer "1") and base64-decodes every message.
'use strict';
const net = require('net');
const cfg = JSON.parse(process.argv[2]);
const HOST = '127.0.0.1', PORT = cfg.port;
const now = () => Number(process.hrtime.bigint()) / 1e6;  // CLOCK_MONOTONIC, as the pushers stamp
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
setTimeout(() => { emit({ event: 'error', error: 'client timeout' }); process.exit(2); }, cfg.timeout * 1000).unref();

let measuring = false, delivered = 0, lost = 0, reopened = 0, requests = 0;
const lat = new Float64Array(1 << 23);
let nlat = 0;
function record(stamp) {
  if (!measuring) return;
  delivered++;
  if (nlat < lat.length) lat[nlat++] = now() - stamp;
}

// One keep-alive HTTP/1.1 connection; one request at a time.
class Conn {
  constructor(handler) {
    this.handler = handler;
    this.state = 0; this.rest = null; this.remaining = 0; this.last = false;
    this.sock = net.connect(PORT, HOST);
    this.sock.setNoDelay(true);
    this.sock.on('data', (d) => this.feed(d));
    this.sock.on('error', () => {});
    this.sock.on('close', () => handler.onClose());
  }
  request(raw) { requests++; this.state = 0; this.sock.write(raw); }
  feed(d) {
    let buf = this.rest ? Buffer.concat([this.rest, d]) : d, pos = 0;
    this.rest = null;
    while (pos < buf.length) {
      if (this.state === 0) {                       // head
        const end = buf.indexOf('\r\n\r\n', pos);
        if (end < 0) break;
        const head = buf.toString('latin1', pos, end);
        pos = end + 4;
        this.status = +head.slice(9, 12);
        const m = /content-length: *(\d+)/i.exec(head);
        if (this.status === 204 || this.status === 304) {
          this.handler.onEnd(this.status);          // no body, whatever the headers say
        } else if (m) {
          this.remaining = +m[1]; this.state = 1;
          if (this.remaining === 0) { this.state = 0; this.handler.onEnd(this.status); }
        } else { this.state = 2; }                  // chunked (all our streams are)
      } else if (this.state === 1) {                // content-length body
        const take = Math.min(this.remaining, buf.length - pos);
        this.handler.onData(buf, pos, pos + take);
        pos += take; this.remaining -= take;
        if (this.remaining === 0) { this.state = 0; this.handler.onEnd(this.status); }
      } else if (this.state === 2) {                // chunk size line
        const end = buf.indexOf('\r\n', pos);
        if (end < 0) break;
        const size = parseInt(buf.toString('latin1', pos, end), 16);
        pos = end + 2;
        this.last = size === 0; this.remaining = size;
        this.state = this.last ? 4 : 3;
        if (this.last) this.remaining = 2;
      } else if (this.state === 3) {                // chunk data
        const take = Math.min(this.remaining, buf.length - pos);
        this.handler.onData(buf, pos, pos + take);
        pos += take; this.remaining -= take;
        if (this.remaining === 0) { this.state = 4; this.remaining = 2; }
      } else {                                      // CRLF after a chunk
        const take = Math.min(this.remaining, buf.length - pos);
        pos += take; this.remaining -= take;
        if (this.remaining === 0) {
          if (this.last) { this.state = 0; this.handler.onEnd(this.status); } else { this.state = 2; }
        }
      }
    }
    if (pos < buf.length) this.rest = buf.subarray(pos);
  }
}

// Handshakes go through a few shared connections.
const sendQueue = [];
const senders = [];
function post(path, body) {
  return `POST ${path} HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
    `Content-Type: text/plain\r\n\r\n${body}`;
}
function send(path, body) { sendQueue.push(post(path, body)); pump(); }
function pump() {
  for (const s of senders) {
    if (!s.busy && sendQueue.length) { s.busy = true; s.conn.request(sendQueue.shift()); }
  }
}
for (let i = 0; i < 8; i++) {
  const s = { busy: false };
  s.conn = new Conn({
    onData: () => {}, onClose: () => {},
    onEnd: (status) => { if (status !== 204) { emit({ event: 'error', error: `xhr_send answered ${status}` }); process.exit(2); }
                         s.busy = false; pump(); },
  });
  senders.push(s);
}

let opened = 0, started = 0, closed = 0;
const t0 = Date.now();
class Session {
  constructor(i) {
    this.path = `${cfg.prefix}/${i % 1000}/${process.pid}x${i}`;
    this.ready = !cfg.target;
    this.partial = '';
    this.raw = post(`${this.path}/${cfg.transport}`, '');
    this.conn = new Conn(this);
    this.conn.request(this.raw);
  }
  onData(buf, start, end) {
    const s = this.partial + buf.toString('latin1', start, end);
    let from = 0, nl;
    while ((nl = s.indexOf('\n', from)) >= 0) { this.frame(s, from, nl); from = nl + 1; }
    this.partial = from < s.length ? s.slice(from) : '';
  }
  frame(s, from, to) {
    const kind = s.charCodeAt(from);
    if (kind === 97) {                                      // a[...]
      for (const m of JSON.parse(s.slice(from + 1, to))) this.message(m);
    } else if (kind === 111) {                              // o
      if (cfg.target) send(`${this.path}/xhr_send`, JSON.stringify([cfg.target]));
      else this.isReady();
    } else if (kind === 99) {                               // c[...]
      closed++;
      if (!this.ready) { emit({ event: 'error', error: 'closed before ready: ' + s.slice(from, to) }); process.exit(2); }
    }                                                       // h: heartbeat or prelude
  }
  message(m) {
    if (!this.ready) {
      if (m !== '1') { emit({ event: 'error', error: `handshake answered ${m}` }); process.exit(2); }
      this.isReady();
      return;
    }
    if (cfg.b64 || cfg.lines) {
      const text = cfg.b64 ? Buffer.from(m, 'base64').toString('latin1') : m;
      let from = 0, nl;
      while ((nl = text.indexOf('\n', from)) >= 0) { record(parseFloat(text.slice(from, nl))); from = nl + 1; }
    } else {
      record(parseFloat(m));
    }
  }
  isReady() {
    this.ready = true;
    opened++;
    next();
    if (opened === cfg.n) emit({ event: 'open', sessions: opened, seconds: (Date.now() - t0) / 1000 });
  }
  onEnd(status) {
    if (status !== 200) { emit({ event: 'error', error: `${cfg.transport} answered ${status}` }); process.exit(2); }
    if (cfg.transport === 'xhr_streaming') reopened++;
    this.conn.request(this.raw);                            // next poll, or the next stream after the limit
  }
  onClose() { if (measuring) lost++; }
}
function next() {
  while (started < cfg.n && started - opened < cfg.concurrency) { new Session(started++); }
}
function measure(seconds) {
  delivered = 0; nlat = 0; reopened = 0; requests = 0; closed = 0; lost = 0;
  measuring = true;
  const begin = now();
  emit({ event: 'measure-start' });
  setTimeout(() => {
    measuring = false;
    const took = (now() - begin) / 1000;
    const sorted = lat.subarray(0, nlat).sort();
    const pick = (p) => nlat ? sorted[Math.min(nlat - 1, Math.floor((nlat - 1) * p))] : null;
    emit({ event: 'measure-end', delivered, seconds: took, rate: delivered / took,
           p50: pick(0.5), p90: pick(0.9), p99: pick(0.99), max: nlat ? sorted[nlat - 1] : null,
           requests, reopened, closed, lost });
  }, seconds * 1000);
}
// stdin: 'measure SECONDS' runs a window, 'exit' ends the client.
require('readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.trim().split(' ');
  if (cmd === 'measure') measure(+arg); else process.exit(0);
});
next();
"""


# =========================================================================== setup


def sockjs_node_module() -> Path:
    """sockjs 0.3.24 from npm in bench/.work/peers/sockjs-node (installed once, pinned)."""
    home = PEERS / "sockjs-node"
    module = home / "node_modules" / "sockjs"
    stamp = home / ".installed"
    if stamp.exists() and stamp.read_text() == PEER_PACKAGE and module.exists():
        return module
    npm = shutil.which("npm")
    if npm is None:
        raise SetupError("npm is not installed; the sockjs-node peer needs it (apt-get install npm)")
    home.mkdir(parents=True, exist_ok=True)
    (home / "package.json").write_text('{"name": "sockjs-node-peer", "private": true}\n')
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", PEER_PACKAGE],
                          cwd=home, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SetupError(f"could not npm install {PEER_PACKAGE} in {home}:\n{done.stdout}{done.stderr}")
    stamp.write_text(PEER_PACKAGE)
    return module


def write_programs(workdir: Path) -> dict[str, Path]:
    programs = {"peer": SOCKJS_PEER_JS, "relay": SOCKJS_RELAY_JS, "client": CLIENT_JS}
    paths = {}
    for name, text in programs.items():
        paths[name] = workdir / f"{name}.js"
        paths[name].write_text(text.lstrip())
    return paths


def orbited_config(workdir: Path, port: int, backend: int, workers: int = 0) -> Path:
    user = f"user = {pwd.getpwuid(os.getuid()).pw_name}\n" if os.getuid() == 0 else ""
    config = workdir / "orbited.cfg"
    # The heartbeat and expiry of sockjs-node's defaults, so both servers do the same housekeeping.
    config.write_text(f"[global]\n{user}workers = {workers}\nsession.ping_interval = 25\nsession.ping_timeout = 5\n"
                      f"proxy.max_sessions = 0\n\n[listen]\nhttp://127.0.0.1:{port}\n\n"
                      f"[access]\n* -> 127.0.0.1:{backend}\n")
    return config


# =========================================================================== one measurement


def start_node(ctx: ScenarioContext, program: Path, config: dict, log: Path) -> tuple[Any, JsonLines]:
    proc = ctx.procs.start([node(), str(program), json.dumps(config)], stdout_pipe=True, stdin=True, log=log)
    return proc, JsonLines(proc, program.stem)


PHASES = ("latency", "capacity")


def drive(ctx: ScenarioContext, plan: Plan, programs: dict[str, Path], label: str, server_port: int,
          groups: dict[str, int], transport: str, target: str | None, pusher: JsonLines,
          lines: bool = False, phases: tuple[str, ...] = PHASES) -> dict:
    """Open the sessions, then measure a latency window and a capacity window (or only ``phases``).
    ``lines``: messages carry the push backend's newline-ended lines as they came from TCP (the
    relaying peer)."""
    client_config = {"port": server_port, "prefix": "/sockjs", "transport": transport, "n": plan.sessions,
                     "target": target, "b64": target is not None, "lines": lines,
                     "concurrency": plan.open_concurrency,
                     "timeout": 600 + 2 * (plan.warmup + plan.seconds)}
    client, lines = start_node(ctx, programs["client"], client_config, ctx.workdir / f"client-{label}.log")
    try:
        opened = lines.expect("open", 300)
        result = {"sessions": opened["sessions"], "open_seconds": opened["seconds"]}
        for phase, interval in (("latency", plan.latency_interval_ms), ("capacity", plan.capacity_interval_ms)):
            if phase not in phases:
                continue
            pusher.send(f"interval {interval}")
            time.sleep(plan.warmup)
            window = CpuWindow({**groups, "client": client.pid})
            pusher.send("stats")
            before = pusher.expect("stats", 10)
            window.start()
            lines.send(f"measure {plan.seconds}")
            lines.expect("measure-start", 10)
            end = lines.expect("measure-end", plan.seconds + 60)
            window.stop()
            pusher.send("stats")
            after = pusher.expect("stats", 10)
            result[phase] = window_result(plan, interval, end, before, after, window)
            ctx.log(f"{label} {phase}: {summary(result[phase])}")
        lines.send("exit")
        client.wait(30)
        return result
    finally:
        ctx.procs.stop(client)


def window_result(plan: Plan, interval: int, end: dict, before: dict, after: dict, window: CpuWindow) -> dict:
    seconds = end["seconds"]
    return {
        "offered": plan.offered(interval), "rate": end["rate"], "delivered": end["delivered"],
        "seconds": seconds, "pushed_rate": (after["sent"] - before["sent"]) / seconds,
        "skipped": after["skipped"] - before["skipped"],
        "p50_ms": end["p50"], "p90_ms": end["p90"], "p99_ms": end["p99"], "max_ms": end["max"],
        "requests": end["requests"], "streams_reopened": end["reopened"], "closed_frames": end["closed"],
        "connections_lost": end["lost"],
        "cores": {name: round(window.cores(name), 3) for name in window.used},
        "others_cores": round(window.others / window.seconds, 3) if window.seconds else None,
        "us_per_message": {name: round(window.used[name] / max(1, end["delivered"]) * 1e6, 1)
                           for name in window.used},
    }


def summary(d: dict) -> str:
    skipped = f" ({d['skipped']:,} pushes skipped: paused)" if d["skipped"] else ""
    cores = ", ".join(f"{k} {v:.2f}" for k, v in d["cores"].items())
    return (f"{d['rate']:,.0f} msg/s delivered of {d['pushed_rate']:,.0f}/s pushed{skipped}, "
            f"p50 {fmt(d['p50_ms'])} ms, p99 {fmt(d['p99_ms'])} ms; cores {cores}, "
            f"others {d['others_cores']}")


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def quiet(ctx: ScenarioContext) -> None:
    busy = wait_for_quiet()
    if busy > 0.3:
        ctx.log(f"machine still busy ({busy:.2f} cores used by other processes); measuring anyway")


def start_pushbackend(ctx: ScenarioContext, plan: Plan, label: str) -> tuple[Any, JsonLines]:
    """The C push backend (bench/client/pushbackend.c) behind Orbited and the relaying peer."""
    backend = ctx.procs.start([c_client("pushbackend"), str(plan.latency_interval_ms), str(plan.size),
                               str(plan.slots)], stdout_pipe=True, stdin=True,
                              log=ctx.workdir / f"backend-{label}.log")
    return backend, JsonLines(backend, "pushbackend")


def measure_orbited(ctx: ScenarioContext, plan: Plan, programs: dict[str, Path], transport: str,
                    phases: tuple[str, ...] = PHASES, window: int = 1, workers: int = 0) -> dict:
    """Orbited in one process, or with ``workers`` (their CPU counts: they share the master's
    process group)."""
    label = f"orbited{f'-workers{workers}' if workers else ''}-{transport}" + (f"-w{window}" if window > 1 else "")
    quiet(ctx)
    backend, backend_lines = start_pushbackend(ctx, plan, label)
    server = None
    try:
        backend_port = backend_lines.expect("ready", 30)["port"]
        workdir = ctx.workdir / label
        workdir.mkdir()
        port = free_port()
        config = orbited_config(workdir, port, backend_port, workers)
        server = ctx.procs.start([*ctx.orbited, "--config", str(config)], log=workdir / "server.log", cwd=workdir)
        wait_port(port, proc=server)
        return drive(ctx, plan, programs, label, port, {"server": server.pid, "backend": backend.pid},
                     transport, f"127.0.0.1:{backend_port}", backend_lines, phases=phases)
    finally:
        if server is not None:
            ctx.procs.stop(server)
        ctx.procs.stop(backend)


def measure_peer(ctx: ScenarioContext, plan: Plan, programs: dict[str, Path], module: Path,
                 transport: str, phases: tuple[str, ...] = PHASES, window: int = 1) -> dict:
    label = f"sockjs-node-{transport}" + (f"-w{window}" if window > 1 else "")
    quiet(ctx)
    peer, lines = start_node(ctx, programs["peer"], {"interval": plan.latency_interval_ms, "size": plan.size,
                                                     "slots": plan.slots, "sockjs": str(module)}, ctx.workdir / f"{label}.log")
    try:
        port = lines.expect("ready", 30)["port"]
        return drive(ctx, plan, programs, label, port, {"server": peer.pid}, transport, None, lines,
                     phases=phases)
    finally:
        ctx.procs.stop(peer)


def measure_relay(ctx: ScenarioContext, plan: Plan, programs: dict[str, Path], module: Path,
                  transport: str, phases: tuple[str, ...] = PHASES, window: int = 1) -> dict:
    """sockjs-node relaying from the same C push backend as Orbited, one TCP connection per session."""
    label = f"sockjs-node-relay-{transport}" + (f"-w{window}" if window > 1 else "")
    quiet(ctx)
    backend, backend_lines = start_pushbackend(ctx, plan, label)
    relay = None
    try:
        backend_port = backend_lines.expect("ready", 30)["port"]
        relay, lines = start_node(ctx, programs["relay"], {"backend": backend_port, "sockjs": str(module)},
                                  ctx.workdir / f"{label}.log")
        port = lines.expect("ready", 30)["port"]
        return drive(ctx, plan, programs, label, port, {"server": relay.pid, "backend": backend.pid},
                     transport, None, backend_lines, lines=True, phases=phases)
    finally:
        if relay is not None:
            ctx.procs.stop(relay)
        ctx.procs.stop(backend)


# =========================================================================== the scenario


def run(ctx: ScenarioContext) -> dict:
    plan = Plan.for_run(ctx.quick)
    module = sockjs_node_module()
    programs = write_programs(ctx.workdir)
    measures = {
        "orbited": lambda transport, phases, window: measure_orbited(ctx, plan, programs, transport, phases,
                                                                     window),
        "orbited_workers": lambda transport, phases, window: measure_orbited(ctx, plan, programs, transport,
                                                                             phases, window, WORKERS),
        "peer": lambda transport, phases, window: measure_peer(ctx, plan, programs, module, transport, phases,
                                                               window),
        "relay": lambda transport, phases, window: measure_relay(ctx, plan, programs, module, transport, phases,
                                                                 window),
    }
    data: dict[str, dict[str, Any]] = {}
    for transport in TRANSPORTS:
        data[transport] = {label: measure(transport, PHASES, 1) for label, measure in measures.items()}
        time.sleep(1.0)
    # More latency windows, alternating between the servers, so that a disturbed stretch of time
    # hits one window of one server rather than decide its figure.
    windows = {transport: {label: [d["latency"]] for label, d in by_server.items()}
               for transport, by_server in data.items()}
    for window in range(2, plan.latency_windows + 1):
        for transport in TRANSPORTS:
            for label, measure in measures.items():
                windows[transport][label].append(measure(transport, ("latency",), window)["latency"])
    for transport, by_server in data.items():
        for label, d in by_server.items():
            d["latency"] = median_window(windows[transport][label])
    (ctx.workdir / "raw.json").write_text(json.dumps(data, indent=1))
    return build_result(plan, data)


def compare(n: str, lat: float, ours: dict, theirs: dict, peer_name: str, suffix: str, target: str) -> list[dict]:
    """The three rows of one comparison: capacity, latency p50 and p99."""
    return [{"name": f"{row}{suffix}", "unit": unit, "orbited": ours[phase][key], "peer": theirs[phase][key],
             "peer_name": peer_name, "better": better, "target": target}
            for row, unit, phase, key, better in (
                (f"messages delivered at saturation, {n}", "msg/s", "capacity", "rate", "higher"),
                (f"push latency p50 at {lat:,.0f} msg/s, {n}", "ms", "latency", "p50_ms", "lower"),
                (f"push latency p99 at {lat:,.0f} msg/s, {n}", "ms", "latency", "p99_ms", "lower"))]


def server_rows(by_server: dict[str, Any]) -> list[tuple[str, dict]]:
    """(how the notes name it, its figures) for each server measured."""
    names = {"orbited_workers": f"Orbited, workers = {WORKERS}", "orbited": "Orbited, one process",
             "peer": PEER_NAME, "relay": RELAY_NAME}
    return [(name, by_server[key]) for key, name in names.items() if key in by_server]


def median_window(windows: list[dict]) -> dict:
    """The window with the median p50, with p99 the median of the windows' p99s and every round kept."""
    ordered = sorted(windows, key=lambda w: w["p50_ms"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["p99_ms"] = statistics.median(w["p99_ms"] for w in windows)
    chosen["round_p50_ms"] = [w["p50_ms"] for w in windows]
    chosen["round_p99_ms"] = [w["p99_ms"] for w in windows]
    return chosen


def share_lower(ours: list[float], theirs: list[float]) -> float:
    """How often one of our windows beats one of theirs (ties count half): the Mann-Whitney U
    statistic over both sets of windows, scaled to 0..1.  A ≥ 1x verdict on two medians of five
    windows each says little when this is near one half."""
    pairs = [(a < b) + 0.5 * (a == b) for a in ours for b in theirs]
    return sum(pairs) / len(pairs)


def build_result(plan: Plan, data: dict[str, dict[str, Any]]) -> dict:
    lat, cap = plan.offered(plan.latency_interval_ms), plan.offered(plan.capacity_interval_ms)
    metrics = []
    notes = [
        (f"Latency: {plan.latency_windows} window(s) per server, alternating between the servers (each on a "
         "fresh server and fresh sessions); the figure is the median window's p50 and the median of the "
         "windows' p99. Per-window figures are in the notes below."),
        (f"Load: {plan.sessions:,} SockJS sessions per server, each pushed a {plan.size}-byte timestamped "
         f"message on a schedule spread evenly over {plan.slots} slots of the interval. Latency phase: one "
         f"message every {plan.latency_interval_ms} ms per session ({lat:,.0f} msg/s offered); capacity phase: "
         f"every {plan.capacity_interval_ms} ms ({cap:,.0f} msg/s offered, more than either server delivers), "
         f"{plan.seconds:.0f} s measured after {plan.warmup:.0f} s of warm-up each, on the same open sessions. "
         "One Node load client (raw HTTP/1.1 keep-alive sockets) for both servers; latency is push timestamp "
         "to arrival in the client, both read from CLOCK_MONOTONIC; 'delivered' counts pushed messages that arrived."),
        ("Orbited's sessions are TCPSockets through /sockjs (handshake, then base64) to a backend in C "
         "(bench/client/pushbackend.c) that pushes on the schedule; sockjs-node 0.3.24 pushes the same messages on the same schedule from its "
         "own handler (no TCP hop and no base64, but the pushing shares its one event loop). Orbited's "
         "backend skips a connection Orbited has paused (over 64 KiB buffered) and counts the skips; "
         "sockjs-node has no backpressure and queues. Both batch what is queued for a session into one "
         "frame (Orbited also through TCP: one backend read may carry several pushed lines)."),
        (f"The targets are judged on Orbited with `[global] workers = {WORKERS}`, the way an operator runs it "
         f"on this {WORKERS}-core machine (the master hands each session's requests to one worker, chosen by "
         "session id), against "
         f"{PEER_NAME} pushing from its own handler, as this benchmark has always done; sockjs-node has no "
         "multi-process mode of its own for these transports (a session's state lives in one process, so "
         "it would need a sticky load balancer in front). Orbited in one process, the default, is reported "
         "in rows without a target. The 'relaying' rows add, for comparison and without a target, sockjs-node 0.3.24 fed "
         "the way Orbited is: each session opens its own TCP connection to the same C push backend and "
         "relays what it reads (as text, no base64), so both servers carry the same backend hop."),
        ("The machine has 2 cores shared by the server, the client (and for Orbited the backend); CPU "
         "figures below are per process group over the window, 'others' is everything else on the machine."),
    ]
    for transport, name in TRANSPORTS.items():
        single = data[transport]["orbited"]
        ours, theirs = data[transport].get("orbited_workers", single), data[transport]["peer"]
        n = f"{plan.sessions:,} sessions, {name}"
        metrics += compare(n, lat, ours, theirs, PEER_NAME, "", "≥ 1x")
        if ours is not single:
            metrics += compare(n, lat, single, theirs, PEER_NAME, ", Orbited in one process (workers = 0)", "")
        relay = data[transport].get("relay")
        if relay is not None:
            metrics += compare(n, lat, ours, relay, RELAY_NAME, ", vs sockjs-node relaying from the same backend", "")
        for label, d in server_rows(data[transport]):
            for phase in ("latency", "capacity"):
                w = d[phase]
                us = ", ".join(f"{k} {v:.0f}" for k, v in w["us_per_message"].items())
                notes.append(
                    f"{name}, {label}, {phase} phase: {summary(w)}; p90 {fmt(w['p90_ms'])} ms, max "
                    f"{fmt(w['max_ms'])} ms; {w['requests']:,} HTTP requests in the window; CPU µs per "
                    f"delivered message: {us}.")
            notes.append(f"{name}, {label}: {d['sessions']:,} sessions opened in {d['open_seconds']:.1f} s.")
            if "round_p50_ms" in d["latency"]:
                rounds = ", ".join(f"{p50:.2f}/{p99:.1f}" for p50, p99 in
                                   zip(d["latency"]["round_p50_ms"], d["latency"]["round_p99_ms"]))
                notes.append(f"{name}, {label}, latency windows (p50/p99 ms, in the order run): {rounds}.")
    for transport, name in TRANSPORTS.items():
        ours, theirs = data[transport].get("orbited_workers", data[transport]["orbited"])["latency"], \
            data[transport]["peer"]["latency"]
        if "round_p50_ms" in ours and "round_p50_ms" in theirs:
            shares = "; ".join(f"{key[6:9]} {share_lower(ours[key], theirs[key]):.0%}"
                               for key in ("round_p50_ms", "round_p99_ms"))
            notes.append(f"{name}, judged latency rows: share of (Orbited window, {PEER_NAME} window) pairs in "
                         f"which Orbited's figure is lower: {shares}. Near 50% the verdict on that row is "
                         "decided by which windows the run drew.")
    for transport, name in TRANSPORTS.items():
        for label, d in server_rows(data[transport]):
            client = d["capacity"]["cores"].get("client", 0.0)
            if client >= 0.8:
                notes.append(f"{name}, {label}, capacity phase: the load client used {client:.2f} cores, so "
                             "that figure may be bounded by the client rather than the server.")
            if d["capacity"]["rate"] >= 0.98 * cap:
                notes.append(f"{name}, {label}, capacity phase: delivered all {cap:,.0f} msg/s offered, so it "
                             "was not saturated; its capacity is at least that.")
    return {"scenario": NAME, "title": "/sockjs push to 1,000 sessions vs sockjs-node 0.3.24",
            "metrics": metrics, "notes": notes, "series": data}
