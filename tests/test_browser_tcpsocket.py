"""Orbited.TCPSocket in a real Chromium against a real ``orbited``, each transport forced in turn.

Echo of text with 4-byte UTF-8 characters split across reads, every byte
value in binary mode, a 1 MiB message, and the close codes a page sees:
106 for a destination [access] does not list, 108 for a dead backend, and a
code (not a hang) when Orbited itself stops.
"""

from __future__ import annotations

import contextlib
import signal
import socket

import pytest

from tests.support.procs import free_port
from tests.test_browser_support import (  # noqa: F401 (chromium is a fixture)
    ALL_TRANSPORTS,
    SOCKJS_LANDED,
    TRANSPORTS,
    OrbitedSite,
    chromium,
    need_transport,
    run_js,
)


@pytest.fixture(scope="module")
def site():
    echo = free_port()
    dead = free_port()  # allowed by [access], but nothing listens there
    receiver = free_port()  # allowed by [access]; a test listens there itself
    with OrbitedSite(
        listen=(f"echo://127.0.0.1:{echo}",),
        access=(f"* -> 127.0.0.1:{echo}", f"* -> 127.0.0.1:{dead}", f"* -> 127.0.0.1:{receiver}"),
    ) as orbited:
        orbited.echo = echo
        orbited.dead = dead
        orbited.receiver = receiver
        yield orbited


@pytest.fixture
def page(chromium, site):  # noqa: F811
    chromium.get(site.url)
    return chromium


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_text_echo_with_four_byte_characters_split_across_reads(page, site, transport):
    need_transport(transport)
    result = run_js(page, """
        var s = await H.open('127.0.0.1', args[0], false, [args[1]]);
        var text = 'ascii, é, €, 𝄞 and 😀 ' + '🎉'.repeat(500);
        s.send(text);
        await H.until(function () { return s.reads.join('') === text; });
        // Now make the echo server's reads split a 4-byte character: raw bytes in two sends.
        s.reads = [];
        var smile = new TextEncoder().encode('😀x');
        s.send(smile.subarray(0, 2));
        await H.sleep(300);
        var firstReads = s.reads.slice();
        s.send(smile.subarray(2));
        await H.until(function () { return s.reads.join('') === '😀x'; });
        var transport = s.transport;
        s.close();
        return {firstReads: firstReads, reads: s.reads, transport: transport};
    """, site.echo, transport)
    assert result["transport"] == transport
    # Nothing was delivered for half a character, then the whole character came out.
    assert result["firstReads"] == []
    assert result["reads"] == ["😀x"]


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_what_was_sent_before_close_reaches_the_backend(page, site, transport):
    """send(), send(), close(): on the SockJS transports close() aborted the upload queue, so
    everything after the first POST in flight was silently dropped (an IRC QUIT, a last line)."""
    need_transport(transport)
    with socket.create_server(("127.0.0.1", site.receiver)) as backend:
        run_js(page, """
            var s = await H.open('127.0.0.1', args[0], false, [args[1]]);
            s.send('one\\n'); s.send('two\\n'); s.send('x'.repeat(100000) + '\\n'); s.send('QUIT :bye\\r\\n');
            s.close();
        """, site.receiver, transport)
        backend.settimeout(10)
        conn, _ = backend.accept()
        with conn:
            conn.settimeout(10)
            received = b""
            with contextlib.suppress(TimeoutError):
                while not received.endswith(b"QUIT :bye\r\n") and (data := conn.recv(65536)):
                    received += data
    assert received == b"one\ntwo\n" + b"x" * 100000 + b"\nQUIT :bye\r\n"


def test_closing_during_a_jsonp_poll_throws_nothing_in_the_page(page, site):
    """The removed <script> of an aborted poll still runs when its answer comes: it found its
    callback deleted, a TypeError in the page."""
    need_transport("jsonp-polling")
    result = run_js(page, """
        var errors = [];
        window.addEventListener('error', function (e) { errors.push(String(e.message)); });
        var s = await H.open('127.0.0.1', args[0], false, ['jsonp-polling']);
        await H.sleep(300);  // a poll is waiting: the echo of 'ping' answers it after close() aborted it
        s.send('ping');
        s.close();
        await H.sleep(1500);  // the aborted poll is answered meanwhile
        return {errors: errors, closed: s.closed};
    """, site.echo)
    assert result["errors"] == [] and result["closed"] == 103


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_binary_mode_passes_every_byte_value(page, site, transport):
    need_transport(transport)
    result = run_js(page, """
        var s = await H.open('127.0.0.1', args[0], true, [args[1]]);
        var all = '';
        for (var i = 0; i < 256; i++) { all += String.fromCharCode(i); }
        s.send(all + '\\0\\0');
        await H.until(function () { return s.reads.join('').length >= 258; });
        var echoed = s.reads.join('');
        // The same bytes as an ArrayBuffer, read back as ArrayBuffers.
        s.reads = []; s.binaryType = 'arraybuffer';
        var raw = new Uint8Array(256); for (var j = 0; j < 256; j++) { raw[j] = 255 - j; }
        s.send(raw.buffer);
        await H.until(function () { return H.length(s.reads) >= 256; });
        var back = Array.from(H.joinBytes(s.reads));
        s.close();
        return {echoed: echoed, back: back, type: Object.prototype.toString.call(s.reads[0])};
    """, site.echo, transport)
    assert result["echoed"] == "".join(map(chr, range(256))) + "\0\0"
    assert result["back"] == [255 - i for i in range(256)]
    assert result["type"] == "[object ArrayBuffer]"


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_one_megabyte_message(page, site, transport):
    need_transport(transport)
    result = run_js(page, """
        var s = await H.open('127.0.0.1', args[0], true, [args[1]]);
        s.binaryType = 'arraybuffer';
        var size = 1024 * 1024, data = new Uint8Array(size), seed = 7;
        for (var i = 0; i < size; i++) { seed = (seed * 1103515245 + 12345) & 0x7fffffff; data[i] = seed >> 16; }
        var t0 = Date.now();
        s.send(data);
        await H.until(function () { return H.length(s.reads) >= size; }, 60000);
        var back = H.joinBytes(s.reads), same = back.length === size;
        for (var k = 0; same && k < size; k++) { same = back[k] === data[k]; }
        s.close();
        return {same: same, length: back.length, ms: Date.now() - t0};
    """, site.echo, transport)
    assert result["length"] == 1024 * 1024
    assert result["same"]


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_unauthorized_destination_closes_with_106(page, site, transport):
    need_transport(transport)
    code = run_js(page, """
        try { await H.open('127.0.0.1', args[0], false, [args[1]]); return 'opened'; }
        catch (code) { return code; }
    """, site.echo + 1 if site.echo + 1 != site.dead else site.echo + 2, transport)
    assert code == 106


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_dead_backend_closes_with_108(page, site, transport):
    need_transport(transport)
    code = run_js(page, """
        try { await H.open('127.0.0.1', args[0], false, [args[1]]); return 'opened'; }
        catch (code) { return code; }
    """, site.dead, transport)
    assert code == 108


def test_api_is_orbited_07s(page, site):
    result = run_js(page, """
        var out = {};
        try { new Orbited.TCPSocket(1); } catch (e) { out.args = e.message; }
        var s = new Orbited.TCPSocket();
        out.state = s.readyState;
        out.constants = [s.READY_STATE_INITIALIZED, s.READY_STATE_OPENING, s.READY_STATE_OPEN,
                         s.READY_STATE_CLOSING, s.READY_STATE_CLOSED];
        out.name = String(s).replace(/\\d+/, 'N');
        try { s.send('x'); } catch (e) { out.sendEarly = e.message; }
        try { s.open('', 1); } catch (e) { out.noHost = e.message; }
        try { s.open('localhost', 'x'); } catch (e) { out.badPort = e.message; }
        out.errors = Orbited.Errors; out.statuses = Orbited.Statuses;
        out.settings = {hostname: Orbited.settings.hostname, port: Orbited.settings.port,
                        protocol: Orbited.settings.protocol, transports: Orbited.settings.transports};
        // close(): 103, asynchronously, once
        var closes = [];
        var t = await H.open('127.0.0.1', args[0], false);
        t.onclose = function (c) { closes.push(c); };
        t.close(); t.close();
        out.syncCloses = closes.length;
        await H.sleep(100);
        out.closes = closes;
        try { t.open('127.0.0.1', args[0]); } catch (e) { out.reopen = e.message; }
        // reset(): 103 before it returns
        var r = await H.open('127.0.0.1', args[0], false);
        var resetCodes = []; r.onclose = function (c) { resetCodes.push(c); };
        r.reset();
        out.reset = resetCodes;
        // Orbited.test.socketcontrol.kill: 301
        var k = await H.open('127.0.0.1', args[0], false);
        Orbited.test.socketcontrol.kill(k);
        await H.until(function () { return k.closed; });
        out.killed = k.closed;
        return out;
    """, site.echo)
    assert result["args"] == "TCPSocket() accepts no arguments"
    assert result["state"] == 1
    assert result["constants"] == [1, 2, 3, 4, 5]
    assert result["name"] == "<Orbited.TCPSocket N>"
    assert result["sendEarly"] == "Invalid readyState"
    assert result["noHost"] == "No hostname specified"
    assert result["badPort"] == "Invalid port specified"
    assert result["errors"] == {"ConnectionTimeout": 101, "InvalidHandshake": 102, "UserConnectionReset": 103,
                                "RemoteConnectionTimeout": 104, "Unauthorized": 106,
                                "RemoteConnectionFailed": 108}
    assert result["statuses"] == {"ServerClosedConnection": 201, "SocketControlKilled": 301}
    assert result["settings"] == {"hostname": "127.0.0.1", "port": site.port, "protocol": "http",
                                  "transports": list(TRANSPORTS)}
    assert result["syncCloses"] == 0 and result["closes"] == [103]
    assert result["reopen"] == "Invalid readyState"
    assert result["reset"] == [103]
    assert result["killed"] == 301


def test_websocket_failure_falls_back_to_sockjs(page, site):
    """With /ws unreachable the socket goes on to the next transport in the list."""
    if not SOCKJS_LANDED:
        pytest.skip("the /sockjs server (orbited.transports.sockjs) has not landed yet")
    result = run_js(page, """
        Orbited.settings.wsPath = '/no-such-websocket';
        var s = await H.open('127.0.0.1', args[0], false, ['websocket', 'xhr-streaming']);
        s.send('fallback');
        await H.until(function () { return s.reads.join('') === 'fallback'; });
        s.close();
        return s.transport;
    """, site.echo)
    assert result == "xhr-streaming"


def test_nothing_reachable_closes_with_101(page, site):
    result = run_js(page, """
        Orbited.settings.wsPath = '/no-such-websocket';
        try { await H.open('127.0.0.1', args[0], false, ['websocket']); return 'opened'; }
        catch (code) { return code; }
    """, site.echo)
    assert result == 101


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_orbited_going_away_gives_a_close_code(chromium, transport, how):  # noqa: F811
    """SIGTERM: Orbited closes the socket (201).  SIGKILL: the page notices the loss (101)."""
    need_transport(transport)
    echo = free_port()
    with OrbitedSite(listen=(f"echo://127.0.0.1:{echo}",), access=(f"* -> 127.0.0.1:{echo}",),
                     settings="Orbited.settings.reconnectTimeout = 2000;") as orbited:
        chromium.get(orbited.url)
        run_js(chromium, """
            window.sock = await H.open('127.0.0.1', args[0], false, [args[1]]);
            sock.send('ping');
            await H.until(function () { return sock.reads.join('') === 'ping'; });
        """, echo, transport)
        orbited.stop(signal.SIGTERM if how == "stopped" else signal.SIGKILL)
        code = run_js(chromium, """
            await H.until(function () { return sock.closed !== null; }, 20000);
            return sock.closed;
        """)
    assert code == (201 if how == "stopped" else 101)


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_a_silent_orbited_closes_the_socket_with_101_and_a_quiet_one_does_not(chromium, transport):  # noqa: F811
    """Orbited stopped (or the network path dead, no RST): the page must learn it.  The SockJS
    transports had heartbeats; /ws had none the page could see, and its socket stayed open for
    ever.  Orbited now sends an empty message with each ping; heartbeatTimeout of silence is 101."""
    need_transport(transport)
    echo = free_port()
    with OrbitedSite(listen=(f"echo://127.0.0.1:{echo}",), access=(f"* -> 127.0.0.1:{echo}",),
                     extra="session.ping_interval = 0.5\n",
                     settings="Orbited.settings.heartbeatTimeout = 2500;") as orbited:
        chromium.get(orbited.url)
        run_js(chromium, """
            window.sock = await H.open('127.0.0.1', args[0], false, [args[1]]);
            sock.send('ping');
            await H.until(function () { return sock.reads.join('') === 'ping'; });
            await new Promise(function (done) { setTimeout(done, 4000); });  // idle, Orbited there
        """, echo, transport)
        assert run_js(chromium, "return [sock.closed, sock.reads.join('')];") == [None, "ping"]
        orbited.process.proc.send_signal(signal.SIGSTOP)
        try:
            code, waited = run_js(chromium, """
                var started = Date.now();
                await H.until(function () { return sock.closed !== null; }, 15000);
                return [sock.closed, Date.now() - started];
            """)
        finally:
            orbited.process.proc.send_signal(signal.SIGCONT)
    assert code == 101 and waited < 6000


@pytest.fixture(scope="module")
def two_origins():
    """One Orbited on two ports: the page comes from one, Orbited.js (and so every request) from the other."""
    echo, other = free_port(), free_port()
    with OrbitedSite(listen=(f"echo://127.0.0.1:{echo}", f"http://127.0.0.1:{other}"),
                     access=(f"* -> 127.0.0.1:{echo}",)) as orbited:
        (orbited.pages / "cross.html").write_text(
            "<!doctype html><meta charset=utf-8>"
            f"<script src='http://127.0.0.1:{other}/static/Orbited.js'></script>"
            "<script src='harness.js'></script>")
        orbited.echo = echo
        orbited.other = other
        yield orbited


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_cross_origin_page(chromium, two_origins, transport):  # noqa: F811
    """Orbited on another origin than the page: CORS (or none, for jsonp) on every transport."""
    need_transport(transport)
    chromium.get(two_origins.url.replace("index.html", "cross.html"))
    result = run_js(chromium, """
        var s = await H.open('127.0.0.1', args[0], false, [args[1]]);
        s.send('cross-origin é');
        await H.until(function () { return s.reads.join('') === 'cross-origin é'; });
        s.close();
        return {port: Orbited.settings.port, page: location.port, transport: s.transport};
    """, two_origins.echo, transport)
    assert result == {"port": two_origins.other, "page": str(two_origins.port), "transport": transport}


@pytest.mark.parametrize("transport", ["xhr-polling", "jsonp-polling"])
def test_a_page_of_another_host_is_refused(chromium, two_origins, transport):  # noqa: F811
    """The same page served as http://localhost:PORT is another site to Orbited at 127.0.0.1.
    xhr carries its Origin; a JSONP <script> does not, and its Referer gives the page away."""
    need_transport(transport)
    chromium.get(two_origins.url.replace("index.html", "cross.html").replace("127.0.0.1", "localhost"))
    code = run_js(chromium, """
        try { await H.open('127.0.0.1', args[0], false, [args[1]]); return 'opened'; }
        catch (code) { return code; }
    """, two_origins.echo, transport)
    assert code != "opened"
    log = two_origins.log()
    if transport == "jsonp-polling":
        assert "refused jsonp" in log and "page http://localhost:" in log
    else:
        assert code == 106


def test_ipv6_destination(chromium):  # noqa: F811
    """A bare IPv6 address is sent to Orbited in brackets, as the handshake requires."""
    try:
        echo = free_port("::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with OrbitedSite(listen=(f"echo://[::1]:{echo}",), access=(f"* -> [::1]:{echo}",)) as orbited:
        chromium.get(orbited.url)
        result = run_js(chromium, """
            var s = await H.open('::1', args[0], false);
            s.send('over IPv6');
            await H.until(function () { return s.reads.join('') === 'over IPv6'; });
            s.close();
            return true;
        """, echo)
    assert result is True
