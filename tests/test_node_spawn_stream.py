"""Spawns as Do operations on a node's DoStream (DoRequest.spawn, DoStreamClient.spawn), against a
real node process: a burst of spawns sent together all run at once, a kill written before a spawn
frees its memory first (what the router relies on to spawn without waiting for kills), every
failure answers that spawn alone, with the status unary Spawn gives, and a node older than
spawn operations gets unary Spawn calls."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from conftest import NodeProcess, RegistryProcess, StandInScheduler, wait_until
from conftest import wat as wasm

from wl.loop.load import SYNTHETIC_WASM
from wlruntime.node.client import CHANNEL_OPTIONS, DoStreamClient
from wlruntime.proto import node_pb2 as pb
from wlruntime.proto import node_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

BURST = 24
SLEEP_MS = 6000   # each burst request sleeps this long (no CPU held): far longer than a burst of starts


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = RegistryProcess(tmp_path_factory.mktemp("registry") / "data")
    client = reg.client()
    client.upload("sleepy", SYNTHETIC_WASM.read_bytes(), {"abi": "wasi-command", "memory_mb": 32,
                                                          "timeout_ms": 30_000})
    client.upload("tiny", wasm("echo"), {"abi": "wasi-command", "max_payload_bytes": 4, "memory_mb": 32})
    yield reg
    client.close()
    reg.stop()


@pytest.fixture(scope="module")
def node(registry, tmp_path_factory):
    scheduler = StandInScheduler()
    # 3 x 32 MB of memory: the kill-before-spawn test fills it; the burst test gets its own node.
    proc = NodeProcess(registry, tmp_path_factory.mktemp("node") / "cache", "--scheduler", scheduler.address,
                       "--memory-mb", "96", "--workers", "8")
    yield proc
    proc.stop()
    scheduler.stop()


def on_stream(address: str, body) -> None:
    """Run ``body(client)`` with a DoStreamClient on a fresh channel to ``address``."""
    async def main() -> None:
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            client = DoStreamClient(node_pb2_grpc.NodeStub(channel))
            await body(client)
            assert client.streaming and client._stream is not None, "everything went on the stream"
            await client.close()

    asyncio.run(main())


def spawn_request(function: str, instance_id: str, payload: bytes | None = None) -> pb.SpawnRequest:
    request = pb.SpawnRequest(function=function, version="1", instance_id=instance_id)
    if payload is not None:
        request.invoke.CopyFrom(pb.Invoke(request_id=f"r-{instance_id}", payload=payload))
    return request


def test_a_burst_of_spawns_on_one_stream_all_run_at_once(registry, tmp_path) -> None:
    """BURST spawns written together, each with a request that sleeps SLEEP_MS: the node has every
    one of them BUSY at the same moment, so none waited for another's start or request (a node
    that took the spawns one after another, each behind the previous one's request, never
    would). No timing is asserted: the node's own Status says they overlapped."""
    scheduler = StandInScheduler()
    node = NodeProcess(registry, tmp_path / "cache", "--scheduler", scheduler.address, "--memory-mb", "4096",
                       "--workers", str(BURST + 2))
    ids = [f"burst-{i}" for i in range(BURST)]
    try:
        async def body(client: DoStreamClient) -> None:
            payload = f"{SLEEP_MS} 0 sleep".encode()
            replies = asyncio.gather(*(client.spawn(spawn_request("sleepy", iid, payload), timeout=60)
                                       for iid in ids))

            def all_busy() -> bool:
                status = node.stub.Status(pb.StatusRequest(), timeout=10)
                return sum(i.state == pb.BUSY for i in status.instances if i.instance_id in ids) == BURST

            await asyncio.to_thread(wait_until, all_busy, SLEEP_MS / 1000.0 * 0.75, 0.05,
                                    "the burst's requests never all ran at once")
            for iid, reply in zip(ids, await replies):
                assert reply.instance_id == iid and reply.function == "sleepy" and reply.memory_mb == 32
                assert reply.cold_start_ms > 0 and not reply.invoke_error_code
                assert reply.invoke.request_id == f"r-{iid}" and reply.invoke.output.startswith(b"ok ")

        on_stream(node.address, body)
        idle = [i for i in node.stub.Status(pb.StatusRequest(), timeout=10).instances if i.instance_id in ids]
        assert sorted(i.instance_id for i in idle) == sorted(ids) and all(i.state == pb.IDLE for i in idle)
    finally:
        node.stop()
        scheduler.stop()


def test_a_kill_written_before_a_spawn_frees_the_memory_the_spawn_needs(node) -> None:
    """The node has room for 3 instances. With 3 up, a kill and a spawn sent back to back (the
    spawn not waiting for the kill's reply) always succeed: the node carries out a stream's
    requests in the order written."""
    async def body(client: DoStreamClient) -> None:
        assert client.in_order(0) and not client.in_order(DoStreamClient.unary_from_bytes)
        alive = [(await client.spawn(spawn_request("sleepy", f"full-{i}"), timeout=30)).instance_id
                 for i in range(3)]
        with pytest.raises(grpc.aio.AioRpcError) as info:   # the node is full
            await client.spawn(spawn_request("sleepy", "one-too-many"), timeout=30)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        for round_ in range(10):
            victim, new = alive.pop(0), f"next-{round_}"
            killed, spawned = await asyncio.gather(
                client.do(pb.DoRequest(instance_id=victim, kill=pb.Kill()), timeout=30),
                client.spawn(spawn_request("sleepy", new, b"0 0 sleep"), timeout=30))
            assert killed.state == pb.DEAD and spawned.instance_id == new and spawned.invoke.output.startswith(b"ok")
            alive.append(new)
        for iid in alive:
            await client.do(pb.DoRequest(instance_id=iid, kill=pb.Kill()), timeout=30)

    on_stream(node.address, body)


def test_each_failed_spawn_answers_alone_with_the_status_spawn_gives(node) -> None:
    async def body(client: DoStreamClient) -> None:
        unknown, refused, started = await asyncio.gather(
            client.spawn(spawn_request("no-such-function", "x-1", b"hi"), timeout=30),
            client.spawn(spawn_request("tiny", "x-2", b"too long"), timeout=30),  # up, but refuses the request
            client.spawn(spawn_request("tiny", "x-3", b"ok"), timeout=30),
            return_exceptions=True)
        assert isinstance(unknown, grpc.aio.AioRpcError) and unknown.code() is grpc.StatusCode.NOT_FOUND
        assert "no-such-function" in unknown.details()
        assert refused.invoke_error_code == "INVALID_ARGUMENT" and "max_payload_bytes" in refused.invoke_error_message
        assert not refused.HasField("invoke")
        assert started.invoke.output == b"ok" and not started.invoke_error_code
        with pytest.raises(grpc.aio.AioRpcError) as info:   # the ids disagree
            await client.do(pb.DoRequest(instance_id="x-4", spawn=spawn_request("tiny", "x-5")), timeout=30)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "x-5" in info.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:   # the id is taken
            await client.spawn(spawn_request("tiny", "x-3"), timeout=30)
        assert info.value.code() is grpc.StatusCode.ALREADY_EXISTS
        for iid in ("x-2", "x-3"):
            await client.do(pb.DoRequest(instance_id=iid, kill=pb.Kill()), timeout=30)

    on_stream(node.address, body)
    # Unary Do takes a spawn too, answering as Spawn does.
    reply = node.stub.Do(pb.DoRequest(instance_id="u-1", spawn=spawn_request("tiny", "", b"ok")), timeout=30)
    assert (reply.instance_id, reply.spawn.instance_id, reply.spawn.invoke.output) == ("u-1", "u-1", b"ok")
    assert reply.state == pb.IDLE
    node.stub.Do(pb.DoRequest(instance_id="u-1", kill=pb.Kill()), timeout=10)


def test_a_function_that_can_sleep_in_a_host_call_never_runs_inline() -> None:
    """The inline attempt's epoch budget cannot interrupt WASI poll_oneoff (sleep): the synthetic
    function, which sleeps, is marked so (the node then never blocks its event loop on it)."""
    from wlruntime.wasm.cache import CompiledCache
    from wlruntime.wasm.runners import CompiledFunction, FunctionConfig

    def compiled(code: bytes) -> CompiledFunction:
        import hashlib

        artifact = CompiledCache(None).get(hashlib.sha256(code).hexdigest(), "wasi-command", False,
                                           lambda: code).artifact
        return CompiledFunction("f", 1, FunctionConfig.from_stored({"abi": "wasi-command"}), artifact)

    assert compiled(SYNTHETIC_WASM.read_bytes()).may_block
    assert not compiled(wasm("echo")).may_block


def test_a_node_older_than_spawn_operations_gets_unary_spawn_calls() -> None:
    """Such a node answers a spawn operation as one without any operation (nothing ran): the
    client then uses Node.Spawn for it and every later spawn, and spawns wait for kills again."""
    from wlruntime.node.client import NO_SPAWN_OP

    class OldNode:
        def __init__(self) -> None:
            self.calls: list[str] = []

        async def Do(self, request, timeout=None):
            self.calls.append("Do")
            raise grpc.aio.AioRpcError(grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       NO_SPAWN_OP)

        async def Spawn(self, request, timeout=None):
            self.calls.append("Spawn")
            return pb.SpawnReply(instance_id=request.instance_id, function=request.function)

    async def main() -> None:
        old = OldNode()
        client = DoStreamClient(old)
        client.streaming = False    # Do goes to the stub's unary Do (no stream to fake)
        first = await client.spawn(spawn_request("f", "i-1"), timeout=5)
        second = await client.spawn(spawn_request("f", "i-2"), timeout=5)
        assert (first.instance_id, second.instance_id) == ("i-1", "i-2")
        assert old.calls == ["Do", "Spawn", "Spawn"] and not client.spawn_as_do
        client.streaming = True
        assert not client.in_order(0), "a unary spawn can overtake a kill on the stream"

    asyncio.run(main())
