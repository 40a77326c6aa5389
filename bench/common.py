"""The one import a scenario needs: the harness's shared helpers, re-exported.

The helpers live in small modules by concern (``procs``: ports and process
groups; ``measure``: /proc memory and CPU, percentiles; ``peers``: peer venvs
and npm; ``context``: what ``run(ctx)`` receives).  Scenarios may import from
those directly; this module only gives them one stable place to import from.
"""

from bench.context import ScenarioContext
from bench.measure import (
    CpuWindow,
    Memory,
    group_cpu_seconds,
    group_memory,
    group_pids,
    machine_cpu_seconds,
    machine_info,
    percentile,
    summarize,
    wait_for_quiet,
)
from bench.peers import (
    BENCH,
    PEERS,
    REPO,
    WORK,
    SetupError,
    c_client,
    node,
    node_modules,
    python27,
    python27_packages,
    python_venv,
)
from bench.procs import JsonLines, ProcessSet, free_port, stop_process, wait_port

__all__ = [
    "BENCH", "PEERS", "REPO", "WORK",
    "CpuWindow", "JsonLines", "Memory", "ProcessSet", "ScenarioContext", "SetupError",
    "c_client", "free_port", "group_cpu_seconds", "group_memory", "group_pids", "machine_cpu_seconds",
    "machine_info", "node", "node_modules", "percentile", "python27", "python27_packages", "python_venv",
    "stop_process", "summarize", "wait_for_quiet", "wait_port",
]
