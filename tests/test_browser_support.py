"""Shared pieces of the browser tests (no tests here): an Orbited process with a
test page, a module-wide Chromium, and the JS harness pages load.

A test page is a scratch directory mounted with ``[static] page = DIR``; it
loads ``/static/Orbited.js`` (and protocol clients) from the Orbited under
test exactly as a site would, so Origin, ``[access]`` and transports are all real.
"""

from __future__ import annotations

import textwrap
from importlib.util import find_spec
from pathlib import Path

import pytest

from tests.support.procs import OrbitedProcess, free_port, scratch_dir

SOCKJS_LANDED = find_spec("orbited.transports.sockjs") is not None
BROKER_LANDED = find_spec("orbited.stomp") is not None
WEBSOCKET = "websocket"
SOCKJS_TRANSPORTS = ("xhr-streaming", "eventsource", "xhr-polling", "jsonp-polling")
TRANSPORTS = (WEBSOCKET, *SOCKJS_TRANSPORTS)  # the default list, in order
# SockJS framing over a WebSocket to /sockjs/.../websocket: supported, not in the default list.
ALL_TRANSPORTS = (*TRANSPORTS, "sockjs-websocket")

# Loaded by every test page after Orbited.js: small promise helpers over the 0.7 API.
HARNESS_JS = r"""
window.H = {
  // Open a TCPSocket and resolve with it once open; reject with the close code.
  open: function (host, port, binary, transports) {
    return new Promise(function (resolve, reject) {
      var s = new Orbited.TCPSocket();
      if (transports) { s.transports = transports; }
      s.reads = []; s.closed = null; s.opened = false;
      s.onopen = function () { s.opened = true; resolve(s); };
      s.onread = function (d) { s.reads.push(d); };
      s.onclose = function (code) { s.closed = code; if (!s.opened) { reject(code); } };
      s.open(host, port, binary);
    });
  },
  // Resolve when cond() is true; reject after ms.
  until: function (cond, ms) {
    return new Promise(function (resolve, reject) {
      var t0 = Date.now();
      (function poll() {
        var v; try { v = cond(); } catch (e) { reject(e); return; }
        if (v) { resolve(v); } else if (Date.now() - t0 > (ms || 20000)) { reject("timeout"); }
        else { setTimeout(poll, 10); }
      })();
    });
  },
  sleep: function (ms) { return new Promise(function (r) { setTimeout(r, ms); }); },
  // Total length of what a socket read, whatever the read type.
  length: function (reads) {
    return reads.reduce(function (n, r) { return n + (r.byteLength !== undefined ? r.byteLength : r.length); }, 0);
  },
  joinBytes: function (reads) {
    var out = new Uint8Array(H.length(reads)), at = 0;
    reads.forEach(function (r) { var b = new Uint8Array(r); out.set(b, at); at += b.length; });
    return out;
  }
};
"""


def run_js(browser, body: str, *args):
    """Run ``body`` (an async function body using ``args``) and return its value or raise its error."""
    script = (
        "var done = arguments[arguments.length - 1]; var args = Array.prototype.slice.call(arguments, 0, -1);"
        "(async function () {" + body + "})().then("
        "function (v) { done({ok: v === undefined ? null : v}); },"
        "function (e) { done({error: String(e && e.stack || e)}); });"
    )
    result = browser.run(script, *args)
    if "error" in result:
        raise AssertionError(f"page script failed: {result['error']}\nconsole: {browser.console()}")
    return result["ok"]


def write_page(directory: Path, scripts: tuple[str, ...] = (), body: str = "",
               settings: str = "") -> None:
    tags = "\n".join(f'<script src="{src}"></script>' for src in ("/static/Orbited.js", *scripts))
    (directory / "harness.js").write_text(HARNESS_JS)
    (directory / "index.html").write_text(textwrap.dedent(f"""\
        <!doctype html>
        <html><head><meta charset="utf-8"><title>Orbited test page</title>
        {tags}
        <script src="harness.js"></script>
        <script>{settings}</script>
        </head><body>{body}</body></html>
        """))


class OrbitedSite:
    """An ``orbited`` process serving a test page at /page/ with the given listeners and access."""

    def __init__(self, listen: tuple[str, ...] = (), access: tuple[str, ...] = (),
                 static: dict[str, str] | None = None, extra: str = "",
                 scripts: tuple[str, ...] = (), settings: str = ""):
        self.port = free_port()
        self.pages = scratch_dir("page-")
        write_page(self.pages, scripts, settings=settings)
        mounts = {"page": str(self.pages), **(static or {})}
        config = (
            "[global]\nsession.ping_interval = 30\nsession.ping_timeout = 30\n" + extra
            + "\n[listen]\n" + "\n".join((f"http://127.0.0.1:{self.port}", *listen))
            + "\n[static]\n" + "\n".join(f"{k} = {v}" for k, v in mounts.items())
            + "\n[access]\n" + "\n".join(access) + "\n"
        )
        self.process = OrbitedProcess(config, wait_for=self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/page/index.html"

    def start(self) -> OrbitedSite:
        self.process.start()
        return self

    def stop(self, sig: int | None = None) -> int:
        return self.process.stop(sig) if sig is not None else self.process.stop()

    def log(self) -> str:
        return self.process.log()

    def __enter__(self) -> OrbitedSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def need_transport(transport: str) -> None:
    if transport != WEBSOCKET and not SOCKJS_LANDED:
        pytest.skip("the /sockjs server (orbited.transports.sockjs) has not landed yet")


@pytest.fixture(scope="module")
def chromium():
    """One Chromium for a whole module (a fresh one per test costs ~1.5 s); each test loads its page anew."""
    from tests.support.browser import Browser

    with Browser() as browser:
        yield browser
