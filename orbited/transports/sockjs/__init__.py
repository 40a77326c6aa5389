"""``/sockjs``: TCPSockets over the SockJS 0.3.3 transport family, for networks that block WebSocket.

The package is a SockJS server (any service, any handler) plus one service
that carries TCPSockets.  Sans-IO cores, each tested without a reactor:

- ``framing``: frames, the JSON escaping rules, upload payloads, each
  transport's wire form;
- ``routing``: URL -> resource and allowed methods;
- ``pages``: greeting, ``/info``, the iframe page;
- ``hixie76``: the obsolete WebSocket draft the protocol suite still checks.

Twisted shells:

- ``session``: one session's state, queue, receiver and timers (on a clock);
- ``service``: options and the table of live sessions;
- ``http_transports``: the resource and the HTTP receivers;
- ``ws_transports``: framed and raw WebSocket (autobahn) and hixie-76;
- ``tcpsocket``: the TCPSocket adapter (a ``CometSession``) and ``sockjs_resource``.

Nothing here knows what a backend is: the proxy runs on ``SockJSTCPSocket``
as on any ISession.
"""

from orbited.transports.sockjs.tcpsocket import sockjs_resource

__all__ = ["sockjs_resource"]
