"""The fixed answers of a SockJS service: greeting, ``/info`` and the iframe page.

Sans-IO: values in, bytes out.  The iframe page's layout is fixed by the
protocol (clients and the protocol suite match it); only the URL of the
SockJS client script it loads varies.
"""

from __future__ import annotations

import hashlib
import html
import json
import secrets

GREETING = b"Welcome to SockJS!\n"

# Sent to browsers in /info; clients ignore it (protocol 0.3.3).
INFO_ORIGINS = ["*:*"]

# What sockjs-node serves by default; a deployment that must not load scripts
# from a CDN sets [global] sockjs.client_url to its own copy.
DEFAULT_CLIENT_URL = "https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js"

IFRAME_PAGE = """<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="{client_url}"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe();
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"""


def info(websocket: bool, cookie_needed: bool) -> bytes:
    """``/info``: capabilities, and a fresh 32-bit random number for the browser's generator."""
    return json.dumps({
        "websocket": websocket,
        "cookie_needed": cookie_needed,
        "origins": INFO_ORIGINS,
        "entropy": secrets.randbits(32),
    }).encode("ascii")


def iframe_page(client_url: str) -> tuple[bytes, bytes]:
    """(page, ETag): the same page for every versioned URL, so browsers cache it once."""
    page = IFRAME_PAGE.format(client_url=html.escape(client_url, quote=True)).encode("utf-8")
    return page, b'"' + hashlib.md5(page, usedforsecurity=False).hexdigest().encode("ascii") + b'"'
