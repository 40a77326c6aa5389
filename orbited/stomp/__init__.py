"""The built-in STOMP broker (STOMP 1.0-1.2): ``stomp://`` listeners, ``/stomp`` over WebSocket.

The seams the server uses:

- :func:`attach` makes ``context.broker`` at start-up (cheap: no sockets, no timers);
- :func:`stomp_factory` is the Twisted factory of each ``stomp://`` listener;
- :func:`stomp_children` are the HTTP mounts (``/stomp`` and ``/stomp/publish``);
- :func:`publish` lets server-side code put a message on a destination.

Modules: ``codec`` (frames <-> bytes), ``destinations`` (topics, queues),
``connection`` (one client's state machine), ``broker`` (the whole broker),
``permissions``, ``settings`` — all without I/O — and the Twisted shells
``server``, ``websocket`` and ``publish``.  docs/stomp.md is the manual.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Request

from orbited.addresses import ip_of
from orbited.stomp.broker import StompBroker
from orbited.stomp.settings import StompSettings

if TYPE_CHECKING:
    from orbited.config import Listener
    from orbited.context import ServerContext

log = logging.getLogger("orbited.stomp")

__all__ = ["StompBroker", "attach", "publish", "stomp_children", "stomp_factory"]


ENDPOINT_KEYS = ("websocket.enabled", "publish.enabled")


def attach(context: ServerContext) -> None:
    """Create the broker from ``[stomp]`` once per server, if the config asks for one.

    It does with a ``stomp://`` listener, or with ``[stomp] websocket.enabled`` or
    ``publish.enabled`` set to 1 by name (/stomp or /stomp/publish without a TCP
    listener).  A config that sends its pages to RabbitMQ has neither, and must not
    get a broker of its own at /stomp, open to any login, on every HTTP port."""
    if context.broker is not None:
        return
    section = context.config.section("stomp")
    settings = StompSettings.from_section(section)
    listeners = [lst for lst in context.config.listeners if lst.scheme == "stomp"]
    named = [key for key in ENDPOINT_KEYS if section.get(key) is not None and settings[key]]
    if not listeners and not named:
        return
    context.broker = StompBroker(settings, context.reactor)
    if settings.development_mode:
        log.warning("STOMP broker in development mode: no [stomp] user.* keys, so any login is accepted")
        exposed = reachable_from_elsewhere(context.config.listeners, settings)
        if exposed:
            log.warning("and other machines can reach it through %s: add [stomp] user.NAME = PASSWORD "
                        "keys, or listen on 127.0.0.1 only", ", ".join(exposed))


def reachable_from_elsewhere(listeners: list[Listener], settings: StompSettings) -> list[str]:
    """The listeners that hand the broker to other machines: stomp:// ones, and http(s):// ones
    when /stomp or /stomp/publish is on, bound to anything but a loopback address.  A broker
    that takes any login is fine for a demo on loopback and an open relay anywhere else; the
    shipped configs listen on loopback for that reason, and one written by hand gets this line."""
    served = settings["websocket.enabled"] or settings["publish.enabled"]
    return [f"{listener}{'' if listener.scheme == 'stomp' else ' (/stomp)'}" for listener in listeners
            if (listener.scheme == "stomp" or (listener.scheme in ("http", "https") and served))
            and not _loopback(listener.host)]


def _loopback(host: str) -> bool:
    """'' (every interface) and names other than localhost are not."""
    address = ip_of(host)  # [::ffff:127.0.0.1] is 127.0.0.1
    return host == "localhost" or (address is not None and address.is_loopback)


def stomp_factory(context: ServerContext):
    from orbited.stomp.server import StompFactory

    attach(context)
    return StompFactory(context.broker, context.reactor)


class StompResource(Resource):
    """``/stomp`` is the WebSocket endpoint; ``/stomp/publish/...`` the HTTP publish endpoint."""

    def __init__(self, websocket: Resource | None, publish_endpoint: Resource | None):
        super().__init__()
        self.websocket = websocket
        self.publish_endpoint = publish_endpoint

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"publish" and self.publish_endpoint is not None:
            return self.publish_endpoint
        if path == b"" and self.websocket is not None and not request.postpath:
            return self.websocket
        return notFound()

    def render(self, request: Request) -> bytes:
        if self.websocket is None:
            return notFound().render(request)
        return self.websocket.render(request)


def stomp_children(context: ServerContext) -> dict[bytes, Resource]:
    attach(context)
    if context.broker is None:
        return {}
    settings = context.broker.settings
    websocket = publish_endpoint = None
    if settings["websocket.enabled"]:
        from orbited.http.upgrade import WebSocketEndpoint
        from orbited.stomp.websocket import stomp_websocket_factory

        websocket = WebSocketEndpoint(stomp_websocket_factory(context))
    if settings["publish.enabled"]:
        from orbited.stomp.publish import PublishResource

        publish_endpoint = PublishResource(context)
    if websocket is None and publish_endpoint is None:
        return {}
    return {b"stomp": StompResource(websocket, publish_endpoint)}


def publish(context: ServerContext, destination: str, body: bytes | str,
            headers: dict[str, str] | None = None) -> str:
    """Server-side publishing: put ``body`` on ``destination``; returns the message-id."""
    attach(context)
    if context.broker is None:
        raise RuntimeError("no built-in STOMP broker: [listen] has no stomp:// line, and [stomp] does not "
                           "set websocket.enabled or publish.enabled")
    return context.broker.publish(destination, body, headers)
