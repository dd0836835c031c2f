"""Small ASGI and Lambda wire-format helpers shared by the router's HTTP modules."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.responses import JSONResponse

OCTET = (b"content-type", b"application/octet-stream")
JSON = (b"content-type", b"application/json")
ACCOUNT_ID = "000000000000"
REGION = "local"


class ClientGone(Exception):
    """The client disconnected before its request body was read."""


async def read_body(receive: Any, limit: int) -> bytes | None:
    """The request body, or None once it exceeds ``limit`` bytes (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body = message.get("body", b"")
        if body:
            size += len(body)
            if size > limit:
                return None
            chunks.append(body)
        if not message.get("more_body", False):
            break
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


async def send(send_: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """A whole response (``body`` with its content-length). Under uvicorn's httptools protocol
    (the router's server) its status line, headers and body leave in one write (see _OneWrite)."""
    headers.append((b"content-length", str(len(body)).encode()))
    start = {"type": "http.response.start", "status": status, "headers": headers}
    end = {"type": "http.response.body", "body": body}
    cycle = getattr(send_, "__self__", None)
    if type(cycle) is not _HttpToolsCycle:  # another ASGI server, or a test client
        await send_(start)
        await send_(end)
        return
    transport = cycle.transport
    joined = cycle.transport = _OneWrite(transport)
    try:
        await send_(start)
        await send_(end)
    finally:
        cycle.transport = transport
        if joined.held is not None:  # no body write followed (e.g. the client went away)
            joined.flush()


try:  # the router serves HTTP with uvicorn's httptools protocol (server.run_router_forever)
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle as _HttpToolsCycle
except ImportError:  # pragma: no cover - without uvicorn, send() just sends the two messages
    _HttpToolsCycle = None


class _OneWrite:
    """uvicorn's transport for the time one response is sent by ``send``. uvicorn writes the
    status line and headers at ``http.response.start`` and the body at ``http.response.body``:
    two write syscalls and two TCP segments per response, for the router and for the client
    (measured with strace under wrk: ~1.3 writes per request saved; bench/README.md). This holds
    the first write and gives the transport both at the second; anything else (close,
    is_closing, flow control) is the transport's own."""

    __slots__ = ("transport", "held", "flushed")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.held: bytes | None = None
        self.flushed = False

    def write(self, data: bytes) -> None:
        if self.held is None and not self.flushed:
            self.held = data
            return
        self.flush(data)

    def flush(self, data: bytes = b"") -> None:
        held, self.held, self.flushed = self.held, None, True
        self.transport.write(data if held is None else held + data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def retry_after_s(ms: float) -> bytes:
    return str(max(1, math.ceil(ms / 1000.0))).encode()


def content_length(scope: dict) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def arn(name: str, qualifier: str | None = None) -> str:
    """The function's ARN as Lambda spells it (a fixed local account and region)."""
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}" + (f":{qualifier}" if qualifier else "")


def lambda_error_body(message: str, **extra: Any) -> dict[str, Any]:
    """Lambda's error document: clients read the type from x-amzn-ErrorType, the text from message."""
    return {"Type": "User", "message": message, **extra}


class LambdaError(Exception):
    """A Lambda API error: ``status``, the AWS error type (x-amzn-ErrorType) and a message."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message

    def response(self, request_id: str) -> JSONResponse:
        return JSONResponse(lambda_error_body(self.message), status_code=self.status,
                            headers={"x-amzn-ErrorType": self.error_type, "x-amzn-RequestId": request_id})
