"""Start real processes on random loopback ports and always clean them up."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from orbited.testing.ports import free_port, wait_port  # noqa: F401 (re-exported)

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / "tests" / ".work"


def scratch_dir(prefix: str) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=WORK))
    path.chmod(0o755)
    return path


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig) if _own_group(proc) else proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL) if _own_group(proc) else proc.kill()
            proc.wait(5)
    return proc.returncode


def _own_group(proc: subprocess.Popen) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False


_LISTEN_LINE = re.compile(r"^\s*[a-z]+://(\[[^\]]*\]|[^:\s/]*):(\d+)\s*$")


def listen_addresses(config: str) -> list[tuple[str, int]]:
    """Where to connect to reach each TCP listener of a config's [listen] section."""
    found, in_listen = [], False
    for line in config.splitlines():
        if line.strip().startswith("["):
            in_listen = line.strip().lower() == "[listen]"
        elif in_listen and (match := _LISTEN_LINE.match(line)):
            host = match[1].strip("[]")
            host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
            found.append((host, int(match[2])))
    return found


class OrbitedProcess:
    """The real ``orbited`` command on a config the test writes.

    A root test run gets ``user = <current user>`` unless the config names
    one, because Orbited refuses to keep root.
    """

    def __init__(self, config: str, args: tuple[str, ...] = (), wait_for: int | None = None,
                 env: dict[str, str] | None = None, files_limit: int | None = None):
        self.dir = scratch_dir("orbited-")
        if os.getuid() == 0 and not re.search(r"^\s*user\s*=", config, re.MULTILINE) and "[global]" in config:
            config = config.replace("[global]", f"[global]\nuser = {pwd.getpwuid(0).pw_name}", 1)
        elif os.getuid() == 0 and "[global]" not in config:
            config = f"[global]\nuser = {pwd.getpwuid(0).pw_name}\n" + config
        self.path = self.dir / "orbited.cfg"
        self.path.write_text(config)
        self.log_path = self.dir / "orbited.log"
        self.args = args
        self.wait_for = wait_for
        self.env = env
        self.files_limit = files_limit  # its open-file limit (soft and hard), if lower than ours
        self.proc: subprocess.Popen | None = None

    def start(self) -> OrbitedProcess:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [*self._limits(), sys.executable, "-m", "orbited", "--config", str(self.path), *self.args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True,
            env={**os.environ, **(self.env or {})},
        )
        if self.wait_for is not None:
            try:
                wait_port(self.wait_for, proc=self.proc)
                # Listeners are bound one after another: the one waited for being up does not
                # mean the others are (a test once raced the stomp:// line after http://).
                for host, port in listen_addresses(self.path.read_text()):
                    if port != self.wait_for:
                        wait_port(port, host, proc=self.proc)
            except Exception:  # noqa: BLE001 (re-raised with the log below)
                self.stop()
                raise RuntimeError(f"orbited did not start:\n{self.log()}") from None
        return self

    def _limits(self) -> list[str]:
        limit = self.files_limit
        return [] if limit is None else ["prlimit", f"--nofile={limit}:{limit}", "--"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        code = stop_process(self.proc, sig) if self.proc else 0
        if self.proc:
            self._log.close()
        return code

    def status(self, port: int | None = None) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port or self.wait_for}/system/status", timeout=5) as r:
            return json.load(r)

    def wait_workers(self, count: int, timeout: float = 15.0) -> None:
        """Until ``count`` workers ([global] workers) have reported to the master: before that,
        the master serves what they would."""
        deadline = time.monotonic() + timeout
        while sum(w["ready"] for w in self.status().get("workers", [])) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} workers did not start:\n{self.log()}")
            time.sleep(0.1)

    def __enter__(self) -> OrbitedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rss_kb(pid: int) -> int:
    """A process's resident memory in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
