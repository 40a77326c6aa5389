"""IRCClient (/static/protocols/irc.js): two Chromium pages chat through a real ngircd via Orbited."""

from __future__ import annotations

import pytest

from tests.support.backends import ScriptedBackend
from tests.support.procs import free_port
from tests.test_browser_support import (  # noqa: F401 (chromium is a fixture)
    OrbitedSite,
    chromium,
    run_js,
)

CONNECT_JS = """
window.connectIrc = function (port, nick) {
    return new Promise(function (resolve, reject) {
        var irc = new IRCClient();
        irc.log = []; irc.errors = []; irc.responses = [];
        irc.onopen = function () { irc.registered = false; irc.nick(nick); irc.ident(nick, '0', 'Orbited test ' + nick); };
        irc.onerror = function (c) {
            irc.errors.push(c.type);
            if (c.type === '433' && !irc.registered) { irc.nick(nick + '_'); }   // nickname in use: try another
        };
        irc.onresponse = function (c) { irc.responses.push(c); };
        irc.onconnect = function () { irc.registered = true; resolve(irc); };
        irc.onclose = function (code) { irc.closed = code; reject('closed ' + code); };
        ['PRIVMSG', 'ACTION', 'JOIN', 'PART', 'QUIT', 'NOTICE', 'PONG'].forEach(function (type) {
            irc['on' + type] = function (c) { irc.log.push({type: c.type, nick: c.nick, args: c.args}); };
        });
        irc.connect('127.0.0.1', port);
    });
};
"""


@pytest.fixture(scope="module")
def site(ngircd):
    echo = free_port()
    scripted = ScriptedBackend()
    with OrbitedSite(listen=(f"echo://127.0.0.1:{echo}",),
                     access=(f"* -> 127.0.0.1:{ngircd.port}", f"* -> 127.0.0.1:{echo}",
                             f"* -> 127.0.0.1:{scripted.port}"),
                     scripts=("/static/protocols/irc.js", "/static/protocols/telnet.js")) as orbited:
        orbited.irc = ngircd.port
        orbited.echo = echo
        orbited.scripted = scripted
        yield orbited
    scripted.close()


def open_page(browser, site):
    browser.get(site.url)
    run_js(browser, CONNECT_JS)
    return browser


def test_two_pages_chat_through_ngircd(chromium, browser, site):  # noqa: F811
    alice = open_page(chromium, site)
    bob = open_page(browser, site)
    run_js(alice, """
        window.irc = await connectIrc(args[0], 'alice');
        irc.join('#orbited');
        await H.until(function () { return irc.log.some(function (e) { return e.type === 'JOIN'; }); });
    """, site.irc)
    # bob first asks for the nick alice has: 433 goes to onerror, the page retries as alice_
    bob_nick = run_js(bob, """
        window.irc = await connectIrc(args[0], 'alice');
        irc.join('#orbited');
        await H.until(function () { return irc.log.some(function (e) { return e.type === 'JOIN'; }); });
        return irc.nickname;
    """, site.irc)
    assert bob_nick == "alice_"
    assert "433" in run_js(bob, "return irc.errors;")

    names = run_js(alice, """
        await H.until(function () {
            return irc.log.some(function (e) { return e.type === 'JOIN' && e.nick === 'alice_'; });
        });
        irc.privmsg('#orbited', 'hello 😀 from alice\\nsecond line');
        irc.privmsg('#orbited', 'hi\\r\\nQUIT :not a command');   // user text cannot inject a command
        var before = irc.responses.length;
        irc.names('#orbited');
        var reply = function () { return irc.responses.slice(before); };
        await H.until(function () { return reply().some(function (c) { return c.type === '366'; }); });
        var names = reply().filter(function (c) { return c.type === '353'; }).pop().args;
        return names[names.length - 1].split(' ').sort();
    """)
    assert names == ["@alice", "alice_"], names
    got = run_js(bob, """
        await H.until(function () { return irc.log.filter(function (e) { return e.type === 'PRIVMSG'; }).length >= 4; });
        irc.action('#orbited', 'waves');
        return irc.log.filter(function (e) { return e.type === 'PRIVMSG'; });
    """)
    assert [(e["nick"], e["args"]) for e in got] == [
        ("alice", ["#orbited", "hello 😀 from alice"]),
        ("alice", ["#orbited", "second line"]),
        ("alice", ["#orbited", "hi"]),
        ("alice", ["#orbited", "QUIT :not a command"]),
    ]
    ended = run_js(alice, """
        await H.until(function () { return irc.log.some(function (e) { return e.type === 'ACTION'; }); });
        var action = irc.log.filter(function (e) { return e.type === 'ACTION'; })[0];
        irc.part('#orbited', 'bye for now');
        irc.quit('gone home');
        await H.until(function () { return irc.closed !== undefined; });
        return {action: action, closed: irc.closed};
    """)
    assert ended["action"] == {"type": "ACTION", "nick": "alice_", "args": ["#orbited", "waves"]}
    assert ended["closed"] in (103, 201)
    left = run_js(bob, """
        await H.until(function () { return irc.log.some(function (e) { return e.type === 'QUIT' || e.type === 'PART'; }); });
        await H.sleep(300);
        var out = irc.log.filter(function (e) { return e.type === 'PART' || e.type === 'QUIT'; });
        irc.quit(); return out;
    """)
    assert left[0] == {"type": "PART", "nick": "alice", "args": ["#orbited", "bye for now"]}


def test_quit_then_connect_at_once(chromium, site):  # noqa: F811
    """A page that quits and connects again in one go (a 'reconnect' button): the old socket's
    close came after connect() and nulled the new one, so the new connection could send nothing
    ('IRCClient is not connected', and the same in TelnetClient and XMPPClient)."""
    page = open_page(chromium, site)
    result = run_js(page, """
        var irc = await connectIrc(args[0], 'again'), closes = [], welcomed = 0;
        irc.onclose = function (code) { closes.push(code); };
        irc.onconnect = function () { welcomed++; };
        irc.quit('back at once'); irc.connect('127.0.0.1', args[0]);
        await H.until(function () { return welcomed === 1; }, 10000);
        irc.join('#again');
        await H.until(function () { return irc.log.some(function (e) { return e.type === 'JOIN'; }); }, 10000);
        var out = {ircCloses: closes.slice()};
        irc.quit();
        var telnet = new TelnetClient(), lines = [], telnetCloses = [];
        telnet.onmessage = function (line) { lines.push(line); };
        telnet.onclose = function (code) { telnetCloses.push(code); };
        await new Promise(function (r) { telnet.onopen = r; telnet.connect('127.0.0.1', args[1]); });
        var opened = new Promise(function (r) { telnet.onopen = r; });
        telnet.close(); telnet.connect('127.0.0.1', args[1]);
        await opened;
        telnet.send('still here');
        await H.until(function () { return lines.length; }, 10000);
        out.lines = lines; out.telnetCloses = telnetCloses;
        telnet.close();
        return out;
    """, site.irc, site.echo)
    assert result == {"ircCloses": [103], "lines": ["still here"], "telnetCloses": [103]}


def test_ping_is_answered_with_pong(chromium, site):  # noqa: F811
    """Against an echo backend, the client's own PING comes back and must be answered."""
    page = open_page(chromium, site)
    result = run_js(page, """
        var irc = new IRCClient(), log = [];
        irc.onPONG = function (c) { log.push(c.args); };
        await new Promise(function (r) { irc.onopen = r; irc.connect('127.0.0.1', args[0]); });
        irc.raw('PING :token-123');       // echoed back as a server PING
        await H.until(function () { return log.length; });
        irc.close();
        return log;
    """, site.echo)
    assert result == [["token-123"]]


def test_line_parser(chromium, site):  # noqa: F811
    page = open_page(chromium, site)
    result = run_js(page, """
        var p = IRCClient.parseLine;
        var out = [p(':nick!user@host PRIVMSG #chan :hello there'), p('PING :irc.example'),
                   p('@time=2024-01-01T00:00:00Z :srv 353 me = #c :a b c'), p(':srv 001 me :Welcome'),
                   p(':nick@host PRIVMSG #chan :no user part'), p(':nick!user PRIVMSG #chan :no host'),
                   p('@k=a\\\\sb\\\\:c\\\\\\\\d\\\\x\\\\;e=\\\\ :s PRIVMSG y :z')];
        var pieces = IRCClient.splitBytes('😀'.repeat(10), 9).map(function (s) { return [...s].length; });
        var irc = new IRCClient(), thrown = [];
        [['nick', 'a b'], ['join', '#x\\r\\nQUIT'], ['raw', 'x\\ny']].forEach(function (c) {
            try { irc.connect = null; irc[c[0]](c[1]); } catch (e) { thrown.push(c[0]); }
        });
        return {out: out, pieces: pieces, thrown: thrown};
    """)
    out = result["out"]
    assert out[0] == {"prefix": "nick!user@host", "nick": "nick", "type": "PRIVMSG",
                      "args": ["#chan", "hello there"], "tags": None}
    assert out[1]["type"] == "PING" and out[1]["args"] == ["irc.example"]
    assert out[2]["tags"] == {"time": "2024-01-01T00:00:00Z"} and out[2]["args"] == ["me", "=", "#c", "a b c"]
    assert out[3]["type"] == "001"
    # RFC 2812's prefix: nickname [["!" user] "@" host]; ':nick@host' gave the nick 'nick@host'
    assert [out[4]["nick"], out[5]["nick"]] == ["nick", "nick"]
    # IRCv3 tag values are escaped on the wire (backslash-s a space, backslash-colon a semicolon...): they came raw
    assert out[6]["tags"] == {"k": "a b;c\\dx", "e": ""}, out[6]["tags"]
    assert result["pieces"] == [2, 2, 2, 2, 2]
    assert result["thrown"] == ["nick", "join", "raw"]


def test_long_reason_is_cut_to_fit_the_line(chromium, site):  # noqa: F811
    """A PART reason (or QUIT reason, TOPIC...) longer than IRC's 512-byte line went out whole,
    and ngircd answers such a line with 'ERROR :Request too long' and drops the connection: the
    page lost its session for a long reason.  send() now cuts the trailing text (at a character)
    to fit; raw() refuses a line that cannot fit rather than send it."""
    page = open_page(chromium, site)
    result = run_js(page, """
        var irc = await connectIrc(args[0], 'longpart');
        irc.join('#long');
        await H.until(function () { return irc.log.some(function (e) { return e.type === 'JOIN'; }); });
        irc.part('#long', '\u00e9'.repeat(400));           // 800 bytes of UTF-8
        await H.until(function () { return irc.log.some(function (e) { return e.type === 'PART'; }) ||
                                           irc.closed !== undefined; });
        var part = irc.log.filter(function (e) { return e.type === 'PART'; })[0];
        var thrown = null;
        try { irc.raw('PRIVMSG #long :' + 'x'.repeat(500)); } catch (e) { thrown = e.message; }
        irc.join('#long2');                                // the session is still there
        await H.until(function () { return irc.log.filter(function (e) { return e.type === 'JOIN'; }).length === 2 ||
                                           irc.closed !== undefined; });
        var out = {closed: irc.closed === undefined ? null : irc.closed, part: part, thrown: thrown};
        irc.quit();
        return out;
    """, site.irc)
    assert result["closed"] is None, result
    reason = result["part"]["args"][1]
    assert reason.startswith("\u00e9" * 200), reason  # ngircd shortens it further, with "[CUT]"
    assert result["thrown"] and "512 bytes" in result["thrown"]


def test_refused_nick_change_keeps_the_nickname(chromium, site):  # noqa: F811
    """nick() set `nickname` before the server answered: a change refused with 433 (in use) left
    it naming the other user, and that user's later NICK was then taken for our own."""
    page = open_page(chromium, site)
    result = run_js(page, """
        var a = await connectIrc(args[0], 'nicka'), b = await connectIrc(args[0], 'nickb');
        a.join('#nicks'); b.join('#nicks');
        await H.until(function () { return a.log.filter(function (e) { return e.type === 'JOIN'; }).length === 2; });
        a.nick('nickb');                                   // in use: 433
        await H.until(function () { return a.errors.indexOf('433') >= 0; });
        var afterRefusal = a.nickname;
        var seen = false;
        a.onNICK = function () { seen = true; };
        b.nick('nickc');                                   // the other user renames
        await H.until(function () { return seen; });
        var out = [afterRefusal, a.nickname];
        a.nick('nickd');                                   // a change the server accepts
        await H.until(function () { return a.nickname === 'nickd'; });
        a.quit(); b.quit();
        return out;
    """, site.irc)
    assert result == ["nicka", "nicka"]


def test_telnet_commands_are_taken_off_and_options_refused(chromium, site):  # noqa: F811
    """A telnet server opens with option negotiation (IAC DO TTYPE, IAC WILL ECHO...): the bytes
    reached the page as U+FFFD and control characters inside the prompt and lines, and the client
    never answered.  Now every IAC command is taken off, split anywhere across reads (IAC IAC is a
    0xFF byte), options offered or asked for are refused once each, and text is UTF-8 as before."""
    site.scripted.serve([b"\xff\xfd\x18\xff\xfb", b"\x01\xff\xfb\x03login: ", b"caf\xc3", b"\xa9 \xff",
                         b"\xff!\xff\xfa\x18\x01\xff", b"\xf0 done\r\n"])
    page = open_page(chromium, site)
    result = run_js(page, """
        var t = new TelnetClient(), lines = [], partials = [];
        t.onmessage = function (line) { lines.push(line); };
        t.onpartial = function (text) { partials.push(text); };
        await new Promise(function (r) { t.onopen = r; t.connect('127.0.0.1', args[0]); });
        await H.until(function () { return lines.length; });
        t.send('\u00ff');
        await H.sleep(200);
        t.close();
        return {lines: lines, partials: partials};
    """, site.scripted.port)
    assert result["lines"] == ["login: caf\u00e9 \ufffd! done"]
    assert result["partials"][0] == "login: "
    assert site.scripted.received() == b"\xff\xfc\x18\xff\xfe\x01\xff\xfe\x03\xc3\xbf\r\n"


def test_lines_that_are_not_utf8_are_read_as_latin1(chromium, site):  # noqa: F811
    """IRC has no charset, and older clients send Latin-1 (windows-1252): 'caf\\xe9' reached the
    page as 'caf\\ufffd'.  UTF-8 is now read as UTF-8 (a character split across reads included)
    and each byte that is not part of a UTF-8 character as windows-1252, so a UTF-8 line that
    ngircd cut inside a character ('[CUT]') keeps its text; the lines after are untouched."""
    site.scripted.serve([b":old!u@h PRIVMSG #c :caf\xe9 \x80\r\n:new!u@h PRIVMSG #c :caf\xc3", b"\xa9 \xe2",
                         b"\x82\xac\r\nPING :tok\r\n:old!u@h PRIVMSG #c :na\xefve\r\n",
                         b":cut!u@h PRIVMSG #c :\xc3\xa9\xc3\xa9\xc3[CUT]\r\n"])
    page = open_page(chromium, site)
    result = run_js(page, """
        var irc = new IRCClient(), texts = [];
        irc.onPRIVMSG = function (c) { texts.push(c.nick + ': ' + c.args[1]); };
        await new Promise(function (r) { irc.onopen = r; irc.connect('127.0.0.1', args[0]); });
        await H.until(function () { return texts.length === 4; });
        irc.privmsg('#c', 'd\\u00e9j\\u00e0 vu');
        await H.sleep(200);
        irc.close();
        return texts;
    """, site.scripted.port)
    assert result == ["old: caf\u00e9 \u20ac", "new: caf\u00e9 \u20ac", "old: na\u00efve",
                      "cut: \u00e9\u00e9\u00c3[CUT]"]
    assert site.scripted.received() == "PONG :tok\r\nPRIVMSG #c :d\u00e9j\u00e0 vu\r\n".encode()
