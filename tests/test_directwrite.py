"""orbited.directwrite: a write goes out at once when nothing is queued, else behind what is."""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.protocol import Protocol

from orbited.directwrite import write_now


def test_write_now_sends_at_once_and_queues_the_rest():
    """Pins the Twisted buffer attributes write_now relies on."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    client.setblocking(False)

    class Reactor:
        def addWriter(self, _):
            self.writing = True

        def removeWriter(self, _):
            pass

        writing = False

    transport = tcp.Connection(client, Protocol(), reactor=Reactor())
    transport.connected = True
    peer.settimeout(5)
    for name in ("dataBuffer", "offset", "_tempDataLen", "_writeDisconnected", "socket"):
        assert hasattr(transport, name), name
    write_now(transport, b"at once")
    assert peer.recv(100) == b"at once" and not transport.reactor.writing
    transport.write(b"queued")  # something is pending: write_now must queue behind it
    write_now(transport, b" after")
    assert transport._tempDataLen == len(b"queued after") and transport.reactor.writing
    for sock in (client, peer, server):
        sock.close()
