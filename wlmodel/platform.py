"""The platform's state machine, free of I/O and clocks: one copy for the simulator and the router.

``Platform`` holds the nodes, functions and instances, asks the policy at each decision point
(``policies.interface``), checks its answers and makes every transition. What the outside
world must do about a transition is an *effect*: a method named ``emit_*`` that a driver
implements (the simulator schedules events on simulated time, the router makes gRPC calls
to nodes on real time). Drivers subclass ``Platform``; they call the transitions below when
something happens (an arrival, a cold start finished, an execution ended, a keep-alive ran
out, a node died) and never change the records themselves.

Requests are the driver's own handles (the simulator's trace row numbers, the router's
pending requests); the model only queues them and hands them back in effects.

The rules, in one place:

- **Route** (``route_request``; at every arrival after ``fn.stats.record_arrival``, and for
  every request taken off an instance that will not run it, a *re-route*): ``Assign`` runs
  the request now if the instance (IDLE or BUSY) has a free slot (``concurrency`` executions
  per instance), else queues it there (also on a STARTING instance); ``Spawn`` starts an
  instance for it; ``Reject`` refuses it (``emit_reject``).
- **A cold start**: a request is *cold* iff an instance was spawned for it (its Spawn
  answer, ``emit_spawn(inst, request)``), whether or not it finally runs there (a re-route
  after the instance died keeps it cold). Queuing behind someone else's STARTING instance is
  not a cold start: that request's wait is queueing (its ``cold_start_ms`` still counts the
  part of its wait before the instance was ready). The router used to count those requests
  cold too; the simulator's definition was kept because it is what a policy chose, so the
  count of cold requests equals the count of spawns for requests.
- **Spawn** (``spawn``): rejected at the function's ``max_instances`` live instances;
  placed on the requested node, else on the live node with the most free memory (ties: the
  least used, then the first; so with unbounded memory, the least used). ``Spawn(evict=[...])``
  first kills the idle instances it names (all checked first: a busy, dead, unknown or repeated
  one makes the answer invalid), so a policy can keep a memory cap of its own. It holds the
  function's memory from the decision until it dies. If it does not fit, ``policy.evict``
  chooses idle instances of that node to kill; if even they would not make room, nothing is
  evicted and the request is rejected. A pre-warm never evicts and is skipped if it does
  not fit.
- **Idle** (``ask_idle``): when an instance's last execution ends (FINISHED), when a cold
  start with nothing queued ends (READY) and when its keep-alive runs out (EXPIRED):
  ``INVOKE`` runs queued requests (an error when none is queued), ``KeepAlive(ms)``
  (``emit_keep_alive(inst, until)``; requests queued on it are re-routed), ``KILL``.
  During the EXPIRED question ``keepalive_until_ms`` still holds the expiry (<= now); after
  an execution it is None, so a TTL policy can tell the two apart.
- **Kill** (``kill``): frees the memory (``emit_kill`` unless the node is gone); queued
  requests are re-routed; a kill that leaves the function with no instance and nothing to
  re-route asks ``policy.prewarm`` (``emit_prewarm_timer``; cancelled by the next arrival).
- **Node failure** (``node_failed``): every instance on it dies; queued requests are
  re-routed; the node takes no new instance until the driver marks it alive.
- **Invalid answers**: with ``on_bad_answer="raise"`` (research runs) a policy answer that
  is invalid at its decision point raises :class:`PolicyAnswerError`; with ``"fallback"``
  (the live router) the base policy answers that decision instead, ``policy_failed`` is
  told, and ``fallbacks`` counts it per decision kind, so a result says which happened.
  In fallback mode an exception raised by the policy is handled the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from policies.interface import (
    BUSY,
    DEAD,
    IDLE,
    STARTING,
    Assign,
    Invoke,
    KeepAlive,
    Kill,
    Policy,
    Reject,
    RequestView,
    Spawn,
)
from wlmodel.kinds import RejectReason
from wlmodel.records import Function, Instance, Node

# Why a decision is asked (Decision.reason in the simulator's step API).
ARRIVAL = "arrival"      # route: a request arrived
REROUTE = "reroute"      # route: a request taken off an instance that will not run it
FINISHED = "finished"    # on_idle: its last running execution ended
EXPIRED = "expired"      # on_idle: its keep-alive ran out
READY = "ready"          # on_idle: a cold start finished with nothing queued (e.g. a pre-warm)

MEMORY_SLACK_MB = 1e-6   # absorbs float drift in running sums of fractional memory sizes
BASE_POLICY = Policy()   # answers a decision whose policy answer was invalid (fallback mode)

AnswerMode = Literal["raise", "fallback"]


class PolicyAnswerError(ValueError):
    """A policy (or a step-wise caller) gave an answer that is invalid at that decision point."""


class Platform:
    """The state machine; see the module docstring. Subclasses implement the ``emit_*``
    effects and may override ``new_instance``, ``request_view``, ``ask_route``/``ask_idle``
    (to queue decisions instead of asking a policy, or to ask it themselves: a policy that
    raises then goes to ``route_after_error``/``idle_after_error``) and ``policy_failed``."""

    __slots__ = ("__dict__", "__weakref__", "_next_instance_id", "cold_starts", "fallbacks",
                 "idle_closed_mb_ms", "nodes", "on_bad_answer", "policy")

    def __init__(self, policy: Policy | None = None, *, on_bad_answer: AnswerMode = "raise") -> None:
        if on_bad_answer not in ("raise", "fallback"):
            raise ValueError(f"on_bad_answer must be 'raise' or 'fallback', got {on_bad_answer!r}")
        self.policy = policy if policy is not None else Policy()
        self.on_bad_answer = on_bad_answer
        self.nodes: list[Node] = []
        self.fallbacks: dict[str, int] = {}   # invalid answers replaced by the base policy, per decision
        self.cold_starts = 0                  # instances whose cold start finished
        self.idle_closed_mb_ms = 0.0          # idle MB-ms of idle periods that have ended
        self._next_instance_id = 0

    # ------------------------------------------------------------------ effects (the driver's)
    def emit_execute(self, inst: Instance, req: Any, now: float) -> None:
        """Start executing ``req`` on ``inst`` (already counted in ``inst.active``)."""
        raise NotImplementedError

    def emit_spawn(self, inst: Instance, req: Any, now: float) -> None:
        """Cold-start ``inst``; ``req`` is the request it is spawned for (it is cold, and first
        in ``inst.queue``), None for a pre-warm. The driver calls ``instance_ready`` when done."""
        raise NotImplementedError

    def emit_kill(self, inst: Instance, now: float) -> None:
        """Free ``inst`` on its node (not called when the node itself is gone)."""

    def emit_keep_alive(self, inst: Instance, until: float) -> None:
        """Keep ``inst`` idle until ``until``; then the driver calls ``keepalive_expired``
        (unless the instance was used or killed meanwhile)."""
        raise NotImplementedError

    def emit_reject(self, req: Any, now: float, reason: RejectReason, retry_after_ms: float) -> None:
        """Refuse ``req`` (a 429 live; 503 for NO_NODE)."""
        raise NotImplementedError

    def emit_prewarm_timer(self, f: Function, at: float) -> None:
        """Call ``prewarm_due(f, at)`` at ``at`` unless cancelled; store a handle in
        ``f.prewarm_handle`` (not None)."""
        raise NotImplementedError

    def emit_cancel_prewarm(self, f: Function) -> None:
        """Cancel the pending pre-warm of ``f`` and set ``f.prewarm_handle`` to None."""
        f.prewarm_handle = None

    def request_view(self, req: Any, f: Function) -> RequestView:
        """What the policy sees of ``req``."""
        raise NotImplementedError

    def policy_failed(self, decision: str, problem: str | BaseException) -> None:
        """Fallback mode: the policy's answer to ``decision`` was replaced by the base policy's."""

    def new_instance(self, f: Function, node: Node, now: float, prewarmed: bool) -> Instance:
        """The record of a new instance (drivers subclass Instance for their own fields)."""
        self._next_instance_id += 1
        return Instance(self._next_instance_id, f, node, now, prewarmed)

    # ------------------------------------------------------------------ nodes
    def add_node(self, node: Node) -> Node:
        node.index = len(self.nodes)
        self.nodes.append(node)
        return node

    def remove_node(self, node: Node, now: float) -> None:
        """Take a node out of the pool: its instances die (as in a failure) and it is forgotten."""
        self.node_failed(node, now)
        self.nodes.remove(node)
        for k, n in enumerate(self.nodes):
            n.index = k

    def find_node(self, name: str) -> Node | None:
        for n in self.nodes:
            if n.name == name or n.address == name:
                return n
        return None

    def choose_node(self, f: Function, name: str | None) -> Node | None:
        """Where a new instance of ``f`` goes: the named node (the policy's Spawn(node=...)),
        else the live node with the most free memory, ties: the least used, then the first.
        None when no node is alive."""
        nodes = self.nodes
        if name is not None:
            node = self.find_node(name)
            if node is not None and node.alive:
                return node
            what = "unknown node" if node is None else "node"
            self._bad_answer("route", f"Spawn on {what} {name!r}, which is not a live node (live nodes: "
                             f"{', '.join(n.name for n in nodes if n.alive) or 'none'})")
        if len(nodes) == 1:
            node = nodes[0]
            return node if node.alive else None
        best = None
        best_free = best_used = 0.0
        for n in nodes:
            if not n.alive:
                continue
            free = n.capacity_mb - n.used_mb
            if best is None or free > best_free or (free == best_free and n.used_mb < best_used):
                best, best_free, best_used = n, free, n.used_mb
        return best

    def node_failed(self, node: Node, now: float) -> list[Instance]:
        """``node`` is gone: every instance on it dies without telling it; requests queued
        there are re-routed. Returns the instances that died (what ran on them is lost: the
        driver answers those requests)."""
        node.alive = False
        lost = list(node.instances.values())
        for inst in lost:
            self.kill(inst, now, notify=False)
        node.used_mb = 0.0   # no drift left behind
        return lost

    # ------------------------------------------------------------------ answers
    def _bad_answer(self, decision: str, problem: str) -> None:
        """Raise (research runs) or note that the base policy answers instead (live)."""
        if self.on_bad_answer == "raise":
            raise PolicyAnswerError(problem)
        self.fallbacks[decision] = self.fallbacks.get(decision, 0) + 1
        self.policy_failed(decision, problem)

    def _policy_raised(self, decision: str, error: Exception) -> None:
        if self.on_bad_answer == "raise":
            raise error
        self.fallbacks[decision] = self.fallbacks.get(decision, 0) + 1
        self.policy_failed(decision, error)

    def decide_route(self, view: RequestView, f: Function, now: float) -> Any:
        try:
            return self.policy.route(now, view, f)
        except Exception as error:  # noqa: BLE001 (fallback mode: a policy bug must not fail the request)
            return self.route_after_error(view, f, now, error)

    def route_after_error(self, view: RequestView, f: Function, now: float, error: Exception) -> Any:
        """The policy's route raised ``error``: raised again (research runs), else the base
        policy's answer (fallback mode). Drivers that ask the policy themselves call it too."""
        self._policy_raised("route", error)
        return BASE_POLICY.route(now, view, f)

    def decide_idle(self, inst: Instance, now: float) -> Any:
        try:
            return self.policy.on_idle(now, inst, inst.fn)
        except Exception as error:  # noqa: BLE001 (same)
            return self.idle_after_error(inst, now, error)

    def idle_after_error(self, inst: Instance, now: float, error: Exception) -> Any:
        """The policy's on_idle raised ``error``: as ``route_after_error``."""
        self._policy_raised("on_idle", error)
        return BASE_POLICY.on_idle(now, inst, inst.fn)

    def decide_prewarm(self, f: Function, now: float) -> float | None:
        try:
            delay = self.policy.prewarm(now, f)
        except Exception as error:  # noqa: BLE001 (same)
            self._policy_raised("prewarm", error)
            return None
        if delay is None:
            return None
        if not (isinstance(delay, (int, float)) and delay >= 0 and math.isfinite(delay)):
            self._bad_answer("prewarm", f"prewarm for {f.name!r} must return None or a delay >= 0 ms, "
                             f"got {delay!r}")
            return None
        return delay

    def decide_evict(self, node: Node, need: float, now: float) -> list[Instance]:
        """Idle instances of ``node`` to kill so ``need`` MB more fit (the policy's choice,
        checked: each an idle candidate, none twice)."""
        idle_here = node.idle
        candidates = list(idle_here.values())      # least recently used first
        try:
            chosen = list(self.policy.evict(now, need, candidates))
        except Exception as error:  # noqa: BLE001 (same)
            self._policy_raised("evict", error)
            return BASE_POLICY.evict(now, need, candidates)
        seen: set[int] = set()
        for c in chosen:
            if idle_here.get(getattr(c, "id", None)) is not c or c.id in seen:
                self._bad_answer("evict", f"evict returned {c!r}, which is not one of the idle candidates "
                                 f"on {node.name} (or is listed twice)")
                return BASE_POLICY.evict(now, need, candidates)
            seen.add(c.id)
        return chosen

    # ------------------------------------------------------------------ routing
    def arrive(self, f: Function, req: Any, now: float) -> None:
        """A request for ``f`` arrived: record it, cancel a pending pre-warm, route it."""
        f.stats.record_arrival(now)
        if f.prewarm_handle is not None:
            self.emit_cancel_prewarm(f)      # the arrival came first
        self.ask_route(req, f, now, ARRIVAL)

    def ask_route(self, req: Any, f: Function, now: float, reason: str) -> None:
        """A route decision point (drivers may override to queue it for a step-wise caller)."""
        self.apply_route(req, f, self.decide_route(self.request_view(req, f), f, now), now)

    def reroute(self, reqs: Sequence[Any], f: Function, now: float) -> None:
        """Route again requests taken off an instance that will not run them."""
        for req in reqs:
            self.ask_route(req, f, now, REROUTE)

    def apply_route(self, req: Any, f: Function, ans: Any, now: float) -> None:
        """Carry out a route answer (checked)."""
        if isinstance(ans, Assign):
            inst = ans.instance
            if getattr(inst, "fn", None) is not f:
                self._bad_answer("route", f"route for {f.name!r}: Assign to {inst!r}, "
                                 "which is not an instance of this function")
                return self.apply_route(req, f, BASE_POLICY.route(now, self.request_view(req, f), f), now)
            st = inst.state
            if (st is IDLE or st is BUSY) and inst.active < inst.concurrency:
                self.start_execution(inst, req, now)
            elif st is DEAD:
                self._bad_answer("route", f"route for {f.name!r}: Assign to dead {inst!r}")
                return self.apply_route(req, f, BASE_POLICY.route(now, self.request_view(req, f), f), now)
            else:
                inst.queue.append(req)
        elif isinstance(ans, Spawn):
            if ans.evict and not self.evict_for_spawn(f, ans.evict, now):
                return self.apply_route(req, f, BASE_POLICY.route(now, self.request_view(req, f), f), now)
            self.spawn(f, req, ans.node, now)
        elif isinstance(ans, Reject):
            self.emit_reject(req, now, RejectReason.POLICY, ans.retry_after_ms)
        else:
            self._bad_answer("route", f"route for {f.name!r} must return Assign, Spawn or Reject, got {ans!r}")
            self.apply_route(req, f, BASE_POLICY.route(now, self.request_view(req, f), f), now)

    # ------------------------------------------------------------------ executions
    def start_execution(self, inst: Instance, req: Any, now: float) -> None:
        """Start ``req`` on ``inst`` (IDLE, BUSY or just ready, with a free slot)."""
        st = inst.state
        if st is not BUSY:
            if st is IDLE:
                self._leave_idle(inst, now)
            inst.state = BUSY
            inst.busy_since_ms = now
            inst.exec_started_ms = now
        inst.active += 1
        if inst.concurrency > 1:
            inst.running.append((req, now))
        self.emit_execute(inst, req, now)

    def end_execution(self, inst: Instance, req: Any, now: float, busy_ms: float | None,
                      payload_bytes: float = 0, retire: bool = False) -> None:
        """The execution of ``req`` on ``inst`` ended. ``busy_ms``: how long it took (recorded
        for the function's statistics), None when it did not complete (refused by the node).
        ``retire``: kill the instance instead of asking on_idle (it timed out, or its version
        is outdated). Nothing changes for an instance that died meanwhile."""
        f = inst.fn
        if busy_ms is not None:
            f.stats.record_completion(now, busy_ms, payload_bytes)
        if inst.state is not BUSY:
            return                                   # killed meanwhile (its node failed)
        if busy_ms is not None:
            inst.invocations += 1
        inst.active -= 1
        if inst.concurrency > 1:
            running = inst.running
            for k, (r, _) in enumerate(running):
                if r is req:
                    del running[k]
                    break
            if inst.active and not retire:
                # Other executions still run: the freed slot takes the next queued request.
                inst.exec_started_ms = running[0][1]
                if inst.queue:
                    self.start_execution(inst, inst.queue.popleft(), now)
                return
        inst.exec_started_ms = None
        inst.busy_ms += now - inst.busy_since_ms
        if retire:
            self.kill(inst, now)
            return
        self._become_idle(inst, now)
        self.ask_idle(inst, now, FINISHED)

    def abort_execution(self, inst: Instance, req: Any, now: float, notify: bool = True) -> None:
        """The execution of ``req`` on ``inst`` ended without an answer and the instance is not
        trusted any more (the node lost it, or did not answer in time): it dies. What happens
        to ``req`` is the driver's (re-route it with ``reroute`` or answer an error)."""
        if inst.state is DEAD:
            return
        if inst.concurrency > 1:
            inst.running[:] = [(r, t) for r, t in inst.running if r is not req]
        inst.active = max(0, inst.active - 1)
        self.kill(inst, now, notify=notify)

    def instance_ready(self, inst: Instance, now: float, cold_start_ms: float | None = None) -> None:
        """``inst``'s cold start ended at ``now`` (``cold_start_ms``: its measured length; by
        default since the spawn decision). Queued requests start, else it is idle (READY)."""
        if inst.state is not STARTING:
            return                                   # killed meanwhile
        inst.ready_ms = now
        inst.fn.stats.record_cold_start(now - inst.created_ms if cold_start_ms is None else cold_start_ms)
        self.cold_starts += 1
        q = inst.queue
        if q:
            self.start_execution(inst, q.popleft(), now)
            while q and inst.active < inst.concurrency:
                self.start_execution(inst, q.popleft(), now)
        else:
            self._become_idle(inst, now)
            self.ask_idle(inst, now, READY)

    # ------------------------------------------------------------------ idle
    def _become_idle(self, inst: Instance, now: float) -> None:
        inst.state = IDLE
        inst.idle_since_ms = now
        inst.keepalive_until_ms = None
        inst.fn.idle.append(inst)
        inst.node_ref.idle[inst.id] = inst

    def _leave_idle(self, inst: Instance, now: float) -> None:
        d = now - inst.idle_since_ms
        inst.idle_total_ms += d
        self.idle_closed_mb_ms += inst.memory_mb * d
        inst.keepalive_until_ms = None
        idle = inst.fn.idle
        if idle[-1] is inst:
            idle.pop()
        else:
            idle.remove(inst)
        del inst.node_ref.idle[inst.id]

    def ask_idle(self, inst: Instance, now: float, reason: str) -> None:
        """An on_idle decision point (drivers may override to queue it)."""
        self.apply_idle(inst, self.decide_idle(inst, now), now)

    def keepalive_expired(self, inst: Instance, now: float) -> bool:
        """The driver's keep-alive timer for ``inst`` fired: ask on_idle (EXPIRED) if it is
        still idle and due. Returns whether it asked."""
        until = inst.keepalive_until_ms
        if inst.state is not IDLE or until is None or until > now:
            return False
        self.ask_idle(inst, now, EXPIRED)
        return True

    def apply_idle(self, inst: Instance, ans: Any, now: float) -> None:
        """Carry out an on_idle answer for an IDLE instance (checked)."""
        if inst.state is not IDLE:
            raise RuntimeError(f"on_idle answer for {inst!r}, which is not idle")
        if isinstance(ans, KeepAlive):
            until = now + ans.ms
            if not until > now:
                self._bad_answer("on_idle", f"on_idle for {inst!r} at {now} ms: {ans!r} is too short to move "
                                 "the clock (it would ask again at the same instant forever)")
                return self.apply_idle(inst, BASE_POLICY.on_idle(now, inst, inst.fn), now)
            inst.keepalive_until_ms = until
            self.emit_keep_alive(inst, until)
            q = inst.queue
            if q:
                reqs = list(q)
                q.clear()
                self.reroute(reqs, inst.fn, now)
        elif isinstance(ans, Kill):
            self.kill(inst, now)
        elif isinstance(ans, Invoke):
            q = inst.queue
            if not q:
                self._bad_answer("on_idle", f"on_idle for {inst!r}: INVOKE with nothing queued")
                return self.kill(inst, now)
            self.start_execution(inst, q.popleft(), now)
            while q and inst.active < inst.concurrency:
                self.start_execution(inst, q.popleft(), now)
        else:
            self._bad_answer("on_idle", f"on_idle for {inst!r} must return Invoke, KeepAlive or Kill, got {ans!r}")
            self.apply_idle(inst, BASE_POLICY.on_idle(now, inst, inst.fn), now)

    # ------------------------------------------------------------------ instance life
    def spawn(self, f: Function, req: Any, node_name: str | None, now: float) -> Instance | None:
        """A new instance of ``f`` for ``req`` (None: a pre-warm). Returns None (and rejects the
        request) at the function's max_instances, with no live node, or when it does not fit."""
        if f.max_instances is not None and len(f.instances) >= f.max_instances:
            if req is not None:
                self.emit_reject(req, now, RejectReason.MAX_INSTANCES,
                                 max(100.0, f.stats.predict_duration(self.request_view(req, f).payload_bytes)))
            return None
        node = self.choose_node(f, node_name)
        if node is None:
            if req is not None:
                self.emit_reject(req, now, RejectReason.NO_NODE, 1000.0)
            return None
        mem = f.memory_mb
        if node.used_mb + mem > node.capacity_mb + MEMORY_SLACK_MB and (
                req is None or not self.make_room(node, mem, now)):
            if req is not None:
                self.emit_reject(req, now, RejectReason.CAPACITY, 1000.0)
            return None
        node.used_mb += mem
        inst = self.new_instance(f, node, now, req is None)
        f.instances[inst.id] = inst
        node.instances[inst.id] = inst
        if req is not None:
            inst.queue.append(req)
        self.emit_spawn(inst, req, now)
        return inst

    def evict_for_spawn(self, f: Function, victims: Sequence[Any], now: float) -> bool:
        """Kill the idle instances a ``Spawn(evict=...)`` answer names, before the spawn. All are
        checked first (each a live IDLE instance of this platform, none twice): if one is not,
        the answer is invalid and nothing is killed; returns False (fallback mode)."""
        seen: set[int] = set()
        for v in victims:
            node = getattr(v, "node_ref", None)
            if (node is None or node.idle.get(getattr(v, "id", None)) is not v or v.id in seen
                    or node not in self.nodes):
                self._bad_answer("route", f"route for {f.name!r}: Spawn(evict=...) names {v!r}, which is not "
                                 "a live idle instance (or is named twice)")
                return False
            seen.add(v.id)
        for v in victims:
            self.kill(v, now, evicted=True)
        return True

    def make_room(self, node: Node, mem: float, now: float) -> bool:
        """Evict idle instances on ``node`` (the policy's choice) so ``mem`` MB fit."""
        if not node.idle:
            return False
        need = node.used_mb + mem - node.capacity_mb
        chosen = self.decide_evict(node, need, now)
        if sum(c.memory_mb for c in chosen) < need:
            return False
        for c in chosen:
            self.kill(c, now, evicted=True)
        return True

    def kill(self, inst: Instance, now: float, evicted: bool = False, notify: bool = True) -> None:
        """``inst`` dies (``notify``: tell its node). Requests queued on it are re-routed."""
        st = inst.state
        if st is DEAD:
            return
        if st is IDLE:
            self._leave_idle(inst, now)
        elif st is BUSY:
            inst.busy_ms += now - inst.busy_since_ms
            inst.active = 0
            inst.exec_started_ms = None
            inst.running.clear()
        inst.state = DEAD
        inst.died_ms = now
        inst.evicted = evicted
        node = inst.node_ref
        node.used_mb -= inst.memory_mb
        node.instances.pop(inst.id, None)
        f = inst.fn
        del f.instances[inst.id]
        if notify:
            self.emit_kill(inst, now)
        q = inst.queue
        if q:
            reqs = list(q)
            q.clear()
            self.reroute(reqs, f, now)
        elif not f.instances and not f.deleted:
            self._maybe_prewarm(f, now)

    def _maybe_prewarm(self, f: Function, now: float) -> None:
        delay = self.decide_prewarm(f, now)
        if delay is None:
            return
        if f.prewarm_handle is not None:
            self.emit_cancel_prewarm(f)
        self.emit_prewarm_timer(f, now + delay)

    def prewarm_due(self, f: Function, now: float) -> None:
        """A pre-warm timer fired (the driver already cleared ``f.prewarm_handle``)."""
        if not f.instances and not f.deleted:
            self.spawn(f, None, None, now)
