"""A small asyncio client of the Orbited 0.7 wire protocol, written from the protocol description.

It does what 0.7's Orbited.js does on the wire (create a session, hold a
downstream on xhrstream, longpoll or poll, POST numbered packets with
``ack``, answer pings on streams) and nothing a browser needs besides.
The tests drive the server through it at packet level and the benchmark
uses it as a cheap load client.  Plain HTTP/1.1 over asyncio streams, no
dependencies.
"""

from __future__ import annotations

import asyncio
import base64
import random
from dataclasses import dataclass, field

from orbited.transports.legacy.codec import (
    PacketDecoder,
    decode_packets,
    encode_packets,
)


class HTTPError(Exception):
    """A response we did not expect; ``status`` and ``body`` say which."""

    def __init__(self, status: int, body: bytes):
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes = b""


class HTTPConnection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, host: str, port: int, host_header: str | None = None) -> HTTPConnection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        return cls(reader, writer, host_header or f"{host}:{port}")

    def send(self, method: str, target: str, body: bytes = b"",
             headers: tuple[tuple[str, str], ...] = ()) -> None:
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
        head = (f"{method} {target} HTTP/1.1\r\nHost: {self.host}\r\n"
                f"Content-Length: {len(body)}\r\n{extra}\r\n").encode("latin-1")
        self.writer.write(head + body if body else head)

    async def head(self) -> Response:
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("connection closed before a response")
        status = int(line.split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return Response(status, headers)

    async def chunks(self, response: Response):
        """The body of ``response`` piece by piece, as it arrives."""
        reader = self.reader
        headers = response.headers
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await reader.readline()
                    return
                yield await reader.readexactly(size)
                await reader.readexactly(2)
        elif b"content-length" in headers:
            length = int(headers[b"content-length"])
            if length:
                yield await reader.readexactly(length)
        else:
            while data := await reader.read(65536):
                yield data

    async def request(self, method: str, target: str, body: bytes = b"",
                      headers: tuple[tuple[str, str], ...] = ()) -> Response:
        self.send(method, target, body, headers)
        response = await self.head()
        response.body = b"".join([chunk async for chunk in self.chunks(response)])
        return response

    def close(self) -> None:
        self.writer.close()


@dataclass
class LegacyClient:
    """One 0.7 Comet session (one TCPSocket) from the client side."""

    host: str
    port: int
    transport: str = "xhrstream"
    path: str = "/tcp"
    poll_interval: float = 0.05
    host_header: str | None = None
    key: str = ""
    last_id: int = 0  # highest downstream packet id seen (what we ack)
    packet_count: int = 0  # upstream packet ids
    packets: asyncio.Queue = field(default_factory=asyncio.Queue)  # every downstream packet
    closed: bool = False
    answer_pings: bool = True

    async def open(self) -> str:
        """``GET /tcp``, then the downstream loop; returns the session key."""
        self.up = await HTTPConnection.open(self.host, self.port, self.host_header)
        response = await self.up.request("GET", f"{self.path}?nocache={random.random()}")
        if response.status != 200:
            raise HTTPError(response.status, response.body)
        self.key = response.body.decode("ascii")
        self.sending = asyncio.Lock()
        self.task = asyncio.ensure_future(self._downstream())
        return self.key

    @property
    def session_path(self) -> str:
        return f"{self.path}/{self.key}"

    # --- downstream

    async def _downstream(self) -> None:
        conn = await HTTPConnection.open(self.host, self.port, self.host_header)
        self.down = conn
        try:
            while not self.closed:
                target = f"{self.session_path}/{self.transport}"
                if self.last_id:
                    target += f"?ack={self.last_id}"
                conn.send("GET", target)
                response = await conn.head()
                if response.status != 200:
                    [_ async for _ in conn.chunks(response)]
                    self._deliver([b"", b"http-status", str(response.status).encode()])
                    return
                if self.transport in ("xhrstream",):
                    decoder = PacketDecoder(skip=b" x")
                    async for chunk in conn.chunks(response):
                        for packet in decoder.feed(chunk):
                            self._deliver(packet)
                else:
                    body = b"".join([chunk async for chunk in conn.chunks(response)])
                    for packet in decode_packets(body):
                        self._deliver(packet)
                    if self.transport == "poll" and not self.closed:
                        await asyncio.sleep(self.poll_interval)
        except (ConnectionError, asyncio.IncompleteReadError):
            self._deliver([b"", b"http-status", b"0"])
        finally:
            conn.close()

    def _deliver(self, packet: list[bytes]) -> None:
        if packet[0].isdigit():
            self.last_id = max(self.last_id, int(packet[0]))
        if packet[1] == b"ping" and self.answer_pings and self.transport not in ("longpoll", "poll"):
            asyncio.ensure_future(self.post([[b"ping", b""]]))
        if packet[1] in (b"close", b"http-status"):
            self.closed = True
        self.packets.put_nowait(packet)

    async def packet(self, timeout: float = 10.0) -> list[bytes]:
        return await asyncio.wait_for(self.packets.get(), timeout)

    async def data(self, timeout: float = 10.0) -> bytes:
        """The payload of the next data packet (skipping opt, open and ping)."""
        while True:
            packet = await self.packet(timeout)
            if packet[1] == b"data":
                return base64.b64decode(packet[2])
            if packet[1] in (b"close", b"http-status"):
                raise ConnectionError(f"session closed: {packet!r}")

    async def read_exactly(self, size: int, timeout: float = 10.0) -> bytes:
        out = b""
        while len(out) < size:
            out += await self.data(timeout)
        return out

    # --- upstream

    def numbered(self, packets: list[list[bytes]]) -> list[list[bytes]]:
        out = []
        for packet in packets:
            self.packet_count += 1
            out.append([b"%d" % self.packet_count, *packet])
        return out

    async def post_raw(self, body: bytes, ack: int | None = None) -> Response:
        async with self.sending:
            target = f"{self.session_path}?nocache={random.random()}&ack={self.last_id if ack is None else ack}"
            return await self.up.request("POST", target, body)

    async def post(self, packets: list[list[bytes]]) -> Response:
        """Number ``[[name, arg...]]`` and POST them in one body."""
        response = await self.post_raw(encode_packets(self.numbered(packets)))
        if response.status != 200:
            raise HTTPError(response.status, response.body)
        return response

    async def send(self, data: bytes) -> None:
        await self.post([[b"data", base64.b64encode(data)]])

    async def connect(self, host: str, port: int, timeout: float = 10.0) -> str:
        """The TCPSocket handshake: wait for ``open``, send ``host:port\\n``, return the reply."""
        while True:
            packet = await self.packet(timeout)
            if packet[1] == b"open":
                break
            if packet[1] in (b"close", b"http-status"):
                raise ConnectionError(f"session closed before open: {packet!r}")
        await self.send(f"{host}:{port}\n".encode())
        return (await self.data(timeout)).decode("ascii")

    async def close(self) -> None:
        if not self.closed:
            try:
                await self.post([[b"close"]])
            except (ConnectionError, HTTPError):
                pass
        self.shutdown()

    def shutdown(self) -> None:
        self.closed = True
        self.task.cancel()
        self.up.close()
        down = getattr(self, "down", None)
        if down is not None:
            down.close()
