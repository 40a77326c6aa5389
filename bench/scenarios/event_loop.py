"""Orbited's event loop (orbited.reactor.LeanEPollReactor, the default) vs Twisted's epoll reactor unchanged.

The same Orbited twice, the only difference ``[global] reactor = twisted-epoll``
for the peer, under legacy_comet's echo load: 50 /tcp sessions over xhrstream
and over longpoll, each with one 32-byte message in flight, through the same
Node echo backend with the same client.  The runs alternate, three each, and
each side's median run is reported, because this VM's speed drifts.

What differs between the two is only how writes leave and how events are
dispatched (see orbited/reactor.py): the lean reactor sends an iteration's
writes at its end, straight to the socket, where stock Twisted registers the
socket for EPOLLOUT and sends on the next iteration; and it skips the legacy
log context around each event.  A round trip here is several writes (the
POST's answer, the data to the backend, the packet on the downstream), so
the loop's write path is most of what is compared.
"""

from __future__ import annotations

from typing import Any

from bench.common import JsonLines, ScenarioContext, node, node_modules
from bench.scenarios.legacy_comet import BACKENDS, Plan, measure_echo, median_run

NAME = "event_loop"
PEER = "Twisted's epoll reactor (reactor = twisted-epoll)"
TRANSPORTS = ("xhrstream", "longpoll")


def run(ctx: ScenarioContext) -> dict:
    plan = Plan.for_run(ctx.quick)
    node_modules()
    backend_proc = ctx.procs.start([node(), str(BACKENDS)], stdout_pipe=True, log=ctx.workdir / "backends.log")
    backend = JsonLines(backend_proc, "backends").next(30)["echo"]
    data: dict[str, Any] = {}
    for transport in TRANSPORTS:
        runs: dict[str, list[dict]] = {"lean": [], "stock": []}
        for _ in range(plan.repeats):
            runs["lean"].append(measure_echo(ctx, plan, backend, backend_proc.pid, transport))
            runs["stock"].append(measure_echo(ctx, plan, backend, backend_proc.pid, transport,
                                              reactor="twisted-epoll"))
        data[transport] = {side: median_run(done) for side, done in runs.items()}
    return build_result(plan, data)


def build_result(plan: Plan, data: dict[str, Any]) -> dict:
    metrics = []
    notes = [
        (f"Load: legacy_comet's echo client, {plan.sessions} /tcp sessions with one {plan.size}-byte message in "
         f"flight each, {plan.seconds:.0f} s after {plan.warmup:.0f} s of warm-up, against the Node echo backend; "
         f"{plan.repeats} runs per side and transport, alternating; each figure is the side's median run. "
         "'orbited' is the default reactor (orbited.reactor.LeanEPollReactor); the peer is the same Orbited "
         "with [global] reactor = twisted-epoll."),
    ]
    for transport in TRANSPORTS:
        lean, stock = data[transport]["lean"], data[transport]["stock"]
        metrics += [
            {"name": f"echo round trips, {plan.sessions} sessions, {transport}", "unit": "round trips/s",
             "orbited": lean["rate"], "peer": stock["rate"], "peer_name": PEER, "better": "higher", "target": ""},
            {"name": f"server CPU per round trip, {transport}", "unit": "µs",
             "orbited": lean["us_per_round_trip"]["server"], "peer": stock["us_per_round_trip"]["server"],
             "peer_name": PEER, "better": "lower", "target": ""},
            {"name": f"load client CPU per round trip, {transport}", "unit": "µs",
             "orbited": lean["us_per_round_trip"]["client"], "peer": stock["us_per_round_trip"]["client"],
             "peer_name": PEER, "better": "lower", "target": ""},
            {"name": f"echo round trip p99, {transport}", "unit": "ms", "orbited": lean["p99_ms"],
             "peer": stock["p99_ms"], "peer_name": PEER, "better": "lower", "target": ""},
        ]
        for label, d in (("lean (default)", lean), ("twisted-epoll", stock)):
            us = d["us_per_round_trip"]
            notes.append(
                f"{transport}, {label}: {d['rate']:,.0f} round trips/s (runs: "
                f"{', '.join(f'{rate:,.0f}' for rate in d['rates'])}), p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms; "
                f"CPU µs per round trip: server {us['server']:.0f}, client {us['client']:.0f}, backend "
                f"{us['backend']:.0f}; other processes {d['others_cores']:.2f} cores.")
    return {"scenario": NAME, "title": "Event loop: Orbited's epoll reactor vs Twisted's",
            "metrics": metrics, "notes": notes, "series": data}
