"""The router's engine: the instance table across nodes and the policy's decisions, live.

It mirrors the simulator's model (wlsim/engine.py; policies/interface.py documents the
decision points) with real nodes behind it:

- At each arrival: ``fn.stats.record_arrival``, then ``policy.route``. ``Assign`` runs the
  request on the instance now when it is idle, else queues it there (also on a STARTING
  one); ``SPAWN`` places a new instance on the live node with the most free memory
  (``policy.evict`` makes room when none fits) and runs the request there once
  ``Node.Spawn`` returns; ``Reject`` is a 429 with Retry-After.
- When an execution ends (``Node.Do(Invoke)`` returned): ``record_completion``, the instance
  is IDLE and ``policy.on_idle`` decides: INVOKE the next queued request, KeepAlive(ms) or
  Kill. When a keep-alive runs out the node calls ``Scheduler.OnIdle`` (served by this
  process, see server.py) and gets the policy's answer as its directive.
- ``policy.prewarm`` when a kill leaves a function with no instance.

Everything runs on one asyncio event loop and decisions never await, so a decision sees a
consistent table and a policy swap (between two decisions) needs no further locking.

Keep-alives are sent lazily: after an execution the node already holds the instance idle
(for its grace period), so ``Do(KeepAlive)`` goes out only once the instance has stayed idle
``KEEPALIVE_DEFER_MS``; a busy instance never pays that RPC on its request path.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import time
from collections.abc import Iterable
from typing import Any

import grpc
import httpx

from policies.interface import (
    BUSY,
    DEAD,
    IDLE,
    KILL,
    STARTING,
    Assign,
    InstanceView,
    Invoke,
    KeepAlive,
    Kill,
    Policy,
    Reject,
    RequestView,
    Spawn,
)
from policies.registry import PolicySpecError, load_policy
from wlruntime.auth import InternalAuth
from wlruntime.node.client import DoStreamClient
from wlruntime.proto import node_pb2 as pb
from wlruntime.proto import node_pb2_grpc
from wlruntime.router.deadline import with_deadline
from wlruntime.router.metrics import RouterMetrics
from wlruntime.router.state import (
    NODE_ERROR,
    OK,
    TIMEOUT,
    Function,
    FunctionNotFound,
    Instance,
    NoCapacity,
    PayloadTooLarge,
    Pending,
    Result,
    RouterError,
    Throttled,
    Unavailable,
    WaitTimeout,
)
from wlruntime.router.trace import TraceRecorder

log = logging.getLogger("wlruntime.router")

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ERROR_NAMES = {v: ("none" if n == "ERROR_KIND_NONE" else n.lower()) for n, v in pb.ErrorKind.items()}
FINISHED = pb.IdleReason.Value("FINISHED")

# gRPC: large payloads, and quick reconnects to a node that comes back.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
RPC_MARGIN_S = 2.0           # added to a function's timeout for the Do(Invoke) deadline
SPAWN_TIMEOUT_S = 120.0      # a first compile of a big component can take a while
CONTROL_TIMEOUT_S = 5.0      # KeepAlive / Kill / Status
HEALTH_INTERVAL_S = 1.0
HEALTH_TIMEOUT_S = 1.0
HEALTH_MISSES = 5            # consecutive health-check timeouts that mark a node dead
KEEPALIVE_DEFER_MS = 20.0
REFRESH_INTERVAL_S = 2.0
MAX_ATTEMPTS = 3             # placements of one request (re-routes after a node or spawn failure)
# Spawn errors that mean the instance never started, so a request sent along did not run.
SPAWN_REFUSED = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                           grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ALREADY_EXISTS,
                           grpc.StatusCode.INVALID_ARGUMENT})
NEGATIVE_CACHE_S = 1.0       # unknown function names are not asked again for this long
BUSY_KEEPALIVE_MS = 60_000   # answer to a node asking about an instance the router has busy
UINT32_MAX = 2**32 - 1

UNKNOWN_FUNCTION = "(unknown)"  # metrics label for requests naming no deployed function
BASE_POLICY = Policy()       # the fallback when a policy raises or answers nonsense


def load_live_policy(spec: str) -> Policy:
    """``load_policy`` plus the live router's own rules: no offline (future-knowing) policies;
    a user's policy decides within a time budget, off the event loop (deadline.py)."""
    policy = load_policy(spec)
    if getattr(policy, "needs_future", False):
        raise PolicySpecError(f"policy {policy.name!r} needs the whole future trace (an offline lower bound "
                              "for the simulator); the live router cannot run it")
    return with_deadline(policy, spec)


class NodeRef:
    """The router's record of one handler node."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.name = address
        self.channel = InternalAuth.from_env().aio_channel(address, CHANNEL_OPTIONS)  # calls carry the token
        self.stub = node_pb2_grpc.NodeStub(self.channel)
        self.calls = DoStreamClient(self.stub)  # Do operations, over one stream
        self.alive = False
        self.capacity_mb = 0.0
        self.free_mb = 0.0
        self.instances: dict[int, Instance] = {}
        self.last_error = "not contacted yet"
        self.misses = 0

    def __repr__(self) -> str:
        return f"<node {self.name} {'up' if self.alive else 'down'} free={self.free_mb:g}/{self.capacity_mb:g} MB>"


class Router:
    def __init__(self, *, registry_url: str, nodes: Iterable[str], policy: str | Policy = "default",
                 registry_token: str | None = None, trace_max_rows: int = 1_000_000) -> None:
        self.registry_url = registry_url.rstrip("/")
        self.registry_token = registry_token
        if isinstance(policy, str):
            self.policy_spec = policy
            self.policy = load_live_policy(policy)
        else:
            self.policy_spec = getattr(policy, "name", type(policy).__name__)
            self.policy = policy
        self.nodes: list[NodeRef] = []
        self._node_addresses = list(dict.fromkeys(nodes))
        self.functions: dict[str, Function] = {}
        self.trace = TraceRecorder(trace_max_rows)
        self.metrics = RouterMetrics(self._instance_states, self._node_states)
        self.boot = secrets.token_hex(3)
        # The policy clock: ms since 00:00 UTC of the start day, advancing with the monotonic clock.
        self._mono0 = time.monotonic()
        self._day_ms0 = (time.time() % 86400.0) * 1000.0
        self._ids = 0
        self._seq = 0
        self._by_iid: dict[str, Instance] = {}
        self._keepalive_due: dict[Instance, float] = {}
        self._node_driven: dict[str, tuple[Instance, Pending]] = {}
        self._loading: dict[str, asyncio.Future] = {}
        self._unknown: dict[str, float] = {}
        self._tasks: set[asyncio.Task] = set()
        self._background: list[asyncio.Task] = []
        self._http: httpx.AsyncClient | None = None
        self._policy_error_logged: set[str] = set()
        self.started = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        headers = {"Authorization": f"Bearer {self.registry_token}"} if self.registry_token else {}
        self._http = httpx.AsyncClient(base_url=self.registry_url, headers=headers, timeout=30.0)
        for address in self._node_addresses:
            self.nodes.append(NodeRef(address))
        await asyncio.gather(*(self._check_node(n) for n in self.nodes))
        try:
            await self._refresh_functions()
        except Exception as error:  # noqa: BLE001 (the registry may come up later: functions load on first use)
            log.warning("could not list functions in the registry at %s: %s", self.registry_url, error)
        loop = asyncio.get_running_loop()
        self._background = [loop.create_task(self._health_loop(), name="router-health"),
                            loop.create_task(self._keepalive_loop(), name="router-keepalive"),
                            loop.create_task(self._refresh_loop(), name="router-refresh")]
        self.started = True

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for node in self.nodes:
            await node.calls.close()
            await node.channel.close(grace=0.5)
        if self._http is not None:
            await self._http.aclose()

    def now_ms(self) -> float:
        return (time.monotonic() - self._mono0) * 1000.0 + self._day_ms0

    def _bg(self, coro: Any) -> asyncio.Task:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ nodes
    async def add_node(self, address: str) -> NodeRef:
        for node in self.nodes:
            if node.address == address:
                return node
        node = NodeRef(address)
        self.nodes.append(node)
        await self._check_node(node)
        return node

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            await asyncio.gather(*(self._check_node(n) for n in self.nodes), return_exceptions=True)

    async def _check_node(self, node: NodeRef) -> None:
        """A refused connection marks a node dead at once; a slow answer only after
        HEALTH_MISSES in a row (a node busy compiling a large component answers late)."""
        try:
            await node.stub.Health(pb.HealthRequest(), timeout=HEALTH_TIMEOUT_S)
            node.misses = 0
            if not node.alive:
                await self._sync_node(node)
        except grpc.aio.AioRpcError as error:
            node.last_error = f"{error.code().name}: {error.details()}"
            node.misses += 1
            if node.alive and (error.code() is not grpc.StatusCode.DEADLINE_EXCEEDED or node.misses >= HEALTH_MISSES):
                self._node_failed(node, f"health check failed: {node.last_error}")

    async def _sync_node(self, node: NodeRef) -> None:
        """(Re)admit a node: learn its capacity and free what it holds that the router does not know."""
        status = await node.stub.Status(pb.StatusRequest(), timeout=CONTROL_TIMEOUT_S)
        if not node.instances:
            node.name = status.node_id or node.address
        node.capacity_mb = float(status.memory_capacity_mb)
        orphans = [i for i in status.instances if i.instance_id not in self._by_iid]
        for info in orphans:
            try:
                await node.calls.do(pb.DoRequest(instance_id=info.instance_id, kill=pb.Kill()),
                                    timeout=CONTROL_TIMEOUT_S)
            except grpc.aio.AioRpcError:
                pass
        node.free_mb = node.capacity_mb - sum(i.memory_mb for i in node.instances.values())
        node.alive = True
        node.last_error = ""
        log.info("node %s (%s) is up: %g MB, %d orphan instance(s) freed", node.name, node.address,
                 node.capacity_mb, len(orphans))

    def _node_failed(self, node: NodeRef, why: str) -> None:
        """Mark a node and all its instances dead; requests queued there are placed again.
        Requests running there get their error from their own failing RPC."""
        if not node.alive:
            return
        node.alive = False
        node.last_error = why
        log.warning("node %s (%s) failed: %s; %d instance(s) marked dead", node.name, node.address, why,
                    len(node.instances))
        now = self.now_ms()
        for rid, (inst, req) in list(self._node_driven.items()):
            if inst.node_ref is node:
                del self._node_driven[rid]
                self._answer(req, Result(error=NODE_ERROR, error_message=f"node {node.name} failed: {why}",
                                         cold=req.cold, node=node.name, instance=inst.instance_id))
        for inst in list(node.instances.values()):
            self._kill(inst, now, f"node failed: {why}", notify_node=False)
        node.free_mb = node.capacity_mb

    # ------------------------------------------------------------------ functions
    async def function(self, name: str) -> Function:
        fn = self.functions.get(name)
        if fn is not None:
            return fn
        return await self._load_function(name)

    async def _load_function(self, name: str) -> Function:
        if not NAME_RE.match(name):
            raise FunctionNotFound(f"Function not found: {name[:80]!r} is not a valid function name")
        until = self._unknown.get(name)
        if until is not None and until > time.monotonic():
            raise FunctionNotFound(f"Function not found: {name}")
        waiting = self._loading.get(name)
        if waiting is not None:
            return await asyncio.shield(waiting)
        future = asyncio.get_running_loop().create_future()
        self._loading[name] = future
        try:
            meta = await self._registry_get(f"/functions/{name}/versions/latest")
            if meta is None:
                self._unknown[name] = time.monotonic() + NEGATIVE_CACHE_S
                raise FunctionNotFound(f"Function not found: {name}")
            fn = self._upsert_function(name, int(meta["version"]), meta.get("config") or {})
            future.set_result(fn)
            return fn
        except BaseException as error:
            future.set_exception(error if isinstance(error, Exception) else RuntimeError("cancelled"))
            future.exception()  # retrieved: waiters re-raise it, nobody else needs it
            raise
        finally:
            del self._loading[name]

    async def _registry_get(self, path: str) -> Any:
        assert self._http is not None
        try:
            response = await self._http.get(path)
        except httpx.HTTPError as error:
            raise Unavailable(f"the code registry at {self.registry_url} is unreachable: {error}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise Unavailable(f"the code registry answered {response.status_code}: {response.text[:200]}")
        return response.json()

    def _upsert_function(self, name: str, version: int, config: dict[str, Any]) -> Function:
        self._unknown.pop(name, None)
        fn = self.functions.get(name)
        if fn is None:
            fn = self.functions[name] = Function(name, version, config)
            log.info("function %s@%d loaded (%s, %s MB, timeout %s ms, concurrency %s)", name, version,
                     config.get("abi"), config.get("memory_mb"), config.get("timeout_ms"), config.get("concurrency"))
        elif fn.version != version or fn.config != config:
            log.info("function %s: version %d -> %d", name, fn.version, version)
            fn.update(version, config)
            now = self.now_ms()
            for inst in list(fn.idle):
                if inst.version != version:
                    self._kill(inst, now, f"replaced by version {version}")
        return fn

    def _forget_function(self, name: str) -> None:
        fn = self.functions.pop(name, None)
        if fn is None:
            return
        fn.deleted = True
        if fn.prewarm_handle is not None:
            fn.prewarm_handle.cancel()
            fn.prewarm_handle = None
        now = self.now_ms()
        for inst in list(fn.idle):
            self._kill(inst, now, "function deleted")

    async def _refresh_functions(self) -> None:
        listing = await self._registry_get("/functions")
        if listing is None:
            return
        latest = {m["name"]: m for m in listing}
        for name in list(self.functions):
            meta = latest.get(name)
            if meta is None:
                log.info("function %s was deleted from the registry", name)
                self._forget_function(name)
            else:
                self._upsert_function(name, int(meta["latest_version"]), meta.get("config") or {})

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_INTERVAL_S)
            try:
                await self._refresh_functions()
            except Exception as error:  # noqa: BLE001 (retried at the next refresh)
                log.debug("registry refresh failed: %s", error)

    async def deploy(self, name: str, wasm: bytes, config_json: str | None) -> tuple[int, Any]:
        """Upload to the registry (with the router's registry token); returns (status, body)."""
        assert self._http is not None
        files = {"wasm": ("code.wasm", wasm, "application/wasm")}
        data = {"config": config_json} if config_json else None
        try:
            response = await self._http.post(f"/functions/{name}", files=files, data=data, timeout=300.0)
        except httpx.HTTPError as error:
            raise Unavailable(f"the code registry at {self.registry_url} is unreachable: {error}") from None
        body = _json_or_text(response)
        if response.status_code in (200, 201):
            self._upsert_function(name, int(body["version"]), body.get("config") or {})
        return response.status_code, body

    async def delete(self, name: str) -> tuple[int, Any]:
        assert self._http is not None
        try:
            response = await self._http.delete(f"/functions/{name}")
        except httpx.HTTPError as error:
            raise Unavailable(f"the code registry at {self.registry_url} is unreachable: {error}") from None
        if response.status_code == 200:
            self._forget_function(name)
        return response.status_code, _json_or_text(response)

    async def list_registry(self) -> list[dict]:
        listing = await self._registry_get("/functions")
        return listing or []

    # ------------------------------------------------------------------ policy
    async def set_policy(self, spec: str) -> dict[str, Any]:
        # Loading may import user code or read an artifact: off the event loop.
        policy = await asyncio.to_thread(load_live_policy, spec)
        # Swapped between two decisions (decisions never await), so none straddles it.
        self.policy = policy
        self.policy_spec = spec
        for fn in self.functions.values():
            fn.policy_state = None  # the old policy's per-function state means nothing to the new one
        self.metrics.policy_swaps.inc()
        log.info("policy is now %s", spec)
        return self.describe_policy()

    def describe_policy(self) -> dict[str, Any]:
        try:
            described = self.policy.describe()
        except Exception as error:  # noqa: BLE001 (a user's policy)
            described = {"name": getattr(self.policy, "name", "?"), "describe_error": str(error)}
        return {"spec": self.policy_spec, **described}

    def _policy_failed(self, decision: str, error: BaseException | str) -> None:
        self.metrics.policy_errors.labels(decision).inc()
        key = f"{decision}:{type(error).__name__}"
        if key not in self._policy_error_logged:  # once per kind, not per request
            self._policy_error_logged.add(key)
            log.error("policy %s failed in %s (falling back to the base policy for this decision): %s",
                      self.policy_spec, decision, error, exc_info=isinstance(error, BaseException))

    def _route(self, fn: Function, view: RequestView, now: float) -> Any:
        t = time.perf_counter()
        try:
            answer = self.policy.route(now, view, fn)
        except Exception as error:  # noqa: BLE001 (a policy bug must not fail the request)
            self._policy_failed("route", error)
            answer = BASE_POLICY.route(now, view, fn)
        self.metrics.route_seconds.observe(time.perf_counter() - t)
        return answer

    def _on_idle(self, inst: Instance, now: float) -> Any:
        t = time.perf_counter()
        try:
            answer = self.policy.on_idle(now, inst, inst.fn)
        except Exception as error:  # noqa: BLE001 (same)
            self._policy_failed("on_idle", error)
            answer = BASE_POLICY.on_idle(now, inst, inst.fn)
        self.metrics.on_idle_seconds.observe(time.perf_counter() - t)
        return answer

    # ------------------------------------------------------------------ requests
    async def invoke(self, name: str, payload: bytes, metadata: dict[str, str] | None = None,
                     features: dict[str, float] | None = None) -> Result:
        """Run one request; returns its Result or raises a RouterError (not run at all).
        ``features`` are the request's own features for the policy (RequestView.features)."""
        t0 = time.perf_counter()
        fn = self.functions.get(name)
        try:
            if fn is None:
                fn = await self._load_function(name)
            result = await self._invoke(fn, payload, metadata, features)
        except RouterError as error:
            if fn is None:  # one label for every unknown name (no unbounded label values)
                self.metrics.outcome(UNKNOWN_FUNCTION, error.kind)
            else:
                self.metrics.outcome(name, error.kind, fn.metric_children)
            raise
        children = fn.metric_children
        self.metrics.outcome(name, "ok" if result.error == OK else result.error, children)
        children["latency"].observe(time.perf_counter() - t0)
        return result

    async def _invoke(self, fn: Function, payload: bytes, metadata: dict[str, str] | None,
                      features: dict[str, float] | None = None) -> Result:
        if not fn.metric_children:
            self.metrics.children(fn)
        if len(payload) > fn.max_payload_bytes:
            raise PayloadTooLarge(f"Request must be smaller than {fn.max_payload_bytes} bytes for function "
                                  f"{fn.name} (got {len(payload)} bytes)", fn.max_payload_bytes)
        now = self.now_ms()
        fn.stats.record_arrival(now)
        if fn.prewarm_handle is not None:
            fn.prewarm_handle.cancel()  # the arrival came first
            fn.prewarm_handle = None
        self._seq += 1
        req = Pending(RequestView(self._seq, fn.name, now, len(payload), features), payload, metadata or {})
        inst = self._place(fn, req, now)
        if inst is not None:
            result = await self._execute(inst, req)
            if result is not None:
                return result
        return await self._wait(fn, req)

    async def _wait(self, fn: Function, req: Pending) -> Result:
        """Wait for a request that is queued, cold-starting or re-placed."""
        assert req.future is not None
        deadline = SPAWN_TIMEOUT_S + 2 * fn.timeout_ms / 1000.0 + 2 * RPC_MARGIN_S
        try:
            return await asyncio.wait_for(req.future, deadline)
        except TimeoutError:
            req.done = True
            owner = getattr(req, "owner", None)
            if owner is not None and req in owner.queue:
                owner.queue.remove(req)
            raise WaitTimeout(f"{fn.name}: no instance could run the request within {deadline:.0f} s") from None

    def _place(self, fn: Function, req: Pending, now: float) -> Instance | None:
        """Ask the policy where ``req`` goes. Returns the instance to run it on now, or None when
        it was queued or a spawn was started for it; raises Throttled / NoCapacity."""
        answer = self._route(fn, req.view, now)
        kind = type(answer)
        if kind is Assign or isinstance(answer, Assign):
            inst = answer.instance
            if getattr(inst, "fn", None) is not fn or inst.state is DEAD:
                self._policy_failed("route", f"Assign to {inst!r}, which is not a live instance of {fn.name}")
                answer = BASE_POLICY.route(now, req.view, fn)
                if type(answer) is Assign:
                    inst = answer.instance
                else:
                    return self._spawn_for(fn, req, None, now)
            if inst.state is IDLE:
                self._start(inst, req, now)
                return inst
            self._enqueue(inst, req)
            return None
        if kind is Spawn or isinstance(answer, Spawn):
            return self._spawn_for(fn, req, answer.node, now)
        if kind is Reject or isinstance(answer, Reject):
            raise Throttled(f"Rate exceeded: the policy rejected a request for {fn.name}",
                            answer.retry_after_ms, "policy")
        self._policy_failed("route", f"route must return Assign, Spawn or Reject, got {answer!r}")
        fallback = BASE_POLICY.route(now, req.view, fn)
        if type(fallback) is Assign:
            self._start(fallback.instance, req, now)
            return fallback.instance
        return self._spawn_for(fn, req, None, now)

    def _enqueue(self, inst: Instance, req: Pending) -> None:
        if req.future is None:
            req.future = asyncio.get_running_loop().create_future()
        if inst.state is STARTING:
            req.cold = True
        req.owner = inst
        inst.queue.append(req)

    def _start(self, inst: Instance, req: Pending, now: float) -> None:
        """``inst`` (idle or just started) begins executing ``req``."""
        if inst.state is IDLE:
            idle = inst.fn.idle
            if idle and idle[-1] is inst:
                idle.pop()
            else:
                idle.remove(inst)
            self._keepalive_due.pop(inst, None)
        inst.state = BUSY
        inst.active = 1
        inst.exec_started_ms = now
        inst.keepalive_until_ms = None
        req.started_ms = now

    async def _execute(self, inst: Instance, req: Pending) -> Result | None:
        """Run ``req`` on ``inst`` (already marked busy) and do the bookkeeping after it. Returns
        the result (also given to ``req.future`` when someone waits on it), or None when the
        request did not run and was placed again (its answer then comes through the future)."""
        fn = inst.fn
        node = inst.node_ref
        message = pb.DoRequest(instance_id=inst.instance_id, invoke=pb.Invoke(
            request_id=f"{self.boot}-{req.view.id}", payload=req.payload, metadata=req.metadata))
        self.metrics.rpc_invoke.inc()
        try:
            reply = await node.calls.do(message, fn.timeout_ms / 1000.0 + RPC_MARGIN_S, len(req.payload))
        except grpc.aio.AioRpcError as error:
            result = self._execute_failed(inst, req, error)
        except asyncio.CancelledError:
            # The router is shutting down (callers are not cancelled on disconnect).
            self._answer(req, Result(error=NODE_ERROR, error_message="the router is shutting down"))
            raise
        else:
            result = self._finished(inst, req, reply.invoke)
        if result is not None:
            self._answer(req, result)
        return result

    def _finished(self, inst: Instance, req: Pending, r: pb.InvokeResult, from_node: bool = False) -> Result:
        now = self.now_ms()
        fn: Function = inst.fn
        node = inst.node_ref
        error = ERROR_NAMES.get(r.error, "internal")
        exec_ms = r.exec_ms
        payload_bytes = req.view.payload_bytes
        started = req.started_ms if req.started_ms is not None else now
        # The duration policies learn (and the trace records) is how long the instance was busy
        # as the router sees it: the node's execution time plus the call's overhead. That is
        # what a request queued behind it waits for, and what the simulator's instances take
        # when the recorded traffic is replayed. The function's own time is X-WL-Duration-Ms.
        busy_ms = max(now - started, exec_ms)
        fn.stats.record_completion(now, busy_ms, payload_bytes)
        inst.invocations += 1
        wait_ms = started - req.view.arrival_ms
        children = fn.metric_children
        children["duration"].observe(exec_ms / 1000.0)
        children["wait"].observe(wait_ms / 1000.0)
        self.trace.record(fn.app, fn.name, req.view.arrival_ms, busy_ms, inst.memory_mb, payload_bytes,
                          req.view.features)
        if r.logs or error != OK:
            fn.logs.append({"time": time.time(), "request_id": r.request_id, "instance": inst.instance_id,
                            "error": error, "message": r.error_message,
                            "logs": r.logs.decode("utf-8", "replace")})
        result = Result(r.output, error, r.error_message, r.logs, exec_ms, wait_ms, req.cold, inst.version,
                        inst.instance_id, node.name)
        if inst.state is BUSY:
            inst.active = 0
            inst.exec_started_ms = None
            if error == TIMEOUT:
                self._kill(inst, now, "timed out: recycled", notify_node=not from_node)
                result.extra["directive"] = "kill"
            elif inst.version != fn.version or fn.deleted:
                self._kill(inst, now, "outdated version", notify_node=not from_node)
                result.extra["directive"] = "kill"
            else:
                self._become_idle(inst, now)
                result.extra["directive"] = self._apply_idle(inst, self._on_idle(inst, now), now, from_node)
        return result

    def _execute_failed(self, inst: Instance, req: Pending, error: grpc.aio.AioRpcError) -> Result | None:
        code = error.code()
        node = inst.node_ref
        fn: Function = inst.fn
        now = self.now_ms()
        details = error.details() or code.name
        if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION) and inst.state is not DEAD:
            # The node no longer has the instance (restarted, or freed it) or disagrees about its
            # state: the request did not run there. Drop the instance, place the request again.
            inst.active = 0
            self._kill(inst, now, f"node disowned it: {details}",
                       notify_node=code is grpc.StatusCode.FAILED_PRECONDITION)
            req.started_ms = None
            self._replace(fn, req, now, f"instance lost on node {node.name}: {details}")
            return None
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            if inst.state is not DEAD:
                inst.active = 0
                self._kill(inst, now, "no answer within the timeout: recycled")
            return Result(error=TIMEOUT, error_message=f"Task timed out after {fn.timeout_ms / 1000.0:.2f} seconds "
                          f"(node {node.name} did not answer in time)", cold=req.cold, version=inst.version,
                          instance=inst.instance_id, node=node.name)
        if code is grpc.StatusCode.INVALID_ARGUMENT and inst.state is BUSY:
            # The node refused the request itself (e.g. over a limit): the instance is fine.
            inst.active = 0
            inst.exec_started_ms = None
            self._become_idle(inst, now)
            self._apply_idle(inst, self._on_idle(inst, now), now)
            return Result(error="invalid_request", error_message=details, cold=req.cold, version=inst.version,
                          instance=inst.instance_id, node=node.name)
        # UNAVAILABLE (node died), CANCELLED, INTERNAL...: the request's fate is unknown.
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            self._node_failed(node, f"{code.name} during a request: {details}")
        elif inst.state is not DEAD:
            inst.active = 0
            self._kill(inst, now, f"{code.name}: {details}")
        return Result(error=NODE_ERROR, error_message=f"node {node.name} failed during the request: "
                      f"{code.name}: {details}", cold=req.cold, version=inst.version, instance=inst.instance_id,
                      node=node.name)

    def _answer(self, req: Pending, result: Result) -> None:
        req.done = True
        future = req.future
        if future is not None and not future.done():
            future.set_result(result)

    def _fail(self, req: Pending, error: RouterError) -> None:
        req.done = True
        future = req.future
        if future is not None and not future.done():
            future.set_exception(error)

    def _replace(self, fn: Function, req: Pending, now: float, why: str) -> None:
        """Place a request that did not run (its instance died or never started) again."""
        if req.done:
            return
        if req.future is None:
            req.future = asyncio.get_running_loop().create_future()
        req.attempts += 1
        req.owner = None
        if req.attempts >= MAX_ATTEMPTS:
            self._answer(req, Result(error=NODE_ERROR, error_message=f"{fn.name}: the request could not be placed "
                                     f"after {req.attempts} attempts; last: {why}", cold=req.cold))
            return
        if fn.deleted:
            self._fail(req, FunctionNotFound(f"Function not found: {fn.name} (deleted)"))
            return
        try:
            inst = self._place(fn, req, now)
        except RouterError as error:
            self._fail(req, error)
            return
        if inst is not None:
            self._bg(self._execute(inst, req))

    # ------------------------------------------------------------------ idle decisions
    def _become_idle(self, inst: Instance, now: float) -> None:
        inst.state = IDLE
        inst.idle_since_ms = now
        inst.keepalive_until_ms = None
        inst.fn.idle.append(inst)

    def _apply_idle(self, inst: Instance, answer: Any, now: float, from_node: bool = False) -> Any:
        """Carry out an on_idle answer for an IDLE instance. With ``from_node`` (the node asked
        through Scheduler.OnIdle) returns the IdleDirective to send back instead of acting."""
        kind = type(answer)
        if kind is KeepAlive or isinstance(answer, KeepAlive):
            inst.keepalive_until_ms = now + answer.ms
            if inst.queue:
                self._requeue(inst, now)
            if from_node:
                return pb.IdleDirective(keep_alive=pb.KeepAlive(ms=_ms(answer.ms)))
            self._keepalive_due[inst] = now
            return None
        if kind is Invoke or isinstance(answer, Invoke):
            while inst.queue and inst.queue[0].done:
                inst.queue.popleft()  # its caller gave up waiting
            if inst.queue:
                req = inst.queue.popleft()
                self._start(inst, req, now)
                if from_node:
                    request_id = f"{self.boot}-{req.view.id}"
                    self._node_driven[request_id] = (inst, req)
                    return pb.IdleDirective(invoke=pb.Invoke(request_id=request_id, payload=req.payload,
                                                             metadata=req.metadata))
                self._bg(self._execute(inst, req))
                return None
            self._policy_failed("on_idle", f"INVOKE for {inst!r} with nothing queued")
            answer = KILL
        if not (kind is Kill or isinstance(answer, Kill)):
            self._policy_failed("on_idle", f"on_idle must return Invoke, KeepAlive or Kill, got {answer!r}")
        self._kill(inst, now, "policy", notify_node=not from_node)
        return pb.IdleDirective(kill=pb.Kill()) if from_node else None

    def _requeue(self, inst: Instance, now: float) -> None:
        """Requests queued on an instance that will not run them go back through route."""
        waiting = [r for r in inst.queue if not r.done and not r.riding]  # a riding one: see _spawn
        inst.queue.clear()
        for req in waiting:
            req.attempts -= 1  # not a failure: do not count against MAX_ATTEMPTS
            self._replace(inst.fn, req, now, "re-routed")

    def _kill(self, inst: Instance, now: float, reason: str, notify_node: bool = True) -> asyncio.Task | None:
        """Remove an instance from the table; tells the node unless it is the one asking."""
        if inst.state is DEAD:
            return None
        fn: Function = inst.fn
        node = inst.node_ref
        if inst.state is IDLE:
            idle = fn.idle
            if idle and idle[-1] is inst:
                idle.pop()
            elif inst in idle:
                idle.remove(inst)
        self._keepalive_due.pop(inst, None)
        inst.state = DEAD
        fn.instances.pop(inst.id, None)
        if node.instances.pop(inst.id, None) is not None:
            node.free_mb += inst.memory_mb
        self._by_iid.pop(inst.instance_id, None)
        log.debug("instance %s of %s on %s killed: %s", inst.instance_id, fn.name, node.name, reason)
        task = self._bg(self._send_kill(node, inst.instance_id)) if notify_node and node.alive else None
        if inst.queue:
            self._requeue(inst, now)
        elif not fn.instances and not fn.deleted:
            self._maybe_prewarm(fn, now)
        return task

    async def _send_kill(self, node: NodeRef, instance_id: str) -> None:
        self.metrics.rpc_kill.inc()
        try:
            await node.calls.do(pb.DoRequest(instance_id=instance_id, kill=pb.Kill()), timeout=CONTROL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.UNAVAILABLE:
                self._node_failed(node, f"kill failed: {error.details()}")

    async def _keepalive_loop(self) -> None:
        """Send the deferred KeepAlive(ms) of instances that stayed idle KEEPALIVE_DEFER_MS."""
        while True:
            await asyncio.sleep(KEEPALIVE_DEFER_MS / 1000.0)
            if not self._keepalive_due:
                continue
            now = self.now_ms()
            due = [inst for inst, since in self._keepalive_due.items() if now - since >= KEEPALIVE_DEFER_MS]
            for inst in due:
                del self._keepalive_due[inst]
                until = inst.keepalive_until_ms
                if inst.state is not IDLE or until is None:
                    continue
                if until - now < 1.0:
                    # Already ran out (a keep-alive shorter than the deferral): ask again here.
                    self._apply_idle(inst, self._on_idle(inst, now), now)
                else:
                    self._bg(self._send_keepalive(inst, until - now))

    async def _send_keepalive(self, inst: Instance, ms: float) -> None:
        node = inst.node_ref
        self.metrics.rpc_keep_alive.inc()
        try:
            await node.calls.do(pb.DoRequest(instance_id=inst.instance_id, keep_alive=pb.KeepAlive(ms=_ms(ms))),
                                timeout=CONTROL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code is grpc.StatusCode.UNAVAILABLE:
                self._node_failed(node, f"keep-alive failed: {error.details()}")
            elif code is grpc.StatusCode.NOT_FOUND and inst.state is IDLE:
                self._kill(inst, self.now_ms(), f"node no longer has it: {error.details()}", notify_node=False)
            # FAILED_PRECONDITION: it became busy meanwhile; the keep-alive no longer applies.

    def on_node_idle(self, event: pb.IdleEvent) -> pb.IdleDirective:
        """Scheduler.OnIdle: a node's instance ran out of keep-alive (or finished a request the
        router handed it in a directive); answer what it does next."""
        now = self.now_ms()
        if event.reason == FINISHED and event.HasField("result"):
            entry = self._node_driven.pop(event.result.request_id, None)
            if entry is not None:
                inst, req = entry
                result = self._finished(inst, req, event.result, from_node=True)
                self._answer(req, result)
                directive = result.extra.get("directive")
                return directive if isinstance(directive, pb.IdleDirective) else pb.IdleDirective(kill=pb.Kill())
        inst = self._by_iid.get(event.instance_id)
        if inst is None or inst.state is DEAD:
            return pb.IdleDirective(kill=pb.Kill())
        if inst.state is not IDLE:
            # A Do(Invoke) is on its way to it: this answer will be stale there; keep it harmless.
            return pb.IdleDirective(keep_alive=pb.KeepAlive(ms=BUSY_KEEPALIVE_MS))
        self._keepalive_due.pop(inst, None)
        until = inst.keepalive_until_ms
        if until is not None and until - now >= 1.0:
            return pb.IdleDirective(keep_alive=pb.KeepAlive(ms=_ms(until - now)))
        return self._apply_idle(inst, self._on_idle(inst, now), now, from_node=True)

    # ------------------------------------------------------------------ spawning
    def _spawn_for(self, fn: Function, req: Pending | None, node_name: str | None, now: float) -> None:
        """Start a new instance of ``fn`` for ``req`` (None: a pre-warm). Raises Throttled when
        the function is at its concurrency limit or no node has room, NoCapacity with no node."""
        if fn.max_instances is not None and fn.live_count >= fn.max_instances:
            retry = max(100.0, fn.stats.predict_duration(req.view.payload_bytes if req else 0))
            raise Throttled(f"Rate exceeded: {fn.name} is at its concurrency limit ({fn.max_instances})",
                            retry, "concurrency")
        node, kills = self._choose_node(fn, node_name, now, evict=req is not None)
        self._ids += 1
        inst = Instance(self._ids, fn, node, f"{fn.name}-{self.boot}-{self._ids}", now)
        fn.instances[inst.id] = inst
        node.instances[inst.id] = inst
        node.free_mb -= inst.memory_mb
        self._by_iid[inst.instance_id] = inst
        if req is not None:
            self._enqueue(inst, req)
        self._bg(self._spawn(inst, kills))

    def _choose_node(self, fn: Function, node_name: str | None, now: float,
                     evict: bool = True) -> tuple[NodeRef, list[asyncio.Task]]:
        alive = [n for n in self.nodes if n.alive]
        if not alive:
            raise NoCapacity("no handler node is reachable"
                             + (f" ({self.nodes[0].last_error})" if self.nodes else " (none configured)"))
        node = None
        if node_name:
            node = next((n for n in alive if node_name in (n.name, n.address)), None)
            if node is None:
                self._policy_failed("route", f"Spawn on node {node_name!r}, which is not a live node")
        if node is None:
            node = alive[0]
            for n in alive[1:]:
                if n.free_mb > node.free_mb:
                    node = n
        need = fn.memory_mb
        if node.free_mb >= need:
            return node, []
        candidates = [i for i in node.instances.values() if i.state is IDLE]
        short = need - node.free_mb
        if evict and candidates and sum(c.memory_mb for c in candidates) >= short:
            t = time.perf_counter()
            try:
                chosen = list(self.policy.evict(now, short, candidates))
            except Exception as error:  # noqa: BLE001 (a policy bug must not fail the spawn)
                self._policy_failed("evict", error)
                chosen = BASE_POLICY.evict(now, short, candidates)
            self.metrics.decision.labels("evict").observe(time.perf_counter() - t)
            ids = {c.id for c in candidates}
            if len({getattr(c, "id", None) for c in chosen}) != len(chosen) or any(
                    getattr(c, "id", None) not in ids for c in chosen):
                self._policy_failed("evict", "evict returned instances that are not idle candidates")
                chosen = BASE_POLICY.evict(now, short, candidates)
            if sum(c.memory_mb for c in chosen) >= short:
                kills = [self._kill(c, now, "evicted") for c in chosen]
                return node, [k for k in kills if k is not None]
        raise Throttled(f"Rate exceeded: no node has {need:g} MB free for {fn.name} "
                        f"(most free: {node.free_mb:g} MB on {node.name})", 1000.0, "capacity")

    async def _spawn(self, inst: Instance, kills: list[asyncio.Task]) -> None:
        """Start ``inst`` on its node. The request it was spawned for rides along in the Spawn
        call (SpawnRequest.invoke): a cold start costs one round trip to the node, not two."""
        fn: Function = inst.fn
        node = inst.node_ref
        if kills:
            await asyncio.gather(*kills, return_exceptions=True)  # their memory must be free on the node
        queue = inst.queue
        while queue and queue[0].done:
            queue.popleft()  # its caller gave up waiting
        first = queue[0] if queue else None
        message = pb.SpawnRequest(function=fn.name, version=str(inst.version), instance_id=inst.instance_id)
        timeout = SPAWN_TIMEOUT_S
        if first is not None:
            first.riding = True
            message.invoke.CopyFrom(pb.Invoke(request_id=f"{self.boot}-{first.view.id}", payload=first.payload,
                                              metadata=first.metadata))
            timeout += fn.timeout_ms / 1000.0 + RPC_MARGIN_S
            self.metrics.rpc_invoke.inc()
        t = time.perf_counter()
        self.metrics.rpc_spawn.inc()
        try:
            reply = await node.stub.Spawn(message, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            if first is not None:
                _unqueue(inst, first)
                if _never_ran(error):
                    queue.appendleft(first)  # nothing ran: it waits like the others
                else:  # the node failed while the request may have been running on it
                    self._answer(first, Result(
                        error=NODE_ERROR, error_message=f"node {node.name} failed during the request: "
                        f"{error.code().name}: {error.details()}", cold=True, version=inst.version,
                        instance=inst.instance_id, node=node.name))
            self._spawn_failed(inst, error)
            return
        now = self.now_ms()
        ran = first is not None and reply.HasField("invoke")
        exec_ms = reply.invoke.exec_ms if ran else 0.0
        if first is not None:
            _unqueue(inst, first)
        if inst.state is DEAD:  # its node failed or the function went away meanwhile
            if node.alive:
                self._bg(self._send_kill(node, inst.instance_id))
            if ran:
                self._answer(first, Result(reply.invoke.output, ERROR_NAMES.get(reply.invoke.error, "internal"),
                                           reply.invoke.error_message, reply.invoke.logs, exec_ms, 0.0, True,
                                           inst.version, inst.instance_id, node.name))
            elif first is not None and not first.done:
                self._replace(fn, first, now, "its new instance is gone")
            return
        cold_ms = max((time.perf_counter() - t) * 1000.0 - exec_ms, 0.0)  # the spawn part of the call
        ready = now - exec_ms
        inst.ready_ms = ready
        inst.cold_start_ms = cold_ms
        inst.spawn_reply = reply
        fn.stats.record_cold_start(cold_ms)
        children = fn.metric_children or self.metrics.children(fn)
        children["cold"].inc()
        children["cold_seconds"].observe(cold_ms / 1000.0)
        if ran:
            self._start(inst, first, ready)
            self._answer(first, self._finished(inst, first, reply.invoke))
            return
        if first is not None:  # the instance is up but refused the request (e.g. over a limit)
            log.warning("%s: the request sent with the spawn did not run: %s %s", inst.instance_id,
                        reply.invoke_error_code, reply.invoke_error_message)
            queue.appendleft(first)
        while queue and queue[0].done:
            queue.popleft()
        if queue:
            req = queue.popleft()
            self._start(inst, req, now)
            await self._execute(inst, req)
        else:
            self._become_idle(inst, now)
            self._apply_idle(inst, self._on_idle(inst, now), now)

    def _spawn_failed(self, inst: Instance, error: grpc.aio.AioRpcError) -> None:
        fn: Function = inst.fn
        node = inst.node_ref
        code = error.code()
        details = error.details() or code.name
        self.metrics.spawn_failures.labels(fn.name).inc()
        if inst.state is DEAD:
            return  # already handled (node failure); its queue was placed again
        now = self.now_ms()
        why = f"spawn of {fn.name}@{inst.version} on node {node.name} failed: {code.name}: {details}"
        log.warning("%s", why)
        waiting = [r for r in inst.queue if not r.done]
        inst.queue.clear()
        if code is grpc.StatusCode.UNAVAILABLE:
            self._kill(inst, now, why, notify_node=False)
            self._node_failed(node, why)
        elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            self._kill(inst, now, why, notify_node=False)
            node.alive = False  # re-admitted by the health loop with its real free memory
        else:
            self._kill(inst, now, why, notify_node=code is grpc.StatusCode.DEADLINE_EXCEEDED)
            if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
                        grpc.StatusCode.INVALID_ARGUMENT):
                # The function itself cannot start: placing it elsewhere would fail the same way.
                for req in waiting:
                    self._answer(req, Result(error="init_error", error_message=why, cold=True,
                                             version=inst.version, node=node.name))
                return
        for req in waiting:
            self._replace(fn, req, now, why)

    def _maybe_prewarm(self, fn: Function, now: float) -> None:
        t = time.perf_counter()
        try:
            delay = self.policy.prewarm(now, fn)
        except Exception as error:  # noqa: BLE001 (a policy bug must not stop the kill)
            self._policy_failed("prewarm", error)
            delay = None
        self.metrics.decision.labels("prewarm").observe(time.perf_counter() - t)
        if delay is None:
            return
        if not (isinstance(delay, (int, float)) and delay >= 0 and math.isfinite(delay)):
            self._policy_failed("prewarm", f"prewarm must return None or a delay >= 0 ms, got {delay!r}")
            return
        if fn.prewarm_handle is not None:
            fn.prewarm_handle.cancel()
        fn.prewarm_handle = asyncio.get_running_loop().call_later(delay / 1000.0, self._prewarm, fn)

    def _prewarm(self, fn: Function) -> None:
        fn.prewarm_handle = None
        if fn.instances or fn.deleted:
            return
        try:
            self._spawn_for(fn, None, None, self.now_ms())
        except RouterError as error:
            log.info("pre-warm of %s skipped: %s", fn.name, error.message)

    # ------------------------------------------------------------------ introspection
    def _instance_states(self) -> Iterable[tuple[str, str, str]]:
        for node in self.nodes:
            for inst in node.instances.values():
                yield inst.fn.name, node.name, inst.state

    def _node_states(self) -> Iterable[tuple[str, bool, float, float]]:
        for node in self.nodes:
            yield node.name, node.alive, node.capacity_mb, node.free_mb

    def snapshot(self) -> dict[str, Any]:
        now = self.now_ms()
        return {
            "policy": self.describe_policy(),
            "nodes": [{"name": n.name, "address": n.address, "alive": n.alive, "capacity_mb": n.capacity_mb,
                       "free_mb": n.free_mb, "instances": len(n.instances), "last_error": n.last_error}
                      for n in self.nodes],
            "functions": {name: self.function_summary(fn, now) for name, fn in self.functions.items()},
            "trace_rows": len(self.trace),
        }

    def function_summary(self, fn: Function, now: float | None = None) -> dict[str, Any]:
        now = self.now_ms() if now is None else now
        s = fn.stats
        return {
            "version": fn.version, "abi": fn.abi, "memory_mb": fn.memory_mb, "timeout_ms": fn.timeout_ms,
            "concurrency": fn.max_instances, "arrivals": s.arrivals, "completions": s.completions,
            "cold_starts": s.cold_starts, "cold_start_ms_ewma": round(s.cold_start_ms, 3),
            "predicted_duration_ms": round(s.predict_duration(), 3),
            "instances": [{"id": i.instance_id, "node": i.node, "state": i.state, "queue": len(i.queue),
                           "invocations": i.invocations, "idle_ms": round(i.idle_ms(now), 1),
                           "keepalive_left_ms": None if i.keepalive_until_ms is None
                           else round(max(0.0, i.keepalive_until_ms - now), 1)}
                          for i in fn.instances.values()],
        }


def _unqueue(inst: Instance, req: Pending) -> None:
    """Take a request that rode along in its instance's Spawn out of that instance's queue."""
    req.riding = False
    try:
        inst.queue.remove(req)
    except ValueError:
        pass  # the queue was cleared meanwhile (the instance died)


def _never_ran(error: grpc.aio.AioRpcError) -> bool:
    """A Spawn failure after which the request sent along with it surely did not run: the node
    refused the spawn, or the call never reached the node (no connection)."""
    code = error.code()
    if code in SPAWN_REFUSED:
        return True
    return code is grpc.StatusCode.UNAVAILABLE and "failed to connect" in (error.details() or "").lower()


def _ms(ms: float) -> int:
    """A keep-alive length for the wire (uint32 ms, at least 1)."""
    return int(min(UINT32_MAX, max(1, math.ceil(ms))))


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"detail": response.text[:500]}


__all__ = ["InstanceView", "NodeRef", "Router", "load_live_policy"]
