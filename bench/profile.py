"""Sampling profiles of a server under load (``--profile``), with py-spy, and their text summary.

py-spy attaches to a running process, so the server starts and is measured
exactly as without profiling; only the sampling itself costs CPU (a few per
cent at the rate used here), which is why profiled runs are for finding where
time goes, not for the reference figures.  py-spy is installed from PyPI into
``bench/.work/peers/py-spy``; it is never a project dependency.
"""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

from bench.context import ScenarioContext
from bench.peers import python_venv

RATE = 250  # samples per second


class Profiler:
    """``py-spy record`` attached to ``pid`` until :meth:`stop`; writes collapsed stacks to ``out``."""

    def __init__(self, ctx: ScenarioContext, pid: int, out: Path):
        spy = python_venv("py-spy", ["py-spy"]) / "py-spy"
        self.ctx = ctx
        self.out = out
        self.proc = ctx.procs.start([spy, "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw",
                                     "--output", str(out)], log=out.with_suffix(".log"))

    def stop(self) -> Path | None:
        """SIGINT makes py-spy write its file; then the text summary goes next to it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        self.ctx.procs.stop(self.proc)
        if not self.out.exists():
            return None
        summary = self.out.with_suffix(".txt")
        summary.write_text(summarize(self.out))
        return summary


def summarize(path: Path, top: int = 40) -> str:
    """Self and inclusive share of samples per function, from py-spy's collapsed ('raw') stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples at {RATE}/s ({total / RATE:.1f} s of CPU)", "", "self:"]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top * 2)]
    return "\n".join(lines) + "\n"
