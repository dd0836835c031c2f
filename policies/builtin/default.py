"""wl's default policy: wait for a busy instance when that is expected to be quicker than a
cold start, and keep idle instances alive for as long as the function's gaps suggest."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from policies.builtin._common import EPS_MS, WorkLedger, idle_for, keep_until, number, warm_slot
from policies.interface import BUSY, INVOKE, SPAWN, Assign, FunctionView, IdleDecision, InstanceView, \
    Policy, RequestView, RouteDecision
from policies.registry import PolicySpecError


class ExpectedWaitState:
    __slots__ = ("ledger", "gaps", "last_arrival_ms", "new_gaps", "keepalive_ms")

    def __init__(self, window: int) -> None:
        self.ledger = WorkLedger()                  # predicted durations put on each instance
        self.gaps: deque[float] = deque(maxlen=window)
        self.last_arrival_ms: float | None = None
        self.new_gaps = 0                           # gaps added since keepalive_ms was computed
        self.keepalive_ms: float | None = None


class ExpectedWait(Policy):
    """The project default.

    Route: an idle instance (the warmest) if there is one. Otherwise, for each busy
    instance, the expected wait = max(0, predicted duration of its running request -
    elapsed) + the predicted durations of the requests queued on it; take the smallest,
    and queue there if it is less than the expected cold start (the function's cold-start
    estimate), else cold start a new instance. Durations are the payload-aware predictions
    of ``fn.stats.predict_duration(payload_bytes)``, made for each request when it is
    routed and remembered per instance; ``predict_duration()`` stands in when a request's
    prediction is not known (e.g. a request routed by another policy before a hot swap).

    Keep-alive (adaptive): after an execution, keep the instance idle for the
    ``percentile`` (95th) of the function's last ``window`` (64) inter-arrival gaps,
    clamped to [``min_keepalive_ms``, ``max_keepalive_ms``], then kill it; with fewer than
    ``min_gaps`` (3) gaps seen it uses ``default_keepalive_ms`` (10 min). The percentile is
    refreshed after every ``refresh_every`` (8) new gaps (at once while the window is
    filling), which keeps the per-decision cost O(1) amortised.

    Route cost is O(instances of the function) when none is idle, O(1) otherwise.
    """

    name = "default"

    def __init__(self, percentile: float = 95.0, window: int = 64, min_gaps: int = 3,
                 min_keepalive_ms: float = 60_000.0, max_keepalive_ms: float = 1_800_000.0,
                 default_keepalive_ms: float = 600_000.0, refresh_every: int = 8) -> None:
        n = self.name
        self.percentile = number(n, "percentile", percentile)
        if self.percentile > 100:
            raise PolicySpecError(f"{n}: percentile must be <= 100, got {percentile!r}")
        self.window = int(number(n, "window", window, minimum=1, strict=False))
        self.min_gaps = int(number(n, "min_gaps", min_gaps, minimum=1, strict=False))
        self.min_keepalive_ms = number(n, "min_keepalive_ms", min_keepalive_ms)
        self.max_keepalive_ms = number(n, "max_keepalive_ms", max_keepalive_ms)
        if self.min_keepalive_ms > self.max_keepalive_ms:
            raise PolicySpecError(f"{n}: min_keepalive_ms ({min_keepalive_ms}) exceeds "
                                  f"max_keepalive_ms ({max_keepalive_ms})")
        self.default_keepalive_ms = number(n, "default_keepalive_ms", default_keepalive_ms)
        self.refresh_every = int(number(n, "refresh_every", refresh_every, minimum=1, strict=False))

    def state(self, fn: FunctionView) -> ExpectedWaitState:
        st = fn.policy_state
        if st is None:
            st = fn.policy_state = ExpectedWaitState(self.window)
        return st

    # ------------------------------------------------------------------ route
    def route(self, now_ms: float, request: RequestView, fn: FunctionView) -> RouteDecision:
        st = self.state(fn)
        if st.last_arrival_ms is not None:
            st.gaps.append(max(0.0, now_ms - st.last_arrival_ms))
            st.new_gaps += 1
        st.last_arrival_ms = now_ms
        predicted = fn.stats.predict_duration(request.payload_bytes)
        ledger = st.ledger
        inst = warm_slot(fn)
        if inst is not None:
            ledger.assigned(inst, predicted)
            return Assign(inst)
        ledger.bind(fn)
        best, best_wait = self.shortest_wait(now_ms, fn)
        if best is not None and best_wait < fn.stats.cold_start_ms:
            ledger.assigned(best, predicted)
            return Assign(best)
        ledger.spawned(now_ms, predicted)
        return SPAWN

    def shortest_wait(self, now_ms: float, fn: FunctionView) -> tuple[InstanceView | None, float]:
        """The busy instance a queued request would start soonest on, and that expected wait."""
        st = self.state(fn)
        default = fn.stats.predict_duration()
        cold = fn.stats.cold_start_ms
        best, best_wait = None, math.inf
        for inst in fn.instances.values():
            if inst.state != BUSY:
                continue
            wait = st.ledger.remaining_ms(inst, now_ms, cold, default)
            if wait < best_wait:
                best, best_wait = inst, wait
                if wait <= 0.0:
                    break
        return best, best_wait

    # --------------------------------------------------------------- keep-alive
    def keepalive_ms(self, fn: FunctionView) -> float:
        """The current adaptive keep-alive window of ``fn``."""
        st = self.state(fn)
        if len(st.gaps) < self.min_gaps:
            return self.default_keepalive_ms
        if st.keepalive_ms is None or st.new_gaps >= self.refresh_every or len(st.gaps) < self.window:
            gaps = sorted(st.gaps)
            # nearest-rank percentile
            k = max(0, math.ceil(self.percentile / 100.0 * len(gaps)) - 1)
            st.keepalive_ms = min(self.max_keepalive_ms, max(self.min_keepalive_ms, gaps[k]))
            st.new_gaps = 0
        return st.keepalive_ms

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        st = self.state(fn)
        idle = idle_for(now_ms, instance)
        if idle <= EPS_MS:
            st.ledger.finished(instance)
        if instance.queue:
            return INVOKE
        return keep_until(self.keepalive_ms(fn), idle)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "percentile": self.percentile, "window": self.window,
                "min_gaps": self.min_gaps, "min_keepalive_ms": self.min_keepalive_ms,
                "max_keepalive_ms": self.max_keepalive_ms,
                "default_keepalive_ms": self.default_keepalive_ms, "refresh_every": self.refresh_every}
