"""The sans-IO request parser of orbited.http: rules, limits, errors, split points, and h11 as a referee."""

from __future__ import annotations

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orbited.http.chunked import CHUNKED_DONE, ChunkedReader
from orbited.http.events import NEED_DATA, BodyData, EndOfRequest, RequestError, RequestHead
from orbited.http.parser import Limits, RequestParser

GET = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"


def run(chunks: list[bytes] | bytes, limits: Limits | None = None) -> list:
    """Events from feeding ``chunks`` one by one, with BodyData merged, ending in NEED_DATA or ('error', status)."""
    if isinstance(chunks, bytes):
        chunks = [chunks]
    parser = RequestParser(limits)
    out: list = []

    def drain() -> bool:
        while True:
            try:
                event = parser.next_event()
            except RequestError as error:
                out.append(("error", error.status))
                return False
            if event is NEED_DATA:
                return True
            if isinstance(event, BodyData) and out and isinstance(out[-1], BodyData):
                out[-1] = BodyData(out[-1].data + event.data)
            elif isinstance(event, BodyData) and not event.data:
                pass
            else:
                out.append(event)
            if isinstance(event, EndOfRequest):
                parser.next_request()

    for chunk in chunks:
        parser.feed(chunk)
        if not drain():
            return out
    return out


def error_of(data: bytes, limits: Limits | None = None) -> int | None:
    events = run(data, limits)
    return events[-1][1] if events and isinstance(events[-1], tuple) else None


def heads(events: list) -> list[RequestHead]:
    return [event for event in events if isinstance(event, RequestHead)]


# --------------------------------------------------------------------------- heads


def test_a_simple_get():
    events = run(GET)
    assert len(events) == 2 and isinstance(events[1], EndOfRequest)
    head = events[0]
    assert (head.method, head.target, head.version) == (b"GET", b"/", b"HTTP/1.1")
    assert head.headers == {b"host": [b"example"]}
    assert head.keep_alive and head.content_length is None and not head.chunked
    assert head.raw == GET


def test_header_names_are_lower_cased_values_trimmed_and_repeats_kept():
    events = run(b"GET /x?y=1 HTTP/1.1\r\nHOST: h\r\nX-A:  one \t\r\nx-a:two\r\nEmpty:\r\n"
                 b"Latin: caf\xe9\r\n\r\n")
    head = events[0]
    assert head.target == b"/x?y=1"
    assert head.headers == {b"host": [b"h"], b"x-a": [b"one", b"two"], b"empty": [b""], b"latin": [b"caf\xe9"]}
    assert head.header(b"x-a") == b"two" and head.header(b"nope") is None


def test_bare_lf_line_ends_are_accepted():
    events = run(b"GET / HTTP/1.1\nHost: h\n\n")
    assert heads(events)[0].headers == {b"host": [b"h"]}
    events = run(b"GET / HTTP/1.1\nHost: h\r\n\n")
    assert heads(events)[0].headers == {b"host": [b"h"]}


def test_empty_lines_before_a_request_are_skipped_but_bounded():
    assert len(heads(run(b"\r\n\n\r\n" + GET))) == 1
    assert error_of(b"\r\n" * 9 + GET) == 400
    assert run(b"\r") == []  # a CR alone waits for its LF
    assert error_of(b"\rGET / HTTP/1.1\r\n\r\n") == 400


@pytest.mark.parametrize("line", [
    b"GET  / HTTP/1.1", b"GET / HTTP/1.1 ", b" GET / HTTP/1.1", b"GET /", b"GET", b"G(T / HTTP/1.1",
    b"GET / http/1.1", b"GET / HTTP/1", b"GET / HTTP/10.0", b"GET /\x00 HTTP/1.1", b"GET /\xff HTTP/1.1",
    b"GET /a b HTTP/1.1", b"GET a HTTP/1.1", b"GET * HTTP/1.1", b"GET example.com:443 HTTP/1.1",
    b"GET ftp://x/ HTTP/1.1", b"GET / HTTP/1.1\rX", b"",
])
def test_malformed_request_lines_are_400(line):
    assert error_of(line + b"\r\nHost: h\r\n\r\n") == 400


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/3.0"])
def test_other_versions_are_505(version):
    assert error_of(b"GET / " + version + b"\r\nHost: h\r\n\r\n") == 505


@pytest.mark.parametrize("target", [b"*", b"http://example/a?b", b"HTTPS://example", b"/%2e%2e/x?q=%ff"])
def test_accepted_target_forms(target):
    method = b"OPTIONS" if target == b"*" else b"GET"
    assert heads(run(method + b" " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n"))[0].target == target


def test_connect_may_use_authority_form():
    assert heads(run(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n"))[0].method == b"CONNECT"


@pytest.mark.parametrize("field", [
    b" Folded: x", b"\tFolded: x", b"Name : x", b"Na me: x", b"NoColon", b": empty-name", b"N\x00: x",
    b"X: a\x00b", b"X: a\x7fb", b"X: a\rb", b"X: \x01", b"N\xe9: x",
])
def test_malformed_fields_are_400(field):
    assert error_of(b"GET / HTTP/1.1\r\nHost: h\r\n" + field + b"\r\n\r\n") == 400


def test_obs_fold_after_a_field_is_400():
    assert error_of(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n") == 400


def test_http11_needs_exactly_one_host():
    assert error_of(b"GET / HTTP/1.1\r\n\r\n") == 400
    assert error_of(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400
    assert heads(run(b"GET / HTTP/1.0\r\n\r\n"))[0].version == b"HTTP/1.0"


@pytest.mark.parametrize(("version", "connection", "keep"), [
    (b"HTTP/1.1", None, True), (b"HTTP/1.1", b"close", False), (b"HTTP/1.1", b"Keep-Alive, CLOSE", False),
    (b"HTTP/1.1", b"upgrade", True), (b"HTTP/1.0", None, False), (b"HTTP/1.0", b"keep-alive", True),
    (b"HTTP/1.0", b"Keep-Alive", True), (b"HTTP/1.0", b"keep-alive, close", False),
])
def test_keep_alive_rules(version, connection, keep):
    extra = b"Connection: " + connection + b"\r\n" if connection else b""
    head = heads(run(b"GET / " + version + b"\r\nHost: h\r\n" + extra + b"\r\n"))[0]
    assert head.keep_alive is keep


# --------------------------------------------------------------------------- limits


def test_head_limit_is_431_and_request_line_limit_is_414():
    limits = Limits(max_head=200, max_request_line=100, max_headers=5)
    assert error_of(b"GET /" + b"a" * 150 + b" HTTP/1.1\r\nHost: h\r\n\r\n", limits) == 414
    assert error_of(b"GET /" + b"a" * 150, limits) == 414  # no line end yet, already too long
    assert error_of(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 200 + b"\r\n\r\n", limits) == 431
    assert error_of(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 200, limits) == 431  # not even finished
    many = b"".join(b"X%d: y\r\n" % i for i in range(5))
    assert error_of(b"GET / HTTP/1.1\r\nHost: h\r\n" + many + b"\r\n", limits) == 431
    fits = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X%d: y\r\n" % i for i in range(4)) + b"\r\n"
    assert heads(run(fits, limits))


def test_a_head_exactly_at_the_limit_is_accepted():
    head = b"GET / HTTP/1.1\r\nHost: h\r\nX: "
    head += b"a" * (300 - len(head) - 4) + b"\r\n\r\n"
    assert len(head) == 300
    assert heads(run(head, Limits(max_head=300)))
    assert error_of(head, Limits(max_head=299)) == 431


def test_default_limits_are_8k_head_and_100_fields():
    limits = Limits()
    assert (limits.max_head, limits.max_headers) == (8192, 100)
    assert error_of(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 100 + b"\r\n") == 431
    assert error_of(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"y" * 8200 + b"\r\n\r\n") == 431


def test_body_limit_is_checked_from_the_content_length_before_the_body():
    limits = Limits(max_body=10)
    assert error_of(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", limits) == 413
    assert run(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789", limits)[1] == \
        BodyData(b"0123456789")


def test_head_fed_a_byte_at_a_time_is_parsed_once():
    request = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 60) for i in range(90)) + b"\r\n"
    assert len(request) < 8192
    events = run([request[i:i + 1] for i in range(len(request))])
    assert heads(events)[0].raw == request and isinstance(events[-1], EndOfRequest)


# --------------------------------------------------------------------------- bodies


def test_content_length_body_and_pipelined_requests_in_order():
    data = (b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
            b"POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    events = run(data)
    assert [type(e).__name__ for e in events] == [
        "RequestHead", "BodyData", "EndOfRequest", "RequestHead", "EndOfRequest", "RequestHead", "EndOfRequest"]
    assert [h.target for h in heads(events)] == [b"/a", b"/b", b"/c"]
    assert events[1].data == b"hello"


def test_the_parser_pauses_after_each_request():
    parser = RequestParser()
    parser.feed(GET + GET)
    assert isinstance(parser.next_event(), RequestHead)
    assert isinstance(parser.next_event(), EndOfRequest)
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == len(GET)
    parser.feed(GET)
    assert parser.next_event() is NEED_DATA
    parser.next_request()
    assert isinstance(parser.next_event(), RequestHead)


def test_take_buffer_returns_what_followed_the_head():
    parser = RequestParser()
    parser.feed(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n\x81\x05hello")
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.take_buffer() == b"\x81\x05hello"
    assert parser.next_event() is NEED_DATA


@pytest.mark.parametrize("values", [[b"5", b"5"], [b"5, 5"], [b"05"]])
def test_repeated_equal_content_lengths_are_one(values):
    fields = b"".join(b"Content-Length: " + v + b"\r\n" for v in values)
    events = run(b"POST / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\nhello")
    assert events[1] == BodyData(b"hello")


@pytest.mark.parametrize("value", [b"5, 6", b"-1", b"+5", b"0x5", b"5 5", b"", b"1" * 19, b"five", b"5,"])
def test_bad_content_lengths_are_400(value):
    assert error_of(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + value + b"\r\n\r\n") == 400


def test_chunked_body_with_extensions_trailers_and_bare_lf():
    body = (b"5;name=value\r\nhello\r\nA \r\n, world!!!\r\n"
            b"3\nabc\n0\r\nTrailer: dropped\r\n\r\n")
    events = run(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body + GET)
    assert events[0].chunked and events[0].content_length is None
    assert events[1] == BodyData(b"hello, world!!!abc")
    assert isinstance(events[2], EndOfRequest) and heads(events)[1].target == b"/"


@pytest.mark.parametrize(("body", "status"), [
    (b"x\r\n", 400), (b"-1\r\n", 400), (b"\r\n", 400), (b" 5\r\nhello\r\n", 400), (b"5\r\nhelloX\r\n", 400),
    (b"1" * 17 + b"\r\n", 400), (b"5" + b";" * 5000, 400), (b"0\r\n" + b"T: x\r\n" * 101, 431),
    (b"0\r\nbad trailer\r\n\r\n", 400), (b"0\r\n folded: x\r\n\r\n", 400), (b"5\r\nhe\rlo\r\n", None),
])
def test_broken_chunked_bodies(body, status):
    events = run(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    got = events[-1][1] if isinstance(events[-1], tuple) else None
    assert got == status, events


def test_chunked_body_limit_is_413_before_the_data():
    limits = Limits(max_body=10)
    base = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert error_of(base + b"5\r\nhello\r\n6\r\n", limits) == 413
    assert run(base + b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", limits)[1] == BodyData(b"helloworld")


@pytest.mark.parametrize(("fields", "status"), [
    (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400),
    (b"Transfer-Encoding: gzip\r\n", 400),
    (b"Transfer-Encoding: identity\r\n", 400),
    (b"Transfer-Encoding: chunked, gzip\r\n", 400),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400),
    (b"Transfer-Encoding: \r\n", 400),
    (b"Transfer-Encoding: gzip, chunked\r\n", 501),
    (b"Transfer-Encoding: x-custom, chunked\r\n", 501),
])
def test_transfer_codings(fields, status):
    assert error_of(b"POST / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n") == status


def test_transfer_encoding_on_http10_is_400():
    assert error_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n") == 400


def test_chunked_is_case_insensitive():
    events = run(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n")
    assert events[0].chunked and isinstance(events[1], EndOfRequest)


def test_expect_100_continue_only_with_a_body_on_http11():
    def expect(version: bytes, length: bytes) -> bool:
        host = b"Host: h\r\n" if version == b"HTTP/1.1" else b""
        return heads(run(b"POST / " + version + b"\r\n" + host + b"Expect: 100-continue\r\nContent-Length: "
                         + length + b"\r\n\r\n"))[0].expect_continue
    assert expect(b"HTTP/1.1", b"3")
    assert not expect(b"HTTP/1.1", b"0")
    assert not expect(b"HTTP/1.0", b"3")


def test_errors_are_sticky_and_feeding_never_raises():
    parser = RequestParser()
    parser.feed(b"BAD\r\n\r\n")
    with pytest.raises(RequestError) as first:
        parser.next_event()
    parser.feed(GET)
    with pytest.raises(RequestError) as again:
        parser.next_event()
    assert first.value.status == again.value.status == 400


def test_chunked_reader_alone():
    reader = ChunkedReader(max_body=100)
    data, rest = reader.read(b"3\r\nabc\r\n0\r\n\r\nnext")
    assert (data, rest) == (b"abc", b"\r\n0\r\n\r\nnext")
    assert reader.read(rest) == (CHUNKED_DONE, b"next")


# --------------------------------------------------------------------------- properties

tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
values = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F).strip(b" \t"))
bodies = st.binary(max_size=300)


@st.composite
def requests(draw) -> tuple[bytes, dict]:
    """A valid request and what it should parse to."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"OPTIONS", b"X-CUSTOM"]))
    path = b"/" + draw(st.text(alphabet="abc/%?=&.-_~", max_size=20)).encode()
    fields = draw(st.lists(st.tuples(tokens, values), max_size=8))
    fields = [(name.encode(), value) for name, value in fields
              if name not in ("host", "content-length", "transfer-encoding", "connection", "expect")]
    body = draw(bodies)
    framing = draw(st.sampled_from(["length", "chunked", "none"])) if body else "none"
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: example"]
    lines += [name + b": " + value for name, value in fields]
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(body))
        encoded = body
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        sizes = draw(st.lists(st.integers(1, 50), max_size=10))
        encoded, at = b"", 0
        for size in [*sizes, len(body)]:
            piece = body[at:at + size]
            if piece:
                encoded += b"%x\r\n%s\r\n" % (len(piece), piece)
            at += len(piece)
        encoded += b"0\r\n\r\n"
    else:
        body, encoded = b"", b""
    raw = eol.join(lines) + eol + eol + encoded
    return raw, {"method": method, "target": path, "fields": fields, "body": body}


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests(), min_size=1, max_size=4), st.lists(st.integers(0, 10_000), max_size=30))
def test_any_split_gives_the_same_events(batch, cuts):
    data = b"".join(raw for raw, _ in batch)
    whole = run(data)
    assert run(split(data, cuts)) == whole
    assert run([data[i:i + 1] for i in range(len(data))]) == whole
    got = heads(whole)
    assert len(got) == len(batch)
    for head, (_, expected) in zip(got, batch):
        assert head.method == expected["method"] and head.target == expected["target"]
        for name, value in expected["fields"]:
            assert value in head.headers[name]
    bodies_seen = []
    for event in whole:
        if isinstance(event, RequestHead):
            bodies_seen.append(b"")
        elif isinstance(event, BodyData):
            bodies_seen[-1] += event.data
    assert bodies_seen == [expected["body"] for _, expected in batch]


@settings(max_examples=300)
@given(requests(), st.binary(max_size=40), st.integers(0, 10_000), st.lists(st.integers(0, 10_000), max_size=10))
def test_garbage_only_ever_raises_request_error_the_same_way(request, noise, where, cuts):
    raw = request[0]
    at = where % (len(raw) + 1)
    data = raw[:at] + noise + raw[at:]
    limits = Limits(max_head=400, max_request_line=200, max_headers=6, max_body=200)
    whole = run(data, limits)  # raises nothing but RequestError, which run() records
    assert run(split(data, cuts), limits) == whole


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 10_000), max_size=10))
def test_random_bytes_never_crash_the_parser(data, cuts):
    limits = Limits(max_head=500, max_request_line=200, max_headers=10, max_body=300)
    assert run(split(data, cuts), limits) == run(data, limits)


def h11_events(data: bytes) -> list:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(data)
    out: list = []
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA or event is h11.PAUSED:
            if event is h11.PAUSED and connection.their_state is h11.DONE:
                connection.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                connection.send(h11.EndOfMessage())
                connection.start_next_cycle()
                continue
            return out
        if isinstance(event, h11.Request):
            out.append(("head", event.method, event.target,
                        sorted((name, value) for name, value in event.headers
                               if name not in (b"content-length", b"transfer-encoding"))))
        elif isinstance(event, h11.Data):
            if out and out[-1][0] == "data":
                out[-1] = ("data", out[-1][1] + bytes(event.data))
            else:
                out.append(("data", bytes(event.data)))
        elif isinstance(event, h11.EndOfMessage):
            out.append(("end",))
            if connection.our_state is h11.SEND_RESPONSE:
                connection.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                connection.send(h11.EndOfMessage())
                connection.start_next_cycle()


def ours_like_h11(data: bytes) -> list:
    out: list = []
    for event in run(data):
        if isinstance(event, RequestHead):
            out.append(("head", event.method, event.target,
                        sorted((name, value) for name, values in event.headers.items() for value in values
                               if name not in (b"content-length", b"transfer-encoding"))))
        elif isinstance(event, BodyData):
            out.append(("data", event.data))
        elif isinstance(event, EndOfRequest):
            out.append(("end",))
    return out


@settings(max_examples=200)
@given(st.lists(requests(), min_size=1, max_size=3))
def test_valid_requests_parse_as_h11_parses_them(batch):
    data = b"".join(raw for raw, _ in batch)
    assert ours_like_h11(data) == h11_events(data)
