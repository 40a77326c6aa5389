"""Twisted's epoll reactor, changed in two ways that matter to a busy relay.

1. Writes go out at the end of the loop iteration in which they were made.
   Stock Twisted buffers ``transport.write`` data and registers the socket
   for EPOLLOUT (an ``epoll_ctl``), sends on the next iteration when epoll
   reports it writable, then unregisters it (another ``epoll_ctl``).  Here a
   socket that starts writing is only noted; once every ready event of the
   iteration has been handled, each noted socket is sent to directly (its
   ``doWrite``, as epoll would have triggered).  Only what the kernel does
   not take is registered for EPOLLOUT as before.  That saves the two
   ``epoll_ctl`` calls and a loop turn per write, and under load it batches:
   the sends of a whole iteration leave back to back, so a peer process that
   woke for the first one is still awake for the rest, instead of being woken
   (on this VM, an inter-processor interrupt each) once per message.
   Measured on /tcp xhrstream with 50 sessions: about a fifth less server CPU
   per round trip and a third less in the load client, against sending each
   write at once (docs/performance.md has the figures).  A write made outside
   event handling (a timer, a thread's callFromThread) goes out before the
   loop next waits.  Ordering per socket is Twisted's own buffer, unchanged.
   The STOMP broker, which batches its fan-out itself, sends at once instead
   (orbited.directwrite says why).
   A pull producer (a static file) still gets one chunk per iteration: a
   writer that starts writing again from its own ``doWrite`` is registered
   for EPOLLOUT, so one big download cannot hold the loop.

2. No log context per event.  For each ready descriptor, stock ``doPoll``
   calls ``log.callWithLogger``: the selectable's ``logPrefix()``, a copy of
   the legacy log context dict, a context push and pop, and only then the
   read or write.  That context names the ``system`` of Twisted's legacy
   ``log.msg`` lines, which Orbited does not use (it logs with the stdlib
   ``logging`` module); it cost about a tenth of the server's CPU per
   delivered message on /sockjs long-polling.  Errors are handled as before:
   ``_doReadOrWrite`` logs what ``doRead``/``doWrite`` raise and disconnects
   that selectable; anything escaping is logged and the loop goes on.

3. Short paths for Twisted's own TCP transports.  A plain read event goes
   from ``recv`` straight to the protocol, and a write the kernel takes
   whole (the usual case) is one ``send`` with the buffer reset, instead of
   ``doWrite``'s general bookkeeping and the ``stopWriting`` that follows.
   Everything else -- a partial send, a producer to resume, a close to
   finish, a client still connecting, TLS, errors -- takes Twisted's code as
   before.  Measured on /tcp xhrstream (50 sessions, alternating A/B by
   hand, 6 pairs): server CPU per round trip median 161 vs 170 µs.

Installed by default where epoll exists (``[global] reactor``: unset,
``default`` or ``epoll``); ``poll`` or ``select`` run Twisted's stock code.
"""

from __future__ import annotations

import errno
import select
from typing import Any

from twisted.internet import tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.python import log

from orbited.directwrite import sends_directly

FLUSH_PASSES = 4  # writes made while flushing (by other sockets' doWrite) get this many passes
# Twisted's own TCP transports: their reads and simple writes take the short paths below
# (tests/test_reactor.py pins the FileDescriptor attributes these read and reset).
PLAIN_TCP = frozenset({tcp.Server, tcp.Client})
EPOLLIN = select.EPOLLIN


class LeanEPollReactor(EPollReactor):
    def __init__(self) -> None:
        self._pending: dict[Any, None] = {}  # writers noted this iteration, in order; not in epoll
        super().__init__()

    # writers

    def addWriter(self, writer: Any) -> None:
        if writer.fileno() in self._writes:
            return  # already waiting for EPOLLOUT: the kernel's buffer is full
        self._pending[writer] = None

    def removeWriter(self, writer: Any) -> None:
        if self._pending.pop(writer, False) is None:
            return
        super().removeWriter(writer)

    def getWriters(self) -> list[Any]:
        return super().getWriters() + list(self._pending)

    def removeAll(self) -> list[Any]:
        pending = [writer for writer in self._pending if writer.fileno() not in self._reads]
        self._pending.clear()
        return super().removeAll() + pending

    def _flush(self) -> None:
        pending = self._pending
        for _ in range(FLUSH_PASSES):
            if not pending:
                return
            for writer in list(pending):
                if writer not in pending:
                    continue  # stopped writing meanwhile
                if writer.__class__ in PLAIN_TCP and _send_all(writer):
                    del pending[writer]
                    continue
                try:
                    why = writer.doWrite()
                except Exception as exc:  # noqa: BLE001 (as _doReadOrWrite: log, then disconnect it)
                    why = exc
                    log.err()
                if writer in pending:
                    # Still writing: the kernel took only part, or it started again from its own
                    # doWrite (a pull producer's next chunk).  epoll tells when to go on.
                    del pending[writer]
                    if not why:
                        self._register(writer)
                if why:
                    self._disconnectSelectable(writer, why, False)
        for writer in list(pending):
            del pending[writer]
            self._register(writer)

    def _register(self, writer: Any) -> None:
        """Wait for EPOLLOUT the stock way; a descriptor epoll refuses ends that connection, logged."""
        try:
            EPollReactor.addWriter(self, writer)
        except OSError as exc:
            log.err(None, f"cannot wait to write on {writer!r}")
            self._disconnectSelectable(writer, exc, False)

    # the loop

    def doPoll(self, timeout: float | None) -> None:
        if self._pending:
            self._flush()  # written by timers or threads since the last iteration
            # What the flush ran may have scheduled calls: a connect refused at once goes on to
            # the next address with callLater(0).  The timeout was reckoned before: without
            # this, that call waited for the next timer (the 1 s sweep), past connect_timeout.
            due = self.timeout()
            if due is not None and (timeout is None or due < timeout):
                timeout = due
        try:
            events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event == EPOLLIN and selectable.__class__ in PLAIN_TCP and selectable.connected:
                # (a client still connecting has doConnect as its doRead: the stock path)
                self._read(selectable)
            else:
                try:
                    dispatch(selectable, fd, event)
                except Exception:  # noqa: BLE001 (one bad event must not stop the loop, as in callWithLogger)
                    log.err(None, "unhandled error dispatching an event")
        if self._pending:
            self._flush()

    doIteration = doPoll

    def _read(self, connection: Any) -> None:
        """Twisted's ``_doReadOrWrite`` + ``Connection.doRead`` for a plain read event, without the
        generic checks; errors end the connection the same way, logged."""
        try:
            data = connection.socket.recv(connection.bufferSize)
        except BlockingIOError:
            return
        except OSError:
            self._disconnectSelectable(connection, CONNECTION_LOST, True)
            return
        if not data:
            self._disconnectSelectable(connection, CONNECTION_DONE, True)
            return
        try:
            connection.protocol.dataReceived(data)
        except BaseException as exc:  # noqa: BLE001 (as _doReadOrWrite: log it, drop that connection)
            log.err()
            self._disconnectSelectable(connection, exc, True)


def _send_all(connection: Any) -> bool:
    """Send what ``transport.write`` buffered on a plain TCP connection in one call.

    True when the kernel took all of it and nothing else was due (Twisted's ``doWrite`` would
    only have reset the buffer and stopped writing).  False leaves the connection to
    ``doWrite`` unchanged or with the unsent tail moved into its ``dataBuffer``: a partial
    send, an error to report, a producer to resume, a close to finish, a client still
    connecting (its doWrite is doConnect), TLS, or over ``SEND_LIMIT``.
    """
    if not sends_directly(connection):
        return False
    chunks = connection._tempDataBuffer
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if len(data) > connection.SEND_LIMIT:
        return False
    try:
        sent = connection.socket.send(data)
    except OSError:
        return False  # doWrite sends again and reports the error (or EAGAIN) its own way
    connection._tempDataBuffer = []
    connection._tempDataLen = 0
    if sent == len(data):
        return True
    connection.dataBuffer = data
    connection.offset = sent
    return False


def install() -> None:
    from twisted.internet.main import installReactor

    installReactor(LeanEPollReactor())
