"""Files from one directory, read-only: GET and HEAD, ``index.html``, never a listing, never outside.

A leaf resource: it takes the rest of the path at once and refuses any
segment that could leave the directory (``.``, ``..``, empty segments
inside the path, and segments holding ``/``, ``\\`` or NUL once decoded),
so there is no way up however the path is encoded.  Symbolic links inside
the directory are followed, as twisted.web's ``File`` did: whoever can
place one there chose to.

A directory asked for without its trailing slash is redirected to it; the
``Location`` is the decoded path with exactly one leading slash, so it can
never read as another host (``//evil.example``).  ``Last-Modified`` is
sent (with ``Cache-Control`` when the mount has one) and ``If-Modified-Since`` answered with 304 (``If-None-Match``, when
sent, decides instead: only ``*`` matches, there are no ETags).  Unknown extensions are
``application/octet-stream`` (twisted.web said text/html, which lets an
uploaded file run script).  Range requests are not supported: the whole
file is sent.  Small files go out in one write; larger ones stream through
a pull producer, so a slow reader never makes the server hold a whole file.
A streamed file is sent to the length its ``Content-Length`` promised, no
further: one that grows meanwhile is cut there (the rest would be read as
the next response on the connection), one that shrinks ends the connection
(the client sees the body is short, instead of waiting for bytes that never
come).

It uses only the common Request API, so it runs on both HTTP engines.
"""

from __future__ import annotations

import logging
import math
import mimetypes
import os
import stat
from typing import Any

from twisted.protocols.basic import FileSender
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from orbited.addresses import peer_text
from orbited.http.conditional import not_modified
from orbited.logs import Tally
from orbited.procstats import OUT_OF_FILES

log = logging.getLogger("orbited.http")

INDEX_NAMES = ("index.html",)
WHOLE_FILE_LIMIT = 256 * 1024  # read and sent in one write; larger files are streamed
_BAD_SEGMENTS = (b"", b".", b"..")

# Pinned where Python's own table changed between the supported versions, so that a file is
# served with the same type on each: .mjs became text/javascript in 3.12 (.js is pinned alike).
_TYPES = mimetypes.MimeTypes()
_TYPES.add_type("application/javascript", ".js")
_TYPES.add_type("application/javascript", ".mjs")
_TYPES.add_type("application/json", ".json")
_TYPES.add_type("image/svg+xml", ".svg")
_TYPES.add_type("font/woff2", ".woff2")
_TYPES.add_type("application/wasm", ".wasm")


def content_type(name: str) -> bytes:
    guessed, encoding = _TYPES.guess_type(name, strict=False)
    if guessed is None or encoding is not None:
        return b"application/octet-stream"
    if guessed.startswith("text/") or guessed == "application/javascript":
        return guessed.encode("ascii") + b"; charset=utf-8"
    return guessed.encode("ascii")


def safe_segments(segments: list[bytes]) -> list[str] | None:
    """The path segments as names inside the directory, or None if any could leave it."""
    names = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment in _BAD_SEGMENTS:
            if segment == b"" and index == last:
                continue  # a trailing slash: the directory itself
            return None
        if b"/" in segment or b"\\" in segment or b"\0" in segment:
            return None
        try:
            names.append(segment.decode("utf-8"))
        except UnicodeDecodeError:
            return None
    return names


def not_found(request: Any) -> bytes:
    request.setResponseCode(404)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"Not found.\n"


class StaticFiles(Resource):
    """The files under ``directory``; mount with ``putChild`` (or as the INDEX of the root).

    ``stall_timeout`` (``[global] http.timeout``): a client that reads none of a
    large file for that long is cut off.  While a response is in progress the
    HTTP layer does not time the connection out (a long-poll may rightly be
    silent), so a client that stopped reading held a connection and an open
    file for ever: two descriptors each, towards the open-file limit of the
    process every other client shares."""

    isLeaf = True

    def __init__(self, directory: str, clock: Any, stall_timeout: float, cache_control: bytes | None = None):
        """``cache_control``: sent with every file and 304 (Orbited's own files say ``no-cache``)."""
        super().__init__()
        self.directory = os.path.abspath(directory)
        self.cache_control = cache_control
        self.clock = clock
        self.stall_timeout = stall_timeout
        self.out_of_files = Tally(log, "out of file descriptors: static files are answered 503",
                                  "out of file descriptors: %d more static file request(s) answered 503",
                                  call_later=clock.callLater)

    def getChild(self, path: bytes, request: Any) -> Resource:
        # Asked for a child by a parent that delegates to us (the root's INDEX
        # mount): put the segment back and serve the rest of the path as a leaf.
        request.prepath.pop()
        request.postpath.insert(0, path)
        return self

    def render_GET(self, request: Any) -> bytes | int:
        postpath = request.postpath
        names = safe_segments(postpath)
        if names is None:
            return not_found(request)
        path = os.path.join(self.directory, *names)
        try:
            info = os.stat(path)
        except (OSError, ValueError):
            return not_found(request)
        if stat.S_ISDIR(info.st_mode):
            if not postpath or postpath[-1] != b"":
                return self._redirect_to_directory(request)
            for index in INDEX_NAMES:
                candidate = os.path.join(path, index)
                try:
                    info = os.stat(candidate)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    path = candidate
                    break
            else:
                return not_found(request)  # no listings
        elif not stat.S_ISREG(info.st_mode) or (postpath and postpath[-1] == b""):
            return not_found(request)
        return self._serve(request, path, info)

    def _serve(self, request: Any, path: str, info: os.stat_result) -> bytes | int:
        # Not request.setLastModified: on either engine a bad If-Modified-Since raised out of it (500)
        modified = math.ceil(info.st_mtime)
        request.lastModified = modified  # both engines send it as Last-Modified
        if self.cache_control is not None:
            request.setHeader(b"cache-control", self.cache_control)
        if not_modified(request.getHeader(b"if-none-match"), request.getHeader(b"if-modified-since"), modified):
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-type", content_type(path))
        size = info.st_size
        try:
            handle = open(path, "rb")
        except OSError as exc:
            request.lastModified = None  # what is answered is not the file
            request.responseHeaders.removeHeader(b"cache-control")
            if exc.errno in OUT_OF_FILES:
                self.out_of_files()
                request.setResponseCode(503)
                request.setHeader(b"retry-after", b"10")
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                return b"Out of file descriptors; try again later.\n"
            return not_found(request)
        if size <= WHOLE_FILE_LIMIT or request.method == b"HEAD":
            with handle:
                body = handle.read(size) if request.method != b"HEAD" else b""
            request.setHeader(b"content-length", b"%d" % (size if request.method == b"HEAD" else len(body)))
            return body
        request.setHeader(b"content-length", b"%d" % size)
        sender = GuardedFileSender(self.clock, self.stall_timeout, request, path)
        promised = FilePart(handle, size)

        def done(_: object) -> None:
            handle.close()
            sender.guard_off()
            if getattr(request, "_disconnected", False) or request.finished:
                return
            if promised.left:
                log.info("%s: %s shrank from %d bytes while it was sent: closing the connection",
                         _peer(request), path, size)
                transport = transport_of(request)
                if transport is not None:
                    transport.loseConnection()  # after what was sent: the client sees the body end short
                return
            request.finish()

        def failed(_: object) -> None:
            handle.close()
            sender.guard_off()

        sender.beginFileTransfer(promised, request).addCallbacks(done, failed)
        return NOT_DONE_YET

    @staticmethod
    def _redirect_to_directory(request: Any) -> bytes:
        # Twisted rebuilt the Location from the raw request URI, so a request
        # for '//evil.example/%2F..' redirected off-site.  Ours is the decoded
        # path with a single leading slash.
        path = b"/" + request.path.lstrip(b"/").replace(b"\\", b"%5C") + b"/"
        query = request.uri.partition(b"?")[2]
        request.setResponseCode(301)
        request.setHeader(b"location", path + (b"?" + query if query else b""))
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return b""


class GuardedFileSender(FileSender):
    """A FileSender that cuts the connection off when the client reads nothing for ``timeout``
    seconds: the transport asks for the next chunk only once the last one has left for the
    kernel, so no call to ``resumeProducing`` for that long means no progress."""

    def __init__(self, clock: Any, timeout: float, request: Any, path: str):
        self.clock = clock
        self.timeout = timeout
        self.request = request
        self.path = path
        self.moved = clock.seconds()
        self.check = clock.callLater(timeout, self.stalled)

    def resumeProducing(self) -> None:
        self.moved = self.clock.seconds()
        super().resumeProducing()

    def stalled(self) -> None:
        idle = self.clock.seconds() - self.moved
        if idle < self.timeout:
            self.check = self.clock.callLater(self.timeout - idle, self.stalled)
            return
        log.info("%s read nothing of %s for %.0f s (http.timeout): closing the connection",
                 _peer(self.request), self.path, idle)
        transport = transport_of(self.request)
        if transport is not None:
            transport.abortConnection()  # not loseConnection: that waits for the client to read

    def guard_off(self) -> None:
        if self.check.active():
            self.check.cancel()


class FilePart:
    """The first ``size`` bytes of an open file, for :class:`FileSender`: the length the
    response's Content-Length promised, however the file changes while it is sent."""

    def __init__(self, handle: Any, size: int):
        self.handle = handle
        self.left = size  # promised bytes not read yet: more than 0 after EOF means the file shrank

    def read(self, most: int) -> bytes:
        if self.left <= 0:
            return b""
        data = self.handle.read(min(most, self.left))
        self.left -= len(data)
        return data


def transport_of(request: Any) -> Any:
    """The connection under a request, on either HTTP engine (None once it is gone)."""
    return getattr(request, "transport", None) or getattr(request.channel, "transport", None)


def _peer(request: Any) -> str:
    return peer_text(request.getClientAddress())
