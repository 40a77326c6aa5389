"""The Twisted shell of orbited.http with in-memory transports and a fake clock: traversal, rendering,
keep-alive, pipelining, streaming, timeouts, errors, producers and handing connections to WebSocket."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import pages
from twisted.web.http import CACHED
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from orbited.http import LeanSite, Limits
from orbited.http.response import DateHeader, canonical_name
from orbited.http.upgrade import websocket_factory_of

# --------------------------------------------------------------------------- harness


class Transport(StringTransport):
    def __init__(self) -> None:
        super().__init__(hostAddress=IPv4Address("TCP", "127.0.0.1", 8000),
                         peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        self.nodelay: bool | None = None
        self.aborted = False
        self.protocol = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()

    def loseWriteConnection(self) -> None:
        self.write_closed = True  # a TCP half-close: reading goes on

    write_closed = False


@dataclass
class Response:
    status: int
    headers: dict[bytes, list[bytes]]
    body: bytes = b""
    raw_head: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name)
        return values[-1] if values else None


def responses(data: bytes, heads: tuple[int, ...] = ()) -> list[Response]:
    """Parse the server's output; ``heads``: indexes of responses to HEAD requests (no body)."""
    out: list[Response] = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete head: {head!r}"
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            headers.setdefault(name.lower(), []).append(value)
        response = Response(status, headers, raw_head=head)
        if len(out) in heads or status in (100, 204, 304):
            pass
        elif b"chunked" in (headers.get(b"transfer-encoding") or [b""])[0]:
            body = b""
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    assert data[:2] == b"\r\n"
                    data = data[2:]
                    break
                body += data[:size]
                assert data[size:size + 2] == b"\r\n"
                data = data[size + 2:]
            response.body = body
        elif b"content-length" in headers:
            length = int(headers[b"content-length"][0])
            response.body, data = data[:length], data[length:]
        else:
            response.body, data = data, b""
        if status != 100:
            out.append(response)
    return out


@dataclass
class Server:
    site: LeanSite
    channel: object
    transport: Transport
    clock: Clock

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def output(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def responses(self, heads: tuple[int, ...] = ()) -> list[Response]:
        return responses(self.output(), heads)

    def lose(self) -> None:
        self.channel.connectionLost(Failure(ConnectionError("client went away")))


def serve(root: Resource, timeout: float = 10.0, limits: Limits | None = None) -> Server:
    clock = Clock()
    site = LeanSite(root, timeout=timeout, limits=limits, reactor=clock)
    channel = site.buildProtocol(None)
    transport = Transport()
    transport.protocol = channel
    channel.makeConnection(transport)
    return Server(site, channel, transport, clock)


class Text(Resource):
    isLeaf = True

    def __init__(self, body: bytes = b"hello", content_type: bytes | None = None):
        super().__init__()
        self.body = body
        self.content_type = content_type
        self.seen: list = []

    def render_GET(self, request):
        self.seen.append(request)
        if self.content_type:
            request.setHeader(b"content-type", self.content_type)
        return self.body

    def render_POST(self, request):
        self.seen.append(request)
        return b"got " + request.content.read()


@dataclass
class Held(Resource):
    """Answers later: tests finish the requests it holds."""

    isLeaf = True
    held: list = field(default_factory=list)

    def __post_init__(self) -> None:
        Resource.__init__(self)

    def render(self, request):
        self.held.append(request)
        return NOT_DONE_YET


class Root(Resource):
    """A tree's root as Orbited's is: an unknown child is twisted.web's escaping notFound page
    (Resource's default, _UnsafeNoResource, is deprecated)."""

    def getChild(self, path: bytes, request: object) -> Resource:
        return pages.notFound()


def tree(**children: Resource) -> Resource:
    root = Root()
    for name, child in children.items():
        root.putChild(name.encode(), child)
    return root


GET = b"GET /text HTTP/1.1\r\nHost: h\r\n\r\n"


# --------------------------------------------------------------------------- responses


def test_a_keep_alive_get_in_one_write_with_length_date_and_default_type():
    server = serve(tree(text=Text()))
    writes: list[bytes] = []
    send = server.channel.send
    server.channel.send = lambda data: (writes.append(data), send(data))
    server.send(GET)
    assert len(writes) == 1
    (response,) = server.responses()
    assert response.status == 200 and response.body == b"hello"
    assert response.header(b"content-length") == b"5"
    assert response.header(b"content-type") == b"text/html"
    assert response.header(b"date").endswith(b" GMT")
    assert response.header(b"server") is None and response.header(b"connection") is None
    assert b"\r\nContent-Length: 5\r\n" in response.raw_head  # canonical spelling
    assert not server.transport.disconnecting
    assert server.transport.nodelay is True


def test_header_names_are_spelled_as_twisted_web_spelled_them():
    assert canonical_name(b"content-type") == b"Content-Type"
    assert canonical_name(b"www-authenticate") == b"WWW-Authenticate"
    assert canonical_name(b"etag") == b"ETag"
    assert canonical_name(b"x-custom-thing") == b"X-Custom-Thing"


def test_date_is_formatted_once_a_second():
    date = DateHeader()
    assert date.get(0) == b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
    assert date.get(0.9) is date.get(0.5)
    assert date.get(1) == b"Date: Thu, 01 Jan 1970 00:00:01 GMT\r\n"


def test_response_header_values_cannot_split_the_response():
    class Evil(Resource):
        isLeaf = True

        def render_GET(self, request):
            request.setHeader(b"x-echo", request.getHeader(b"x-in") + b"\r\nSet-Cookie: pwned=1")
            return b""
    server = serve(tree(evil=Evil()))
    server.send(b"GET /evil HTTP/1.1\r\nHost: h\r\nX-In: a\r\n\r\n")
    (response,) = server.responses()
    assert response.header(b"set-cookie") is None
    assert response.header(b"x-echo") == b"a Set-Cookie: pwned=1"


def test_an_empty_finish_has_length_zero_and_no_type():
    held = Held()
    server = serve(tree(held=held))
    server.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
    held.held[0].finish()
    (response,) = server.responses()
    assert response.header(b"content-length") == b"0" and response.header(b"content-type") is None


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses_have_no_length_and_no_body(code):
    class NoBody(Resource):
        isLeaf = True

        def render_GET(self, request):
            request.setResponseCode(code)
            return b"ignored"
    server = serve(tree(x=NoBody()))
    server.send(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n" + GET.replace(b"/text", b"/x"))
    first, second = server.responses()
    assert first.status == second.status == code
    assert first.header(b"content-length") is None and first.body == b""


def test_streamed_http11_response_is_chunked():
    held = Held()
    server = serve(tree(held=held))
    server.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
    request = held.held[0]
    request.setHeader(b"content-type", b"text/plain")
    request.write(b"one ")
    assert server.transport.value().endswith(b"\r\n\r\n4\r\none \r\n")
    request.write(b"")
    request.write(b"two")
    request.finish()
    (response,) = server.responses()
    assert response.header(b"transfer-encoding") == b"chunked" and response.header(b"content-length") is None
    assert response.body == b"one two"
    assert not server.transport.disconnecting


def test_streamed_http10_response_is_close_delimited():
    held = Held()
    server = serve(tree(held=held))
    server.send(b"GET /held HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    request = held.held[0]
    request.write(b"one ")
    request.write(b"two")
    request.finish()
    (response,) = server.responses()
    assert response.header(b"transfer-encoding") is None and response.header(b"connection") == b"close"
    assert response.body == b"one two"
    assert server.transport.disconnecting


def test_http10_keep_alive_when_asked_and_the_length_is_known():
    server = serve(tree(text=Text()))
    server.send(b"GET /text HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    (response,) = server.responses()
    assert response.header(b"connection") == b"keep-alive" and not server.transport.disconnecting
    server.send(b"GET /text HTTP/1.0\r\n\r\n")
    (response,) = server.responses()
    assert response.header(b"connection") == b"close" and server.transport.disconnecting


def test_connection_close_is_honoured_and_said():
    server = serve(tree(text=Text()))
    server.send(b"GET /text HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + GET)
    (response,) = server.responses()
    assert response.header(b"connection") == b"close" and server.transport.disconnecting


# --------------------------------------------------------------------------- pipelining


def test_pipelined_requests_are_answered_in_order_one_at_a_time():
    held = Held()
    text = Text()
    server = serve(tree(held=held, text=text))
    server.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n" + GET + b"POST /text HTTP/1.1\r\nHost: h\r\n"
                b"Content-Length: 3\r\n\r\nabc" + GET)
    assert len(held.held) == 1 and not text.seen  # the second waits for the first
    assert server.output() == b""
    held.held[0].write(b"first")
    held.held[0].finish()
    bodies = [r.body for r in server.responses()]
    assert bodies == [b"first", b"hello", b"got abc", b"hello"]


def test_a_client_that_pipelines_too_much_is_paused():
    held = Held()
    server = serve(tree(held=held, text=Text()), limits=Limits(max_head=1024))
    server.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
    server.send(GET * 3000)
    assert server.transport.producerState == "paused"
    held.held[0].finish()
    assert server.transport.producerState == "producing"
    assert len(server.responses()) == 3001


def test_a_pipelined_request_waits_while_more_than_64_kib_of_answers_wait_to_be_sent():
    """A client that pipelines and reads nothing must not grow the server's buffers; one that
    reads slowly keeps its connection past http.timeout, as long as what waits goes down."""
    text = Text()
    server = serve(tree(text=text), timeout=2)
    transport = server.transport
    transport._tempDataLen, transport.dataBuffer, transport.offset = 0, b"", 0
    server.send(GET)
    transport.dataBuffer = b"x" * 100_000  # the answer, and more, waits for the kernel
    server.send(GET)
    assert len(text.seen) == 1 and transport.producerState == "paused"
    for _ in range(6):  # 6 s of a slow reader, each second 5 KB more taken by the kernel
        transport.offset += 5_000
        server.clock.advance(1)
        server.site.sweep()
    assert len(text.seen) == 1 and not transport.disconnecting
    transport.offset = 40_000
    server.clock.advance(1)
    assert len(text.seen) == 2 and transport.producerState == "producing"
    transport.dataBuffer, transport.offset = b"x" * 100_000, 0
    server.send(GET)
    server.clock.advance(3)  # nothing more taken: cut after http.timeout, as an idle client is
    server.site.sweep()
    assert len(text.seen) == 2 and transport.disconnecting


class Router:
    """A site's router (orbited.workers): records what it was asked, serves everything here;
    ``here``: the targets it says it serves itself before asking (the rest might move)."""

    def __init__(self, here: tuple[bytes, ...] = ()) -> None:
        self.asked: list[bytes] = []
        self.here = here

    def stays(self, channel, head) -> bool:
        return head.target in self.here

    def route(self, channel, head) -> bool:
        self.asked.append(head.target)
        return False


def test_with_a_router_a_pipelined_request_that_stays_waits_only_as_without_one():
    """Held until every byte before it had left, even when it would not move: 2 ms or more for
    each pipelined request once workers were on."""
    held = Held()
    server = serve(tree(held=held, text=Text()))
    server.site.router = Router(here=(b"/text",))
    transport = server.transport
    transport._tempDataLen, transport.dataBuffer, transport.offset = 0, b"", 0
    server.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n" + GET)
    transport._tempDataLen = 5  # written in this iteration, not yet sent
    held.held[0].finish()
    assert [r.body for r in server.responses()] == [b"", b"hello"]  # at once, no timer


def test_with_a_router_a_pipelined_request_waits_until_the_response_before_it_has_left():
    """Routed elsewhere, a request could be answered by another process before the kernel has
    taken the previous response; so it is held until Twisted's buffers are empty."""
    held = Held()
    server = serve(tree(held=held, text=Text()))
    router = server.site.router = Router()
    transport = server.transport
    transport._tempDataLen, transport.dataBuffer, transport.offset = 0, b"", 0
    server.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n" + GET)
    assert router.asked == [b"/held"]
    transport._tempDataLen = 5  # the response is written, and not all of it has gone yet
    held.held[0].finish()
    assert router.asked == [b"/held"] and transport.producerState == "paused"
    server.clock.advance(0.05)
    assert router.asked == [b"/held"]
    transport._tempDataLen, transport.dataBuffer, transport.offset = 0, b"tail", 2  # a partial send
    server.clock.advance(0.05)
    assert router.asked == [b"/held"]
    transport.offset = 4
    server.clock.advance(0.05)
    assert router.asked == [b"/held", b"/text"] and transport.producerState == "producing"
    assert [r.body for r in server.responses()] == [b"", b"hello"]


# --------------------------------------------------------------------------- traversal and methods


def test_traversal_sets_prepath_and_postpath_as_twisted_web_does():
    leaf = Text()
    inner = Resource()
    inner.putChild(b"leaf", leaf)
    server = serve(tree(inner=inner))
    server.send(b"GET /inner/leaf/a%2Fb/c?x=1&y=%20&x=2&flag HTTP/1.1\r\nHost: h\r\n\r\n")
    request = leaf.seen[0]
    assert request.prepath == [b"inner", b"leaf"] and request.postpath == [b"a/b", b"c"]
    assert request.path == b"/inner/leaf/a%2Fb/c" and request.uri.endswith(b"&flag")
    assert request.args == {b"x": [b"1", b"2"], b"y": [b" "], b"flag": [b""]}


def test_post_bodies_are_never_parsed_as_forms():
    text = Text()
    server = serve(tree(text=text))
    server.send(b"POST /text?q=1 HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 7\r\n\r\na=1&b=2")
    request = text.seen[0]
    assert request.args == {b"q": [b"1"]}
    assert server.responses()[0].body == b"got a=1&b=2"


def test_unknown_paths_are_404():
    server = serve(tree(text=Text()))
    server.send(b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n")
    assert server.responses()[0].status == 404


def test_unsupported_methods_are_405_with_allow():
    server = serve(tree(text=Text()))
    server.send(b"DELETE /text HTTP/1.1\r\nHost: h\r\n\r\n" + b"BREW /text HTTP/1.1\r\nHost: h\r\n\r\n")
    for response in server.responses():
        assert response.status == 405
        assert set(response.header(b"allow").split(b", ")) >= {b"GET", b"POST"}


def test_head_falls_back_to_get_without_the_body():
    server = serve(tree(text=Text(b"twelve bytes")))
    server.send(b"HEAD /text HTTP/1.1\r\nHost: h\r\n\r\n" + GET)
    head, get = server.responses(heads=(0,))
    assert head.status == 200 and head.header(b"content-length") == b"12" and head.body == b""
    assert get.body == b"twelve bytes"


def test_options_star_and_connect():
    server = serve(tree())
    server.send(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\nCONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n")
    options, connect = server.responses()
    assert options.status == 200 and b"OPTIONS" in options.header(b"allow")
    assert connect.status == 405


def test_absolute_form_targets_are_served_by_their_path():
    text = Text()
    server = serve(tree(text=text))
    server.send(b"GET http://h/text?a=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert server.responses()[0].body == b"hello" and text.seen[0].path == b"/text"


def test_errors_in_resources_are_500_and_logged_once(caplog):
    class Broken(Resource):
        isLeaf = True

        def render_GET(self, request):
            raise ValueError("bug")

        def render_POST(self, request):
            return "not bytes"
    server = serve(tree(broken=Broken(), text=Text()))
    server.send(b"GET /broken HTTP/1.1\r\nHost: h\r\n\r\nPOST /broken HTTP/1.1\r\nHost: h\r\n"
                b"Content-Length: 0\r\n\r\n" + GET)
    statuses = [r.status for r in server.responses()]
    assert statuses == [500, 500, 200]
    assert sum("bug" in r.getMessage() or "ValueError" in (r.exc_text or "") for r in caplog.records) == 1


def test_an_error_after_the_head_went_out_drops_the_connection():
    class HalfBroken(Resource):
        isLeaf = True

        def render_GET(self, request):
            request.write(b"partial")
            raise ValueError("bug")
    server = serve(tree(half=HalfBroken()))
    server.send(b"GET /half HTTP/1.1\r\nHost: h\r\n\r\n")
    assert server.transport.aborted


# --------------------------------------------------------------------------- the request object


def test_request_headers_cookies_and_addresses():
    text = Text()
    server = serve(tree(text=text))
    server.send(b"GET /text HTTP/1.1\r\nHost: h:80\r\nOrigin: http://caf\xc3\xa9\r\nCookie: a=1; JSESSIONID=xyz\r\n"
                b"X-Two: 1\r\nX-Two: 2\r\n\r\n")
    request = text.seen[0]
    assert request.getHeader(b"Host") == b"h:80" and request.getHeader("host") == "h:80"
    assert request.getHeader("origin") == "http://café"
    assert request.getHeader(b"x-two") == b"2"
    assert request.requestHeaders.getRawHeaders(b"x-two") == [b"1", b"2"]
    assert request.requestHeaders.hasHeader(b"cookie") and not request.requestHeaders.hasHeader(b"nope")
    assert request.getCookie(b"JSESSIONID") == b"xyz" and request.received_cookies[b"a"] == b"1"
    assert request.getClientAddress().port == 5555 and request.getHost().port == 8000
    assert not request.isSecure()
    assert request.clientproto == b"HTTP/1.1" and request.method == b"GET"
    assert request.getRequestHostname() == b"h"


def test_add_cookie():
    class Cookie(Resource):
        isLeaf = True

        def render_GET(self, request):
            request.addCookie(b"JSESSIONID", b"dummy", path=b"/")
            request.addCookie("b", "v;x", max_age=10, secure=True, httpOnly=True, sameSite="none")
            return b""
    server = serve(tree(c=Cookie()))
    server.send(b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n")
    (response,) = server.responses()
    assert response.headers[b"set-cookie"] == [b"JSESSIONID=dummy; Path=/",
                                               b"b=v x; Max-Age=10; Secure; HttpOnly; SameSite=none"]


def test_expect_100_continue_is_answered_before_the_body():
    text = Text()
    server = serve(tree(text=text))
    server.send(b"POST /text HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert server.transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    server.send(b"abc")
    assert server.responses()[0].body == b"got abc"


def test_notify_finish_fires_on_finish_and_errbacks_on_disconnect():
    held = Held()
    server = serve(tree(held=held))
    server.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
    done: list = []
    held.held[0].notifyFinish().addBoth(done.append)
    held.held[0].finish()
    assert done == [None]
    server.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
    request = held.held[1]
    request.write(b"streaming")
    lost: list = []
    request.notifyFinish().addErrback(lost.append)
    server.lose()
    assert len(lost) == 1 and lost[0].check(ConnectionError)
    assert request.channel is None
    request.write(b"ignored")  # as twisted.web: writes to a gone client are dropped
    request.finish()  # twisted.web raised here; ignoring it spares every caller a check
    late: list = []
    request.notifyFinish().addErrback(late.append)
    assert len(late) == 1


def test_producers_are_registered_with_the_transport_and_released_at_finish():
    held = Held()
    server = serve(tree(held=held))
    server.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
    request = held.held[0]

    class Producer:
        def pauseProducing(self): ...
        def resumeProducing(self): ...
        def stopProducing(self): ...
    producer = Producer()
    request.registerProducer(producer, True)
    assert server.transport.producer is producer and request.producer is producer
    with pytest.raises(ValueError):
        request.registerProducer(Producer(), True)
    request.finish()
    assert server.transport.producer is None and request.producer is None


class Dated(Resource):
    """A resource that answers If-Modified-Since the twisted.web way."""

    isLeaf = True

    def render_GET(self, request) -> bytes:
        if request.setLastModified(1_000_000_000) is CACHED:
            return b""
        return b"fresh"


def test_set_last_modified_ignores_an_if_modified_since_that_is_not_a_date():
    """stringToDatetime raises IndexError for an empty date: 'If-Modified-Since: ;' was a 500."""
    server = serve(tree(dated=Dated()))
    for since, status in [(b";", 200), (b"", 200), (b"Sun, 09 Sep 2001 01:46:40 GMT", 304), (b"nonsense", 200)]:
        server.send(b"GET /dated HTTP/1.1\r\nHost: h\r\nIf-Modified-Since: " + since + b"\r\n\r\n")
        (response,) = server.responses()
        assert (since, response.status) == (since, status)


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(("data", "status"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"GET /" + b"a" * 9000, 414),
    (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999\r\n\r\n", 413),
])
def test_bad_requests_get_their_status_a_text_and_a_close(data, status):
    server = serve(tree(text=Text()), timeout=5)
    server.send(data)
    (response,) = server.responses()
    assert response.status == status
    assert response.header(b"connection") == b"close" and response.body.endswith(b"\n")
    assert response.header(b"content-type") == b"text/plain; charset=utf-8"
    # The close lingers: the write side ends after the answer, and what the client still sends
    # is read and dropped (a socket closed with unread bytes resets, and the client loses the answer)
    assert server.transport.write_closed and not server.transport.disconnecting
    server.send(GET)  # nothing more is answered on a refused connection
    assert server.output() == b""
    server.clock.pump([1] * 6)  # the client never closes: it is cut after http.timeout
    assert server.transport.disconnecting and server.transport.aborted


def test_a_bad_request_after_a_good_one_on_the_same_connection():
    server = serve(tree(text=Text()))
    server.send(GET + b"BAD\r\n\r\n")
    good, bad = server.responses()
    assert (good.status, bad.status) == (200, 400)


# --------------------------------------------------------------------------- timeouts


def test_an_idle_connection_is_closed_after_the_timeout():
    server = serve(tree(text=Text()), timeout=5)
    server.send(GET)
    server.output()
    server.clock.advance(4)
    assert not server.transport.disconnecting
    server.clock.pump([1] * 3)
    assert server.transport.disconnecting and server.output() == b""  # idle: closed without a word


def test_a_slow_head_is_cut_however_busy_the_client_looks():
    server = serve(tree(text=Text()), timeout=5)
    server.send(b"GET /text HTTP/1.1\r\n")
    for _ in range(10):
        server.clock.advance(1)
        if server.transport.disconnecting:
            break
        server.send(b"X-Slow: loris\r\n")
    assert server.transport.disconnecting
    assert server.responses()[0].status == 408
    assert server.clock.seconds() <= 6


def test_no_timeout_while_a_response_is_in_progress():
    held = Held()
    server = serve(tree(held=held), timeout=2)
    server.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
    server.clock.pump([1] * 60)
    assert not server.transport.disconnecting
    held.held[0].finish()
    server.clock.pump([1] * 3)
    assert server.transport.disconnecting


def test_a_body_that_keeps_coming_is_not_cut():
    text = Text()
    server = serve(tree(text=text), timeout=2)
    server.send(b"POST /text HTTP/1.1\r\nHost: h\r\nContent-Length: 6000\r\n\r\n")
    for _ in range(10):  # 600 bytes/s for 10 s, five times http.timeout: over BODY_MIN_RATE
        server.clock.advance(1)
        server.send(b"x" * 600)
    assert not server.transport.disconnecting and server.responses()[0].body == b"got " + b"x" * 6000
    server.send(b"POST /text HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nx")
    server.clock.pump([1] * 4)
    assert server.transport.disconnecting and server.responses()[0].status == 408


def test_a_trickled_body_is_cut_once_it_falls_behind_the_minimum_rate():
    """Each piece of a body moved the deadline on by http.timeout: a byte a second (or a byte per
    http.timeout) held the connection for as long as the Content-Length allowed."""
    server = serve(tree(text=Text()), timeout=2)
    server.send(b"POST /text HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n")
    for _ in range(20):
        server.clock.advance(1)
        if server.transport.disconnecting:
            break
        server.send(b"x")
    assert server.transport.disconnecting and server.responses()[0].status == 408
    assert server.clock.seconds() <= 4  # http.timeout of grace, then the sweep


# --------------------------------------------------------------------------- handing the connection over


class Recorder(Protocol):
    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


def test_takeover_gives_the_transport_and_what_followed_the_head():
    from orbited.http.upgrade import hand_over

    recorder = Recorder()

    class Switch(Resource):
        isLeaf = True

        def render_GET(self, request):
            transport, rest = request.takeover()
            hand_over(transport, recorder, rest)
            return NOT_DONE_YET
    server = serve(tree(switch=Switch()))
    server.send(b"GET /switch HTTP/1.1\r\nHost: h\r\n\r\nearly bytes")
    assert recorder.transport is server.transport and server.transport.protocol is recorder
    assert recorder.received == b"early bytes"
    server.send(b"never")  # the HTTP channel is out of the picture
    assert server.output() == b""


def test_a_twisted_web_style_takeover_gets_the_leftover_bytes_too():
    recorder = Recorder()

    class Hijack(Resource):
        isLeaf = True

        def render_GET(self, request):
            transport, request.channel.transport = request.channel.transport, None
            transport.protocol = recorder
            recorder.makeConnection(transport)
            return NOT_DONE_YET
    server = serve(tree(hijack=Hijack()))
    server.send(b"GET /hijack HTTP/1.1\r\nHost: h\r\n\r\nleftover")
    assert recorder.received == b"leftover"
    assert server.channel not in server.site._watched


class Echo(WebSocketServerProtocol):
    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def masked_text(payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_websocket_endpoints_get_the_raw_head_without_rendering():
    factory = WebSocketServerFactory()
    factory.protocol = Echo
    endpoint = WebSocketResource(factory)
    assert websocket_factory_of(endpoint) is factory  # autobahn's private name, pinned
    rendered: list = []
    endpoint.render = rendered.append  # type: ignore[method-assign]
    server = serve(tree(ws=endpoint))
    server.send(HANDSHAKE + masked_text(b"hi"))
    assert not rendered
    assert isinstance(server.transport.protocol, Echo)
    out = server.output()
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in out and out.endswith(b"\x81\x02hi")
    server.transport.protocol.connectionLost(Failure(ConnectionError("done")))


def test_websocket_upgrade_rendered_by_a_parent_still_works():
    """/stomp: a resource whose render() calls WebSocketResource.render (autobahn's own takeover)."""
    factory = WebSocketServerFactory()
    factory.protocol = Echo
    endpoint = WebSocketResource(factory)

    class Front(Resource):
        isLeaf = True

        def render(self, request):
            return endpoint.render(request)
    server = serve(tree(ws=Front()))
    server.send(HANDSHAKE + masked_text(b"hey"))
    assert isinstance(server.transport.protocol, Echo)
    assert server.output().endswith(b"\x81\x03hey")
    server.transport.protocol.connectionLost(Failure(ConnectionError("done")))


def test_an_upgrade_to_a_plain_resource_is_an_ordinary_request():
    server = serve(tree(text=Text()))
    server.send(GET.replace(b"\r\n\r\n", b"\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"))
    assert server.responses()[0].body == b"hello"


def test_not_found_is_an_ordinary_404_for_an_upgrade_too():
    server = serve(tree(nothing=pages.notFound()))
    server.send(HANDSHAKE)
    assert server.responses()[0].status == 404


# --------------------------------------------------------------------------- anything a peer sends

PIECES = [GET, b"POST /text HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n",
          b"HEAD /text HTTP/1.0\r\n\r\n", b"POST /text HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
          HANDSHAKE.replace(b"/ws", b"/text"), b"\r\n", b"GET /text HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=30)), max_size=12),
       st.lists(st.integers(1, 64), min_size=1, max_size=8), st.booleans())
def test_nothing_a_peer_sends_raises_out_of_the_channel(pieces, sizes, finish_held):
    held = Held()
    server = serve(tree(text=Text(), held=held), limits=Limits(max_head=300, max_body=100))
    data = b"".join(pieces)
    at = index = 0
    while at < len(data):
        size = sizes[index % len(sizes)]
        server.send(data[at:at + size])
        at += size
        index += 1
        if finish_held:
            for request in held.held:
                if not request.finished:
                    request.write(b"x")
                    request.finish()
    out = server.output()
    assert not out or out.startswith(b"HTTP/1.")
    server.lose()
