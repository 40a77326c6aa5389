"""Each example runs the way its README says (its run.sh), and works in Chromium.

Every test starts the example's one command on random free ports (the
variables its README names), drives the page like a user would, asserts what
the user would see, and takes a screenshot.  Screenshots go to tests/.work/
(so a test run leaves the tree clean); `make screenshots` runs these tests with
ORBITED_SCREENSHOTS=docs to refresh docs/screenshots/.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.procs import REPO, free_port, scratch_dir, stop_process, wait_port
from tests.test_browser_support import chromium  # noqa: F401 (a fixture)

EXAMPLES = REPO / "examples"
ORBITED = Path(sys.executable).parent / "orbited"  # the console script of the Python under test (make: venv/)
DOC_SCREENSHOTS = REPO / "docs" / "screenshots"
SCREENSHOTS = DOC_SCREENSHOTS if os.environ.get("ORBITED_SCREENSHOTS") == "docs" else REPO / "tests" / ".work" / "screenshots"


class Demo:
    """``examples/NAME/run.sh`` with the given environment, in its own process group."""

    def __init__(self, name: str, **ports: int):
        self.name = name
        self.http = free_port()
        # The Python under test (examples/lib.sh would take the repo's venv, or whatever is on PATH)
        python = {"ORBITED": str(ORBITED), "PYTHON": sys.executable}
        self.env = {**os.environ, **python, "HTTP_PORT": str(self.http), **{k: str(v) for k, v in ports.items()}}
        self.log = scratch_dir(f"demo-{name}-") / "run.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Demo:
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen([str(EXAMPLES / self.name / "run.sh")], env=self.env, cwd=REPO,
                                     stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_port(self.http, proc=self.proc, timeout=60)
        except (TimeoutError, RuntimeError):
            self.__exit__()
            raise RuntimeError(f"{self.name}/run.sh did not start:\n{self.output()}") from None
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}/demos/{path}"

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM)
            self._out.close()


def shot(browser, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.driver.set_window_size(1100, 760)
    time.sleep(0.2)
    browser.screenshot(str(SCREENSHOTS / f"{name}.png"))
    assert (SCREENSHOTS / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def text_of(browser, element_id: str) -> str:
    return browser.js(f"return document.getElementById('{element_id}').textContent;")


def wait_text(browser, element_id: str, needle: str, timeout: float = 20) -> str:
    browser.wait_for(lambda: needle in text_of(browser, element_id), timeout=timeout)
    return text_of(browser, element_id)


def say(browser, text: str, input_id: str = "text", form_id: str = "say") -> None:
    browser.js(f"document.getElementById('{input_id}').value = arguments[0];"
               f"document.getElementById('{form_id}').requestSubmit();", text)


def console_errors(browser) -> list[str]:
    """The page's console errors since the last call (a demo should log none: not even a 404)."""
    return [e["message"] for e in browser.driver.get_log("browser") if e["level"] == "SEVERE"]


def test_every_example_has_a_readme_and_one_command():
    for directory in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        readme = (directory / "README.md").read_text()
        assert os.access(directory / "run.sh", os.X_OK), directory
        assert f"examples/{directory.name}/run.sh" in readme, f"{directory.name}/README.md names its command"
        assert f"docs/screenshots/{directory.name}.png" in readme
        assert (DOC_SCREENSHOTS / f"{directory.name}.png").read_bytes().startswith(b"\x89PNG")
        assert (directory / "index.html").exists()
        assert f'href="{directory.name}/"' in (EXAMPLES / "index.html").read_text()


def test_run_sh_without_orbited_says_what_to_do():
    """Before `make install` a run.sh failed with bash's 'orbited: command not found' and then
    'nothing listens on 127.0.0.1:8000', 20 s later; now it stops at once and names the fix."""
    env = {**os.environ, "ORBITED": "/nonexistent/orbited", "HTTP_PORT": str(free_port())}
    started = time.monotonic()
    done = subprocess.run([str(EXAMPLES / "console" / "run.sh")], env=env, capture_output=True, text=True,
                          timeout=30, start_new_session=True)
    assert done.returncode == 1
    assert "'/nonexistent/orbited' not found. Run 'make install' once" in done.stderr
    assert "nothing listens" not in done.stderr
    assert time.monotonic() - started < 10


def test_chat_with_python_publisher(chromium, browser):  # noqa: F811
    stomp_port = free_port()
    with Demo("chat", STOMP_PORT=stomp_port, EVERY=1) as demo:
        url = demo.url(f"chat/?stomp={stomp_port}")
        chromium.get(url + "&nick=alice")
        browser.get(url + "&nick=bob")
        wait_text(chromium, "status", "connected as alice")
        wait_text(browser, "status", "connected as bob")
        say(chromium, "hello from alice <b>not bold</b>")
        wait_text(browser, "log", "alice: hello from alice <b>not bold</b>")
        # the publisher's ticks arrive, and a one-off event pushed the way the README says
        wait_text(chromium, "log", "server tick #")
        subprocess.run([sys.executable, str(EXAMPLES / "chat" / "publisher.py"),
                        "--port", str(stomp_port), "--say", "deploy finished"], check=True, timeout=30)
        wait_text(browser, "log", "deploy finished")
        say(browser, "hi alice")
        wait_text(chromium, "log", "bob: hi alice")
        assert chromium.js("return document.querySelectorAll('#log b').length;") == 0
        shot(chromium, "chat")
        assert console_errors(chromium) == console_errors(browser) == []


def test_run_sh_with_a_port_in_use_says_which():
    """A port taken already (the ngircd a distribution starts on install, `make run` on 8000):
    run.sh used to print 'Open http://...' and exit 1 at once, the reason deleted with its
    scratch directory.  Now it names the port and the variable to change, before starting."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "HTTP_PORT": str(port)}
        done = subprocess.run([str(EXAMPLES / "console" / "run.sh")], env=env, capture_output=True, text=True,
                              timeout=30, start_new_session=True)
    assert done.returncode == 1
    assert f"127.0.0.1:{port} is in use already" in done.stderr and "set HTTP_PORT to a free port" in done.stderr
    assert "Open http://" not in done.stdout


def test_run_sh_shows_the_logs_when_its_server_stops():
    """ngircd dying under the IRC demo stops the demo (as documented), and says why."""
    irc_port = free_port()
    with Demo("irc", IRC_PORT=irc_port) as demo:
        ngircd = subprocess.run(["pgrep", "-s", str(demo.proc.pid), "-x", "ngircd"], capture_output=True, text=True)
        os.kill(int(ngircd.stdout.split()[0]), signal.SIGKILL)
        assert demo.proc.wait(timeout=20) == 137
        output = demo.output()
    assert "a process of the demo exited (status 137); stopping the demo." in output
    assert "--- ngircd.log (last lines)" in output


def test_publisher_without_a_broker_says_so():
    """Like publish.rb's 'The Orbited server appears to be down!': one line, exit 1, no traceback."""
    port = free_port()
    done = subprocess.run([str(REPO / "venv" / "bin" / "python"), str(EXAMPLES / "chat" / "publisher.py"),
                           "--port", str(port), "--say", "hello"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"publisher.py: no STOMP broker at 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_rails_flow_with_ruby_stomp(chromium):  # noqa: F811
    stomp_port = free_port()
    with Demo("rails", STOMP_PORT=stomp_port, EVERY=1) as demo:
        chromium.get(demo.url(f"rails/?stomp={stomp_port}"))
        wait_text(chromium, "status", "subscribed to /topic/hello")
        wait_text(chromium, "updates", "tick")  # the ticker's Orbited.send_data
        subprocess.run(["ruby", str(EXAMPLES / "rails" / "publish.rb"), "--port", str(stomp_port),
                        "hello", "Hello from Ruby ✓"], check=True, timeout=30)
        wait_text(chromium, "updates", "Hello from Ruby ✓")
        shot(chromium, "rails")
        assert console_errors(chromium) == []


def test_irc_client_against_ngircd(chromium, browser):  # noqa: F811
    irc_port = free_port()
    with Demo("irc", IRC_PORT=irc_port) as demo:
        url = demo.url(f"irc/?port={irc_port}&channel=%23orbited")
        chromium.get(url + "&nick=alice")
        wait_text(chromium, "status", "in #orbited")
        browser.get(url + "&nick=bob")
        wait_text(browser, "status", "in #orbited")
        wait_text(chromium, "users", "bob")
        say(chromium, "hello bob")
        wait_text(browser, "log", "<alice> hello bob")
        say(browser, "/me waves")
        wait_text(chromium, "log", "* bob waves")
        shot(chromium, "irc")
        # a refused /nick is shown and bob stays bob (the page used to take alice_, or loop on 432)
        say(browser, "/nick alice")
        wait_text(browser, "log", "Nickname already in use")
        say(browser, "/nick 9digits")
        wait_text(browser, "log", "Erroneous nickname")
        say(browser, "still bob")
        wait_text(chromium, "log", "<bob> still bob")
        assert "<bob> still bob" in text_of(browser, "log")
        assert text_of(browser, "status") == "in #orbited as bob"
        # a nick the server will never take, given at the start, ends in a guest nick, not a loop
        browser.get(url + "&nick=9digits")
        wait_text(browser, "status", "in #orbited as guest")
        assert console_errors(chromium) == console_errors(browser) == []


def test_xmpp_chat_against_prosody(chromium, browser):  # noqa: F811
    xmpp_port = free_port()
    with Demo("xmpp", XMPP_PORT=xmpp_port) as demo:
        url = demo.url(f"xmpp/?port={xmpp_port}")
        # a wrong password says so (it used to show only "closed: 103 UserConnectionReset")
        chromium.get(url + "&user=alice&password=wrong")
        wait_text(chromium, "status", "login failed: not-authorized")
        chromium.get(url + "&user=alice&password=alicepw&to=bob@localhost")
        browser.get(url + "&user=bob&password=bobpw&to=alice@localhost")
        wait_text(chromium, "status", "online as alice@localhost")
        wait_text(browser, "status", "online as bob@localhost")
        say(chromium, "hi bob, <tags> & all")
        wait_text(browser, "log", "alice@localhost: hi bob, <tags> & all")
        say(browser, "hello alice")
        wait_text(chromium, "log", "bob@localhost: hello alice")
        # both join at once: whoever comes second may find the room still locked and must retry
        chromium.js("document.getElementById('room-join').click();")
        browser.js("document.getElementById('room-join').click();")
        wait_text(chromium, "log", "joined lobby@conference.localhost")
        wait_text(browser, "log", "joined lobby@conference.localhost")
        say(browser, "hello room", "room-text", "room-say")
        wait_text(chromium, "log", "[lobby] bob: hello room")
        shot(chromium, "xmpp")
        assert console_errors(chromium) == console_errors(browser) == []


def test_line_console(chromium):  # noqa: F811
    ports = {"ECHO_PORT": free_port(), "LINEECHO_PORT": free_port(), "ANNOUNCE_PORT": free_port()}
    with Demo("console", **ports) as demo:
        chromium.get(demo.url(f"console/?port={ports['LINEECHO_PORT']}&connect=1"))
        wait_text(chromium, "status", "connected")
        say(chromium, "first line ✓", "line", "send-form")
        wait_text(chromium, "output", "first line ✓")
        chromium.js("document.getElementById('port').value = arguments[0];"
                    "document.getElementById('connect').click();", ports["ANNOUNCE_PORT"])
        wait_text(chromium, "output", "message 2", timeout=10)
        shot(chromium, "console")
        assert console_errors(chromium) == []


def test_make_run_serves_the_demo_index(chromium):  # noqa: F811
    """etc/demo.cfg (what `make run` starts), moved to free ports, serves /demos/ with every demo."""
    config = (REPO / "etc" / "demo.cfg").read_text()
    mapping = {port: free_port() for port in set(re.findall(r":(\d{4,5})\b", config))}
    for old, new in mapping.items():
        config = re.sub(rf":{old}\b", f":{new}", config)
    config = config.replace("demos = ../examples", f"demos = {EXAMPLES}")
    if os.getuid() == 0:
        config = config.replace("user = nobody", "user = root")
    work = scratch_dir("democfg-")
    path = work / "demo.cfg"
    path.write_text(config)
    http = mapping["8000"]
    proc = subprocess.Popen([str(ORBITED), "--config", str(path)], cwd=work,
                            stdout=open(work / "log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(http, proc=proc)
        chromium.get(f"http://127.0.0.1:{http}/demos/")
        links = chromium.js("return Array.from(document.querySelectorAll('a.demo')).map(a => a.getAttribute('href'));")
        assert links == ["chat/", "rails/", "irc/", "xmpp/", "console/"]
        shot(chromium, "index")
        # the console demo works on the demo config's own lineecho server
        chromium.get(f"http://127.0.0.1:{http}/demos/console/?connect=1&port={mapping['8002']}")
        wait_text(chromium, "status", "connected")
        say(chromium, "make run works", "line", "send-form")
        wait_text(chromium, "output", "make run works")
        # IRC and XMPP need servers `make run` does not start: the pages say which command does
        chromium.get(f"http://127.0.0.1:{http}/demos/irc/?port={mapping['6667']}")
        wait_text(chromium, "status", f"no IRC server on localhost:{mapping['6667']} (examples/irc/run.sh starts one)")
        chromium.get(f"http://127.0.0.1:{http}/demos/xmpp/?port={mapping['5222']}")
        wait_text(chromium, "status", f"no XMPP server on localhost:{mapping['5222']} (examples/xmpp/run.sh starts one)")
        assert console_errors(chromium) == []
    finally:
        stop_process(proc)


@pytest.mark.skipif(os.getuid() != 0, reason="only root drops privileges")
def test_make_run_keeps_root_for_a_clone_nobody_can_read():
    """`make run` as root from a clone under a 0700 directory (root's home): Orbited would serve as
    `nobody`, which cannot read the clone, and answer 404 to everything; the target says so and
    keeps root, and the pages are served."""
    outer = scratch_dir("makerun-")
    outer.chmod(0o700)
    clone = outer / "clone"
    (clone / "orbited" / "static").mkdir(parents=True)
    (clone / "etc").mkdir()
    (clone / "Makefile").write_text((REPO / "Makefile").read_text())
    (clone / "orbited" / "static" / "Orbited.js").write_text("// a clone's copy\n")
    (clone / "examples").mkdir()
    (clone / "examples" / "index.html").write_text("<title>the clone's demos</title>\n")
    setup = clone / "setup.py"
    setup.write_text("")
    os.utime(setup, (0, 0))  # older than the venv's stamp: `install` has nothing to do
    http = free_port()
    config = (REPO / "etc" / "demo.cfg").read_text()
    listen = config[config.index("[listen]"):config.index("[static]")]
    config = config.replace(listen, f"[listen]\nhttp://127.0.0.1:{http}\n\n")
    (clone / "etc" / "demo.cfg").write_text(config)  # demos = ../examples: the clone's own
    proc = subprocess.Popen(["make", "--no-print-directory", "run", f"VENV={Path(sys.executable).parent.parent}"],
                            cwd=clone, stdout=open(outer / "log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_port(http, proc=proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/demos/", timeout=10) as answer:
            assert b"the clone's demos" in answer.read()
    finally:
        stop_process(proc)
    log = (outer / "log").read_text()
    assert f"make run: user nobody cannot read {clone}, so the demo runs as root" in log
    assert "dropped privileges to user root" in log
    assert "user = root" in (clone / "etc" / ".demo-as-root.cfg").read_text()


@pytest.fixture(autouse=True)
def _needs(request):
    """Skip cleanly only where a program the example needs is not installed (make test installs them)."""
    needs = {"test_rails_flow_with_ruby_stomp": "ruby", "test_irc_client_against_ngircd": "ngircd",
             "test_run_sh_shows_the_logs_when_its_server_stops": "ngircd",
             "test_xmpp_chat_against_prosody": "prosody"}.get(request.node.name)
    if needs and not any((Path(d) / needs).exists() for d in os.environ["PATH"].split(os.pathsep)):
        pytest.fail(f"{needs} is not installed (make test installs it with apt-get)")
