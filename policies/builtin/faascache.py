"""FaasCache's greedy-dual keep-alive (Fuerst & Sharma, "FaasCache: Keeping Serverless
Computing Alive with Greedy-Dual Caching", ASPLOS 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policies.builtin._common import number, warm_slot
from policies.interface import (
    INVOKE,
    KILL,
    SPAWN,
    Assign,
    FunctionView,
    IdleDecision,
    InstanceView,
    KeepAlive,
    Policy,
    Reject,
    RequestView,
    RouteDecision,
)


class GreedyDualState:
    """Per-function greedy-dual bookkeeping."""

    __slots__ = ("freq", "priority")

    def __init__(self) -> None:
        self.freq = 0            # invocations since the function last had no live instance
        self.priority = 0.0      # clock + freq * cost / size, set at the last access


class FaasCache(Policy):
    """Keep-alive as caching with Greedy-Dual-Size-Frequency.

    Idle instances are kept alive indefinitely (re-asked every ``recheck_ms`` and kept
    again); they only die when memory is short. Each function has a priority, set at every
    access (arrival) as

        priority = clock + frequency x cost / size

    with frequency = invocations of the function since it last had no live instance (in
    FaasCache the count lives on the containers, so it is lost when they all go), cost =
    its cold-start time (the function's cold-start estimate, ms) and size = its memory (MB).
    As in the paper all instances of a function share the priority of its latest access.

    Under memory pressure the engine calls ``evict``: idle candidates are evicted lowest
    priority first (least recently idle first among equals) until enough memory is free,
    and the clock advances to the priority of the last one evicted, so functions that have
    not been used since age relative to newly accessed ones.

    ``memory_cap_mb`` (optional) is a hard cap of the policy's own on the memory held by the
    instances of all functions it has seen (on top of the cluster's memory): a spawn that
    would pass it is never asked for. Instead the request is rejected (``Reject``, retry after
    ``retry_after_ms``; queueing it on a busy instance instead made requests wait behind
    executions of minutes on the Azure day, up to ~2 hours in all under a 150 GB cap), and
    the lowest-priority idle instances are
    evicted to make room: a policy cannot kill another function's instance from ``route``,
    so while a spawn is blocked every idle instance, when next asked (within ``recheck_ms``),
    is re-asked every ``pressure_recheck_ms`` (100 ms) and killed if its function has the lowest
    priority among functions with idle instances (the clock advances to it), until the blocked
    memory is freed. Live memory
    therefore never exceeds the cap (peak <= cap, tested). This check is O(functions seen)
    per decision; without a cap every decision is O(1) and evict is O(k log k) in the
    candidates. A simulator or router hook that lets a policy evict synchronously from
    ``route`` would spare the waits and rejections while idle instances are being killed.

    Parameters:
      memory_cap_mb: soft memory cap in MB (default none: only the cluster's memory binds).
      recheck_ms: how often idle instances are re-asked (default 3,600,000 = 1 h without a
        cap, 10,000 with one).
    """

    name = "faascache"

    def __init__(self, memory_cap_mb: float | None = None, recheck_ms: float | None = None,
                 pressure_recheck_ms: float = 100.0, retry_after_ms: float = 1_000.0) -> None:
        self.memory_cap_mb = number(self.name, "memory_cap_mb", memory_cap_mb, allow_none=True)
        self.pressure_recheck = KeepAlive(number(self.name, "pressure_recheck_ms", pressure_recheck_ms))
        self.reject = Reject(number(self.name, "retry_after_ms", retry_after_ms))
        self.blocked_mb = 0.0          # memory of spawns refused under the cap, not yet freed
        default_recheck = 3_600_000.0 if self.memory_cap_mb is None else 10_000.0
        self.recheck_ms = (default_recheck if recheck_ms is None
                           else number(self.name, "recheck_ms", recheck_ms))
        self.clock = 0.0
        self._fns: dict[str, FunctionView] = {}
        self._recheck = KeepAlive(self.recheck_ms)   # immutable: built once

    def prepare(self, trace: Any) -> None:
        self.clock = 0.0
        self._fns = {}
        self.blocked_mb = 0.0

    @staticmethod
    def state(fn: FunctionView) -> GreedyDualState:
        st = fn.policy_state
        if type(st) is not GreedyDualState:     # unset, or another policy's (a hot swap)
            st = fn.policy_state = GreedyDualState()
        return st

    def route(self, now_ms: float, request: RequestView, fn: FunctionView) -> RouteDecision:
        # (inline forms of self.state(fn), fn.live_count, max(mem, 1e-9) and warm_slot's
        # common case, which pick the same values: this runs at every arrival)
        st = fn.policy_state
        if type(st) is not GreedyDualState:
            st = self.state(fn)
        if not fn.instances:
            st.freq = 0
        st.freq += 1
        mem = fn.memory_mb
        st.priority = self.clock + st.freq * fn.stats.cold_start_ms / (1e-9 if mem < 1e-9 else mem)
        idle = fn.idle
        inst = idle[-1] if idle else warm_slot(fn)
        if inst is not None:
            return Assign(inst)
        if self.memory_cap_mb is None:
            return SPAWN
        self._fns[fn.name] = fn
        if self._used_mb() + mem <= self.memory_cap_mb:
            return SPAWN
        self.blocked_mb = max(self.blocked_mb, mem)
        return self.reject

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        if instance.queue:
            return INVOKE
        if self.memory_cap_mb is None:
            return self._recheck
        self._fns[fn.name] = fn
        if self.blocked_mb <= 0.0:
            return self._recheck
        if self.memory_cap_mb - self._used_mb() >= self.blocked_mb:
            self.blocked_mb = 0.0                     # room made: the blocked spawn fits now
            return self._recheck
        mine = self.state(fn).priority
        lowest = min((self.state(f).priority for f in self._fns.values() if f.idle), default=mine)
        if mine <= lowest:
            self.clock = max(self.clock, mine)
            return KILL
        return self.pressure_recheck

    def _used_mb(self) -> float:
        """Memory held by the live instances of every function seen."""
        return sum(len(f.instances) * f.memory_mb for f in self._fns.values())

    def evict(self, now_ms: float, need_mb: float,
              candidates: Sequence[InstanceView]) -> list[InstanceView]:
        order = sorted(candidates, key=lambda i: (self.state(i.fn).priority, i.idle_since_ms or 0.0))
        chosen: list[InstanceView] = []
        freed = 0.0
        for inst in order:
            if freed >= need_mb:
                break
            chosen.append(inst)
            freed += inst.memory_mb
        if chosen:
            self.clock = max(self.clock, self.state(chosen[-1].fn).priority)
        return chosen

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "memory_cap_mb": self.memory_cap_mb, "recheck_ms": self.recheck_ms,
                "pressure_recheck_ms": self.pressure_recheck.ms, "retry_after_ms": self.reject.retry_after_ms}
