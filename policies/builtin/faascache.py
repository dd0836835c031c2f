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

    ``memory_cap_mb`` (optional) adds a soft cap of the policy's own on top of the
    cluster's memory: while the live memory of all functions the policy has seen exceeds
    it, an idle instance that is asked (after an execution or at a re-ask) is killed if its
    function has the lowest priority among functions with idle instances (the clock
    advances to it), else re-asked later, so the lowest-priority instances go first within
    one ``recheck_ms``. This check is O(functions seen) per idle decision; without a cap
    every decision is O(1) and evict is O(k log k) in the candidates.

    Parameters:
      memory_cap_mb: soft memory cap in MB (default none: only the cluster's memory binds).
      recheck_ms: how often idle instances are re-asked (default 3,600,000 = 1 h without a
        cap, 10,000 with one).
    """

    name = "faascache"

    def __init__(self, memory_cap_mb: float | None = None, recheck_ms: float | None = None) -> None:
        self.memory_cap_mb = number(self.name, "memory_cap_mb", memory_cap_mb, allow_none=True)
        default_recheck = 3_600_000.0 if self.memory_cap_mb is None else 10_000.0
        self.recheck_ms = (default_recheck if recheck_ms is None
                           else number(self.name, "recheck_ms", recheck_ms))
        self.clock = 0.0
        self._fns: dict[str, FunctionView] = {}
        self._recheck = KeepAlive(self.recheck_ms)   # immutable: built once

    def prepare(self, trace: Any) -> None:
        self.clock = 0.0
        self._fns = {}

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
        st.priority = self.clock + st.freq * fn.stats.cold_start_ms / (1e-9 if 1e-9 > mem else mem)
        if self.memory_cap_mb is not None:
            self._fns[fn.name] = fn
        idle = fn.idle
        inst = idle[-1] if idle else warm_slot(fn)
        return Assign(inst) if inst is not None else SPAWN

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        if instance.queue:
            return INVOKE
        if self.memory_cap_mb is not None and self._over_cap(fn):
            mine = self.state(fn).priority
            lowest = min((self.state(f).priority for f in self._fns.values() if f.idle), default=mine)
            if mine <= lowest:
                self.clock = max(self.clock, mine)
                return KILL
        return self._recheck

    def _over_cap(self, fn: FunctionView) -> bool:
        self._fns[fn.name] = fn
        used = sum(f.live_count * f.memory_mb for f in self._fns.values())
        return used > self.memory_cap_mb

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
        return {"name": self.name, "memory_cap_mb": self.memory_cap_mb, "recheck_ms": self.recheck_ms}
