"""FaasCache's greedy-dual keep-alive (Fuerst & Sharma, "FaasCache: Keeping Serverless
Computing Alive with Greedy-Dual Caching", ASPLOS 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policies.builtin._common import number, warm_slot
from policies.interface import (
    INVOKE,
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
    Spawn,
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
    As in the paper all instances of a function share the priority of its latest access, and
    a spawn that evicts takes its priority from the clock after the eviction.

    Eviction: idle instances go lowest priority first (least recently idle first among
    equals) until enough memory is free, and the clock advances to the priority of the last
    one evicted, so functions that have not been used since age relative to newly accessed
    ones. Memory is short in two ways:

    - the node's: the platform calls ``evict`` for a spawn that does not fit on its node;
    - ``memory_cap_mb`` (optional), a hard cap of the policy's own on the memory held by the
      live (starting, busy or idle) instances of all functions: a spawn that would pass it is
      answered ``Spawn(evict=[...])``, naming the idle instances (of any function) to kill
      first, chosen as above, so live memory never exceeds the cap (tested). When even every
      idle instance would not make room (all the memory is busy or starting), nothing is
      evicted and the request is rejected (``Reject``, retry after ``retry_after_ms``): it is
      not queued behind a busy instance, because executions on the Azure traces last up to
      minutes and queueing behind them made requests wait up to ~2 hours under a 150 GB cap.

    Cost: without a cap every decision is O(1) and evict is O(k log k) in the candidates; with
    one, a spawn costs O(functions seen), and one past the cap also O(k log k) in the idle
    instances.

    Parameters:
      memory_cap_mb: hard memory cap in MB (default none: only the cluster's memory binds).
      recheck_ms: how often idle instances are re-asked (default 3,600,000 = 1 h).
      retry_after_ms: the Reject's retry hint when nothing can be evicted (default 1,000).
    """

    name = "faascache"

    def __init__(self, memory_cap_mb: float | None = None, recheck_ms: float = 3_600_000.0,
                 retry_after_ms: float = 1_000.0) -> None:
        self.memory_cap_mb = number(self.name, "memory_cap_mb", memory_cap_mb, allow_none=True)
        self.recheck_ms = number(self.name, "recheck_ms", recheck_ms)
        self.reject = Reject(number(self.name, "retry_after_ms", retry_after_ms))
        self.clock = 0.0
        self._fns: dict[str, FunctionView] = {}      # every function seen (with a cap)
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
        value = st.freq * fn.stats.cold_start_ms / (1e-9 if mem < 1e-9 else mem)
        st.priority = self.clock + value
        idle = fn.idle
        inst = idle[-1] if idle else warm_slot(fn)
        if inst is not None:
            return Assign(inst)
        if self.memory_cap_mb is None:
            return SPAWN
        fns = self._fns
        fns[fn.name] = fn
        over = sum(len(f.instances) * f.memory_mb for f in fns.values()) + mem - self.memory_cap_mb
        if over <= 0.0:
            return SPAWN
        candidates = [i for f in fns.values() if f.idle for i in f.idle]
        if sum(i.memory_mb for i in candidates) < over:
            return self.reject                   # all the memory is busy or starting
        victims = self.evict(now_ms, over, candidates)
        st.priority = self.clock + value         # inserted after the eviction aged the clock
        return Spawn(evict=victims)

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        if instance.queue:
            return INVOKE
        if self.memory_cap_mb is not None:
            self._fns[fn.name] = fn              # (an instance from before a hot swap counts too)
        return self._recheck

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
                "retry_after_ms": self.reject.retry_after_ms}
