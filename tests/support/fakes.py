"""Test doubles for Twisted's producer interfaces, where no real peer is involved."""

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
