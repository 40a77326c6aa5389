"""The downstream half of an Orbited 0.7 session: packet ids, acks, resend (sans-IO).

Every packet the server queues gets the next id (1, 2, 3, ...), ``open``
excepted: it carries the current id without taking a new one, as in 0.7.
Packets stay in the queue until the client acknowledges an id at or above
theirs (``ack=<n>`` on any request).  A new downstream request gets the whole
queue again (resend) before anything new, with the original ids.

Where this differs from 0.7, on purpose and invisibly to 0.7 clients:

- data written while no response can carry it is merged into the last
  unsent data packet, so a burst between two polls is one packet, not
  hundreds (0.7's client throws past 2,000 arguments in one response);
- ``open`` is sent again with the resent packets until an ack covers it,
  so a lost first response does not leave the client waiting for ever;
- the queue counts its bytes so that the session can bound it.

No clock, no sockets, no HTTP: the session decides when to emit.
"""

from __future__ import annotations

import base64

DATA = b"data"
PING = b"ping"
CLOSE = b"close"
OPT = b"opt"
OPEN = b"open"


class QueuedPacket:
    """One packet waiting for its ack; ``body`` is raw bytes for data, text otherwise."""

    __slots__ = ("body", "id", "kind", "sealed")

    def __init__(self, packet_id: int, kind: bytes, body: bytes | bytearray, sealed: bool = True):
        self.id = packet_id
        self.kind = kind
        self.body = body
        self.sealed = sealed  # nothing may be appended (sent, or a handshake answer)

    def wire(self) -> list[bytes]:
        ident = b"%d" % self.id
        if self.kind is DATA:
            return [ident, DATA, base64.b64encode(self.body)]
        if self.body:
            return [ident, self.kind, bytes(self.body)]
        return [ident, self.kind]

    def __repr__(self) -> str:
        return f"QueuedPacket({self.id}, {self.kind!r}, {bytes(self.body)[:32]!r})"


class DownstreamQueue:
    """Packets for the browser, numbered, kept until acknowledged."""

    __slots__ = ("acked_id", "cursor", "last_id", "nbytes", "open_id", "packets", "sent_id")

    def __init__(self) -> None:
        self.packets: list[QueuedPacket] = []
        self.last_id = 0  # highest id given out
        self.sent_id = 0  # highest id put in a response
        # highest id the current downstream has carried: a resend starts it again from the ack,
        # and a resend cut at the packet limit goes on from there, not from sent_id
        self.cursor = 0
        self.acked_id = 0
        self.open_id: int | None = None  # id the open packet carried, once sent
        self.nbytes = 0  # data bytes held (unsent + unacknowledged)

    # --- queueing

    def push_data(self, data: bytes, seal: bool = False) -> int:
        """Queue bytes for the browser; returns how many bytes the queue grew by.

        ``seal`` keeps later data out of this packet: 0.7's TCPSocket reads the
        handshake answer (``1``) from a packet of its own and drops the rest.
        """
        packets = self.packets
        if packets:
            last = packets[-1]
            if last.kind is DATA and not last.sealed and last.id > self.sent_id:
                last.body += data
                last.sealed = seal
                self.nbytes += len(data)
                return len(data)
        self.last_id += 1
        packets.append(QueuedPacket(self.last_id, DATA, bytearray(data), seal))
        self.nbytes += len(data)
        return len(data)

    def push(self, kind: bytes, body: bytes = b"") -> None:
        """Queue a ``ping``, ``close`` or ``opt`` packet."""
        self.last_id += 1
        self.packets.append(QueuedPacket(self.last_id, kind, body))

    # --- acknowledgement

    def ack(self, ack_id: int) -> tuple[int, bool]:
        """The client has every packet up to ``ack_id``: drop them.

        Returns (data bytes released, whether a close packet was among them).
        An ack beyond what was sent is clamped, as in 0.7.
        """
        ack_id = min(ack_id, self.sent_id)
        if ack_id <= self.acked_id:
            return 0, False
        self.acked_id = ack_id
        packets = self.packets
        count = 0
        released = 0
        close_acked = False
        for packet in packets:
            if packet.id > ack_id:
                break
            count += 1
            if packet.kind is DATA:
                released += len(packet.body)
            elif packet.kind is CLOSE:
                close_acked = True
        del packets[:count]
        self.nbytes -= released
        return released, close_acked

    # --- emission

    @property
    def has_unsent(self) -> bool:
        """Packets the current downstream has not carried yet (new ones, or the rest of a resend)."""
        return self.last_id > max(self.cursor, self.acked_id) or self.open_id is None

    @property
    def close_queued(self) -> bool:
        return any(packet.kind is CLOSE for packet in self.packets)

    def emit(self, resend: bool, limit: int = 0) -> list[list[bytes]]:
        """Packets for a response, in wire form (lists of arguments).

        ``resend``: a new downstream request, so every unacknowledged packet
        goes again.  Otherwise only what no response has carried yet.  ``limit``
        caps the number of packets (0: no cap); the rest waits for the next
        response.  The first emission ends with ``open``.
        """
        out: list[list[bytes]] = []
        start = self.acked_id if resend else max(self.cursor, self.acked_id)
        open_id = self.open_id
        open_pending = open_id is None or (start < open_id and self.acked_id < open_id)
        for packet in self.packets:
            if packet.id <= start:
                continue
            if open_pending and open_id is not None and packet.id > open_id:
                if limit and len(out) >= limit:
                    break
                out.append([b"%d" % open_id, OPEN])
                self.cursor = open_id
                open_pending = False
            if limit and len(out) >= limit:
                break
            packet.sealed = True
            out.append(packet.wire())
            self.cursor = packet.id
            self.sent_id = max(self.sent_id, packet.id)
        else:
            if open_pending and (not limit or len(out) < limit):
                if self.open_id is None:
                    self.open_id = self.last_id
                    self.sent_id = self.last_id
                out.append([b"%d" % self.open_id, OPEN])
                self.cursor = max(self.cursor, self.open_id)
        return out
