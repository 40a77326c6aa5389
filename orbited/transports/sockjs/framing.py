"""SockJS 0.3.3 framing: frames, the JSON escaping rules, upstream payloads, per-transport wire forms.

Sans-IO: strings and bytes in, strings and bytes out; no sockets, no clock.
Everything a browser sends passes through :func:`decode_payload`,
:func:`decode_form_payload` or :func:`decode_websocket_message`, which raise
:class:`PayloadError` (with the HTTP status and the exact text the protocol
suite expects) and never anything else.

Server to browser, a SockJS stream is a sequence of frames:

- ``o``: the session is open (first frame of every session);
- ``h``: heartbeat;
- ``a["m1","m2"]``: messages, a JSON array of strings;
- ``c[3000,"Go away!"]``: the session is closed, with a code and a reason.

Each HTTP transport wraps frames in its own way (:class:`Wire`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qs

OPEN_FRAME = "o"
HEARTBEAT_FRAME = "h"

# Characters the server must send as \uXXXX: browsers mangle them on some
# transports (protocol 0.3.3 "JSON Unicode Encoding").  Lone surrogates are
# added because a Python str may hold them and UTF-8 cannot.
_SERVER_ESCAPABLE = re.compile(
    "[\x00-\x1f\ud800-\udfff\u200c-\u200f\u2028-\u202f\u2060-\u206f\ufff0-\uffff]"
)

# EventSource data lines: '%' and the line breaks are %-escaped; the client
# runs decodeURI over each event.
_EVENTSOURCE_ESCAPABLE = re.compile("[%\r\n\x00]")

# jsonp and htmlfile callbacks end up in a <script>: keep them to a plain name.
_CALLBACK = re.compile(r"[a-zA-Z0-9_.\-]{1,64}")

PAYLOAD_EXPECTED = "Payload expected."
BROKEN_JSON = "Broken JSON encoding."


class PayloadError(ValueError):
    """A browser's upstream body cannot be used; answer ``status`` with ``message``."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.message = message
        self.status = status


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def quote(text: str) -> str:
    """``text`` as a JSON string literal, escaped the way SockJS clients expect."""
    quoted = json.dumps(text, ensure_ascii=False)
    if _SERVER_ESCAPABLE.search(quoted) is None:
        return quoted
    return _SERVER_ESCAPABLE.sub(_escape, quoted)


# Text that a JSON string carries as it is: printable ASCII without '"' and '\\'.
# Base64 (every TCPSocket message) always is, so its frames skip the encoder.
_PLAIN = re.compile(r'[ !#-\[\]-~]*')


def message_frame(messages: Iterable[str]) -> str:
    """``a[...]``: one frame carrying ``messages`` in order."""
    if not isinstance(messages, list):
        messages = list(messages)
    if messages and _PLAIN.fullmatch("".join(messages)) is not None:
        return 'a["' + '","'.join(messages) + '"]'
    return "a[" + ",".join(map(quote, messages)) + "]"


def close_frame(code: int, reason: str) -> str:
    """``c[code,"reason"]``."""
    return f"c[{code:d},{quote(reason)}]"


def _messages(value: object) -> list[str]:
    if not isinstance(value, list):
        raise PayloadError(PAYLOAD_EXPECTED)
    for item in value:
        if not isinstance(item, str):
            raise PayloadError(BROKEN_JSON)
    return value


def _loads(text: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError; deep nesting raises RecursionError.
        raise PayloadError(BROKEN_JSON) from None


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError(BROKEN_JSON) from None


def decode_payload(body: bytes) -> list[str]:
    """The messages of an ``xhr_send`` body: a JSON array of strings (``[]`` is allowed)."""
    if not body:
        raise PayloadError(PAYLOAD_EXPECTED)
    return _messages(_loads(_text(body)))


def decode_form_payload(body: bytes, content_type: str | None) -> list[str]:
    """The messages of a ``jsonp_send`` body: form field ``d`` or, for other types, the raw body."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(_text(body), keep_blank_values=True, strict_parsing=False)
        except ValueError:
            raise PayloadError(PAYLOAD_EXPECTED) from None
        values = fields.get("d")
        if not values or not values[0]:
            raise PayloadError(PAYLOAD_EXPECTED)
        return _messages(_loads(values[0]))
    return decode_payload(body)


def decode_websocket_message(text: str) -> list[str]:
    """The messages of one framed-WebSocket message: an array, or a single JSON string.

    An empty message carries nothing (clients may send one as a keep-alive).
    """
    if not text:
        return []
    value = _loads(text)
    if isinstance(value, str):
        return [value]
    return _messages(value)


def valid_callback(name: str) -> bool:
    return _CALLBACK.fullmatch(name) is not None


# ---------------------------------------------------------------------------
# wire forms: how each HTTP transport carries frames in its response body


class Wire:
    """xhr and xhr_streaming: one frame a line."""

    content_type = b"application/javascript; charset=UTF-8"
    prelude = b""

    def encode(self, frame: str) -> bytes:
        return (frame + "\n").encode("utf-8")


class StreamingWire(Wire):
    # 2 KiB of 'h': some browsers deliver nothing of a response before that.
    prelude = b"h" * 2048 + b"\n"


class EventSourceWire(Wire):
    content_type = b"text/event-stream"
    prelude = b"\r\n"  # an Opera bug wants a leading line break

    def encode(self, frame: str) -> bytes:
        if _EVENTSOURCE_ESCAPABLE.search(frame) is not None:
            frame = _EVENTSOURCE_ESCAPABLE.sub(lambda m: f"%{ord(m.group()):02X}", frame)
        return ("data: " + frame + "\r\n\r\n").encode("utf-8")


HTMLFILE_HEAD = """<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.%s;
    c.start();
    function p(d) {c.message(d);};
    window.onload = function() {c.stop();};
  </script>"""


class HtmlFileWire(Wire):
    """A 'forever iframe': each frame is a <script> calling the parent's callback."""

    content_type = b"text/html; charset=UTF-8"

    def __init__(self, callback: str):
        head = HTMLFILE_HEAD % callback
        # Old IE shows nothing of a document before 1 KiB has arrived.
        self.prelude = (head.ljust(1024) + "\r\n\r\n").encode("utf-8")

    def encode(self, frame: str) -> bytes:
        return ("<script>\np(" + _js_string(frame) + ");\n</script>\r\n").encode("utf-8")


class JsonpWire(Wire):
    def __init__(self, callback: str):
        self.callback = callback

    def encode(self, frame: str) -> bytes:
        # The leading comment defeats the "Rosetta Flash" content-sniffing attack.
        return ("/**/" + self.callback + "(" + _js_string(frame) + ");\r\n").encode("utf-8")


def _js_string(frame: str) -> str:
    # Frames are already escaped by quote(), so U+2028/2029 and controls cannot
    # end up raw inside the <script> or the JSONP call.  '<' is escaped too: a close
    # reason can quote what a client sent, and '</script>' in it would end htmlfile's
    # script element and run the rest as the page's own (same-origin) script.
    return json.dumps(frame, ensure_ascii=False).replace("<", "\\u003c")


def frame_size(messages: Sequence[str]) -> int:
    """Characters the messages count towards a session's queue bound."""
    return sum(map(len, messages))
