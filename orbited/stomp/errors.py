"""The named errors of the STOMP broker; each becomes one ERROR frame.

Every error carries ``message`` (the short text of the ERROR frame's
``message`` header) and ``detail`` (its body).  The connection that meets
one sends the ERROR and closes, as the STOMP specifications require; no
other connection notices.
"""

from __future__ import annotations


class StompError(Exception):
    def __init__(self, message: str, detail: str = ""):
        super().__init__(message if not detail else f"{message}: {detail}")
        self.message = message
        self.detail = detail


class FrameError(StompError):
    """The bytes are not a frame this connection accepts (syntax, escapes, size limits)."""


class ProtocolError(StompError):
    """A well-formed frame that breaks the protocol: a missing header, an unknown id, a frame out of place."""


class AccessRefused(StompError):
    """The [stomp] users and rules refuse a CONNECT, SUBSCRIBE, SEND or publish."""


class DestinationFull(StompError):
    """A queue at its bound (or one queue too many) with ``queue.overflow = reject``."""
