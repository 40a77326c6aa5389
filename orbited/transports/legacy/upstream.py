"""The upstream half of an Orbited 0.7 session: POST bodies -> events, once each (sans-IO).

0.7 clients number their upstream packets 1, 2, 3, ... and retry a POST
whose answer they did not get, with the same ids (and possibly more packets
appended).  0.7's server ignored the ids, so a retried POST reached the
backend twice.  :class:`UpstreamReader` remembers the highest id it has
passed on and drops anything at or below it.

A body is checked whole before any of it counts: a malformed body is a
:class:`~orbited.transports.legacy.codec.PacketError` (HTTP 400) and changes
nothing, so the client's retry of a good body still works.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from dataclasses import dataclass

from orbited.transports.legacy.codec import PacketError, decode_packets

MAX_ID_DIGITS = 15


@dataclass(frozen=True, slots=True)
class Data:
    """Bytes for the backend."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The browser closed the socket."""


@dataclass(frozen=True, slots=True)
class Ping:
    """The client answered a ping (the request itself already proved it alive)."""


Event = Data | Close | Ping
CLOSE = Close()
PING = Ping()


def parse_id(raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > MAX_ID_DIGITS:
        raise PacketError(f"packet id {raw[:20]!r} is not a number")
    return int(raw)


class UpstreamReader:
    """Turns POST bodies into events, each upstream packet id at most once."""

    __slots__ = ("duplicates", "last_id")

    def __init__(self) -> None:
        self.last_id = 0
        self.duplicates = 0  # packets dropped as already delivered

    def read(self, body: bytes) -> list[Event]:
        """Events from one body, in order, without those already delivered."""
        checked: list[tuple[int, Event | None]] = []
        for packet in decode_packets(body):
            if len(packet) < 2:
                raise PacketError("a packet needs an id and a name")
            packet_id = parse_id(packet[0])
            name = packet[1]
            if name == b"data":
                if len(packet) != 3:
                    raise PacketError("a data packet has an id, 'data' and a payload")
                try:
                    payload = b64decode(packet[2], validate=True)
                except (binascii.Error, ValueError):
                    raise PacketError(f"data packet {packet_id} is not base64") from None
                checked.append((packet_id, Data(payload)))
            elif name == b"close":
                checked.append((packet_id, CLOSE))
            elif name == b"ping":
                checked.append((packet_id, PING))
            else:
                checked.append((packet_id, None))  # unknown names were ignored by 0.7 too
        events: list[Event] = []
        for packet_id, event in checked:
            if packet_id <= self.last_id:
                self.duplicates += 1
                continue
            self.last_id = packet_id
            if event is not None:
                events.append(event)
        return events
