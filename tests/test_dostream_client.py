"""DoStreamClient without a node: which failed calls surely never reached the node."""

import asyncio

import grpc
import pytest

from wlruntime.node.client import DoStreamClient, never_sent
from wlruntime.proto import node_pb2 as pb
from wlruntime.router.dispatch import _never_ran

pytestmark = pytest.mark.unit


class DeadCall:
    """A DoStream whose node died: reading fails at once; a write would hang (never reached)."""

    def __init__(self) -> None:
        self.written: list[pb.DoBatch] = []

    async def read(self):
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                   "Stream removed (Socket closed)")

    async def write(self, batch):
        self.written.append(batch)
        await asyncio.Event().wait()

    def cancel(self) -> None:
        pass


class Stub:
    def __init__(self) -> None:
        self.call = DeadCall()

    def DoStream(self):  # the gRPC method's name
        return self.call


async def failed_call(stub: Stub) -> grpc.aio.AioRpcError:
    """One Do through a DoStreamClient on ``stub``: the error it fails with."""
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await DoStreamClient(stub).do(pb.DoRequest(instance_id="i", invoke=pb.Invoke(payload=b"x")), timeout=5)
    return failed.value


def test_a_request_still_in_the_outbox_when_the_stream_breaks_never_ran_and_is_placed_again():
    stub = Stub()

    error = asyncio.run(failed_call(stub))
    assert stub.call.written == []          # nothing left the router
    assert never_sent(error) and _never_ran(error), error.details()
    assert "Stream removed" in error.details()


def test_a_request_written_before_the_stream_broke_may_have_run():
    stub = Stub()

    async def call() -> grpc.aio.AioRpcError:
        client = DoStreamClient(stub)
        stream_broke = asyncio.Event()

        async def read():
            await stream_broke.wait()
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       "Stream removed (Socket closed)")

        stub.call.read = read
        task = asyncio.ensure_future(client.do(pb.DoRequest(instance_id="i", invoke=pb.Invoke(payload=b"x")),
                                               timeout=5))
        while not stub.call.written:           # the request went out in a batch
            await asyncio.sleep(0)
        stream_broke.set()
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await task
        return failed.value

    error = asyncio.run(call())
    assert not never_sent(error) and not _never_ran(error)


def test_a_write_grpc_refuses_never_reached_the_node():
    stub = Stub()

    async def refused(batch):
        raise grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                   "Internal error from Core")

    async def read():
        await asyncio.Event().wait()

    stub.call.write, stub.call.read = refused, read

    error = asyncio.run(failed_call(stub))
    assert never_sent(error) and _never_ran(error) and "Internal error from Core" in error.details()
