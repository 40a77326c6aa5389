"""@stomp/stompjs 7.5 in a real headless Chromium, over /stomp of the real ``orbited``.

The page and the stompjs UMD bundle are served by the same orbited process
through ``[static]`` mounts, so the page's origin is the server's own.  A
stomp.py client on the TCP listener checks that both front doors reach the
same broker.
"""

from __future__ import annotations

import queue
import uuid
from pathlib import Path

import pytest
import stomp

from tests.support.procs import REPO, OrbitedProcess, free_port, scratch_dir

pytestmark = pytest.mark.timeout(180)

BUNDLE_DIR = REPO / "tests" / "js" / "node_modules" / "@stomp" / "stompjs" / "bundles"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>stompjs</title>
<script src="/stompjs/stomp.umd.min.js"></script>
<script>
// A tiny harness: connect once, keep what arrives per destination.
window.inbox = {};
window.connectStomp = function (options) {
  return new Promise(function (resolve, reject) {
    const client = new StompJs.Client(Object.assign({
      brokerURL: "ws://" + location.host + "/stomp",
      connectHeaders: {login: "guest", passcode: "guest"},
      reconnectDelay: 0,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
    }, options || {}));
    client.onConnect = function () { resolve(client); };
    client.onStompError = function (frame) { window.lastError = frame.headers.message; reject(frame.headers.message); };
    client.onWebSocketClose = function (event) { window.closedWith = event.code; };
    client.activate();
    window.client = client;
  });
};
window.collect = function (client, destination, headers, manual) {
  window.inbox[destination] = [];
  return client.subscribe(destination, function (message) {
    window.inbox[destination].push({body: message.body, binary: Array.from(message.binaryBody),
                                    headers: message.headers, message: message});
  }, headers || {});
};
</script></head><body>stompjs test page</body></html>
"""


@pytest.fixture(scope="module")
def server():
    if not (BUNDLE_DIR / "stomp.umd.min.js").exists():
        pytest.fail(f"{BUNDLE_DIR} is missing: run .ci/test-deps (npm ci in tests/js)")
    page_dir = scratch_dir("stomp-page-")
    (page_dir / "index.html").write_text(PAGE)
    http, port = free_port(), free_port()
    cfg = f"""\
[listen]
http://127.0.0.1:{http}
stomp://127.0.0.1:{port}
[static]
stompjs = {BUNDLE_DIR}
stomppage = {page_dir}
[access]
* -> localhost:{port}
[stomp]
heartbeat = 100,500
"""
    with OrbitedProcess(cfg, wait_for=port) as proc:
        proc.http_port, proc.stomp_port = http, port
        yield proc
    assert "Traceback" not in proc.log(), proc.log()


@pytest.fixture
def page(browser, server):
    browser.get(f"http://127.0.0.1:{server.http_port}/stomppage/index.html")
    browser.wait_for("typeof StompJs !== 'undefined' && typeof connectStomp === 'function'")
    return browser


def connect(page, options: str = "{}") -> str:
    """Connect the page's client; returns the negotiated STOMP version."""
    result = page.run(f"""
        const done = arguments[arguments.length - 1];
        connectStomp({options}).then(c => done(c.connectedVersion), e => done("error: " + e));
    """)
    assert not result.startswith("error"), result
    return result


def tcp_client(server) -> tuple[stomp.Connection12, queue.Queue]:
    received: queue.Queue = queue.Queue()

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame) -> None:
            received.put(frame)

    conn = stomp.Connection12([("127.0.0.1", server.stomp_port)], auto_decode=False)
    conn.set_listener("l", Listener())
    conn.connect("guest", "guest", wait=True)
    return conn, received


def wait_inbox(page, destination: str, count: int) -> list[dict]:
    page.wait_for(f"(window.inbox[{destination!r}] || []).length >= {count}")
    return page.js(f"return window.inbox[{destination!r}].map(m => ({{body: m.body, binary: m.binary, "
                   f"headers: m.headers}}));")


def unique(kind: str) -> str:
    return f"/{kind}/browser-{uuid.uuid4().hex[:10]}"


def test_connects_with_stomp_12_over_the_v12_subprotocol(page):
    assert connect(page) == "1.2"
    assert page.js("return window.client.webSocket.protocol") == "v12.stomp"


def test_topic_between_browser_and_tcp_client(page, server):
    connect(page)
    topic = unique("topic")
    page.js(f"collect(window.client, {topic!r});")
    conn, received = tcp_client(server)
    conn.subscribe(topic, id="py", headers={"receipt": "r"})
    page.js(f"window.client.publish({{destination: {topic!r}, body: 'from the browser', "
            "headers: {'x-note': 'grüße: a\\nb'}});")
    frame = received.get(timeout=10)
    assert frame.body == b"from the browser"
    assert frame.headers["x-note"] == "grüße: a\nb"
    conn.send(topic, "from python ☃".encode(), headers={"x-from": "tcp:side"})
    messages = wait_inbox(page, topic, 2)
    assert [m["body"] for m in messages] == ["from the browser", "from python ☃"]
    assert messages[1]["headers"]["x-from"] == "tcp:side"
    assert messages[0]["headers"]["x-note"] == "grüße: a\nb"
    conn.disconnect()


def test_binary_body_with_nuls_both_ways(page, server):
    connect(page)
    topic = unique("topic")
    page.js(f"collect(window.client, {topic!r});")
    conn, received = tcp_client(server)
    conn.subscribe(topic, id="py", headers={"receipt": "r"})
    page.js(f"window.client.publish({{destination: {topic!r}, binaryBody: new Uint8Array([0, 255, 0, 1, 2]), "
            "headers: {'content-type': 'application/octet-stream'}});")
    assert received.get(timeout=10).body == b"\x00\xff\x00\x01\x02"
    body = bytes([0, 200, 0, 7, 255])
    conn.send(topic, body)
    messages = wait_inbox(page, topic, 2)
    assert messages[1]["binary"] == list(body)
    conn.disconnect()


def test_queue_with_client_ack_and_nack(page):
    connect(page)
    name = unique("queue")
    page.js(f"collect(window.client, {name!r}, {{ack: 'client-individual'}});")
    page.js(f"window.client.publish({{destination: {name!r}, body: 'job'}});")
    [first] = wait_inbox(page, name, 1)
    assert first["headers"]["ack"]
    page.js(f"window.inbox[{name!r}][0].message.nack();")
    again = wait_inbox(page, name, 2)[1]
    assert again["body"] == "job" and again["headers"]["redelivered"] == "true"
    page.js(f"window.inbox[{name!r}][1].message.ack();")
    page.js(f"window.client.publish({{destination: {name!r}, body: 'next'}});")
    assert wait_inbox(page, name, 3)[2]["body"] == "next"


def test_transaction_and_receipt(page):
    connect(page)
    topic = unique("topic")
    page.js(f"collect(window.client, {topic!r});")
    receipt = page.run(f"""
        const done = arguments[arguments.length - 1];
        const client = window.client;
        const tx = client.begin();
        client.publish({{destination: {topic!r}, body: 'in tx', headers: {{transaction: tx.id}}}});
        client.watchForReceipt('r1', () => done({{before: window.inbox[{topic!r}].length}}));
        tx.commit();
        client.publish({{destination: {topic!r}, body: 'after', headers: {{receipt: 'r1'}}}});
    """)
    assert receipt["before"] >= 0
    assert [m["body"] for m in wait_inbox(page, topic, 2)] == ["in tx", "after"]
    page.run(f"""
        const done = arguments[arguments.length - 1];
        const tx = window.client.begin();
        window.client.publish({{destination: {topic!r}, body: 'aborted', headers: {{transaction: tx.id}}}});
        tx.abort();
        window.client.watchForReceipt('r2', () => done(true));
        window.client.publish({{destination: {topic!r}, body: 'last', headers: {{receipt: 'r2'}}}});
    """)
    assert [m["body"] for m in wait_inbox(page, topic, 3)] == ["in tx", "after", "last"]


def test_heart_beats_keep_the_idle_page_connected(page):
    connect(page, "{heartbeatIncoming: 500, heartbeatOutgoing: 500}")
    topic = unique("topic")
    page.js(f"collect(window.client, {topic!r});")
    page.run("const done = arguments[arguments.length - 1]; setTimeout(() => done(true), 4000);")
    assert page.js("return window.client.connected") is True
    assert page.js("return window.closedWith === undefined")
    page.js(f"window.client.publish({{destination: {topic!r}, body: 'alive'}});")
    assert wait_inbox(page, topic, 1)[0]["body"] == "alive"


def test_protocol_error_reaches_on_stomp_error(page):
    connect(page)
    page.js("window.client.publish({destination: '/nowhere/at-all', body: 'x'});")
    page.wait_for("window.lastError !== undefined")
    assert page.js("return window.lastError") == "unknown destination"
    page.wait_for("window.closedWith !== undefined")


def test_many_frames_per_message_from_the_page(page):
    connect(page)
    topic = unique("topic")
    page.js(f"collect(window.client, {topic!r});")
    page.js(f"for (let i = 0; i < 200; i++) window.client.publish({{destination: {topic!r}, body: 'm' + i}});")
    bodies = [m["body"] for m in wait_inbox(page, topic, 200)]
    assert bodies == [f"m{i}" for i in range(200)]


def test_bundle_path_exists():
    assert Path(BUNDLE_DIR / "stomp.umd.min.js").is_file()
