"""Node.DoStream (many Do operations over one stream, in batches) against a real node process, and
the router's client for it (DoStreamClient): replies matched by call id in completion order,
per-operation errors that leave the stream open, deadlines, a node that dies mid-call, and the
unary fallback for a node without DoStream."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest
from conftest import NodeProcess, RegistryProcess, StandInScheduler, wait_until
from conftest import wat as wasm

from wlruntime.node.client import BATCH_BYTES, CHANNEL_OPTIONS, DoStreamClient, take_batch
from wlruntime.proto import node_pb2 as pb
from wlruntime.proto import node_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = RegistryProcess(tmp_path_factory.mktemp("registry") / "data")
    client = reg.client()
    client.upload("echo", wasm("echo"), {"abi": "wasi-command"})
    client.upload("spin", wasm("loop"), {"abi": "wasi-command", "timeout_ms": 400})
    client.upload("tiny", wasm("echo"), {"abi": "wasi-command", "max_payload_bytes": 4})
    yield reg
    client.close()
    reg.stop()


@pytest.fixture(scope="module")
def node(registry, tmp_path_factory):
    scheduler = StandInScheduler()
    proc = NodeProcess(registry, tmp_path_factory.mktemp("node") / "cache", "--scheduler", scheduler.address,
                       "--memory-mb", "4096")
    yield proc
    proc.stop()
    scheduler.stop()


def spawn(node: NodeProcess, function: str) -> str:
    return node.stub.Spawn(pb.SpawnRequest(function=function), timeout=30).instance_id


def busy(node: NodeProcess, instance_id: str) -> bool:
    return any(i.instance_id == instance_id and i.state == pb.BUSY
               for i in node.stub.Status(pb.StatusRequest(), timeout=5).instances)


def invoke(instance_id: str, payload: bytes, call_id: int) -> pb.DoRequest:
    return pb.DoRequest(instance_id=instance_id, call_id=call_id, invoke=pb.Invoke(payload=payload))


def test_a_stream_answers_every_operation_by_call_id_in_completion_order(node) -> None:
    echo, other, spin = spawn(node, "echo"), spawn(node, "echo"), spawn(node, "spin")
    idle = spawn(node, "echo")    # kept alive on its own: an instance still running call 2 would be busy
    batches = [
        pb.DoBatch(requests=[
            invoke(spin, b"", 1),                     # runs 400 ms, then times out
            invoke(echo, b"first", 2),
            invoke("no-such-instance", b"x", 3),      # fails alone; the stream goes on
            pb.DoRequest(instance_id=idle, call_id=4, keep_alive=pb.KeepAlive(ms=60_000)),
            pb.DoRequest(instance_id=echo, call_id=5),  # no operation
        ]),
        pb.DoBatch(requests=[invoke(other, b"second", 6), invoke(spin, b"", 7)]),  # 7: spin is busy
    ]
    # The client half-closes after the last batch: the node still answers the running call.
    replies = [r for batch in node.stub.DoStream(iter(batches), timeout=30) for r in batch.replies]
    by_id = {r.call_id: r for r in replies}
    assert sorted(by_id) == [1, 2, 3, 4, 5, 6, 7] and len(replies) == 7
    assert replies[-1].call_id == 1, "the slow call answers last, after those read later"
    assert by_id[1].invoke.error == pb.TIMEOUT and by_id[1].state == pb.IDLE
    assert (by_id[2].invoke.output, by_id[2].error_code) == (b"first", "")
    assert (by_id[6].invoke.output, by_id[6].instance_id) == (b"second", other)
    assert by_id[3].error_code == "NOT_FOUND" and "no-such-instance" in by_id[3].error_message
    assert (by_id[4].error_code, by_id[4].state) == ("", pb.KEPT_ALIVE)
    assert by_id[5].error_code == "INVALID_ARGUMENT" and "one of keep_alive, kill, invoke" in by_id[5].error_message
    assert by_id[7].error_code == "FAILED_PRECONDITION" and "busy" in by_id[7].error_message
    for iid in (echo, other, spin, idle):
        node.stub.Do(pb.DoRequest(instance_id=iid, kill=pb.Kill()), timeout=10)


def test_the_client_multiplexes_concurrent_calls_and_maps_errors(node) -> None:
    instances = [spawn(node, "echo") for _ in range(6)]
    spin = spawn(node, "spin")

    async def main() -> None:
        async with grpc.aio.insecure_channel(node.address, options=CHANNEL_OPTIONS) as channel:
            client = DoStreamClient(node_pb2_grpc.NodeStub(channel))

            async def worker(iid: str) -> list[bytes]:
                outputs = []
                for i in range(25):
                    payload = f"{iid}/{i}".encode()
                    reply = await client.do(pb.DoRequest(instance_id=iid, invoke=pb.Invoke(payload=payload)), 10)
                    assert reply.instance_id == iid
                    outputs.append(reply.invoke.output)
                return outputs

            results = await asyncio.gather(*(worker(iid) for iid in instances))
            assert results == [[f"{iid}/{i}".encode() for i in range(25)] for iid in instances]
            stream = client._stream
            assert stream is not None and client.streaming

            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.do(pb.DoRequest(instance_id="gone", kill=pb.Kill()), 10)
            assert info.value.code() is grpc.StatusCode.NOT_FOUND and "gone" in info.value.details()
            # A deadline shorter than the call: the caller hears DEADLINE_EXCEEDED on time.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.do(pb.DoRequest(instance_id=spin, invoke=pb.Invoke()), 0.1)
            assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            # the node finishes the spin (its own 400 ms timeout)
            await asyncio.to_thread(wait_until, lambda: not busy(node, spin), 5)
            reply = await client.do(pb.DoRequest(instance_id=instances[0], invoke=pb.Invoke(payload=b"still")), 10)
            assert reply.invoke.output == b"still"
            assert client._stream is stream, "errors of single calls leave the stream open"
            # Big payloads go unary, so they do not hold up the shared stream.
            big = b"x" * DoStreamClient.unary_from_bytes
            reply = await client.do(pb.DoRequest(instance_id=instances[1], invoke=pb.Invoke(payload=big)), 10,
                                    payload_bytes=len(big))
            assert reply.invoke.output == big
            await client.close()

    asyncio.run(main())
    for iid in [*instances, spin]:
        node.stub.Do(pb.DoRequest(instance_id=iid, kill=pb.Kill()), timeout=10)


def test_calls_in_flight_fail_promptly_when_the_node_dies(registry, tmp_path) -> None:
    doomed = NodeProcess(registry, tmp_path / "cache")
    spin = spawn(doomed, "spin")
    echo = spawn(doomed, "echo")

    async def main() -> None:
        async with grpc.aio.insecure_channel(doomed.address, options=CHANNEL_OPTIONS) as channel:
            client = DoStreamClient(node_pb2_grpc.NodeStub(channel))
            assert (await client.do(pb.DoRequest(instance_id=echo, invoke=pb.Invoke(payload=b"up")), 10)).invoke.output
            running = asyncio.ensure_future(client.do(pb.DoRequest(instance_id=spin, invoke=pb.Invoke()), 30))
            await asyncio.to_thread(wait_until, lambda: busy(doomed, spin), 5)  # the call is in flight
            doomed.proc.send_signal(signal.SIGKILL)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await running
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
            assert loop.time() - started < 5, "the caller hears of the dead node, not its 30 s deadline"
            assert client._stream is None  # the next call opens a new stream
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.do(pb.DoRequest(instance_id=echo, invoke=pb.Invoke()), 5)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE

    asyncio.run(main())
    doomed.stop()


class UnaryOnlyNode(node_pb2_grpc.NodeServicer):
    """A node from before DoStream: Do only."""

    async def Do(self, request: pb.DoRequest, context) -> pb.DoReply:
        return pb.DoReply(instance_id=request.instance_id, state=pb.IDLE,
                          invoke=pb.InvokeResult(output=request.invoke.payload[::-1]))


def test_a_node_without_dostream_gets_unary_calls() -> None:
    async def main() -> None:
        server = grpc.aio.server()
        node_pb2_grpc.add_NodeServicer_to_server(UnaryOnlyNode(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                client = DoStreamClient(node_pb2_grpc.NodeStub(channel))
                replies = await asyncio.gather(*(
                    client.do(pb.DoRequest(instance_id=f"i{i}", invoke=pb.Invoke(payload=b"abc%d" % i)), 5)
                    for i in range(5)))
                assert [r.invoke.output for r in replies] == [b"%dcba" % i for i in range(5)]
                assert client.streaming is False
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_batches_stay_within_their_byte_budget() -> None:
    kib = 1024
    outbox = [("a", 300 * kib), ("b", 300 * kib), ("c", 300 * kib), ("d", 300 * kib), ("e", 10)]
    assert take_batch(outbox) == ["a", "b", "c"]       # 900 KiB; with d it would pass 1 MiB
    assert take_batch(outbox) == ["d", "e"]
    assert outbox == []
    huge = [("big", 5 * BATCH_BYTES), ("next", 1)]
    assert take_batch(huge) == ["big"]                 # alone, however large
    assert take_batch(huge) == ["next"]
    small = [(i, 100) for i in range(1000)]
    assert take_batch(small) == list(range(1000)) and small == []


def test_many_large_payloads_at_once_arrive_intact(node) -> None:
    instances = [spawn(node, "echo") for _ in range(24)]

    async def main() -> None:
        async with grpc.aio.insecure_channel(node.address, options=CHANNEL_OPTIONS) as channel:
            client = DoStreamClient(node_pb2_grpc.NodeStub(channel))
            payloads = [bytes([i]) * (200 * 1024) for i in range(len(instances))]  # streamed, not unary
            replies = await asyncio.gather(*(
                client.do(pb.DoRequest(instance_id=iid, invoke=pb.Invoke(payload=payload)), 30,
                          payload_bytes=len(payload))
                for iid, payload in zip(instances, payloads)))
            assert [r.invoke.output for r in replies] == payloads
            assert client._stream is not None
            await client.close()

    asyncio.run(main())
    for iid in instances:
        node.stub.Do(pb.DoRequest(instance_id=iid, kill=pb.Kill()), timeout=10)


def test_a_spawn_can_carry_its_first_request(node) -> None:
    """SpawnRequest.invoke: a cold start and its request in one call."""
    reply = node.stub.Spawn(pb.SpawnRequest(function="echo", invoke=pb.Invoke(request_id="r-1", payload=b"first")),
                            timeout=30)
    assert (reply.invoke.request_id, reply.invoke.output, reply.invoke_error_code) == ("r-1", b"first", "")
    assert reply.cold_start_ms > 0 and reply.invoke.exec_ms > 0
    again = node.stub.Do(pb.DoRequest(instance_id=reply.instance_id, invoke=pb.Invoke(payload=b"warm")), timeout=10)
    assert again.invoke.output == b"warm" and again.state == pb.IDLE  # it was left idle, ready for more

    timed_out = node.stub.Spawn(pb.SpawnRequest(function="spin", invoke=pb.Invoke()), timeout=30)
    assert timed_out.invoke.error == pb.TIMEOUT

    # The instance starts but refuses the request: the reply says so, and the instance is usable.
    refused = node.stub.Spawn(pb.SpawnRequest(function="tiny", invoke=pb.Invoke(payload=b"too long")), timeout=30)
    assert not refused.HasField("invoke")
    assert refused.invoke_error_code == "INVALID_ARGUMENT" and "max_payload_bytes" in refused.invoke_error_message
    ok = node.stub.Do(pb.DoRequest(instance_id=refused.instance_id, invoke=pb.Invoke(payload=b"ok")), timeout=10)
    assert ok.invoke.output == b"ok"

    # A spawn that fails runs nothing.
    with pytest.raises(grpc.RpcError) as info:
        node.stub.Spawn(pb.SpawnRequest(function="nope", invoke=pb.Invoke(payload=b"x")), timeout=30)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    for iid in (reply.instance_id, timed_out.instance_id, refused.instance_id):
        node.stub.Do(pb.DoRequest(instance_id=iid, kill=pb.Kill()), timeout=10)
