"""``orbited.cfg`` -> one typed, immutable :class:`Config`, built once and handed down.

Every Orbited 0.7 file loads without edits.  Unknown sections and keys are
warnings with ``FILE:LINE``; values that cannot work are errors with
``FILE:LINE`` and stop start-up.  Nothing here opens sockets, installs a
reactor or configures logging: it only reads text and returns values.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orbited import logs
from orbited.addresses import host_port
from orbited.inifile import Entry, Problem, Section, parse_ini
from orbited.lookup import canonical_authority, canonical_host, host_name_problem, zone_problem

DEFAULT_PATHS = ("./orbited.cfg", "/etc/orbited.cfg")

# First path segments the server itself serves; a [static] mount may not take them.
RESERVED_PATHS = ("static", "system", "ws", "sockjs", "tcp", "stomp")

TEST_SERVER_SCHEMES = ("echo", "lineecho", "rude", "announce", "monitor")
LISTEN_SCHEMES = ("http", "https", "stomp", *TEST_SERVER_SCHEMES)
DEFAULT_PORTS = {"http": 80, "https": 443, "stomp": 61613}

REACTORS = ("epoll", "poll", "select", "kqueue", "default", "twisted-epoll")
HTTP_ENGINES = ("lean", "twisted")
STATUS_MODES = ("local", "on", "off")

# Sections that belong to logging.config.fileConfig, or to the pre-0.7.11
# logging format; logs.py reads them.
LOGGING_SECTIONS = ("logging", "loggers", "handlers", "formatters", "log")
LOGGING_PREFIXES = ("logger_", "handler_", "formatter_")


class ConfigError(Exception):
    """The config cannot be used; ``problems`` holds every reason, fatal first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# --------------------------------------------------------------------------
# value parsers: each takes the text and returns a value or raises ValueError


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"'{text}' is not a boolean (use 1 or 0)")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a number") from None


def positive_number(text: str) -> float:
    value = _number(text)
    if not 0 < value < float("inf"):
        raise ValueError(f"'{text}' must be a positive number")
    return value


def non_negative_number(text: str) -> float:
    value = _number(text)
    if not 0 <= value < float("inf"):
        raise ValueError(f"'{text}' must be 0 or a positive number")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a whole number") from None
    if value < 0:
        raise ValueError(f"'{text}' must not be negative")
    return value


def worker_count(text: str) -> int:
    if text.strip().lower() == "auto":
        from orbited.workers import cpu_count

        return cpu_count()
    value = non_negative_int(text)
    if value > 64:
        raise ValueError(f"'{text}': at most 64 workers")
    return value


def positive_int(text: str) -> int:
    """A size that must be at least 1: 0 read as 'no limit' (autobahn) or 'refuse everything'."""
    value = non_negative_int(text)
    if value < 1:
        raise ValueError(f"'{text}' must be at least 1")
    return value


def origin_list(text: str) -> tuple[str, ...]:
    """[global] origins: each 'scheme://host[:port]', or '*'.  A bare host name never matched
    any page's Origin, and nothing said so."""
    from orbited.access import normalise_origin  # orbited.access imports this module

    words = word_list(text)
    for word in words:
        if word != "*" and ("*" in word or normalise_origin(word) is None):
            raise ValueError(f"'{word}' is not an origin: write scheme://host[:port], as "
                             f"'https://{word.strip('*.') or 'app.example.com'}' (no wildcards but '*' alone)")
    return words


def word_list(text: str) -> tuple[str, ...]:
    return tuple(word for word in text.replace(",", " ").split() if word)


def choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(f"'{text}' is not one of: {', '.join(options)}")
        return value

    return parse


def text_value(text: str) -> str:
    return text


@dataclass(frozen=True)
class Key:
    """One ``[global]`` key: its parser, default and the sentence docs print."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    doc: str


GLOBAL_KEYS: tuple[Key, ...] = (
    Key("proxy.enabled", parse_bool, True,
        "1 mounts the TCPSocket endpoints (/ws, /sockjs, /tcp); 0 serves only "
        "static files, /stomp and /system."),
    Key("proxy.connect_timeout", positive_number, 10.0,
        "Seconds to wait for a backend TCP connect before answering 0104. For a destination given "
        "by host name, the lookup and every address tried (one after another, in the order "
        "getaddrinfo gives them) share this time."),
    Key("proxy.lookup_cache", non_negative_number, 10.0,
        "Seconds a backend host name's addresses are remembered after a lookup; 0 looks the name "
        "up for every TCPSocket. Lookups of one name under way at once are shared either way. A "
        "name whose every address failed is looked up afresh by the next TCPSocket. The address "
        "that last took a connect is tried first."),
    Key("proxy.handshake_timeout", positive_number, 30.0,
        "Seconds a TCPSocket may stay open without sending its handshake (host:port) before it is "
        "closed with 0102; checked once a second."),
    Key("proxy.max_sessions", non_negative_int, 0,
        "Most TCPSocket sessions at once; further ones are refused with HTTP 503. "
        "0 derives the cap from the open-file limit (two descriptors a session). With workers, "
        "each process applies it to its own sessions, as each has its own open-file limit; "
        "a full worker gets no new connections."),
    Key("session.ping_interval", positive_number, 30.0,
        "Seconds of silence after which a session is probed (WebSocket ping, "
        "SockJS heartbeat, 0.7 ping packet)."),
    Key("session.ping_timeout", positive_number, 30.0,
        "Seconds a probed session may stay silent before it is closed."),
    Key("session.max_buffer", positive_int, 1048576,
        "Bytes a Comet session may hold unacknowledged for a browser before it "
        "is closed as stalled (WebSocket sessions use TCP flow control instead)."),
    Key("ws.max_message_size", positive_int, 4194304,
        "Largest WebSocket message accepted from a browser, in bytes; larger "
        "ones close the socket with 1009."),
    Key("sockjs.response_limit", positive_int, 131072,
        "Bytes a SockJS streaming response (xhr_streaming, eventsource, htmlfile) "
        "carries before it is ended and the browser opens the next one, so that "
        "the browser can free what it received."),
    Key("sockjs.cookie_needed", parse_bool, False,
        "1 sets a JSESSIONID cookie on /sockjs session requests, for load "
        "balancers that route sticky sessions by that cookie."),
    Key("sockjs.client_url", text_value,
        "https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js",
        "The sockjs-client script the /sockjs iframe page loads (iframe "
        "transports only); point it at a copy you serve to avoid the CDN."),
    Key("origins", origin_list, (),
        "Page origins allowed besides the page's own host: 'https://app.example.com', "
        "'http://localhost:3000', or '*' for any. Empty: same host as the Host "
        "header, any port. SockJS's JSONP, htmlfile and iframe requests carry no "
        "Origin header and are judged by the page their Referer names; without a "
        "Referer they are refused unless '*'."),
    Key("http.timeout", positive_number, 60.0,
        "Seconds an idle HTTP connection (between requests) is kept open; a request "
        "head must arrive whole within this time too (slowloris), a request body must "
        "keep coming, at 500 bytes/s on average after this time, and a client must read "
        "some of a static file it is sent within this time, or it is cut off."),
    Key("http.max_body", positive_int, 1048576,
        "Largest HTTP request body accepted by Comet upstream endpoints; larger "
        "ones get 413."),
    Key("http.engine", choice(HTTP_ENGINES), "lean",
        "HTTP server under the resource tree: 'lean' (orbited.http, see docs/http.md; about "
        "4x cheaper a request) or 'twisted' (twisted.web: a fallback, and the baseline the "
        "lean layer is measured and cross-checked against)."),
    Key("workers", worker_count, 0,
        "Worker processes that serve /ws, /sockjs and /tcp (0.7) TCPSocket sessions on plain http:// "
        "listeners, so that they use every core; 'auto' is one per CPU. 0: one process does everything. "
        "Every request of a /sockjs session goes to the worker its session id names, and of a /tcp "
        "session to the worker whose number its key starts with. /stomp, static files and TLS "
        "listeners stay in the main process. With workers, http:// listeners "
        "accept a connection once its first bytes are in (TCP_DEFER_ACCEPT), so that most "
        "connections go to a worker unread. A worker not heard from for 3 s (stopped, or stuck) "
        "gets no new /ws connections or /tcp sessions until it reports again; the requests of its own "
        "/sockjs and /tcp sessions still go to it. Workers' log lines are written by the main process, with its "
        "logging config, marked '[worker N]' and stamped with the time the worker logged them."),
    Key("workers.timeout", non_negative_number, 30.0,
        "Seconds a worker may go without a word to the main process (it reports every second) "
        "before the main process kills it and starts another, as gunicorn's timeout does: a "
        "worker stopped or stuck in a loop answers none of its sessions. 0: never. Less than 3 "
        "acts as 3."),
    Key("shutdown.timeout", positive_number, 5.0,
        "Seconds SIGTERM waits for sessions to close before exiting anyway."),
    Key("status", choice(STATUS_MODES), "local",
        "/system/status: 'local' answers loopback clients only, and not a request "
        "a proxy relayed (one with a Forwarded, X-Forwarded-For or X-Real-IP "
        "header: nginx on the same host connects from loopback), 'on' everyone, "
        "'off' nobody."),
    Key("reactor", choice(REACTORS), None,
        "Twisted reactor to install: epoll, poll, select or default; kqueue "
        "where the platform has it (otherwise ignored with a warning). epoll, "
        "the default where it exists, is Orbited's subclass of Twisted's that "
        "sends each loop iteration's writes at its end and takes short paths "
        "for plain TCP reads and whole sends; twisted-epoll is Twisted's own, "
        "unchanged."),
    Key("user", text_value, None,
        "Account to switch to once every socket is bound. Required when started "
        "as root."),
    Key("group", text_value, None,
        "Group to switch to (default: the user's primary group)."),
)
GLOBAL_KEY_NAMES = {key.name: key for key in GLOBAL_KEYS}


@dataclass(frozen=True)
class GlobalSettings:
    values: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @classmethod
    def defaults(cls) -> GlobalSettings:
        return cls({key.name: key.default for key in GLOBAL_KEYS})


@dataclass(frozen=True)
class Listener:
    """One ``[listen]`` line."""

    scheme: str
    host: str  # '' means every interface
    port: int
    line: int = 0
    option: str = ""  # stomp://: the legacy morbid config path

    def __str__(self) -> str:
        return f"{self.scheme}://{host_port(self.host, self.port)}"


@dataclass(frozen=True)
class AccessRule:
    """``SOURCE -> HOST:PORT``: a browser that reached us as SOURCE may open HOST:PORT."""

    source: str  # '*' or a Host header value such as 'localhost:8000'
    host: str
    port: int
    line: int = 0


@dataclass(frozen=True)
class TLSFiles:
    key: str
    crt: str
    chain: str | None = None


@dataclass(frozen=True)
class Config:
    path: str
    settings: GlobalSettings
    listeners: tuple[Listener, ...]
    access: tuple[AccessRule, ...]
    tls: TLSFiles | None
    static: tuple[tuple[str, str], ...]  # (mount name, directory); '' is INDEX
    sections: dict[str, Section] = field(repr=False)
    warnings: tuple[Problem, ...] = ()

    def section(self, name: str) -> Section:
        return self.sections.get(name) or Section(name, 0)


# --------------------------------------------------------------------------
# host and port grammar shared by [listen] and [access]


def split_host_port(text: str, default_port: int | None) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` -> (host, port)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"'{text}' opens '[' without ']'")
        host, rest = text[1:end], text[end + 1 :]
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"'{host}' in brackets is not an IPv6 address") from None
        problem = zone_problem(address)
        if problem:
            raise ValueError(problem)
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected '{rest}' after ']'")
        if rest == ":":
            raise ValueError(f"'{text}' has ':' but no port")
        port_text = rest[1:] if rest else ""
    else:
        if text.count(":") > 1:
            raise ValueError(f"'{text}': write IPv6 addresses in brackets, as [::1]:8000")
        host, _, port_text = text.partition(":")
        if ":" in text and not port_text:
            raise ValueError(f"'{text}' has ':' but no port")
    if not port_text:
        if default_port is None:
            raise ValueError(f"'{text}' needs a port")
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port '{port_text}' is not a number from 0 to 65535")
    return host, int(port_text)


def parse_listen_line(text: str, line: int = 0) -> Listener:
    url, _, option = text.partition(" ")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"'{text}' is not a URL like http://:8000")
    if scheme not in LISTEN_SCHEMES:
        raise ValueError(
            f"unknown listen scheme '{scheme}://' (known: "
            f"{', '.join(s + '://' for s in LISTEN_SCHEMES)})"
        )
    rest = rest.rstrip("/")
    if "/" in rest:
        raise ValueError(f"'{url}': a listen URL has no path")
    host, port = split_host_port(rest, DEFAULT_PORTS.get(scheme))
    if host and host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"'{host}' is not an interface address (use an IP address, "
                "'localhost', or nothing for every interface)"
            ) from None
        host = canonical_host(host)  # one spelling, so that --check sees [::1] and [0::1] repeat an address
    option = option.strip()
    if option and scheme != "stomp":
        raise ValueError(f"unexpected '{option}' after the {scheme}:// URL")
    return Listener(scheme, "127.0.0.1" if host == "localhost" else host, port, line, option)


def missing_interface(host: str) -> str | None:
    """Why a listener on ``host`` cannot bind for want of the interface its zone names, or None.

    Asked where the [ssl] files are (start-up, ``--check``), not at a reload: a listener is
    bound once, and an interface gone since (a VPN down) must not refuse the new [access]
    rules.  A rule's zone is not asked about: its interface may come up later."""
    zone = host.partition("%")[2]
    if not zone:
        return None
    try:
        socket.if_indextoname(int(zone)) if zone.isdigit() else socket.if_nametoindex(zone)
    except (OSError, OverflowError):
        escaped = " (a URL writes '%' as '%25'; here write the zone after '%' alone)" if zone.startswith("25") else ""
        return f"'{host}': this machine has no interface '{zone}'{escaped}"
    return None


def parse_access_entry(entry: Entry) -> AccessRule:
    source, dest = entry.key, entry.value
    if not source:
        raise ValueError("the source before '->' is empty (use '*' or a Host such as localhost:8000)")
    if not dest:
        raise ValueError("the destination after '->' is empty")
    if source.count(":") > 1 and not source.startswith("["):  # no Host header is written so
        raise ValueError(f"source '{source}': a browser's Host header writes an IPv6 address in brackets, "
                         "as [::1]:8000; write it so")
    if "*" in dest:  # '*', '*:80', '*.example.com:80'
        raise ValueError("illegal [access] entry: wildcard destination (name each backend in a rule of its own)")
    host, port = split_host_port(dest, 80)
    if not host:
        raise ValueError(f"'{dest}' has no host")
    problem = host_name_problem(host)
    if problem:
        raise ValueError(problem)
    if port == 0:
        raise ValueError(f"'{dest}': port 0 cannot be connected to")
    return AccessRule(canonical_authority(source), canonical_host(host), port, entry.line)


def relative_to(config_path: str, value: str) -> str:
    """A relative file name in the config means relative to the config file's directory."""
    if os.path.isabs(value) or config_path.startswith("<"):
        return value
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(config_path)), value))


# --------------------------------------------------------------------------


KNOWN_SECTIONS = ("global", "listen", "ssl", "static", "access", "stomp", "test")


def build_config(sections: dict[str, Section], path: str,
                 files_must_exist: bool = True) -> tuple[Config | None, list[Problem]]:
    """Check and type the parsed sections; returns the config or None, and every problem.
    ``files_must_exist``: see :func:`load_file`."""
    problems: list[Problem] = []

    def error(line: int, message: str) -> None:
        problems.append(Problem(path, line, message))

    def warn(line: int, message: str) -> None:
        problems.append(Problem(path, line, message, fatal=False))

    for name, section in sections.items():
        if name in KNOWN_SECTIONS or name in LOGGING_SECTIONS or name.startswith(LOGGING_PREFIXES):
            continue
        warn(section.line, f"unknown section [{name}] is ignored")

    values = dict(GlobalSettings.defaults().values)
    for entry in sections.get("global", Section("global", 0)).entries:
        key = GLOBAL_KEY_NAMES.get(entry.key)
        if key is None:
            warn(entry.line, f"unknown key '{entry.key}' in [global] is ignored")
            continue
        try:
            values[key.name] = key.parse(entry.value)
        except ValueError as exc:
            error(entry.line, f"[global] {entry.key}: {exc}")
    needs = {"epoll": "epoll", "twisted-epoll": "epoll", "kqueue": "kqueue"}.get(values["reactor"])
    if needs and not hasattr(__import__("select"), needs):
        entry = sections["global"].get("reactor")
        warn(entry.line if entry else 0, f"reactor '{values['reactor']}' is not available here; using the default")
        values["reactor"] = None
    for name, lookup in (("user", "getpwnam"), ("group", "getgrnam")):
        if values[name] is not None:
            module = __import__("pwd" if name == "user" else "grp")
            try:
                getattr(module, lookup)(values[name])
            except KeyError:
                entry = sections["global"].get(name)
                error(entry.line if entry else 0, f"[global] {name}: no such {name} '{values[name]}'")
    if values["user"] is None and values["group"] is not None:
        entry = sections["global"].get("group")
        warn(entry.line if entry else 0, "group without user is ignored")

    listeners: list[Listener] = []
    seen: dict[tuple[str, int], int] = {}
    for entry in sections.get("listen", Section("listen", 0)).entries:
        try:
            listener = parse_listen_line(entry.key, entry.line)
        except ValueError as exc:
            error(entry.line, f"[listen] {exc}")
            continue
        problem = missing_interface(listener.host) if files_must_exist else None
        if problem:
            error(entry.line, f"[listen] {problem}")
            continue
        if listener.option:
            warn(entry.line, f"morbid config '{listener.option}' is ignored; "
                 "configure the broker in [stomp]")
        where = (listener.host, listener.port)
        if listener.port and where in seen:
            error(entry.line, f"[listen] {listener} repeats the address of line {seen[where]}")
            continue
        seen[where] = entry.line
        listeners.append(listener)

    access: list[AccessRule] = []
    for entry in sections.get("access", Section("access", 0)).entries:
        try:
            access.append(parse_access_entry(entry))
        except ValueError as exc:
            error(entry.line, f"[access] {exc}")

    tls = None
    ssl_section = sections.get("ssl")
    if ssl_section is not None:
        known = {"key", "crt", "chain"}
        for entry in ssl_section.entries:
            if entry.key not in known:
                warn(entry.line, f"unknown key '{entry.key}' in [ssl] is ignored")
        files = {k: ssl_section.get(k) for k in known}
        files = {k: Entry(v.key, relative_to(path, v.value), v.line) if v else None for k, v in files.items()}
        for name in known if files_must_exist else ():
            item = files[name]
            if item is not None and not os.path.isfile(item.value):
                error(item.line, f"[ssl] {name}: no such file '{item.value}'")
        if files["key"] and files["crt"]:
            chain = files["chain"]
            tls = TLSFiles(files["key"].value, files["crt"].value, chain.value if chain else None)
    if any(lst.scheme == "https" for lst in listeners) and tls is None:
        first = next(lst for lst in listeners if lst.scheme == "https")
        error(first.line, "[listen] https:// needs [ssl] key and crt")

    static: list[tuple[str, str]] = []
    for entry in sections.get("static", Section("static", 0)).entries:
        name = "" if entry.key == "INDEX" else entry.key
        entry = Entry(entry.key, relative_to(path, entry.value), entry.line)
        if "/" in name or name in ("..", "."):
            error(entry.line, f"[static] '{entry.key}' must be a single path segment")
        elif name in RESERVED_PATHS:
            error(entry.line, f"[static] '/{name}' is served by Orbited itself; choose another name")
        elif files_must_exist and not os.path.isdir(entry.value) and not os.path.isfile(entry.value):
            error(entry.line, f"[static] {entry.key}: no such file or directory '{entry.value}'")
        else:
            static.append((name, entry.value))

    for entry in sections.get("test", Section("test", 0)).entries:
        if entry.key == "stompdispatcher.enabled":
            warn(entry.line, "[test] stompdispatcher.enabled is replaced by [stomp] publish.enabled "
                 "and is ignored")
        else:
            warn(entry.line, f"unknown key '{entry.key}' in [test] is ignored")

    logs.check_logging_sections(sections, path, problems)
    from orbited.stomp.settings import check_stomp_section  # the broker owns its section

    check_stomp_section(sections, path, problems)

    if any(p.fatal for p in problems):
        return None, problems
    config = Config(
        path=path,
        settings=GlobalSettings(values),
        listeners=tuple(listeners),
        access=tuple(access),
        tls=tls,
        static=tuple(static),
        sections=sections,
        warnings=tuple(problems),
    )
    return config, problems


def load_text(text: str, path: str = "<config>", notes: list[Problem] | None = None,
              files_must_exist: bool = True) -> Config:
    """Parse config text; raises ConfigError listing every problem (``notes``: found before).
    ``files_must_exist``: see :func:`load_file`."""
    sections, problems = parse_ini(text, path)
    config, more = build_config(sections, path, files_must_exist)
    problems = (notes or []) + problems + more
    if config is None or any(p.fatal for p in problems):
        problems.sort(key=lambda p: (not p.fatal, p.line))
        raise ConfigError(problems)
    return Config(**{**config.__dict__, "warnings": tuple(problems)})


def load_file(path: str, files_must_exist: bool = True) -> Config:
    """Read and check a config file; raises ConfigError listing every problem.

    ``files_must_exist=False`` is for a process that is running already: a SIGHUP
    reload, whose TLS loader (orbited.service.tls_context) judges the [ssl] files and
    keeps the running certificate when they do not load, and the workers, which serve
    no TLS and no static files.  A missing [ssl] file, or one [global] user cannot see
    (letsencrypt's 0700 directories), must not refuse the [access] rules of that
    reload, nor a [static] directory (moved during a deploy, or hidden from [global]
    user), which only start-up mounts."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError([Problem(path, 0, f"cannot read: {exc.strerror}")]) from None
    text, notes = decode_config(data, path)
    return load_text(text, path, notes, files_must_exist)


def decode_config(data: bytes, path: str) -> tuple[str, list[Problem]]:
    """The text of a config file, and a warning if it is not UTF-8.

    Orbited 0.7 read its file as bytes, so a 0.7 file may hold a Latin-1 byte
    (an accented name in a comment, most often): it is read as Latin-1, where
    every byte is a character, with a warning naming the line, instead of
    refusing a file 0.7 took.  A UTF-8 byte-order mark is skipped."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start]
        return data.decode("latin-1"), [Problem(path, line, f"not UTF-8 (byte 0x{byte:02x}): the file is read as "
                                                "Latin-1, as Orbited 0.7 read it; save it as UTF-8", fatal=False)]


RELOADED_KEYS = frozenset({"origins"})  # the [global] keys a reload (SIGHUP) applies
RELOADED_SECTIONS = frozenset({"global", "listen", "static", "access", "ssl"})  # compared their own way below


def changes_needing_restart(running: Config, fresh: Config) -> list[str]:
    """What ``fresh`` (the file as re-read on SIGHUP) changes that a reload does not apply.

    A reload applies [access], origins and the TLS files; everything else is read
    once, at start.  Said aloud, so that an operator who edits a timeout or a
    listener and sends SIGHUP learns that it needs a restart instead of
    believing it done.
    """
    changed = [name for name in GLOBAL_KEY_NAMES
               if name not in RELOADED_KEYS and running.settings[name] != fresh.settings[name]]

    def listeners(config: Config) -> list[tuple[str, str, int, str]]:
        return sorted((x.scheme, x.host, x.port, x.option) for x in config.listeners)

    if listeners(running) != listeners(fresh):
        changed.append("[listen]")
    if running.static != fresh.static:
        changed.append("[static]")
    if (running.tls is None) != (fresh.tls is None):
        changed.append("[ssl]")  # TLS turned on or off; new files for a running TLS listener do apply
    for name in sorted((set(running.sections) | set(fresh.sections)) - RELOADED_SECTIONS):
        if running.section(name).as_dict() != fresh.section(name).as_dict():
            changed.append(f"[{name}]")
    return changed


def find_config() -> str | None:
    """The first of ./orbited.cfg and /etc/orbited.cfg that exists (0.7's search order)."""
    for candidate in DEFAULT_PATHS:
        if os.path.isfile(candidate):
            return candidate
    return None


# All on loopback: the broker takes any login, and /stomp and the '* -> localhost:61613' rule
# would hand it to every machine that can reach an HTTP port on all interfaces.
QUICKSTART_TEXT = """\
[global]
proxy.enabled = 1
[listen]
http://127.0.0.1:8000
stomp://127.0.0.1:61613
[access]
* -> localhost:61613
"""


def quickstart() -> Config:
    """0.7's --quickstart: HTTP on 8000, the broker on 61613, '* -> localhost:61613' (loopback only)."""
    return load_text(QUICKSTART_TEXT, "<quickstart>")


def global_keys_markdown() -> str:
    """The [global] table of docs/configuration.md, made from GLOBAL_KEYS so the two cannot drift."""
    return keys_markdown(GLOBAL_KEYS)


def keys_markdown(keys: tuple[Key, ...]) -> str:
    """A docs table of config keys (the [global] keys, the [stomp] keys), made from the keys."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key in keys:
        default = key.default
        if default is None:
            shown = "(unset)"
        elif isinstance(default, bool):
            shown = "1" if default else "0"
        elif isinstance(default, tuple) and all(isinstance(part, int) for part in default) and default:
            shown = ",".join(str(part) for part in default)  # heartbeat = 1000,10000
        elif isinstance(default, tuple):
            shown = " ".join(_shown(part) for part in default) or "(empty)"
        elif isinstance(default, float) and default.is_integer():
            shown = str(int(default))
        else:
            shown = str(default)
        rows.append(f"| `{key.name}` | `{shown}` | {key.doc.replace('<', '&lt;').replace('>', '&gt;')} |")
    return "\n".join(rows) + "\n"


def _shown(part: Any) -> str:
    """One value of a list default: a network of one address as the address (::1, not ::1/128)."""
    if isinstance(part, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and part.prefixlen == part.max_prefixlen:
        return str(part.network_address)
    return str(part)


if __name__ == "__main__":
    print(global_keys_markdown(), end="")
