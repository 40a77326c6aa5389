"""Small TCP backends run as their own processes, for flow-control and failure tests.

    python -m tests.support.backends source PORT NBYTES   # sends NBYTES of a known pattern, then closes
    python -m tests.support.backends sink PORT DELAY      # reads nothing for DELAY s, then counts all it gets
    python -m tests.support.backends blackhole PORT       # listens but never accepts (connects hang once full)

Each prints 'ready' once listening; 'sink' prints the byte count and a SHA-256 when the peer closes.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

CHUNK = 65536


def pattern(nbytes: int):
    """A deterministic byte stream: every 256-byte block is 0..255 rotated by its index."""
    block = bytes(range(256))
    sent = 0
    index = 0
    while sent < nbytes:
        piece = (block[index % 256:] + block[: index % 256]) * (CHUNK // 256)
        piece = piece[: nbytes - sent]
        yield piece
        sent += len(piece)
        index += 1


def pattern_digest(nbytes: int) -> str:
    digest = hashlib.sha256()
    for piece in pattern(nbytes):
        digest.update(piece)
    return digest.hexdigest()


def listen(port: int, backlog: int = 16) -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(backlog)
    print("ready", flush=True)
    return server


def never_reading() -> socket.socket:
    """A listening socket in the test's own process, for a backend that accepts and never reads:
    its small receive buffer fills soon, so Orbited's own buffer to it does too."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    return server


def source(port: int, nbytes: int) -> None:
    with listen(port) as server:
        conn, _ = server.accept()
        with conn:
            for piece in pattern(nbytes):
                conn.sendall(piece)


def sink(port: int, delay: float) -> None:
    with listen(port) as server:
        conn, _ = server.accept()
        time.sleep(delay)
        digest, total = hashlib.sha256(), 0
        with conn:
            while data := conn.recv(CHUNK):
                digest.update(data)
                total += len(data)
        print(total, digest.hexdigest(), flush=True)


def blackhole(port: int) -> None:
    """Fill the accept queue ourselves so that further connects get no answer."""
    with listen(port, backlog=0) as server:
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(filler)
        print("full", flush=True)
        time.sleep(3600)
        del server, fillers


class SlowBackend:
    """A backend in a thread of the test's own process that reads at ``rate`` bytes/s, echoing
    what it reads when ``echo`` and shutting its sending side once ``half_close_after`` bytes
    arrived, and records every byte until its peer closes."""

    def __init__(self, rate: float, echo: bool = False, half_close_after: int = 0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.rate, self.echo, self.half_close_after = rate, echo, half_close_after
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(60)
        with conn:
            while True:
                try:
                    data = conn.recv(4096)
                except ConnectionResetError:
                    return
                if not data:
                    return
                self.received += data
                if self.echo:
                    try:
                        conn.sendall(data)
                    except OSError:
                        pass
                if self.half_close_after and len(self.received) >= self.half_close_after:
                    self.half_close_after = 0
                    conn.sendall(b"bye")
                    conn.shutdown(socket.SHUT_WR)  # done sending, still reading
                time.sleep(len(data) / self.rate)

    def wait(self) -> bytes:
        self.thread.join(60)
        self.sock.close()
        return bytes(self.received)


class ScriptedBackend:
    """A backend in a thread of the test's own process for protocol tests: each ``serve(chunks)``
    accepts one connection, sends every chunk as its own read (a pause between them, Nagle off),
    and records what the peer sends until it closes (``received()``)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self._received = bytearray()
        self._thread: threading.Thread | None = None

    def serve(self, chunks: list[bytes], pause: float = 0.05) -> None:
        self._received = bytearray()
        self._thread = threading.Thread(target=self._serve, args=(chunks, pause), daemon=True)
        self._thread.start()

    def _serve(self, chunks: list[bytes], pause: float) -> None:
        conn, _ = self.sock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(60)
        reader = threading.Thread(target=self._read, args=(conn,), daemon=True)
        reader.start()
        for chunk in chunks:
            time.sleep(pause)
            conn.sendall(chunk)
        reader.join(60)
        conn.close()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(CHUNK)
            except OSError:
                return
            if not data:
                return
            self._received += data

    def received(self) -> bytes:
        """What the peer sent, once it has closed."""
        if self._thread:
            self._thread.join(60)
        return bytes(self._received)

    def close(self) -> None:
        self.sock.close()


@contextmanager
def running(mode: str, port: int, *args: object) -> Iterator[subprocess.Popen]:
    """``python -m tests.support.backends MODE PORT ARGS`` as a test's backend: yielded once it
    listens (a blackhole once its accept queue is full), stopped afterwards.  Its stdout is text,
    for what a sink reports when its peer closes."""
    from tests.support.procs import stop_process

    proc = subprocess.Popen([sys.executable, "-m", "tests.support.backends", mode, str(port), *map(str, args)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        if mode == "blackhole":
            assert proc.stdout.readline().strip() == "full"
        yield proc
    finally:
        stop_process(proc)
        proc.stdout.close()


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "source":
        source(port, int(sys.argv[3]))
    elif mode == "sink":
        sink(port, float(sys.argv[3]))
    elif mode == "blackhole":
        blackhole(port)
