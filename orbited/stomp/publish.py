"""``POST /stomp/publish/<destination>``: put a message on the broker over HTTP.

For server-side code in another process (the Rails plugin of 0.7 opened a
STOMP connection per message for this).  Off unless ``[stomp]
publish.enabled = 1``; it replaces 0.7's unauthenticated
``/system/test/stomp`` injector.  A request must pass, in order:

1. its client address is in ``[stomp] publish.clients`` (loopback by default),
   and no proxy relayed it (orbited/forwarding.py);
2. an ``Origin`` header, if a browser sent one, passes the same check as
   the WebSocket endpoints (so a page cannot post cross-site); a page that
   passes gets the CORS fields that let it read the answer, and ``OPTIONS``
   answers its preflight;
3. an ``[access]`` rule lets the request's ``Host`` reach the broker's own
   ``stomp://`` address (e.g. ``* -> localhost:61613``): the endpoint gives
   no one more than the proxy already gives them;
4. with ``[stomp] user.*`` keys, HTTP Basic credentials of a broker user,
   whose ``write`` rules then apply.

The body is the message body; the request's ``Content-Type`` and any query
parameters become STOMP headers.  The answer is JSON with the message-id.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING
from urllib.parse import unquote

from twisted.web.resource import Resource
from twisted.web.server import Request

from orbited.forwarding import client_ip, forwarding_header
from orbited.stomp.errors import AccessRefused, DestinationFull, ProtocolError

if TYPE_CHECKING:
    from orbited.context import ServerContext

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def broker_addresses(context: ServerContext) -> list[tuple[str, int]]:
    """The (host, port) names by which [access] rules may name this broker."""
    out: list[tuple[str, int]] = []
    for listener in context.config.listeners:
        if listener.scheme != "stomp":
            continue
        if listener.host in ("", "0.0.0.0", "::", "127.0.0.1", "::1"):
            out.extend((name, listener.port) for name in LOOPBACK_NAMES)
        if listener.host:
            out.append((listener.host.lower(), listener.port))
    return out


class PublishResource(Resource):
    isLeaf = True
    # What a 405 names in Allow (RFC 9110 15.5.6).  Computed from the render_ methods it said
    # 'HEAD, GET, POST', and GET (with HEAD) is itself a 405 here.
    allowedMethods = (b"POST", b"OPTIONS")

    def __init__(self, context: ServerContext):
        super().__init__()
        self.context = context

    def _answer(self, request: Request, code: int, payload: dict) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(payload).encode() + b"\n"

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"allow", b"POST, OPTIONS")
        return self._answer(request, 405, {"error": "use POST"})

    def _page_allowed(self, request: Request) -> bool:
        """Check 2: no Origin (not a browser), or one the Origin rules allow; for an allowed
        page, the CORS fields that let it read the answer (and send Basic credentials)."""
        origin = request.getHeader(b"origin")
        if origin is None:
            return True
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        if not self.context.policy.origin_allowed(origin.decode("latin-1"), host):
            return False
        request.setHeader(b"access-control-allow-origin", origin)
        request.setHeader(b"access-control-allow-credentials", b"true")
        request.setHeader(b"vary", b"Origin")
        return True

    def render_OPTIONS(self, request: Request) -> bytes:
        """A CORS preflight: a page on an allowed origin posting JSON, or with credentials,
        asks first.  It got 405, so the post was never sent; a text/plain post (no preflight) was
        published, but without Access-Control-Allow-Origin the page could not read the answer
        and saw a network error."""
        request.setHeader(b"allow", b"POST, OPTIONS")
        if request.getHeader(b"origin") is None or not self._page_allowed(request):
            return self._answer(request, 403, {"error": "origin not allowed"})
        request.setResponseCode(204)
        request.setHeader(b"access-control-allow-methods", b"POST")
        asked = request.getHeader(b"access-control-request-headers")
        if asked:
            request.setHeader(b"access-control-allow-headers", asked)
        request.setHeader(b"access-control-max-age", b"600")
        return b""

    def render_POST(self, request: Request) -> bytes:
        context = self.context
        broker = context.broker
        settings = broker.settings
        client = getattr(request.getClientAddress(), "host", "")
        address = client_ip(request)
        if address is None or not any(address in net for net in settings["publish.clients"]):
            return self._answer(request, 403, {"error": f"client {client} is not in [stomp] publish.clients"})
        relayed = forwarding_header(request)
        if relayed is not None:
            # A proxy on a listed address (nginx on this host) relays every outside client too.
            return self._answer(request, 403, {
                "error": f"relayed by a proxy ({relayed} header): the client's own address is unknown, "
                         "so [stomp] publish.clients cannot vouch for it; publish to Orbited directly"})
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        if not self._page_allowed(request):
            return self._answer(request, 403, {"error": "origin not allowed"})
        if not any(context.policy.destination_allowed(host, name, port) for name, port in broker_addresses(context)):
            return self._answer(request, 403, {
                "error": f"no [access] rule lets Host '{host}' reach this broker's stomp:// listener "
                         f"(add e.g. '{host or '*'} -> localhost:61613')"})
        try:
            user = broker.permissions.authenticate(*basic_credentials(request))
        except AccessRefused as exc:
            request.setHeader(b"www-authenticate", b'Basic realm="orbited stomp"')
            return self._answer(request, 401, {"error": exc.detail or exc.message})
        destination = "/" + "/".join(unquote(seg.decode("utf-8", "replace")) for seg in request.postpath)
        request.content.seek(0)
        body = request.content.read(broker.limits.max_frame_size + 1)
        if len(body) > broker.limits.max_frame_size:
            return self._answer(request, 413, {"error": f"body exceeds [stomp] frame.max_size "
                                                        f"({broker.limits.max_frame_size})"})
        headers = {}
        content_type = request.getHeader(b"content-type")
        if content_type:
            headers["content-type"] = content_type.decode("latin-1")
        for name, values in (request.args or {}).items():
            headers.setdefault(name.decode("utf-8", "replace"), values[0].decode("utf-8", "replace"))
        try:
            message_id = broker.publish(destination, body, headers, user=user)
        except ProtocolError as exc:
            return self._answer(request, 404 if exc.message == "unknown destination" else 400,
                                {"error": exc.detail or exc.message})
        except AccessRefused as exc:
            return self._answer(request, 403, {"error": exc.detail or exc.message})
        except DestinationFull as exc:
            return self._answer(request, 503, {"error": exc.detail or exc.message})
        return self._answer(request, 200, {"message-id": message_id, "destination": destination})


def basic_credentials(request: Request) -> tuple[str | None, str | None]:
    header = request.getHeader(b"authorization")
    if not header or header[:6].lower() != b"basic ":
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    login, _, passcode = decoded.partition(":")
    return login, passcode
