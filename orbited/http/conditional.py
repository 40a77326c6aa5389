"""Conditional GET and HEAD (RFC 9110 section 13) for answers that carry a Last-Modified and no ETag.

Sans-IO: header values in, a decision out.  Used by static files on both
HTTP engines and by the lean ``Request.setLastModified``.  It must never
raise on what a client sends: twisted.web's ``stringToDatetime`` raises
IndexError for an empty date (``If-Modified-Since: ;``), which its
``setLastModified`` and ours let through as a 500 with a traceback in the
log, once per request, for any client that asked.
"""

from __future__ import annotations

from twisted.web.http import stringToDatetime


def parse_http_date(value: bytes) -> int | None:
    """Seconds since the epoch from any of the three HTTP-date forms (RFC 9110 5.6.7), or None.

    What follows a ``;`` is dropped (old Netscape sent ``; length=N``), as twisted.web did."""
    try:
        return stringToDatetime(value.split(b";", 1)[0])
    except (ValueError, IndexError):  # IndexError: nothing before the ';'
        return None


def not_modified(if_none_match: bytes | None, if_modified_since: bytes | None, last_modified: int) -> bool:
    """Whether the client's copy is current, so a GET or HEAD is answered 304.

    ``If-None-Match``, when present, decides alone (13.2.2) and
    ``If-Modified-Since`` is then ignored (13.1.3): with no ETags only ``*``
    (any current representation) matches.  An ``If-Modified-Since`` that is
    not a date is ignored."""
    if if_none_match is not None:
        return if_none_match.strip() == b"*"
    if not if_modified_since:
        return False
    since = parse_http_date(if_modified_since)
    return since is not None and since >= last_modified
