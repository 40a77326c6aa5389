"""An echo service on Orbited's own WebSocket stack, for the Autobahn test cases.

It is mounted exactly the way ``/ws`` is mounted (autobahn ``WebSocketResource``
on Orbited's Site, with ``websocket_factory``'s options), so a conformance
run against it checks the stack ``/ws`` runs on.  Only the message handling
differs: every message comes back unchanged.

    python -m orbited.testing.ws_echo --port 9001 [--max-message BYTES]
"""

from __future__ import annotations

import argparse

from orbited.transports.websocket import WebSocketSession, websocket_factory


class EchoSession(WebSocketSession):
    """Echoes instead of proxying; everything else (options, limits) is /ws's."""

    def onOpen(self) -> None:
        pass

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        pass


def build_site(reactor: object, max_message: int, engine: str | None = None):
    """/ws on the HTTP engine /ws runs on (``[global] http.engine``'s default unless ``engine``)."""
    from autobahn.twisted.resource import WebSocketResource
    from twisted.web.resource import Resource

    from orbited.config import load_text
    from orbited.context import ServerContext
    from orbited.web import OrbitedSite, lean_site

    config = load_text(f"[global]\nws.max_message_size = {max_message}\n", "<ws_echo>")
    context = ServerContext(config, reactor)
    root = Resource()
    root.putChild(b"ws", WebSocketResource(websocket_factory(context, EchoSession)))
    if (engine or config.settings["http.engine"]) == "twisted":
        return OrbitedSite(root)
    return lean_site(root, reactor)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--max-message", type=int, default=32 * 1024 * 1024,
                        help="largest message accepted; the Autobahn cases send up to 16 MiB")
    parser.add_argument("--engine", choices=("lean", "twisted"), default=None,
                        help="HTTP engine (default: [global] http.engine's default, as /ws)")
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    reactor.listenTCP(args.port, build_site(reactor, args.max_message, args.engine), backlog=1024, interface=args.host)
    print(f"ws echo on ws://{args.host}:{args.port}/ws", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
