"""Bad input at every door of one real process, while good clients check they lose nothing.

The unit and hypothesis tests feed each parser on its own.  This runs them all
at once in the daemon: mutated HTTP requests and upgrades, mutated WebSocket
frames after a valid TCPSocket handshake (on /ws, /sockjs framed and raw, and
/stomp, with the echo backend answering while sockets fail), and mutated
STOMP frames from connected clients.  Meanwhile one /ws echo session and one STOMP subscriber must get
every byte and every message, and the log must hold no traceback.  A by-hand
run of this kind found that backend data arriving while autobahn closed a
broken WebSocket was logged as an unhandled error.

The inputs come from a fixed seed; the interleaving is up to the machine.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

from websockets.sync.client import connect as ws_connect

from tests.support.procs import OrbitedProcess, free_port
from tests.support.rawws import masked, upgrade_request

SECONDS = 15.0
SEED = 20261128


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(0, 4)):
        op = rng.random()
        if op < 0.35 and out:
            out[rng.randrange(len(out))] = rng.choice((0, 10, 13, 58, 92, 255, rng.randrange(256)))
        elif op < 0.55 and out:
            del out[rng.randrange(len(out))]
        elif op < 0.8:
            at = rng.randrange(len(out) + 1)
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        else:
            out += rng.randbytes(rng.randint(0, 300))
    return bytes(out)


def client_frame(rng: random.Random) -> bytes:
    """A masked frame (zero key) of any opcode, sometimes unfinished, sometimes with bad bits."""
    payload = rng.randbytes(rng.randint(0, 300))
    head = rng.choice((0x80, 0x80, 0x00, 0xC0)) | rng.choice((1, 2, 2, 0, 8, 9, 10, 3, 11))
    size = len(payload)
    length = bytes((0x80 | size,)) if size < 126 else bytes((0x80 | 126,)) + struct.pack("!H", size)
    return bytes((head,)) + length + b"\0\0\0\0" + payload


class Soak:
    def __init__(self, port: int, stomp: int, echo: int) -> None:
        self.port, self.stomp, self.echo = port, stomp, echo
        self.stop_at = time.monotonic() + SECONDS
        self.errors: list[str] = []
        self.counts: dict[str, int] = {}

    def running(self) -> bool:
        return time.monotonic() < self.stop_at

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def exchange(self, port: int, data: bytes, read: bool = True) -> bytes:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(data)
                return sock.recv(65536) if read else b""
        except OSError:
            return b""

    def http(self, rng: random.Random) -> None:
        paths = (b"/ws", b"/sockjs/info", b"/sockjs/000/s1/xhr", b"/sockjs/000/s1/xhr_send", b"/tcp",
                 b"/tcp/0123456789abcdef0123456789abcdef/xhrstream", b"/stomp", b"/static/Orbited.js",
                 b"/sockjs/websocket", b"/sockjs/000/s2/jsonp?c=f", b"/system/status")
        while self.running():
            body = rng.choice((b"", b'["x"]', b"[", rng.randbytes(40)))
            lines = [rng.choice((b"GET ", b"POST ", b"OPTIONS ")) + rng.choice(paths) + b" HTTP/1.1",
                     b"Host: 127.0.0.1:%d" % self.port, b"Content-Length: %d" % len(body)]
            if rng.random() < 0.5:
                lines += [b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Version: 13",
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
            request = b"\r\n".join(lines) + b"\r\n\r\n" + body
            self.exchange(self.port, mutate(rng, request) if rng.random() < 0.7 else request, rng.random() < 0.3)
            self.count("http")

    def websockets(self, rng: random.Random) -> None:
        target = b"127.0.0.1:%d" % self.echo
        doors = ((b"/ws", target), (b"/sockjs/websocket", target),
                 (b"/sockjs/000/%d/websocket", b'["' + target + b'"]'),
                 (b"/stomp", b"CONNECT\naccept-version:1.2\nhost:x\n\n\0"))
        while self.running():
            path, hello = rng.choice(doors)
            if b"%d" in path:
                path = path % rng.randrange(10**9)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(upgrade_request(self.port, path))
                    sock.recv(4096)
                    sock.sendall(masked(1, hello))
                    for _ in range(rng.randint(1, 6)):
                        frame = client_frame(rng)
                        sock.sendall(mutate(rng, frame) if rng.random() < 0.4 else frame)
                        self.count("ws frames")
                    sock.settimeout(0.05)
                    sock.recv(65536)
            except OSError:
                pass

    def stomp_frames(self, rng: random.Random) -> None:
        frames = (b"SEND\ndestination:/queue/q\n\nx\0", b"SEND\ndestination:/topic/t\nreceipt:r\n\nx\0",
                  b"SUBSCRIBE\nid:1\ndestination:/queue/q\nack:client\n\n\0", b"ACK\nid:1\n\n\0",
                  b"NACK\nid:1\n\n\0", b"BEGIN\ntransaction:t\n\n\0", b"COMMIT\ntransaction:t\n\n\0",
                  b"ABORT\ntransaction:t\n\n\0", b"UNSUBSCRIBE\nid:1\n\n\0", b"\n",
                  b"SEND\ndestination:/queue/q\ncontent-length:2\n\na\0\0", b"DISCONNECT\nreceipt:x\n\n\0")
        while self.running():
            data = b"CONNECT\naccept-version:1.0,1.1,1.2\nhost:x\n\n\0" + b"".join(
                mutate(rng, frame) if rng.random() < 0.4 else frame
                for frame in rng.choices(frames, k=rng.randint(1, 20)))
            self.exchange(self.stomp, data, rng.random() < 0.5)
            self.count("stomp")

    def good_echo(self) -> None:
        rng = random.Random(SEED)
        with ws_connect(f"ws://127.0.0.1:{self.port}/ws", subprotocols=["binary"], max_size=None) as ws:
            ws.send(f"127.0.0.1:{self.echo}")
            if ws.recv(10) != "1":
                self.errors.append("good /ws session refused")
                return
            while self.running():
                data = rng.randbytes(rng.randint(1, 4000))
                ws.send(data)
                got = b""
                while len(got) < len(data):
                    got += ws.recv(10)
                if got != data:
                    self.errors.append("good /ws session got other bytes back")
                    return
                self.count("good echoes")

    def good_stomp(self) -> None:
        with socket.create_connection(("127.0.0.1", self.stomp), timeout=10) as sub, \
                socket.create_connection(("127.0.0.1", self.stomp), timeout=10) as pub:
            sub.sendall(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0"
                        b"SUBSCRIBE\nid:g\ndestination:/topic/good\nreceipt:ready\n\n\0")
            received = b""
            while b"receipt-id:ready" not in received:
                received += sub.recv(65536)
            pub.sendall(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0")
            sent = 0
            reader_done = threading.Event()
            chunks: list[bytes] = []

            def read() -> None:
                sub.settimeout(3)
                try:
                    while chunk := sub.recv(65536):
                        chunks.append(chunk)
                except OSError:
                    pass
                reader_done.set()

            threading.Thread(target=read, daemon=True).start()
            while self.running():
                pub.sendall(b"SEND\ndestination:/topic/good\n\nm%d\0" % sent)
                sent += 1
                time.sleep(0.002)
            reader_done.wait(10)
            got = (received + b"".join(chunks)).count(b"MESSAGE\n")
            if got != sent:
                self.errors.append(f"good STOMP subscriber got {got} of {sent} messages")
            self.counts["good messages"] = got


def test_bad_input_everywhere_at_once_crashes_nothing_and_loses_nothing():
    port, stomp, echo = free_port(), free_port(), free_port()
    config = (f"[global]\n[listen]\nhttp://127.0.0.1:{port}\nstomp://127.0.0.1:{stomp}\necho://127.0.0.1:{echo}\n"
              f"[access]\n* -> 127.0.0.1:{echo}\n* -> 127.0.0.1:{stomp}\n")
    with OrbitedProcess(config, wait_for=port) as orbited:
        soak = Soak(port, stomp, echo)
        workers = [(soak.good_echo, ()), (soak.good_stomp, ()),
                   *((job, (random.Random(SEED + i),)) for i, job in
                     enumerate((soak.http, soak.websockets, soak.websockets, soak.stomp_frames)))]
        threads = [threading.Thread(target=job, args=args) for job, args in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SECONDS + 30)
        assert orbited.proc.poll() is None, orbited.log()[-3000:]
        status = orbited.status()
        log = orbited.log()
    assert not soak.errors, soak.errors
    assert soak.counts.get("good echoes", 0) > 100 and soak.counts.get("good messages", 0) > 100, soak.counts
    assert soak.counts.get("ws frames", 0) > 1000 and soak.counts.get("stomp", 0) > 100, soak.counts
    assert "Traceback" not in log and "Unhandled" not in log, [
        line for line in log.splitlines() if "Error" in line or "Traceback" in line][:20]
    assert status["proxy"]["connections_total"] > 100  # the garbage reached the proxy, not just the parsers
