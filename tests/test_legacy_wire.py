"""/tcp against a real ``orbited`` process, at packet level, with the client written from the 0.7 reference.

Every 0.7 fault that Orbited fixes has a test here that fails on 0.7's
behaviour: de-duplicated upstream, a denial that reaches polling clients,
bounded queues, connect timeout, HTTP idle timeouts.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import time
import urllib.request
from typing import Self

import pytest

from orbited.transports.legacy.client import HTTPConnection, LegacyClient
from orbited.transports.legacy.codec import (
    PacketDecoder,
    decode_packets,
    encode_packets,
)
from tests.support.backends import SlowBackend, pattern
from tests.support.procs import OrbitedProcess, free_port

TRANSPORTS = ("xhrstream", "longpoll", "poll")

# The worked examples of the 0.7 reference (pings 30/40).
OPENING = b"11,113,opt014,pingTimeout,3011,213,opt015,pingInterval,4011,204,open"
SUCCESS = b"11,314,data04,MQ=="
DENIAL = b"11,314,data08,MDEwNg=="


def config(http: int, echo: int, extra_global: str = "", extra_listen: str = "", extra_access: str = "") -> str:
    return f"""[global]
{extra_global}
[listen]
http://127.0.0.1:{http}
echo://127.0.0.1:{echo}
{extra_listen}
[access]
* -> 127.0.0.1:{echo}
{extra_access}
"""


class Server:
    def __init__(self, extra_global: str = "", rude: bool = False, extra_access: str = ""):
        self.http = free_port()
        self.echo = free_port()
        self.rude = free_port() if rude else 0
        self.workers = 0
        listen = f"rude://127.0.0.1:{self.rude}" if rude else ""
        access = (f"* -> 127.0.0.1:{self.rude}\n" if rude else "") + extra_access
        self.proc = OrbitedProcess(config(self.http, self.echo, extra_global, listen, access),
                                   wait_for=self.http)

    def client(self, transport: str = "xhrstream", **kwargs) -> LegacyClient:
        return LegacyClient("127.0.0.1", self.http, transport, **kwargs)

    async def conn(self) -> HTTPConnection:
        return await HTTPConnection.open("127.0.0.1", self.http)

    def __enter__(self) -> Self:
        self.proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()


@pytest.fixture(scope="module", params=[0, 2], ids=["one-process", "workers"])
def server(request):
    """The shared server, in one process and with two workers (each /tcp key names its process)."""
    with Server(f"session.ping_interval = 30\nsession.ping_timeout = 40\nworkers = {request.param}\n") as srv:
        srv.workers = request.param
        if srv.workers:
            srv.proc.wait_workers(srv.workers)
        yield srv


async def tcp_sessions(server: Server, expected: int | None = None) -> int:
    """/system/status's count of /tcp sessions: once it is ``expected``, or once two reads a
    worker report apart agree (workers report once a second; the master counts at once)."""
    last = None
    deadline = time.monotonic() + 10
    while True:
        count = server.proc.status()["sessions"]["by_transport"].get("tcp", 0)
        if count == expected or (expected is None and count == last) or time.monotonic() > deadline:
            return count
        last = count
        await asyncio.sleep(1.2 if server.workers else 0.05)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def new_session(conn: HTTPConnection) -> str:
    response = await conn.request("GET", "/tcp?nocache=0.5")
    assert response.status == 200
    assert response.headers[b"cache-control"] == b"no-cache, must-revalidate"
    key = response.body.decode()
    assert re.fullmatch(r"[0-9a-f]{32}", key)
    return key


def handshake(host: str, port: int, packet_id: int = 1) -> bytes:
    return encode_packets([[b"%d" % packet_id, b"data", base64.b64encode(f"{host}:{port}\n".encode())]])


# --------------------------------------------------------------------------- byte for byte


def test_worked_examples_byte_for_byte(server):
    """Opening burst (pings 30/40), success '1', denial '0106' and close, as in the reference."""
    async def scenario():
        conn = await server.conn()
        key = await new_session(conn)
        # the reference's opt packets list pingTimeout first; this server has timeout 40, interval 30
        response = await conn.request("GET", f"/tcp/{key}/poll?nocache=1")
        assert response.body == OPENING.replace(b"3011,213,opt015,pingInterval,40",
                                                b"4011,213,opt015,pingInterval,30")
        response = await conn.request("POST", f"/tcp/{key}?nocache=1&ack=2",
                                      handshake("127.0.0.1", server.echo))
        assert (response.status, response.body) == (200, b"OK")
        response = await conn.request("GET", f"/tcp/{key}/longpoll?nocache=1&ack=2")
        assert response.body == SUCCESS
        # a denial, then the close that 0.7 lost on polling transports
        key = await new_session(conn)
        await conn.request("GET", f"/tcp/{key}/poll")
        await conn.request("POST", f"/tcp/{key}?ack=2", handshake("localhost", 61613))
        response = await conn.request("GET", f"/tcp/{key}/poll?ack=2")
        assert response.body == DENIAL + b"11,415,close014,loseConnection"
        conn.close()
    run(scenario())


def test_opening_burst_with_the_reference_pings():
    with Server("session.ping_interval = 40\nsession.ping_timeout = 30\n") as srv:
        async def scenario():
            conn = await srv.conn()
            key = await new_session(conn)
            response = await conn.request("GET", f"/tcp/{key}/poll")
            assert response.body == OPENING
            conn.close()
        run(scenario())


def test_xhrstream_prelude_and_heartbeat(server):
    async def scenario():
        conn = await server.conn()
        key = await new_session(conn)
        down = await server.conn()
        down.send("GET", f"/tcp/{key}/xhrstream")
        head = await down.head()
        assert head.headers[b"content-type"] == b"application/x-orbited-event-stream"
        chunks = down.chunks(head)
        data = b""
        while len(data) < 256 + len(OPENING):
            data += await chunks.__anext__()
        assert data.startswith(b" " * 256)
        started = time.monotonic()
        assert await asyncio.wait_for(chunks.__anext__(), 6.5) == b"x"  # 0.7 clients give up after 6 s
        assert 4.0 < time.monotonic() - started < 6.0
        down.close()
        conn.close()
    run(scenario())


def test_htmlfile_and_sse_forms(server):
    async def scenario():
        conn = await server.conn()
        key = await new_session(conn)
        down = await server.conn()
        down.send("GET", f"/tcp/{key}/htmlfile?frameID=1")
        head = await down.head()
        chunks = down.chunks(head)
        chunk = await chunks.__anext__()
        assert chunk.startswith(b'<html><head><script src="../static/HTMLFileFrame.js"></script></head><body>')
        assert len(chunk) >= 257
        if len(chunk) == 257:
            chunk += await chunks.__anext__()
        assert chunk.endswith(b'<script>e([["1","opt","pingTimeout,40"],["2","opt","pingInterval,30"],'
                              b'["2","open"]])</script>')
        down.close()
        key = await new_session(conn)
        down = await server.conn()
        down.send("GET", f"/tcp/{key}/sse")
        head = await down.head()
        assert head.headers[b"content-type"] == b"application/x-dom-event-stream"
        chunk = await down.chunks(head).__anext__()
        assert chunk == b'Event: payload\ndata: [["1","opt","pingTimeout,40"],["2","opt","pingInterval,30"],' \
                        b'["2","open"]]\n\n'
        down.close()
        conn.close()
    run(scenario())


# --------------------------------------------------------------------------- echo on every transport


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_echo(server, transport):
    async def scenario():
        client = server.client(transport, poll_interval=0.02)
        await client.open()
        assert await client.connect("127.0.0.1", server.echo) == "1"
        for payload in (b"hello, world", b"\x01\x02\x03\x04", b"\0\0", "é€😀".encode() * 10000):
            await client.send(payload)
            assert await client.read_exactly(len(payload)) == payload
        await client.close()
    run(scenario())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_denial_reaches_every_transport(server, transport):
    """0.7 lost the 0106 on longpoll and poll: the session was gone before the next poll."""
    async def scenario():
        client = server.client(transport, poll_interval=0.3)
        await client.open()
        assert await client.connect("127.0.0.1", 9) == "0106"
        assert (await client.packet())[1:] == [b"close", b"loseConnection"]
        client.shutdown()
    run(scenario())


def test_invalid_handshake_is_0102(server):
    async def scenario():
        client = server.client("longpoll")
        await client.open()
        packet = await client.packet()
        while packet[1] != b"open":
            packet = await client.packet()
        await client.send(b"no port here\n")
        assert await client.data() == b"0102"
        client.shutdown()
    run(scenario())


# --------------------------------------------------------------------------- acks and resend


def test_resend_after_a_dropped_downstream(server):
    async def scenario():
        conn = await server.conn()
        key = await new_session(conn)
        await conn.request("GET", f"/tcp/{key}/poll")
        await conn.request("POST", f"/tcp/{key}?ack=2", handshake("127.0.0.1", server.echo))
        await asyncio.sleep(0.2)
        # the stream carries the answer and the echo, then dies before any ack
        down = await server.conn()
        down.send("GET", f"/tcp/{key}/xhrstream?ack=2")
        head = await down.head()
        decoder = PacketDecoder(skip=b" x")
        seen: list[list[bytes]] = []
        chunks = down.chunks(head)
        await conn.request("POST", f"/tcp/{key}?ack=2",
                           encode_packets([[b"2", b"data", base64.b64encode(b"ping!")]]))
        while not any(p[1] == b"data" and p[2] == base64.b64encode(b"ping!") for p in seen):
            seen += decoder.feed(await chunks.__anext__())
        down.close()
        ids = [p[0] for p in seen]
        # reconnect acking only the first: the rest comes again with the same ids
        response = await conn.request("GET", f"/tcp/{key}/poll?ack=3")
        again = decode_packets(response.body)
        assert [p[0] for p in again] == [i for i in ids if int(i) > 3]
        assert again[-1][2] == base64.b64encode(b"ping!")
        # an ack for all of it empties the queue
        response = await conn.request("GET", f"/tcp/{key}/poll?ack={again[-1][0].decode()}")
        assert response.body == b""
        conn.close()
    run(scenario())


def test_duplicated_post_is_delivered_once(server):
    """0.7 passed a retried POST to the backend again."""
    async def scenario():
        client = server.client("xhrstream")
        await client.open()
        assert await client.connect("127.0.0.1", server.echo) == "1"
        body = encode_packets(client.numbered([[b"data", base64.b64encode(b"once")]]))
        assert (await client.post_raw(body)).status == 200
        assert (await client.post_raw(body)).status == 200  # the retry
        more = body + encode_packets(client.numbered([[b"data", base64.b64encode(b"twice")]]))
        assert (await client.post_raw(more)).status == 200  # a retry with a packet appended
        received = b""
        while len(received) < len(b"oncetwice"):
            received += await client.data()
        assert received == b"oncetwice"
        with pytest.raises(asyncio.TimeoutError):
            await client.data(timeout=0.5)
        await client.close()
    run(scenario())


# --------------------------------------------------------------------------- errors and bad input


def test_unknown_session(server):
    async def scenario():
        conn = await server.conn()
        response = await conn.request("GET", "/tcp/00000000000000000000000000000000/xhrstream")
        assert (response.status, response.body) == (404, b"<script>alert('whoops');</script>")
        response = await conn.request("POST", "/tcp/nope", b"11,14,ping")
        assert response.status == 404
        response = await conn.request("GET", "/tcp/00000000000000000000000000000000/htmlfile?frameID=3")
        assert response.status == 200
        assert b'<script src="../../static/HTMLFileClose.js"></script>' in response.body
        key = await new_session(conn)
        response = await conn.request("GET", f"/tcp/{key}/websocket")
        assert response.status == 404
        conn.close()
    run(scenario())


def test_bad_packets_are_400_and_leave_the_session_alone(server):
    async def scenario():
        client = server.client("longpoll")
        await client.open()
        assert await client.connect("127.0.0.1", server.echo) == "1"
        for garbage in (b"garbage", b"11,1", b"11,510,data3,!!!", b"1x,"):
            assert (await client.post_raw(garbage)).status == 400
        await client.send(b"still fine")
        assert await client.read_exactly(10) == b"still fine"
        await client.close()
    run(scenario())


def test_oversize_post_is_413():
    with Server("http.max_body = 1000\n") as srv:
        async def scenario():
            client = srv.client("longpoll")
            await client.open()
            assert await client.connect("127.0.0.1", srv.echo) == "1"
            big = encode_packets([[b"99", b"data", base64.b64encode(b"a" * 1000)]])
            response = await client.post_raw(big)
            assert response.status == 413
            await client.send(b"small")
            assert await client.read_exactly(5) == b"small"
            await client.close()
        run(scenario())


def test_an_upload_whose_length_is_a_list_of_equal_values_is_taken(server):
    """``Content-Length: 6, 6`` is legal and the HTTP layer takes it; /tcp re-read the header
    and answered 413 "over http.max_body" for a few bytes."""
    async def scenario():
        client = server.client("longpoll")
        await client.open()
        assert await client.connect("127.0.0.1", server.echo) == "1"
        body = encode_packets(client.numbered([[b"data", base64.b64encode(b"listed")]]))
        head = (f"POST {client.session_path}?ack={client.last_id} HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {len(body)}, {len(body)}\r\n\r\n")
        client.up.writer.write(head.encode() + body)
        response = await client.up.head()
        assert response.status == 200
        assert b"".join([chunk async for chunk in client.up.chunks(response)]) == b"OK"
        assert await client.read_exactly(6) == b"listed"
        await client.close()
    run(scenario())


def test_head_is_405_and_holds_nothing(server):
    """A HEAD made a session nobody could use, or held a stream (and what was pipelined behind
    it) until the session ended."""
    async def scenario():
        conn = await server.conn()
        key = await new_session(conn)
        live = server.proc.status()["sessions"]["total"]
        for target in ("/tcp", f"/tcp/{key}/xhrstream", f"/tcp/{key}/sse", f"/tcp/{key}/htmlfile", f"/tcp/{key}"):
            conn.send("HEAD", target)
            response = await asyncio.wait_for(conn.head(), 5)  # a HEAD answer has no body to read
            assert response.status == 405 and response.headers[b"allow"] == b"GET, POST", target
        assert server.proc.status()["sessions"]["total"] == live  # no session made
        response = await conn.request("GET", f"/tcp/{key}/poll")  # the same connection still serves
        assert response.status == 200
        conn.close()
    run(scenario())


def test_session_cap_is_503():
    with Server("proxy.max_sessions = 1\n") as srv:
        async def scenario():
            conn = await srv.conn()
            await new_session(conn)
            response = await conn.request("GET", "/tcp")
            assert response.status == 503
            conn.close()
        run(scenario())


# --------------------------------------------------------------------------- closing


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_backend_close(transport):
    with Server(rude=True) as srv:
        async def scenario():
            client = srv.client(transport, poll_interval=0.3)
            await client.open()
            assert await client.connect("127.0.0.1", srv.rude) == "1"
            packet = await client.packet()
            assert packet[1:] == [b"close", b"loseConnection"]
            client.shutdown()
        run(scenario())


def test_client_close_closes_the_backend(server):
    async def scenario():
        before = await tcp_sessions(server)
        client = server.client("xhrstream")
        await client.open()
        assert await client.connect("127.0.0.1", server.echo) == "1"
        assert await tcp_sessions(server, before + 1) == before + 1
        key = client.key
        await client.close()
        conn = await server.conn()
        response = await conn.request("GET", f"/tcp/{key}/poll")
        assert response.status == 404
        conn.close()
        assert await tcp_sessions(server, before) == before
    run(scenario())



@pytest.mark.parametrize("workers", [0, 2])
def test_data_and_close_in_one_post_reach_a_talking_backend_whole(workers):
    """The last data and the close packet in one POST: the backend used to be closed with a
    loseConnection that stopped reading it, so a backend that talked meanwhile turned the close
    into a reset and lost what the kernel had not sent yet (24 KB of 600 KB arrived)."""
    payload = b"".join(pattern(600_000))
    backend = SlowBackend(rate=1_000_000, echo=True)
    with Server(f"workers = {workers}", extra_access=f"* -> 127.0.0.1:{backend.port}") as srv:
        if workers:
            srv.proc.wait_workers(workers)

        async def scenario():
            client = srv.client("xhrstream")
            await client.open()
            assert await client.connect("127.0.0.1", backend.port) == "1"
            await client.post([[b"data", base64.b64encode(payload[start:start + 100_000])]
                               for start in range(0, len(payload), 100_000)] + [[b"close"]])
            client.shutdown()
        run(scenario())
        received = backend.wait()
    assert len(received) == len(payload) and received == payload


def test_ping_timeout():
    with Server("session.ping_interval = 1\nsession.ping_timeout = 1\n") as srv:
        async def scenario():
            # a stream that never answers the ping: ping, then close 'timeout'
            client = srv.client("xhrstream", answer_pings=False)
            await client.open()
            assert await client.connect("127.0.0.1", srv.echo) == "1"
            names = []
            while not names or names[-1] != b"close":
                packet = await client.packet(timeout=5)
                names.append(packet[1])
                if packet[1] == b"close":
                    assert packet[2] == b"timeout"
            assert b"ping" in names
            client.shutdown()
            # a client that answers pings stays up
            alive = srv.client("xhrstream")
            await alive.open()
            assert await alive.connect("127.0.0.1", srv.echo) == "1"
            await asyncio.sleep(3.5)
            await alive.send(b"still here")
            assert await alive.read_exactly(10) == b"still here"
            await alive.close()
            # a session nobody comes back for is gone
            conn = await srv.conn()
            key = await new_session(conn)
            await asyncio.sleep(4.5)
            response = await conn.request("GET", f"/tcp/{key}/poll")
            assert response.status == 404
            conn.close()
        run(scenario())
        assert "after a ping" in srv.proc.log()


def test_a_client_that_never_acks_is_closed_with_a_logged_reason():
    """0.7 kept every unacknowledged packet for ever."""
    with Server("session.ping_interval = 1\nsession.ping_timeout = 1\nsession.max_buffer = 20000\n") as srv:
        async def scenario():
            conn = await srv.conn()
            key = await new_session(conn)
            await conn.request("GET", f"/tcp/{key}/poll")
            await conn.request("POST", f"/tcp/{key}?ack=0", handshake("127.0.0.1", srv.echo))
            chunk = base64.b64encode(b"z" * 4000)
            closed = False
            for packet_id in range(2, 60):
                # keeps the session alive with requests, but every one says ack=0
                response = await conn.request(
                    "POST", f"/tcp/{key}?ack=0", encode_packets([[b"%d" % packet_id, b"data", chunk]]))
                poll = await conn.request("GET", f"/tcp/{key}/poll?ack=0")
                if response.status == 404 or poll.status == 404 or b"close" in poll.body:
                    closed = True
                    break
                await asyncio.sleep(0.1)
            assert closed
            conn.close()
        run(scenario())
        log = srv.proc.log()
        assert "browser stopped acknowledging" in log or "over session.max_buffer" in log


def test_connect_timeout_is_0104():
    """0.7 defined 104 but waited for ever on a backend that does not answer."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    port = blackhole.getsockname()[1]
    fillers = []
    try:
        # fill the accept queue so that further SYNs are dropped
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        with Server("proxy.connect_timeout = 1\n", extra_access=f"* -> 127.0.0.1:{port}\n") as srv:
            async def scenario():
                client = srv.client("longpoll")
                await client.open()
                started = time.monotonic()
                assert await client.connect("127.0.0.1", port) == "0104"
                assert time.monotonic() - started < 5
                client.shutdown()
            run(scenario())
    finally:
        for filler in fillers:
            filler.close()
        blackhole.close()


def test_http_idle_timeout_stays_on_but_spares_open_requests():
    """0.7 switched idle timeouts off globally; here they close idle connections, not streams."""
    with Server("http.timeout = 1\n") as srv:
        async def scenario():
            client = srv.client("xhrstream")
            await client.open()
            assert await client.connect("127.0.0.1", srv.echo) == "1"
            idle = await srv.conn()
            await idle.request("GET", "/tcp")
            await asyncio.sleep(2.5)
            assert await asyncio.wait_for(idle.reader.read(), 2) == b""  # closed by the server
            # the stream is still up, and a fresh POST reaches the backend
            client.up = await srv.conn()
            await client.send(b"after idle")
            assert await client.read_exactly(10) == b"after idle"
            await client.close()
        run(scenario())


# --------------------------------------------------------------------------- static files


HELPERS = ("xsdrBridge.html", "xsdClose.html", "HTMLFileFrame.js", "HTMLFileClose.js", "JSON.js")


@pytest.mark.parametrize("name", HELPERS)
def test_helper_files_and_their_tcp_static_twins(server, name):
    bodies = []
    for prefix in ("/static/", "/tcp/static/"):
        with urllib.request.urlopen(f"http://127.0.0.1:{server.http}{prefix}{name}", timeout=5) as r:
            assert r.status == 200
            bodies.append(r.read())
    assert bodies[0] == bodies[1] and bodies[0]


def test_sessions_show_in_status(server):
    async def scenario():
        client = server.client("longpoll")
        await client.open()
        assert await client.connect("127.0.0.1", server.echo) == "1"
        assert await tcp_sessions(server) >= 1
        await client.close()
    run(scenario())
