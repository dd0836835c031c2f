"""wire.send under uvicorn's httptools protocol: one transport write per response, the same bytes
as uvicorn's own two writes (its real RequestResponseCycle, a transport that records writes)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from wlruntime.router.http import wire

pytestmark = pytest.mark.unit


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def cycle(transport: RecordingTransport, keep_alive: bool = True) -> RequestResponseCycle:
    scope = {"type": "http", "method": "POST", "path": "/invoke/echo", "headers": [], "http_version": "1.1"}
    log = logging.getLogger("test")
    return RequestResponseCycle(scope, transport, FlowControl(transport), log, log, False,  # type: ignore[arg-type]
                                [(b"date", b"Wed, 02 Dec 2026 06:00:00 GMT")], asyncio.Event(), False, keep_alive,
                                lambda: None)


def uvicorn_alone(body: bytes, headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """What uvicorn writes for the two messages sent as they are."""
    transport = RecordingTransport()
    c = cycle(transport)

    async def run() -> None:
        await c.send({"type": "http.response.start", "status": 200,
                      "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await c.send({"type": "http.response.body", "body": body})

    asyncio.run(run())
    return transport.writes


@pytest.mark.parametrize("body", [b"hello, wl!", b""])
def test_a_response_leaves_in_one_write_with_uvicorns_bytes(body: bytes) -> None:
    headers = [wire.OCTET, (b"x-wl-cold", b"0")]
    transport = RecordingTransport()
    c = cycle(transport)
    asyncio.run(wire.send(c.send, 200, list(headers), body))
    expected = uvicorn_alone(body, headers)
    assert len(expected) == 2 and len(transport.writes) == 1
    assert transport.writes[0] == b"".join(expected)
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.writes[0].endswith(b"\r\n\r\n" + body)
    assert c.response_complete and c.transport is transport   # uvicorn's state as after its own sends
    assert not transport.closed


def test_connection_close_still_closes_after_the_one_write() -> None:
    transport = RecordingTransport()
    c = cycle(transport, keep_alive=False)
    asyncio.run(wire.send(c.send, 404, [wire.JSON], b"{}"))
    assert len(transport.writes) == 1 and b"connection: close\r\n" in transport.writes[0]
    assert transport.closed


def test_a_client_gone_before_the_body_gets_nothing_more() -> None:
    transport = RecordingTransport()
    c = cycle(transport)
    c.disconnected = True   # uvicorn drops every message once the client went away
    asyncio.run(wire.send(c.send, 200, [wire.OCTET], b"x"))
    assert transport.writes == []


def test_any_other_send_callable_gets_the_two_asgi_messages() -> None:
    messages: list[dict] = []

    async def send(message: dict) -> None:
        messages.append(message)

    asyncio.run(wire.send(send, 200, [wire.OCTET], b"abc"))
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]
    assert (b"content-length", b"3") in messages[0]["headers"] and messages[1]["body"] == b"abc"
