"""The config parser: 0.7 files load unchanged; every problem names FILE:LINE."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from orbited import logs
from orbited.config import (
    GLOBAL_KEYS,
    AccessRule,
    ConfigError,
    Listener,
    changes_needing_restart,
    load_file,
    load_text,
    parse_listen_line,
    quickstart,
    split_host_port,
)
from orbited.inifile import parse_ini
from tests.support.tlsfiles import make_cert

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(text, "x.cfg")
    return [str(p) for p in caught.value.problems]


def test_lines_end_at_line_feeds_only_as_configparser_reads_them():
    """str.splitlines also split at a form feed, U+2028 or U+0085: every later FILE:LINE was off
    by one, and the tail of a comment became a config line."""
    _sections, problems = parse_ini("[global]\n\f\n# a comment\u2028nel\n# another\x85tail\r\nbad line\n",
                                   "x.cfg")
    assert [str(p) for p in problems] == ["x.cfg:5: expected 'key = value' in [global], got 'bad line'"]


def test_a_value_may_hold_the_other_delimiter():
    """ConfigParser splits at the first '=' or ':', whichever comes first."""
    sections, problems = parse_ini("[global]\nsockjs.client_url: https://x/s.js?v=1\nformat = %(a)s: %(b)s\n", "x")
    assert problems == []
    assert sections["global"].as_dict() == {"sockjs.client_url": "https://x/s.js?v=1", "format": "%(a)s: %(b)s"}


def test_a_07_file_with_a_latin1_byte_or_a_bom_loads(tmp_path):
    """0.7 read its file as bytes: a Latin-1 comment was refused here 'at line 0'."""
    latin1 = tmp_path / "latin1.cfg"
    latin1.write_bytes(b"[global]\n# caf\xe9 de Fran\xe7ois\nsession.ping_interval = 10\n")
    config = load_file(str(latin1))
    assert config.settings["session.ping_interval"] == 10.0
    assert [str(p) for p in config.warnings] == [
        (f"{latin1}:2: warning: not UTF-8 (byte 0xe9): the file is read as Latin-1, as Orbited 0.7 read it; save it "
        "as UTF-8")]
    bom = tmp_path / "bom.cfg"
    bom.write_bytes(b"\xef\xbb\xbf[global]\r\nsession.ping_interval = 12\r\n")
    assert load_file(str(bom)).settings["session.ping_interval"] == 12.0


def test_orbited_07_example_loads_unchanged():
    config = load_file(str(DATA / "orbited-0.7.cfg"))
    assert config.settings["reactor"] == "select"
    assert config.settings["proxy.enabled"] is True
    assert config.settings["session.ping_interval"] == 40
    assert config.settings["session.ping_timeout"] == 30
    assert config.listeners == (Listener("http", "", 8000, config.listeners[0].line),)
    rules = {(r.source, r.host, r.port) for r in config.access}
    assert rules == {("localhost:8000", "irc.freenode.net", 6667), ("*", "localhost", 4747)}
    assert logs.logging_form(config.sections) == "stdlib"
    assert not [w for w in config.warnings if w.fatal]


def test_rails_plugin_config_loads():
    config = load_file(str(DATA / "rails-plugin.cfg"))
    assert [(lst.scheme, lst.port) for lst in config.listeners] == [("http", 8000), ("stomp", 61613)]
    assert config.access[0].source == "localhost:8000"
    assert logs.logging_form(config.sections) == "default"


def test_legacy_logging_form_loads_and_configures(tmp_path, monkeypatch):
    config = load_file(str(DATA / "legacy-logging.cfg"))
    assert logs.logging_form(config.sections) == "legacy"
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        assert logs.configure_logging(config.sections, config.path) == []
        logging.getLogger("orbited.test").warning("legacy warn line")
        logging.getLogger("orbited.test").error("legacy error line")
        for handler in root.handlers:
            handler.flush()
        assert "legacy warn line" in (tmp_path / "debug.log").read_text()
        assert "legacy error line" in (tmp_path / "error.log").read_text()
        assert "legacy warn line" not in (tmp_path / "error.log").read_text()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = saved


def test_stdlib_logging_form_configures(tmp_path, monkeypatch):
    config = load_file(str(DATA / "orbited-0.7.cfg"))
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        assert logs.configure_logging(config.sections, config.path) == []
        logging.getLogger("orbited.x").warning("to the errors file")
        for handler in logging.getLogger("orbited").handlers:
            handler.flush()
        assert "to the errors file" in (tmp_path / "error.log").read_text()
        # 0.7.11's connections.log, on a logger nothing logs under now, gets the proxy's lines
        logging.getLogger("orbited.proxy").info("ws 1.2.3.4:5 -> 127.0.0.1:61613 connected")
        for handler in logging.getLogger("orbited.proxy").handlers:
            handler.flush()
        assert "-> 127.0.0.1:61613 connected" in (tmp_path / "connections.log").read_text()
        assert "-> 127.0.0.1:61613 connected" not in (tmp_path / "error.log").read_text()
        # what a client sent (a close reason) neither forges a line nor floods the file; a traceback keeps its lines
        logging.getLogger("orbited.x").warning("closed: %s", "bye\n2026-11-29 CRITICAL forged" + "A" * 5000)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("orbited.x").exception("failed")
        for handler in logging.getLogger("orbited").handlers:
            handler.flush()
        lines = (tmp_path / "error.log").read_text().splitlines()
        [closed] = [line for line in lines if "closed: bye" in line]
        assert "bye\\n2026-11-29 CRITICAL forged" in closed and closed.endswith("... (3039 more characters)")
        assert not any(line.startswith("2026-11-29 CRITICAL") for line in lines)
        assert "Traceback (most recent call last):" in lines and "ValueError: boom" in lines
        # SIGHUP after logrotate: the handlers (mode 'w' in this file) reopen at their paths, appending
        (tmp_path / "error.log").rename(tmp_path / "error.log.1")
        reopened, problems = logs.reopen_log_files()
        assert problems == []
        assert {str(tmp_path / "connections.log"), str(tmp_path / "error.log")} <= set(reopened)
        logging.getLogger("orbited.x").warning("after the rotation")
        logs.reopen_log_files()  # no rotation this time: nothing is truncated
        for handler in logging.getLogger("orbited").handlers:
            handler.flush()
        assert "after the rotation" in (tmp_path / "error.log").read_text()
        assert "after the rotation" not in (tmp_path / "error.log.1").read_text()
    finally:
        for name in ("", "orbited", *logs.LOGGERS_OF_0_7, *{n for ns in logs.LOGGERS_OF_0_7.values() for n in ns}):
            for handler in logging.getLogger(name).handlers[:]:
                handler.close()
                logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(logging.NOTSET)
        root.handlers[:], root.level = saved


def test_unwritable_log_file_is_a_problem_not_a_crash(tmp_path):
    text = (DATA / "orbited-0.7.cfg").read_text().replace("'error.log'", f"'{tmp_path}/no/such/dir/e.log'")
    config = load_text(text, "x.cfg")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        problems = logs.configure_logging(config.sections, config.path)
    finally:
        root.handlers[:], root.level = saved
    assert len(problems) == 1 and str(problems[0]).startswith("x.cfg:")
    assert "logging config failed" in problems[0].message


def test_check_log_files_reports_unwritable_files_and_touches_nothing(tmp_path, monkeypatch):
    existing = tmp_path / "x.log"
    existing.write_text("kept\n")
    config = load_text(
        "[loggers]\nkeys = root\n[handlers]\nkeys = a, b\n[logger_root]\nhandlers = a, b\n"
        f"[handler_a]\nclass = FileHandler\nargs = ('{existing}', 'w')\n"
        f"[handler_b]\nclass = logging.handlers.RotatingFileHandler\nargs = ('{tmp_path}/new.log',)\n", "x.cfg")
    assert logs.check_log_files(config.sections, config.path) == []
    root = logging.getLogger()
    before = root.handlers[:], root.level, dict(logging.Logger.manager.loggerDict)
    monkeypatch.setattr(logs.os, "access", lambda path, mode: False)  # as a user who may not write there
    user = __import__("pwd").getpwuid(os.geteuid()).pw_name
    assert [str(p) for p in logs.check_log_files(config.sections, config.path)] == [
        f"x.cfg:9: [handler_a] log file '{existing}' is not writable by user {user}",
        f"x.cfg:12: [handler_b] log file '{tmp_path}/new.log': directory '{tmp_path}' is not writable by user {user}",
    ]
    assert (root.handlers[:], root.level, dict(logging.Logger.manager.loggerDict)) == before
    assert existing.read_text() == "kept\n" and not (tmp_path / "new.log").exists()


def test_shipped_configs_are_valid_and_safe():
    for name in ("orbited.cfg", "demo.cfg"):
        config = load_file(str(REPO / "etc" / name))
        assert not [w for w in config.warnings if w.fatal]
        for rule in config.access:
            # nothing but this machine is reachable through the shipped files
            assert rule.host in ("localhost", "127.0.0.1"), rule
    shipped = load_file(str(REPO / "etc" / "orbited.cfg"))
    assert {(r.host, r.port) for r in shipped.access} <= {("localhost", 61613), ("127.0.0.1", 61613)}
    # a broker without users takes any login, and every HTTP port serves it (/stomp, /ws): loopback
    if not any(key.startswith("user.") for key in shipped.section("stomp").as_dict()):
        assert {listener.host for listener in shipped.listeners} == {"127.0.0.1"}
    # `make run`'s broker takes any login and its test servers serve any page: all on loopback
    demo = load_file(str(REPO / "etc" / "demo.cfg"))
    assert {listener.host for listener in demo.listeners} == {"127.0.0.1"}


def test_quickstart_matches_07():
    config = quickstart()
    assert [(lst.scheme, lst.port) for lst in config.listeners] == [("http", 8000), ("stomp", 61613)]
    assert [(r.source, r.host, r.port) for r in config.access] == [("*", "localhost", 61613)]
    # its broker takes any login, also through /stomp and /ws on the HTTP port: all on loopback,
    # as `make run`'s (HTTP on every interface handed the broker to the whole network)
    assert {listener.host for listener in config.listeners} == {"127.0.0.1"}


def test_defaults_without_sections():
    config = load_text("", "empty.cfg")
    for key in GLOBAL_KEYS:
        assert config.settings[key.name] == key.default


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[global]\nsession.ping_interval = soon\n", "x.cfg:2: [global] session.ping_interval: 'soon' is not a number"),
        ("[global]\nproxy.enabled = maybe\n", "x.cfg:2: [global] proxy.enabled: 'maybe' is not a boolean"),
        ("[global]\nproxy.connect_timeout = -1\n", "x.cfg:2: [global] proxy.connect_timeout: '-1' must be a positive"),
        ("[global]\nworkers.timeout = -5\n", "x.cfg:2: [global] workers.timeout: '-5' must be 0 or a positive number"),
        ("[global]\nworkers.timeout = never\n", "x.cfg:2: [global] workers.timeout: 'never' is not a number"),
        ("[global]\nworkers.timeout = inf\n", "x.cfg:2: [global] workers.timeout: 'inf' must be 0 or a positive"),
        ("[global]\nreactor = turbo\n", "x.cfg:2: [global] reactor: 'turbo' is not one of"),
        ("[global]\nuser = no-such-user-here\n", "x.cfg:2: [global] user: no such user 'no-such-user-here'"),
        ("[listen]\nftp://:21\n", "x.cfg:2: [listen] unknown listen scheme 'ftp://'"),
        ("[listen]\nhttp://:99999\n", "x.cfg:2: [listen] port '99999' is not a number"),
        ("[listen]\nhttp://::1:80\n", "x.cfg:2: [listen] '::1:80': write IPv6 addresses in brackets"),
        # IPv6 forms that passed --check and then could not be bound (or could never be reached)
        ("[listen]\nhttp://[::1%lo]:80\n",
         "x.cfg:2: [listen] '::1%lo': a zone id (%lo) belongs to a link-local address (fe80::/10) only; write [::1]"),
        ("[listen]\nhttp://[fe80::1%25lo]:80\n",
         "x.cfg:2: [listen] 'fe80::1%25lo': this machine has no interface '25lo' (a URL writes '%' as '%25'"),
        ("[listen]\nhttp://[fe80::1%no-such-if]:80\n",
         "x.cfg:2: [listen] 'fe80::1%no-such-if': this machine has no interface 'no-such-if'"),
        ("[listen]\nhttp://[::1]:8000\nhttp://[0:0::1]:8000\n",
         "x.cfg:3: [listen] http://[::1]:8000 repeats the address of line 2"),
        ("[listen]\nhttp://[::1]:\n", "x.cfg:2: [listen] '[::1]:' has ':' but no port"),
        ("[listen]\nhttp://[::1]:\u0668\u0660\n", "x.cfg:2: [listen] port '\u0668\u0660' is not a number from 0 to 65535"),
        ("[listen]\nhttp://127.0.0.1:\u00b2\n", "x.cfg:2: [listen] port '\u00b2' is not a number from 0 to 65535"),
        ("[access]\n::1:8000 -> 127.0.0.1:7\n",
         "x.cfg:2: [access] source '::1:8000': a browser's Host header writes an IPv6 address in brackets"),
        ("[access]\n* -> [::1%lo]:7\n", "x.cfg:2: [access] '::1%lo': a zone id (%lo) belongs to a link-local"),
        ("[access]\n* -> [fe80::1%x$y]:7\n", "x.cfg:2: [access] 'fe80::1%x$y': 'x$y' is not an interface name"),
        ("[listen]\nhttp://example.com:80\n", "x.cfg:2: [listen] 'example.com' is not an interface address"),
        ("[listen]\nhttp://:8000\nhttp://:8000\n", "x.cfg:3: [listen] http://:8000 repeats the address of line 2"),
        ("[listen]\nhttps://:8443\n", "x.cfg:2: [listen] https:// needs [ssl] key and crt"),
        ("[access]\n* -> *\n", "x.cfg:2: [access] illegal [access] entry: wildcard destination"),
        ("[access]\n* -> host:port\n", "x.cfg:2: [access] port 'port' is not a number"),
        ("[access]\n* -> backend..example:80\n",
         "x.cfg:2: [access] 'backend..example' is not a host name (a label is empty"),
        (f"[access]\n* -> b{'ü' * 70}.example:80\n", "x.cfg:2: [access] 'b" + "ü" * 70 + ".example' is not a host name"),
        # hosts no handshake can name: a rule for them would never match
        ("[access]\n* -> *.example.com:80\n", "x.cfg:2: [access] illegal [access] entry: wildcard destination"),
        # sizes where 0 read as 'no limit' (ws.max_message_size) or broke every upload (http.max_body)
        ("[global]\nws.max_message_size = 0\n", "x.cfg:2: [global] ws.max_message_size: '0' must be at least 1"),
        ("[global]\nhttp.max_body = 0\n", "x.cfg:2: [global] http.max_body: '0' must be at least 1"),
        ("[global]\nsession.max_buffer = 0\n", "x.cfg:2: [global] session.max_buffer: '0' must be at least 1"),
        ("[global]\nsockjs.response_limit = 0\n", "x.cfg:2: [global] sockjs.response_limit: '0' must be at least 1"),
        # origins that no page's Origin header could ever equal
        ("[global]\norigins = app.example.com\n",
         ("x.cfg:2: [global] origins: 'app.example.com' is not an origin: write scheme://host[:port], as "
         "'https://app.example.com'")),
        ("[global]\norigins = https://ok.example *.example.com\n", "x.cfg:2: [global] origins: '*.example.com' is not"),
        ("[global]\norigins = https://*.example.com\n", "x.cfg:2: [global] origins: 'https://*.example.com' is not"),
        ("[access]\n* -> exa$mple:80\n", "x.cfg:2: [access] 'exa$mple' is not a host name (only letters, digits"),
        ("[access]\n* -> local host:80\n", "x.cfg:2: [access] 'local host' is not a host name (only letters"),
        ("[access]\n* -> bücher.example:80\n",
         ("x.cfg:2: [access] 'bücher.example' is not a host name a TCPSocket can send (not ASCII): write it as "
          "'xn--bcher-kva.example'")),
        ("[access]\nlocalhost:8000 localhost:61613\n", "x.cfg:2: [access] lines look like 'SOURCE -> HOST:PORT'"),
        ("[ssl]\nkey = /nonexistent.key\ncrt = /nonexistent.crt\n", "x.cfg:2: [ssl] key: no such file"),
        ("[static]\nfiles = /nonexistent/dir\n", "x.cfg:2: [static] files: no such file or directory"),
        ("[static]\nws = /tmp\n", "x.cfg:2: [static] '/ws' is served by Orbited itself"),
        ("[global]\njust some words\n", "x.cfg:2: expected 'key = value' in [global]"),
        ("proxy.enabled = 1\n", "x.cfg:1: 'proxy.enabled = 1' is outside any [section]"),
        ("[loggers]\nkeys = root\n", "x.cfg:1: logging.fileConfig form needs a [handlers] section"),
        ("[logging]\nenabled.default = info,loud\n", "x.cfg:2: [logging] unknown level 'loud'"),
    ],
)
def test_each_kind_of_error_names_file_and_line(text, expected):
    found = problems_of(text)
    assert any(p.startswith(expected) for p in found), found


def test_a_running_process_leaves_the_ssl_files_to_the_tls_loader(tmp_path):
    """A reload (and a worker) reads the file with files_must_exist=False: a missing or hidden
    [ssl] file then keeps the running certificate (tests/test_daemon.py) instead of refusing the
    whole file, [access] included.  Start-up and --check still name it on its line."""
    cfg = tmp_path / "o.cfg"
    cfg.write_text("[listen]\nhttps://:1\n[ssl]\nkey = /nonexistent.key\ncrt = /nonexistent.crt\n")
    with pytest.raises(ConfigError):
        load_file(str(cfg))
    assert load_file(str(cfg), files_must_exist=False).tls.key == "/nonexistent.key"


@pytest.mark.parametrize("text, value", [("0", 0.0), ("0.0", 0.0), ("4", 4.0), ("2.5", 2.5), ("1e1", 10.0)])
def test_workers_timeout_takes_zero_for_never_and_any_positive_number(text, value):
    assert load_text(f"[global]\nworkers.timeout = {text}\n", "x.cfg").settings["workers.timeout"] == value


def test_every_error_is_reported_not_just_the_first():
    found = problems_of("[global]\nsession.ping_timeout = x\n[listen]\nftp://:1\n[access]\n* -> *\n")
    assert [p.split(":")[1] for p in found] == ["2", "4", "6"]


def test_unknown_keys_and_sections_are_warnings_with_lines():
    config = load_text("[global]\nproxy.enabled = 1\nfancy = 3\n[extras]\na = b\n", "x.cfg")
    warnings = [str(w) for w in config.warnings]
    assert "x.cfg:3: warning: unknown key 'fancy' in [global] is ignored" in warnings
    assert "x.cfg:4: warning: unknown section [extras] is ignored" in warnings


def test_comments_and_hash_in_values():
    config = load_text("[global]\n# a comment\nsession.ping_interval = 12 # trailing\n; semicolon\n", "x.cfg")
    assert config.settings["session.ping_interval"] == 12
    sections, problems = parse_ini("[a]\nurl = http://x/#frag\n", "x.cfg")
    assert sections["a"].get("url").value == "http://x/#frag" and not problems


def test_a_reload_takes_a_listener_whose_interface_is_gone():
    """Start-up and --check name a zone's missing interface; a reload (SIGHUP) binds nothing, and
    an interface gone since (a VPN down) must not refuse that reload's [access] rules."""
    text = "[listen]\nhttp://[fe80::1%no-such-if]:80\n[access]\n* -> 127.0.0.1:7\n"
    assert load_text(text, "x.cfg", files_must_exist=False).listeners[0].host == "fe80::1%no-such-if"


def test_an_access_rule_with_ipv6_at_both_ends_is_not_a_section_header():
    """'[::1] -> [::1]' starts with '[' and ends with ']': it was read as a section named
    '::1] -> [::1', which took the rules after it along (ignored, with one warning)."""
    config = load_text("[access]\n[::1] -> [::1]\n* -> 127.0.0.1:7\n", "x.cfg")
    assert config.access == (AccessRule("[::1]", "::1", 80, 2), AccessRule("*", "127.0.0.1", 7, 3))
    assert not config.warnings


def test_listen_forms():
    assert parse_listen_line("http://:8000") == Listener("http", "", 8000)
    assert parse_listen_line("http://127.0.0.1:8000") == Listener("http", "127.0.0.1", 8000)
    assert parse_listen_line("http://[::1]:8000") == Listener("http", "::1", 8000)
    assert parse_listen_line("http://[0:0:0:0:0:0:0:1]:8000") == Listener("http", "::1", 8000)
    assert parse_listen_line("http://[FE80::1%lo]:8000") == Listener("http", "fe80::1%lo", 8000)  # one spelling
    assert parse_listen_line("http://localhost") == Listener("http", "127.0.0.1", 80)
    assert parse_listen_line("stomp://:61613 /etc/morbid.cfg").option == "/etc/morbid.cfg"
    assert parse_listen_line("echo://127.0.0.1:7000").scheme == "echo"
    with pytest.raises(ValueError):
        parse_listen_line("echo://127.0.0.1")  # a test server needs a port


def test_legacy_morbid_path_is_a_warning():
    config = load_text("[listen]\nstomp://:61613 /etc/morbid.cfg\n", "x.cfg")
    assert any("morbid config '/etc/morbid.cfg' is ignored" in str(w) for w in config.warnings)


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "site").mkdir()
    cfg = tmp_path / "o.cfg"
    cfg.write_text("[static]\nINDEX = site\n")
    assert load_file(str(cfg)).static == (("", str(tmp_path / "site")),)


def test_missing_file_is_a_problem():
    with pytest.raises(ConfigError) as caught:
        load_file("/nonexistent/orbited.cfg")
    assert str(caught.value.problems[0]).startswith("/nonexistent/orbited.cfg:0: cannot read")


@given(st.text(max_size=400))
def test_parser_never_raises_on_any_text(text):
    try:
        load_text(text, "fuzz.cfg")
    except ConfigError as exc:
        assert all(str(p).startswith("fuzz.cfg:") for p in exc.problems)


@given(st.sampled_from(["", "localhost", "10.0.0.1", "[::1]", "[fe80::1]"]), st.integers(0, 65535))
def test_split_host_port_round_trip(host, port):
    text = f"{host}:{port}"
    parsed_host, parsed_port = split_host_port(text, None)
    assert parsed_port == port and parsed_host == host.strip("[]")


def test_docs_describe_every_global_key():
    from orbited.docs import render

    reference = (REPO / "docs" / "configuration.md").read_text()
    assert render(reference) == reference, "docs/configuration.md is stale: run `make docs`"
    for key in GLOBAL_KEYS:
        assert f"`{key.name}`" in reference, key.name


def test_docs_describe_every_stomp_key():
    from orbited.docs import STOMP_BEGIN, render_stomp
    from orbited.stomp.settings import STOMP_KEYS

    reference = (REPO / "docs" / "stomp.md").read_text()
    assert STOMP_BEGIN in reference
    assert render_stomp(reference) == reference, "docs/stomp.md is stale: run `make docs`"
    for key in STOMP_KEYS:
        assert f"| `{key.name}` |" in reference, key.name


@pytest.mark.parametrize(("reactor", "missing"), [("epoll", "epoll"), ("twisted-epoll", "epoll"),
                                                  ("kqueue", "kqueue")])
def test_a_reactor_the_platform_lacks_is_a_warning_and_the_default(monkeypatch, reactor, missing):
    import select

    monkeypatch.delattr(select, missing, raising=False)
    config = load_text(f"[global]\nreactor = {reactor}\n", "x.cfg")
    assert config.settings["reactor"] is None
    assert f"x.cfg:2: warning: reactor '{reactor}' is not available here; using the default" in [
        str(w) for w in config.warnings]


def test_autobahn_client_faults_are_info_and_its_other_warnings_stay_warnings():
    from twisted.logger import LogLevel

    twisted, autobahn = [], []
    router = logs.TwistedLogRouter(twisted.append, autobahn.append)
    namespace = "autobahn.websocket.protocol.WebSocketProtocol"
    router({"log_namespace": namespace, "log_level": LogLevel.warn,
            "log_format": 'failing WebSocket connection (code={code}): "{reason}"', "code": 1002, "reason": "x"})
    router({"log_namespace": namespace, "log_level": LogLevel.warn,
            "log_format": "Unexpected exception in onConnect ['{err.value}']"})
    router({"log_namespace": "twisted.internet.base", "log_level": LogLevel.warn, "log_format": "a"})
    assert [e["log_level"] for e in autobahn] == [LogLevel.info, LogLevel.warn]
    assert autobahn[0]["code"] == 1002
    assert [e["log_format"] for e in twisted] == ["a"]


def test_connections_closed_at_accept_for_want_of_descriptors_become_one_tally():
    from twisted.logger import LogLevel

    twisted, tallied = [], []
    router = logs.TwistedLogRouter(twisted.append, None, out_of_files=lambda: tallied.append(1))
    namespace = "twisted.internet.tcp.Port"
    for form in ("EMFILE encountered; releasing reserved file descriptor.", logs.ACCEPT_EMFILE_CLOSED,
                 logs.ACCEPT_EMFILE_CLOSED, "Re-reserving EMFILE recovery file descriptor.", logs.ACCEPT_FAILED,
                 "other"):
        router({"log_namespace": namespace, "log_level": LogLevel.info, "log_format": form})
    assert len(tallied) == 3 and [e["log_format"] for e in twisted] == ["other"]


def test_a_tally_logs_the_first_at_once_then_a_count_per_interval(caplog):
    clock = Clock()
    tally = logs.Tally(logging.getLogger("orbited.t"), "first", "%d more", interval=10, call_later=clock.callLater)
    with caplog.at_level(logging.WARNING, "orbited.t"):
        for _ in range(5):
            tally()
        clock.advance(10)
        tally()
        clock.advance(10)
        clock.advance(10)  # a quiet interval: nothing to report, and the next one starts afresh
        tally()
    assert [r.getMessage() for r in caplog.records] == ["first", "4 more", "1 more", "first"]


def test_a_tally_for_what_clients_cause_logs_at_info_with_the_first_ones_details(caplog):
    clock = Clock()
    tally = logs.Tally(logging.getLogger("orbited.t"), "with %s: %s", "%d more", call_later=clock.callLater,
                       level=logging.INFO)
    with caplog.at_level(logging.INFO, "orbited.t"):
        tally("1.2.3.4:5", "100%")
        tally("6.7.8.9:1", "other")
        clock.advance(10)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("INFO", "with 1.2.3.4:5: 100%"),
                                                                        ("INFO", "1 more")]


# --- what a reload (SIGHUP) does not apply


BASE = "[global]\nproxy.connect_timeout = 10\n[listen]\nhttp://127.0.0.1:8000\n[access]\n* -> localhost:61613\n"


def test_a_reload_names_what_it_does_not_apply(tmp_path: Path):
    (tmp_path / "site").mkdir()
    key, crt = make_cert(tmp_path)
    running = load_text(BASE)
    assert changes_needing_restart(running, load_text(BASE)) == []
    # what a reload applies: [access] and origins; a reordered [listen] is the same listeners
    applied = load_text("[global]\norigins = https://app.example.com\nproxy.connect_timeout = 10\n\n"
                        "[listen]\n\nhttp://127.0.0.1:8000\n[access]\n* -> localhost:8001\n")
    assert changes_needing_restart(running, applied) == []
    fresh = load_text(
        f"[global]\nproxy.connect_timeout = 3\nworkers = 2\n[listen]\nhttp://127.0.0.1:8000\nstomp://:61613\n"
        f"[access]\n* -> localhost:61613\n[static]\nsite = {tmp_path / 'site'}\n"
        f"[ssl]\nkey = {key}\ncrt = {crt}\n[logging]\nenabled.default = debug\n[stomp]\npublish.enabled = 0\n",
        str(tmp_path / "orbited.cfg"))
    assert changes_needing_restart(running, fresh) == [
        "proxy.connect_timeout", "workers", "[listen]", "[static]", "[ssl]", "[logging]", "[stomp]"]
    # new certificate files for a listener that already has TLS do apply
    other_key, other_crt = make_cert(tmp_path, "other")
    renewed = load_text(f"[ssl]\nkey = {other_key}\ncrt = {other_crt}\n")
    assert changes_needing_restart(load_text(f"[ssl]\nkey = {key}\ncrt = {crt}\n"), renewed) == []
