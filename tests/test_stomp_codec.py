"""The STOMP frame codec, alone: bytes in, frames out, and back (no sockets)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orbited.stomp.codec import (
    V10,
    V11,
    V12,
    Frame,
    FrameParser,
    Limits,
    encode_frame,
    escape,
    unescape,
)
from orbited.stomp.errors import FrameError


def parse_all(data: bytes, version: str | None = None, limits: Limits | None = None) -> list[Frame]:
    parser = FrameParser(limits, version)
    parser.feed(data)
    return parser.frames()


# --------------------------------------------------------------------------
# framing


def test_simple_frame():
    [frame] = parse_all(b"SEND\ndestination:/queue/a\n\nhello\0")
    assert frame == Frame("SEND", {"destination": "/queue/a"}, b"hello")


def test_content_length_body_holds_nuls():
    body = b"a\0b\0\0c"
    data = b"SEND\ndestination:/q\ncontent-length:%d\n\n" % len(body) + body + b"\0"
    [frame] = parse_all(data)
    assert frame.body == body


def test_content_length_zero():
    [frame] = parse_all(b"SEND\ncontent-length:0\n\n\0")
    assert frame.body == b""


def test_body_longer_than_content_length_is_an_error():
    with pytest.raises(FrameError, match="malformed frame"):
        parse_all(b"SEND\ncontent-length:2\n\nabc\0")


@pytest.mark.parametrize("value", ["-1", "1.5", "abc", " 3", "\u0663"])
def test_bad_content_length(value):
    with pytest.raises(FrameError, match="content-length"):
        parse_all(f"SEND\ncontent-length:{value}\n\nabc\0".encode())


def test_eols_between_frames_and_heartbeats_are_skipped():
    data = b"\n\r\n\nSEND\n\na\0\n\n\r\nSEND\n\nb\0\r\n"
    assert [f.body for f in parse_all(data)] == [b"a", b"b"]


def test_heartbeats_alone_yield_nothing():
    assert parse_all(b"\n\n\r\n\n") == []


def test_a_lone_cr_is_not_a_heart_beat():
    for data in (b"\n\r\rSEND\n\nx\0", b"\r\n\rSEND\n\nx\0", b"\n\rSEND\n\nx\0"):
        with pytest.raises(FrameError):
            parse_all(data, V12)
    parser = FrameParser(version=V12)
    parser.feed(b"\n\r\n\r")  # the last CR may be the start of a CR LF
    assert parser.next_frame() is None and parser.buffered == 1
    parser.feed(b"\nSEND\n\nx\0")
    assert parser.next_frame().body == b"x"


def test_a_flood_of_heart_beats_costs_little():
    """32 MiB of CR LF heart-beats took about 2 s of the reactor's one thread, octet by octet
    in Python (one client kept the broker busy sending 5-15 MB/s); searched in C, 0.1 s."""
    parser = FrameParser(version=V12)
    chunk = b"\r\n" * 32768
    started = time.perf_counter()
    for _ in range(512):
        parser.feed(chunk)
        assert parser.next_frame() is None
    assert time.perf_counter() - started < 1.0
    assert parser.buffered == 0


def test_crlf_lines_in_12_and_before_connect():
    data = b"CONNECT\r\naccept-version:1.2\r\nhost:x\r\n\r\n\0"
    [frame] = parse_all(data)
    assert frame.headers == {"accept-version": "1.2", "host": "x"}
    [frame] = parse_all(b"SEND\r\ndestination:/q\r\n\r\nx\0", V12)
    assert frame.headers == {"destination": "/q"}


def test_cr_is_an_ordinary_octet_in_11():
    [frame] = parse_all(b"SEND\nfoo:bar\r\n\nx\0", V11)
    assert frame.headers == {"foo": "bar\r"}


def test_repeated_header_first_wins():
    [frame] = parse_all(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0")
    assert frame.headers == {"foo": "World"}


def test_value_may_hold_unescaped_colon():
    [frame] = parse_all(b"SEND\ndestination:/queue/a:b\n\n\0", V10)
    assert frame.headers["destination"] == "/queue/a:b"


def test_empty_value_and_no_headers():
    [frame] = parse_all(b"DISCONNECT\nreceipt:\n\n\0")
    assert frame.headers == {"receipt": ""}
    [frame] = parse_all(b"DISCONNECT\n\n\0")
    assert frame.headers == {}


@pytest.mark.parametrize("data, message", [
    (b"send\n\n\0", None),
    (b"\x00\n\n\0", "malformed frame"),
    (b"SE ND\n\n\0", "malformed frame"),
    (b"SEND\nnocolon\n\n\0", "malformed header"),
    (b"SEND\n:value\n\n\0", "malformed header"),
    (b"SEND\nk\xff:v\n\n\0", "malformed header"),
    (b"SEND\nk:v\xc3\n\n\0", "malformed header"),
    (b"SEND\nk:a\0b\n\n\0", "malformed header"),  # a NUL would end a subscriber's MESSAGE early
    (b"SEND\nk\0:v\n\n\0", "malformed header"),
])
def test_malformed(data, message):
    if message is None:  # lower case is a well-formed but unknown command: the connection rejects it
        assert parse_all(data)[0].command == "send"
        return
    with pytest.raises(FrameError, match=message):
        parse_all(data)


def test_split_everywhere():
    data = (b"CONNECT\naccept-version:1.2\n\n\0\nSEND\ndestination:/q\ncontent-length:3\n\na\0b\0"
            b"SEND\ndestination:/q\n\nplain\0\n")
    whole = parse_all(data)
    for cut in range(len(data) + 1):
        parser = FrameParser()
        parser.feed(data[:cut])
        got = parser.frames()
        parser.feed(data[cut:])
        got += parser.frames()
        assert got == whole, cut
    parser = FrameParser()
    got = []
    for octet in data:
        parser.feed(bytes([octet]))
        got += parser.frames()
    assert got == whole


# --------------------------------------------------------------------------
# limits


def test_frame_too_large_by_content_length_fails_before_the_body_arrives():
    parser = FrameParser(Limits(max_frame_size=1024))
    parser.feed(b"SEND\ncontent-length:5000\n\n")
    with pytest.raises(FrameError, match="frame too large"):
        parser.frames()


def test_frame_too_large_without_content_length_fails_once_over_the_limit():
    parser = FrameParser(Limits(max_frame_size=1024))
    parser.feed(b"SEND\n\n" + b"x" * 1000)
    assert parser.frames() == []
    parser.feed(b"x" * 100)
    with pytest.raises(FrameError, match="frame too large"):
        parser.frames()


def test_header_line_too_long_fails_before_the_line_ends():
    parser = FrameParser(Limits(max_header_size=256))
    parser.feed(b"SEND\nk:" + b"v" * 300)
    with pytest.raises(FrameError, match="header line too long"):
        parser.frames()


def test_too_many_headers():
    headers = b"".join(b"h%d:v\n" % i for i in range(20))
    with pytest.raises(FrameError, match="too many headers"):
        parse_all(b"SEND\n" + headers + b"\n\0", limits=Limits(max_headers=10))
    parser = FrameParser(Limits(max_headers=10))
    parser.feed(b"SEND\n" + headers)  # no blank line yet: still refused
    with pytest.raises(FrameError, match="too many headers"):
        parser.frames()


def test_garbage_without_newlines_is_refused_early():
    parser = FrameParser(Limits(max_header_size=256))
    parser.feed(b"A" * 400)
    with pytest.raises(FrameError):
        parser.frames()


def test_buffer_is_compacted():
    parser = FrameParser()
    for _ in range(1000):
        parser.feed(b"SEND\n\nxxxxxxxx\0")
        assert len(parser.frames()) == 1
    assert parser.buffered == 0


# --------------------------------------------------------------------------
# escaping


def test_escape_by_version():
    text = "a:b\nc\\d\re"
    assert escape(text, V12) == "a\\cb\\nc\\\\d\\re"
    assert escape(text, V11) == "a\\cb\\nc\\\\d\re"
    assert escape(text, V10) == "a:b c\\d e"
    assert escape(text, None) == "a:b c\\d e"


@pytest.mark.parametrize("version", [V11, V12])
def test_unescape_rejects_undefined_escapes(version):
    with pytest.raises(FrameError, match="invalid header escape"):
        unescape("a\\tb", version)
    with pytest.raises(FrameError, match="invalid header escape"):
        unescape("trailing\\", version)


def test_backslash_r_is_undefined_in_11():
    with pytest.raises(FrameError):
        unescape("\\r", V11)
    assert unescape("\\r", V12) == "\r"


def test_10_has_no_escapes():
    [frame] = parse_all(b"SEND\nk:a\\tb\\c\n\n\0", V10)
    assert frame.headers == {"k": "a\\tb\\c"}


def test_connect_frames_are_not_unescaped():
    [frame] = parse_all(b"CONNECT\npasscode:a\\tb\n\n\0", V12)
    assert frame.headers == {"passcode": "a\\tb"}
    wire = encode_frame(Frame("CONNECTED", {"server": "x:y"}), V12)
    assert b"server:x:y\n" in wire


def test_non_ascii_headers_round_trip():
    frame = Frame("SEND", {"destination": "/queue/é", "grüße": "日本:語\n"}, b"")
    for version in (V11, V12):
        assert parse_all(encode_frame(frame, version), version) == [frame]


def test_encode_sets_exact_content_length():
    wire = encode_frame(Frame("SEND", {"destination": "/q", "content-length": "99"}, b"a\0b"), V12)
    assert wire == b"SEND\ndestination:/q\ncontent-length:3\n\na\0b\0"


# --------------------------------------------------------------------------
# properties

header_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
# what a frame's headers can carry: no NUL, which ends a frame (a header holding one is refused)
header_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\0"),
                        max_size=20)
names = header_values.filter(bool)


def frames_for(version: str) -> st.SearchStrategy[Frame]:
    if version == V10:
        # 1.0 cannot carry CR, LF in headers nor ':' in names.
        value = header_values.filter(lambda s: "\n" not in s and "\r" not in s)
        name = value.filter(lambda s: s and ":" not in s)
    else:
        value, name = header_values, names
    return st.builds(
        Frame,
        st.sampled_from(["SEND", "MESSAGE", "ERROR", "SUBSCRIBE", "ACK"]),
        st.dictionaries(name.filter(lambda s: s != "content-length"), value, max_size=6),
        st.binary(max_size=200),
    )


@pytest.mark.parametrize("version", [V10, V11, V12])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_round_trip_with_arbitrary_split_points(version, data):
    frames = data.draw(st.lists(frames_for(version), min_size=1, max_size=5))
    wire = b"".join(encode_frame(f, version) + data.draw(st.sampled_from([b"", b"\n", b"\n\n"])) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    parser = FrameParser(version=version)
    got: list[Frame] = []
    start = 0
    for cut in [*cuts, len(wire)]:
        parser.feed(wire[start:cut])
        got += parser.frames()
        start = cut
    expected = [Frame(f.command, {**f.headers, **({"content-length": str(len(f.body))} if f.body else {})},
                      f.body) for f in frames]
    assert got == expected
    assert parser.buffered == 0


@pytest.mark.parametrize("version", [None, V10, V11, V12])
@settings(max_examples=500, deadline=None)
@given(chunks=st.lists(st.binary(max_size=64), max_size=10))
def test_garbage_raises_only_frame_error(version, chunks):
    parser = FrameParser(Limits(max_frame_size=1024, max_headers=8, max_header_size=256), version)
    try:
        for chunk in chunks:
            parser.feed(chunk)
            for frame in parser.frames():
                assert isinstance(frame.command, str) and isinstance(frame.body, bytes)
    except FrameError as exc:
        assert exc.message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80).map(lambda b: b"SEND\n" + b))
def test_frame_like_garbage_raises_only_frame_error(data):
    try:
        parse_all(data + b"\n\n\0", V12)
    except FrameError:
        pass


@pytest.mark.parametrize("version", [V11, V12])
@given(header_text)
def test_escape_round_trip(version, text):
    assert unescape(escape(text, version), version) == text
