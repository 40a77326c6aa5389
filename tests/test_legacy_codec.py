"""The sans-IO cores of /tcp: packet codec, downstream queue, upstream de-duplication."""

from __future__ import annotations

import base64
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orbited.transports.legacy.codec import (
    PacketDecoder,
    PacketError,
    decode_packets,
    encode_packet,
    encode_packets,
    packets_json,
)
from orbited.transports.legacy.queue import CLOSE, OPT, PING, DownstreamQueue
from orbited.transports.legacy.upstream import CLOSE as CLOSE_EVENT
from orbited.transports.legacy.upstream import PING as PING_EVENT
from orbited.transports.legacy.upstream import Data, UpstreamReader

# The worked examples of the 0.7 reference, byte for byte.
OPENING = b"11,113,opt014,pingTimeout,3011,213,opt015,pingInterval,4011,204,open"
HANDSHAKE = b"11,114,data024,bG9jYWxob3N0OjYxNjEzCg=="
SUCCESS = b"11,314,data04,MQ=="
DENIAL = b"11,314,data08,MDEwNg=="
SERVER_PING = b"11,404,ping"
SERVER_CLOSE = b"11,515,close014,loseConnection"


def test_worked_examples_encode():
    assert encode_packets([[b"1", b"opt", b"pingTimeout,30"], [b"2", b"opt", b"pingInterval,40"],
                           [b"2", b"open"]]) == OPENING
    assert encode_packet([b"1", b"data", base64.b64encode(b"localhost:61613\n")]) == HANDSHAKE
    assert encode_packet([b"3", b"data", base64.b64encode(b"1")]) == SUCCESS
    assert encode_packet([b"3", b"data", base64.b64encode(b"0106")]) == DENIAL
    assert encode_packet([b"4", b"ping"]) == SERVER_PING
    assert encode_packet([b"5", b"close", b"loseConnection"]) == SERVER_CLOSE


def test_worked_examples_decode():
    assert decode_packets(OPENING) == [[b"1", b"opt", b"pingTimeout,30"],
                                       [b"2", b"opt", b"pingInterval,40"], [b"2", b"open"]]
    assert decode_packets(HANDSHAKE + SERVER_PING) == [
        [b"1", b"data", b"bG9jYWxob3N0OjYxNjEzCg=="], [b"4", b"ping"]]


def test_empty_and_comma_arguments():
    packet = [b"7", b"", b",,,", b"0,1,"]
    assert decode_packets(encode_packet(packet)) == [packet]
    assert decode_packets(b"") == []


def test_stream_decoder_skips_prelude_and_heartbeats():
    decoder = PacketDecoder(skip=b" x")
    stream = b" " * 256 + OPENING + b"xx" + SUCCESS + b"x"
    packets = [p for i in range(len(stream)) for p in decoder.feed(stream[i:i + 1])]
    assert [p[1] for p in packets] == [b"opt", b"opt", b"open", b"data"]
    assert not decoder.pending


@pytest.mark.parametrize("garbage", [
    b"2", b"x1,a", b"1a,b", b"0,", b"0-1,", b"1" + b"9" * 20 + b",", b"03,ab", b"0 3,abc",
    b"11,a" * 9, b"\xff", b"02,ab1",
])
def test_garbage_is_a_packet_error(garbage):
    with pytest.raises(PacketError):
        decode_packets(garbage)


def test_argument_limit():
    decoder = PacketDecoder(max_argument=3)
    with pytest.raises(PacketError):
        decoder.feed(b"04,abcd")


packets_strategy = st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=5), max_size=8)


def whole_body_by_stream_decoder(data: bytes) -> object:
    """What decode_packets must answer for ``data``: the incremental decoder's packets, or its error."""
    decoder = PacketDecoder()
    try:
        packets = decoder.feed(data)
    except PacketError as exc:
        return str(exc)
    return "body ends inside a packet" if decoder.pending else packets


def whole_body(data: bytes) -> object:
    try:
        return decode_packets(data)
    except PacketError as exc:
        return str(exc)


def test_exhaustive_short_inputs_never_raise_anything_else():
    """Every string up to 5 bytes over the codec's alphabet; the whole-body decoder agrees with the
    incremental one on every packet and every error."""
    alphabet = b"01,9a x"
    for size in range(6):
        for combo in itertools.product(alphabet, repeat=size):
            data = bytes(combo)
            assert whole_body(data) == whole_body_by_stream_decoder(data), data
            try:
                PacketDecoder(skip=b" x").feed(data)
            except PacketError:
                pass


@given(packets_strategy, st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.binary(max_size=3)), max_size=4))
def test_whole_body_decoder_agrees_with_the_incremental_one(packets, edits):
    """Valid bodies with bytes replaced, cut or inserted: the same packets or the same error."""
    data = encode_packets(packets)
    for at, replacement in edits:
        at = min(at, len(data))
        data = data[:at] + replacement + data[at + len(replacement) // 2:]
    assert whole_body(data) == whole_body_by_stream_decoder(data)


@given(packets_strategy)
def test_roundtrip(packets):
    assert decode_packets(encode_packets(packets)) == packets


@given(packets_strategy, st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_arbitrary_splits(packets, cuts):
    data = encode_packets(packets)
    points = sorted({min(c, len(data)) for c in cuts})
    decoder = PacketDecoder()
    out = []
    start = 0
    for point in [*points, len(data)]:
        out += decoder.feed(data[start:point])
        start = point
    assert out == packets
    assert not decoder.pending


@given(st.binary(max_size=200))
def test_garbage_raises_only_packet_error(data):
    try:
        decode_packets(data)
    except PacketError:
        pass


@given(st.binary(max_size=200))
def test_upstream_garbage_raises_only_packet_error(data):
    try:
        UpstreamReader().read(data)
    except PacketError:
        pass


def test_packets_json_is_script_safe():
    text = packets_json([[b"1", b"close", b"</script><b>&"]])
    assert b"<" not in text and b">" not in text and b"&" not in text
    assert text.startswith(b'[["1","close","')


# --------------------------------------------------------------------------- queue


def wire(packets):
    return encode_packets(packets)


def test_queue_opening_burst_matches_the_reference():
    queue = DownstreamQueue()
    queue.push(OPT, b"pingTimeout,30")
    queue.push(OPT, b"pingInterval,40")
    assert wire(queue.emit(resend=True)) == OPENING
    queue.push_data(b"1", seal=True)
    assert wire(queue.emit(resend=False)) == SUCCESS
    queue.push(PING)
    assert wire(queue.emit(resend=False)) == SERVER_PING
    queue.push(CLOSE, b"loseConnection")
    assert wire(queue.emit(resend=False)) == SERVER_CLOSE


def test_queue_ack_and_resend_keep_ids():
    queue = DownstreamQueue()
    queue.push(OPT, b"a")
    queue.emit(resend=True)  # 1 opt, open(1)
    queue.push_data(b"x")
    queue.emit(resend=False)  # 2
    queue.push_data(b"y")  # 3, not merged into the sent packet
    assert [p[0] for p in queue.emit(resend=False)] == [b"3"]
    assert queue.nbytes == 2
    released, closed = queue.ack(2)
    assert (released, closed) == (1, False)
    assert [p[:2] for p in queue.emit(resend=True)] == [[b"3", b"data"]]
    assert queue.ack(99) == (1, False)  # clamped to what was sent
    assert queue.packets == [] and queue.acked_id == 3


def test_queue_resends_open_until_acknowledged():
    queue = DownstreamQueue()
    queue.push(OPT, b"a")
    queue.push(OPT, b"b")
    first = queue.emit(resend=True)
    assert first[-1] == [b"2", b"open"]
    queue.push_data(b"z")
    again = queue.emit(resend=True)  # the first response was lost
    assert [p[1] for p in again] == [b"opt", b"opt", b"open", b"data"]
    queue.ack(2)
    assert [p[1] for p in queue.emit(resend=True)] == [b"data"]


def test_a_resend_cut_at_the_packet_limit_goes_on_where_it_stopped():
    """A stream that reconnected with 699 packets unacknowledged got 500 of them back, then only
    new ones: ids 505 to 703 were never sent again, and the page's byte stream lost them."""
    queue = DownstreamQueue()
    queue.emit(resend=True)  # open (id 0)
    for n in range(700):
        queue.push_data(b"%d" % n, seal=True)
        queue.emit(resend=False)  # each carried by the stream that then broke
    queue.ack(4)
    ids = [int(p[0]) for p in queue.emit(resend=True, limit=500)]  # the new stream
    while queue.has_unsent:
        ids += [int(p[0]) for p in queue.emit(resend=False, limit=500)]
    queue.push_data(b"new", seal=True)
    ids += [int(p[0]) for p in queue.emit(resend=False, limit=500)]
    assert ids == list(range(5, 702)), ids[495:510]


def test_queue_merges_unsent_data_but_not_the_handshake_answer():
    queue = DownstreamQueue()
    queue.emit(resend=True)
    queue.push_data(b"1", seal=True)
    queue.push_data(b"ab")
    queue.push_data(b"cd")
    packets = queue.emit(resend=False)
    assert [base64.b64decode(p[2]) for p in packets] == [b"1", b"abcd"]


def test_queue_close_ack_is_reported():
    queue = DownstreamQueue()
    queue.emit(resend=True)
    queue.push(CLOSE, b"loseConnection")
    queue.emit(resend=False)
    assert queue.ack(1) == (0, True)


def test_queue_limit_keeps_the_rest():
    queue = DownstreamQueue()
    queue.emit(resend=True)
    for _ in range(5):
        queue.push(PING)
    assert len(queue.emit(resend=False, limit=3)) == 3
    assert queue.has_unsent
    assert [p[0] for p in queue.emit(resend=False, limit=3)] == [b"4", b"5"]


# --------------------------------------------------------------------------- upstream


def body(*packets):
    return encode_packets(packets)


def test_upstream_events():
    reader = UpstreamReader()
    events = reader.read(body([b"1", b"data", base64.b64encode(b"hi")], [b"2", b"ping", b""],
                              [b"3", b"close"]))
    assert events == [Data(b"hi"), PING_EVENT, CLOSE_EVENT]


def test_upstream_retry_is_delivered_once():
    reader = UpstreamReader()
    first = body([b"1", b"data", b"YQ=="], [b"2", b"data", b"Yg=="])
    assert reader.read(first) == [Data(b"a"), Data(b"b")]
    # the answer was lost; the client retries with one more packet appended
    retry = first + body([b"3", b"data", b"Yw=="])
    assert reader.read(retry) == [Data(b"c")]
    assert reader.duplicates == 2


@pytest.mark.parametrize("bad", [
    body([b"x", b"data", b"YQ=="]), body([b"1", b"data", b"not base64!"]), body([b"1"]),
    body([b"1", b"data"]), b"11,1",
])
def test_upstream_bad_body_changes_nothing(bad):
    reader = UpstreamReader()
    with pytest.raises(PacketError):
        reader.read(body([b"1", b"data", b"YQ=="]) + bad)
    assert reader.last_id == 0
    assert reader.read(body([b"1", b"data", b"YQ=="])) == [Data(b"a")]


def test_upstream_unknown_names_are_ignored():
    assert UpstreamReader().read(body([b"1", b"frob", b"x"])) == []
