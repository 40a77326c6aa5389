"""Logging from the config file, in either of the two forms Orbited 0.7 shipped.

0.7.11 handed the whole file to ``logging.config.fileConfig``; 0.7.10 and the
Rails plugin used a ``[logging]`` section of level -> outputs.  0.7.11 crashed
on the older form; we accept both and, with neither, log INFO to stderr.
Checks only look at text, apart from :func:`check_log_files` (``--check``),
which asks the file system whether the log files could be opened, without
opening them; :func:`configure_logging` is the one place that touches the
process-wide logging state, and it runs once, at start-up.
"""

from __future__ import annotations

import configparser
import logging
import logging.config
import logging.handlers
import os
import pwd
import sys
from typing import Any

from orbited.inifile import Entry, Problem, Section

DEFAULT_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"

LEGACY_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "access": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
LEVEL_NAMES = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "notset": logging.NOTSET,
}
# The logger whose INFO lines are 0.7's 'access' level: connects and closes.
ACCESS_LOGGER = "orbited.proxy"
# [logging] outputs that are not file names.
LEGACY_STREAMS = ("SCREEN", "STDOUT", "STDERR")


_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(32), 127)} | {10: "\\n", 13: "\\r", 9: "\\t"}


MESSAGE_MOST = 2000  # characters of one log message; the rest is counted, not written


def printable(text: str) -> str:
    """Client-supplied ``text`` for a log line: control characters escaped, so a STOMP header
    (whose 1.1+ escapes make real newlines) or a destination name cannot end the line and
    forge another one, as a ``CRITICAL`` from the service, in the operator's log."""
    return text.translate(_CONTROLS) if not text.isprintable() else text


class OneLine(logging.Filter):
    """On every handler: each message is one line of at most MESSAGE_MOST characters.

    Messages carry what clients sent (a WebSocket close reason, a Referer, a
    session id, a handshake) in many places; escaping here, once, means no
    log call can forget it.  A newline in a close reason would otherwise
    start a forged line of its own, and an 8 KB header repeated on every
    refused request would write 50 MB/s of log from one connection.  A
    traceback is the formatter's, from ``exc_info``, and keeps its lines.
    Records a worker already formatted (``preformatted``) pass unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "preformatted", False):
            message = printable(record.getMessage())
            if len(message) > MESSAGE_MOST:
                message = f"{message[:MESSAGE_MOST]}... ({len(message) - MESSAGE_MOST} more characters)"
            record.msg, record.args = message, ()
        return True


def every_handler() -> list[logging.Handler]:
    """The handlers of the root logger and of every other logger, each once."""
    handlers = list(logging.getLogger().handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers.extend(logger.handlers)
    return list(dict.fromkeys(handlers))


def one_line_messages(handlers: list[logging.Handler]) -> None:
    for handler in handlers:
        if not any(isinstance(f, OneLine) for f in handler.filters):
            handler.addFilter(OneLine())


def logging_form(sections: dict[str, Section]) -> str:
    """'stdlib' (fileConfig sections), 'legacy' ([logging]) or 'default'."""
    loggers = sections.get("loggers")
    if loggers is not None and loggers.get("keys") is not None:
        return "stdlib"
    if "logging" in sections or loggers is not None:
        return "legacy"
    return "default"


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def check_logging_sections(sections: dict[str, Section], path: str, problems: list[Problem]) -> None:
    """Find what would make logging fail, without opening any log file."""
    form = logging_form(sections)
    if "log" in sections:
        problems.append(Problem(path, sections["log"].line, "legacy [log] section is ignored", fatal=False))
    if form == "legacy":
        _check_legacy(sections, path, problems)
    elif form == "stdlib":
        _check_stdlib(sections, path, problems)


def _check_legacy(sections: dict[str, Section], path: str, problems: list[Problem]) -> None:
    for entry in sections.get("logging", Section("logging", 0)).entries:
        if entry.key == "enabled.default":
            levels = _names(entry.value)
        elif entry.key in LEGACY_LEVELS:
            continue
        else:
            problems.append(Problem(path, entry.line, f"unknown key '{entry.key}' in [logging] is ignored",
                                    fatal=False))
            continue
        for level in levels:
            if level not in LEGACY_LEVELS:
                problems.append(Problem(path, entry.line, f"[logging] unknown level '{level}'"))
    for entry in sections.get("loggers", Section("loggers", 0)).entries:
        for level in _names(entry.value):
            if level not in LEGACY_LEVELS:
                problems.append(Problem(path, entry.line, f"[loggers] {entry.key}: unknown level '{level}'"))


def _check_stdlib(sections: dict[str, Section], path: str, problems: list[Problem]) -> None:
    for kind in ("loggers", "handlers", "formatters"):
        section = sections.get(kind)
        if section is None:
            if kind != "formatters":
                problems.append(Problem(path, sections["loggers"].line,
                                        f"logging.fileConfig form needs a [{kind}] section with 'keys'"))
            continue
        keys = section.get("keys")
        if keys is None:
            problems.append(Problem(path, section.line, f"[{kind}] needs 'keys = ...'"))
            continue
        prefix = kind[:-1] + "_"
        for name in _names(keys.value):
            if prefix + name not in sections:
                problems.append(Problem(path, keys.line, f"[{kind}] lists '{name}' but there is no "
                                        f"[{prefix}{name}] section"))
    for name, section in sections.items():
        if name.startswith(("logger_", "handler_")):
            level = section.get("level")
            if level is not None and level.value.lower() not in LEVEL_NAMES:
                problems.append(Problem(path, level.line, f"[{name}] unknown level '{level.value}'"))
        if name.startswith("handler_") and section.get("class") is None:
            problems.append(Problem(path, section.line, f"[{name}] needs 'class = ...'"))


def check_log_files(sections: dict[str, Section], path: str) -> list[Problem]:
    """Every log file the config would open that could not be opened by this user (``--check``).

    The file handlers of the fileConfig form (FileHandler and its subclasses in
    ``logging.handlers``) and the file outputs of the ``[logging]`` form.  A
    handler's ``args``/``kwargs`` are evaluated as fileConfig evaluates them, to
    find the file name; nothing is opened or created: :func:`log_file_problem`
    asks ``os.access``.  Only for ``--check``: a reload runs after the drop of
    privileges, where the answer would not be start-up's.
    """
    problems: list[Problem] = []
    form = logging_form(sections)
    if form == "legacy":
        seen: set[str] = set()
        for _level, entry, outputs in _legacy_outputs(sections)[1]:
            for output in outputs:
                if entry is None or output.upper() in LEGACY_STREAMS or output in seen:
                    continue
                seen.add(output)
                problem = log_file_problem(output)
                if problem:
                    problems.append(Problem(path, entry.line, f"[logging] {entry.key}: {problem}"))
    elif form == "stdlib":
        keys = sections["handlers"].get("keys") if "handlers" in sections else None
        for name in _names(keys.value) if keys else []:
            section = sections.get("handler_" + name)
            if section is None or section.get("class") is None:
                continue  # check_logging_sections says so
            found = _handler_file_name(section)
            if found is None:
                continue
            line, file_name, problem = found
            problem = problem or log_file_problem(file_name)
            if problem:
                problems.append(Problem(path, line, f"[handler_{name}] {problem}"))
    return problems


def _handler_class(name: str) -> Any:
    """A fileConfig ``class`` found in the logging package without importing anything (or None)."""
    found: Any = logging
    parts = name.strip().split(".")
    for part in parts[1:] if parts[0] == "logging" else parts:
        found = getattr(found, part, None)
    return found if isinstance(found, type) else None


def _handler_file_name(section: Section) -> tuple[int, Any, str | None] | None:
    """(line, file name, problem) of a file handler's section; None for other handlers."""
    handler_class = _handler_class(section.get("class").value)
    if handler_class is None or not issubclass(handler_class, logging.FileHandler):
        return None
    values: list[Any] = []
    for key, default in (("args", "()"), ("kwargs", "{}")):
        entry = section.get(key)
        try:
            # as fileConfig does, in a copy of the namespace: eval adds __builtins__ to it
            values.append(eval(entry.value if entry else default, dict(vars(logging))))
        except Exception as exc:  # noqa: BLE001 (any error of an expression; fileConfig would raise it)
            return (entry or section).line, None, f"{key}: cannot evaluate: {exc!r}"
    args, kwargs = values
    if isinstance(args, (tuple, list)) and args:
        entry, file_name = section.get("args"), args[0]
    elif isinstance(kwargs, dict) and "filename" in kwargs:
        entry, file_name = section.get("kwargs"), kwargs["filename"]
    else:
        return None
    if not isinstance(file_name, (str, bytes, os.PathLike)):
        return None
    return (entry or section).line, file_name, None


def log_file_problem(file_name: Any) -> str | None:
    """Why a log file could not be opened for writing by this process (or None); opens nothing."""
    path = os.path.abspath(os.fsdecode(file_name))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        return f"log file '{path}': directory '{directory}' does not exist"
    if os.path.isdir(path):
        return f"log file '{path}' is a directory"
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            return f"log file '{path}' is not writable by {_this_user()}"
    elif not os.access(directory, os.W_OK | os.X_OK):
        return f"log file '{path}': directory '{directory}' is not writable by {_this_user()}"
    return None


def _this_user() -> str:
    try:
        return f"user {pwd.getpwuid(os.geteuid()).pw_name}"
    except KeyError:
        return f"uid {os.geteuid()}"


def configure_logging(sections: dict[str, Section], path: str, level: str | None = None) -> list[Problem]:
    """Install logging for this process; returns problems found while doing it.

    A handler that cannot be built (an unwritable log file, an unknown
    class) is reported with FILE:LINE instead of a traceback.
    """
    problems: list[Problem] = []
    form = logging_form(sections)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if form == "stdlib":
        parser = configparser.RawConfigParser()
        for name, section in sections.items():
            parser.add_section(name)
            for entry in section.entries:
                parser.set(name, entry.key, entry.value)
        try:
            logging.config.fileConfig(parser, disable_existing_loggers=False)
        except Exception as exc:  # noqa: BLE001 (fileConfig raises whatever a handler raises)
            problems.append(Problem(path, sections["loggers"].line, f"logging config failed: {exc!r}"))
            _configure_default(root)
        else:
            follow_0_7_logger_names()
    elif form == "legacy":
        try:
            _configure_legacy(sections, root)
        except OSError as exc:
            problems.append(Problem(path, sections.get("logging", sections.get("loggers")).line,
                                    f"logging config failed: {exc}"))
            _configure_default(root)
    else:
        _configure_default(root)
    if level is not None:
        override(level)
    one_line_messages(every_handler())
    route_twisted_logs()
    return problems


# Orbited 0.7.11's logger names, as its example config and the configs made from it name them,
# and the loggers that log the same events now.
LOGGERS_OF_0_7 = {
    "orbited.cometsession.TCPConnectionResource": ("orbited.transports.legacy", "orbited.proxy"),
    "orbited.cometsession.TCPResource": ("orbited.transports.legacy",),
    "orbited.proxy.ProxyIncomingProtocol": ("orbited.proxy",),
    "orbited.proxy.ProxyOutgoingProtocol": ("orbited.proxy",),
    "orbited.start": ("orbited.cli", "orbited.service"),
}


def follow_0_7_logger_names() -> None:
    """A 0.7.11 config's handlers on a logger 0.7 had (its connections.log on
    ``orbited.cometsession.TCPConnectionResource``) get what that logger logged
    then; nothing logs under the old names any more, so the file stayed empty."""
    manager = logging.Logger.manager.loggerDict
    for old, news in LOGGERS_OF_0_7.items():
        configured = manager.get(old)
        if not isinstance(configured, logging.Logger) or not configured.handlers:
            continue
        for name in news:
            logger = logging.getLogger(name)
            for handler in configured.handlers:
                if handler not in logger.handlers:
                    logger.addHandler(handler)
            if configured.level and (not logger.level or configured.level < logger.level):
                logger.setLevel(configured.level)


def reopen_log_files() -> tuple[list[str], list[str]]:
    """SIGHUP: give every file handler a fresh stream at its path.

    logrotate renames the file (or removes it); without this Orbited would
    keep writing to the renamed one, or to a deleted inode, until restarted.
    Reopening appends, whatever mode the handler was built with, so a SIGHUP
    without a rotation never truncates a log.  A file that cannot be opened
    (the directory no longer writable by [global] user) keeps its old stream.
    Returns the paths reopened and the problems."""
    reopened: list[str] = []
    problems: list[str] = []
    for handler in every_handler():
        if not isinstance(handler, logging.FileHandler) or handler.stream is None:
            continue  # not a file, or a delay=True file not opened yet: it opens the path when first used
        try:
            stream = open(handler.baseFilename, "a", encoding=handler.encoding,
                          errors=handler.errors)
        except OSError as exc:
            problems.append(f"cannot reopen log file {handler.baseFilename}: {exc.strerror}")
            continue
        old = handler.setStream(stream)
        if old is not None:
            old.close()
        reopened.append(handler.baseFilename)
    return reopened, problems


def override(level: str) -> None:
    """--log-level: the root logger and every root handler show ``level`` and above."""
    number = LEVEL_NAMES[level.lower()]
    root = logging.getLogger()
    root.setLevel(number)
    logging.getLogger("orbited").setLevel(number)
    for handler in root.handlers:
        handler.setLevel(number)


def _configure_default(root: logging.Logger) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(DEFAULT_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


class _LevelFilter(logging.Filter):
    """Passes records of exactly the levels a legacy [logging] output was given."""

    def __init__(self, levels: set[int], access_only: bool):
        super().__init__()
        self.levels = levels
        self.access_only = access_only

    def filter(self, record: logging.LogRecord) -> bool:
        if self.access_only:
            return record.levelno == logging.INFO and record.name.startswith(ACCESS_LOGGER)
        return record.levelno in self.levels


def _legacy_outputs(sections: dict[str, Section]) -> tuple[list[str], list[tuple[str, Entry | None, list[str]]]]:
    """[logging]: the enabled levels, and (level, its entry, its outputs) for each level.

    An output not in LEGACY_STREAMS (any case) is a file name."""
    logging_section = sections.get("logging", Section("logging", 0))
    enabled_entry = logging_section.get("enabled.default")
    enabled = _names(enabled_entry.value) if enabled_entry else ["info", "access", "warn", "error"]
    outputs = []
    for level_name in LEGACY_LEVELS:
        entry = logging_section.get(level_name)
        outputs.append((level_name, entry, _names(entry.value) if entry else
                        (["STDERR"] if level_name in enabled else [])))
    return enabled, outputs


def _configure_legacy(sections: dict[str, Section], root: logging.Logger) -> None:
    enabled, level_outputs = _legacy_outputs(sections)
    streams: dict[str, logging.Handler] = {}
    formatter = logging.Formatter(DEFAULT_FORMAT)
    for level_name, _entry, outputs in level_outputs:
        level = LEGACY_LEVELS[level_name]
        for output in outputs:
            key = output.upper() if output.upper() in LEGACY_STREAMS else output
            if key not in streams:
                if key in ("SCREEN", "STDOUT"):
                    streams[key] = logging.StreamHandler(sys.stdout)
                elif key == "STDERR":
                    streams[key] = logging.StreamHandler(sys.stderr)
                else:
                    streams[key] = logging.FileHandler(output)
                streams[key].setFormatter(formatter)
            handler = streams[key]
            handler.addFilter(_LevelFilter({level}, level_name == "access"))
    # A record must pass one filter of its handler: merge filters per handler.
    for handler in streams.values():
        filters = list(handler.filters)
        handler.filters = [_AnyOf(filters)]
        root.addHandler(handler)
    root.setLevel(min(LEGACY_LEVELS[name] for name in enabled) if enabled else logging.WARNING)
    for entry in sections.get("loggers", Section("loggers", 0)).entries:
        levels = [LEGACY_LEVELS[name] for name in _names(entry.value) if name in LEGACY_LEVELS]
        if levels:
            logging.getLogger(entry.key).setLevel(min(levels))


class _AnyOf(logging.Filter):
    def __init__(self, filters: list[logging.Filter]):
        super().__init__()
        self.filters_ = filters

    def filter(self, record: logging.LogRecord) -> bool:
        return any(f.filter(record) for f in self.filters_)


# autobahn's WARNING lines about what a client did (its log_format strings, autobahn 26.x)
AUTOBAHN_CLIENT_FAULTS = frozenset({
    'failing WebSocket connection (code={code}): "{reason}"',
    "dropping connection to peer {peer} with abort={abort}: {reason}",
    "dropping connection to peer {peer} with abort={abort}",
    "Auto ping/pong: received non-pending pong",
})


# Twisted's lines while its listener recovers from EMFILE: three per connection it closes.
ACCEPT_EMFILE_CLOSED = "EMFILE recovery: Closed socket from {address}"
ACCEPT_EMFILE_QUIET = frozenset({
    "EMFILE encountered; releasing reserved file descriptor.",
    "Re-reserving EMFILE recovery file descriptor.",
})
ACCEPT_FAILED = "Could not accept new connection ({acceptError})"


class Tally:
    """A trouble that can come once per connection, logged once and then counted.

    Out of descriptors, every connection that arrives is closed at once; a
    line for each would flood the log when the operator most needs it.  The
    first one is logged with ``first`` at once (a format for the arguments of
    the call, if any); the rest are counted and logged with ``more`` (a format
    with one ``%d``) ``interval`` seconds later.  ``level``: WARNING for the
    operator's troubles, INFO for what any client can cause.
    """

    def __init__(self, logger: logging.Logger, first: str, more: str, interval: float = 10.0,
                 call_later: Any = None, level: int = logging.WARNING):
        self.logger, self.first, self.more, self.interval = logger, first, more, interval
        self.call_later = call_later
        self.level = level
        self.counted = 0
        self.waiting = False

    def __call__(self, *args: object) -> None:
        if self.waiting:
            self.counted += 1
            return
        if args:
            self.logger.log(self.level, self.first, *args)
        else:
            self.logger.log(self.level, "%s", self.first)
        self._wait()

    def _wait(self) -> None:
        self.waiting = True
        if self.call_later is None:
            from twisted.internet import reactor

            self.call_later = reactor.callLater  # type: ignore[attr-defined]
        self.call_later(self.interval, self._report)

    def _report(self) -> None:
        self.waiting = False
        if self.counted:
            self.logger.log(self.level, self.more, self.counted)
            self.counted = 0
            self._wait()  # more may follow: they are counted for the next report


def out_of_files(where: str, call_later: Any = None) -> Tally:
    """The Tally for connections closed ``where`` ('at accept', 'from the master') for want of a descriptor."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return Tally(logging.getLogger("orbited.service"),
                 f"out of file descriptors (open-file limit {limit}): new connections are closed {where}",
                 f"out of file descriptors (open-file limit {limit}): closed %d more new connection(s) {where}",
                 call_later=call_later)


class TwistedLogRouter:
    """Twisted's own log events into stdlib logging: 'twisted', and 'autobahn' for autobahn's.

    autobahn logs what a client did wrong (a protocol violation, a refused
    opening handshake) at WARNING.  The server is fine when that happens, and
    anyone on the network can cause it, so those lines come at INFO: a WARNING
    in Orbited's log is something for the operator to look at.  autobahn's
    other warnings (an exception in onConnect, an oversized send) are ours and
    stay WARNING.  Twisted's three INFO lines per connection closed at accept
    for want of a descriptor become one :class:`Tally`."""

    def __init__(self, twisted: Any, autobahn: Any, out_of_files: Any = None):
        self.twisted = twisted
        self.autobahn = autobahn
        self.out_of_files = out_of_files

    def __call__(self, event: dict) -> None:
        from twisted.logger import LogLevel

        if not event.get("log_namespace", "").startswith("autobahn"):
            form = event.get("log_format")
            if form == ACCEPT_EMFILE_CLOSED or form == ACCEPT_FAILED:
                if self.out_of_files is None:
                    self.out_of_files = out_of_files("at accept")
                self.out_of_files()
            elif form not in ACCEPT_EMFILE_QUIET:
                self.twisted(event)
        elif event.get("log_level") is LogLevel.warn and event.get("log_format") in AUTOBAHN_CLIENT_FAULTS:
            self.autobahn({**event, "log_level": LogLevel.info})
        else:
            self.autobahn(event)


def route_twisted_logs() -> None:
    """Install :class:`TwistedLogRouter` as Twisted's log observer, once per process."""
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    if getattr(route_twisted_logs, "done", False):
        return
    router = TwistedLogRouter(STDLibLogObserver(name="twisted"), STDLibLogObserver(name="autobahn"))
    globalLogBeginner.beginLoggingTo([router], redirectStandardIO=False)
    route_twisted_logs.done = True  # type: ignore[attr-defined]
