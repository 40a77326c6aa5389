"""Send to a TCP socket now when nothing is queued for it, instead of at the end of the loop iteration.

orbited.reactor sends what ``transport.write`` buffered once the iteration's
events have been handled: under load that batches a relay's sends and saves
CPU on every side.  The STOMP broker is the exception.  It has already
batched its output (one write per subscriber per fan-out), and deferring
those writes only makes the first subscribers wait until the last one's frame
is encoded: measured on the stomp_fanout load (1,000 subscribers, 10,000
deliveries/s), publish-to-receive p50 12.2-12.3 ms sent at once against
14.4-15.5 ms deferred, p99 27.8-30.5 against 32.1-33.3.

When the transport has nothing queued (nothing pending from this iteration
either), a direct non-blocking ``send`` is equivalent and sooner; whatever the
kernel does not take goes through ``transport.write`` as before, so ordering,
flow control (producer pausing) and error handling stay Twisted's.

This reads Twisted's ``FileDescriptor`` buffer attributes (``dataBuffer``,
``_tempDataLen``, ``_writeDisconnected``, ...); tests/test_directwrite.py and
tests/test_reactor.py pin them.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.tcp import Connection


def sends_directly(connection: Any) -> bool:
    """Whether Twisted's ``doWrite`` would do nothing but send for this TCP connection.

    Connected, no TLS of its own, nothing left over from a partial send, no
    close or half-close under way, and no producer waiting to be asked for
    more (a pull producer such as a static file is asked only when Twisted's
    buffer drains; a paused push producer is resumed then).  Shared by
    :func:`write_now` and the lean reactor's end-of-iteration send
    (orbited.reactor), which both bypass ``doWrite`` only then.
    """
    producer = connection.producer
    return bool(
        connection.connected
        and not connection.TLS
        and not connection.dataBuffer
        and not connection.disconnecting
        and not connection._writeDisconnecting
        and not connection._writeDisconnected
        and (producer is None or (connection.streamingProducer and not connection.producerPaused))
    )


def unsent_bytes(transport: Any) -> int:
    """How many bytes written to ``transport`` still wait for the kernel: queued in this loop
    iteration, or left over from a partial send (with TLS: the encrypted bytes, which Twisted
    keeps in the same buffers).  0 for transports without Twisted's ``FileDescriptor``
    buffers (test transports)."""
    return getattr(transport, "_tempDataLen", 0) + max(
        0, len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0))


def write_now(transport: Any, data: bytes) -> None:
    if isinstance(transport, Connection) and not transport._tempDataLen and sends_directly(transport):
        # writeSomeData is Twisted's own send: it maps EWOULDBLOCK to 0 and a
        # failed socket to an exception value, which transport.write then handles.
        sent = transport.writeSomeData(data)
        if type(sent) is int:
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)
