"""Header collections with the part of ``twisted.web.http_headers.Headers`` that resources use.

Both keep one dict of lower-cased name -> list of values, which is what the
parser already built for a request, so a request costs no header copying.
Names and values may be given as bytes or str, as with twisted.web: a str
name gets str values back (UTF-8, undecodable bytes replaced).  Response
values have CR and LF replaced by a space, so a value taken from a request
can never split the response (twisted.web did the same).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import AnyStr, TypeVar

from orbited.http.response import canonical_name

T = TypeVar("T")


def _name(name: bytes | str) -> bytes:
    if isinstance(name, str):
        name = name.encode("latin-1")
    return name.lower()


def _value(value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if b"\r" in value or b"\n" in value:
        value = value.replace(b"\r\n", b" ").replace(b"\r", b" ").replace(b"\n", b" ")
    return value


class RequestHeaders:
    """A request's headers, read-only in practice (the parser's dict, wrapped)."""

    __slots__ = ("raw",)

    def __init__(self, raw: dict[bytes, list[bytes]] | None = None):
        self.raw = raw if raw is not None else {}

    def hasHeader(self, name: bytes | str) -> bool:
        return _name(name) in self.raw

    def getRawHeaders(self, name: AnyStr, default: T | None = None) -> Sequence[AnyStr] | T | None:
        values = self.raw.get(_name(name))
        if not values:
            return default
        if isinstance(name, str):
            return [value.decode("utf-8", "replace") for value in values]  # type: ignore[return-value]
        return values  # type: ignore[return-value]

    def getAllRawHeaders(self) -> Iterator[tuple[bytes, Sequence[bytes]]]:
        """(Canonical-Name, values) pairs, as twisted.web yields them."""
        for name, values in self.raw.items():
            yield canonical_name(name), values

    def setRawHeaders(self, name: bytes | str, values: Sequence[bytes | str]) -> None:
        self.raw[_name(name)] = [_value(value) for value in values]

    def addRawHeader(self, name: bytes | str, value: bytes | str) -> None:
        self.raw.setdefault(_name(name), []).append(_value(value))

    def removeHeader(self, name: bytes | str) -> None:
        self.raw.pop(_name(name), None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.raw!r})"


class ResponseHeaders(RequestHeaders):
    """The headers a resource sets; serialised by :func:`orbited.http.response.head_bytes`."""

    __slots__ = ()
