"""The SockJS services the sockjs-protocol suite expects, built from the code that serves ``/sockjs``.

    python -m orbited.testing.sockjs_conformance --port 8081

serves at its root:

- ``/echo``: every message comes back;
- ``/disabled_websocket_echo``: the same, without the websocket transports;
- ``/cookie_needed_echo``: the same, with JSESSIONID cookies;
- ``/close``: every session is closed at once with ``c[3000,"Go away!"]``;

with the suite's settings: streaming responses end after 4096 bytes, 25 s
heartbeats, 5 s session expiry, and the hixie-76 handshake accepted.  Only
the handlers (echo, close) and those options differ from ``/sockjs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

from orbited.transports.sockjs.http_transports import SockJSResource
from orbited.transports.sockjs.service import (
    SessionRequest,
    SockJSOptions,
    SockJSService,
)
from orbited.transports.sockjs.session import SockJSHandler, SockJSSession
from orbited.transports.sockjs.ws_transports import (
    SockJSWebSocketProtocol,
    WebSocketUpgrade,
)

SUITE_OPTIONS = SockJSOptions(
    websocket=True,
    cookie_needed=False,
    response_limit=4096,
    heartbeat_interval=25.0,
    disconnect_delay=5.0,
    hixie76=True,
)


class Echo(SockJSHandler):
    def messageReceived(self, text: str) -> None:
        if self.connection is not None:
            self.connection.send(text)


class GoAway(SockJSHandler):
    def connectionOpened(self, connection: SockJSSession) -> None:
        super().connectionOpened(connection)
        connection.close(3000, "Go away!")


def services(reactor: Any, options: SockJSOptions = SUITE_OPTIONS) -> dict[str, SockJSService]:
    def echo(_: SessionRequest) -> Echo:
        return Echo()

    def go_away(_: SessionRequest) -> GoAway:
        return GoAway()

    return {
        "echo": SockJSService("echo", echo, options, reactor),
        "disabled_websocket_echo": SockJSService(
            "disabled_websocket_echo", echo, dataclasses.replace(options, websocket=False), reactor),
        "cookie_needed_echo": SockJSService(
            "cookie_needed_echo", echo, dataclasses.replace(options, cookie_needed=True), reactor),
        "close": SockJSService("close", go_away, options, reactor),
    }


def build_site(reactor: Any, options: SockJSOptions = SUITE_OPTIONS, engine: str | None = None):
    """The four services on the HTTP engine ``/sockjs`` runs on (``[global] http.engine``'s default)."""
    from twisted.web.resource import Resource

    from orbited.config import load_text
    from orbited.context import ServerContext
    from orbited.transports.websocket import websocket_factory

    context = ServerContext(load_text("", "<sockjs_conformance>"), reactor)
    root = Resource()
    for name, service in services(reactor, options).items():
        upgrade = WebSocketUpgrade(service, websocket_factory(context, SockJSWebSocketProtocol))
        root.putChild(name.encode(), SockJSResource(service, upgrade))
    settings = context.config.settings.values
    engine = engine or settings.get("http.engine", "twisted")
    if engine == "twisted":
        from orbited.web import OrbitedSite

        site = OrbitedSite(root)
        site.displayTracebacks = False
        return site
    from orbited.web import lean_site

    return lean_site(root, reactor, settings["http.timeout"], settings["http.max_body"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--engine", choices=("lean", "twisted"), default=None,
                        help="HTTP engine (default: [global] http.engine's default, as /sockjs)")
    parser.add_argument("--verbose", action="store_true", help="log every session event")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from twisted.internet import reactor

    reactor.listenTCP(args.port, build_site(reactor, engine=args.engine), backlog=1024, interface=args.host)
    print(f"SockJS conformance services on http://{args.host}:{args.port}/"
          "{echo,disabled_websocket_echo,cookie_needed_echo,close}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
