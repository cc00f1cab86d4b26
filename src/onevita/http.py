"""A minimal keep-alive HTTP/1.1 client for POSTing to etcd and oned.

``http.client`` costs about 12 ms of imports (email, ssl, urllib) on every action, a fifth of a
whole front-end clone; these two local JSON/XML endpoints need a POST with a body and a reply
with Content-Length or chunked encoding, nothing more. A connection the server closed while it
was idle is reopened once.
"""

from __future__ import annotations

import socket

__all__ = ["Connection", "HttpError"]

MAX_HEADER = 64 * 1024


class HttpError(OSError):
    """The server's reply is not well-formed HTTP/1.1."""


class _Reader:
    """Buffered reads from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise HttpError("connection closed by the server")
        self.buf += chunk

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if len(self.buf) > MAX_HEADER:
                raise HttpError("reply header too long")
            self._fill()
        head, _, self.buf = self.buf.partition(marker)
        return head

    def exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            self._fill()
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def rest(self) -> bytes:
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                data, self.buf = self.buf, b""
                return data
            self.buf += chunk


class Connection:
    """One keep-alive connection to ``host:port``."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._sock: socket.socket | None = None

    def close(self) -> None:
        """Close the socket (the next request opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def post(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        """POST ``body`` and return (status, reply body)."""
        request = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                   f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        reused = self._sock is not None
        try:
            return self._exchange(request)
        except OSError:
            self.close()
            if not reused:
                raise
        return self._exchange(request)  # the idle connection was closed by the server: once more

    def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._sock.sendall(request)
        reader = _Reader(self._sock)
        status_line, *header_lines = reader.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"malformed status line {status_line!r}")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            data = self._chunked(reader)
        elif headers.get("content-length", "").isdigit():
            data = reader.exactly(int(headers["content-length"]))
        else:
            data = reader.rest()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0":
            self.close()
        return int(parts[1]), data

    @staticmethod
    def _chunked(reader: _Reader) -> bytes:
        data = b""
        while True:
            size_line = reader.until(b"\r\n").split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise HttpError(f"malformed chunk size {size_line!r}") from None
            if size == 0:
                reader.until(b"\r\n")  # the (empty) trailer
                return data
            data += reader.exactly(size)
            reader.exactly(2)
