"""XMPPClient (/static/protocols/xmpp.js): two Chromium pages log in to a real prosody via Orbited.

alice uses SCRAM-SHA-1, bob PLAIN; they exchange chat messages whose text
needs XML escaping, subscribe to each other's presence (roster pushes), and
talk in a multi-user chat room on conference.localhost.
"""

from __future__ import annotations

import pytest

from tests.test_browser_support import (  # noqa: F401 (chromium is a fixture)
    OrbitedSite,
    chromium,
    run_js,
)

LOGIN_JS = """
window.login = function (port, user, password, mechanisms) {
    return new Promise(function (resolve, reject) {
        var x = new XMPPClient();
        if (mechanisms) { x.mechanisms = mechanisms; }
        x.messages = []; x.presences = []; x.groupchat = []; x.joined = []; x.rosters = 0;
        x.onMessage = function (from, from_, body, stamp) { x.messages.push({from: from, body: body}); };
        x.onPresence = function (type, from, to, show, status) {
            x.presences.push({type: type, from: from, show: show, status: status});
        };
        x.onRoster = function () { x.rosters++; };
        x.onRoomJoined = function (room, nick) { x.joined.push(room + '/' + nick); };
        x.onclose = function (code) { x.closed = code; reject('closed ' + code); };
        x.onSocketConnect = function () {
            x.connectServer('localhost', function () {
                x.login(user, password, function () { resolve(x); }, function (why) { reject('login: ' + why); });
            }, function (why) { reject('stream: ' + why); });
        };
        x.connect('127.0.0.1', port);
    });
};
"""

TRICKY = "<b>bold?</b> & 'quotes' \"too\" ]]> 😀 \u0007bell"


@pytest.fixture(scope="module")
def site(prosody):
    with OrbitedSite(access=(f"* -> 127.0.0.1:{prosody.port}",),
                     scripts=("/static/protocols/xmpp.js",)) as orbited:
        orbited.xmpp = prosody.port
        yield orbited


def open_page(browser, site):
    browser.get(site.url)
    run_js(browser, LOGIN_JS)
    return browser


def test_two_pages_log_in_and_chat(chromium, browser, site):  # noqa: F811
    alice = open_page(chromium, site)
    bob = open_page(browser, site)
    jid_a = run_js(alice, "window.x = await login(args[0], 'alice', 'alicepw'); return x.jid;", site.xmpp)
    jid_b = run_js(bob, "window.x = await login(args[0], 'bob', 'bobpw', ['PLAIN']); return x.jid;", site.xmpp)
    assert jid_a == "alice@localhost/Orbited"
    assert jid_b == "bob@localhost/Orbited"

    # chat with text that needs escaping (and a control character XML cannot carry)
    run_js(alice, "x.msg('bob@localhost', args[0]);", TRICKY)
    got = run_js(bob, """
        await H.until(function () { return x.messages.length; });
        x.msg(x.messages[0].from, 'reply to ' + x.messages[0].body);
        return x.messages[0];
    """)
    assert got == {"from": "alice@localhost/Orbited", "body": TRICKY.replace("\u0007", "")}
    reply = run_js(alice, "await H.until(function () { return x.messages.length; }); return x.messages[0];")
    assert reply == {"from": "bob@localhost/Orbited", "body": "reply to " + TRICKY.replace("\u0007", "")}

    # presence subscription: alice asks, bob approves, alice's roster gets bob and she sees him online
    run_js(alice, "x.subscribe('bob@localhost');")
    run_js(bob, """
        await H.until(function () { return x.presences.some(function (p) { return p.type === 'subscribe'; }); });
        x.sendSubscribed('alice@localhost');
        x.set_presence('away', 'having lunch');
    """)
    roster = run_js(alice, """
        await H.until(function () {
            var b = x.roster['bob@localhost'];
            return b && (b.subscription === 'to' || b.subscription === 'both') &&
                x.presences.some(function (p) { return p.from === 'bob@localhost/Orbited' && p.show === 'away'; });
        });
        var p = x.presences.filter(function (p) { return p.from === 'bob@localhost/Orbited'; }).pop();
        return {entry: x.roster['bob@localhost'].jid, show: p.show, status: p.status, pushes: x.rosters};
    """)
    assert roster["entry"] == "bob@localhost"
    assert (roster["show"], roster["status"]) == ("away", "having lunch")
    assert roster["pushes"] >= 2  # the login fetch, then at least one push

    # multi-user chat
    room = "orbited-test@conference.localhost"
    run_js(alice, """
        x.onGroupchat = function (room, nick, body) { x.groupchat.push([room, nick, body]); };
        x.join_room(args[0]);
        await H.until(function () { return x.joined.length; });
    """, room)
    run_js(bob, """
        x.onGroupchat = function (room, nick, body) { x.groupchat.push([room, nick, body]); };
        x.join_room(args[0], '', '', 'bobby');
        await H.until(function () { return x.joined.length; });
        x.groupchat_msg('hello room & all <3');
    """, room)
    heard = run_js(alice, """
        await H.until(function () { return x.groupchat.some(function (g) { return g[1] === 'bobby'; }); });
        return x.groupchat.filter(function (g) { return g[1] === 'bobby'; })[0];
    """)
    assert heard == [room, "bobby", "hello room & all <3"]
    for page in (alice, bob):
        closed = run_js(page, """
            x.leave_room(); x.quit();
            await H.until(function () { return x.closed !== undefined; });
            return x.closed;
        """)
        assert closed in (103, 201)


def test_wrong_password_fails_login(chromium, site):  # noqa: F811
    page = open_page(chromium, site)
    why = run_js(page, """
        try { await login(args[0], 'alice', 'wrong'); return 'logged in'; } catch (e) { return e; }
    """, site.xmpp)
    assert why == "login: not-authorized"


def test_scram_and_stanza_splitting_units(chromium, site):  # noqa: F811
    page = open_page(chromium, site)
    result = run_js(page, """
        // RFC 5802 section 5 test vector
        var s = new XMPPClient.ScramSha1('user', 'pencil', 'fyko+d2lbbFgONRv9qkxdawL');
        var first = s.initial();
        var final = s.challenge('r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096');
        var verified = s.verify('v=rmF9pqV8S7suAoZWja4dJRkFsKQ=');
        var hex = Array.from(XMPPClient.sha1(new TextEncoder().encode('abc')))
            .map(function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
        // a stream fed one character at a time splits into the same stanzas
        var stream = "<?xml version='1.0'?><stream:stream from='x' id='a>b' xmlns='jabber:client' " +
            "xmlns:stream='http://etherx.jabber.org/streams'> <message to='a' x='1>2'><body>a &gt; b" +
            "</body></message><presence/>\\n<iq id='1'><q><r/></q></iq></stream:stream>";
        var splitter = new XMPPClient.StanzaSplitter(), items = [];
        for (var i = 0; i < stream.length; i++) { items = items.concat(splitter.feed(stream[i])); }
        return {first: first, final: final, verified: verified, sha1: hex,
                items: items.map(function (it) { return typeof it === 'string' ? it : JSON.stringify(it); }),
                escaped: XMPPClient.escapeXml('<a href="x">&\\'\\u0000</a>')};
    """)
    assert result["first"] == "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
    assert result["final"] == "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    assert result["verified"] is True
    assert result["sha1"] == "a9993e364706816aba3e25717850c26c9cd0d89d"
    assert result["items"] == [
        '{"open":{"from":"x","id":"a>b","xmlns":"jabber:client","xmlns:stream":"http://etherx.jabber.org/streams"}}',
        "<message to='a' x='1>2'><body>a &gt; b</body></message>",
        "<presence/>",
        "<iq id='1'><q><r/></q></iq>",
        '{"close":true}',
    ]
    assert result["escaped"] == "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"


def test_the_server_ending_the_stream_closes_with_201_once(chromium, site):  # noqa: F811
    """alice logs in again with the same resource: prosody ends the first stream with a conflict
    stream error.  It was the server that closed the session, so that page hears 201 once (it heard
    103, the code for its own close(), because the client hung up the socket itself)."""
    page = open_page(chromium, site)
    result = run_js(page, """
        var errs = [];
        window.addEventListener('error', function (e) { errs.push(String(e.message)); });
        var first = await login(args[0], 'alice', 'alicepw');
        var closes = [], errors = [];
        first.onclose = function (code) { closes.push(code); };
        // a page handler that throws is reported and changes nothing
        first.onerror = function (why) { errors.push(why); throw new Error('page bug'); };
        var second = await login(args[0], 'alice', 'alicepw');
        await H.until(function () { return closes.length; });
        await H.sleep(500);
        second.quit();
        return {closes: closes, errors: errors, errs: errs, second: second.jid};
    """, site.xmpp)
    assert result == {"closes": [201], "errors": ["stream error: conflict"], "errs": ["Uncaught Error: page bug"],
                      "second": "alice@localhost/Orbited"}


def test_close_then_connect_at_once(chromium, site):  # noqa: F811
    """close() and connect() in one go: the old socket's close came after connect() and nulled the
    new one ('XMPPClient is not connected' from connectServer), so the new login never happened."""
    page = open_page(chromium, site)
    result = run_js(page, """
        var x = await login(args[0], 'bob', 'bobpw'), closes = [];
        x.onclose = function (code) { closes.push(code); };
        var again = new Promise(function (resolve, reject) {
            x.onSocketConnect = function () {
                x.connectServer('localhost', function () { x.login('bob', 'bobpw', resolve, reject); }, reject);
            };
        });
        x.quit(); x.close(); x.connect('127.0.0.1', args[0]);
        await Promise.race([again, H.sleep(10000).then(function () { throw 'no second login'; })]);
        x.msg(x.jid, 'to myself');
        await H.until(function () { return x.messages.length; }, 10000);
        x.quit();
        return {closes: closes, body: x.messages[0].body};
    """, site.xmpp)
    assert result == {"closes": [103], "body": "to myself"}
