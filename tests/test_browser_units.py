"""The pure parts of the browser library, run in Chromium: UTF-8, base64, SockJS frames,
the STOMP frame parser fed a byte at a time, settings autodetection, static paths."""

from __future__ import annotations

import urllib.request

import pytest

from tests.support.procs import REPO
from tests.test_browser_support import (  # noqa: F401 (chromium is a fixture)
    OrbitedSite,
    chromium,
    run_js,
)

STATIC = REPO / "orbited" / "static"


@pytest.fixture(scope="module")
def site():
    with OrbitedSite(scripts=("/static/protocols/stomp.js", "/static/protocols/irc.js",
                              "/static/protocols/telnet.js", "/static/protocols/xmpp.js")) as orbited:
        yield orbited


@pytest.fixture
def page(chromium, site):  # noqa: F811
    chromium.get(site.url)
    return chromium


def test_utf8_and_base64(page):
    result = run_js(page, """
        var smile = Orbited.utf8.encode('a😀');               // byte string
        var partial = Orbited.utf8.decode(smile.slice(0, 3));  // 'a' and half of the emoji
        var whole = Orbited.utf8.decode(smile);
        var d = Orbited.utf8.decoder(), parts = [];
        new TextEncoder().encode('€😀').forEach(function (b) { parts.push(d.decode(new Uint8Array([b]))); });
        var all = ''; for (var i = 0; i < 256; i++) { all += String.fromCharCode(i); }
        var thrown = null;
        try { Orbited.bytes.fromByteString('€'); } catch (e) { thrown = e.name; }
        return {smile: Array.from(smile).map(function (c) { return c.charCodeAt(0); }),
                partial: partial, whole: whole, parts: parts,
                b64: Orbited.base64.decode(Orbited.base64.encode(all)) === all,
                b64bytes: Array.from(Orbited.base64.decodeBytes(Orbited.base64.encodeBytes(new Uint8Array([0, 255, 128])))),
                thrown: thrown};
    """)
    assert result["smile"] == [0x61, 0xF0, 0x9F, 0x98, 0x80]
    assert result["partial"] == ["a", 1]
    assert result["whole"] == ["a😀", 5]
    assert "".join(result["parts"]) == "€😀" and result["parts"][:2] == ["", ""]
    assert result["b64"] is True
    assert result["b64bytes"] == [0, 255, 128]
    assert result["thrown"] == "TypeError"


def test_sockjs_frames(page):
    result = run_js(page, """
        var P = Orbited.SockJSFrames.parse;
        var r = new Orbited.SockJSFrames.LineReader();
        var lines = r.feed('hhhh\\no\\na["MQ=="'); lines = lines.concat(r.feed(',"Mg=="]\\nc[3000,"Go away!"]\\n'));
        return {o: P('o'), h: P('h'), a: P('a["x","y\\\\u2028"]'), c: P('c[4106,"unauthorized"]'),
                unknown: P('z'), lines: lines};
    """)
    assert result["o"] == {"type": "o"} and result["h"] == {"type": "h"}
    assert result["a"] == {"type": "a", "messages": ["x", "y\u2028"]}
    assert result["c"] == {"type": "c", "code": 4106, "reason": "unauthorized"}
    assert result["unknown"] is None
    assert result["lines"] == ["hhhh", "o", 'a["MQ==","Mg=="]', 'c[3000,"Go away!"]']


def test_stomp_parser_byte_at_a_time(page):
    result = run_js(page, """
        var frames = [], beats = 0;
        var p = new STOMPClient.Parser(function (f) { frames.push(f); }, function () { beats++; });
        var wire = STOMPClient.serializeFrame('MESSAGE', {destination: '/q/a', 'x:y': 'a\\nb'}, 'nul\\u0000 inside 😀', true);
        var text = new TextEncoder().encode('\\n\\r\\nMESSAGE\\nno-length:1\\n\\nplain\\u0000');
        var both = new Uint8Array(wire.length + text.length); both.set(wire); both.set(text, wire.length);
        for (var i = 0; i < both.length; i++) { p.push(both.subarray(i, i + 1)); }
        return {frames: frames.map(function (f) { return [f.type, f.headers, f.body]; }), beats: beats};
    """)
    assert result["beats"] == 2
    assert result["frames"][0][0] == "MESSAGE"
    assert result["frames"][0][1]["x:y"] == "a\nb"  # 1.1+ header escaping round trip
    assert result["frames"][0][2] == "nul\0 inside 😀"
    assert result["frames"][1] == ["MESSAGE", {"no-length": "1"}, "plain"]


# A TCPSocket stand-in the protocol clients can be given (their ``transport``), and the
# page's uncaught errors, for the tests below.
FAKE_SOCKET = """
    window.pageErrors = [];
    window.onerror = function (message) { pageErrors.push(String(message)); return true; };
    function FakeSocket() { this.readyState = 1; this.sent = []; FakeSocket.last = this; }
    FakeSocket.prototype.READY_STATE_OPEN = 3;
    FakeSocket.prototype.open = function () { this.readyState = 2; };
    FakeSocket.prototype.send = function (data) {
        if (this.readyState !== 3) { throw new Error('Invalid readyState'); }  // as TCPSocket
        this.sent.push(data);
    };
    FakeSocket.prototype.close = function () {
        if (this.readyState === 5) { return; }
        this.readyState = 5; if (this.onclose) { this.onclose(103); }
    };
    FakeSocket.prototype.opened = function () { this.readyState = 3; this.onopen(); };
    function frames() {
        var parts = Array.prototype.map.call(arguments, function (f) {
            return STOMPClient.serializeFrame(f[0], f[1], f[2] || '', true); });
        var out = new Uint8Array(parts.reduce(function (n, p) { return n + p.length; }, 0)), at = 0;
        parts.forEach(function (p) { out.set(p, at); at += p.length; });
        return out.buffer;
    }
"""


def test_a_stomp_page_callback_that_throws_costs_neither_the_connection_nor_later_frames(page):
    """The parser's try also caught the page's exceptions: 'STOMP protocol error', then 103."""
    result = run_js(page, FAKE_SOCKET + """
        var c = new STOMPClient(); c.transport = FakeSocket; c.heartbeat = {outgoing: 0, incoming: 0};
        var got = [], problems = [];
        c.onerror = function (e) { problems.push('error ' + e); };
        c.onclose = function (code) { problems.push('close ' + code); };
        c.onmessageframe = function (f) { got.push(f.body); if (got.length === 1) { throw new Error('page bug'); } };
        c.connect('h', 1); FakeSocket.last.opened();
        FakeSocket.last.onread(frames(['CONNECTED', {version: '1.2'}],
                                      ['MESSAGE', {destination: '/t', 'message-id': '1', subscription: 's'}, 'first'],
                                      ['MESSAGE', {destination: '/t', 'message-id': '2', subscription: 's'}, 'second']));
        await H.sleep(50);
        return {got: got, problems: problems, errors: pageErrors, connected: c.connected};
    """)
    assert result["got"] == ["first", "second"] and result["problems"] == []
    assert result["connected"] is True and len(result["errors"]) == 1 and "page bug" in result["errors"][0]


def test_a_stomp_protocol_error_closes_the_socket_even_when_onerror_throws(page):
    """fail() called the page's onerror before closing: an onerror that threw left the socket
    open on a broken stream, and onclose never came."""
    result = run_js(page, FAKE_SOCKET + """
        var c = new STOMPClient(); c.transport = FakeSocket; c.heartbeat = {outgoing: 0, incoming: 0};
        var closes = [], errors = [], thrown = null;
        c.onerror = function (why) { errors.push(why); throw new Error('page bug'); };
        c.onclose = function (code) { closes.push(code); };
        c.connect('h', 1); FakeSocket.last.opened();
        FakeSocket.last.onread(frames(['CONNECTED', {version: '1.2'}]));
        try {
            FakeSocket.last.onread(new TextEncoder().encode('MESSAGE\\ncontent-length:x\\n\\nabc\\u0000').buffer);
        } catch (e) { thrown = String(e); }
        await H.sleep(50);
        return {closes: closes, errors: errors, thrown: thrown, state: FakeSocket.last.readyState,
                pageErrors: pageErrors.length, connected: c.connected};
    """)
    assert result == {"closes": [103], "errors": ["STOMP protocol error: bad STOMP content-length x"],
                      "thrown": None, "state": 5, "pageErrors": 1, "connected": False}


def test_stomp_disconnect_before_the_socket_opened_closes_it_and_throws_nothing(page):
    result = run_js(page, FAKE_SOCKET + """
        var c = new STOMPClient(); c.transport = FakeSocket; var closes = [];
        c.onclose = function (code) { closes.push(code); };
        c.connect('h', 1);
        var socket = FakeSocket.last;
        c.disconnect();
        return {closes: closes, state: socket.readyState, sent: socket.sent.length};
    """)
    assert result == {"closes": [103], "state": 5, "sent": 0}


def test_irc_and_xmpp_quit_before_the_socket_opened_closes_it_and_throws_nothing(page):
    """quit() while still connecting (a 'leave' click, a pagehide handler) sent QUIT or the closing
    presence on a socket not open yet: TCPSocket threw 'Invalid readyState' and nothing closed."""
    result = run_js(page, FAKE_SOCKET + """
        var out = {};
        [['irc', IRCClient], ['xmpp', XMPPClient]].forEach(function (pair) {
            var c = new pair[1](), closes = [], thrown = null;
            c.transport = FakeSocket; c.onclose = function (code) { closes.push(code); };
            c.connect('h', 1);
            var socket = FakeSocket.last;
            try { c.quit(); } catch (e) { thrown = String(e); }
            out[pair[0]] = {closes: closes, thrown: thrown, state: socket.readyState, sent: socket.sent.length};
        });
        return out;
    """)
    expected = {"closes": [103], "thrown": None, "state": 5, "sent": 0}
    assert result == {"irc": expected, "xmpp": expected}


def test_irc_and_telnet_handlers_that_throw_cost_no_later_line(page):
    result = run_js(page, FAKE_SOCKET + """
        var irc = new IRCClient(); irc.transport = FakeSocket; irc.connect('h', 1);
        var ircSocket = FakeSocket.last; ircSocket.opened();
        var seen = [];
        irc.onPRIVMSG = function () { seen.push('PRIVMSG'); throw new Error('page bug'); };
        irc.onNOTICE = function (c) { seen.push('NOTICE ' + c.args[1]); };
        ircSocket.onread(':a!b@c PRIVMSG #x :hi\\r\\n:a!b@c NOTICE #x :later\\r\\n');
        var t = new TelnetClient(); t.transport = FakeSocket; t.connect('h', 1);
        var telnetSocket = FakeSocket.last; telnetSocket.opened();
        var lines = [];
        t.onmessage = function (line) { lines.push(line); if (line === 'bad') { throw new Error('page bug'); } };
        telnetSocket.onread('one\\r\\nbad\\r\\nthree\\r\\nfour');
        await H.sleep(50);
        return {seen: seen, lines: lines, errors: pageErrors.length};
    """)
    assert result == {"seen": ["PRIVMSG", "NOTICE later"], "lines": ["one", "bad", "three"], "errors": 2}


def test_telnet_onclose_comes_even_when_the_last_lines_handler_throws(page):
    """The close hands the unfinished last line to onmessage first; an onmessage that threw there
    cost the page its onclose."""
    result = run_js(page, FAKE_SOCKET + """
        var t = new TelnetClient(); t.transport = FakeSocket; t.connect('h', 1);
        var socket = FakeSocket.last; socket.opened();
        var lines = [], closes = [];
        t.onmessage = function (line) { lines.push(line); throw new Error('page bug'); };
        t.onclose = function (code) { closes.push(code); };
        socket.onread('no newline');
        try { socket.onclose(201); } catch (e) { lines.push('escaped: ' + e.message); }
        await H.sleep(50);
        return {lines: lines, closes: closes, errors: pageErrors.length};
    """)
    assert result == {"lines": ["no newline"], "closes": [201], "errors": 1}


def test_irc_messages_are_one_per_non_empty_line_for_privmsg_action_and_notice(page):
    result = run_js(page, FAKE_SOCKET + """
        var irc = new IRCClient(); irc.transport = FakeSocket; irc.connect('h', 1);
        var s = FakeSocket.last; s.opened(); s.sent = [];
        irc.privmsg('#c', 'hello\\n');
        irc.privmsg('#c', 'a\\n\\nb');
        irc.action('#c', 'waves\\n');
        irc.notice('#c', 'line1\\nline2');
        irc.notice('#c', 'x'.repeat(600));
        return s.sent.map(function (line) { return line.length > 60 ? line.length : line; });
    """)
    assert result[:6] == ["PRIVMSG #c :hello\r\n", "PRIVMSG #c :a\r\n", "PRIVMSG #c :b\r\n",
                          "PRIVMSG #c :\x01ACTION waves\x01\r\n", "NOTICE #c :line1\r\n", "NOTICE #c :line2\r\n"]
    assert len(result) == 8 and all(isinstance(n, int) and n <= 512 for n in result[6:])  # 600 x: two lines


def test_settings_follow_the_script_url_and_https_defaults_to_443(page, site):
    result = run_js(page, """
        var out = {here: [Orbited.settings.hostname, Orbited.settings.port, Orbited.settings.protocol]};
        // Load a second copy as if from https://orbited.example (no port) and read what it detected.
        var code = await (await fetch('/static/Orbited.js')).text();
        var fake = {location: {href: 'https://www.example.com/page', origin: 'https://www.example.com'},
                    document: {currentScript: {src: 'https://orbited.example/static/Orbited.js'}}};
        new Function('window', 'URL', code)(fake, URL);
        out.https = [fake.Orbited.settings.hostname, fake.Orbited.settings.port, fake.Orbited.settings.protocol];
        return out;
    """)
    assert result["here"] == ["127.0.0.1", site.port, "http"]
    assert result["https"] == ["orbited.example", 443, "https"]


@pytest.mark.parametrize("old,new", [
    ("protocols/stomp/stomp.js", "protocols/stomp.js"),
    ("protocols/irc/irc2.js", "protocols/irc.js"),
    ("protocols/xmpp/xmpp.js", "protocols/xmpp.js"),
    ("protocols/telnet/telnet.js", "protocols/telnet.js"),
])
def test_07_paths_serve_the_same_file(site, old, new):
    """The 0.7 URLs are links to the one source, served by the real server."""
    assert (STATIC / old).resolve() == (STATIC / new).resolve()
    with urllib.request.urlopen(f"http://127.0.0.1:{site.port}/static/{old}", timeout=10) as response:
        assert response.read() == (STATIC / new).read_bytes()


def test_xmpp_stream_namespace_prefix_is_the_servers_choice(page):
    """Stanzas were parsed inside a wrapper that bound only 'stream:': a server whose header
    binds the streams namespace to another prefix (RFC 6120 makes 'stream' a convention) or
    declares prefixes of its own had every stanza taken as malformed XML, and the client hung up."""
    result = run_js(page, FAKE_SOCKET + """
        var x = new XMPPClient(); x.transport = FakeSocket; var out = [];
        x.onerror = function (why) { out.push('error ' + why); };
        x.onMessage = function (from, from_, body) { out.push(from + ': ' + body); };
        x.connect('h', 1); FakeSocket.last.opened();
        x.connectServer('localhost', function () { out.push('features'); });
        FakeSocket.last.onread("<?xml version='1.0'?><s:stream xmlns='jabber:client' " +
            "xmlns:s='http://etherx.jabber.org/streams' xmlns:c=\\"jabber:client\\" from='localhost' version='1.0'>" +
            "<s:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism>" +
            "</mechanisms></s:features><c:message from='bob@localhost'><c:body>hi</c:body></c:message>");
        x.login('alice', 'pw');
        return {out: out, sent: FakeSocket.last.sent.slice(1)};
    """)
    assert result["out"] == ["features", "bob@localhost: hi"]
    assert result["sent"] == ["<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>"]


def _scram_server(client_first: str, password: str, salt: bytes, iterations: int) -> tuple:
    """The server's side of SCRAM-SHA-1 (RFC 5802): (server-first, a function of client-final ->
    server-final), for checking the client against an independent implementation."""
    import base64
    import hashlib
    import hmac

    bare = client_first[3:]
    nonce = dict(part.split("=", 1) for part in bare.split(","))["r"] + "SERVERNONCE"
    server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={iterations}"

    def final(client_final: str) -> str:
        salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)
        without_proof = client_final[: client_final.index(",p=")]
        auth = f"{bare},{server_first},{without_proof}".encode()
        server_key = hmac.new(salted, b"Server Key", "sha1").digest()
        return "v=" + base64.b64encode(hmac.new(server_key, auth, "sha1").digest()).decode()

    return server_first, final


def test_xmpp_scram_final_message_as_a_challenge(page):
    """RFC 3920 servers send SCRAM's server-final-message as a second <challenge/> and then an
    empty <success/>: the client took it for a server-first-message ('bad SCRAM
    server-first-message') and the login failed.  It now checks the signature there, answers
    with an empty response, and accepts the empty success; a wrong signature still fails."""
    import base64

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    results = []
    for signature_ok in (True, False):
        first = run_js(page, FAKE_SOCKET + """
            window.FakeSocket = FakeSocket; var x = new XMPPClient(); x.transport = FakeSocket; window.out = [];
            x.onerror = function (why) { out.push('error ' + why); };
            x.connect('h', 1); FakeSocket.last.opened();
            x.connectServer('localhost');
            FakeSocket.last.onread("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' " +
                "version='1.0'><stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" +
                "<mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>");
            x.login('alice', 'pw', function () { out.push('ok'); }, function (why) { out.push('fail ' + why); });
            return atob(FakeSocket.last.sent.pop().replace(/<[^>]*>/g, ''));
        """)
        server_first, final = _scram_server(first, "pw", b"salt1234", 4096)
        client_final = run_js(page, """
            FakeSocket.last.onread("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + args[0] + "</challenge>");
            return atob(FakeSocket.last.sent.pop().replace(/<[^>]*>/g, ''));
        """, b64(server_first))
        server_final = final(client_final) if signature_ok else "v=" + b64("not the signature")
        results.append(run_js(page, """
            var sent = FakeSocket.last.sent.length;
            FakeSocket.last.onread("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + args[0] + "</challenge>");
            var response = FakeSocket.last.sent.slice(sent, sent + 1);
            FakeSocket.last.onread("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
            return {response: response, out: out, restarted: FakeSocket.last.sent.slice(sent).some(function (s) {
                return s.indexOf('<stream:stream') >= 0; })};
        """, b64(server_final)))
    assert results[0] == {"response": ["<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'></response>"],
                          "out": [], "restarted": True}
    assert results[1]["out"][0].startswith("fail the server's SCRAM signature is wrong") and not results[1]["restarted"]


def test_xmpp_any_stream_error_before_the_features_fails_connect_server(page):
    """connectServer's failure callback heard only host-unknown: a server that refused the stream
    otherwise (see-other-host, policy-violation, system-shutdown...) left the page's connect
    waiting on a callback that never came.  Any stream error before the features now fails it,
    once; one after them does not."""
    result = run_js(page, FAKE_SOCKET + """
        var out = [];
        ['policy-violation', 'host-unknown'].forEach(function (condition) {
            var x = new XMPPClient(); x.transport = FakeSocket;
            x.connect('h', 1); FakeSocket.last.opened();
            x.connectServer('localhost', function () { out.push('ok'); }, function (why) { out.push('fail ' + why); });
            FakeSocket.last.onread("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' " +
                "version='1.0'><stream:error><" + condition + " xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" +
                "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>no</text></stream:error></stream:stream>");
        });
        var later = new XMPPClient(); later.transport = FakeSocket;
        later.connect('h', 1); FakeSocket.last.opened();
        later.connectServer('localhost', function () { out.push('ok'); }, function (why) { out.push('fail ' + why); });
        FakeSocket.last.onread("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' " +
            "version='1.0'><stream:features/><stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" +
            "</stream:error>");
        return out;
    """)
    assert result == ["fail policy-violation", "fail host-unknown", "ok"]


def test_irc_an_overlong_line_is_dropped_whole(page):
    """A line that grew past 64 KiB without its LF was dropped, but only what had arrived: its
    end, in the next read, was then parsed as a line of its own (here a PRIVMSG with no sender)."""
    result = run_js(page, FAKE_SOCKET + """
        var irc = new IRCClient(); irc.transport = FakeSocket; irc.connect('h', 1);
        var socket = FakeSocket.last, got = [];
        socket.opened();
        irc.onPRIVMSG = function (c) { got.push([c.nick, c.args[1]]); };
        socket.onread(':a PRIVMSG #c :' + 'x'.repeat(70000));
        socket.onread(' PRIVMSG #c :forged\\r\\n:b PRIVMSG #c :next\\r\\n');
        socket.onread(':a PRIVMSG #c :' + 'x'.repeat(70000));
        socket.onread('y'.repeat(70000));                  // still the same line
        socket.onread(' PRIVMSG #c :forged again\\r\\n:b PRIVMSG #c :next again\\r\\n');
        return got;
    """)
    assert result == [["b", "next"], ["b", "next again"]]


def test_xmpp_login_says_when_the_server_requires_starttls(page):
    """A server that requires TLS (prosody's default c2s_require_encryption) offers no SASL
    mechanism before STARTTLS, which the client does not do: login failed with 'no usable SASL
    mechanism (server offers: )', which sends the page author looking at passwords and mechanisms."""
    result = run_js(page, FAKE_SOCKET + """
        var x = new XMPPClient(), out = []; x.transport = FakeSocket;
        x.connect('h', 1); FakeSocket.last.opened();
        x.connectServer('localhost');
        FakeSocket.last.onread("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' " +
            "version='1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>" +
            "</stream:features>");
        x.login('alice', 'pw', function () { out.push('ok'); }, function (why) { out.push(why); });
        return out;
    """)
    assert result == ["the server requires STARTTLS, which XMPPClient does not do (see docs/client.md)"]
