"""The sans-IO SockJS cores: framing and escaping, upload payloads, wire forms, routing, pages, hixie-76."""

from __future__ import annotations

import json
import re
from urllib.parse import quote as urlquote
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orbited.transports.sockjs import framing, hixie76, pages
from orbited.transports.sockjs.routing import Kind, Transport, route

# The protocol's list of characters a server must send escaped (0.3.3, "JSON Unicode Encoding").
SERVER_ESCAPABLE = re.compile("[\x00-\x1f\u200c-\u200f\u2028-\u202f\u2060-\u206f\ufff0-\uffff]")
SURROGATES = re.compile("[\ud800-\udfff]")

any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF))


# ---------------------------------------------------------------------------
# quote and frames


def test_quote_escapes_every_character_the_protocol_lists():
    chars = "".join(chr(i) for i in range(255, 65536) if SERVER_ESCAPABLE.match(chr(i)))
    expected = '"' + "".join(f"\\u{ord(c):04x}" for c in chars) + '"'
    assert framing.quote(chars) == expected


def test_quote_leaves_ordinary_text_alone():
    assert framing.quote("héllo wörld ✓ 😀") == '"héllo wörld ✓ 😀"'
    assert framing.quote('a"b\\c') == '"a\\"b\\\\c"'
    assert framing.quote("\n\r\t\x00") == '"\\n\\r\\t\\u0000"'


def test_lone_surrogates_are_escaped_so_frames_stay_utf8():
    assert framing.quote("\ud800x\udfff") == '"\\ud800x\\udfff"'
    framing.quote("\ud800").encode("utf-8")


@given(any_text)
def test_quote_round_trips_and_never_emits_escapable_characters(text):
    quoted = framing.quote(text)
    assert json.loads(quoted) == text
    assert not SERVER_ESCAPABLE.search(quoted)
    assert not SURROGATES.search(quoted)
    quoted.encode("utf-8")  # always valid UTF-8


@given(st.lists(any_text, max_size=5))
def test_message_frame_round_trips(messages):
    frame = framing.message_frame(messages)
    assert frame[0] == "a"
    assert json.loads(frame[1:]) == messages


@given(st.lists(st.one_of(any_text, st.text(alphabet="ABCxyz019+/=", max_size=40)), max_size=5))
def test_message_frame_fast_path_equals_the_encoder(messages):
    assert framing.message_frame(messages) == "a[" + ",".join(map(framing.quote, messages)) + "]"


def test_fixed_frames():
    assert framing.OPEN_FRAME == "o"
    assert framing.HEARTBEAT_FRAME == "h"
    assert framing.message_frame(["a", "b"]) == 'a["a","b"]'
    assert framing.close_frame(3000, "Go away!") == 'c[3000,"Go away!"]'
    assert framing.close_frame(2010, "Another connection still open") == \
        'c[2010,"Another connection still open"]'


# ---------------------------------------------------------------------------
# upload payloads


@pytest.mark.parametrize(("body", "messages"), [
    (b'["a"]', ["a"]),
    (b"[]", []),
    (b'["a","b"]', ["a", "b"]),
    (b' [ "x" ] ', ["x"]),
    ('["\\u0000\\n\\r", "é"]'.encode(), ["\x00\n\r", "é"]),
])
def test_decode_payload(body, messages):
    assert framing.decode_payload(body) == messages


@pytest.mark.parametrize(("body", "message"), [
    (b"", "Payload expected."),
    (b'["x', "Broken JSON encoding."),
    (b"\xff\xfe", "Broken JSON encoding."),
    (b'"x"', "Payload expected."),
    (b'{"a": 1}', "Payload expected."),
    (b"null", "Payload expected."),
    (b"[1]", "Broken JSON encoding."),
    (b"[" * 100000, "Broken JSON encoding."),
])
def test_decode_payload_errors_carry_the_suites_text(body, message):
    with pytest.raises(framing.PayloadError) as caught:
        framing.decode_payload(body)
    assert caught.value.message == message
    assert caught.value.status == 500


@given(st.binary(max_size=200))
def test_decode_payload_never_raises_anything_else(body):
    try:
        messages = framing.decode_payload(body)
    except framing.PayloadError:
        return
    assert all(isinstance(m, str) for m in messages)


FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(("body", "content_type", "messages"), [
    (b"d=%5B%22x%22%5D", FORM, ["x"]),
    (b"d=%5B%5D", FORM, []),
    (b"d=%5B%22a+b%22%5D", FORM, ["a b"]),
    (b"d=%5B%22abc%22%5D&x=1", FORM + "; charset=UTF-8", ["abc"]),
    (b'["%61bc"]', "text/plain", ["%61bc"]),
    (b'["x"]', None, ["x"]),
])
def test_decode_form_payload(body, content_type, messages):
    assert framing.decode_form_payload(body, content_type) == messages


@pytest.mark.parametrize(("body", "message"), [
    (b"", "Payload expected."),
    (b"d=", "Payload expected."),
    (b"p=p", "Payload expected."),
    (b"d=%5B%22x", "Broken JSON encoding."),
])
def test_decode_form_payload_errors(body, message):
    with pytest.raises(framing.PayloadError) as caught:
        framing.decode_form_payload(body, FORM)
    assert caught.value.message == message


@given(st.lists(any_text, max_size=4))
def test_form_payload_round_trips(messages):
    body = ("d=" + urlquote(json.dumps(messages), safe="")).encode()
    assert framing.decode_form_payload(body, FORM) == [m for m in messages]


@given(st.binary(max_size=200), st.sampled_from([FORM, "text/plain", None]))
def test_decode_form_payload_never_raises_anything_else(body, content_type):
    try:
        framing.decode_form_payload(body, content_type)
    except framing.PayloadError:
        pass


@pytest.mark.parametrize(("text", "messages"), [
    ("", []),
    ("[]", []),
    ('["a"]', ["a"]),
    ('"a"', ["a"]),
    ('["a","b"]', ["a", "b"]),
])
def test_decode_websocket_message(text, messages):
    assert framing.decode_websocket_message(text) == messages


@pytest.mark.parametrize("text", ['["a', "1", "{}", "[1]", "null"])
def test_decode_websocket_message_errors(text):
    with pytest.raises(framing.PayloadError):
        framing.decode_websocket_message(text)


@pytest.mark.parametrize(("name", "ok"), [
    ("callback", True), ("_jp.a1b2c3", True), ("a-b_c.d", True), ("x" * 64, True),
    ("", False), (" ", False), ("*", False), ("abc(", False), ("a%28", False), ("x" * 65, False),
    ("a;b", False), ("a\nb", False), ("é", False),
])
def test_valid_callback(name, ok):
    assert framing.valid_callback(name) is ok


# ---------------------------------------------------------------------------
# wire forms


def test_xhr_wires():
    assert framing.Wire().encode("o") == b"o\n"
    assert framing.Wire().prelude == b""
    assert framing.StreamingWire().prelude == b"h" * 2048 + b"\n"
    assert framing.StreamingWire().encode('a["x"]') == b'a["x"]\n'


def test_eventsource_wire():
    wire = framing.EventSourceWire()
    assert wire.prelude == b"\r\n"
    assert wire.content_type == b"text/event-stream"
    assert wire.encode("o") == b"data: o\r\n\r\n"
    assert wire.encode('a["  \\u0000\\n\\r "]') == b'data: a["  \\u0000\\n\\r "]\r\n\r\n'
    assert wire.encode('a["100%"]') == b'data: a["100%25"]\r\n\r\n'


@given(st.lists(any_text, max_size=3))
def test_eventsource_data_survives_decodeuri(messages):
    frame = framing.message_frame(messages)
    data = framing.EventSourceWire().encode(frame).decode("utf-8")
    assert data.startswith("data: ") and data.endswith("\r\n\r\n")
    line = data[len("data: "):-4]
    assert "\r" not in line and "\n" not in line and "\x00" not in line
    # decodeURI turns %25 back into '%' and leaves everything else the wire produced alone.
    assert unquote(line) == frame


def test_htmlfile_wire():
    wire = framing.HtmlFileWire("callback")
    head = wire.prelude.decode()
    assert len(wire.prelude) > 1024
    assert head.strip() == (framing.HTMLFILE_HEAD % "callback").strip()
    assert "var c = parent.callback;" in head
    assert wire.encode("o") == b'<script>\np("o");\n</script>\r\n'
    assert wire.encode('a["x"]') == b'<script>\np("a[\\"x\\"]");\n</script>\r\n'


def test_jsonp_wire():
    wire = framing.JsonpWire("x")
    assert wire.encode("o") == b'/**/x("o");\r\n'
    assert wire.encode('c[3000,"Go away!"]') == b'/**/x("c[3000,\\"Go away!\\"]");\r\n'


@given(st.lists(any_text, max_size=3))
def test_script_wires_never_break_out_of_the_script(messages):
    frame = framing.message_frame(messages)
    for wire in (framing.HtmlFileWire("cb"), framing.JsonpWire("cb")):
        data = wire.encode(frame).decode("utf-8")
        inner = data[data.index("(") + 1:data.rindex(")")]
        assert json.loads(inner) == frame
        assert "<" not in inner  # so no "</script" and no "<!--", whatever the frame says
        assert "\u2028" not in inner and "\u2029" not in inner


# ---------------------------------------------------------------------------
# routing


@pytest.mark.parametrize(("path", "kind", "transport", "session"), [
    ("", Kind.GREETING, None, ""),
    ("/", Kind.GREETING, None, ""),
    ("/info", Kind.INFO, None, ""),
    ("/websocket", Kind.RAW_WEBSOCKET, None, ""),
    ("/iframe.html", Kind.IFRAME, None, ""),
    ("/iframe-a.html", Kind.IFRAME, None, ""),
    ("/iframe-.html", Kind.IFRAME, None, ""),
    ("/iframe-0.1.2.html", Kind.IFRAME, None, ""),
    ("/iframe-0.1.2abc-dirty.2144.html", Kind.IFRAME, None, ""),
    ("/000/abc/xhr", Kind.SESSION, Transport.XHR, "abc"),
    ("/a/a/xhr_send", Kind.SESSION, Transport.XHR_SEND, "a"),
    ("/_/_/xhr_streaming", Kind.SESSION, Transport.XHR_STREAMING, "_"),
    ("/abcdefgh_i-j%20/abcdefg_i-j%20/eventsource", Kind.SESSION, Transport.EVENTSOURCE, "abcdefg_i-j%20"),
    ("/1/2/htmlfile", Kind.SESSION, Transport.HTMLFILE, "2"),
    ("/1/2/jsonp", Kind.SESSION, Transport.JSONP, "2"),
    ("/1/2/jsonp_send", Kind.SESSION, Transport.JSONP_SEND, "2"),
    ("/1/2/websocket", Kind.SESSION, Transport.WEBSOCKET, "2"),
])
def test_routes(path, kind, transport, session):
    found = route(path.split("/")[1:] if path else [])
    assert found is not None
    assert (found.kind, found.transport, found.session_id) == (kind, transport, session)


@pytest.mark.parametrize("path", [
    "/a", "/a.html", "//", "///", "/a/a", "/a/a/", "/a/", "/iframe.htm", "/iframe", "/IFRAME.HTML",
    "/IFRAME", "/iframe.HTML", "/iframe.xml", "/iframe-/.html", "///xhr", "/a./a/xhr", "/a/a./xhr",
    "/././xhr", "//xhr", "////xhr", "/a/a/unknown", "/a/a/xhr/", "/a/" + "b" * 300 + "/xhr",
])
def test_not_found(path):
    assert route(path.split("/")[1:]) is None


def test_methods():
    assert route(["info"]).methods == (b"OPTIONS", b"GET")
    assert route(["a", "b", "xhr"]).methods == (b"OPTIONS", b"POST")
    assert route(["a", "b", "websocket"]).methods == (b"GET",)
    assert route(["a", "b", "jsonp_send"]).methods == (b"POST",)
    assert not Transport.XHR_SEND.receives and Transport.XHR.receives


@given(st.lists(st.text(max_size=10), max_size=5))
def test_route_never_raises(segments):
    found = route(segments)
    if found is not None and found.kind is Kind.SESSION:
        assert found.session_id and "." not in found.session_id and "/" not in found.session_id


# ---------------------------------------------------------------------------
# pages


IFRAME = re.compile(r'''
^<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="(?P<sockjs_url>[^"]*)"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe\(\);
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>$
'''.strip())


def test_iframe_page_has_the_fixed_layout():
    page, etag = pages.iframe_page("/static/sockjs.min.js")
    match = IFRAME.match(page.decode())
    assert match and match.group("sockjs_url") == "/static/sockjs.min.js"
    assert etag.startswith(b'"') and etag == pages.iframe_page("/static/sockjs.min.js")[1]
    assert etag != pages.iframe_page("/other.js")[1]


def test_iframe_page_escapes_the_client_url():
    page, _ = pages.iframe_page('x"><script>alert(1)</script>')
    assert b"<script>alert" not in page


def test_info():
    a, b = json.loads(pages.info(True, False)), json.loads(pages.info(False, True))
    assert a["websocket"] is True and a["cookie_needed"] is False and a["origins"] == ["*:*"]
    assert b["websocket"] is False and b["cookie_needed"] is True
    assert 0 <= a["entropy"] < 2 ** 32 and a["entropy"] != json.loads(pages.info(True, False))["entropy"]


# ---------------------------------------------------------------------------
# hixie-76


def test_hixie76_challenge_matches_the_draft():
    # The pair the protocol suite sends (Websocket.test_haproxy) and its expected answer.
    answer = hixie76.challenge_response("4 @1  46546xW%0l 1 5", "12998 5 Y3 1  .P00", b"aaaaaaaa")
    assert answer == b"\xca4\x00\xd8\xa5\x08G\x97,\xd5qZ\xba\xbfC{"


@pytest.mark.parametrize("key", ["nospaces123", "   ", "1  3", ""])
def test_hixie76_bad_keys(key):
    with pytest.raises(hixie76.Hixie76Error):
        hixie76.check_keys(key, "12998 5 Y3 1  .P00")


def test_hixie76_head():
    head = hixie76.response_head("http://a", "ws://a/b")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Location: ws://a/b\r\n" in head and head.endswith(b"\r\n\r\n")


def test_hixie76_decoder():
    decoder = hixie76.FrameDecoder(100)
    assert decoder.feed(b"\x00o") == []
    assert decoder.feed(b"k\xff\x00h\xc3\xa9\xff") == [hixie76.TextMessage("ok"), hixie76.TextMessage("hé")]
    assert decoder.feed(b"\xff") == []
    assert decoder.feed(b"\x00") == [hixie76.CloseRequested()]
    assert decoder.feed(b"\x00more\xff") == []


@pytest.mark.parametrize("data", [b"\x01abc\xff", b"\x80\x05hello", b"\x00\xff\xfe\xff", b"\x00" + b"x" * 101])
def test_hixie76_decoder_errors(data):
    with pytest.raises(hixie76.Hixie76Error):
        hixie76.FrameDecoder(100).feed(data)


@given(st.lists(st.binary(max_size=20), max_size=10))
def test_hixie76_decoder_never_raises_anything_else(pieces):
    decoder = hixie76.FrameDecoder(64)
    try:
        for piece in pieces:
            decoder.feed(piece)
    except hixie76.Hixie76Error:
        pass


@given(st.lists(st.text(max_size=20), max_size=5), st.integers(min_value=1, max_value=7))
def test_hixie76_round_trip_in_any_split(messages, step):
    data = b"".join(hixie76.encode_text(m) for m in messages)
    decoder = hixie76.FrameDecoder(1000)
    events = []
    for at in range(0, len(data), step):
        events += decoder.feed(data[at:at + step])
    assert events == [hixie76.TextMessage(m) for m in messages]


def test_a_frame_cannot_end_htmlfile_s_script_element():
    """A close reason may quote what a client sent; '</script>' in it would end the script
    element and run the rest in the page (same origin as Orbited)."""
    frame = 'c[4102,"invalid handshake b\'</script><script>alert(document.domain)</script>\'"]'
    html = framing.HtmlFileWire("cb").encode(frame).decode()
    assert html.count("</script>") == 1 and html.endswith("</script>\r\n")
    assert "<script>alert" not in html and "\\u003c/script>\\u003cscript>alert" in html
    jsonp = framing.JsonpWire("cb").encode(frame).decode()
    assert "<" not in jsonp
