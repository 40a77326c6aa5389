"""The five 0.7 downstream transports as data: headers, prelude, framing, heartbeat, recycling.

One :class:`DownstreamKind` per URL name (``/tcp/<key>/<name>``).  The session
does the same thing for all of them and asks its kind how to frame packets,
whether the response stays open after a write, what a heartbeat looks like
and when a stream is recycled.  No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orbited.transports.legacy.codec import encode_packets, packets_json

MAX_STREAM_BYTES = 1048576  # 0.7's MAXBYTES: a stream is ended after this much
LONGPOLL_HOLD = 30.0  # seconds a long-poll waits for something to send
# 0.7 clients parse at most 2,000 arguments per read; 500 packets are 1,500 at most.
MAX_PACKETS_PER_RESPONSE = 500

NO_CACHE = ((b"cache-control", b"no-cache, must-revalidate"),)
HTMLFILE_PRELUDE = b'<html><head><script src="../static/HTMLFileFrame.js"></script></head><body>'
HTMLFILE_PRELUDE = HTMLFILE_PRELUDE + b" " * max(0, 256 - len(HTMLFILE_PRELUDE)) + b"\n"


def htmlfile_frame(packets: list[list[bytes]]) -> bytes:
    return b"<script>e(" + packets_json(packets) + b")</script>"


def sse_frame(packets: list[list[bytes]]) -> bytes:
    # 0.7 wrote one 'data:' line per line of the JSON text; ours is one line.
    return b"Event: payload\ndata: " + packets_json(packets) + b"\n\n"


@dataclass(frozen=True, slots=True)
class DownstreamKind:
    name: str
    headers: tuple[tuple[bytes, bytes], ...]
    frame: Callable[[list[list[bytes]]], bytes]
    streaming: bool  # the response stays open after a write
    prelude: bytes = b""
    heartbeat: bytes = b""
    heartbeat_interval: float = 5.0
    hold: float = 0.0  # non-streaming: seconds to wait for packets (0: answer at once)
    max_bytes: int = 0  # streaming: end the response after this many bytes (0: never)
    acks_on_reconnect: bool = False  # the client sends ?ack= when it reopens this stream


XHRSTREAM = DownstreamKind(
    "xhrstream",
    ((b"content-type", b"application/x-orbited-event-stream"), *NO_CACHE),
    encode_packets, streaming=True, prelude=b" " * 256, heartbeat=b"x",
    max_bytes=MAX_STREAM_BYTES, acks_on_reconnect=True,
)
HTMLFILE = DownstreamKind(
    "htmlfile",
    ((b"content-type", b"text/html"), *NO_CACHE, (b"pragma", b"no-cache"), (b"expires", b"-1")),
    htmlfile_frame, streaming=True, prelude=HTMLFILE_PRELUDE, heartbeat=b"<script>h();</script>",
    max_bytes=MAX_STREAM_BYTES, acks_on_reconnect=True,
)
SSE = DownstreamKind(
    "sse",
    ((b"content-type", b"application/x-dom-event-stream"), *NO_CACHE),
    sse_frame, streaming=True, heartbeat=b"Event: heartbeat\n\n", heartbeat_interval=30.0,
)
LONGPOLL = DownstreamKind(
    "longpoll", ((b"content-type", b"text/plain"), *NO_CACHE), encode_packets,
    streaming=False, hold=LONGPOLL_HOLD,
)
POLL = DownstreamKind(
    "poll", ((b"content-type", b"text/plain"), *NO_CACHE), encode_packets, streaming=False,
)

KINDS: dict[bytes, DownstreamKind] = {
    kind.name.encode(): kind for kind in (XHRSTREAM, HTMLFILE, SSE, LONGPOLL, POLL)
}
