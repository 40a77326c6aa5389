"""What the benchmarks measure from outside the servers: /proc memory and CPU, percentiles.

Memory and CPU are summed over a process group, because a peer that forks per
connection (websockify) spreads one "server" over hundreds of processes.
Memory is PSS (proportional set size: a shared page counts 1/n in each of the
n processes that map it), so the sum over a group is the memory the group
really costs; RSS is kept alongside and overcounts shared pages.  Nothing here
changes what it measures.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            # comm may hold spaces and parentheses: split after the last ')'.
            return handle.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def group_pids(pgid: int) -> list[int]:
    """Every live process whose process group is ``pgid`` (a leader started with start_new_session)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        # fields[0] is state, [1] ppid, [2] pgrp
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


@dataclass(frozen=True)
class Memory:
    pss: int  # bytes
    rss: int  # bytes
    processes: int


def group_memory(pgid: int) -> Memory:
    """PSS and RSS summed over a process group, from /proc/PID/smaps_rollup."""
    pss = rss = count = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                text = handle.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        count += 1
        for line in text.splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
            elif line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
    return Memory(pss, rss, count)


def group_cpu_seconds(pgid: int) -> float:
    """User+system CPU of a process group, reaped children included (cutime/cstime),
    so the total does not drop when a child exits and is waited for."""
    ticks = 0
    for pid in group_pids(pgid):
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / CLOCK_TICKS


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = _proc_stat_cpu()
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def machine_irq_seconds() -> float:
    """CPU seconds spent in interrupts and softirqs so far.

    Loopback TCP does much of its receive work in softirq context, which
    /proc/stat books here and not to the process that sent the bytes; so this
    is mostly our own benchmark traffic, not other people's load.
    """
    values = _proc_stat_cpu()
    return (values[5] + values[6]) / CLOCK_TICKS


def machine_steal_seconds() -> float:
    """CPU seconds the hypervisor gave to other guests while ours wanted to run (steal).

    On a shared virtual machine this moves with the neighbours' load and
    slows every process alike; a window with much steal is a slower window.
    """
    return _proc_stat_cpu()[7] / CLOCK_TICKS


def _proc_stat_cpu() -> list[int]:
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    return values + [0] * (8 - len(values))


def _user_processes() -> dict[int, tuple[int, int, int]]:
    """pid -> (pgrp, ppid, CPU ticks incl. reaped children) of every user-space process.

    Kernel threads (kthreadd and its children) are left out: ksoftirqd does
    the loopback traffic of the benchmark itself when softirqs pile up.
    """
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        fields = _stat_fields(pid)
        if fields is None or pid == 2 or int(fields[1]) == 2:
            continue
        found[pid] = (int(fields[2]), int(fields[1]), sum(int(v) for v in fields[11:15]))
    return found


class CpuWindow:
    """CPU used by named process groups, by everyone else, and by the machine, between start() and stop().

    "Everyone else" is every other user-space process (other people's test
    runs), counted so that a process that exits inside the window still
    counts, through its parent's reaped-children time.  The harness itself is
    not counted: it sleeps while it measures.
    """

    def __init__(self, groups: dict[str, int]):
        self.groups = groups
        self._start: dict[str, float] = {}
        self._machine: tuple[float, float] = (0.0, 0.0)
        self._processes: dict[int, tuple[int, int, int]] = {}
        self._t0 = 0.0
        self.seconds = 0.0
        self.used: dict[str, float] = {}
        self.machine_busy = 0.0  # CPU seconds, all processes
        self.irq = 0.0  # CPU seconds in (soft)irq: mostly the loopback traffic of the run itself
        self._irq = 0.0
        self.steal = 0.0  # CPU seconds stolen by the hypervisor (other guests on the host)
        self._steal = 0.0
        self.others = 0.0  # CPU seconds of user-space processes outside our groups

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._machine = machine_cpu_seconds()
        self._irq = machine_irq_seconds()
        self._steal = machine_steal_seconds()
        self._processes = _user_processes()
        self._start = {name: group_cpu_seconds(pgid) for name, pgid in self.groups.items()}

    def stop(self) -> None:
        self.used = {name: group_cpu_seconds(pgid) - self._start[name] for name, pgid in self.groups.items()}
        processes = _user_processes()
        busy, _total = machine_cpu_seconds()
        self.machine_busy = busy - self._machine[0]
        self.irq = machine_irq_seconds() - self._irq
        self.steal = machine_steal_seconds() - self._steal
        self.seconds = time.monotonic() - self._t0
        ours = set(self.groups.values()) | {os.getpgrp()}
        ticks = 0
        for pid, (pgrp, _ppid, now) in processes.items():
            if pgrp not in ours:
                before = self._processes.get(pid)
                ticks += now - (before[2] if before and before[0] == pgrp else 0)
        for pid, (pgrp, _ppid, before) in self._processes.items():
            if pid not in processes and pgrp not in ours:
                ticks -= before  # its lifetime total reached its parent's reaped-children time
        self.others = max(0, ticks) / CLOCK_TICKS

    def cores(self, name: str) -> float:
        """Average cores the group kept busy over the window."""
        return self.used[name] / self.seconds if self.seconds else 0.0


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Iterable[float]) -> dict[str, float]:
    data = list(values)
    return {
        "n": len(data),
        "min": min(data) if data else math.nan,
        "p50": percentile(data, 50),
        "p90": percentile(data, 90),
        "p99": percentile(data, 99),
        "max": max(data) if data else math.nan,
    }


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, object]:
    """What a reader needs to judge the numbers: the machine and the versions under test."""
    mem_total = 0
    try:
        with open("/proc/meminfo") as handle:
            mem_total = int(handle.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_total / 2**30, 1),
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "twisted": _version("Twisted"),
        "autobahn": _version("autobahn"),
        "orbited": _version("orbited"),
        "open_files_limit": _nofile(),
        "load_average": [round(v, 2) for v in load_average()],
    }


def _nofile() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_for_quiet(busy_cores: float = 0.3, max_wait: float = 60.0, sample: float = 1.0) -> float:
    """Wait (bounded) until the machine is nearly idle before a measurement starts.

    The machine is shared with other engineers' test runs; starting a window
    while they burn a core would charge their load to whichever server is
    measured next.  Returns the busy cores seen in the last sample, so the
    caller can record it when the wait ran out.
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy0, _ = machine_cpu_seconds()
        time.sleep(sample)
        busy1, _ = machine_cpu_seconds()
        cores = (busy1 - busy0) / sample
        if cores <= busy_cores or time.monotonic() >= deadline:
            return cores
