"""``python -m orbited.worker``: one worker process of a ``[global] workers`` master.

It is started by the master (orbited/workers.py), never by hand: it reads the
same config, serves the /ws, /sockjs and /tcp connections the master passes it with
exactly the code the master would use, hands a connection back when a later
request on it is not its own (orbited/worker_routes.py), reports its
counters each second and sends its log records to the master.  It binds
nothing and holds no privileges the master dropped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from twisted.python.threadable import isInIOThread

from orbited.cli import install_reactor, stop_on_signals, stop_reactor
from orbited.config import ConfigError, load_file, quickstart
from orbited.logs import one_line_messages, out_of_files
from orbited.procstats import OUT_OF_FILES, process_usage, short_of_files
from orbited.worker_routes import ANY, WS, legacy_key_prefix, worker_for
from orbited.workers import MESSAGE_LIMIT, decode, encode, pass_on

log = logging.getLogger("orbited.worker")

LOG_LINE_LIMIT = 16 * 1024  # characters; a longer record (a traceback) is cut
LOG_BATCH_SIZE = 16 * 1024  # characters in one message, one line more at most: under 200 KB encoded
LOG_BACKLOG = 4 * 1024 * 1024  # characters held while the master does not read; later lines are dropped, and counted
LOG_RETRY = 0.05  # seconds before a batch the channel refused is tried again


class ChannelLogHandler(logging.Handler):
    """Log records go to the master, which logs them with its own config.

    Records logged while the reactor runs wait for the end of the reactor
    iteration and go as one message.  One message per record cost a send and a
    wake-up of the master, and a receive and a decode there, for every line: with
    two lines per /ws connect that was 0.3 ms of CPU per connect between the
    processes, as much as the master's whole share of a connect burst.  Each
    record keeps the time it was made, so the master's timestamps stay exact.

    A master too busy to read (thousands of sessions closing at once, each with
    its line) fills the channel: the lines wait here and go when it reads again,
    up to LOG_BACKLOG; past that they are dropped, and the master is told how
    many.
    """

    def __init__(self, channel: socket.socket):
        super().__init__()
        self.channel = channel
        self.pending: list[list] = []
        self.pending_size = 0
        self.dropped = 0
        self.retrying = False
        self.reactor: Any = None  # set once the reactor runs; before that, records go at once

    def start_batching(self, reactor: Any) -> None:
        self.reactor = reactor
        reactor.addSystemEventTrigger("after", "shutdown", self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)[:LOG_LINE_LIMIT]
        except Exception:  # noqa: BLE001 (logging must never take the worker down)
            self.handleError(record)
            return
        if self.pending_size + len(message) > LOG_BACKLOG:
            self.dropped += 1
            return
        self.pending.append([record.levelno, record.name, record.created, message])
        self.pending_size += len(message)
        if self.reactor is None:
            self.flush()
        elif self.retrying:
            return  # a retry is scheduled
        elif self.pending_size >= LOG_BATCH_SIZE:
            self.flush()
        elif len(self.pending) == 1:
            if isInIOThread():
                self.reactor.callLater(0, self.flush)  # runs before the reactor next waits
            else:
                self.reactor.callFromThread(self.flush)

    def flush(self) -> None:
        with self.lock:
            self.retrying = False
            if self.dropped:
                note = f"{self.dropped} log lines were dropped: the master did not read them in time"
                self.pending.insert(0, [logging.WARNING, log.name, time.time(), note])
                self.pending_size += len(note)
                self.dropped = 0
            while self.pending:
                count, size = 0, 0
                while count < len(self.pending) and (size < LOG_BATCH_SIZE or not count):
                    size += len(self.pending[count][3])
                    count += 1
                # ensure_ascii=False, then "replace": a lone surrogate becomes "?" here, not an
                # encoding error in the master's log file.
                data = json.dumps(self.pending[:count], ensure_ascii=False).encode("utf-8", "replace")
                try:
                    self.channel.send(encode("logs", {}, data))
                except BlockingIOError:
                    if self.reactor is not None:
                        self.retrying = True
                        self.reactor.callLater(LOG_RETRY, self.flush)
                    return
                except OSError:  # the master is gone: nowhere to put these lines
                    self.pending, self.pending_size = [], 0
                    return
                del self.pending[:count]
                self.pending_size -= size


class Worker:
    def __init__(self, index: int, count: int, channel: socket.socket, config, reactor):
        from twisted.web.resource import Resource

        from orbited.context import ServerContext
        from orbited.transports.legacy import LegacyCometResource
        from orbited.transports.sockjs import sockjs_resource
        from orbited.transports.websocket import websocket_factory, websocket_resource
        from orbited.web import largest_body, lean_site

        self.index = index
        self.count = count
        self.channel = channel
        self.reactor = reactor
        self.context = ServerContext(config, reactor)
        self.factory = websocket_factory(self.context)  # /ws connections handed over at accept
        root = Resource()
        root.putChild(b"ws", websocket_resource(self.context))
        root.putChild(b"sockjs", sockjs_resource(self.context))
        root.putChild(b"tcp", LegacyCometResource(self.context, legacy_key_prefix(index)))
        settings = config.settings
        self.site = lean_site(root, reactor, settings["http.timeout"], largest_body(self.context))
        self.site.router = self
        self.stopping = False
        self.out_of_files = out_of_files("on hand-over from the master", reactor.callLater)

    def stays(self, channel, head) -> bool:
        """``LeanSite.router``: whether this worker serves ``head`` itself."""
        target = worker_for(head, self.count)
        return target in (WS, ANY) or target == self.index

    def route(self, channel, head) -> bool:
        """``LeanSite.router``: serve what the rule gives this worker; hand the rest back."""
        if self.stays(channel, head):
            return False
        if not pass_on(channel, head, self.hand_back):
            channel.refuse(503, "this request cannot be served now")
        return True

    def hand_back(self, fd: int, family: int, data: bytes) -> bool:
        try:
            socket.send_fds(self.channel, [encode("connection", {"family": family}, data)], [fd])
        except OSError as exc:
            log.warning("could not hand a connection back to the master: %s", exc)
            return False
        return True

    # IReadDescriptor for the channel

    def fileno(self) -> int:
        return self.channel.fileno()

    def logPrefix(self) -> str:
        return f"worker-{self.index}"

    def doRead(self) -> None:
        while True:
            try:
                message, fds, _flags, _addr = socket.recv_fds(self.channel, MESSAGE_LIMIT, 4)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message:
                for fd in fds:
                    os.close(fd)
                self.master_gone()
                return
            try:
                self.handle(message, fds)
            except Exception:
                log.exception("handling a message from the master failed")

    def connectionLost(self, reason: object) -> None:
        self.master_gone()

    def handle(self, message: bytes, fds: list[int]) -> None:
        header, data = decode(message)
        kind = header["kind"]
        if kind == "connection":
            if len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                if not fds:  # the kernel had no descriptor to give this process for it
                    self.out_of_files()
                else:
                    log.error("a connection message with %d descriptors", len(fds))
                return
            fd = fds[0]
            try:
                os.set_blocking(fd, False)
                factory = self.site if header.get("http") else self.factory
                transport = self.reactor.adoptStreamConnection(fd, header["family"], factory)
            except OSError as exc:  # the connection is closed; the worker goes on
                transport = None
                if exc.errno in OUT_OF_FILES:
                    self.out_of_files()
                else:  # its client reset it on the way (getpeername: ENOTCONN)
                    log.info("a connection handed over was gone before it could be taken: %s", exc.strerror)
            finally:
                os.close(fd)
            if transport is not None and data:
                transport.protocol.dataReceived(data)
        elif kind == "reload":
            self.reload()
        elif kind == "stop":
            self.stop()
        for fd in fds if kind != "connection" else ():
            os.close(fd)

    def reload(self) -> None:
        from orbited.access import AccessPolicy

        path = self.context.config.path
        if path.startswith("<"):
            return
        try:
            self.context.policy = AccessPolicy.from_config(load_file(path, files_must_exist=False))
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)

    def report(self) -> None:
        stats, sessions = self.context.stats, self.context.sessions
        up, down = stats.bytes_each_way()
        usage = process_usage()
        # full: the master gives new connections to the other workers (or serves them itself)
        status = {"sessions": dict(sessions.by_transport), "proxied_now": stats.proxied_now,
                  "proxied_total": stats.proxied_total, "bytes_up": up, "bytes_down": down,
                  "full": sessions.full() or short_of_files(usage), "process": usage,
                  "lookups": self.context.lookups.counts}
        try:
            self.channel.send(encode("status", status))
        except OSError:
            pass

    def stop(self) -> None:
        """For the master's stop message and the worker's own SIGTERM or SIGINT, in either order
        (orbited.cli.stop_on_signals says when both come)."""
        if not self.stopping:
            self.stopping = True
            stop_reactor(self.reactor)

    def shutdown(self):
        """Before the reactor stops (a stop message, SIGTERM, the master gone): close
        every session with a reason and wait for them, bounded by shutdown.timeout."""
        from twisted.internet import defer

        sessions = self.context.sessions
        sessions.close_all()
        deadline = self.reactor.seconds() + self.context.config.settings["shutdown.timeout"]
        done: defer.Deferred = defer.Deferred()

        def check() -> None:
            if not sessions.live or self.reactor.seconds() >= deadline:
                self.report()
                done.callback(None)
            else:
                self.reactor.callLater(0.05, check)

        check()
        return done

    def master_gone(self) -> None:
        self.reactor.removeReader(self)
        if not self.stopping:
            log.warning("the master went away; closing this worker's sessions")
            self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orbited.worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--channel", type=int, required=True)
    parser.add_argument("--config")
    parser.add_argument("--quickstart", action="store_true")
    parser.add_argument("--log-level", type=int, default=logging.INFO)
    args = parser.parse_args(argv)
    channel = socket.socket(fileno=args.channel)
    root = logging.getLogger()
    handler = ChannelLogHandler(channel)
    handler.setFormatter(logging.Formatter("%(message)s"))
    one_line_messages([handler])
    root.addHandler(handler)
    root.setLevel(args.log_level)
    try:
        config = quickstart() if args.quickstart else load_file(args.config, files_must_exist=False)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        return 2
    install_reactor(config.settings["reactor"])
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    from orbited.logs import route_twisted_logs
    from orbited.service import StartupError, drop_privileges

    route_twisted_logs()
    channel.setblocking(False)
    handler.start_batching(reactor)
    # Everything is built before the drop, as the master builds its site before its own: after
    # it, an interpreter that only root can read (a pyenv under /root) fails every import made
    # on first use, and the /tcp resource's static files needed one (importlib.readers).
    # Nothing is read from the network before the drop.
    worker = Worker(args.index, args.count, channel, config, reactor)
    try:
        drop_privileges(config)
    except (StartupError, KeyError, OSError) as exc:
        log.error("cannot drop privileges: %s", exc)
        return 1
    reactor.addReader(worker)
    from orbited.cli import tune_garbage_collector

    tune_garbage_collector()
    LoopingCall(worker.report).start(1.0)
    reactor.addSystemEventTrigger("before", "shutdown", worker.shutdown)
    stop_on_signals(reactor, worker.stop)
    # A SIGHUP sent to every orbited process (``pkill -HUP orbited``) would end a worker by
    # default; the master's own reload message does the same work, so doing it twice is harmless.
    signal.signal(signal.SIGHUP, lambda _signum, _frame: reactor.callFromThread(worker.reload))
    reactor.run(installSignalHandlers=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
