"""The /ws connect burst's second floor: Orbited's own stack with none of Orbited's features.

The Node floor (answer_at_once.js) has no backend, so it says what the machine and
the load client cost, not what a proxy must cost.  This one proxies for real, on the
reactor Orbited runs (orbited.reactor), to the backend named in the handshake: a
handwritten upgrade answer, the TCPSocket handshake, a connect, "1", then bytes both
ways.  What it leaves out is everything Orbited adds on top: the HTTP layer and
resource tree, autobahn's opening handshake and frame parser, the access and Origin
rules, the session registry and stats, the connect timeout, flow control and the
log lines.  The distance between its figure and Orbited's is what those cost per
connect; its own figure is what a Twisted proxy costs on this machine.

It is not a WebSocket server: it reads only what bench/client/wsconnect.c sends
(masked frames under 126 bytes), connects only to 127.0.0.1 and drops a connection
that sends anything else.

usage: python bare_proxy.py PORT   (listens on 127.0.0.1:PORT)
"""

from __future__ import annotations

import base64
import hashlib
import sys

from orbited import reactor as lean

lean.install()

from twisted.internet import protocol, reactor  # after the reactor is installed

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = b"sec-websocket-key:"


def server_frame(opcode: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 65536:
        return bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big") + payload


def unmask(mask: bytes, payload: bytes) -> bytes:
    key = int.from_bytes((mask * (len(payload) // 4 + 1))[: len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")


class Backend(protocol.Protocol):
    def __init__(self, front: Front) -> None:
        self.front = front

    def connectionMade(self) -> None:
        self.front.backend_ready(self)

    def dataReceived(self, data: bytes) -> None:
        self.front.transport.write(server_frame(2, data))

    def connectionLost(self, reason: object = None) -> None:
        self.front.transport.loseConnection()


class BackendFactory(protocol.ClientFactory):
    def __init__(self, front: Front) -> None:
        self.front = front

    def buildProtocol(self, addr: object) -> Backend:
        return Backend(self.front)

    def clientConnectionFailed(self, connector: object, reason: object) -> None:
        self.front.transport.write(server_frame(1, b"0108"))
        self.front.transport.loseConnection()


class Front(protocol.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.upgraded = False
        self.target_sent = False
        self.backend: Backend | None = None
        self.early = b""  # bytes sent before the backend connected

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded and not self._upgrade():
            return
        while len(self.buffer) >= 6:
            size = self.buffer[1] & 0x7F
            if size > 125 or not self.buffer[1] & 0x80:
                self.transport.loseConnection()
                return
            if len(self.buffer) < 6 + size:
                return
            payload = unmask(self.buffer[2:6], self.buffer[6 : 6 + size])
            self.buffer = self.buffer[6 + size :]
            self._message(payload)

    def _upgrade(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
        key = next((line[len(KEY) :].strip() for line in head.split(b"\r\n") if line.lower().startswith(KEY)), b"")
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: binary\r\n\r\n")
        self.upgraded = True
        return True

    def _message(self, payload: bytes) -> None:
        if not self.target_sent:
            self.target_sent = True
            _host, _, port = payload.strip().decode("ascii", "replace").rpartition(":")
            if not port.isdigit():
                self.transport.write(server_frame(1, b"0102"))
                self.transport.loseConnection()
                return
            reactor.connectTCP("127.0.0.1", int(port), BackendFactory(self))
        elif self.backend is None:
            self.early += payload
        else:
            self.backend.transport.write(payload)

    def backend_ready(self, backend: Backend) -> None:
        self.backend = backend
        self.transport.write(server_frame(1, b"1"))
        if self.early:
            backend.transport.write(self.early)
            self.early = b""

    def connectionLost(self, reason: object = None) -> None:
        if self.backend is not None:
            self.backend.transport.loseConnection()


def main() -> None:
    factory = protocol.Factory.forProtocol(Front)
    reactor.listenTCP(int(sys.argv[1]), factory, backlog=4096, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
