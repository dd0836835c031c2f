"""Small helpers shared by the built-in policies (no engine imports, no clock)."""

from __future__ import annotations

import math
from collections import deque
from heapq import heapify, heappop, heappush
from typing import Any

from policies.interface import BUSY, IDLE, KILL, STARTING, FunctionView, InstanceView, KeepAlive, Kill, PolicySpecError

# Keep-alive remainders below this many ms count as "ran out": the engine's re-ask at
# ``idle_since + window`` lands within float rounding of the window, not exactly on it.
EPS_MS = 1e-3

# A WorkLedger entry's fields (one list per instance)
FINISH, STARTED, WORK = 0, 1, 2


def number(policy: str, name: str, value: Any, *, minimum: float | None = 0.0,
           strict: bool = True, allow_none: bool = False) -> float | None:
    """Validate a numeric constructor parameter (they arrive from spec strings such as
    ``fixed_ttl:ttl_ms=60000``), raising PolicySpecError that names the policy and parameter."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PolicySpecError(f"{policy}: parameter {name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise PolicySpecError(f"{policy}: parameter {name} must be finite, got {value!r}")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        op = ">" if strict else ">="
        raise PolicySpecError(f"{policy}: parameter {name} must be {op} {minimum:g}, got {value!r}")
    return v


def warm_slot(fn: FunctionView) -> InstanceView | None:
    """The warmest idle instance, else (only when instances run several requests at once) a
    busy instance with a free slot. O(1) for single-concurrency functions."""
    if fn.idle:
        return fn.idle[-1]
    if fn.concurrency > 1:
        for inst in fn.instances.values():
            if inst.state == BUSY and inst.active < inst.concurrency:
                return inst
    return None


def idle_for(now_ms: float, inst: InstanceView) -> float:
    """How long ``inst`` has been idle: 0 right after an execution (the engine asks on_idle as
    the instance becomes idle), else the time since it became idle."""
    if inst.state != IDLE or inst.idle_since_ms is None:
        return 0.0
    return max(0.0, now_ms - inst.idle_since_ms)


def keep_until(window_ms: float, idle_ms: float) -> KeepAlive | Kill:
    """Keep an instance that has been idle ``idle_ms`` alive until it has been idle
    ``window_ms`` in total, then kill it. Deciding from the idle time (not from
    ``keepalive_until_ms``) makes "just finished" and "keep-alive ran out" the same rule,
    whatever the engine does with ``keepalive_until_ms`` after an execution."""
    remaining = window_ms - idle_ms
    return KeepAlive(remaining) if remaining > EPS_MS else KILL


class WorkLedger:
    """Per-function record of the work a policy put on each instance, so it can tell when
    a busy (or starting) instance will be free: the durations of the request running and of
    those queued behind it, the estimated time the instance finishes all of it, and a heap
    of those finish times for "which instance is free soonest" in O(log n) amortised.

    ``route`` cannot know the id of the instance a Spawn creates, so spawned work waits in
    ``pending`` and is bound, at the next ``sync``, to the unknown instance created at that
    same time (engines create the instance when they act on the Spawn, in decision order);
    other new instances (pre-warmed ones) carry no work. Finish times assume one execution
    at a time (for instances with concurrency > 1 they are an upper bound). Entries of dead
    instances are pruned lazily.

    One entry per instance, ``entries[id] = [finish, started, work]`` (indices FINISH,
    STARTED, WORK): one dict look-up per request where three dicts took three (the ledger
    runs at every route and every execution end of the default and learned policies).
    """

    __slots__ = ("entries", "heap", "pending", "seq", "n_finish")

    def __init__(self) -> None:
        # instance id -> [estimated finish of all its work (None: none recorded), when its
        # running request started (None: unknown), the durations of that request and the
        # ones queued behind it (a list: it rarely holds more than one, and a deque costs
        # ~5x as much to make, once per new instance)]
        self.entries: dict[int, list[Any]] = {}
        self.heap: list[tuple[float, int, InstanceView]] = []
        self.pending: deque[tuple[float, float]] = deque()   # (spawn time, duration)
        self.seq = 0
        self.n_finish = 0          # entries with a finish time (the heap's pruning threshold counts them)

    def set_finish(self, inst: InstanceView, entry: list[Any], finish_ms: float) -> None:
        if entry[FINISH] is None:
            self.n_finish += 1
        entry[FINISH] = finish_ms
        self.seq += 1
        heap = self.heap
        heappush(heap, (finish_ms, self.seq, inst))
        if len(heap) > 4 * self.n_finish + 64:
            self._prune()

    def _prune(self) -> None:
        """Drop superseded heap entries."""
        entries = self.entries
        self.heap = [e for e in self.heap if (r := entries.get(e[2].id)) is not None and r[FINISH] == e[0]]
        heapify(self.heap)

    def sync(self, fn: FunctionView, cold_start_ms: float) -> None:
        """Register instances created since the last call (newest first until a known one),
        binding pending spawned work to them in creation order."""
        entries = self.entries
        instances = fn.instances
        if not instances or next(reversed(instances)) in entries:
            return                                        # nothing new (the usual case)
        fresh: list[InstanceView] = []
        for inst in reversed(instances.values()):
            if inst.id in entries:
                break
            fresh.append(inst)
        if not fresh:
            return
        pending = self.pending
        for inst in reversed(fresh):                      # oldest first, as spawned
            while pending and pending[0][0] < inst.created_ms:
                pending.popleft()                         # that spawn made no instance (rejected)
            ready = inst.created_ms + cold_start_ms
            if pending and pending[0][0] == inst.created_ms:
                d = pending.popleft()[1]
                entry = entries[inst.id] = [None, ready, [d]]
                ready += d
            else:
                entry = entries[inst.id] = [None, None, []]
            if inst.state != IDLE:
                self.set_finish(inst, entry, ready)
        if len(entries) > 2 * len(instances) + 64:
            self.entries = entries = {i: e for i, e in entries.items() if i in instances}
            self.n_finish = sum(1 for e in entries.values() if e[FINISH] is not None)

    def assigned(self, inst: InstanceView, duration_ms: float, now_ms: float) -> None:
        """``route`` answered Assign(inst) for a request of ``duration_ms``."""
        entry = self.entries.get(inst.id)
        if entry is None:
            entry = self.entries[inst.id] = [None, now_ms, [duration_ms]]
        elif inst.state == IDLE:                 # an idle instance has finished all earlier work
            q = entry[WORK]                      # reuse its queue (no allocation per request)
            q.clear()
            q.append(duration_ms)
            entry[STARTED] = now_ms
        else:
            entry[WORK].append(duration_ms)
            f = entry[FINISH]
            self.set_finish(inst, entry, (f if f is not None and f > now_ms else now_ms) + duration_ms)
            return
        self.set_finish(inst, entry, now_ms + duration_ms)

    def spawned(self, now_ms: float, duration_ms: float) -> None:
        self.pending.append((now_ms, duration_ms))

    def finished(self, inst: InstanceView, now_ms: float) -> float | None:
        """``inst`` completed its running request at ``now_ms`` (called from on_idle); what is
        queued on it starts now. Returns how long that request ran (``now_ms`` minus its
        start; None when the ledger had no running request with a known start on ``inst``)."""
        entry = self.entries.get(inst.id)
        if entry is None:
            return None
        q = entry[WORK]
        if not q:
            return None
        del q[0]
        start = entry[STARTED]
        entry[STARTED] = now_ms
        if q:
            self.set_finish(inst, entry, now_ms + sum(q))
        return None if start is None else now_ms - start

    def earliest_finishes(self, now_ms: float, k: int) -> list[float]:
        """The ``k`` earliest finish times of busy or starting instances (ascending), as in
        ``soonest_free``. O(k log n)."""
        heap, entries = self.heap, self.entries
        out: list[tuple[float, int, InstanceView]] = []
        while heap and len(out) < k:
            e = heappop(heap)
            t, _, inst = e
            r = entries.get(inst.id)
            if r is not None and r[FINISH] == t and (inst.state == BUSY or inst.state == STARTING) and t >= now_ms:
                out.append(e)
        for e in out:
            heappush(heap, e)
        return [e[0] for e in out]

    def soonest_free(self, now_ms: float) -> tuple[InstanceView | None, float]:
        """The busy or starting instance that will have finished its work first, and the wait
        until then. Instances whose estimate has already passed (the running request outran
        its predicted duration) are dropped: their remaining time is unknown."""
        heap, entries = self.heap, self.entries
        while heap:
            t, _, inst = heap[0]
            # the state first: most stale entries are of instances idle or dead since
            if (inst.state == BUSY or inst.state == STARTING) and t >= now_ms:
                r = entries.get(inst.id)
                if r is not None and r[FINISH] == t:
                    return inst, t - now_ms
            heappop(heap)
        return None, float("inf")
