"""Small helpers shared by the built-in policies (no engine imports, no clock)."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from policies.interface import BUSY, IDLE, KILL, FunctionView, InstanceView, KeepAlive, Kill
from policies.registry import PolicySpecError

# Keep-alive remainders below this many ms count as "ran out": the engine's re-ask at
# ``idle_since + window`` lands within float rounding of the window, not exactly on it.
EPS_MS = 1e-3


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
    """Per-function record of the work a policy put on each instance (the duration of the
    running request and of those queued behind it), so a policy can tell how long a busy
    instance still needs.

    ``route`` cannot know the id of the instance a Spawn creates, so spawned work waits in
    ``pending`` and is bound to the next unknown instance created at that same time (engines
    create the instance when they act on the Spawn, in decision order). Instances nobody
    bound (pre-warmed ones) carry no work. Entries of dead instances are pruned lazily.
    """

    __slots__ = ("work", "pending")

    def __init__(self) -> None:
        self.work: dict[int, deque[float]] = {}
        self.pending: deque[tuple[float, float]] = deque()   # (spawn time, duration)

    def assigned(self, inst: InstanceView, duration_ms: float) -> None:
        q = self.work.get(inst.id)
        if q is None or inst.state == IDLE:      # an idle instance has finished all earlier work
            q = self.work[inst.id] = deque()
            self._prune(inst.fn)
        q.append(duration_ms)

    def spawned(self, now_ms: float, duration_ms: float) -> None:
        self.pending.append((now_ms, duration_ms))

    def bind(self, fn: FunctionView) -> None:
        """Attach pending spawned work to the instances created for it."""
        if not self.pending:
            return
        fresh: list[InstanceView] = []
        for inst in reversed(fn.instances.values()):   # newest first, stop at known ones
            if inst.id in self.work:
                break
            fresh.append(inst)
        for inst in reversed(fresh):                      # oldest first, as spawned
            while self.pending and self.pending[0][0] < inst.created_ms:
                self.pending.popleft()                    # its spawn never produced an instance
            if self.pending and self.pending[0][0] == inst.created_ms:
                self.work[inst.id] = deque([self.pending.popleft()[1]])
            else:
                self.work[inst.id] = deque()              # pre-warmed: no work of ours
        self._prune(fn)

    def _prune(self, fn: FunctionView) -> None:
        if len(self.work) > 2 * len(fn.instances) + 64:
            self.work = {i: q for i, q in self.work.items() if i in fn.instances}

    def finished(self, inst: InstanceView) -> None:
        """``inst`` completed its running request (called from on_idle)."""
        q = self.work.get(inst.id)
        if q:
            q.popleft()

    def remaining_ms(self, inst: InstanceView, now_ms: float, cold_start_ms: float,
                     default_ms: float) -> float:
        """Time until ``inst`` has finished the running request and everything queued on it.
        Unknown durations count as ``default_ms``."""
        q = self.work.get(inst.id)
        if inst.state == BUSY:
            if q and len(q) == inst.queue_len + 1:
                head, rest = q[0], sum(q) - q[0]
            else:
                head, rest = default_ms, inst.queue_len * default_ms
            return max(0.0, head - inst.elapsed_ms(now_ms)) + rest
        # starting: what is left of its cold start, then the work put on it
        left = max(0.0, cold_start_ms - (now_ms - inst.created_ms))
        return left + (sum(q) if q else inst.queue_len * default_ms)
