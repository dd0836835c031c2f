"""The platform model driven live: its effects become calls to nodes.

``Dispatch`` is ``wlmodel.Platform`` (the one state machine the simulator drives too) with
the router's effects: an execution is a ``Do(Invoke)`` on the instance's node, a spawn a
``Spawn`` call carrying the request it is for (a cold start costs one round trip), a kill a
``Do(Kill)``, a keep-alive a timer of its own (``keepalive.KeepAliveTimers``, the one owner
of keep-alive timing), a reject the 429 (or 503) the caller gets. Answers are checked in
"fallback" mode: an invalid policy answer (or a policy that raises) is answered by the base
policy, logged once per kind and counted (``wl_router_policy_errors_total``).

Everything runs on one asyncio event loop and transitions never await, so a decision sees a
consistent table and a policy swap (between two decisions) needs no further locking.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import Any

import grpc

from policies.interface import BUSY, DEAD, IDLE, Policy, RequestView
from wlmodel.kinds import ErrorKind, RejectReason
from wlmodel.platform import Platform
from wlmodel.records import Node
from wlruntime.node.client import never_sent
from wlruntime.proto import node_pb2 as pb
from wlruntime.proto.kinds import error_kind
from wlruntime.router.clock import Clock
from wlruntime.router.keepalive import LEASE_MARGIN_MS, KeepAliveTimers
from wlruntime.router.metrics import RouterMetrics
from wlruntime.router.state import (
    NODE_ERROR,
    OK,
    TIMEOUT,
    Function,
    FunctionNotFound,
    Instance,
    NoCapacity,
    Pending,
    Result,
    RouterError,
    Throttled,
)
from wlruntime.router.trace import TraceRecorder

log = logging.getLogger("wlruntime.router")

RPC_MARGIN_S = 2.0           # added to a function's timeout for the Do(Invoke) deadline
SPAWN_TIMEOUT_S = 120.0      # a first compile of a big component can take a while
CONTROL_TIMEOUT_S = 5.0      # KeepAlive / Kill / Status
MAX_ATTEMPTS = 3             # placements of one request (re-routes after a node or spawn failure)
BUSY_KEEPALIVE_MS = 60_000   # answer to a node asking about an instance the router has busy
UINT32_MAX = 2**32 - 1
# The instance log's columns: the id the node knows it by (the answer's X-WL-Instance), the
# function, then the policy clock's times (the trace's start_ms/end_ms clock; ready_ms empty when
# it died starting) and whether the policy evicted it.
INSTANCE_LOG_COLUMNS = ("instance", "function", "created_ms", "ready_ms", "died_ms", "evicted")
# Spawn errors that mean the instance never started, so a request sent along did not run.
SPAWN_REFUSED = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                           grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ALREADY_EXISTS,
                           grpc.StatusCode.INVALID_ARGUMENT})


class Dispatch(Platform):
    """The model plus the router's effects (see the module docstring)."""

    def __init__(self, policy: Policy, *, clock: Clock, metrics: RouterMetrics, trace: TraceRecorder,
                 boot: str, background: Callable[[Any], asyncio.Task],
                 node_failed: Callable[[Any, str], None]) -> None:
        super().__init__(policy, on_bad_answer="fallback")
        self.clock = clock
        self.metrics = metrics
        self._route_seconds = metrics.route_seconds
        self._on_idle_seconds = metrics.on_idle_seconds
        self.trace = trace
        # Dead instances, as many as the trace keeps rows (INSTANCE_LOG_COLUMNS; /admin/trace?kind=instances)
        self.deaths: deque[tuple[str, str, float, float | None, float, bool]] = deque(maxlen=trace.rows.maxlen)
        self.boot = boot
        self._bg = background
        self._node_failed = node_failed
        self.by_iid: dict[str, Instance] = {}
        self.keepalive = KeepAliveTimers(clock, self._keepalive_expired, self._send_lease)
        # Requests a node runs on an Invoke directive (answered through Scheduler.OnIdle).
        self.node_driven: dict[str, tuple[Instance, Pending]] = {}
        self._arriving: Pending | None = None      # the request whose own route is being made
        self._capture: Instance | None = None      # the instance whose node asked (see answering)
        self._directive: pb.IdleDirective | None = None
        self._policy_error_logged: set[str] = set()

    # ------------------------------------------------------------------ decisions (timed)
    # The two per-request decision points ask the policy here, as the simulator's driver does
    # (one call, not ask_* -> a timing wrapper -> the model's decide_*), with the model's
    # fallback when the policy raises.
    def ask_route(self, req: Pending, f: Any, now: float, reason: str) -> None:
        view = req.view
        t = perf_counter()
        try:
            answer = self.policy.route(now, view, f)
        except Exception as error:  # noqa: BLE001 (fallback mode: a policy bug must not fail the request)
            answer = self.route_after_error(view, f, now, error)
        self._route_seconds.observe(perf_counter() - t)
        self.apply_route(req, f, answer, now)

    def ask_idle(self, inst: Any, now: float, reason: str) -> None:
        t = perf_counter()
        try:
            answer = self.policy.on_idle(now, inst, inst.fn)
        except Exception as error:  # noqa: BLE001 (same)
            answer = self.idle_after_error(inst, now, error)
        self._on_idle_seconds.observe(perf_counter() - t)
        self.apply_idle(inst, answer, now)

    def decide_prewarm(self, f: Any, now: float) -> float | None:
        t = perf_counter()
        delay = super().decide_prewarm(f, now)
        self.metrics.decision.labels("prewarm").observe(perf_counter() - t)
        return delay

    def decide_evict(self, node: Node, need: float, now: float) -> list:
        t = perf_counter()
        chosen = super().decide_evict(node, need, now)
        self.metrics.decision.labels("evict").observe(perf_counter() - t)
        return chosen

    def policy_failed(self, decision: str, problem: str | BaseException) -> None:
        self.metrics.policy_errors.labels(decision).inc()
        key = f"{decision}:{type(problem).__name__}"
        if key not in self._policy_error_logged:  # once per kind, not per request
            self._policy_error_logged.add(key)
            log.error("policy %s failed in %s (falling back to the base policy for this decision): %s",
                      getattr(self.policy, "name", "?"), decision, problem,
                      exc_info=isinstance(problem, BaseException))

    def request_view(self, req: Pending, f: Any) -> RequestView:
        return req.view

    # ------------------------------------------------------------------ arrivals
    def admit(self, fn: Function, req: Pending, now: float) -> Instance | None:
        """Route a new request. Returns the instance it starts on at once (the caller runs it
        there), None when it waits (queued, or cold-starting; its answer comes through its
        future); raises the RouterError of a rejection."""
        req.routed_ms = now
        self._arriving = req
        try:
            self.arrive(fn, req, now)
        finally:
            self._arriving = None
        if req.rejection is not None:
            raise req.rejection
        if req.run_now:
            req.run_now = False
            return req.owner
        if req.future is None:   # queued: answered through its future
            req.future = asyncio.get_running_loop().create_future()
        return None

    def reroute(self, reqs: Any, f: Any, now: float) -> None:
        """Requests taken off an instance that will not run them go back through route (a
        request riding in a Spawn is left to that spawn's outcome, see _spawn)."""
        for req in reqs:
            if req.done or req.riding:
                continue
            req.owner = None
            req.routed_ms = now
            if f.deleted:
                self._fail(req, FunctionNotFound(f"Function not found: {f.name} (deleted)"))
                continue
            if req.future is None:
                req.future = asyncio.get_running_loop().create_future()
            self.ask_route(req, f, now, "reroute")

    def replace(self, fn: Function, req: Pending, now: float, why: str) -> None:
        """Place a request that did not run (its instance died or never started) again; a
        request placed MAX_ATTEMPTS times is answered with the last failure."""
        if req.done:
            return
        req.attempts += 1
        if req.attempts >= MAX_ATTEMPTS:
            self._answer(req, Result(error=NODE_ERROR, error_message=f"{fn.name}: the request could not be placed "
                                     f"after {req.attempts} attempts; last: {why}", cold=req.cold))
            return
        self.reroute([req], fn, now)

    # ------------------------------------------------------------------ effects
    def new_instance(self, f: Any, node: Node, now: float, prewarmed: bool) -> Instance:
        k = self._next_instance_id      # 0, 1, ... in spawn order, as in the simulator
        self._next_instance_id += 1
        inst = Instance(k, f, node, f"{f.name}-{self.boot}-{k}", now, prewarmed)
        self.by_iid[inst.instance_id] = inst
        return inst

    def emit_execute(self, inst: Instance, req: Pending, now: float) -> None:
        req.started_ms = now
        req.owner = inst
        if req.routed_ms < inst.ready_ms and inst.ready_ms != math.inf:
            req.cold_start_ms = inst.ready_ms - req.routed_ms
        if req.ran_in_spawn is not None:
            return                       # it already ran inside its Spawn (see _spawn)
        if inst is self._capture:
            request_id = f"{self.boot}-{req.view.id}"
            self.node_driven[request_id] = (inst, req)
            self._directive = pb.IdleDirective(invoke=pb.Invoke(request_id=request_id, payload=req.payload,
                                                                metadata=req.metadata))
            return
        if req is self._arriving:
            req.run_now = True           # the caller awaits the execution itself: no task
            return
        if req.future is None:
            req.future = asyncio.get_running_loop().create_future()
        self._bg(self.execute(inst, req))

    def emit_spawn(self, inst: Instance, req: Pending | None, now: float) -> None:
        if req is not None:
            req.cold = True
            if req.future is None:
                req.future = asyncio.get_running_loop().create_future()
        self._bg(self._spawn(inst))

    def emit_kill(self, inst: Instance, now: float) -> None:
        if inst is self._capture:
            self._directive = pb.IdleDirective(kill=pb.Kill())
            return
        node = inst.node_ref
        if node.alive:
            task = self._bg(self.send_kill(node, inst.instance_id))
            node.pending_kills.add(task)
            task.add_done_callback(node.pending_kills.discard)

    def kill(self, inst: Any, now: float, evicted: bool = False, notify: bool = True) -> None:
        if inst.state is not DEAD:
            self.keepalive.cancel(inst)
            self.by_iid.pop(inst.instance_id, None)
            # Every death passes here (keep-alive out, eviction, node lost, spawn failure): the
            # exact lifetime, which state polls only bound (wl.loop.live). One append per death.
            self.deaths.append((inst.instance_id, inst.fn.name, inst.created_ms,
                                inst.ready_ms if inst.ready_ms != math.inf else None, now, evicted))
            log.debug("instance %s of %s on %s killed%s", inst.instance_id, inst.fn.name, inst.node,
                      " (evicted)" if evicted else "")
        super().kill(inst, now, evicted, notify)

    def emit_keep_alive(self, inst: Instance, until: float) -> None:
        if inst is self._capture:
            self.keepalive.arm(inst, until, lease=False)
            self._directive = pb.IdleDirective(keep_alive=pb.KeepAlive(
                ms=wire_ms(until - self.clock.now_ms() + LEASE_MARGIN_MS)))
            return
        self.keepalive.arm(inst, until)

    def emit_reject(self, req: Pending, now: float, reason: RejectReason, retry_after_ms: float) -> None:
        fn = req.view.function
        if reason is RejectReason.POLICY:
            error: RouterError = Throttled(f"Rate exceeded: the policy rejected a request for {fn}",
                                           retry_after_ms, "policy")
        elif reason is RejectReason.MAX_INSTANCES:
            error = Throttled(f"Rate exceeded: {fn} is at its max_instances limit", retry_after_ms, "concurrency")
        elif reason is RejectReason.CAPACITY:
            error = Throttled(f"Rate exceeded: no node has room for {fn}", retry_after_ms, "capacity")
        else:
            error = NoCapacity("no handler node is reachable")
        if req is self._arriving:
            req.rejection = error
        else:
            self._fail(req, error)

    def emit_prewarm_timer(self, f: Any, at: float) -> None:
        f.prewarm_handle = self.clock.call_at(at, lambda: self._prewarm_fired(f))

    def emit_cancel_prewarm(self, f: Any) -> None:
        if f.prewarm_handle is not None:
            f.prewarm_handle.cancel()
        f.prewarm_handle = None

    def _prewarm_fired(self, f: Any) -> None:
        f.prewarm_handle = None
        self.prewarm_due(f, self.clock.now_ms())

    def _keepalive_expired(self, inst: Instance, now: float) -> None:
        self.keepalive_expired(inst, now)

    # ------------------------------------------------------------------ a node asks
    @contextmanager
    def answering(self, inst: Instance) -> Iterator[None]:
        """Effects on ``inst`` become the IdleDirective for its node (which asked through
        Scheduler.OnIdle) instead of calls to it; see ``directive``."""
        self._capture, self._directive = inst, None
        try:
            yield
        finally:
            self._capture = None

    def directive(self, inst: Instance) -> pb.IdleDirective:
        """What the node that asked about ``inst`` does next (after ``answering``)."""
        if self._directive is not None:
            return self._directive
        if inst.state is DEAD:
            return pb.IdleDirective(kill=pb.Kill())
        if inst.state is IDLE and inst.keepalive_until_ms is not None:
            return pb.IdleDirective(keep_alive=pb.KeepAlive(
                ms=wire_ms(inst.keepalive_until_ms - self.clock.now_ms() + LEASE_MARGIN_MS)))
        return pb.IdleDirective(keep_alive=pb.KeepAlive(ms=BUSY_KEEPALIVE_MS))

    # ------------------------------------------------------------------ executions
    async def execute(self, inst: Instance, req: Pending) -> Result | None:
        """Run ``req`` on ``inst`` (started by the model) and do the bookkeeping after it. Returns
        the result (also given to ``req.future`` when someone waits on it), or None when the
        request did not run and was placed again (its answer then comes through the future)."""
        fn = inst.fn
        node = inst.node_ref
        message = invoke_request(inst.instance_id, f"{self.boot}-{req.view.id}", req.payload, req.metadata)
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
            result = self.complete(inst, req, reply.invoke)
        if result is not None:
            self._answer(req, result)
        return result

    def complete(self, inst: Instance, req: Pending, r: pb.InvokeResult) -> Result:
        """``req`` ran on ``inst`` with result ``r``: record it, then the model's transition."""
        now = self.clock.now_ms()
        fn: Function = inst.fn
        error = error_kind(r.error)
        exec_ms = r.exec_ms
        payload_bytes = req.view.payload_bytes
        started = req.started_ms if req.started_ms is not None else now
        # The duration policies learn (and the trace records) is how long the instance was busy
        # as the router sees it: the node's execution time plus the call's overhead. That is
        # what a request queued behind it waits for, and what the simulator's instances take
        # when the recorded traffic is replayed. The function's own time is X-WL-Duration-Ms.
        busy_ms = max(now - started, exec_ms)
        wait_ms = started - req.view.arrival_ms
        children = fn.metric_children or self.metrics.children(fn)
        children["duration"].observe(exec_ms / 1000.0)
        children["wait"].observe(wait_ms / 1000.0)
        self.trace.add(fn.app, fn.name, req.view.arrival_ms, busy_ms, inst.memory_mb, payload_bytes,
                       req.view.features, req.cold, max(0.0, wait_ms - req.cold_start_ms), req.cold_start_ms,
                       exec_ms, started, now, inst.node, error.status)
        if r.logs or error != OK:
            fn.logs.append({"time": time.time(), "request_id": r.request_id, "instance": inst.instance_id,
                            "error": str(error), "message": r.error_message,
                            "logs": r.logs.decode("utf-8", "replace")})
        result = Result(r.output, error, r.error_message, r.logs, exec_ms, wait_ms, req.cold, inst.version,
                        inst.instance_id, inst.node, {"max_memory_bytes": r.max_memory_bytes})
        retire = error == TIMEOUT or inst.version != fn.version or fn.deleted
        self.end_execution(inst, req, now, busy_ms, payload_bytes, retire)
        return result

    def _execute_failed(self, inst: Instance, req: Pending, error: grpc.aio.AioRpcError) -> Result | None:
        code = error.code()
        node = inst.node_ref
        fn: Function = inst.fn
        now = self.clock.now_ms()
        details = error.details() or code.name
        if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION) and inst.state is not DEAD:
            # The node no longer has the instance (restarted, or freed it) or disagrees about its
            # state: the request did not run there. Drop the instance, place the request again.
            self.abort_execution(inst, req, now, notify=code is grpc.StatusCode.FAILED_PRECONDITION)
            req.started_ms = None
            self.replace(fn, req, now, f"instance lost on node {node.name}: {details}")
            return None
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            self.abort_execution(inst, req, now)
            return Result(error=TIMEOUT, error_message=f"Task timed out after {fn.timeout_ms / 1000.0:.2f} seconds "
                          f"(node {node.name} did not answer in time)", cold=req.cold, version=inst.version,
                          instance=inst.instance_id, node=node.name)
        if code is grpc.StatusCode.INVALID_ARGUMENT and inst.state is BUSY:
            # The node refused the request itself (e.g. over a limit): the instance is fine.
            self.end_execution(inst, req, now, None)
            return Result(error=ErrorKind.INVALID_REQUEST, error_message=details, cold=req.cold,
                          version=inst.version, instance=inst.instance_id, node=node.name)
        if code is grpc.StatusCode.UNAVAILABLE and _never_ran(error):
            # The call never reached the node (it died while the instance was warm): the request
            # did not run, so it is placed again, like a request sent along with a failed Spawn.
            self._node_failed(node, f"{code.name} before a request reached it: {details}")
            req.started_ms = None
            self.replace(fn, req, now, f"node {node.name} unreachable: {details}")
            return None
        # UNAVAILABLE (node died), CANCELLED, INTERNAL...: the request's fate is unknown.
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            self._node_failed(node, f"{code.name} during a request: {details}")
        else:
            self.abort_execution(inst, req, now)
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

    # ------------------------------------------------------------------ spawning
    async def _spawn(self, inst: Instance) -> None:
        """Start ``inst`` on its node. The request it was spawned for rides along in the Spawn
        call (SpawnRequest.invoke): a cold start costs one round trip to the node, not two
        (for instances with concurrency 1; see below)."""
        fn: Function = inst.fn
        node = inst.node_ref
        if node.pending_kills:
            head = inst.queue[0] if inst.queue else None
            # Evicted instances' memory must be free on the node first. On the node's DoStream
            # it is: the kills were written before this spawn, and the node carries them out in
            # that order (waiting for their replies added ~10-30 ms to a cold start in a burst).
            if not node.calls.in_order(len(head.payload) if head is not None else 0):
                await asyncio.gather(*list(node.pending_kills), return_exceptions=True)
        queue = inst.queue
        # An instance that runs one request at a time takes its first inside the Spawn call.
        # One that runs several must start them all when the cold start ends, so it is told
        # only to start: the reply then comes at that moment.
        first = queue[0] if queue and inst.state is not DEAD and inst.concurrency == 1 else None
        message = pb.SpawnRequest(function=fn.name, version=str(inst.version), instance_id=inst.instance_id)
        timeout = SPAWN_TIMEOUT_S
        if first is not None:
            first.riding = True
            message.invoke.CopyFrom(pb.Invoke(request_id=f"{self.boot}-{first.view.id}", payload=first.payload,
                                              metadata=first.metadata))
            timeout += fn.timeout_ms / 1000.0 + RPC_MARGIN_S
            self.metrics.rpc_invoke.inc()
        self.metrics.rpc_spawn.inc()
        try:
            reply = await node.calls.spawn(message, timeout=timeout)  # on the node's DoStream
        except grpc.aio.AioRpcError as error:
            if first is not None:
                first.riding = False
                if not _never_ran(error):  # the node failed while the request may have been running
                    _unqueue(inst, first)
                    self._answer(first, Result(
                        error=NODE_ERROR, error_message=f"node {node.name} failed during the request: "
                        f"{error.code().name}: {error.details()}", cold=True, version=inst.version,
                        instance=inst.instance_id, node=node.name))
            self._spawn_failed(inst, error)
            return
        now = self.clock.now_ms()
        ran = first is not None and reply.HasField("invoke")
        exec_ms = reply.invoke.exec_ms if ran else 0.0
        if first is not None:
            first.riding = False
        if inst.state is DEAD:  # its node failed or the function went away meanwhile
            if node.alive:
                self._bg(self.send_kill(node, inst.instance_id))
            if first is not None:
                _unqueue(inst, first)
                if ran:
                    r = reply.invoke
                    self._answer(first, Result(r.output, error_kind(r.error), r.error_message, r.logs, exec_ms,
                                               0.0, True, inst.version, inst.instance_id, node.name))
                elif not first.done:
                    self.replace(fn, first, now, "its new instance is gone")
            return
        ready = now - exec_ms
        # The cold start as the model defines it: from the spawn decision to ready, what the
        # request waited (the recording's cold_start_ms, which the simulator replaying it feeds
        # the function's estimate). Not the Spawn call alone: the time from the decision
        # to the call (the spawn task waiting for the loop, or for kills sent before it) is part
        # of it; without it the live estimate was ~7% below the replay's (issue 10).
        cold_ms = max(ready - inst.created_ms, 0.0)
        inst.cold_start_ms = cold_ms
        inst.spawn_reply = reply
        children = fn.metric_children or self.metrics.children(fn)
        children["cold"].inc()
        children["cold_seconds"].observe(cold_ms / 1000.0)
        if ran:
            first.ran_in_spawn = reply.invoke
            if not queue or queue[0] is not first:  # its caller gave up meanwhile: it still ran here
                _unqueue(inst, first)
                queue.appendleft(first)
        elif first is not None:  # the instance is up but refused the request (e.g. over a limit)
            log.warning("%s: the request sent with the spawn did not run: %s %s", inst.instance_id,
                        reply.invoke_error_code, reply.invoke_error_message)
        self.instance_ready(inst, ready, cold_start_ms=cold_ms)
        if ran:
            self._answer(first, self.complete(inst, first, reply.invoke))

    def _spawn_failed(self, inst: Instance, error: grpc.aio.AioRpcError) -> None:
        fn: Function = inst.fn
        node = inst.node_ref
        code = error.code()
        details = error.details() or code.name
        self.metrics.spawn_failures.labels(fn.name).inc()
        if inst.state is DEAD:
            return  # already handled (node failure); its queue was placed again
        now = self.clock.now_ms()
        why = f"spawn of {fn.name}@{inst.version} on node {node.name} failed: {code.name}: {details}"
        log.warning("%s", why)
        waiting = [r for r in inst.queue if not r.done]
        inst.queue.clear()
        if code is grpc.StatusCode.UNAVAILABLE:
            self.kill(inst, now, notify=False)
            self._node_failed(node, why)
        elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            self.kill(inst, now, notify=False)
            node.alive = False  # re-admitted by the health loop with its real free memory
        else:
            self.kill(inst, now, notify=code is grpc.StatusCode.DEADLINE_EXCEEDED)
            if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
                        grpc.StatusCode.INVALID_ARGUMENT):
                # The function itself cannot start: placing it elsewhere would fail the same way.
                for req in waiting:
                    self._answer(req, Result(error=ErrorKind.INIT_ERROR, error_message=why, cold=True,
                                             version=inst.version, node=node.name))
                return
        for req in waiting:
            self.replace(fn, req, now, why)

    # ------------------------------------------------------------------ node calls
    async def send_kill(self, node: Any, instance_id: str) -> None:
        self.metrics.rpc_kill.inc()
        try:
            await node.calls.do(pb.DoRequest(instance_id=instance_id, kill=pb.Kill()), timeout=CONTROL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.UNAVAILABLE:
                self._node_failed(node, f"kill failed: {error.details()}")

    def _send_lease(self, inst: Instance, ms: float) -> None:
        self._bg(self._send_keepalive(inst, ms))

    async def _send_keepalive(self, inst: Instance, ms: float) -> None:
        node = inst.node_ref
        self.metrics.rpc_keep_alive.inc()
        try:
            await node.calls.do(pb.DoRequest(instance_id=inst.instance_id, keep_alive=pb.KeepAlive(ms=wire_ms(ms))),
                                timeout=CONTROL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code is grpc.StatusCode.UNAVAILABLE:
                self._node_failed(node, f"keep-alive failed: {error.details()}")
            elif code is grpc.StatusCode.NOT_FOUND and inst.state is IDLE:
                self.kill(inst, self.clock.now_ms(), notify=False)
            # FAILED_PRECONDITION: it became busy meanwhile; the lease no longer applies.


def _unqueue(inst: Instance, req: Pending) -> None:
    """Take a request out of its instance's queue (if still there)."""
    try:
        inst.queue.remove(req)
    except ValueError:
        pass  # the queue was cleared meanwhile (the instance died)


def _never_ran(error: grpc.aio.AioRpcError) -> bool:
    """A failed Spawn or Do after which the request sent in it surely did not run: the node
    refused the spawn, or the call never reached the node (no connection, or its stream to
    the node ended before the request was written). Anything else (a connection lost mid-call,
    a cancellation) may have run it and is never retried."""
    code = error.code()
    if code in SPAWN_REFUSED:
        return True
    return code is grpc.StatusCode.UNAVAILABLE and ("failed to connect" in (error.details() or "").lower()
                                                    or never_sent(error))


def invoke_request(instance_id: str, request_id: str, payload: bytes, metadata: dict[str, str]) -> pb.DoRequest:
    """``DoRequest(instance_id, invoke=Invoke(request_id, payload, metadata))``, filled in place: the
    same message in ~1.1 µs instead of ~2.4 (building an Invoke copies it into the DoRequest, and
    a dict given for a map field goes through a pure-Python ``MutableMapping.update``)."""
    message = pb.DoRequest(instance_id=instance_id)
    invoke = message.invoke
    invoke.SetInParent()
    invoke.request_id = request_id
    invoke.payload = payload
    entries = invoke.metadata
    for key, value in metadata.items():
        entries[key] = value
    return message


def wire_ms(ms: float) -> int:
    """A keep-alive length for the wire (uint32 ms, at least 1)."""
    return int(min(UINT32_MAX, max(1, math.ceil(ms))))
