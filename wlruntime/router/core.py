"""The router: the platform model (``wlmodel``, the state machine the simulator drives too)
driven live, with real nodes behind it.

It is put together from one piece per concern:

- ``dispatch.Dispatch``: the model plus its live effects (executions, spawns carrying their
  request, kills, keep-alive timers, rejections), answers checked in fallback mode;
- ``nodes.NodePool``: node health, admission, failure, ``add_node`` / ``remove_node``
  (placement is the model's rule: the live node with the most free memory);
- ``catalog.FunctionCatalog``: the registry lookup, negative cache and refresh;
- ``keepalive.KeepAliveTimers``: the one owner of keep-alive timing;
- the HTTP app (``server.py``, ``http/``) calls ``invoke``, ``on_node_idle`` and the admin
  methods here.

What a request goes through (``policies.interface`` documents the decision points; the
rules are the model's, ``wlmodel.platform``): ``fn.stats.record_arrival``, then
``policy.route``: ``Assign`` runs it on the instance now when it has a free slot, else queues
it there (also on a STARTING one); ``SPAWN`` places a new instance (``policy.evict`` makes
room) and the request rides in its ``Node.Spawn`` call (it is *cold*: an instance was spawned
for it); ``Reject`` is a 429 with Retry-After. When an execution ends, ``policy.on_idle``:
INVOKE the next queued request, KeepAlive(ms) (timed here; the node holds a lease) or Kill.
``policy.prewarm`` when a kill leaves a function with no instance.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from policies.interface import DEAD, IDLE, InstanceView, Policy, RequestView
from policies.registry import PolicySpecError, load_policy
from wlruntime.proto import node_pb2 as pb
from wlruntime.router.catalog import FunctionCatalog
from wlruntime.router.clock import Clock, RealClock
from wlruntime.router.deadline import with_deadline
from wlruntime.router.dispatch import BUSY_KEEPALIVE_MS, RPC_MARGIN_S, SPAWN_TIMEOUT_S, Dispatch, wire_ms
from wlruntime.router.metrics import RouterMetrics
from wlruntime.router.nodes import CHANNEL_OPTIONS, NodePool, NodeRef
from wlruntime.router.state import (
    OK,
    Function,
    PayloadTooLarge,
    Pending,
    Result,
    RouterError,
    WaitTimeout,
)
from wlruntime.router.trace import TraceRecorder

log = logging.getLogger("wlruntime.router")

FINISHED = pb.IdleReason.Value("FINISHED")
UNKNOWN_FUNCTION = "(unknown)"  # metrics label for requests naming no deployed function
_ms = wire_ms                   # the old name (tests)

__all__ = ["CHANNEL_OPTIONS", "UNKNOWN_FUNCTION", "InstanceView", "NodeRef", "Router", "load_live_policy"]


def load_live_policy(spec: str) -> Policy:
    """``load_policy`` plus the live router's own rules: no offline (future-knowing) policies;
    a user's policy decides within a time budget, off the event loop (deadline.py). The one
    place the router turns a spec into a Policy."""
    policy = load_policy(spec)
    if getattr(policy, "needs_future", False):
        raise PolicySpecError(f"policy {policy.name!r} needs the whole future trace (an offline lower bound "
                              "for the simulator); the live router cannot run it")
    return with_deadline(policy, spec)


class Router:
    def __init__(self, *, registry_url: str, nodes: Iterable[str], policy: str | Policy = "default",
                 registry_token: str | None = None, trace_max_rows: int = 1_000_000,
                 clock: Clock | None = None, node_factory: Callable[[str], NodeRef] = NodeRef) -> None:
        if isinstance(policy, str):
            self.policy_spec = policy
            policy_obj = load_live_policy(policy)
        else:
            self.policy_spec = getattr(policy, "name", type(policy).__name__)
            policy_obj = policy
        self.clock: Clock = clock if clock is not None else RealClock()
        self.trace = TraceRecorder(trace_max_rows)
        self.metrics = RouterMetrics(self._instance_states, self._node_states)
        self.boot = secrets.token_hex(3)
        self._tasks: set[asyncio.Task] = set()
        self._background: list[asyncio.Task] = []
        self._seq = 0
        self.dispatch = Dispatch(policy_obj, clock=self.clock, metrics=self.metrics, trace=self.trace,
                                 boot=self.boot, background=self._bg, node_failed=self._node_failed)
        self.pool = NodePool(self.dispatch, node_factory)
        self.catalog = FunctionCatalog(registry_url, registry_token, self._function_updated, self._function_deleted)
        self._node_addresses = list(dict.fromkeys(nodes))
        self.started = False

    # ------------------------------------------------------------------ parts, as attributes
    @property
    def policy(self) -> Policy:
        return self.dispatch.policy

    @property
    def nodes(self) -> list[NodeRef]:
        return self.pool.nodes

    @property
    def functions(self) -> dict[str, Function]:
        return self.catalog.functions

    @property
    def registry_url(self) -> str:
        return self.catalog.registry_url

    @property
    def registry_token(self) -> str | None:
        return self.catalog.registry_token

    # ------------------------------------------------------------------ lifecycle
    async def start(self, background: bool = True) -> None:
        """Contact the nodes and the registry; with ``background``, start the health and
        refresh loops (tests on a virtual clock leave them out)."""
        for address in self._node_addresses:
            self.dispatch.add_node(self.pool.node_factory(address))
        await asyncio.gather(*(self.pool.check(n) for n in self.nodes))
        if background:
            await self.catalog.start()
            loop = asyncio.get_running_loop()
            self._background = [loop.create_task(self.pool.health_loop(), name="router-health"),
                                loop.create_task(self.catalog.refresh_loop(), name="router-refresh")]
        self.started = True

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.pool.close()
        await self.catalog.close()

    def now_ms(self) -> float:
        return self.clock.now_ms()

    def _bg(self, coro: Any) -> asyncio.Task:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ nodes
    async def add_node(self, address: str) -> NodeRef:
        return await self.pool.add(address)

    async def remove_node(self, address: str) -> NodeRef | None:
        """Take the node at ``address`` (or named so) out of the pool; None if unknown."""
        return await self.pool.remove(address)

    def _node_failed(self, node: Any, why: str) -> None:
        self.pool.failed(node, why)

    # ------------------------------------------------------------------ functions
    async def function(self, name: str) -> Function:
        return await self.catalog.get(name)

    def _function_updated(self, fn: Function) -> None:
        now = self.now_ms()
        for inst in list(fn.idle):
            if inst.version != fn.version:
                self.dispatch.kill(inst, now)

    def _function_deleted(self, fn: Function) -> None:
        self.dispatch.emit_cancel_prewarm(fn)
        now = self.now_ms()
        for inst in list(fn.idle):
            self.dispatch.kill(inst, now)

    async def deploy(self, name: str, wasm: bytes, config_json: str | None) -> tuple[int, Any]:
        return await self.catalog.deploy(name, wasm, config_json)

    async def delete(self, name: str) -> tuple[int, Any]:
        return await self.catalog.delete(name)

    async def list_registry(self) -> list[dict]:
        return await self.catalog.list_registry()

    # ------------------------------------------------------------------ policy
    async def set_policy(self, spec: str) -> dict[str, Any]:
        # Loading may import user code or read an artifact: off the event loop.
        policy = await asyncio.to_thread(load_live_policy, spec)
        # Swapped between two decisions (decisions never await), so none straddles it.
        self.dispatch.policy = policy
        self.policy_spec = spec
        for fn in self.functions.values():
            fn.policy_state = None  # the old policy's per-function state means nothing to the new one
        self.metrics.policy_swaps.inc()
        log.info("policy is now %s", spec)
        return self.describe_policy()

    def reset_statistics(self) -> None:
        """Start every function's statistics afresh (arrivals, cold-start and duration estimates),
        as a simulation starts: e.g. after a warm-up load whose traffic the policy should not
        read (``PUT /admin/policy`` with ``fresh_statistics``; ``wl fidelity`` does so)."""
        from policies.features import FunctionStats

        for fn in [*self.functions.values(), *self.catalog.pinned.values()]:
            fn.stats = FunctionStats()

    def describe_policy(self) -> dict[str, Any]:
        try:
            described = self.policy.describe()
        except Exception as error:  # noqa: BLE001 (a user's policy)
            described = {"name": getattr(self.policy, "name", "?"), "describe_error": str(error)}
        return {"spec": self.policy_spec, **described}

    # ------------------------------------------------------------------ requests
    async def invoke(self, name: str, payload: bytes, metadata: dict[str, str] | None = None,
                     features: dict[str, float] | None = None, version: int | None = None) -> Result:
        """Run one request; returns its Result or raises a RouterError (not run at all).
        ``features`` are the request's own features for the policy (RequestView.features);
        ``version``: a published version to run (a Lambda qualifier; default the latest)."""
        t0 = time.perf_counter()
        fn = self.catalog.functions.get(name) if version is None else None
        try:
            if version is not None:
                fn = await self.catalog.get_version(name, version)
            elif fn is None:
                fn = await self.catalog.get(name)
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
        now = self.clock.now_ms()
        req = Pending(RequestView(self._seq, fn.name, now, len(payload), features), payload, metadata or {})
        self._seq += 1
        inst = self.dispatch.admit(fn, req, now)
        if inst is not None:
            result = await self.dispatch.execute(inst, req)
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
            owner = req.owner
            if owner is not None and req in owner.queue:
                owner.queue.remove(req)
            raise WaitTimeout(f"{fn.name}: no instance could run the request within {deadline:.0f} s") from None

    # ------------------------------------------------------------------ a node asks
    def on_node_idle(self, event: pb.IdleEvent) -> pb.IdleDirective:
        """Scheduler.OnIdle: a node's instance finished a request the router handed it in a
        directive, or its lease ran out without word from the router; answer what it does next.
        The router owns keep-alive timing, so the answer comes from its own record."""
        d = self.dispatch
        if event.reason == FINISHED and event.HasField("result"):
            entry = d.node_driven.pop(event.result.request_id, None)
            if entry is not None:
                inst, req = entry
                with d.answering(inst):
                    result = d.complete(inst, req, event.result)
                d._answer(req, result)
                return d.directive(inst)
        inst = d.by_iid.get(event.instance_id)
        if inst is None or inst.state is DEAD:
            return pb.IdleDirective(kill=pb.Kill())
        if inst.state is not IDLE:
            # A Do(Invoke) is on its way to it: this answer will be stale there; keep it harmless.
            return pb.IdleDirective(keep_alive=pb.KeepAlive(ms=BUSY_KEEPALIVE_MS))
        now = self.now_ms()
        with d.answering(inst):
            until = inst.keepalive_until_ms
            if until is not None and until <= now + 1.0:
                d.keepalive_expired(inst, max(now, until))
        return d.directive(inst)

    # ------------------------------------------------------------------ introspection
    def _instance_states(self) -> Iterable[tuple[str, str, str]]:
        for node in self.nodes:
            for inst in node.instances.values():
                yield inst.fn.name, node.name, str(inst.state)

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
            "policy_fallbacks": dict(self.dispatch.fallbacks),
        }

    def function_summary(self, fn: Function, now: float | None = None) -> dict[str, Any]:
        now = self.now_ms() if now is None else now
        s = fn.stats
        return {
            "version": fn.version, "abi": fn.abi, "memory_mb": fn.memory_mb, "timeout_ms": fn.timeout_ms,
            "max_instances": fn.max_instances, "concurrency": fn.max_instances,  # old name, kept for clients
            "arrivals": s.arrivals, "completions": s.completions,
            "cold_starts": s.cold_starts, "cold_start_ms_ewma": round(s.cold_start_ms, 3),
            "predicted_duration_ms": round(s.predict_duration(), 3),
            "instances": [{"id": i.instance_id, "node": i.node, "state": str(i.state), "queue": len(i.queue),
                           "invocations": i.invocations, "idle_ms": round(i.idle_ms(now), 1),
                           "keepalive_left_ms": None if i.keepalive_until_ms is None
                           else round(max(0.0, i.keepalive_until_ms - now), 1)}
                          for i in fn.instances.values()],
        }

