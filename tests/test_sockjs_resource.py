"""The Twisted shell of /sockjs on an in-memory Site: real HTTP parsing, fake sockets, a fake clock."""

from __future__ import annotations

import base64
import json

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from orbited import config
from orbited.config import load_text
from orbited.context import ServerContext
from orbited.transports.sockjs.http_transports import SockJSResource
from orbited.transports.sockjs.tcpsocket import tcpsocket_service
from orbited.transports.sockjs.ws_transports import SockJSWebSocketProtocol, WebSocketUpgrade
from orbited.transports.websocket import websocket_factory
from tests.support.fakes import RecordingProxy

ENGINES = config.HTTP_ENGINES


class Harness:
    def __init__(self, extra: str = "", engine: str = "twisted"):
        self.clock = Clock()
        self.context = ServerContext(load_text("[global]\nsession.ping_interval = 25\nsession.ping_timeout = 5\n"
                                               + extra), self.clock)
        self.proxies: list[RecordingProxy] = []

        def new_protocol() -> RecordingProxy:
            self.proxies.append(RecordingProxy())
            return self.proxies[-1]

        self.context.newSessionProtocol = new_protocol  # type: ignore[method-assign]
        self.service = tcpsocket_service(self.context)
        root = Resource()
        upgrade = WebSocketUpgrade(self.service, websocket_factory(self.context, SockJSWebSocketProtocol))
        root.putChild(b"sockjs", SockJSResource(self.service, upgrade))
        if engine == "twisted":
            self.site = Site(root)
        else:
            from orbited.web import lean_site

            self.site = lean_site(root, self.clock)

    def connect(self) -> tuple[StringTransport, object]:
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", 8000))
        protocol.makeConnection(transport)
        return transport, protocol

    def send(self, method: str, path: str, body: bytes = b"", headers: dict[str, str | None] | None = None):
        """A request as a page of the same host sends it (its Referer too, which JSONP and htmlfile
        are judged by); a header given as None is left out."""
        transport, protocol = self.connect()
        fields = {"Host": "127.0.0.1:8000", "Referer": "http://127.0.0.1:8000/app/", "Content-Length": str(len(body)),
                  **(headers or {})}
        fields = {name: value for name, value in fields.items() if value is not None}
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
        protocol.dataReceived(head.encode() + body)
        return transport, protocol


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def body_of(data: bytes) -> bytes:
    return data.partition(b"\r\n\r\n")[2]


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    return request.param


@pytest.fixture
def h(engine) -> Harness:
    return Harness(engine=engine)


def open_session(h: Harness, sid: str = "s1") -> None:
    transport, _ = h.send("POST", f"/sockjs/0/{sid}/xhr")
    assert body_of(transport.value()) == b"o\n"


def test_wrong_method_gets_405_with_allow_and_nothing_else(h):
    transport, _ = h.send("PUT", "/sockjs/0/s1/xhr")
    data = transport.value()
    assert status_of(data) == 405 and b"Allow: OPTIONS, POST\r\n" in data
    assert b"Content-Type" not in data and body_of(data) == b""


def test_head_of_the_greeting(h):
    transport, _ = h.send("HEAD", "/sockjs")
    assert status_of(transport.value()) == 200 and body_of(transport.value()) == b""


def test_upload_is_answered_only_when_the_backend_can_take_more(h):
    open_session(h)
    proxy = h.proxies[0]
    adapter = proxy.session
    adapter.pauseProducing()  # the backend is slow
    transport, _ = h.send("POST", "/sockjs/0/s1/xhr_send", b'["127.0.0.1:7"]')
    assert proxy.data == [b"127.0.0.1:7"]  # delivered at once...
    assert transport.value() == b""  # ...but not answered
    adapter.resumeProducing()
    assert status_of(transport.value()) == 204


def test_a_held_upload_whose_browser_left_is_not_answered(h):
    open_session(h)
    adapter = h.proxies[0].session
    adapter.pauseProducing()
    transport, protocol = h.send("POST", "/sockjs/0/s1/xhr_send", b'["x:1"]')
    protocol.connectionLost(Failure(ConnectionError("gone")))
    adapter.resumeProducing()  # must not write to a closed request
    assert transport.value() == b""


def test_a_paused_stream_keeps_messages_queued_and_flushes_on_resume(h):
    transport, _ = h.send("POST", "/sockjs/0/s1/xhr_streaming")
    proxy = h.proxies[0]
    h.send("POST", "/sockjs/0/s1/xhr_send", b'["127.0.0.1:7"]')
    proxy.session.answerHandshake("1")
    assert b'a["1"]\n' in transport.value()
    transport.clear()
    transport.producer.pauseProducing()  # the browser's TCP buffer is full
    proxy.session.write(b"queued")
    assert transport.value() == b"" and proxy.session.queued_bytes == len(base64.b64encode(b"queued"))
    transport.producer.resumeProducing()
    assert base64.b64encode(b"queued") in transport.value()
    assert proxy.session.queued_bytes == 0


def test_a_stream_paused_for_ping_timeout_closes_the_session(h, caplog):
    transport, _ = h.send("POST", "/sockjs/0/s1/xhr_streaming")
    transport.producer.pauseProducing()
    h.clock.advance(4.9)
    assert not h.proxies[0].closed
    h.clock.advance(0.1)
    assert h.proxies[0].closed == ["browser stopped reading for 5s"]
    assert "stopped reading" in caplog.text


def test_a_stream_lost_by_the_network_ends_the_session(h):
    _, protocol = h.send("POST", "/sockjs/0/s1/xhr_streaming")
    protocol.connectionLost(Failure(ConnectionError("reset")))
    assert h.proxies[0].closed and "browser connection lost" in h.proxies[0].closed[0]
    assert h.service.find("s1") is None


def test_polls_carry_content_length(h):
    open_session(h)
    h.proxies[0].session.write(b"abc")
    transport, _ = h.send("POST", "/sockjs/0/s1/xhr")
    data = transport.value()
    assert b"Content-Length: " in data and b"Transfer-Encoding" not in data
    assert json.loads(body_of(data)[1:]) == [base64.b64encode(b"abc").decode()]


@pytest.mark.parametrize(("origins", "referer"), [("", "https://evil.example/x.html"), ("", None),
                                                  ("https://app.example", "https://evil.example/"),
                                                  ("https://app.example", None)])
def test_originless_transports_refused_with_a_reason_unless_the_referer_is_allowed(engine, caplog, origins,
                                                                                   referer):
    h = Harness(f"origins = {origins}\n", engine)
    for method, path in (("GET", "/sockjs/0/s1/jsonp?c=cb"), ("GET", "/sockjs/0/s1/htmlfile?c=cb"),
                         ("POST", "/sockjs/0/s1/jsonp_send"), ("GET", "/sockjs/iframe.html")):
        transport, _ = h.send(method, path, headers={"Referer": referer})
        assert status_of(transport.value()) == 403
        assert b"[global] origins" in body_of(transport.value())
        # the page's own origin passes: same host as the Host header, or listed
        allowed = "https://app.example/chat" if origins else "http://127.0.0.1:3000/"
        transport, _ = h.send(method, path, headers={"Referer": allowed})
        assert status_of(transport.value()) != 403, (path, allowed)
    assert "refused htmlfile" in caplog.text and f"page {referer or 'not named'}" in caplog.text


def test_every_refusal_is_a_clean_http_answer(h):
    cases = [
        ("GET", "/sockjs/0/s1/jsonp", b"", 500),
        ("GET", "/sockjs/0/s1/jsonp?c=a(b", b"", 500),
        ("POST", "/sockjs/0/nope/xhr_send", b'["x"]', 404),
        ("GET", "/sockjs/0/s1/websocket", b"", 400),
        ("GET", "/sockjs/0/s1.x/xhr", b"", 404),
        ("GET", "/sockjs/a/b/c/d", b"", 404),
    ]
    for method, path, body, status in cases:
        transport, _ = h.send(method, path, body)
        assert status_of(transport.value()) == status, path
        assert b"Traceback" not in transport.value()


class NoDelayTransport(StringTransport):
    """Records TCP_NODELAY requests the way a TCP transport would take them."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.no_delay_calls: list[bool] = []

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay_calls.append(enabled)


def test_receiving_requests_turn_nagle_off_once_per_connection(h):
    """Polls and streams are small frames that must not wait for a delayed ACK, and a keep-alive
    connection that carries one poll after another must not pay a setsockopt for each."""
    protocol = h.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = NoDelayTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                 hostAddress=IPv4Address("TCP", "127.0.0.1", 8000))
    protocol.makeConnection(transport)
    head = b"POST /sockjs/0/s1/xhr HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Length: 0\r\n\r\n"
    protocol.dataReceived(head)
    assert transport.value().endswith(b"o\n")
    for index in range(3):
        transport.clear()
        h.proxies[0].session.write(b"m%d" % index)
        protocol.dataReceived(head)
        assert json.loads(body_of(transport.value())[1:]) == [base64.b64encode(b"m%d" % index).decode()]
    assert transport.no_delay_calls == [True]
