"""STOMPClient (/static/protocols/stomp.js) and @stomp/stompjs over Orbited, in Chromium.

Against RabbitMQ's STOMP plugin and, once it has landed, Orbited's built-in
broker.  What is checked would break if the feature did: a nack'd message
comes back, an ack'd one does not after a reconnect, an aborted transaction
delivers nothing, a receipt arrives, bodies with NUL and 4-byte UTF-8 come
back byte-exact, heart-beats keep an idle connection alive, and a Python
publisher (stomp.py) reaches the page.
"""

from __future__ import annotations

import time

import pytest
import stomp

from tests.support.procs import REPO, free_port
from tests.test_browser_support import (  # noqa: F401 (chromium is a fixture)
    BROKER_LANDED,
    OrbitedSite,
    chromium,
    run_js,
)

STOMPJS_BUNDLES = REPO / "tests" / "js" / "node_modules" / "@stomp" / "stompjs" / "bundles"


@pytest.fixture(scope="module", params=["rabbitmq", "builtin"])
def broker(request):
    """(orbited site, STOMP port, login, passcode) for each broker."""
    if request.param == "rabbitmq":
        rabbit = request.getfixturevalue("rabbitmq")
        port, listen = rabbit.port, ()
    else:
        if not BROKER_LANDED:
            pytest.skip("the built-in STOMP broker (orbited/stomp) has not landed yet")
        port = free_port()
        listen = (f"stomp://127.0.0.1:{port}",)
    with OrbitedSite(listen=listen, access=(f"* -> 127.0.0.1:{port}",),
                     static={"stompjs": str(STOMPJS_BUNDLES)},
                     scripts=("/static/protocols/stomp.js",)) as site:
        yield site, port, "guest", "guest", request.param


@pytest.fixture
def page(chromium, broker):  # noqa: F811
    chromium.get(broker[0].url)
    run_js(chromium, """
        window.connectStomp = function (port, login, passcode, heartbeat) {
            return new Promise(function (resolve, reject) {
                var c = new STOMPClient();
                c.frames = []; c.errors = []; c.closes = [];
                if (heartbeat) { c.heartbeat = heartbeat; }
                c.onconnectedframe = function (f) { c.connectedFrame = f; resolve(c); };
                c.onmessageframe = function (f) { c.frames.push(f); };
                c.onerrorframe = function (f) { c.errors.push(f); reject(f.headers.message); };
                c.onclose = function (code) { c.closes.push(code); reject('closed ' + code); };
                c.connect('127.0.0.1', port, login, passcode);
            });
        };
    """)
    return chromium


def connect_args(broker):
    _site, port, login, passcode, _name = broker
    return port, login, passcode


def test_messages_receipts_and_exact_bodies(page, broker):
    result = run_js(page, """
        var c = await connectStomp(args[0], args[1], args[2]);
        var dest = '/queue/orbited-exact-' + Date.now();
        var receipts = [];
        c.watchForReceipt('sub-receipt', function (f) { receipts.push(f.headers['receipt-id']); });
        c.subscribe(dest, {receipt: 'sub-receipt'});
        await H.until(function () { return receipts.length === 1; });
        var body = 'line 1\\n\\nline 3 \\u0000 nul, é € 😀';
        c.send(body, dest);
        var binary = new Uint8Array(256); for (var i = 0; i < 256; i++) { binary[i] = i; }
        c.send(binary, dest, {'content-type': 'application/octet-stream'});
        await H.until(function () { return c.frames.length === 2; });
        var f0 = c.frames[0], f1 = c.frames[1];
        c.disconnect();
        await H.until(function () { return c.closes.length; });
        return {version: c.version, receipts: receipts, body: f0.body,
                bytes: Array.from(f1.binaryBody), dest: f0.headers.destination === dest};
    """, *connect_args(broker))
    assert result["version"] == "1.2"
    assert result["receipts"] == ["sub-receipt"]
    assert result["body"] == "line 1\n\nline 3 \0 nul, é € 😀"
    assert result["bytes"] == list(range(256))
    assert result["dest"]


def test_ack_and_nack(page, broker):
    result = run_js(page, """
        var dest = '/queue/orbited-ack-' + Date.now();
        var c = await connectStomp(args[0], args[1], args[2]);
        c.subscribe(dest, {ack: 'client-individual'});
        c.send('keep', dest); c.send('retry', dest);
        await H.until(function () { return c.frames.length === 2; });
        var first = c.frames.map(function (f) { return f.body; });
        c.ack(c.frames[0]);
        c.nack(c.frames[1]);
        // the nack'd message is delivered again; ack it by its ack id this time (0.7's ack(id) form)
        await H.until(function () { return c.frames.length === 3; });
        var again = c.frames[2];
        c.ack(again.headers.ack || again.headers['message-id']);
        await H.sleep(300);
        c.disconnect();
        await H.until(function () { return c.closes.length; });
        // a new connection gets nothing: both messages were acknowledged
        var d = await connectStomp(args[0], args[1], args[2]);
        d.subscribe(dest, {ack: 'client-individual'});
        await H.sleep(1500);
        var left = d.frames.map(function (f) { return f.body; });
        d.disconnect();
        return {first: first, again: again.body, left: left};
    """, *connect_args(broker))
    assert result["first"] == ["keep", "retry"]
    assert result["again"] == "retry"
    assert result["left"] == []


def test_transactions(page, broker):
    result = run_js(page, """
        var dest = '/queue/orbited-tx-' + Date.now();
        var c = await connectStomp(args[0], args[1], args[2]);
        c.subscribe(dest);
        var aborted = c.begin();
        c.send('never', dest, {transaction: aborted});
        c.abort(aborted);
        var committed = c.begin('tx-commit');
        c.send('one', dest, {transaction: committed});
        c.send('two', dest, {transaction: committed});
        await H.sleep(500);
        var beforeCommit = c.frames.length;
        c.commit(committed);
        await H.until(function () { return c.frames.length >= 2; });
        await H.sleep(500);
        var bodies = c.frames.map(function (f) { return f.body; });
        c.disconnect();
        return {beforeCommit: beforeCommit, bodies: bodies};
    """, *connect_args(broker))
    assert result["beforeCommit"] == 0
    assert result["bodies"] == ["one", "two"]


def test_heartbeats_keep_an_idle_connection(page, broker):
    result = run_js(page, """
        var c = await connectStomp(args[0], args[1], args[2], {outgoing: 1000, incoming: 1000});
        var hb = c.connectedFrame.headers['heart-beat'];
        await H.sleep(4500);
        var dest = '/queue/orbited-hb-' + Date.now();
        c.subscribe(dest); c.send('still here', dest);
        await H.until(function () { return c.frames.length === 1; });
        var out = {hb: hb, connected: c.connected, closes: c.closes.slice(), body: c.frames[0].body};
        c.disconnect();
        return out;
    """, *connect_args(broker))
    assert result["hb"] != "0,0"
    assert result["connected"] and result["closes"] == []
    assert result["body"] == "still here"


def test_the_same_client_connects_again(page, broker):
    """A page reconnects its STOMPClient after the connection ended.  The client kept the old
    session's subscriptions, so a 0.7-style unsubscribe(destination) also named the dead 'sub-1'
    (the built-in broker answers ERROR and closes); and connect() while the old socket still
    waited for its DISCONNECT receipt let that socket's receipt and close land on the new
    connection, which the client then took for closed ('STOMPClient is not connected')."""
    result = run_js(page, """
        var c = new STOMPClient(), frames = [], closes = [], errors = [];
        c.onmessageframe = function (f) { frames.push(f.body); };
        c.onclose = function (code) { closes.push(code); };
        c.onerrorframe = function (f) { errors.push(f.headers.message); };
        function connect() {
            var connected = new Promise(function (resolve) {
                c.onconnectedframe = resolve; c.connect('127.0.0.1', args[0], args[1], args[2]);
            });
            return Promise.race([connected, H.sleep(10000).then(function () { throw 'no CONNECTED'; })]);
        }
        var dest = '/topic/orbited-again-' + Date.now();
        await connect();
        c.subscribe(dest, {ack: 'client'}); c.send('m1', dest);
        await H.until(function () { return frames.length === 1; });
        c.disconnect();
        await H.until(function () { return closes.length === 1; });
        await connect();
        c.subscribe(dest); c.send('m2', dest);
        await H.until(function () { return frames.length === 2; });
        c.unsubscribe(dest); c.send('m3', dest);
        await H.sleep(500);
        var first = {frames: frames.slice(), closes: closes.slice(), errors: errors.slice(), connected: c.connected};
        c.disconnect();
        await connect();  // at once, while the old socket waits for its receipt
        await H.sleep(500);
        c.subscribe(dest); c.send('m4', dest);
        await H.until(function () { return frames.length === 3; });
        var second = {frames: frames.slice(2), closes: closes.slice(), connected: c.connected};
        c.disconnect();
        return {first: first, second: second};
    """, *connect_args(broker))
    assert result["first"] == {"frames": ["m1", "m2"], "closes": [103], "errors": [], "connected": True}
    # the old connection's close is reported (once), and is not taken for the new one's
    assert result["second"] == {"frames": ["m4"], "closes": [103, 103], "connected": True}


def test_python_publisher_reaches_the_page(page, broker):
    """The Rails flow in Python: a server-side stomp.py client sends to /topic/..., the page gets it."""
    _site, port, login, passcode, _name = broker
    topic = f"/topic/orbited-push-{time.time_ns()}"
    run_js(page, """
        window.c = await connectStomp(args[0], args[1], args[2]);
        var receipts = [];
        c.watchForReceipt('ready', function () { receipts.push(1); });
        c.subscribe(args[3], {receipt: 'ready'});
        await H.until(function () { return receipts.length; });
    """, port, login, passcode, topic)
    conn = stomp.Connection([("127.0.0.1", port)], heartbeats=(0, 0))
    conn.connect(login, passcode, wait=True)
    try:
        conn.send(destination=topic, body="pushed from Python ✓", content_type="text/plain")
    finally:
        conn.disconnect()
    body = run_js(page, """
        await H.until(function () { return c.frames.length; });
        c.disconnect();
        return c.frames[0].body;
    """)
    assert body == "pushed from Python ✓"


def test_07_page_with_the_07_path_and_global_tcpsocket(chromium, broker):  # noqa: F811
    """A 0.7 page: /static/protocols/stomp/stomp.js, TCPSocket = Orbited.TCPSocket, onmessage."""
    site = broker[0]
    (site.pages / "old.html").write_text(
        "<!doctype html><meta charset=utf-8><script src='/static/Orbited.js'></script>"
        "<script>TCPSocket = Orbited.TCPSocket;</script>"
        "<script src='/static/protocols/stomp/stomp.js'></script><script src='harness.js'></script>")
    chromium.get(site.url.replace("index.html", "old.html"))
    result = run_js(chromium, """
        var got = [], dest = '/queue/orbited-07-' + Date.now();
        var stomp = new STOMPClient();
        stomp.onconnectedframe = function () { stomp.subscribe(dest); stomp.send('from a 0.7 page', dest); };
        stomp.onmessage = function (frame) { got.push(frame.body); };   // the deprecated callback
        stomp.connect('127.0.0.1', args[0], args[1], args[2]);
        await H.until(function () { return got.length; });
        stomp.reset();
        return got;
    """, *connect_args(broker))
    assert result == ["from a 0.7 page"]


def test_stompjs_over_a_tcpsocket(chromium, broker):  # noqa: F811
    """@stomp/stompjs 7 runs over Orbited.WebSocketAdapter to a plain-TCP STOMP broker."""
    site = broker[0]
    (site.pages / "stompjs.html").write_text(
        "<!doctype html><meta charset=utf-8><script src='/static/Orbited.js'></script>"
        "<script src='/stompjs/stomp.umd.min.js'></script><script src='harness.js'></script>")
    chromium.get(site.url.replace("index.html", "stompjs.html"))
    result = run_js(chromium, """
        var dest = '/queue/orbited-stompjs-' + Date.now(), got = [];
        var client = new StompJs.Client({
            webSocketFactory: function () { return new Orbited.WebSocketAdapter('127.0.0.1', args[0]); },
            connectHeaders: {login: args[1], passcode: args[2], host: '/'},
            reconnectDelay: 0, heartbeatIncoming: 1000, heartbeatOutgoing: 1000
        });
        var connected = new Promise(function (resolve, reject) {
            client.onConnect = resolve;
            client.onStompError = function (f) { reject(f.headers.message); };
            client.onWebSocketClose = function (e) { reject('closed ' + e.code); };
        });
        client.activate();
        await connected;
        client.subscribe(dest, function (m) { got.push(m.body); m.ack && 0; });
        var big = 'x'.repeat(300000) + ' 😀';
        client.publish({destination: dest, body: 'hello stompjs'});
        client.publish({destination: dest, body: big});
        await H.until(function () { return got.length === 2; }, 30000);
        await H.sleep(2500);  // heart-beats both ways keep it open
        var still = client.connected;
        await client.deactivate();
        return {first: got[0], bigOk: got[1] === big, still: still};
    """, *connect_args(broker))
    assert result == {"first": "hello stompjs", "bigOk": True, "still": True}
