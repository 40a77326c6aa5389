"""Loopback ports for the test suite and the benchmarks: take a free one, wait for one to open."""

from __future__ import annotations

import socket
import subprocess
import time

# Ports this process has handed out: the kernel may give a just-closed port out again
# (measured: 2 in 3,000 groups of five calls had a repeat), and a peer started with two
# equal ports fails with EADDRINUSE (seen with RabbitMQ's AMQP and STOMP listeners).
_handed_out: set[tuple[str, int]] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just gave out on ``host`` and this process never handed out before; racy
    against other processes, but only our own bind here."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    held: list[socket.socket] = []  # repeats stay bound, so the next bind(0) gets another port
    try:
        for _ in range(10000):
            sock = socket.socket(family, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((host, 0))
            port = sock.getsockname()[1]
            if (host, port) not in _handed_out:
                _handed_out.add((host, port))
                return port
        raise RuntimeError(f"no fresh port on {host} after 10,000 tries")
    finally:
        for sock in held:
            sock.close()


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0,
              proc: subprocess.Popen | None = None) -> None:
    """Block until something accepts on ``host:port``; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before {host}:{port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout}s")
