"""StaticFiles in a real ``orbited`` process: whole and streamed files, HEAD, 304, types, no way out."""

from __future__ import annotations

import os
import re
import socket
import time
from email.utils import formatdate

import pytest

from tests.support.procs import OrbitedProcess, free_port, scratch_dir
from tests.test_http_server import Raw, get

BIG = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4: streamed through the producer


def serve_files(engine: str):
    root = scratch_dir("static-")
    (root / "big.bin").write_bytes(BIG)
    (root / "page.html").write_text("<p>page</p>")
    (root / "app.js").write_text("var x = 1;")
    (root / "module.mjs").write_text("export const x = 1;")
    (root / "data.unknownext").write_bytes(b"\x00\x01")
    (root / "dir").mkdir()
    (root / "dir" / "index.html").write_text("<p>dir index</p>")
    (root / "empty").mkdir()
    os.utime(root / "page.html", (1_000_000_000, 1_000_000_000))
    port = free_port()
    config = f"[global]\nhttp.engine = {engine}\n[listen]\nhttp://127.0.0.1:{port}\n[static]\nfiles = {root}\n"
    with OrbitedProcess(config, wait_for=port) as orbited:
        orbited.port = port
        orbited.root = root
        yield orbited


@pytest.fixture(scope="module")
def site():
    yield from serve_files("lean")


@pytest.fixture(scope="module")
def twisted_site():
    """The same files on [global] http.engine = twisted: StaticFiles serves both engines."""
    yield from serve_files("twisted")


def test_a_large_file_streams_whole_on_a_kept_connection(site):
    client = Raw(site.port)
    client.send(get("/files/big.bin") + get("/files/page.html"))
    status, headers, body = client.response()
    assert status == 200 and body == BIG and headers[b"content-length"] == str(len(BIG)).encode()
    assert headers[b"content-type"] == b"application/octet-stream"
    assert client.response()[2] == b"<p>page</p>"
    client.close()


def test_a_slow_reader_of_a_large_file_is_fine(site):
    sock = socket.create_connection(("127.0.0.1", site.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client = Raw(site.port, sock)
    client.send(get("/files/big.bin"))
    assert client.response()[2] == BIG
    client.close()


def test_head_gives_the_length_and_no_body(site):
    client = Raw(site.port)
    client.send(b"HEAD /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n" + get("/files/app.js"))
    status, headers, _ = client.response(head_only=True)
    assert status == 200 and headers[b"content-length"] == str(len(BIG)).encode()
    status, headers, body = client.response()
    assert body == b"var x = 1;" and headers[b"content-type"] == b"application/javascript; charset=utf-8"
    client.close()


def test_a_javascript_module_has_the_type_of_a_script_on_every_python(site):
    """Python 3.12 changed its own type for .mjs (application/javascript before, text/javascript
    since): the type of a file Orbited serves did not depend on the Python it runs on."""
    client = Raw(site.port)
    client.send(get("/files/module.mjs"))
    _, headers, body = client.response()
    assert body == b"export const x = 1;" and headers[b"content-type"] == b"application/javascript; charset=utf-8"
    client.close()


def test_head_of_a_redirect_has_the_length_of_the_get(site):
    """HEAD gets the GET's headers, Content-Length included, also when the GET's body is short."""
    client = Raw(site.port)
    client.send(get("/files/dir"))
    _, got, body = client.response()
    client.send(b"HEAD /files/dir HTTP/1.1\r\nHost: x\r\n\r\n" + get("/files/app.js"))
    status, headers, _ = client.response(head_only=True)
    assert status == 301 and headers[b"content-length"] == got[b"content-length"] == b"%d" % len(body)
    assert client.response()[2] == b"var x = 1;"
    client.close()


def _fetch_while_the_file_changes(site, change) -> tuple[dict[bytes, bytes], bytes]:
    """GET a 16 MiB file and a page behind it on one connection, not reading until the server has
    sent what the kernel takes (well under 16 MiB), then ``change(path)``; returns the head of the
    first response and every byte after it until the server closes or goes quiet."""
    path = site.root / "changing.bin"
    path.write_bytes(b"A" * (16 << 20))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", site.port))
    sock.sendall(get("/files/changing.bin") + get("/files/page.html"))
    time.sleep(0.5)
    change(path)
    sock.settimeout(3)
    received = b""
    try:
        while chunk := sock.recv(1 << 20):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    sock.close()
    head, _, rest = received.partition(b"\r\n\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    return headers, rest


@pytest.mark.parametrize("engine", ["site", "twisted_site"])
def test_a_file_that_grows_while_it_is_sent_is_sent_to_its_content_length(request, engine):
    """FileSender read to EOF: bytes appended while a large file was streamed went out after the
    Content-Length, and the client read them as the next response on the connection."""
    def grow(path):
        with open(path, "ab") as handle:
            handle.write(b"EXTRA" * 1000)

    headers, rest = _fetch_while_the_file_changes(request.getfixturevalue(engine), grow)
    assert headers[b"content-length"] == b"%d" % (16 << 20)
    body, after = rest[:16 << 20], rest[16 << 20:]
    assert body == b"A" * (16 << 20)
    assert after.startswith(b"HTTP/1.1 200 OK\r\n") and after.endswith(b"<p>page</p>")  # the next response


@pytest.mark.parametrize("engine", ["site", "twisted_site"])
def test_a_file_that_shrinks_while_it_is_sent_ends_the_connection(request, engine):
    """A file truncated while it was streamed ended its response short and kept the connection:
    the client took the next response for the rest of the body and waited for http.timeout."""
    site = request.getfixturevalue(engine)
    started = time.monotonic()
    headers, rest = _fetch_while_the_file_changes(site, lambda path: os.truncate(path, 8 << 20))
    assert headers[b"content-length"] == b"%d" % (16 << 20)
    assert rest == b"A" * (8 << 20)  # the file's bytes and nothing else, then the connection ends
    assert time.monotonic() - started < 3
    assert "shrank from 16777216 bytes while it was sent" in site.log()
    # the client named as every line names one, port and all (orbited/addresses.py)
    assert re.search(r"127\.0\.0\.1:\d+: \S+ shrank from", site.log()), site.log()


def test_if_modified_since_is_304(site):
    client = Raw(site.port)
    client.send(get("/files/page.html"))
    _, headers, _ = client.response()
    assert headers[b"last-modified"] == formatdate(1_000_000_000, usegmt=True).encode()
    client.send(get("/files/page.html", f"If-Modified-Since: {formatdate(1_000_000_000, usegmt=True)}\r\n"))
    status, headers, body = client.response()
    assert status == 304 and body == b"" and b"content-length" not in headers
    client.send(get("/files/page.html", f"If-Modified-Since: {formatdate(999_999_999, usegmt=True)}\r\n"))
    assert client.response()[0] == 200
    client.close()


@pytest.mark.parametrize("engine", ["site", "twisted_site"])
def test_conditional_headers_follow_rfc_9110_and_a_bad_date_is_ignored(request, engine):
    """twisted.web's stringToDatetime raises IndexError for an empty date, and setLastModified
    (twisted.web's and the lean Request's) let it through: 'If-Modified-Since: ;' was a 500 with
    a traceback in the log, for any client.  And If-None-Match, which no ETag here can match
    but '*', must make If-Modified-Since ignored (RFC 9110 13.1.3): it gave a 304."""
    site = request.getfixturevalue(engine)
    when = formatdate(1_000_000_000, usegmt=True)
    client = Raw(site.port)
    for extra, status in [("If-Modified-Since: ;\r\n", 200), ("If-Modified-Since: ;x\r\n", 200),
                          ("If-Modified-Since: garbage\r\n", 200), (f"If-Modified-Since: {when}\r\n", 304),
                          (f'If-None-Match: "v1"\r\nIf-Modified-Since: {when}\r\n', 200),
                          (f"If-None-Match: *\r\nIf-Modified-Since: {when}\r\n", 304),
                          ("If-None-Match: *\r\n", 304)]:
        client.send(get("/files/page.html", extra))
        got, headers, body = client.response()
        assert (extra, got) == (extra, status)
        assert body == (b"<p>page</p>" if status == 200 else b"")
        assert headers[b"last-modified"] == when.encode()
    client.close()
    assert "Traceback" not in site.log()


@pytest.mark.parametrize("engine", ["site", "twisted_site"])
def test_no_server_header_names_the_software_on_either_engine(request, engine):
    """twisted.web put 'Server: TwistedWeb/<version>' on every answer of http.engine = twisted,
    where the lean engine sends none so as not to tell scanners the version."""
    site = request.getfixturevalue(engine)
    client = Raw(site.port)
    client.send(get("/files/page.html") + get("/files/nothing") + get("/system/status") + get("/nowhere"))
    for _ in range(4):
        status, headers, _ = client.response()
        assert b"server" not in headers, (status, headers)
    client.close()


@pytest.mark.parametrize("engine", ["site", "twisted_site"])
def test_the_bundled_library_is_revalidated_and_an_operators_files_are_left_to_the_browser(request, engine):
    """Orbited.js must be the one the running server speaks: without Cache-Control a browser keeps
    it by heuristic freshness (days, for a file installed weeks ago) and runs the old library
    after an upgrade.  no-cache: every use asks, and a current copy costs a 304."""
    site = request.getfixturevalue(engine)
    client = Raw(site.port)
    client.send(get("/static/Orbited.js"))
    status, headers, body = client.response()
    assert status == 200 and b"TCPSocket" in body
    assert headers[b"cache-control"] == b"no-cache"
    client.send(get("/static/Orbited.js", f"If-Modified-Since: {headers[b'last-modified'].decode()}\r\n"))
    status, headers, _ = client.response()
    assert status == 304 and headers[b"cache-control"] == b"no-cache"
    client.send(get("/files/page.html") + get("/static/nothing.js"))
    assert b"cache-control" not in client.response()[1]  # the operator's files: their own policy
    status, headers, _ = client.response()
    assert status == 404 and b"cache-control" not in headers
    client.close()


def test_types_indexes_listings_and_redirects(site):
    client = Raw(site.port)
    client.send(get("/files/page.html") + get("/files/data.unknownext") + get("/files/dir/") + get("/files/empty/")
                + get("/files/dir?x=1") + get("/files/page.html/"))
    assert client.response()[1][b"content-type"] == b"text/html; charset=utf-8"
    assert client.response()[1][b"content-type"] == b"application/octet-stream"
    assert client.response()[2] == b"<p>dir index</p>"
    assert client.response()[0] == 404  # a directory without index.html: no listing
    status, headers, _ = client.response()
    assert status == 301 and headers[b"location"] == b"/files/dir/?x=1"
    assert client.response()[0] == 404  # a file is not a directory
    client.close()


@pytest.mark.parametrize("target", [
    "/files/../setup.py", "/files/%2e%2e/x", "/files/dir/%2e%2e/%2e%2e/x", "/files/dir/..%2f..%2fx",
    "/files/.%2fpage.html", "/files//page.html", "/files/dir/%00", "/files/%5c..%5cx", "/files/\\..\\x",
])
def test_nothing_outside_the_directory(site, target):
    client = Raw(site.port)
    client.send(get(target))
    assert client.response()[0] in (400, 404)
    client.close()


def test_a_client_that_stops_reading_a_large_file_is_cut_off_and_a_slow_one_is_not():
    """No time limit applies while a response is in progress (a long-poll may rightly be silent),
    so a client that stopped reading a large file held its connection and the open file for ever."""
    import time

    root = scratch_dir("static-stall-")
    (root / "huge.bin").write_bytes(b"\0" * (32 << 20))  # more than the kernel's buffers take
    slow_body = bytes(range(256)) * 6144  # 1.5 MiB, read over about 3 s: longer than http.timeout
    (root / "slow.bin").write_bytes(slow_body)
    port = free_port()
    config = f"[global]\nhttp.timeout = 2\n[listen]\nhttp://127.0.0.1:{port}\n[static]\nfiles = {root}\n"
    with OrbitedProcess(config, wait_for=port) as orbited:
        baseline = orbited.status()["process"]["open_files"]
        stalled = []
        for _ in range(3):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(get("/files/huge.bin"))
            stalled.append(sock)
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        slow.settimeout(10)
        slow.sendall(get("/files/slow.bin"))
        received, paced = b"", 0
        started = time.monotonic()
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < len(slow_body):
            chunk = slow.recv(128 << 10)
            assert chunk, "the slow reader was cut off"
            received += chunk
            if len(received) - paced >= 128 << 10:
                paced = len(received)
                time.sleep(0.25)  # about 0.5 MiB a second at most
        assert time.monotonic() - started > 2.5  # it took longer than http.timeout
        assert received.partition(b"\r\n\r\n")[2] == slow_body
        slow.close()
        deadline = time.monotonic() + 15
        while orbited.log().count("read nothing of") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert orbited.log().count("read nothing of") == 3, orbited.log()
        for sock in stalled:
            sock.settimeout(10)
            got = 0
            try:
                while chunk := sock.recv(1 << 20):
                    got += len(chunk)
            except ConnectionResetError:
                pass
            assert got < 32 << 20  # cut off, not finished
            sock.close()
        assert orbited.status()["process"]["open_files"] <= baseline
        assert "Traceback" not in orbited.log()
