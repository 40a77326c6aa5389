"""Processes of a benchmark: free loopback ports, start in a process group, always stop.

Every server, peer, backend and load client runs in its own process group
(``start_new_session``) so that a forking server such as websockify is stopped
whole, children included, and so that its memory and CPU can be summed over
the group.  A :class:`ProcessSet` stops everything it started when its
``with`` block exits, however it exits; :func:`stop_all` is the last resort the
harness calls on SIGTERM/SIGINT and at exit.  Nothing here ever kills a
process it did not start.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

_LIVE: set[subprocess.Popen] = set()


from orbited.testing.ports import free_port, wait_port  # noqa: F401 (re-exported)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Signal the process group of ``proc``, wait, then SIGKILL the group if needed."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # Forked children may outlive their leader: the group is ours, end it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    _LIVE.discard(proc)
    return proc.returncode


def stop_all() -> None:
    """Stop every process any :class:`ProcessSet` started and has not stopped yet."""
    for proc in list(_LIVE):
        stop_process(proc, timeout=3.0)


class ProcessSet:
    """The processes of one scenario; ``with ProcessSet() as procs:`` stops them all at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: Sequence[str | os.PathLike], *, log: Path | None = None,
              cwd: Path | None = None, env: dict[str, str] | None = None,
              stdin: bool = False, stdout_pipe: bool = False) -> subprocess.Popen:
        """Start ``argv`` in a new process group; stderr (and stdout unless piped) go to ``log``."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else out,
                stderr=out,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        finally:
            if log is not None:
                out.close()
        self.procs.append(proc)
        _LIVE.add(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        code = stop_process(proc, sig, timeout)
        if proc.stdin:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if proc.stdout:
            proc.stdout.close()
        return code

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc, timeout=5.0)
        self.procs.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonLines:
    """JSON lines from a child's stdout, read with a deadline so a hung child cannot hang the run."""

    def __init__(self, proc: subprocess.Popen, name: str = ""):
        if proc.stdout is None:
            raise ValueError("start the process with stdout_pipe=True")
        self.proc = proc
        self.name = name or str(proc.args[0])
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(proc.stdout, selectors.EVENT_READ)
        os.set_blocking(proc.stdout.fileno(), False)

    def next(self, timeout: float) -> dict[str, Any]:
        """The next JSON object; raises TimeoutError, or RuntimeError when the child ends first."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no output within {timeout:.0f}s")
            if not self._selector.select(left):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                self.proc.wait(5)
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} "
                                   f"before printing a result")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        event = json.loads(line)
        if event.get("event") == "error":
            raise RuntimeError(f"{self.name}: {event.get('error')}")
        return event

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """Skip to the next object whose ``event`` is ``event``."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.next(max(0.1, deadline - time.monotonic()))
            if found.get("event") == event:
                return found

    def send(self, line: str) -> None:
        """One line to the child's stdin (the hold client steps on these)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
