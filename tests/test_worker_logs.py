"""Log records from workers: batched per reactor iteration, logged by the master at the time they were made.

The end-to-end path (a worker's connect lines in the master's log, lines logged before a worker's reactor
runs) is covered by tests/test_workers.py on real processes; these pin the batching and the master's side.
"""

from __future__ import annotations

import json
import logging
import socket
import threading

import pytest
from twisted.python import threadable

from orbited.worker import LOG_BACKLOG, LOG_BATCH_SIZE, LOG_RETRY, ChannelLogHandler
from orbited.workers import MESSAGE_LIMIT, decode, log_records


class Loop:
    """The reactor calls ChannelLogHandler makes, run by hand."""

    def __init__(self) -> None:
        self.later: list = []
        self.from_thread: list = []
        self.triggers: list = []

    def callLater(self, delay: float, f, *args) -> None:
        self.later.append((delay, f))

    def callFromThread(self, f, *args) -> None:
        self.from_thread.append(f)

    def addSystemEventTrigger(self, phase: str, event: str, f) -> None:
        self.triggers.append((phase, event, f))

    def run_later(self) -> None:
        calls, self.later = self.later, []
        for _delay, f in calls:
            f()


@pytest.fixture
def channel():
    worker_end, master_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    worker_end.setblocking(False)
    master_end.setblocking(False)
    yield worker_end, master_end
    worker_end.close()
    master_end.close()


@pytest.fixture
def logger(channel):
    handler = ChannelLogHandler(channel[0])
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("orbited.test_worker_logs")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


@pytest.fixture
def batching(logger):
    """The handler once the worker's reactor runs (the test is its reactor thread)."""
    log, handler = logger
    loop = Loop()
    threadable.registerAsIOThread()
    handler.start_batching(loop)
    return log, handler, loop


def messages(master_end: socket.socket) -> list[tuple[dict, list]]:
    found = []
    while True:
        try:
            message = master_end.recv(MESSAGE_LIMIT)
        except BlockingIOError:
            return found
        header, data = decode(message)
        found.append((header, json.loads(data)))


def test_records_before_the_reactor_runs_go_one_message_each(channel, logger):
    log, _handler = logger
    log.info("reading the config")
    log.warning("cannot drop privileges")
    sent = messages(channel[1])
    assert [header["kind"] for header, _ in sent] == ["logs", "logs"]
    assert [[entry[0], entry[1], entry[3]] for _, batch in sent for entry in batch] == [
        [logging.INFO, "orbited.test_worker_logs", "reading the config"],
        [logging.WARNING, "orbited.test_worker_logs", "cannot drop privileges"]]


def test_records_of_one_reactor_iteration_go_as_one_message_with_their_own_times(channel, batching):
    log, handler, loop = batching
    made: list[float] = []

    def note_time(record: logging.LogRecord) -> bool:
        made.append(record.created)
        return True

    log.addFilter(note_time)
    log.info("ws 127.0.0.1:1 connected")
    log.info("ws 127.0.0.1:2 connected")
    log.error("ws 127.0.0.1:1 closed: é \u2603")
    log.removeFilter(note_time)
    assert messages(channel[1]) == []  # nothing before the iteration ends
    assert len(loop.later) == 1 and loop.later[0][0] == 0  # one flush for the three
    loop.run_later()
    sent = messages(channel[1])
    assert len(sent) == 1
    assert sent[0][1] == [[logging.INFO, "orbited.test_worker_logs", made[0], "ws 127.0.0.1:1 connected"],
                          [logging.INFO, "orbited.test_worker_logs", made[1], "ws 127.0.0.1:2 connected"],
                          [logging.ERROR, "orbited.test_worker_logs", made[2], "ws 127.0.0.1:1 closed: é \u2603"]]
    log.info("next iteration")
    assert len(loop.later) == 1
    assert ("after", "shutdown", handler.flush) in loop.triggers  # lines logged while stopping still go


def test_a_batch_past_its_size_goes_at_once(channel, batching):
    log, _handler, loop = batching
    line = "x" * 4096
    for _ in range(LOG_BATCH_SIZE // len(line)):
        log.info(line)
    sent = messages(channel[1])
    assert len(sent) == 1 and len(sent[0][1]) == LOG_BATCH_SIZE // len(line)
    loop.run_later()  # the flush scheduled for the first record finds nothing left
    assert messages(channel[1]) == []


def test_lines_wait_for_a_master_that_does_not_read_and_past_the_backlog_are_counted(channel, batching):
    log, handler, loop = batching
    line = "y" * 10_000
    logged = 0
    while not handler.retrying:  # the master reads nothing: the channel fills up
        log.info("%d %s", logged, line)
        logged += 1
    assert loop.later[-1] == (LOG_RETRY, handler.flush)
    while handler.pending_size + len(line) + 8 <= LOG_BACKLOG:  # held here, not sent, not retried early
        log.info("%d %s", logged, line)
        logged += 1
    for _ in range(3):
        log.info("%d %s", logged, line)
        logged += 1
    assert handler.dropped == 3
    received: list[list] = []
    while handler.pending:
        received += [entry for _, batch in messages(channel[1]) for entry in batch]
        loop.later.clear()
        handler.flush()  # the retry, once the master has read
    received += [entry for _, batch in messages(channel[1]) for entry in batch]
    notes = [entry for entry in received if entry[1] == "orbited.worker"]
    assert [entry[3] for entry in notes] == ["3 log lines were dropped: the master did not read them in time"]
    assert notes[0][0] == logging.WARNING
    numbers = [int(entry[3].split()[0]) for entry in received if entry[1] != "orbited.worker"]
    assert numbers == list(range(logged - 3))  # every line held arrived, in order; the last three were dropped


def test_a_record_from_another_thread_wakes_the_reactor(channel, batching):
    log, handler, loop = batching
    thread = threading.Thread(target=log.info, args=("resolved localhost",))
    thread.start()
    thread.join()
    assert loop.later == [] and loop.from_thread == [handler.flush]
    loop.from_thread.pop()()
    assert [entry[3] for _, batch in messages(channel[1]) for entry in batch] == ["resolved localhost"]


def test_lines_for_a_master_that_is_gone_are_dropped_without_an_error(channel, logger):
    log, handler = logger
    channel[1].close()
    log.info("nobody hears this")  # before the reactor: sent at once, and refused
    loop = Loop()
    handler.start_batching(loop)
    log.info("nor this")
    handler.flush()
    assert handler.pending == []


def test_the_master_logs_each_record_as_the_worker_made_it(channel, logger, caplog):
    log, handler = logger
    log.info("ws 127.0.0.1:1 connected")
    log.debug("not for the master")
    log.info("bad text \udcff")
    log.removeHandler(handler)  # from here on this process is the master
    caplog.set_level(logging.INFO, logger="orbited.test_worker_logs")
    sent = []
    while True:
        try:
            sent.append(decode(channel[1].recv(MESSAGE_LIMIT)))
        except BlockingIOError:
            break
    for _header, data in sent:
        log_records(1, data)
    ours = [record for record in caplog.records if record.pathname == "(worker)"]
    assert [record.getMessage() for record in ours] == ["[worker 1] ws 127.0.0.1:1 connected",
                                                       "[worker 1] bad text ?"]
    made = json.loads(sent[0][1])[0][2]
    assert ours[0].created == made
    assert ours[0].msecs == pytest.approx((made - int(made)) * 1000)


@pytest.mark.parametrize("data", [b"not json", b'{"a": 1}', b'[[20, "orbited"]]', b'[["info", "x", 1.0, "m"]]'])
def test_unreadable_records_are_reported_and_the_master_goes_on(data, caplog):
    log_records(2, data)
    assert any(record.levelno == logging.ERROR and "worker 2 sent unreadable log records" in record.getMessage()
               for record in caplog.records)
