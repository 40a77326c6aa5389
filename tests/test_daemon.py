"""The real ``orbited`` command as a process: CLI, listeners, static files, TLS, signals, privileges."""

from __future__ import annotations

import http.client
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from orbited import __version__
from tests.support.procs import REPO, OrbitedProcess, free_port, rss_kb, scratch_dir, stop_process, wait_port
from tests.support.rawws import masked, raw_upgrade, upgrade
from tests.support.tlsfiles import encrypt_key, make_cert, make_chain

ORBITED = [sys.executable, "-m", "orbited"]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*ORBITED, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def get(port: int, path: str, host: str = "127.0.0.1",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


# --- the command line


def test_version():
    for command in (["orbited", "--version"], [*ORBITED, "-v"]):
        if command[0] == "orbited":
            command[0] = str(Path(sys.executable).parent / "orbited")
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0
        assert out.stdout.strip() == f"Orbited version: {__version__}"


def test_no_config_found_says_where_it_looked(tmp_path):
    if os.path.exists("/etc/orbited.cfg"):
        pytest.fail("/etc/orbited.cfg exists on this machine; this test needs it absent")
    out = run_cli(cwd=tmp_path)
    assert out.returncode == 2
    assert "no configuration file found" in out.stderr
    assert "./orbited.cfg" in out.stderr and "/etc/orbited.cfg" in out.stderr


# Last in a file, so that the lines a test names stay where they are; as root, --check
# says what start-up says of a config without [global] user.
AS_THIS_USER = f"[global]\nuser = {pwd.getpwuid(os.getuid()).pw_name}\n"


def test_finds_orbited_cfg_in_the_working_directory(tmp_path):
    (tmp_path / "orbited.cfg").write_text("[listen]\nhttp://127.0.0.1:1\n" + AS_THIS_USER)
    out = run_cli("--check", cwd=tmp_path)
    assert out.returncode == 0 and "./orbited.cfg: OK" in out.stdout


def test_positional_arguments_are_rejected():
    out = run_cli("extra")
    assert out.returncode == 2 and "does not accept positional arguments" in out.stderr


def test_check_passes_on_the_shipped_config():
    out = run_cli("--check", "--config", str(REPO / "etc" / "orbited.cfg"))
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


def test_check_reports_every_problem_with_file_and_line(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(
        "[global]\n"
        "session.ping_interval = often\n"  # 2: bad value
        "colour = blue\n"  # 3: unknown key (warning)
        "[listen]\n"
        "gopher://:70\n"  # 5: bad scheme
        "[access]\n"
        "* -> *\n"  # 7: wildcard destination
        "[ssl]\n"
        "key = missing.key\n"  # 9: missing file
        "[mystery]\n"  # 10: unknown section (warning)
    )
    out = run_cli("--check", "-c", str(cfg))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    for number in (2, 5, 7, 9):
        assert any(line.startswith(f"{cfg}:{number}: ") for line in lines), (number, lines)
    assert any(line.startswith(f"{cfg}:3: warning: ") for line in lines), lines
    assert any(line.startswith(f"{cfg}:10: warning: ") for line in lines), lines


def test_bad_config_stops_startup_with_exit_2(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("[global]\nuser = root\nproxy.enabled = perhaps\n")
    out = run_cli("-c", str(cfg))
    assert out.returncode == 2 and f"{cfg}:3: " in out.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="only meaningful when started as root")
def test_root_without_user_is_refused(tmp_path):
    cfg = tmp_path / "o.cfg"
    cfg.write_text(f"[listen]\nhttp://127.0.0.1:{free_port()}\n")
    out = run_cli("-c", str(cfg))
    assert out.returncode == 2
    assert "refusing to run as root" in out.stderr and "user" in out.stderr
    check = run_cli("-c", str(cfg), "--check")  # --check says what start-up will say
    assert check.returncode == 2 and f"{cfg}:0: refusing to run as root" in check.stderr, check
    quick = run_cli("--quickstart", "--check")  # no file to add the user to: say what to do instead
    assert quick.returncode == 2 and "run it as an ordinary user" in quick.stderr, quick


def test_port_in_use_fails_with_the_line(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        with OrbitedProcess(f"[global]\n[listen]\nhttp://127.0.0.1:{port}\n") as orbited:
            code = orbited.proc.wait(20)
            assert code == 1
            line = orbited.path.read_text().splitlines().index(f"http://127.0.0.1:{port}") + 1
            assert f"{orbited.path}:{line}: cannot listen on http://127.0.0.1:{port}" in orbited.log()
    finally:
        busy.close()


# --- serving


def test_serves_bundled_static_and_a_static_mount(tmp_path):
    site = scratch_dir("site-")
    (site / "hello.txt").write_text("hello from a mount")
    (site / "sub").mkdir()
    (site / "sub" / "index.html").write_text("<p>sub index</p>")
    port = free_port()
    bundled = sorted(p for p in (REPO / "orbited" / "static").rglob("*") if p.is_file())
    assert bundled, "orbited/static has no files to serve"
    sample = bundled[0]
    with OrbitedProcess(f"[global]\n[listen]\nhttp://127.0.0.1:{port}\n[static]\nfiles = {site}\n",
                        wait_for=port):
        relative = sample.relative_to(REPO / "orbited" / "static").as_posix()
        status, _, body = get(port, f"/static/{relative}")
        assert status == 200 and body == sample.read_bytes()
        assert get(port, "/files/hello.txt")[2] == b"hello from a mount"
        assert get(port, "/files/sub/")[2] == b"<p>sub index</p>"
        # no directory listing
        status, _, body = get(port, "/files/")
        assert status == 404 and b"hello.txt" not in body


def test_pages_anyone_can_load_do_not_name_the_version():
    """Like the missing Server header: the version is for /system/status, which is loopback-only."""
    port = free_port()
    with OrbitedProcess(f"[global]\n[listen]\nhttp://127.0.0.1:{port}\n", wait_for=port):
        for path in ("/", "/system", "/system/"):
            status, headers, body = get(port, path)
            assert status == 200 and b"<h1>Orbited</h1>" in body, path
            assert __version__.encode() not in body and "server" not in headers, path
        assert json.loads(get(port, "/system/status")[2])["version"] == __version__


def test_index_mount_serves_the_root(tmp_path):
    site = scratch_dir("site-")
    (site / "index.html").write_text("<h1>front page</h1>")
    port = free_port()
    with OrbitedProcess(f"[global]\n[listen]\nhttp://127.0.0.1:{port}\n[static]\nINDEX = {site}\n",
                        wait_for=port):
        assert get(port, "/")[2] == b"<h1>front page</h1>"
        assert get(port, "/index.html")[2] == b"<h1>front page</h1>"
        assert get(port, "/system/status")[0] == 200  # built-in paths still win


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """A request with the target exactly as given (http.client would normalise nothing, but be sure)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


def test_no_path_traversal_and_no_offsite_redirects():
    site = scratch_dir("site-")
    (site / "public.txt").write_text("public")
    (site / "dir").mkdir()
    (site / "dir" / "x.txt").write_text("x")
    secret = site.parent / f"{site.name}-secret.txt"
    secret.write_text("TOP SECRET")
    port = free_port()
    with OrbitedProcess(f"[global]\n[listen]\nhttp://127.0.0.1:{port}\n[static]\nINDEX = {site}\n"
                        f"files = {site}\n", wait_for=port):
        name = secret.name
        for target in (f"/files/../{name}", f"/files/%2e%2e/{name}", f"/files/..%2f{name}",
                       f"/files/%2e%2e%2f{name}", f"/../{name}", f"/%2e%2e/{name}",
                       f"/files/dir/..%5c..%5c{name}", "/static/../../setup.py", "/static/%2e%2e/__init__.py"):
            status, data = raw_get(port, target)
            assert b"TOP SECRET" not in data and b"__version__" not in data, target
            assert status in (400, 404), (target, status)
        for target in ("/files/dir", "/dir", "//dir", "///dir", "//evil.example/%2F..", "/%2F%2Fevil.example",
                       "//files/dir", "/files//dir", "/dir?next=//evil"):
            status, data = raw_get(port, target)
            for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
                if line.lower().startswith(b"location:"):
                    location = line.split(b":", 1)[1].strip()
                    assert location.startswith(b"/") and not location.startswith(b"//"), (target, location)
        status, data = raw_get(port, "/files/dir")
        assert status == 301 and b"\r\nLocation: /files/dir/\r\n" in data


def test_every_http_listener_serves_the_same_tree():
    ports = [free_port(), free_port()]
    with OrbitedProcess(f"[global]\n[listen]\nhttp://127.0.0.1:{ports[0]}\nhttp://127.0.0.1:{ports[1]}\n",
                        wait_for=ports[0]):
        wait_port(ports[1])
        for port in ports:
            assert json.loads(get(port, "/system/status")[2])["version"] == __version__


def test_ipv6_listener():
    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6; the test needs ::1")
    port = free_port("::1")
    with OrbitedProcess(f"[global]\n[listen]\nhttp://[::1]:{port}\n") as orbited:
        wait_port(port, host="::1", proc=orbited.proc)
        status, _, body = get(port, "/system/status", host="::1")
        assert status == 200 and json.loads(body)["version"] == __version__


IN_OWN_NETWORK = r"""
import json, os, signal, subprocess, sys, time, urllib.request
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv6/bindv6only", "w") as knob:  # this namespace's own; FreeBSD's default
    knob.write("1")
config, port = sys.argv[1], int(sys.argv[2])
orbited = subprocess.Popen([sys.executable, "-m", "orbited", "--config", config], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def status(host):
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/system/status", timeout=2) as answer:
            return answer.status
    except OSError as exc:
        return str(exc)

try:
    deadline = time.monotonic() + 30
    while status("[::1]") != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    answers = {host: status(host) for host in ("[::1]", "127.0.0.1")}  # one socket: both, or IPv6 only
finally:
    os.killpg(orbited.pid, signal.SIGKILL)
    orbited.wait()
print(json.dumps(answers))
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_every_interface_takes_ipv4_clients_where_the_system_makes_ipv6_sockets_v6only(workers, tmp_path):
    """'http://:8000' binds '::' and promises IPv4 clients too; with net.ipv6.bindv6only = 1 (in a
    network namespace of the test's own) every IPv4 client was refused."""
    if os.getuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a network namespace of its own")
    config = tmp_path / "orbited.cfg"
    config.write_text(f"[global]\nuser = {pwd.getpwuid(0).pw_name}\nworkers = {workers}\n[listen]\nhttp://:8000\n")
    script = tmp_path / "in_own_network.py"
    script.write_text(IN_OWN_NETWORK)
    run = subprocess.run(["unshare", "--net", sys.executable, str(script), str(config), "8000"], capture_output=True,
                         text=True, timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    if run.returncode and "unshare" in run.stderr:
        pytest.skip(f"no network namespace here: {run.stderr.strip()}")
    answers = json.loads(run.stdout)
    assert answers["[::1]"] == 200 and answers["127.0.0.1"] == 200, answers


def test_log_lines_write_ipv6_peers_with_brackets_and_mapped_ones_as_ipv4():
    """Every line that names a client writes it '[::1]:PORT'.  Four refusals named it as autobahn's
    'tcp6:::1:PORT' (where does the address end?) and the /tcp one as Twisted's repr; an IPv4
    client of a v6 socket ('::ffff:127.0.0.1', every IPv4 client of 'http://:8000') reads as IPv4."""
    port, mapped, stomp, echo = free_port("::1"), free_port("::1"), free_port("::1"), free_port("::1")
    config = (f"[global]\nproxy.max_sessions = 1\n[listen]\nhttp://[::1]:{port}\n"
              f"http://[::ffff:127.0.0.1]:{mapped}\nstomp://[::1]:{stomp}\necho://[::1]:{echo}\n"
              f"[access]\n* -> [::1]:{echo}\n")
    with OrbitedProcess(config) as orbited:
        for where in (("::1", port), ("::1", stomp), ("::1", echo), ("127.0.0.1", mapped)):
            wait_port(where[1], host=where[0], proc=orbited.proc)
        with ws_connect(f"ws://[::1]:{port}/ws") as held:  # takes the one session
            held.send(f"[::1]:{echo}")
            assert held.recv(10) == "1"
            peers = []
            for path in (b"/ws", b"/tcp"):
                with socket.create_connection(("::1", port), timeout=10) as sock:
                    peers.append(sock.getsockname()[1])
                    request = (b"GET %s HTTP/1.1\r\nHost: [::1]\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
                    sock.sendall(request % path)
                    assert sock.recv(100).startswith(b"HTTP/1.1 503 ")
        with socket.create_connection(("::1", port), timeout=10) as sock:  # a /stomp page from elsewhere
            peers.append(sock.getsockname()[1])
            sock.sendall(b"GET /stomp HTTP/1.1\r\nHost: [::1]\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                         b"Origin: http://elsewhere.test\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 403 ")
        with ws_connect(f"ws://127.0.0.1:{mapped}/ws") as ws:
            ws.send(f"[::1]:{echo}")
            assert ws.recv(10) == "1"
            mapped_peer = ws.local_address[1]
        assert wait_for_log(orbited, f"127.0.0.1:{mapped_peer} (Host 127.0.0.1:{mapped}) -> [::1]:{echo} closed")
        log = orbited.log()
    assert f"refusing WebSocket from [::1]:{peers[0]}:" in log
    assert f"refusing /tcp session from [::1]:{peers[1]}:" in log
    assert f"refusing /stomp WebSocket from [::1]:{peers[2]}:" in log
    assert "::ffff:" not in log.replace(f"http://[::ffff:127.0.0.1]:{mapped}", "")
    ours = [line for line in log.splitlines() if "[autobahn]" not in line]  # autobahn's own lines use its form
    assert not [line for line in ours if "tcp6:" in line or "IPv6Address(" in line]


def test_status_reports_sessions_and_bytes():
    port, echo = free_port(), free_port()
    config = (f"[global]\n[listen]\nhttp://127.0.0.1:{port}\necho://127.0.0.1:{echo}\n"
              f"[access]\n* -> 127.0.0.1:{echo}\n")
    with OrbitedProcess(config, wait_for=port) as orbited:
        before = orbited.status()
        assert before["sessions"]["total"] == 0 and before["proxy"]["connections"] == 0
        assert before["version"] == __version__ and before["uptime"] >= 0
        with ws_connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["binary"]) as ws:
            ws.send(f"127.0.0.1:{echo}")
            assert ws.recv(10) == "1"
            ws.send(b"x" * 1000)
            assert ws.recv(10) == b"x" * 1000
            during = orbited.status()
            assert during["sessions"]["by_transport"] == {"ws": 1}
            assert during["proxy"]["connections"] == 1
            assert during["proxy"]["bytes_to_backend"] == 1000  # open sessions count too
            # the process: a proxied session is two descriptors (the browser's and the backend's);
            # the connection of the status request before may still be closing (one more)
            grown = during["process"]["open_files"] - before["process"]["open_files"]
            assert grown in (2, 3), (before["process"], during["process"])
            assert abs(during["process"]["open_files"] - len(os.listdir(f"/proc/{orbited.proc.pid}/fd"))) <= 1
        limits = Path(f"/proc/{orbited.proc.pid}/limits").read_text()
        soft = next(line.split()[3] for line in limits.splitlines() if line.startswith("Max open files"))
        assert before["process"]["open_files_limit"] == int(soft)
        assert abs(orbited.status()["process"]["rss_bytes"] - rss_kb(orbited.proc.pid) * 1024) < 8 * 1024 * 1024
        deadline = time.monotonic() + 10
        while orbited.status()["proxy"]["connections"] and time.monotonic() < deadline:
            time.sleep(0.05)
        after = orbited.status()
        assert after["sessions"]["total"] == 0 and after["proxy"]["connections_total"] == 1
        assert after["proxy"]["bytes_to_backend"] == 1000 and after["proxy"]["bytes_from_backend"] == 1000


def test_out_of_descriptors_at_accept_is_one_warning_and_the_server_recovers():
    """Twisted closes what it cannot accept with three INFO lines each; the operator gets one
    WARNING naming the limit (and a count later), /system/status still shows open_files, a
    static file that cannot be opened is a 503 (not a cacheable 404), and once descriptors are
    free again the server answers."""
    port, limit = free_port(), 48
    with OrbitedProcess(f"[listen]\nhttp://127.0.0.1:{port}\n", wait_for=port, files_limit=limit) as orbited:
        in_use = orbited.status()["process"]["open_files"] - 1  # not counting the status request's own
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(limit - in_use - 1)]
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:  # takes the last one
            client.sendall(b"GET /static/Orbited.js HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            static = b""
            while chunk := client.recv(65536):
                static += chunk
        flood = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(30)]
        deadline = time.monotonic() + 5
        while "out of file descriptors (" not in orbited.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        for sock in flood:  # some may wait in the listen queue: gone, they cannot take what is freed
            sock.close()
        held.pop(0).close()  # free one of those it took: the status request takes it, and must count them
        process = {}
        while not process and time.monotonic() < deadline + 5:
            time.sleep(0.3)  # the flood's connections may still be being closed: the free one goes to them
            try:
                process = orbited.status()["process"]
            except OSError:
                pass
        for sock in held:
            sock.close()
        time.sleep(0.3)
        assert orbited.status()["process"]["open_files"] < 20
        log = orbited.log()
    head = static.split(b"\r\n\r\n")[0].lower()  # the file cannot be opened: try later, and nothing cacheable
    assert head.startswith(b"http/1.1 503") and b"retry-after: 10" in head and b"last-modified" not in head, head
    assert "out of file descriptors: static files are answered 503" in log, log
    assert process["open_files_limit"] == limit and process["open_files"] >= limit - 2, process
    assert log.count(f"out of file descriptors (open-file limit {limit}): new connections are closed at accept") == 1
    assert "EMFILE" not in log, log


@pytest.mark.parametrize("stomp", ["", "[stomp]\nwebsocket.enabled = 1\n", "[stomp]\nuser.a = b\n"])
def test_the_built_in_broker_runs_only_when_the_config_asks_for_it(stomp):
    """Pages sent to RabbitMQ ('* -> rabbit:61613', no stomp:// line) must not find an open
    broker of Orbited's own at /stomp on every HTTP port."""
    port = free_port()
    config = f"[listen]\nhttp://127.0.0.1:{port}\n[access]\n* -> rabbit.internal:61613\n{stomp}"
    with OrbitedProcess(config, wait_for=port) as orbited:
        sock, head = upgrade(port, b"/stomp", headers=b"Sec-WebSocket-Protocol: v12.stomp\r\n")
        sock.close()
        status = orbited.status()
        log = orbited.log()
    wanted = "websocket.enabled" in stomp
    assert head.startswith(b"HTTP/1.1 101" if wanted else b"HTTP/1.1 404"), head
    assert ("broker" in status) == wanted
    assert ("STOMP broker in development mode" in log) == wanted, log
    assert "other machines can reach it" not in log, log  # loopback only


def test_a_broker_open_to_any_login_names_the_listeners_other_machines_reach(caplog):
    """etc/orbited.cfg and --quickstart served their any-login broker to the network; they now
    listen on loopback, and a config written by hand that does not is told at start-up."""
    from orbited.config import parse_listen_line
    from orbited.inifile import Entry, Section
    from orbited.stomp import reachable_from_elsewhere
    from orbited.stomp.settings import StompSettings

    listeners = [parse_listen_line(line) for line in (
        "http://:8000", "http://127.0.0.1:8001", "https://[::1]:8443", "stomp://localhost:61613",
        "stomp://0.0.0.0:61614", "http://192.0.2.7:8002", "echo://:7", "http://[::ffff:127.0.0.1]:8003")]
    on = StompSettings.from_section(Section("stomp", 0))
    assert reachable_from_elsewhere(listeners, on) == [
        "http://:8000 (/stomp)", "stomp://0.0.0.0:61614", "http://192.0.2.7:8002 (/stomp)"]
    off = StompSettings.from_section(Section("stomp", 0, [Entry("websocket.enabled", "0", 1)]))
    assert reachable_from_elsewhere(listeners, off) == ["stomp://0.0.0.0:61614"]
    # what attach (at start-up) logs for such a config
    from types import SimpleNamespace

    from twisted.internet.task import Clock

    from orbited.config import load_text
    from orbited.stomp import attach

    config = load_text("[listen]\nhttp://:8000\nstomp://127.0.0.1:61613\n[access]\n* -> localhost:61613\n")
    with caplog.at_level(logging.WARNING, logger="orbited.stomp"):
        attach(SimpleNamespace(broker=None, config=config, reactor=Clock()))
    assert ("and other machines can reach it through http://:8000 (/stomp): add [stomp] user.NAME = PASSWORD "
            "keys, or listen on 127.0.0.1 only") in caplog.text


def test_status_is_loopback_only_by_default():
    port = free_port()
    with OrbitedProcess(f"[global]\n[listen]\nhttp://:{port}\n", wait_for=port):
        assert get(port, "/system/status")[0] == 200
        address = non_loopback_address()
        status, _, body = get(port, "/system/status", host=address)
        assert status == 403 and b"[global] status" in body
        # nginx on this host relays outside clients from loopback: what it adds gives them away
        for header in ("X-Forwarded-For: 203.0.113.7", "Forwarded: for=203.0.113.7", "X-Real-IP: 203.0.113.7"):
            status, _, body = get(port, "/system/status", headers=dict([header.split(": ")]))
            assert status == 403 and b"[global] status" in body, header


def non_loopback_address() -> str:
    """An address of this machine that is not loopback (the host still answers it locally)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent for a UDP connect
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        pytest.fail("this machine has no non-loopback IPv4 address to test from")
    return address


def test_reactor_key_is_honoured():
    port = free_port()
    with OrbitedProcess(f"[global]\nreactor = poll\n[listen]\nhttp://127.0.0.1:{port}\n", wait_for=port) as o:
        assert o.status()["reactor"] == "PollReactor"


def test_log_level_override():
    port = free_port()
    with OrbitedProcess(f"[global]\n[listen]\nhttp://127.0.0.1:{port}\n", ("--log-level", "debug"),
                        wait_for=port) as orbited:
        get(port, "/system/status")
        time.sleep(0.3)
        assert "DEBUG [orbited.http]" in orbited.log()
    port = free_port()
    with OrbitedProcess(f"[global]\n[listen]\nhttp://127.0.0.1:{port}\n", ("-l", "error"),
                        wait_for=port) as orbited:
        pass
    assert "listening on" not in orbited.log()


# --- TLS


def tls_fetch(port: int, cafile: Path) -> tuple[bytes, int]:
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"GET /system/status HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    from cryptography import x509

    return data, x509.load_der_x509_certificate(der).serial_number


def test_https_with_a_test_certificate_and_reload_on_sighup():
    certs = scratch_dir("certs-")
    key, crt = make_cert(certs, serial=1111)
    port = free_port()
    config = f"[global]\n[listen]\nhttps://127.0.0.1:{port}\n[ssl]\nkey = {key}\ncrt = {crt}\n"
    with OrbitedProcess(config, wait_for=port) as orbited:
        data, serial = tls_fetch(port, crt)
        assert b"200 OK" in data and serial == 1111
        # renew the certificate in place and ask for a reload
        make_cert(certs, serial=2222)
        orbited.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while serial != 2222 and time.monotonic() < deadline:
            time.sleep(0.1)
            data, serial = tls_fetch(port, crt)
        assert serial == 2222, orbited.log()
        assert orbited.proc.poll() is None


def test_https_sends_the_chain():
    paths = make_chain(scratch_dir("chain-"))
    port = free_port()
    config = (f"[global]\n[listen]\nhttps://127.0.0.1:{port}\n"
              f"[ssl]\nkey = {paths['key']}\ncrt = {paths['crt']}\nchain = {paths['chain']}\n")
    with OrbitedProcess(config, wait_for=port):
        data, _serial = tls_fetch(port, paths["root"])  # verifies only if the intermediate was sent
        assert b"200 OK" in data
    without_chain = config.replace(f"chain = {paths['chain']}\n", "")
    port2 = free_port()
    with OrbitedProcess(without_chain.replace(str(port), str(port2)), wait_for=port2):
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_fetch(port2, paths["root"])


def test_https_refuses_tls_below_1_2():
    from OpenSSL import SSL

    certs = scratch_dir("certs-")
    key, crt = make_cert(certs)

    def handshake(port: int) -> str:
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        context.set_min_proto_version(SSL.TLS1_VERSION)
        context.set_max_proto_version(SSL.TLS1_1_VERSION)
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.settimeout(None)  # pyOpenSSL reads WantReadError from a socket with a timeout
        conn = SSL.Connection(context, sock)
        conn.set_connect_state()
        try:
            conn.do_handshake()
            return conn.get_protocol_version_name()
        except SSL.Error as exc:
            return f"refused: {exc}"
        finally:
            sock.close()

    # Control: a server that allows TLS 1.1 must complete the handshake with this client,
    # or the check below proves nothing.
    control = subprocess.Popen(
        ["openssl", "s_server", "-accept", str(port := free_port()), "-cert", str(crt), "-key", str(key),
         "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc=control)
        assert handshake(port) == "TLSv1.1"
    finally:
        control.kill()
        control.wait()
    port = free_port()
    config = f"[global]\n[listen]\nhttps://127.0.0.1:{port}\n[ssl]\nkey = {key}\ncrt = {crt}\n"
    with OrbitedProcess(config, wait_for=port):
        assert handshake(port).startswith("refused")


def test_a_reload_with_an_encrypted_key_refuses_it_and_never_prompts_on_the_terminal():
    """OpenSSL's answer to a passphrase-protected key is a prompt on the controlling terminal, read
    in the reactor's thread: a SIGHUP to an Orbited started in a terminal (tmux, screen) stopped
    every connection until someone typed.  Now the key is refused with a reason, as any broken set."""
    import pty
    import select
    import urllib.request

    certs = scratch_dir("certs-")
    key, crt = make_cert(certs)
    encrypted = encrypt_key(key, b"secret")
    port, tls_port = free_port(), free_port()
    cfg = certs / "o.cfg"
    user = pwd.getpwuid(os.getuid()).pw_name
    cfg.write_text(f"[global]\nuser = {user}\n[listen]\nhttp://127.0.0.1:{port}\nhttps://127.0.0.1:{tls_port}\n"
                   f"[ssl]\nkey = {key}\ncrt = {crt}\n")
    controller, terminal = pty.openpty()
    # setsid --ctty: a session of its own whose controlling terminal is the pty (OpenSSL opens /dev/tty)
    proc = subprocess.Popen(["setsid", "--ctty", *ORBITED, "-c", str(cfg)], stdin=terminal, stdout=terminal,
                            stderr=terminal)
    os.close(terminal)
    output = bytearray()

    def read_terminal() -> None:
        while True:
            if not select.select([controller], [], [], 0.1)[0]:
                return
            try:
                output.extend(os.read(controller, 65536))
            except OSError:
                return

    def status_ok() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/system/status", timeout=3) as response:
            return response.status == 200

    try:
        wait_port(port, proc=proc)
        assert status_ok()
        cfg.write_text(cfg.read_text().replace(str(key), str(encrypted)))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while b"reloaded" not in output and time.monotonic() < deadline:
            read_terminal()
        read_terminal()
        assert b"pass phrase" not in output, output.decode(errors="replace")
        assert status_ok()  # the server was stuck on the prompt: this timed out
        assert (f"reload kept the running TLS certificate: cannot use TLS files: [ssl] key '{encrypted}': the "
                "private key is encrypted with a passphrase, and Orbited does not ask for one").encode() in output
        assert b"200 OK" in tls_fetch(tls_port, crt)[0]
    finally:
        stop_process(proc)
        os.close(controller)


def test_tls_failures_are_one_info_line_then_a_count():
    """A TLS connection that fails said nothing at all, even at DEBUG: an operator whose chain was
    missing saw browsers fail and an empty log.  Now the first is an INFO line with the peer and
    OpenSSL's reason; the next ones within 10 s are counted, so a scanner cannot flood the log."""
    certs = scratch_dir("certs-")
    key, crt = make_cert(certs)
    for opening, reason in [("plain", "plain HTTP sent to an https:// port"),
                            ("untrusting", "tlsv1 alert unknown ca")]:
        port = free_port()
        config = f"[global]\n[listen]\nhttps://127.0.0.1:{port}\n[ssl]\nkey = {key}\ncrt = {crt}\n"
        with OrbitedProcess(config, wait_for=port) as orbited:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                if opening == "plain":
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    assert sock.recv(100) == b""
                else:  # a client that does not trust the certificate, as a browser without its CA
                    with pytest.raises(ssl.SSLCertVerificationError):
                        ssl.create_default_context().wrap_socket(sock, server_hostname="localhost")
            deadline = time.monotonic() + 10
            while "TLS with" not in orbited.log() and time.monotonic() < deadline:
                time.sleep(0.05)
            line = next((line for line in orbited.log().splitlines() if "TLS with" in line), orbited.log())
            assert re.search(r"INFO \[orbited\.http\] TLS with 127\.0\.0\.1:\d+ failed: " + re.escape(reason) + "$",
                             line), line
            for index in range(20):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(b"\x16\x03\x01\x00\x05hello" if index % 2 else os.urandom(64))
                    sock.recv(100)
            time.sleep(0.5)
            assert orbited.log().count("TLS with") == 1 and "Traceback" not in orbited.log(), orbited.log()


def test_an_idle_tls_connection_gives_its_buffers_back():
    """OpenSSL keeps a connection's 16 KB+ read and write buffers while it idles unless the context
    says otherwise, which Twisted's CertificateOptions does and the hand-built context did not:
    an idle https keep-alive connection cost 47 KB of the server's memory, now about 27."""
    certs = scratch_dir("certs-")
    key, crt = make_cert(certs)
    port = free_port()
    config = f"[global]\n[listen]\nhttps://127.0.0.1:{port}\n[ssl]\nkey = {key}\ncrt = {crt}\n"
    context = ssl.create_default_context(cafile=str(crt))

    def idle_connections(count: int) -> list[ssl.SSLSocket]:
        opened = []
        for _ in range(count):
            tls = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                      server_hostname="localhost")
            tls.sendall(b"GET /system/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = b""
            while not answer.rstrip().endswith(b"}"):
                answer += tls.recv(65536)
            opened.append(tls)
        return opened

    with OrbitedProcess(config, wait_for=port) as orbited:
        warm = idle_connections(50)  # the process's own first-use allocations
        time.sleep(0.3)
        before = rss_kb(orbited.proc.pid)
        held = idle_connections(400)
        time.sleep(0.3)
        per_connection = (rss_kb(orbited.proc.pid) - before) / len(held)
        for tls in warm + held:
            tls.close()
    assert per_connection < 37, f"{per_connection:.1f} KiB per idle TLS connection"


def test_bad_tls_files_stop_startup(tmp_path):
    certs = scratch_dir("certs-")
    key, _crt = make_cert(certs, "one")
    _key2, crt2 = make_cert(certs, "two")  # a certificate that does not match the key
    port = free_port()
    with OrbitedProcess(f"[global]\n[listen]\nhttps://127.0.0.1:{port}\n[ssl]\nkey = {key}\ncrt = {crt2}\n") as o:
        assert o.proc.wait(20) == 1
        # one clean line naming FILE:LINE and both files, as for a port in use; no traceback
        assert "Traceback" not in o.log(), o.log()
        assert (f"ERROR [orbited.cli] {o.path}:6: cannot use TLS files: [ssl] key '{key}' does not match "
                f"the certificate in crt '{crt2}'") in o.log()
    # --daemon: the parent reports the child's failure (before, the child died without a word)
    user = __import__("pwd").getpwuid(os.getuid()).pw_name
    cfg = tmp_path / "o.cfg"
    cfg.write_text(f"[global]\nuser = {user}\n[listen]\nhttps://127.0.0.1:{port}\n[ssl]\nkey = {key}\n"
                   f"crt = {crt2}\n")
    out = run_cli("-c", str(cfg), "--daemon", "--pid-file", str(tmp_path / "o.pid"))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"daemon failed to start: {cfg}:6: cannot use TLS files: [ssl] key '{key}' does not match" in out.stderr


def test_check_loads_the_tls_files(tmp_path):
    key, crt = make_cert(tmp_path, "one")
    _key2, crt2 = make_cert(tmp_path, "two")
    chain = make_chain(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM at all\n")
    cfg = tmp_path / "o.cfg"

    def check(ssl_lines: str) -> subprocess.CompletedProcess:
        cfg.write_text(f"[listen]\nhttps://127.0.0.1:{free_port()}\n[ssl]\n{ssl_lines}\n{AS_THIS_USER}")
        return run_cli("--check", "-c", str(cfg))

    out = check(f"key = {key}\ncrt = {crt}\n")
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr
    out = check(f"key = {chain['key']}\ncrt = {chain['crt']}\nchain = {chain['chain']}\n")
    assert out.returncode == 0, out.stderr
    # the problem is on the line of the file to blame, and names that file
    for ssl_lines, expected in [
        (f"crt = {crt2}\nkey = {key}\n",
         f"{cfg}:5: [ssl] key '{key}' does not match the certificate in crt '{crt2}'"),
        (f"key = {key}\ncrt = {garbage}\n", f"{cfg}:5: [ssl] crt '{garbage}': cannot load the certificate chain: "),
        (f"key = {garbage}\ncrt = {crt}\n", f"{cfg}:4: [ssl] key '{garbage}': cannot load the private key: "),
        (f"key = {key}\ncrt = {crt}\nchain = {garbage}\n", f"{cfg}:6: [ssl] chain '{garbage}': cannot load the chain: "),
        (f"key = {encrypt_key(key, b'secret')}\ncrt = {crt}\n",
         f"{cfg}:4: [ssl] key '{tmp_path / 'one.enc.key'}': the private key is encrypted with a passphrase"),
    ]:
        out = check(ssl_lines)
        assert out.returncode == 2, (ssl_lines, out.stdout, out.stderr)
        assert out.stderr.startswith(expected), (expected, out.stderr)
        assert "OK" not in out.stdout and "Traceback" not in out.stderr


def test_tls_files_load_without_deprecated_pyopenssl_calls(tmp_path):
    """pyOpenSSL deprecated its passphrase callback and its own key and certificate objects:
    loading [ssl] files with them warned on every start, reload and --check (an error under
    -W error, and one once pyOpenSSL removes them)."""
    chain = make_chain(tmp_path)
    cfg = tmp_path / "o.cfg"
    cfg.write_text(f"[listen]\nhttps://127.0.0.1:{free_port()}\n[ssl]\nkey = {chain['key']}\n"
                   f"crt = {chain['crt']}\nchain = {chain['chain']}\n{AS_THIS_USER}")
    out = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-m", "orbited", "--check",
                          "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr


def test_check_reports_log_files_that_cannot_be_opened(tmp_path):
    existing = tmp_path / "existing.log"
    existing.write_text("old lines\n")
    a_directory = tmp_path / "a-directory"
    a_directory.mkdir()
    cfg = tmp_path / "o.cfg"
    cfg.write_text(
        "[listen]\nhttp://127.0.0.1:1\n"
        "[loggers]\nkeys = root\n"
        "[handlers]\nkeys = missing, rotating, timed, watched, fine, stream\n"  # 6
        "[formatters]\nkeys = f\n"
        "[logger_root]\nlevel = WARNING\nhandlers = missing, rotating, timed, watched, fine, stream\n"
        "[handler_missing]\nclass = FileHandler\nargs = ('/nonexistent-dir/x.log', 'w')\nformatter = f\n"  # 14: args
        "[handler_rotating]\nclass = handlers.RotatingFileHandler\n"
        f"kwargs = {{'filename': '{a_directory}', 'maxBytes': 10}}\n"  # 18
        "[handler_timed]\nclass = logging.handlers.TimedRotatingFileHandler\n"
        f"args = ('{tmp_path}/no/such/t.log',)\n"  # 21
        "[handler_watched]\nclass = handlers.WatchedFileHandler\nargs = (undefined_name,)\n"  # 24
        f"[handler_fine]\nclass = FileHandler\nargs = ('{existing}', 'w')\n"
        "[handler_stream]\nclass = StreamHandler\nargs = (sys.stderr,)\n"
        "[formatter_f]\nformat = %(message)s\n" + AS_THIS_USER
    )
    out = run_cli("--check", "-c", str(cfg))
    assert out.returncode == 2 and "OK" not in out.stdout
    assert out.stderr.splitlines() == [
        f"{cfg}:14: [handler_missing] log file '/nonexistent-dir/x.log': directory '/nonexistent-dir' does not exist",
        f"{cfg}:18: [handler_rotating] log file '{a_directory}' is a directory",
        (f"{cfg}:21: [handler_timed] log file '{tmp_path}/no/such/t.log': directory '{tmp_path}/no/such' "
         "does not exist"),
        f"{cfg}:24: [handler_watched] args: cannot evaluate: NameError(\"name 'undefined_name' is not defined\")",
    ], out.stderr
    # nothing was opened: the 'w' file is not truncated, and no file was created
    assert existing.read_text() == "old lines\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory", "existing.log", "o.cfg"]
    # the [logging] form's file outputs too
    user = __import__("pwd").getpwuid(os.getuid()).pw_name
    cfg.write_text(f"[global]\nuser = {user}\n[listen]\nhttp://127.0.0.1:{free_port()}\n[logging]\ninfo = STDERR\n"
                   f"error = screen, {existing}, /nonexistent-dir/e.log\n")
    out = run_cli("--check", "-c", str(cfg))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"{cfg}:7: [logging] error: log file '/nonexistent-dir/e.log': directory '/nonexistent-dir' does not exist"]
    # and start-up fails on the same file, as --check said it would
    out = run_cli("-c", str(cfg))
    assert out.returncode == 2 and f"{cfg}:5: logging config failed" in out.stderr


# --- signals


def test_sigterm_closes_sessions_with_a_reason_and_exits_0():
    port, echo = free_port(), free_port()
    config = (f"[global]\nshutdown.timeout = 3\n[listen]\nhttp://127.0.0.1:{port}\necho://127.0.0.1:{echo}\n"
              f"[access]\n* -> 127.0.0.1:{echo}\n")
    orbited = OrbitedProcess(config, wait_for=port).start()
    try:
        with ws_connect(f"ws://127.0.0.1:{port}/ws") as ws:
            ws.send(f"127.0.0.1:{echo}")
            assert ws.recv(10) == "1"
            started = time.monotonic()
            orbited.proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(10)
            assert closed.value.rcvd.code == 1001 and "shutting down" in closed.value.rcvd.reason
        assert orbited.proc.wait(10) == 0
        assert time.monotonic() - started < 6
        # the close is logged as the server's, not the browser's
        assert "closed by the server with 1001 server shutting down" in orbited.log()
        assert "browser closed with 1001" not in orbited.log()
        # no longer accepting
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
    finally:
        orbited.stop()


def test_sigint_exits_0():
    port = free_port()
    orbited = OrbitedProcess(f"[global]\n[listen]\nhttp://127.0.0.1:{port}\n", wait_for=port).start()
    try:
        orbited.proc.send_signal(signal.SIGINT)
        assert orbited.proc.wait(10) == 0
    finally:
        orbited.stop()


def test_a_second_stop_signal_while_stopping_is_harmless():
    """A second SIGTERM (an impatient operator, or a supervisor repeating itself) finds the
    reactor already stopping: here, waiting for a browser that never answers the close."""
    port, echo = free_port(), free_port()
    config = (f"[global]\nshutdown.timeout = 2\n[listen]\nhttp://127.0.0.1:{port}\necho://127.0.0.1:{echo}\n"
              f"[access]\n* -> 127.0.0.1:{echo}\n")
    orbited = OrbitedProcess(config, wait_for=port).start()
    try:
        silent = raw_upgrade(port)
        silent.sendall(masked(0x1, f"127.0.0.1:{echo}".encode()))
        assert b"1" in silent.recv(100)
        orbited.proc.send_signal(signal.SIGTERM)
        assert wait_for_log(orbited, "shutting down: closing 1 sessions")
        orbited.proc.send_signal(signal.SIGTERM)
        assert orbited.proc.wait(10) == 0
        log = orbited.log()
        assert log.count("SIGTERM, shutting down") == 2, log
        assert "Traceback" not in log and "Unhandled" not in log, log
        silent.close()
    finally:
        orbited.stop()


def wait_for_log(orbited: OrbitedProcess, text: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while text not in orbited.log():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_sighup_names_the_changes_it_does_not_apply():
    port, echo = free_port(), free_port()
    config = f"[global]\nproxy.connect_timeout = 10\n[listen]\nhttp://127.0.0.1:{port}\n[access]\n* -> 127.0.0.1:{echo}\n"
    with OrbitedProcess(config, wait_for=port) as orbited:
        text = orbited.path.read_text().replace("proxy.connect_timeout = 10", "proxy.connect_timeout = 2")
        listen = f"http://127.0.0.1:{port}\n"
        orbited.path.write_text(text.replace(listen, listen + f"echo://127.0.0.1:{echo}\n"))
        orbited.proc.send_signal(signal.SIGHUP)
        assert wait_for_log(orbited, "next restart"), orbited.log()
        line = next(x for x in orbited.log().splitlines() if "next restart" in x)
        assert "WARNING" in line and "reload: proxy.connect_timeout, [listen] changed in" in line, line
        # and it was not applied: nothing listens on the new [listen] line
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", echo), timeout=1).close()
        assert "reloaded" in orbited.log()


def handshake_reply(port: int, dest: str) -> str:
    with ws_connect(f"ws://127.0.0.1:{port}/ws") as ws:
        ws.send(dest)
        return ws.recv(10)


def test_sighup_reloads_access_rules_without_dropping_sessions():
    port, echo1, echo2 = free_port(), free_port(), free_port()
    listen = f"[listen]\nhttp://127.0.0.1:{port}\necho://127.0.0.1:{echo1}\necho://127.0.0.1:{echo2}\n"
    orbited = OrbitedProcess(f"[global]\n{listen}[access]\n* -> 127.0.0.1:{echo1}\n", wait_for=port).start()
    try:
        assert handshake_reply(port, f"127.0.0.1:{echo2}") == "0106"
        with ws_connect(f"ws://127.0.0.1:{port}/ws") as live:
            live.send(f"127.0.0.1:{echo1}")
            assert live.recv(10) == "1"
            text = orbited.path.read_text().replace(f"* -> 127.0.0.1:{echo1}", f"* -> 127.0.0.1:{echo2}")
            orbited.path.write_text(text)
            orbited.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while "reloaded" not in orbited.log() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert handshake_reply(port, f"127.0.0.1:{echo2}") == "1"
            assert handshake_reply(port, f"127.0.0.1:{echo1}") == "0106"
            assert "next restart" not in orbited.log()  # all that changed was applied
            # the session opened under the old rules is untouched
            live.send(b"still here")
            assert live.recv(10) == b"still here"
        # a broken file on reload keeps the old rules and says why
        orbited.path.write_text(orbited.path.read_text() + "\n[access]\n* -> *\n")
        orbited.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reload refused" not in orbited.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "reload refused" in orbited.log() and "wildcard destination" in orbited.log()
        assert handshake_reply(port, f"127.0.0.1:{echo2}") == "1"
    finally:
        orbited.stop()


def test_a_reload_with_a_static_directory_gone_still_applies_the_rules():
    """A [static] directory moved away during a deploy (or hidden from [global] user) is only
    mounted at start; the reload (and a worker started meanwhile) used to refuse the whole file
    for it ("no such file or directory"), so a revoked [access] rule stayed in force."""
    port, echo1, echo2 = free_port(), free_port(), free_port()
    site = scratch_dir("static-") / "site"
    site.mkdir()
    (site / "index.html").write_text("hello")
    config = (f"[global]\nworkers = 1\n[listen]\nhttp://127.0.0.1:{port}\necho://127.0.0.1:{echo1}\n"
              f"echo://127.0.0.1:{echo2}\n[static]\nsite = {site}\n[access]\n* -> 127.0.0.1:{echo1}\n")
    with OrbitedProcess(config, wait_for=port) as orbited:
        assert handshake_reply(port, f"127.0.0.1:{echo1}") == "1"
        site.rename(site.with_name("site.old"))
        orbited.path.write_text(orbited.path.read_text().replace(f"* -> 127.0.0.1:{echo1}",
                                                                 f"* -> 127.0.0.1:{echo2}"))
        orbited.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reloaded" not in orbited.log() and "refused" not in orbited.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "reload refused" not in orbited.log(), orbited.log()
        assert handshake_reply(port, f"127.0.0.1:{echo1}") == "0106"
        assert handshake_reply(port, f"127.0.0.1:{echo2}") == "1"
        # a worker that starts now (after a crash) reads the same file: it must come up
        worker = orbited.status()["workers"][0]["pid"]
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ready = [w["pid"] for w in orbited.status()["workers"] if w["ready"]]
            if ready and ready[0] != worker:
                break
            time.sleep(0.1)
        assert ready and ready[0] != worker, orbited.log()
        assert "cannot start" not in orbited.log() and "no such file" not in orbited.log(), orbited.log()


def test_sighup_reopens_log_files_after_logrotate_moved_them():
    """logrotate renames the file and sends SIGHUP: new lines go to a new file at the old path."""
    port = free_port()
    logs = scratch_dir("logs-")
    config = (f"[global]\n[listen]\nhttp://127.0.0.1:{port}\n"
              f"[logging]\ninfo = {logs}/orbited.log\nwarn = {logs}/orbited.log\nerror = {logs}/orbited.log\n")
    with OrbitedProcess(config, wait_for=port) as orbited:
        current, rotated = logs / "orbited.log", logs / "orbited.log.1"
        assert "listening on" in current.read_text()
        current.rename(rotated)
        orbited.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not (current.exists() and "reloaded" in current.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"reopened log files: {current}" in current.read_text()
        assert "reloaded" in current.read_text()
        assert "reopened" not in rotated.read_text()
        # a SIGHUP without a rotation appends to the file, it never truncates it
        orbited.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while current.read_text().count("reloaded") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert current.read_text().count("reopened log files") == 2
        # a path that cannot be opened (here a directory, which stops root too): the old stream
        # stays, and the log says why
        current.rename(rotated)
        current.mkdir()
        orbited.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "cannot reopen" not in rotated.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"cannot reopen log file {current}: Is a directory" in rotated.read_text()
        assert "reloaded" in rotated.read_text().split("cannot reopen")[1]


# --- privileges and daemon mode


def proc_ids(pid: int) -> dict[str, list[int]]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            fields[key] = [int(v) for v in value.split()]
    return fields


@pytest.mark.skipif(os.getuid() != 0, reason="privileges can only be dropped by a process started as root")
@pytest.mark.skipif(os.getuid() != 0, reason="needs root, to start as root and drop to nobody")
def test_a_reload_as_nobody_applies_the_rules_when_the_key_is_root_only():
    """A reload runs as [global] user.  A private key only root may read (letsencrypt's privkey.pem)
    cannot be re-read then: start-up says so, and a reload still applies [access]."""
    certs = scratch_dir("certs-")
    key, crt = make_cert(certs)
    os.chmod(key, 0o600)
    port, tls_port, echo1, echo2 = free_port(), free_port(), free_port(), free_port()
    config = (f"[global]\nuser = nobody\n[listen]\nhttp://127.0.0.1:{port}\nhttps://127.0.0.1:{tls_port}\n"
              f"echo://127.0.0.1:{echo1}\necho://127.0.0.1:{echo2}\n[ssl]\nkey = {key}\ncrt = {crt}\n"
              f"[access]\n* -> 127.0.0.1:{echo1}\n")
    with OrbitedProcess(config, wait_for=port) as orbited:
        orbited.status()  # answered once the reactor runs: after the drop and its warnings
        assert f"{key} is not readable by user nobody: a reload (SIGHUP) cannot re-read it" in orbited.log()
        assert f"{crt} is not readable" not in orbited.log()
        orbited.path.write_text(orbited.path.read_text().replace(f"* -> 127.0.0.1:{echo1}", f"* -> 127.0.0.1:{echo2}"))
        orbited.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reloaded" not in orbited.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert handshake_reply(port, f"127.0.0.1:{echo1}") == "0106"  # the removed rule is gone
        assert handshake_reply(port, f"127.0.0.1:{echo2}") == "1"
        assert "reload kept the running TLS certificate" in orbited.log()
        assert b"200 OK" in tls_fetch(tls_port, crt)[0]  # served with the certificate it had


def reload_with_tls_files_gone(user: str, hide, workers: int = 0) -> tuple[str, Path]:
    """Start with [ssl] files and [access] to one echo server; ``hide(key, crt)`` takes the files
    out of the reload's sight; swap the rule to the other echo server and reload.  Asserts that the
    rule swap applied (in the worker that serves /ws, with ``workers``) and the running certificate
    still serves; returns the log and the hidden crt."""
    certs = scratch_dir("certs-")
    key, crt = make_cert(certs)
    port, tls_port, echo1, echo2 = free_port(), free_port(), free_port(), free_port()
    config = (f"[global]\nuser = {user}\nworkers = {workers}\n[listen]\nhttp://127.0.0.1:{port}\n"
              f"https://127.0.0.1:{tls_port}\necho://127.0.0.1:{echo1}\necho://127.0.0.1:{echo2}\n"
              f"[ssl]\nkey = {key}\ncrt = {crt}\n[access]\n* -> 127.0.0.1:{echo1}\n")
    with OrbitedProcess(config, wait_for=port) as orbited:
        orbited.status()  # the reactor runs: privileges are dropped
        orbited.wait_workers(workers)
        served = crt.read_bytes()
        hide(key, crt)
        orbited.path.write_text(orbited.path.read_text().replace(f"* -> 127.0.0.1:{echo1}", f"* -> 127.0.0.1:{echo2}"))
        orbited.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while handshake_reply(port, f"127.0.0.1:{echo1}") != "0106" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert handshake_reply(port, f"127.0.0.1:{echo1}") == "0106", orbited.log()  # the removed rule is gone
        assert handshake_reply(port, f"127.0.0.1:{echo2}") == "1"
        trusted = scratch_dir("trust-") / "served.crt"
        trusted.write_bytes(served)
        assert b"200 OK" in tls_fetch(tls_port, trusted)[0]  # served with the certificate it had
        return orbited.log(), crt


def test_a_reload_with_a_tls_file_gone_applies_the_rules_and_keeps_the_certificate():
    """A certificate renewal caught half-way (the crt moved away) must not refuse the whole reload:
    it used to, as a config error ("[ssl] crt: no such file"), and the old [access] rules stayed."""
    log, crt = reload_with_tls_files_gone(pwd.getpwuid(os.getuid()).pw_name,
                                          lambda key, crt: crt.rename(crt.with_suffix(".old")), workers=1)
    assert "reload refused" not in log, log
    assert (f"ERROR [orbited.service] reload kept the running TLS certificate: cannot use TLS files: [ssl] "
            f"crt '{crt}': cannot read the certificate chain: No such file or directory") in log, log


@pytest.mark.skipif(os.getuid() != 0, reason="needs root, to start as root and drop to nobody")
def test_a_reload_as_nobody_applies_the_rules_when_the_tls_files_are_in_a_root_only_directory():
    """letsencrypt keeps its files under 0700 directories: [global] user cannot even see them.  The
    reload said "no such file" and refused everything, [access] included; now it says why the
    certificate stays, and applies the rules."""
    log, crt = reload_with_tls_files_gone("nobody", lambda key, crt: crt.parent.chmod(0o700))
    assert "reload refused" not in log and "no such file" not in log, log
    assert (f"ERROR [orbited.service] reload kept the running TLS certificate: cannot use TLS files: [ssl] "
            f"crt '{crt}': cannot read the certificate chain: Permission denied") in log, log


@pytest.mark.skipif(os.getuid() != 0, reason="needs root, to start as root and drop to nobody")
def test_static_directories_nobody_cannot_read_are_named_at_start():
    """`make run` as root from a clone under /root (0700) served every page as a 404 and said
    nothing: the files are read as [global] user.  Start-up now names each such directory."""
    import shutil
    import tempfile

    private = scratch_dir("private-")
    hidden = private / "site"
    hidden.mkdir()
    private.chmod(0o700)
    shared = Path(tempfile.mkdtemp(prefix="orbited-shared-"))  # /tmp: every user may enter it
    shared.chmod(0o755)
    port = free_port()
    config = (f"[global]\nuser = nobody\n[listen]\nhttp://127.0.0.1:{port}\n"
              f"[static]\nhidden = {hidden}\nshared = {shared}\n")
    try:
        with OrbitedProcess(config, wait_for=port) as orbited:
            orbited.status()  # answered once the reactor runs: after the drop and its checks
            assert (f"{hidden} is not readable by user nobody, so /hidden/ answers 404 to every request"
                    in orbited.log()), orbited.log()
            assert f"{shared} is not readable" not in orbited.log()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_privilege_drop_to_nobody_after_binding():
    import grp
    import pwd

    port, echo = free_port(), free_port()
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrnam("nogroup") if "nogroup" in {g.gr_name for g in grp.getgrall()} else None
    config = (f"[global]\nuser = nobody\n[listen]\nhttp://127.0.0.1:{port}\necho://127.0.0.1:{echo}\n"
              f"[access]\n* -> localhost:{echo}\n")
    with OrbitedProcess(config, wait_for=port) as orbited:
        # A host-name lookup after the drop: getaddrinfo needs the idna codec, and an interpreter
        # that only root can read (this image's pyenv under /root) cannot import it any more.
        with ws_connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["binary"]) as ws:
            ws.send(f"localhost:{echo}")
            assert ws.recv(10) == "1"
            ws.send(b"after the drop")
            assert ws.recv(10) == b"after the drop"
        assert "Traceback" not in orbited.log()
        # The port accepts connections from listen() on, a moment before the drop; an answer
        # comes only once the reactor runs, which is after it.
        assert orbited.status()["pid"] == orbited.proc.pid
        ids = proc_ids(orbited.proc.pid)
        assert ids["Uid"] == [nobody.pw_uid] * 4
        assert ids["Gid"] == [nobody.pw_gid] * 4
        expected_groups = sorted({nobody.pw_gid, *(g.gr_gid for g in grp.getgrall() if "nobody" in g.gr_mem)})
        assert sorted(ids["Groups"]) == expected_groups  # root's supplementary groups are gone
        assert 0 not in ids["Groups"]
        assert group is None or group.gr_gid >= 0


def test_daemon_writes_pid_file_and_serves():
    work = scratch_dir("daemon-")
    port = free_port()
    pid_file = work / "run" / "orbited.pid"
    cfg = work / "o.cfg"
    user = __import__("pwd").getpwuid(os.getuid()).pw_name
    cfg.write_text(f"[global]\nuser = {user}\n[listen]\nhttp://127.0.0.1:{port}\n")
    out = run_cli("-c", str(cfg), "--daemon", "--pid-file", str(pid_file))
    assert out.returncode == 0, out.stderr
    pid = int(pid_file.read_text())
    try:
        wait_port(port)
        assert json.loads(get(port, "/system/status")[2])["pid"] == pid
        # a second daemon with the same pid file refuses loudly
        other = run_cli("-c", str(cfg), "--daemon", "--pid-file", str(pid_file))
        assert other.returncode == 1 and "still running" in other.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_file.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root, to start as root and drop to nobody")
@pytest.mark.parametrize("own_directory", [True, False])
def test_a_daemon_that_dropped_root_still_clears_its_pid_file(own_directory):
    """The pid file is written as root; at exit the daemon runs as nobody.  In a directory it
    made, the file goes; in root's own directory it is emptied, which the next start takes as
    stale.  A stale file naming a live process that is not Orbited does not stop a start."""
    work = scratch_dir("daemon-")
    pid_file = work / "run" / "orbited.pid" if own_directory else work / "orbited.pid"
    pid_file.parent.mkdir(exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")  # alive, and not an Orbited
    port = free_port()
    cfg = work / "o.cfg"
    cfg.write_text(f"[global]\nuser = nobody\n[listen]\nhttp://127.0.0.1:{port}\n")
    if own_directory:
        pid_file.unlink()
        pid_file.parent.rmdir()
    out = run_cli("-c", str(cfg), "--daemon", "--pid-file", str(pid_file))
    assert out.returncode == 0, out.stderr
    pid = int(pid_file.read_text())
    wait_port(port)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pid_file.exists() and pid_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_file.exists() if own_directory else pid_file.read_text() == ""


def test_daemon_failures_are_loud():
    work = scratch_dir("daemon-")
    user = __import__("pwd").getpwuid(os.getuid()).pw_name
    cfg = work / "o.cfg"
    cfg.write_text(f"[global]\nuser = {user}\n[listen]\nhttp://127.0.0.1:{free_port()}\n")
    blocker = work / "file"
    blocker.write_text("")
    out = run_cli("-c", str(cfg), "--daemon", "--pid-file", str(blocker / "orbited.pid"))
    assert out.returncode == 1 and "cannot write pid file" in out.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    cfg.write_text(f"[global]\nuser = {user}\n[listen]\nhttp://127.0.0.1:{busy.getsockname()[1]}\n")
    try:
        out = run_cli("-c", str(cfg), "--daemon", "--pid-file", str(work / "o.pid"))
        assert out.returncode == 1 and "cannot listen on" in out.stderr
    finally:
        busy.close()
