"""Test doubles for Twisted's producer interfaces and for the proxy side of a session, where no real peer is involved."""

from __future__ import annotations


class RecordingProducer:
    """An IPushProducer that only remembers whether it was told to pause."""

    def __init__(self) -> None:
        self.paused = False
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


class RecordingProxy:
    """An ISessionProtocol that records what a session hands it, in place of the TCP proxy."""

    def __init__(self) -> None:
        self.session = None
        self.data: list[bytes] = []
        self.closed: list[str] = []

    def sessionOpened(self, session) -> None:
        self.session = session

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)

    def sessionClosed(self, reason: str) -> None:
        self.closed.append(reason)
