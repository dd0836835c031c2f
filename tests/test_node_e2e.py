"""Real registry + real node processes on loopback, driven over gRPC; a test Scheduler server
stands in for the router (issue 5) and answers the node's OnIdle calls."""

from __future__ import annotations

import os
import time
from concurrent import futures

import grpc
import httpx
import pytest
from conftest import TOKEN, NodeProcess, RegistryProcess, StandInScheduler, free_port, wait_until
from conftest import wat as wasm

from wlruntime.proto import node_pb2 as pb
from wlruntime.registry.client import RegistryClient, RegistryError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = RegistryProcess(tmp_path_factory.mktemp("registry") / "data")
    client = reg.client()
    client.upload("echo", wasm("echo"), {"abi": "wasi-command"})
    client.upload("spin", wasm("loop"), {"abi": "wasi-command", "timeout_ms": 300})
    client.upload("bomb", wasm("membomb"), {"abi": "wasi-command", "memory_mb": 16})
    client.upload("crash", wasm("trap"), {"abi": "wasi-command"})
    client.upload("fails", wasm("exit3"), {"abi": "wasi-command"})
    client.upload("counter", wasm("counter.component"), {"abi": "component", "timeout_ms": 200})
    client.upload("small-payload", wasm("echo"), {"abi": "wasi-command", "max_payload_bytes": 16})
    yield reg
    client.close()
    reg.stop()


@pytest.fixture(scope="module")
def scheduler():
    sched = StandInScheduler()
    yield sched
    sched.stop()


@pytest.fixture(scope="module")
def node(registry, scheduler, tmp_path_factory):
    proc = NodeProcess(registry, tmp_path_factory.mktemp("node") / "cache", "--scheduler", scheduler.address,
                       "--metrics-port", "0", "--node-id", "node-a", "--memory-mb", "1024")
    yield proc
    proc.stop()


def spawn(node: NodeProcess, function: str, **kwargs) -> pb.SpawnReply:
    return node.stub.Spawn(pb.SpawnRequest(function=function, **kwargs), timeout=30)


def invoke(node: NodeProcess, instance_id: str, payload: bytes = b"", **kwargs) -> pb.DoReply:
    return node.stub.Do(pb.DoRequest(instance_id=instance_id, invoke=pb.Invoke(payload=payload, **kwargs)),
                        timeout=30)


def do(node: NodeProcess, instance_id: str, **op) -> pb.DoReply:
    return node.stub.Do(pb.DoRequest(instance_id=instance_id, **op), timeout=30)


def grpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# ---- tests -----------------------------------------------------------------------------------

def test_spawn_invoke_kill(node) -> None:
    spawned = spawn(node, "echo", version="1")
    assert (spawned.function, spawned.version, spawned.abi) == ("echo", 1, "wasi-command")
    assert spawned.cold_start_ms > 0 and spawned.memory_mb == 128
    reply = invoke(node, spawned.instance_id, b"hello node", request_id="req-1", metadata={"k": "v"})
    assert reply.state == pb.IDLE
    assert reply.invoke.error == pb.ERROR_KIND_NONE
    assert (reply.invoke.request_id, reply.invoke.output, reply.invoke.logs) == ("req-1", b"hello node",
                                                                                  b"echo: done\n")
    assert reply.invoke.exec_ms > 0
    status = node.stub.Status(pb.StatusRequest())
    info = next(i for i in status.instances if i.instance_id == spawned.instance_id)
    assert (info.state, info.invocations, info.function) == (pb.IDLE, 1, "echo")
    assert status.node_id == "node-a" and status.memory_capacity_mb == 1024 and status.memory_used_mb >= 128

    assert do(node, spawned.instance_id, kill=pb.Kill()).state == pb.DEAD
    error = grpc_error(lambda: invoke(node, spawned.instance_id, b"again"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "dead (killed)" in error.details()
    assert all(i.instance_id != spawned.instance_id for i in node.stub.Status(pb.StatusRequest()).instances)


def test_keep_alive_expiry_asks_the_scheduler_and_obeys(node, scheduler) -> None:
    spawned = spawn(node, "echo")
    iid = spawned.instance_id
    scheduler.scripts[iid] = [
        pb.IdleDirective(invoke=pb.Invoke(request_id="queued-1", payload=b"next request")),
        pb.IdleDirective(keep_alive=pb.KeepAlive(ms=50)),
        pb.IdleDirective(kill=pb.Kill()),
    ]
    assert do(node, iid, keep_alive=pb.KeepAlive(ms=100)).state == pb.KEPT_ALIVE
    info = next(i for i in node.stub.Status(pb.StatusRequest()).instances if i.instance_id == iid)
    assert info.state == pb.KEPT_ALIVE and 0 < info.keep_alive_remaining_ms <= 100

    expired = scheduler.next_event()
    assert (expired.instance_id, expired.function, expired.reason) == (iid, "echo", pb.KEEPALIVE_EXPIRED)
    assert expired.node_id == "node-a" and expired.node_address == node.address
    assert expired.idle_since_unix_ms <= time.time() * 1000
    finished = scheduler.next_event()  # the node ran the directive's request and reports it
    assert finished.reason == pb.FINISHED
    assert (finished.result.request_id, finished.result.output) == ("queued-1", b"next request")
    again = scheduler.next_event()  # the 50 ms keep-alive ran out: asked again, told to die
    assert again.reason == pb.KEEPALIVE_EXPIRED
    wait_until(lambda: all(i.instance_id != iid for i in node.stub.Status(pb.StatusRequest()).instances))
    assert grpc_error(lambda: invoke(node, iid)).code() == grpc.StatusCode.NOT_FOUND


def test_invoke_cancels_a_keep_alive(node, scheduler) -> None:
    iid = spawn(node, "echo").instance_id
    control = spawn(node, "echo").instance_id
    do(node, iid, keep_alive=pb.KeepAlive(ms=150))
    assert invoke(node, iid, b"x").invoke.output == b"x"
    # a later and longer keep-alive on another instance: once it has expired, the cancelled
    # one would have expired before it
    do(node, control, keep_alive=pb.KeepAlive(ms=200))
    seen = [scheduler.next_event()]
    while seen[-1].instance_id != control:
        seen.append(scheduler.next_event())
    info = next(i for i in node.stub.Status(pb.StatusRequest()).instances if i.instance_id == iid)
    assert info.state == pb.IDLE  # the timer was cancelled: nobody was asked, nothing was killed
    assert all(e.instance_id != iid for e in seen + list(scheduler.events.queue))
    do(node, iid, kill=pb.Kill())


def test_infinite_loop_times_out_and_the_node_keeps_serving(node) -> None:
    spin = spawn(node, "spin").instance_id
    echo = spawn(node, "echo").instance_id
    pool = futures.ThreadPoolExecutor(1)
    running = pool.submit(invoke, node, spin)

    def spin_status() -> pb.InstanceInfo:
        return next(i for i in node.stub.Status(pb.StatusRequest(), timeout=2).instances if i.instance_id == spin)

    wait_until(lambda: spin_status().state == pb.BUSY, timeout=5)
    # while the loop runs: Status, Health, and other invocations answer, and the instance is busy
    assert node.stub.Health(pb.HealthRequest(), timeout=2).ok
    busy = spin_status()
    assert busy.state == pb.BUSY and busy.busy_ms > 0
    assert invoke(node, echo, b"meanwhile").invoke.output == b"meanwhile"
    assert grpc_error(lambda: invoke(node, spin)).code() == grpc.StatusCode.FAILED_PRECONDITION
    assert grpc_error(lambda: do(node, spin, keep_alive=pb.KeepAlive(ms=10))).code() == \
        grpc.StatusCode.FAILED_PRECONDITION
    reply = running.result(timeout=10)
    pool.shutdown()
    assert reply.invoke.error == pb.TIMEOUT and "300 ms" in reply.invoke.error_message
    assert reply.state == pb.IDLE
    assert invoke(node, echo, b"after").invoke.output == b"after"
    for iid in (spin, echo):
        do(node, iid, kill=pb.Kill())


def test_faults_are_reported_with_kind_message_and_logs(node) -> None:
    bomb = invoke(node, spawn(node, "bomb").instance_id).invoke
    assert bomb.error == pb.OUT_OF_MEMORY and "16 MB" in bomb.error_message
    crash = invoke(node, spawn(node, "crash").instance_id).invoke
    assert crash.error == pb.TRAP and "unreachable" in crash.error_message and crash.logs == b"about to trap\n"
    fails = invoke(node, spawn(node, "fails").instance_id).invoke
    assert fails.error == pb.FUNCTION_ERROR and fails.error_message == "exited with status 3: bad input"
    assert node.stub.Health(pb.HealthRequest()).ok


def test_component_state_survives_warm_invocations_and_resets_after_a_timeout(node) -> None:
    iid = spawn(node, "counter").instance_id
    assert [invoke(node, iid, p).invoke.output for p in (b"a", b"b", b"c")] == [b"a #1", b"b #2", b"c #3"]
    err = invoke(node, iid, b"!bad").invoke
    assert err.error == pb.FUNCTION_ERROR and err.error_message == "rejected: request starts with '!'"
    timed_out = invoke(node, iid, b"~").invoke
    assert timed_out.error == pb.TIMEOUT and timed_out.instance_recycled
    assert invoke(node, iid, b"d").invoke.output == b"d #1"
    do(node, iid, kill=pb.Kill())


def test_bad_requests_get_clear_grpc_errors(node, registry) -> None:
    unknown = grpc_error(lambda: spawn(node, "no-such-function"))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND and "no-such-function" in unknown.details()
    missing_version = grpc_error(lambda: spawn(node, "echo", version="99"))
    assert missing_version.code() == grpc.StatusCode.NOT_FOUND and "99" in missing_version.details()
    bad_version = grpc_error(lambda: spawn(node, "echo", version="v1"))
    assert bad_version.code() == grpc.StatusCode.INVALID_ARGUMENT and "'v1'" in bad_version.details()
    bad_name = grpc_error(lambda: spawn(node, "../etc"))
    assert bad_name.code() == grpc.StatusCode.INVALID_ARGUMENT and "invalid function name" in bad_name.details()
    assert grpc_error(lambda: invoke(node, "nobody")).code() == grpc.StatusCode.NOT_FOUND
    assert grpc_error(lambda: node.stub.Do(pb.DoRequest(instance_id="x"))).code() == \
        grpc.StatusCode.INVALID_ARGUMENT
    small = spawn(node, "small-payload").instance_id
    too_big = grpc_error(lambda: invoke(node, small, b"x" * 17))
    assert too_big.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_payload_bytes (16)" in too_big.details()
    taken = grpc_error(lambda: spawn(node, "echo", instance_id=small))
    assert taken.code() == grpc.StatusCode.ALREADY_EXISTS
    do(node, small, kill=pb.Kill())
    # garbage never reaches a node: the registry rejects it with validate_wasm's message
    with registry.client() as client, pytest.raises(RegistryError, match="not a WebAssembly binary") as info:
        client.upload("garbage", b"MZ\x90\x00 definitely not wasm", {"abi": "wasi-command"})
    assert info.value.status == 400


def test_payloads_of_several_megabytes(node) -> None:
    iid = spawn(node, "echo").instance_id
    payload = os.urandom(5 * 1024 * 1024)
    assert invoke(node, iid, payload).invoke.output == payload
    do(node, iid, kill=pb.Kill())


def test_metrics_endpoint(node) -> None:
    iid = spawn(node, "echo").instance_id
    invoke(node, iid, b"m")
    text = httpx.get(node.metrics_url, timeout=5).text
    assert 'wl_node_invocations_total{function="echo",outcome="none"}' in text
    assert 'wl_node_cold_starts_total{' in text
    assert 'wl_node_instances{state="idle"}' in text
    do(node, iid, kill=pb.Kill())


def test_cached_and_uncached_spawns(registry, tmp_path) -> None:
    cache = tmp_path / "cache"
    first = NodeProcess(registry, cache)
    try:
        cold = spawn(first, "counter", version="1")
        assert (cold.code_cached, cold.compile_cached, cold.compile_source) == (False, False, "compiled")
        assert cold.compile_ms > 0 and cold.fetch_ms > 0
        warm = spawn(first, "counter", version="1")
        assert (warm.code_cached, warm.compile_cached, warm.compile_source) == (True, True, "memory")
    finally:
        assert first.stop() == 0  # SIGTERM: a clean stop
    restarted = NodeProcess(registry, cache)  # same cache dir: compiled artifact loads from disk
    try:
        from_disk = spawn(restarted, "counter", version="1")
        assert (from_disk.code_cached, from_disk.compile_cached, from_disk.compile_source) == (True, True, "disk")
        assert invoke(restarted, from_disk.instance_id, b"x").invoke.output == b"x #1"
    finally:
        restarted.stop()


def test_a_fresh_node_spawns_a_cached_version_without_asking_the_registry(tmp_path) -> None:
    """name@version metadata is cached on disk (versions never change in a registry), so a new
    node process with a warm cache spawns it even with the registry down; "latest" is always
    asked. A registry made anew at the same address numbers from 1 again: its id differs, and
    nodes do not reuse what they cached about the old one."""
    port = free_port()
    registry = RegistryProcess(tmp_path / "registry", port=port)
    client = RegistryClient(registry.url, TOKEN)
    client.upload("fn", wasm("echo"), {"abi": "wasi-command"})
    cache = tmp_path / "cache"
    first = NodeProcess(registry, cache)
    try:
        assert spawn(first, "fn", version="1").compile_source == "compiled"
    finally:
        first.stop()
        client.close()
        registry.stop()

    offline = NodeProcess(registry, cache)  # a new process, and nobody answers at the registry's address
    try:
        spawned = spawn(offline, "fn", version="1")
        assert spawned.compile_source == "disk"  # metadata and artifact from the caches: no request
        assert invoke(offline, spawned.instance_id, b"from the caches").invoke.output == b"from the caches"
        latest = grpc_error(lambda: spawn(offline, "fn"))
        assert latest.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        offline.stop()

    renewed = RegistryProcess(tmp_path / "registry-2", port=port)  # same address, a new registry: fn@1 is other code
    client = RegistryClient(registry.url, TOKEN)
    client.upload("fn", wasm("env"), {"abi": "wasi-command"})
    node = NodeProcess(renewed, cache)
    try:
        spawned = spawn(node, "fn", version="1")
        output = invoke(node, spawned.instance_id, b"").invoke.output
        assert b"WL_FUNCTION=fn" in output  # the env function's output, not the old echo's
    finally:
        node.stop()
        client.close()
        renewed.stop()


def test_memory_capacity_and_expiry_without_a_scheduler(registry, tmp_path) -> None:
    small = NodeProcess(registry, tmp_path / "cache", "--memory-mb", "300", "--idle-grace-ms", "300")
    try:
        a = spawn(small, "echo").instance_id
        b = spawn(small, "echo").instance_id
        full = grpc_error(lambda: spawn(small, "echo"))
        assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "44 MB free" in full.details()
        do(small, a, kill=pb.Kill())
        c = spawn(small, "echo").instance_id
        # no scheduler: an expired keep-alive kills; an instance nobody instructs dies after the grace
        do(small, c, keep_alive=pb.KeepAlive(ms=50))
        wait_until(lambda: {i.instance_id for i in small.stub.Status(pb.StatusRequest()).instances} == {b},
                    timeout=2)
        wait_until(lambda: not small.stub.Status(pb.StatusRequest()).instances, timeout=5)
        assert small.stub.Status(pb.StatusRequest()).memory_used_mb == 0
    finally:
        small.stop()

