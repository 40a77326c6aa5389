"""orbited.testing.ports: the loopback ports every test and benchmark takes."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from orbited.testing.ports import free_port, wait_port


def test_free_port_never_hands_out_the_same_port_twice():
    # The kernel repeats itself: 2,000 plain bind(0)s here gave about 135 repeats,
    # and a peer given two equal ports dies with EADDRINUSE.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)


def test_a_free_port_can_be_bound_and_wait_port_sees_it_open():
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        wait_port(port, timeout=5)


def test_wait_port_fails_early_when_the_process_died():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_port(free_port(), timeout=30, proc=proc)
