"""A small blocking HTTP client that sees what SockJS tests need to see: chunk boundaries, raw heads.

``http.client`` hides how a response is framed (chunks, Content-Length,
connection close); SockJS streaming checks depend on exactly that, so tests
talk HTTP over a plain socket with this.  Test code only: no TLS, no
redirects, loopback servers.

    r = request("POST", base + "/000/abc/xhr")          # whole response
    s = stream("POST", base + "/000/abc/xhr_streaming")  # s.read() -> next chunk, None at the end
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class HttpError(Exception):
    """The server's answer could not be read as HTTP."""


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class Connection:
    """One TCP connection speaking HTTP/1.x, request by request."""

    def __init__(self, url: str, timeout: float = 5.0):
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        self.buffer = b""

    # sending

    def send_request(self, method: str, url: str, headers: dict[str, str] | None = None,
                     body: bytes | str | None = None, http: str = "1.1") -> None:
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        fields = {"Host": f"{self.host}:{self.port}"}
        data = body.encode("utf-8") if isinstance(body, str) else body
        if data is not None or method == "POST":
            fields["Content-Length"] = str(len(data or b""))
        fields.update(headers or {})
        lines = [f"{method} {target} HTTP/{http}", *(f"{k}: {v}" for k, v in fields.items()), "", ""]
        self.sock.sendall("\r\n".join(lines).encode("latin-1") + (data or b""))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    # receiving

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buffer += data
        return True

    def read_line(self) -> bytes:
        while b"\n" not in self.buffer:
            if not self._fill():
                raise HttpError("connection closed inside a line")
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise HttpError(f"connection closed with {len(self.buffer)} of {size} bytes read")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_some(self) -> bytes:
        """What is buffered, or one recv() worth; b'' when the server closed."""
        if not self.buffer:
            self._fill()
        data, self.buffer = self.buffer, b""
        return data

    def read_until_close(self) -> bytes:
        while self._fill():
            pass
        data, self.buffer = self.buffer, b""
        return data

    def read_head(self) -> Response:
        status_line = self.read_line().decode("latin-1")
        try:
            version, status, *reason = status_line.split(" ", 2)
            response = Response(version.partition("/")[2], int(status), reason[0] if reason else "")
        except ValueError:
            raise HttpError(f"bad status line {status_line!r}") from None
        while True:
            line = self.read_line()
            if not line:
                return response
            name, _, value = line.decode("latin-1").partition(":")
            key = name.strip().lower()
            value = value.strip()
            response.headers[key] = f"{response.headers[key]}, {value}" if key in response.headers else value

    def read_chunk(self) -> bytes:
        """One chunk of a chunked body: b'' for the last one."""
        size = int(self.read_line().split(b";")[0], 16)
        data = self.read_exact(size + 2)[:-2]
        return data

    def closed(self, wait: float = 0.5) -> bool:
        """True when the server closed the connection (nothing more arrives)."""
        if self.buffer:
            return False
        previous = self.sock.gettimeout()
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(previous)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_body(conn: Connection, response: Response, method: str) -> bytes:
    if response.status in (101, 204, 304) or method == "HEAD":
        return b""
    if (response.header("transfer-encoding") or "").lower() == "chunked":
        chunks = []
        while chunk := conn.read_chunk():
            chunks.append(chunk)
        return b"".join(chunks)
    length = response.header("content-length")
    if length is not None:
        return conn.read_exact(int(length))
    return conn.read_until_close()


def request(method: str, url: str, headers: dict[str, str] | None = None,
            body: bytes | str | None = None, http: str = "1.1", timeout: float = 5.0) -> Response:
    """One request on a fresh connection; the whole response."""
    with Connection(url, timeout) as conn:
        conn.send_request(method, url, headers, body, http)
        response = conn.read_head()
        response.body = read_body(conn, response, method)
        return response


class Stream:
    """A response read as it arrives: ``read()`` gives the next chunk (or recv), None once it ended."""

    def __init__(self, conn: Connection, response: Response):
        self.conn = conn
        self.response = response
        self.status = response.status
        self.headers = response.headers
        self.chunked = (response.header("transfer-encoding") or "").lower() == "chunked"
        self.ended = False

    def header(self, name: str) -> str | None:
        return self.response.header(name)

    def read(self) -> bytes | None:
        if self.ended:
            return None
        data = self.conn.read_chunk() if self.chunked else self.conn.read_some()
        if not data:
            self.ended = True
            return None
        return data

    def close(self) -> None:
        self.conn.close()


def stream(method: str, url: str, headers: dict[str, str] | None = None,
           body: bytes | str | None = None, http: str = "1.1", timeout: float = 5.0) -> Stream:
    conn = Connection(url, timeout)
    conn.send_request(method, url, headers, body, http)
    return Stream(conn, conn.read_head())
