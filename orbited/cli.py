"""argv -> Config -> a running server.  The ``orbited`` command.

Exit codes: 0 after a clean stop (SIGTERM included) or a passing ``--check``;
1 when the server cannot start (a port in use, a pid file that cannot be
written, a failed daemonisation); 2 when the config is wrong.  Errors are
never swallowed: ``--daemon`` reports a failed start from the parent and
exits non-zero instead of carrying on in the foreground as 0.7 did.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from orbited import __version__, logs
from orbited.config import Config, ConfigError, find_config, load_file, quickstart
from orbited.inifile import Problem

log = logging.getLogger("orbited.cli")

EXIT_OK, EXIT_START_FAILED, EXIT_CONFIG = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="orbited",
        description="Comet push server: browser TCPSockets to TCP backends, plus a STOMP broker.",
    )
    p.add_argument("-c", "--config", metavar="PATH",
                   help="config file (default: ./orbited.cfg, then /etc/orbited.cfg)")
    p.add_argument("-v", "--version", action="store_true", help="print the version and exit")
    p.add_argument("-q", "--quickstart", action="store_true",
                   help="no config file, loopback only: HTTP on 127.0.0.1:8000, STOMP broker on 127.0.0.1:61613, "
                        "'* -> localhost:61613'")
    p.add_argument("--check", action="store_true",
                   help="validate the config; print every problem as FILE:LINE: message; exit 0 or 2")
    p.add_argument("-d", "--daemon", action="store_true", help="detach into the background")
    p.add_argument("--pid-file", metavar="PATH", default="/var/run/orbited/orbited.pid",
                   help="pid file written with --daemon (default: %(default)s)")
    p.add_argument("-l", "--log-level", choices=["debug", "info", "warning", "error"],
                   help="override the configured log level of the root logger and its handlers")
    return p


def load_config(args: argparse.Namespace) -> Config:
    if args.quickstart:
        return quickstart()
    path = args.config or find_config()
    if path is None:
        raise ConfigError([])
    return load_file(path)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra:
        p.error('the "orbited" command does not accept positional arguments: ' + " ".join(extra))
    if args.version:
        print(f"Orbited version: {__version__}")
        return EXIT_OK
    try:
        config = load_config(args)
    except ConfigError as exc:
        if not exc.problems:
            print("orbited: no configuration file found: looked for ./orbited.cfg and "
                  "/etc/orbited.cfg; give one with --config PATH, or use --quickstart",
                  file=sys.stderr)
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    from orbited.service import root_without_user

    as_root = root_without_user(config)
    if args.check:
        problems = [*config.warnings, *check_files(config)]
        if as_root:
            problems.append(Problem(config.path, config.section("global").line, as_root))
        problems.sort(key=lambda p: (not p.fatal, p.line))
        for problem in problems:
            print(problem, file=sys.stderr)
        if any(problem.fatal for problem in problems):
            return EXIT_CONFIG
        print(f"{config.path}: OK ({len(config.listeners)} listeners, {len(config.access)} access rules)")
        return EXIT_OK
    if as_root:
        print(f"orbited: {as_root}", file=sys.stderr)
        return EXIT_CONFIG
    problems = logs.configure_logging(config.sections, config.path, args.log_level)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return EXIT_CONFIG
    for problem in config.warnings:
        log.warning("%s", problem)
    install_reactor(config.settings["reactor"])
    if args.daemon:
        return run_daemon(config, args.pid_file)
    return serve(config)


def check_files(config: Config) -> list[Problem]:
    """``--check`` beyond the text: the [ssl] files, loaded as start-up loads them, and
    whether this user could open the log files (nothing is opened or created)."""
    problems = logs.check_log_files(config.sections, config.path)
    if config.tls is not None:
        from orbited.service import TLSFilesError, tls_context

        try:
            tls_context(config.tls)
        except TLSFilesError as exc:
            problems.append(Problem(config.path, ssl_line(config, exc.key), f"[ssl] {exc.detail}"))
    return problems


def ssl_line(config: Config, key: str) -> int:
    """The line of [ssl] ``key`` (or of the section)."""
    entry = config.section("ssl").get(key)
    return entry.line if entry else config.section("ssl").line


def install_reactor(name: str | None) -> None:
    """[global] reactor, installed before anything imports twisted.internet.reactor."""
    choose_reactor(name)
    from twisted.internet import reactor

    from orbited import lookup

    lookup.install(reactor)


def choose_reactor(name: str | None) -> None:
    if name in (None, "default"):
        # Twisted's default is epoll wherever epoll exists; there, Orbited's leaner subclass of it.
        if not hasattr(__import__("select"), "epoll"):
            return
        name = "epoll"
    if name == "epoll":
        from orbited import reactor

        reactor.install()
        return
    module = {"twisted-epoll": "epollreactor", "poll": "pollreactor", "select": "selectreactor",
              "kqueue": "kqreactor"}[name]
    installer = __import__(f"twisted.internet.{module}", fromlist=["install"])
    installer.install()
    if name == "select":
        log.warning("the select reactor handles at most about 1,000 connections; prefer epoll")


def serve(config: Config, ready: Any = None) -> int:
    """Bind, drop privileges, run until stopped.  ``ready(error)`` is told how start-up went."""
    from twisted.internet import reactor

    from orbited.service import OrbitedServer, StartupError, TLSFilesError

    stop_on_signals(reactor, lambda: stop_reactor(reactor))
    try:
        server = OrbitedServer(config, reactor)  # loads the [ssl] files: TLSFilesError, a StartupError
        # SIGHUP's default action ends the process: a logrotate run while the daemon starts up
        # must queue a reload instead.
        server.install_signal_handlers()
        server.listen()
        server.start_workers(worker_args(config))
        server.drop_privileges()
    except (StartupError, KeyError, OSError) as exc:
        message = str(exc) if isinstance(exc, StartupError) else f"cannot start: {exc}"
        if isinstance(exc, TLSFilesError):
            message = f"{config.path}:{ssl_line(config, exc.key)}: {message}"
        log.error("%s", message)
        if ready is not None:
            ready(message)
        return EXIT_START_FAILED
    tune_garbage_collector()
    log.info("Orbited %s running (pid %d)", __version__, os.getpid())
    if ready is not None:
        reactor.callWhenRunning(ready, None)
    reactor.run()
    log.info("stopped")
    return EXIT_OK


def stop_on_signals(reactor: Any, stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT queue ``stop`` for the loop, from now on (start-up included, where the
    default action would be an abrupt death) and after ``reactor.run()`` installs its handlers,
    which call the reactor's ``sigTerm``/``sigInt``.

    Twisted's own handlers call ``reactor.stop``, which raises once the reactor is already
    stopping, and a stop often comes twice: with workers, systemd's default KillMode and a
    terminal's Ctrl-C signal every process, and the master's stop message follows; an
    operator presses Ctrl-C again.  ``stop`` must therefore be idempotent.
    """

    def handler(signum: int, frame: Any = None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        reactor.callFromThread(stop)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)
    reactor.sigTerm = reactor.sigInt = handler


def stop_reactor(reactor: Any) -> None:
    """``reactor.stop()``, which may be asked for again while the reactor is already stopping."""
    from twisted.internet.error import ReactorNotRunning

    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


def tune_garbage_collector() -> None:
    """Keep CPython's cyclic collector off the latency path of a long-running server.

    Everything built at start-up (modules, the resource tree, the config) lives
    as long as the process: freezing it keeps it out of every later full
    collection, which with 1,000 polling sessions otherwise took 70-140 ms every
    few seconds.  Higher thresholds make young collections rarer on a hot path
    that allocates per message; cyclic garbage is still collected, later.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


def worker_args(config: Config) -> list[str]:
    """How a worker process loads the same config and log level as this one."""
    source = ["--quickstart"] if config.path == "<quickstart>" else ["--config", os.path.abspath(config.path)]
    return [*source, "--log-level", str(logging.getLogger().getEffectiveLevel())]


def run_daemon(config: Config, pid_file: str) -> int:
    """Detach; the parent waits for the child's word and exits 0 only on success."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read().decode("utf-8", "replace")
        if answer == "ok":
            return EXIT_OK
        print(f"orbited: daemon failed to start: {answer or 'it exited without a word'}", file=sys.stderr)
        return EXIT_START_FAILED
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    channel = os.fdopen(write_end, "wb", buffering=0)

    def ready(error: str | None) -> None:
        channel.write(b"ok" if error is None else error.encode())
        channel.close()
        if error is None:
            _detach_stdio()

    try:
        write_pid_file(pid_file, pid_file_owner(config))
    except (OSError, KeyError) as exc:
        ready(f"cannot write pid file {pid_file}: {getattr(exc, 'strerror', None) or exc}")
        os._exit(EXIT_START_FAILED)
    try:
        code = serve(config, ready)
    finally:
        remove_pid_file(pid_file)
    os._exit(code)


def pid_file_owner(config: Config) -> tuple[int, int] | None:
    """[global] user's (uid, gid) when started as root with one; KeyError for an unknown account."""
    from orbited.service import account_of

    if os.getuid() != 0 or not config.settings["user"]:
        return None
    _name, uid, gid = account_of(config)
    return uid, gid


def write_pid_file(path: str, owner: tuple[int, int] | None = None) -> None:
    """Write our pid; refuse when the file names an Orbited process that is still alive.

    ``owner``: the (uid, gid) of [global] user when started as root.  The file, and a
    directory made for it, go to that account, so that the daemon can still remove the
    file (or, in a directory it may not write, empty it) at exit after dropping root."""
    try:
        with open(path) as handle:
            other = int(handle.read().strip() or 0)
    except (OSError, ValueError):
        other = 0
    if other and other != os.getpid() and _is_orbited(other):
        raise OSError(17, f"process {other} named in it is still running")
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory)
        if owner is not None:
            os.chown(directory, *owner)
    with open(path, "w") as handle:
        handle.write(f"{os.getpid()}\n")
    if owner is not None:
        os.chown(path, *owner)


def _is_orbited(pid: int) -> bool:
    """Whether ``pid`` is alive and an Orbited (a stale file's pid may be another program's by now)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"orbited" in handle.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: any live process counts
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def remove_pid_file(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        try:
            with open(path, "w"):
                pass  # emptied: an empty pid file is a stale one
        except OSError as exc:
            log.warning("cannot remove pid file %s: %s", path, exc.strerror)


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
