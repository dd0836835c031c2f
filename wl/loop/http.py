"""A minimal HTTP/1.1 keep-alive client on asyncio protocols, for ``wl load``'s requests.

Why not httpx: on the project's shared 2-core machine httpx spends milliseconds of CPU per
request, so a driver sending 50+ requests/s fell seconds behind its schedule (measured: send
lateness p50 ~600 ms at 44 requests/s while the machine was saturated). This client writes one
pre-built request per call and parses the answer's status line, headers and Content-Length body
(the router always sends one): tens of microseconds. The time of sending is taken right before
the bytes are written, so lateness is measured where it happens. Anything unexpected (no
Content-Length, chunked bodies, a connection closed mid-answer) is an error for that request.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit


class HttpError(Exception):
    pass


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError(f"connection closed before the answer ({exc or 'EOF'})"))

    def _complete(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers["content-length"])
        except (IndexError, ValueError, KeyError):
            waiter.set_exception(HttpError(f"unexpected answer head: {lines[:1]}"))
            return
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        waiter.set_result((status, headers, body))


class RawHttpClient:
    """POSTs over a pool of keep-alive connections to one host (``http://host:port``)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise HttpError(f"wl load speaks plain http to the router, got {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self._host_header = f"{self.host}:{self.port}".encode()
        self._idle: list[_Connection] = []
        self._all: list[_Connection] = []

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        self._all.append(conn)
        return conn

    async def open(self, count: int) -> None:
        """Open ``count`` connections ahead of time (a burst then pays no TCP connect)."""
        conns = await asyncio.gather(*(self._open() for _ in range(count)))
        self._idle.extend(conns)

    async def post(self, path: str, body: bytes) -> tuple[float, int, dict[str, str], bytes]:
        """(time.perf_counter() when the request was written, status, headers, body)."""
        conn = None
        while self._idle:
            candidate = self._idle.pop()
            if not candidate.closed:
                conn = candidate
                break
        if conn is None:
            conn = await self._open()
        request = b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s" % (
            path.encode(), self._host_header, len(body), body)
        conn.waiter = asyncio.get_running_loop().create_future()
        sent = time.perf_counter()
        assert conn.transport is not None
        conn.transport.write(request)
        try:
            status, headers, payload = await conn.waiter
        except BaseException:
            conn.transport.close()
            raise
        finally:
            conn.waiter = None
        if headers.get("connection", "").lower() == "close" or conn.closed:
            conn.transport.close()
        else:
            self._idle.append(conn)
        return sent, status, headers, payload

    def close(self) -> None:
        for conn in self._all:
            if conn.transport is not None:
                conn.transport.close()
