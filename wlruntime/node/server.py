"""The node's gRPC server (grpc.aio): maps node.proto onto NodeRuntime, and calls the Scheduler back.

The server runs on one asyncio event loop. Cheap operations (KeepAlive, Kill, Status, Health,
and claiming an instance for an Invoke) run on the loop under the runtime's lock; wasm runs on
the runtime's ``wasm_pool`` threads (wasmtime releases the GIL while guest code runs) and
spawns (registry fetch, compile) on a separate pool, so the loop never waits for either.

A spawn is also a Do operation (DoRequest.spawn), so the router sends its spawns on its one
DoStream per node: a burst of cold starts then arrives in a few batches. As unary Spawn calls the
node's server accepted them one at a time (about 1 ms each here), so the last of a burst of
100 spawns waited ~100 ms (seconds on a loaded machine) before the node even saw it
(bench/README.md, issue 10).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import sys
import threading
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from wlruntime.auth import InternalAuth
from wlruntime.node.client import CHANNEL_OPTIONS, connect_scheduler, take_batch
from wlruntime.node.runtime import Directive, IdleEventInfo, NodeError, NodeRuntime
from wlruntime.proto import node_pb2 as pb
from wlruntime.proto import node_pb2_grpc
from wlruntime.wasm.engine import wasmtime_version
from wlruntime.wasm.runners import Invocation, Outcome

log = logging.getLogger("wlruntime.node")

SCHEDULER_TIMEOUT_S = 10.0
SPAWN_THREADS = 8
REGISTRY_ID_WAIT_S = 2.0

# Enum names -> numbers, looked up once (EnumTypeWrapper.Value costs a call per reply).
_ERROR_KIND = {name.lower(): number for name, number in pb.ErrorKind.items()}
_ERROR_KIND["none"] = pb.ERROR_KIND_NONE
_INSTANCE_STATE = dict(pb.InstanceState.items())


def outcome_to_pb(outcome: Outcome, request_id: str) -> pb.InvokeResult:
    return pb.InvokeResult(
        request_id=request_id,
        output=outcome.output,
        error=_ERROR_KIND[outcome.error],
        error_message=outcome.error_message,
        logs=outcome.logs,
        exec_ms=outcome.exec_ms,
        instance_recycled=outcome.recycled,
        max_memory_bytes=outcome.max_memory_bytes,
    )


def _with_riding(reply: pb.DoReply, done: pb.DoReply) -> pb.DoReply:
    """A spawn's reply with the result of the request that rode with it."""
    reply.spawn.invoke.CopyFrom(done.invoke)
    reply.state = done.state
    return reply


def invocation_from_pb(invoke: pb.Invoke) -> Invocation:
    return Invocation(payload=invoke.payload, request_id=invoke.request_id, metadata=dict(invoke.metadata),
                      timeout_ms=invoke.timeout_ms)


class NodeService(node_pb2_grpc.NodeServicer):
    def __init__(self, runtime: NodeRuntime, spawn_pool: ThreadPoolExecutor) -> None:
        self.runtime = runtime
        self.spawn_pool = spawn_pool

    async def Spawn(self, request: pb.SpawnRequest, context: grpc.aio.ServicerContext) -> pb.SpawnReply:
        try:
            done = self._start_spawn(request)
            if not isinstance(done, pb.DoReply):
                done = await done
        except NodeError as error:
            await context.abort(grpc.StatusCode[error.code], error.message)
        return done.spawn

    def _start_spawn(self, request: pb.SpawnRequest) -> pb.DoReply | Awaitable[pb.DoReply]:
        """Start an instance (and the request riding with it): a DoReply whose ``spawn`` is the
        SpawnReply, or an awaitable of it. Raises NodeError (the status Spawn fails with)."""
        if not request.function:
            raise NodeError("INVALID_ARGUMENT", "SpawnRequest.function is empty")
        runtime = self.runtime
        if runtime.spawn_is_quick(request.function, request.version):
            return self._spawned(request, runtime.spawn(request.function, request.version, request.instance_id))
        return self._spawn_on_pool(request)  # registry requests, compiling, a component's start-up code

    async def _spawn_on_pool(self, request: pb.SpawnRequest) -> pb.DoReply:
        runtime = self.runtime
        result = await asyncio.get_running_loop().run_in_executor(
            self.spawn_pool, runtime.spawn, request.function, request.version, request.instance_id)
        done = self._spawned(request, result)
        return done if isinstance(done, pb.DoReply) else await done

    def _spawned(self, request: pb.SpawnRequest, result: Any) -> pb.DoReply | Awaitable[pb.DoReply]:
        """The reply for a started instance, after the request riding with it (if any) ran."""
        spawn = pb.SpawnReply(
            instance_id=result.instance_id, function=result.function, version=result.version,
            sha256=result.sha256, abi=result.config.abi, memory_mb=result.config.memory_mb,
            timeout_ms=result.config.timeout_ms, cold_start_ms=result.cold_start_ms, fetch_ms=result.fetch_ms,
            compile_ms=result.compile_ms, instantiate_ms=result.instantiate_ms, code_cached=result.code_cached,
            compile_cached=result.compile_cached, compile_source=result.compile_source,
            concurrency=result.config.concurrency, max_payload_bytes=result.config.max_payload_bytes,
        )
        reply = pb.DoReply(instance_id=result.instance_id, state=pb.IDLE, spawn=spawn)
        if not request.HasField("invoke"):
            return reply
        try:
            done = self._start_do(pb.DoRequest(instance_id=result.instance_id, invoke=request.invoke))
        except NodeError as error:  # the instance is up; the request did not run
            reply.spawn.invoke_error_code, reply.spawn.invoke_error_message = error.code, error.message
            return reply
        if isinstance(done, pb.DoReply):
            return _with_riding(reply, done)
        return self._riding_on_pool(reply, done)

    async def _riding_on_pool(self, reply: pb.DoReply, pending: Awaitable[pb.DoReply]) -> pb.DoReply:
        try:
            return _with_riding(reply, await pending)
        except NodeError as error:
            reply.spawn.invoke_error_code, reply.spawn.invoke_error_message = error.code, error.message
            return reply

    def _start_do(self, request: pb.DoRequest) -> pb.DoReply | Awaitable[pb.DoReply]:
        """Carry out one Do operation: the reply, or for an invocation that has to run on a wasm
        thread an awaitable of it. Raises NodeError (the status Do fails with)."""
        instance_id = request.instance_id
        if not instance_id:
            raise NodeError("INVALID_ARGUMENT", "DoRequest.instance_id is empty")
        op = request.WhichOneof("op")
        runtime = self.runtime
        if op == "spawn":
            spawn = request.spawn
            if spawn.instance_id and spawn.instance_id != instance_id:
                raise NodeError("INVALID_ARGUMENT", f"DoRequest.instance_id {instance_id!r} and its "
                                f"SpawnRequest.instance_id {spawn.instance_id!r} differ")
            spawn.instance_id = instance_id
            return self._start_spawn(spawn)
        if op == "invoke":
            invoke = request.invoke
            invocation = invocation_from_pb(invoke)
            instance = runtime.begin_invoke(instance_id, invocation)
            done = runtime.try_run_inline(instance, invocation)  # short ones: no thread hand-off
            if done is None:
                return self._run_on_pool(instance, invocation, instance_id, invoke.request_id)
            outcome, state = done
            return pb.DoReply(instance_id=instance_id, state=_INSTANCE_STATE[state],
                              invoke=outcome_to_pb(outcome, invoke.request_id))
        if op == "keep_alive":
            state = runtime.keep_alive(instance_id, request.keep_alive.ms)
        elif op == "kill":
            state = runtime.kill(instance_id)
        else:
            raise NodeError("INVALID_ARGUMENT", "DoRequest needs one of keep_alive, kill, invoke, spawn")
        return pb.DoReply(instance_id=instance_id, state=_INSTANCE_STATE[state])

    async def _run_on_pool(self, instance: Any, invocation: Invocation, instance_id: str,
                           request_id: str) -> pb.DoReply:
        runtime = self.runtime
        outcome, state = await asyncio.get_running_loop().run_in_executor(
            runtime.wasm_pool, runtime.run_invocation, instance, invocation)
        return pb.DoReply(instance_id=instance_id, state=_INSTANCE_STATE[state],
                          invoke=outcome_to_pb(outcome, request_id))

    async def Do(self, request: pb.DoRequest, context: grpc.aio.ServicerContext) -> pb.DoReply:
        try:
            reply = self._start_do(request)
            if not isinstance(reply, pb.DoReply):
                reply = await reply
        except NodeError as error:
            await context.abort(grpc.StatusCode[error.code], error.message)
        except Exception:  # a node bug: logged here, the caller gets no Python internals
            log.exception("Do on %s failed inside the node", request.instance_id)
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"internal error in node {self.runtime.node_id} (details in its log)")
        return reply

    async def DoStream(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        """Do for every request of every batch read, answered in completion order (see
        node.proto). Quick operations are answered as they are read; invocations on the wasm
        pool when they finish. Replies that pile up while one batch is written go in the next."""
        outbox: list[tuple[pb.DoReply, int]] = []  # (reply, output bytes)
        ready = asyncio.Event()
        on_pool: set[asyncio.Task] = set()
        reading = True

        def post(reply: pb.DoReply) -> None:
            result = reply.invoke
            outbox.append((reply, len(result.output) + len(result.logs)))
            ready.set()

        def failed(request: pb.DoRequest, error: Exception) -> pb.DoReply:
            if not isinstance(error, NodeError):  # a node bug: the caller still gets its answer
                log.exception("DoStream operation on %s failed inside the node", request.instance_id)
                error = NodeError("INTERNAL", f"internal error in node {self.runtime.node_id} (details in its log)")
            return pb.DoReply(instance_id=request.instance_id, call_id=request.call_id, error_code=error.code,
                              error_message=error.message)

        async def finish(request: pb.DoRequest, pending: Awaitable[pb.DoReply]) -> None:
            try:
                reply = await pending
            except Exception as error:  # noqa: BLE001 - any failure still answers the call
                reply = failed(request, error)
            reply.call_id = request.call_id
            post(reply)

        async def read_all() -> None:
            nonlocal reading
            try:
                while (batch := await context.read()) is not grpc.aio.EOF:
                    for request in batch.requests:
                        try:
                            reply = self._start_do(request)
                        except Exception as error:  # noqa: BLE001 - any failure still answers the call
                            reply = failed(request, error)
                        if isinstance(reply, pb.DoReply):
                            reply.call_id = request.call_id
                            post(reply)
                        else:
                            task = asyncio.ensure_future(finish(request, reply))
                            on_pool.add(task)
                            task.add_done_callback(on_pool.discard)
                if on_pool:  # the client half-closed: answer what is still running, then end
                    await asyncio.wait(set(on_pool))
            finally:
                reading = False
                ready.set()

        reader = asyncio.ensure_future(read_all())
        try:
            while outbox or reading:
                if not outbox:
                    ready.clear()
                    await ready.wait()
                    continue
                await asyncio.sleep(0)  # replies ready in this turn of the loop join the batch
                await context.write(pb.DoReplyBatch(replies=take_batch(outbox)))
            await reader  # re-raises what ended the reading, if anything did
        finally:
            reader.cancel()

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusReply:
        status = self.runtime.status()
        instances = [
            pb.InstanceInfo(**{**info, "state": _INSTANCE_STATE[info["state"]]})
            for info in status.pop("instances")
        ]
        return pb.StatusReply(**status, instances=instances, wasmtime_version=wasmtime_version())

    async def Health(self, request: pb.HealthRequest, context: grpc.aio.ServicerContext) -> pb.HealthReply:
        return pb.HealthReply(ok=True, node_id=self.runtime.node_id, message="serving")


class SchedulerCaller:
    """Turns the runtime's IdleEventInfo into Scheduler.OnIdle calls (one channel, reused)."""

    def __init__(self, address: str, node_id: str, node_address: str, auth: InternalAuth | None = None) -> None:
        self.address = address
        self.node_id = node_id
        self.node_address = node_address
        self._channel, self._stub = connect_scheduler(address, auth)

    def __call__(self, event: IdleEventInfo) -> Directive:
        message = pb.IdleEvent(
            node_id=self.node_id, instance_id=event.instance_id, function=event.function, version=event.version,
            reason=pb.IdleReason.Value(event.reason), idle_since_unix_ms=event.idle_since_unix_ms,
            node_address=self.node_address,
        )
        if event.result is not None:
            message.result.CopyFrom(outcome_to_pb(event.result, event.request_id))
        directive = self._stub.OnIdle(message, timeout=SCHEDULER_TIMEOUT_S)
        action = directive.WhichOneof("action")
        if action == "keep_alive":
            return Directive(keep_alive_ms=directive.keep_alive.ms)
        if action == "invoke":
            return Directive(invocation=invocation_from_pb(directive.invoke))
        return Directive()  # kill, or nothing set

    def close(self) -> None:
        self._channel.close()


@dataclass
class RunningNode:
    server: grpc.aio.Server
    runtime: NodeRuntime
    port: int
    metrics_port: int | None
    scheduler: SchedulerCaller | None
    spawn_pool: ThreadPoolExecutor
    _metrics_server: Any = None

    async def stop(self, grace: float = 1.0) -> None:
        await self.server.stop(grace)
        self.runtime.close()
        self.spawn_pool.shutdown(wait=False, cancel_futures=True)
        if self.scheduler is not None:
            self.scheduler.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()


async def start_node(
    *,
    registry_url: str,
    node_id: str,
    memory_mb: int,
    host: str = "127.0.0.1",
    port: int = 0,
    cache_dir: str | None = None,
    scheduler_address: str | None = None,
    workers: int = 4,
    idle_grace_ms: int = 30_000,
    metrics_port: int | None = None,
    registry_token: str | None = None,
    auth: InternalAuth | None = None,
) -> RunningNode:
    """Start a node's gRPC server (and metrics endpoint) on the running event loop; returns once
    it serves.

    ``port=0`` picks a free port (see ``RunningNode.port``); an empty ``node_id`` becomes
    ``<hostname>-<port>``. ``auth`` (default: from the environment, wlruntime/auth.py): the
    token every call must carry (UNAUTHENTICATED otherwise), also sent on Scheduler calls, and
    optional TLS.
    """
    from wlruntime.node.metrics import NodeMetrics
    from wlruntime.registry.client import RegistryClient

    registry = RegistryClient(registry_url, token=registry_token,
                              cache_dir=f"{cache_dir}/code" if cache_dir else None)
    auth = auth or InternalAuth.from_env()
    # so_reuseport off: a second node on a taken port must fail, not silently share it.
    server = grpc.aio.server(options=[*CHANNEL_OPTIONS, ("grpc.so_reuseport", 0)],
                             interceptors=auth.server_interceptors())
    bound = auth.add_port(server, f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    node_id = node_id or f"{socket.gethostname()}-{bound}"
    metrics = NodeMetrics(node_id)
    scheduler = SchedulerCaller(scheduler_address, node_id, f"{host}:{bound}", auth) if scheduler_address else None
    runtime = NodeRuntime(node_id, registry, memory_mb, cache_dir, workers=workers, idle_grace_ms=idle_grace_ms,
                          scheduler=scheduler, metrics=metrics)
    metrics.attach(runtime)
    # Which registry this is keys the on-disk metadata cache; a registry that does not answer
    # soon is not waited for (the last id seen at its address is used meanwhile).
    learn = threading.Thread(target=runtime.refresh_registry_identity, name="node-registry-id", daemon=True)
    learn.start()
    await asyncio.get_running_loop().run_in_executor(None, learn.join, REGISTRY_ID_WAIT_S)
    spawn_pool = ThreadPoolExecutor(max_workers=SPAWN_THREADS, thread_name_prefix="node-spawn")
    node_pb2_grpc.add_NodeServicer_to_server(NodeService(runtime, spawn_pool), server)
    await server.start()
    metrics_server = None
    if metrics_port is not None:
        metrics_server = metrics.serve(metrics_port, host)
        metrics_port = metrics_server.server_address[1]
    return RunningNode(server, runtime, bound, metrics_port, scheduler, spawn_pool, metrics_server)


def serve(on_ready: Any = None, on_stop: Any = None, **node_args: Any) -> None:
    """Run a node until SIGINT/SIGTERM, then stop cleanly and exit the process.

    ``node_args`` go to ``start_node``; ``on_ready(node)`` is called once it serves, and
    ``on_stop()`` (blocking, run on a thread) when asked to stop, before the node stops. Raises
    what ``start_node`` raises (OSError for a taken port) before serving.
    """
    import signal

    async def run() -> None:
        node = await start_node(**node_args)
        # As in the router: what exists now lives as long as the process; frozen, it is left
        # out of the collector's full passes.
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if on_ready is not None:
            on_ready(node)
        await stop.wait()
        if on_stop is not None:
            await asyncio.to_thread(on_stop)
        log.info("stopping node %s", node.runtime.node_id)
        await node.stop()

    _new_event_loop_policy()
    asyncio.run(run())
    # Skip interpreter finalisation: wasmtime's WASI threads may still call back into Python
    # (output callbacks) while it tears down, which can abort a process that already stopped
    # cleanly. Everything is closed and flushed at this point.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _new_event_loop_policy() -> None:
    """uvloop when installed (it is a dependency of uvicorn[standard]); asyncio's loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
