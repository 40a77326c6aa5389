"""The ``[stomp]`` config section: every key, its default, its meaning, and its check.

``check_stomp_section`` runs while the config is built and reports bad
values as errors and unknown keys as warnings, with ``FILE:LINE``.
``StompSettings.from_section`` turns an already checked section into typed
values.  Nothing here opens sockets or logs.  docs/stomp.md prints the same
table as ``STOMP_KEYS``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from orbited.config import (
    Key,
    choice,
    non_negative_int,
    parse_bool,
    positive_number,
    word_list,
)
from orbited.inifile import Entry, Problem, Section


def heart_beat_pair(text: str) -> tuple[int, int]:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise ValueError(f"'{text}' is not two whole numbers of milliseconds like 1000,10000")
    return int(parts[0]), int(parts[1])


def non_negative_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"'{text}' must be zero or a positive number")
    return value


def at_least(minimum: int):
    def parse(text: str) -> int:
        value = non_negative_int(text)
        if value < minimum:
            raise ValueError(f"'{text}' must be at least {minimum}")
        return value

    return parse


def networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for word in word_list(text):
        try:
            out.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            raise ValueError(f"'{word}' is not an IP address or network such as 127.0.0.0/8") from None
    return tuple(out)


STOMP_KEYS: tuple[Key, ...] = (
    Key("heartbeat", heart_beat_pair, (1000, 10000),
        "The broker's heart-beat offer 'SX,SY' in milliseconds: it can send heart-beats as often "
        "as every SX ms and asks clients for one every SY ms (0 = never). The STOMP rule then "
        "applies: each direction uses the larger of the two sides' numbers."),
    Key("heartbeat.tolerance", positive_number, 2.0,
        "A client that promised heart-beats every N ms is closed as dead after tolerance x N ms "
        "without a byte from it."),
    Key("connect_timeout", positive_number, 10.0,
        "Seconds a new connection may take to send its CONNECT frame."),
    Key("max_connections", non_negative_int, 0,
        "Most STOMP connections at once (TCP and /stomp together); 0 derives the cap from the "
        "open-file limit."),
    Key("frame.max_size", at_least(1024), 1048576,
        "Largest frame a client may send (header lines plus body), in bytes."),
    Key("frame.max_headers", at_least(8), 128,
        "Most header lines in one frame."),
    Key("frame.max_header_size", at_least(256), 8192,
        "Longest header line, in bytes."),
    Key("max_subscriptions", at_least(1), 256,
        "Most subscriptions one connection may hold."),
    Key("max_unacked", at_least(1), 1000,
        "Most unacknowledged messages one client/client-individual subscription may hold. A queue "
        "stops giving it messages at this number; a topic subscriber that reaches it is "
        "disconnected. SUBSCRIBE's 'prefetch-count' header lowers it per subscription; a topic "
        "then holds further messages back for it, up to this number in all."),
    Key("max_unacked_bytes", at_least(1024), 16777216,
        "Most body bytes of unacknowledged messages one connection may hold over all its "
        "subscriptions (and all connections together: queue.max_total_bytes). Past it queues "
        "keep their messages for it, and a topic subscriber that would go past it is disconnected."),
    Key("queue.max_messages", at_least(1), 10000,
        "Most messages a /queue/ destination holds while nobody can take them."),
    Key("queue.max_bytes", at_least(1024), 67108864,
        "Most body bytes a /queue/ destination holds while nobody can take them."),
    Key("queue.overflow", choice(("drop-oldest", "reject")), "drop-oldest",
        "What a full queue does with a new message: 'drop-oldest' drops its oldest waiting "
        "message (logged), 'reject' refuses the new one: the sender gets an ERROR frame."),
    Key("queue.max_total_bytes", at_least(1024), 268435456,
        "Most body bytes all /queue/ destinations hold together while nobody can take them. Past "
        "it, 'drop-oldest' drops the oldest messages of the largest queue, 'reject' refuses the "
        "new message as a full queue does."),
    Key("queue.max_queues", at_least(1), 10000,
        "Most /queue/ destinations that hold messages at once; a message for yet another queue "
        "is handled as by a full queue."),
    Key("transaction.max_open", at_least(1), 16,
        "Most transactions one connection may have open."),
    Key("transaction.max_frames", at_least(1), 1000,
        "Most SEND/ACK/NACK frames one transaction may hold."),
    Key("transaction.max_bytes", at_least(1024), 16777216,
        "Most body bytes one transaction may hold."),
    Key("flow.pause_publishers", non_negative_number, 2.0,
        "Seconds publishers are paused (not read from) while a subscriber's socket buffer is "
        "full, so bursts are delivered without loss; after that the slow subscriber no longer "
        "holds anyone back. It is each client's budget (by host, over all its connections): one "
        "earns it back at 0.1 s per second it holds no one back, so no client keeps publishers "
        "paused more than about 1/11 of the time by itself; n clients full at the same time each "
        "pay 1/n of it. "
        "0: never pause publishers."),
    Key("flow.max_pending", at_least(65536), 4194304,
        "Bytes that may wait for one slow client beyond its socket buffer; past this it is "
        "disconnected with an ERROR and a log line."),
    Key("flow.stall_timeout", positive_number, 30.0,
        "Seconds a client may leave its socket buffer full before it is disconnected."),
    Key("anonymous", parse_bool, False,
        "With user.* keys: 1 also accepts a CONNECT without 'login' as the user 'anonymous'."),
    Key("websocket.enabled", parse_bool, True,
        "1 serves STOMP over WebSocket at /stomp on the HTTP listeners, when the broker runs: with "
        "a stomp:// listener, or with this key (or publish.enabled) set to 1 here by name."),
    Key("publish.enabled", parse_bool, False,
        "1 serves POST /stomp/publish/<destination> (see docs/stomp.md; replaces 0.7's "
        "[test] stompdispatcher.enabled)."),
    Key("publish.clients", networks, networks("127.0.0.0/8 ::1"),
        "Client addresses allowed to POST to /stomp/publish, as addresses or networks. "
        "A request a proxy relayed (Forwarded, X-Forwarded-For or X-Real-IP) is refused: "
        "its client's own address is unknown."),
)
STOMP_KEY_NAMES = {key.name: key for key in STOMP_KEYS}

# Keys with a name part: 'user.alice = secret', 'read /topic/news/* = *', 'write /queue/jobs = alice'.
USER_PREFIX = "user."
RULE_KEY = re.compile(r"^(read|write)\s+(\S+)$")
SHA256_VALUE = re.compile(r"^sha256:[0-9a-fA-F]{64}$")
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class DestinationRule:
    """``read PATTERN = who`` or ``write PATTERN = who``; the first matching rule decides."""

    kind: str  # 'read' or 'write'
    pattern: str
    logins: tuple[str, ...]  # '*' means everyone
    line: int = 0


@dataclass(frozen=True)
class StompSettings:
    values: dict[str, Any]
    users: dict[str, str] = field(default_factory=dict)  # login -> password or 'sha256:<hex>'
    rules: tuple[DestinationRule, ...] = ()

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def development_mode(self) -> bool:
        """No users configured: every login is accepted."""
        return not self.users

    @classmethod
    def defaults(cls) -> StompSettings:
        return cls({key.name: key.default for key in STOMP_KEYS})

    @classmethod
    def from_section(cls, section: Section) -> StompSettings:
        """Typed settings from a section that ``check_stomp_section`` accepted."""
        problems: list[Problem] = []
        settings = _read(section, "<config>", problems)
        return settings


def _read(section: Section, path: str, problems: list[Problem]) -> StompSettings:
    values = {key.name: key.default for key in STOMP_KEYS}
    users: dict[str, str] = {}
    rules: list[DestinationRule] = []

    def error(entry: Entry, message: str) -> None:
        problems.append(Problem(path, entry.line, f"[stomp] {entry.key}: {message}"))

    for entry in section.entries:
        key = STOMP_KEY_NAMES.get(entry.key)
        if key is not None:
            try:
                values[key.name] = key.parse(entry.value)
            except ValueError as exc:
                error(entry, str(exc))
            continue
        if entry.key.startswith(USER_PREFIX):
            login = entry.key[len(USER_PREFIX):]
            if not login or any(c.isspace() or c in ":," for c in login):
                error(entry, "a login may not be empty or hold spaces, ':' or ','")
            elif login == ANONYMOUS:
                error(entry, "'anonymous' is the name of logins without a password (see 'anonymous')")
            elif not entry.value:
                error(entry, "empty password")
            elif entry.value.startswith("sha256:") and not SHA256_VALUE.match(entry.value):
                error(entry, "a 'sha256:' password is 64 hex digits after 'sha256:'")
            else:
                users[login] = entry.value
            continue
        match = RULE_KEY.match(entry.key)
        if match:
            kind, pattern = match.groups()
            who = word_list(entry.value)
            if not pattern.startswith("/"):
                error(entry, f"'{pattern}' is not a destination pattern such as /topic/news or /queue/*")
            elif not who:
                error(entry, "name the logins allowed, or '*' for everyone")
            else:
                rules.append(DestinationRule(kind, pattern, who, entry.line))
            continue
        problems.append(Problem(path, entry.line, f"unknown key '{entry.key}' in [stomp] is ignored", fatal=False))
    return StompSettings(values, users, tuple(rules))


def check_stomp_section(sections: dict[str, Section], path: str, problems: list[Problem]) -> None:
    """Called by orbited.config.build_config: report what is wrong with [stomp]."""
    section = sections.get("stomp")
    if section is None:
        return
    settings = _read(section, path, problems)
    logins = set(settings.users) | {ANONYMOUS}
    for rule in settings.rules:
        unknown = [login for login in rule.logins if login != "*" and login not in logins]
        if settings.users and unknown:
            problems.append(Problem(path, rule.line, f"[stomp] {rule.kind} {rule.pattern}: no user.* key "
                                    f"for {', '.join(unknown)}", fatal=False))
    if settings.rules and not settings.users:
        problems.append(Problem(path, settings.rules[0].line,
                                "[stomp] read/write rules without user.* keys: logins are not checked "
                                "(development mode), so anyone may claim any login", fatal=False))
    if settings.values["anonymous"] and not settings.users:
        entry = section.get("anonymous")
        problems.append(Problem(path, entry.line if entry else section.line,
                                "[stomp] anonymous has no effect without user.* keys", fatal=False))
