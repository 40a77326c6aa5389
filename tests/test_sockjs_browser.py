"""sockjs-client 1.6.1 (npm) in headless Chromium, one transport forced at a time, through ``/sockjs``.

The page speaks the TCPSocket contract of docs/protocol.md on top of a plain
``new SockJS(url, null, {transports: [name]})``: first message ``host:port``,
answer ``1``, then base64 both ways, to the built-in echo backend.  Each
transport round-trips text with non-ASCII characters, the bytes 0-255 and a
256 KiB message, on one process and on a master with two workers (where the
page and /info come from the master and the session from a worker, over the
keep-alive connections Chromium reuses for all of them).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.support.procs import REPO, OrbitedProcess, free_port, scratch_dir

CLIENT_DIST = REPO / "tests" / "js" / "node_modules" / "sockjs-client" / "dist"
# sockjs-client's transport name -> the URL segment of the request that opens the session
TRANSPORTS = {"websocket": "websocket", "xhr-streaming": "xhr_streaming", "xhr-polling": "xhr",
              "eventsource": "eventsource", "jsonp-polling": "jsonp"}

PAGE_JS = r"""
window.T = {
  // bytes <-> base64, in slices so that 256 KiB never hits the argument limit
  toB64: function (bytes) {
    var s = "";
    for (var i = 0; i < bytes.length; i += 8192) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
    }
    return btoa(s);
  },
  fromB64: function (text) {
    var s = atob(text), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) { out[i] = s.charCodeAt(i); }
    return out;
  },
  // Open a TCPSocket over SockJS with one transport; resolves once '1' arrived.
  open: function (transport, host, port) {
    return new Promise(function (resolve, reject) {
      var sock = new SockJS("/sockjs", null, {transports: [transport]});
      var tcp = {sock: sock, chunks: [], length: 0, closed: null, opened: false, transport: null};
      sock.onopen = function () { tcp.transport = sock.transport; sock.send(host + ":" + port + "\n"); };
      sock.onmessage = function (e) {
        if (!tcp.opened) {
          if (e.data === "1") { tcp.opened = true; resolve(tcp); } else { reject("handshake answer " + e.data); }
          return;
        }
        var b = T.fromB64(e.data);
        tcp.chunks.push(b); tcp.length += b.length;
      };
      sock.onclose = function (e) {
        tcp.closed = e.code + " " + e.reason;
        if (!tcp.opened) { reject("closed before open: " + tcp.closed); }
      };
    });
  },
  // Send bytes and resolve with the echo once n bytes came back.
  echo: function (tcp, bytes, ms) {
    tcp.chunks = []; tcp.length = 0;
    tcp.sock.send(T.toB64(bytes));
    return new Promise(function (resolve, reject) {
      var t0 = Date.now();
      (function poll() {
        if (tcp.length >= bytes.length) {
          var out = new Uint8Array(tcp.length), at = 0;
          tcp.chunks.forEach(function (c) { out.set(c, at); at += c.length; });
          resolve(out);
        } else if (tcp.closed) { reject("closed: " + tcp.closed); }
        else if (Date.now() - t0 > (ms || 30000)) { reject("timeout with " + tcp.length + " bytes"); }
        else { setTimeout(poll, 10); }
      })();
    });
  },
  same: function (a, b) {
    if (a.length !== b.length) { return "length " + a.length + " != " + b.length; }
    for (var i = 0; i < a.length; i++) { if (a[i] !== b[i]) { return "byte " + i + " differs"; } }
    return "same";
  }
};
"""

ROUND_TRIPS = r"""
var transport = arguments[0], port = arguments[1], done = arguments[arguments.length - 1];
(async function () {
  var tcp = await T.open(transport, "127.0.0.1", port);
  var results = {transport: tcp.sock.transport};
  var text = "héllo wörld ✓ 😀 \u2028 ¿ ÿ \u0000 end";
  var utf8 = new TextEncoder().encode(text);
  results.text = new TextDecoder().decode(await T.echo(tcp, utf8)) === text;
  var all = new Uint8Array(256);
  for (var i = 0; i < 256; i++) { all[i] = i; }
  results.bytes = T.same(await T.echo(tcp, all), all);
  var big = new Uint8Array(256 * 1024);
  for (var j = 0; j < big.length; j += 65536) { crypto.getRandomValues(big.subarray(j, j + 65536)); }
  results.big = T.same(await T.echo(tcp, big, 60000), big);
  tcp.sock.close();
  return results;
})().then(function (r) { done({ok: r}); }, function (e) { done({error: String(e && e.stack || e)}); });
"""


@pytest.fixture(scope="module")
def chromium():
    from tests.support.browser import Browser

    with Browser() as browser:
        yield browser


@pytest.fixture(scope="module", params=[0, 2], ids=["one-process", "workers"])
def site(request):
    workers = request.param
    port, echo = free_port(), free_port()
    page = scratch_dir("sockjs-page-")
    (page / "t.js").write_text(PAGE_JS)
    (page / "index.html").write_text(textwrap.dedent("""\
        <!doctype html>
        <html><head><meta charset="utf-8"><title>sockjs-client through /sockjs</title>
        <script src="/sockjs-client/sockjs.min.js"></script>
        <script src="t.js"></script>
        </head><body></body></html>
        """))
    assert (CLIENT_DIST / "sockjs.min.js").exists(), "run .ci/test-deps (npm ci in tests/js)"
    config = (
        f"[global]\nworkers = {workers}\nsession.ping_interval = 30\nsession.ping_timeout = 30\n"
        f"[listen]\nhttp://127.0.0.1:{port}\necho://127.0.0.1:{echo}\n"
        f"[static]\npage = {Path(page)}\nsockjs-client = {CLIENT_DIST}\n"
        f"[access]\n* -> 127.0.0.1:{echo}\n"
    )
    with OrbitedProcess(config, wait_for=port) as process:
        process.wait_workers(workers)
        process.workers = workers
        yield process, f"http://127.0.0.1:{port}/page/index.html", echo


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sockjs_client_round_trips(chromium, site, transport):
    process, url, echo = site
    chromium.get(url)
    chromium.wait_for("window.SockJS && window.T")
    result = chromium.run(ROUND_TRIPS, transport, echo)
    assert "error" not in result, f"{result.get('error')}\nconsole: {chromium.console()}\n{process.log()[-3000:]}"
    got = result["ok"]
    assert got["transport"] == transport
    assert got == {"transport": transport, "text": True, "bytes": "same", "big": "same"}
    # The proxy logged the session under the transport that opened it (in a worker, if any).
    opened = f"sockjs-{TRANSPORTS[transport]} 127.0.0.1:"
    lines = [line for line in process.log().splitlines() if opened in line and "connected" in line]
    assert lines, process.log()[-3000:]
    assert all(("[worker " in line) == bool(process.workers) for line in lines), lines
