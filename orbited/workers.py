"""TCPSocket sessions on every core: the master hands accepted connections to workers.

One Twisted process saturates one core.  With ``[global] workers = N`` the
master process keeps everything that needs shared state (the STOMP broker,
static files, /system) and passes each plain-TCP connection for ``/ws``,
``/sockjs`` and ``/tcp`` -- the bytes it has already read, and the socket
itself (SCM_RIGHTS) -- to one of N worker processes, which run the same
session and proxy code.  A ``/ws`` WebSocket lives on one connection, so any
worker may take it; every request of one ``/sockjs`` or ``/tcp`` session
goes to the same worker (orbited/worker_routes.py).  A worker hands
a connection back when a later request on it belongs elsewhere (a browser
reuses its keep-alive connections for anything on the same origin).

Workers are started with ``python -m orbited.worker`` after the master has
bound its sockets and dropped privileges, so they never hold root.  They
talk to the master over a SOCK_SEQPACKET socketpair: connections go either
way with their descriptor; the worker sends back its counters each second (summed into
/system/status) and its log records (re-logged by the master, so one logging
config rules every process).  SIGHUP and shutdown reach workers as messages.
A worker that dies is logged and replaced; its sessions are lost with it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orbited.http.upgrade import is_plain_tcp, replayable_head
from orbited.listening import ListeningPort
from orbited.worker_routes import WS, worker_at_accept, worker_for

if TYPE_CHECKING:
    from orbited.context import ServerContext

log = logging.getLogger("orbited.workers")

# One message carries a connection and the bytes read from it: a head, plus at most what the HTTP
# layer buffers behind it (a read, or pipelined requests up to its limit), well under this.
MESSAGE_LIMIT = 512 * 1024
CHANNEL_BUFFER = 1 << 20  # asked for; the kernel caps it at net.core.wmem_max (doubled)
RESPAWN_DELAY = 1.0  # after a worker that ran a while; doubled after each that died young
RESPAWN_DELAY_MAX = 60.0
YOUNG = 10.0  # seconds: a worker that dies sooner counts toward the back-off
# A worker reports every second; one silent this long (stopped, or its loop stuck) gets no new
# /ws or raw /sockjs/websocket connections until it is heard again.
SILENT_AFTER = 3.0


def encode(kind: str, payload: dict | None = None, data: bytes = b"") -> bytes:
    """One control message: a JSON line, then raw bytes (a connection's first bytes)."""
    head = json.dumps({"kind": kind, **(payload or {})}).encode()
    return head + b"\n" + data


def decode(message: bytes) -> tuple[dict, bytes]:
    head, _, data = message.partition(b"\n")
    return json.loads(head), data


def log_records(index: int, data: bytes) -> None:
    """Worker ``index``'s batch of log records (orbited/worker.py), each logged with the
    master's config at the time the worker made it."""
    try:
        for level, name, created, message in json.loads(data):
            logger = logging.getLogger(name)
            if not logger.isEnabledFor(level):
                continue
            record = logger.makeRecord(name, level, "(worker)", 0, "[worker %d] %s", (index, message), None)
            record.preformatted = True  # made one line by the worker's own OneLine filter
            record.relativeCreated += (created - record.created) * 1000
            record.created, record.msecs = created, (created - int(created)) * 1000
            logger.handle(record)
    except (ValueError, TypeError) as exc:
        log.error("worker %d sent unreadable log records: %s", index, exc)


# a worker's status counters that count since its start (the rest say how things are now)
CUMULATIVE = ("proxied_total", "bytes_up", "bytes_down")


@dataclass
class Worker:
    index: int
    process: subprocess.Popen
    channel: socket.socket
    reader: Any = None
    status: dict = field(default_factory=dict)
    stopping: bool = False
    heard_at: float = 0.0  # reactor time of its last message (or of its start)
    started_at: float = 0.0
    passed_over: bool = False  # silent, and skipped by dispatch_fd since
    killed: bool = False  # by the watchdog (workers.timeout); lost() starts another


class ControlReader:
    """IReadDescriptor for one worker's end of the socketpair, in the master's reactor."""

    def __init__(self, pool: WorkerPool, worker: Worker):
        self.pool = pool
        self.worker = worker

    def fileno(self) -> int:
        return self.worker.channel.fileno()

    def logPrefix(self) -> str:
        return f"worker-{self.worker.index}"

    def doRead(self) -> None:
        while True:
            try:
                message, fds, _flags, _addr = socket.recv_fds(self.worker.channel, MESSAGE_LIMIT, 4)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message:
                close_all(fds)
                self.pool.lost(self.worker)
                return
            self.pool.received(self.worker, message, fds)

    def connectionLost(self, reason: object) -> None:
        self.pool.lost(self.worker)


class WorkerPool:
    """The master's side: start, feed, watch and stop the workers."""

    def __init__(self, context: ServerContext, count: int, config_args: list[str]):
        self.context = context
        self.reactor = context.reactor
        self.count = count
        self.config_args = config_args
        self.workers: list[Worker | None] = [None] * count
        self.next = 0
        self.stopping = False
        self.site: Any = None  # the LeanSite that serves connections workers hand back
        self.handed_at_accept = 0  # connections passed on by HandoffPort, unparsed
        self.handed_after_parse = 0  # the others, passed on by the HTTP layer
        self.handed_back = 0  # connections a worker returned for a request it does not serve
        self.timeout = context.config.settings["workers.timeout"]
        self.young_deaths = [0] * count  # per index, in a row: the respawn back-off
        self.watchdog: Any = None
        self.python = sys.executable
        # the counters of workers that are gone: /system/status's totals since start never go back
        self.departed: dict = {key: 0 for key in CUMULATIVE}
        self.departed["lookups"] = {}

    def start(self) -> None:
        for index in range(self.count):
            self.spawn(index)
        if self.timeout:
            from twisted.internet.task import LoopingCall

            self.watchdog = LoopingCall(self.watch)
            self.watchdog.clock = self.reactor
            self.watchdog.start(1.0, now=False)

    def watch(self) -> None:
        """workers.timeout: a worker silent that long is killed; lost() starts another."""
        for worker in self.workers:
            if worker is None or worker.stopping or worker.killed or not self.silent(worker):
                continue
            quiet = self.quiet(worker)
            if quiet >= self.timeout:
                log.error("worker %d (pid %d) has not been heard from for %.0f s (workers.timeout); killing it",
                          worker.index, worker.process.pid, quiet)
                worker.killed = True
                worker.process.kill()

    def spawn(self, index: int) -> None:
        if self.stopping:
            return
        try:
            master_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError as exc:  # EMFILE, ENFILE
            self.young_deaths[index] += 1
            self.retry(index, f"cannot start worker {index}: {exc}")
            return
        try:
            for end in (master_end, worker_end):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHANNEL_BUFFER)
            master_end.setblocking(False)
            process = subprocess.Popen(
                [self.python, "-m", "orbited.worker", "--index", str(index), "--count", str(self.count),
                 "--channel", str(worker_end.fileno()), *self.config_args],
                pass_fds=(worker_end.fileno(),), stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            # EAGAIN, ENOMEM, or an interpreter the master can no longer run after dropping
            # privileges (one under /root): say so and try again, as after a death.
            master_end.close()
            self.young_deaths[index] += 1
            self.retry(index, f"cannot start worker {index}: {exc}")
            return
        finally:
            worker_end.close()
        now = self.reactor.seconds()
        worker = Worker(index, process, master_end, heard_at=now, started_at=now)
        worker.reader = ControlReader(self, worker)
        self.reactor.addReader(worker.reader)
        self.workers[index] = worker
        log.info("worker %d started (pid %d)", index, process.pid)

    # --- handing over connections

    def _target(self, channel: Any, head: Any) -> int | None:
        """The worker (or WS, ANY) that serves ``head``; None for the master (TLS ends here:
        its state cannot move)."""
        return worker_for(head, self.count) if is_plain_tcp(channel.transport) else None

    def stays(self, channel: Any, head: Any) -> bool:
        """``LeanSite.router``: whether the master serves ``head`` itself."""
        return self._target(channel, head) is None

    def route(self, channel: Any, head: Any) -> bool:
        """The HTTP layer's hook for each parsed request head (``LeanSite.router``): True when a
        worker took the connection, and the channel must forget it."""
        target = self._target(channel, head)
        if target is None:
            return False
        if not pass_on(channel, head, lambda fd, family, data: self.dispatch_fd(fd, family, data, target)):
            if target < 0:
                return False  # any process may serve it: this one does
            # A session's request, and its worker cannot take it now (restarting, stopped, its
            # channel full).  Served here, it made the session anew in this process, which the
            # worker then did not know: 404s and a second session once the worker was back.
            channel.refuse(503, "this session's worker cannot take the request now; try again")
            return True
        self.handed_after_parse += 1
        return True

    def dispatch_fd(self, fd: int, family: int, data: bytes, target: int) -> bool:
        """Pass a socket and the bytes read from it to worker ``target`` (or any, for ``WS`` and
        ``ANY``); False when none can take it now.  The caller still closes its own descriptor."""
        live = [w for w in self.workers if w is not None and not w.stopping]
        if target >= 0:
            # a session's worker, even if it reports itself full: its own cap answers 503
            worker = self.workers[target]
            live = [worker] if worker is not None and not worker.stopping else []
        message = encode("connection", {"family": family, "http": target != WS}, data)
        # round robin over the requests any worker may take (a session's own requests do not move
        # it, or a 0.7 session, made by one and read on another connection, would always skip one);
        # a worker that reports itself full, or has gone silent, is skipped
        for _ in range(len(live)):
            worker = live[self.next % len(live)]
            if target < 0:
                self.next += 1
            if target < 0 and (worker.status.get("full") or self.silent(worker)):
                continue
            try:
                socket.send_fds(worker.channel, [message], [fd])
            except OSError as exc:  # the worker's queue is full, or it just died
                log.warning("worker %d did not take a connection: %s", worker.index, exc)
                continue
            return True
        return False

    def quiet(self, worker: Worker) -> float:
        """Seconds since the last message from ``worker`` (or since its start)."""
        return self.reactor.seconds() - worker.heard_at

    def silent(self, worker: Worker) -> bool:
        """A worker not heard from for SILENT_AFTER seconds.  Its channel would still take a
        few thousand connections (2 MiB of small messages) that no one answers; they go to the
        others instead.  Requests of its own sessions still go to it: no one else can serve them."""
        quiet = self.quiet(worker)
        if quiet < SILENT_AFTER:
            return False
        try:  # a message not read yet (the master itself was held up) proves it is running
            if worker.channel.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                worker.heard_at = self.reactor.seconds()
                return False
        except OSError:
            pass
        if not worker.passed_over:
            worker.passed_over = True
            log.warning("worker %d (pid %d) has not been heard from for %.0f s; new /ws connections go "
                        "to the other workers until it is", worker.index, worker.process.pid, quiet)
        return True

    def take_back(self, worker: Worker, family: int, fd: int, data: bytes) -> None:
        """A worker returned a connection: serve it here from the request that made it return."""
        if self.site is None:
            os.close(fd)
            return
        try:
            os.set_blocking(fd, False)
            transport = self.reactor.adoptStreamConnection(fd, family, self.site)
        except OSError as exc:
            log.warning("could not take back a connection from worker %d: %s", worker.index, exc)
            return
        finally:
            os.close(fd)
        self.handed_back += 1
        if transport is not None and data:
            transport.protocol.dataReceived(data)

    # --- messages from workers

    def received(self, worker: Worker, message: bytes, fds: list[int]) -> None:
        try:
            header, data = decode(message)
        except ValueError:
            close_all(fds)
            log.error("worker %d sent an unreadable message; stopping it", worker.index)
            worker.process.kill()
            return
        worker.heard_at = self.reactor.seconds()
        if worker.passed_over:
            worker.passed_over = False
            log.info("worker %d is heard from again and takes new /ws connections", worker.index)
        kind = header.get("kind")
        if kind == "connection" and len(fds) == 1:
            self.take_back(worker, int(header.get("family", socket.AF_INET)), fds[0], data)
            return
        close_all(fds)
        if kind == "status":
            worker.status = header
        elif kind == "logs":
            log_records(worker.index, data)

    def lost(self, worker: Worker) -> None:
        if self.workers[worker.index] is not worker:
            return
        self.reactor.removeReader(worker.reader)
        worker.channel.close()
        self.workers[worker.index] = None
        self.keep_counters(worker.status)
        code = worker.process.wait(5) if worker.process.poll() is None else worker.process.returncode
        if self.stopping or worker.stopping:
            log.info("worker %d stopped (exit %s)", worker.index, code)
            return
        young = self.reactor.seconds() - worker.started_at < YOUNG
        self.young_deaths[worker.index] = self.young_deaths[worker.index] + 1 if young else 0
        self.retry(worker.index, f"worker {worker.index} died (exit {code}); its sessions are gone")

    def retry(self, index: int, why: str) -> None:
        """Start worker ``index`` again later.  One that keeps dying at once (a crash at start-up)
        or cannot be started is tried less and less often, not every second forever."""
        delay = min(RESPAWN_DELAY * 2 ** max(self.young_deaths[index] - 1, 0), RESPAWN_DELAY_MAX)
        log.error("%s; starting another in %.0fs", why, delay)
        self.reactor.callLater(delay, self.spawn, index)

    def keep_counters(self, status: dict) -> None:
        """Add a departed worker's counters since start (as of its last report, at most a second old)."""
        for key in CUMULATIVE:
            self.departed[key] += status.get(key, 0)
        for key, count in status.get("lookups", {}).items():
            self.departed["lookups"][key] = self.departed["lookups"].get(key, 0) + count

    # --- control

    def broadcast(self, kind: str) -> None:
        for worker in self.workers:
            if worker is not None:
                try:
                    worker.channel.send(encode(kind))
                except OSError:
                    pass

    def reload(self) -> None:
        self.broadcast("reload")

    def stop(self, timeout: float) -> Any:
        """Ask every worker to close its sessions and exit; a Deferred fires when all are gone."""
        from twisted.internet import defer

        self.stopping = True
        if self.watchdog is not None and self.watchdog.running:
            self.watchdog.stop()
        for worker in self.workers:
            if worker is not None:
                worker.stopping = True
        self.broadcast("stop")
        done: defer.Deferred = defer.Deferred()
        deadline = self.reactor.seconds() + timeout + 2

        def check() -> None:
            alive = [w for w in self.workers if w is not None and w.process.poll() is None]
            if not alive:
                done.callback(None)
            elif self.reactor.seconds() >= deadline:
                for worker in alive:
                    log.warning("worker %d did not stop in time; killing it", worker.index)
                    worker.process.kill()
                done.callback(None)
            else:
                self.reactor.callLater(0.05, check)

        check()
        return done

    def totals(self) -> dict:
        """Counters of all workers, for /system/status."""
        total: dict = {"sessions": {}, "proxied_now": 0, **{key: self.departed[key] for key in CUMULATIVE},
                       "lookups": dict(self.departed["lookups"]), "workers": [],
                       "handoffs": {"at_accept": self.handed_at_accept,
                                                   "after_parse": self.handed_after_parse,
                                                   "handed_back": self.handed_back}}
        for worker in self.workers:
            if worker is None:
                continue
            status = worker.status
            total["workers"].append({"index": worker.index, "pid": worker.process.pid, "ready": bool(status),
                                     "silent_for": round(self.quiet(worker), 1),
                                     "sessions": sum(status.get("sessions", {}).values()),
                                     "process": status.get("process", {})})
            for name, count in status.get("sessions", {}).items():
                total["sessions"][name] = total["sessions"].get(name, 0) + count
            for key in ("proxied_now", *CUMULATIVE):
                total[key] += status.get(key, 0)
            for key, count in status.get("lookups", {}).items():
                total["lookups"][key] = total["lookups"].get(key, 0) + count
        return total


def pass_on(channel: Any, head: Any, send: Callable[[int, int, bytes], bool]) -> bool:
    """Move an HTTP channel's connection to another process, from the request ``head`` on:
    ``send(fd, family, data)`` passes the socket with the head and the bytes read behind it.
    True (the channel has let go) when it did; False leaves the channel as it was."""
    transport = channel.transport
    data = replayable_head(head) + channel.parser.peek_buffer()
    if not send(transport.fileno(), transport.socket.family, data):
        return False
    channel.detach()
    release(transport)
    return True


def release(transport: Any) -> None:
    """Forget a connection that now belongs to a worker: close our descriptor without
    shutting the socket down (shutdown would end it for the worker too)."""
    transport.stopReading()
    transport.stopWriting()
    transport._shouldShutdown = False  # documented ivar of twisted.internet.tcp.Connection
    transport.loseConnection()


def close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


PEEK_SIZE = 4096  # a browser's upgrade head is well under this; a larger one goes the slow way
# seconds the kernel may hold a connection that has sent nothing yet; HTTP clients speak first
DEFER_ACCEPT = 1


class HandoffPort(ListeningPort):
    """An http:// listening port that passes connections to workers at accept.

    Without it the master builds an HTTP connection for every /ws connect,
    waits for its head, parses it and only then passes the socket on: about
    0.2 ms of the master's CPU each, which made the master the bottleneck of a
    burst of connects (/sockjs requests are passed on the same way).  Here the
    listening socket has TCP_DEFER_ACCEPT, so a connection is accepted once its
    first bytes are in; the head is only peeked at (MSG_PEEK), so the worker
    reads it from the socket itself, and the master never builds a transport
    for the connection.  Everything else
    is served exactly as by Twisted's Port.
    """

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        option = getattr(socket, "TCP_DEFER_ACCEPT", None)  # Linux; elsewhere heads are often not in yet
        if option is not None:
            skt.setsockopt(socket.IPPROTO_TCP, option, DEFER_ACCEPT)
        return skt

    def doRead(self) -> None:
        site = self.factory
        pool = getattr(site, "router", None)  # the WorkerPool once workers run (http.engine = twisted: never)
        if pool is None:
            return super().doRead()
        for _ in range(self.numberAccepts):
            try:
                skt, addr = self.socket.accept()
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError:
                return super().doRead()  # EMFILE and the like: Twisted's own handling and logging
            try:
                if self._handed_over(skt, site, pool):
                    skt.close()
                else:
                    skt.setblocking(False)
                    self._serve(skt, addr)
            except Exception:  # as Twisted's Port does: log it, and keep listening
                log.exception("serving a new connection from %s failed", addr)
                skt.close()

    def _handed_over(self, skt: socket.socket, site: Any, pool: WorkerPool) -> bool:
        try:
            head = skt.recv(PEEK_SIZE, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            return False
        if not head:
            return False
        target = worker_at_accept(head, site.limits, pool.count)
        if target is not None and pool.dispatch_fd(skt.fileno(), skt.family, b"", target):
            pool.handed_at_accept += 1
            return True
        return False

    def _serve(self, skt: socket.socket, addr: Any) -> None:
        """Twisted's Port.doRead for one accepted socket."""
        if len(addr) == 4:
            host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
            addr = tuple([host[0]] + list(addr[1:]))
        protocol = self.factory.buildProtocol(self._buildAddr(addr))
        if protocol is None:
            skt.close()
            return
        session = self.sessionno
        self.sessionno = session + 1
        transport = self.transport(skt, protocol, addr, self, session, self.reactor)
        protocol.makeConnection(transport)
