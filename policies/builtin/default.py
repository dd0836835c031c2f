"""wl's default policy: wait for a busy instance when that is expected to be quicker than a
cold start, and keep idle instances alive for as long as the function's gaps suggest."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from policies.builtin._common import EPS_MS, WorkLedger, idle_for, keep_until, number, warm_slot
from policies.interface import (
    INVOKE,
    SPAWN,
    Assign,
    CostWeights,
    FunctionView,
    IdleDecision,
    InstanceView,
    Policy,
    PolicySpecError,
    RequestView,
    RouteDecision,
)


class ExpectedWaitState:
    __slots__ = ("ledger", "gaps", "last_arrival_ms", "new_gaps", "keepalive_ms", "keepalive_cold_ms")

    def __init__(self, window: int) -> None:
        self.ledger = WorkLedger()                  # predicted durations put on each instance
        self.gaps: deque[float] = deque(maxlen=window)
        self.last_arrival_ms: float | None = None
        self.new_gaps = 0                           # gaps added since keepalive_ms was computed
        self.keepalive_ms: float | None = None
        self.keepalive_cold_ms = math.nan           # the cold-start estimate keepalive_ms used


class ExpectedWait(Policy):
    """The project default.

    Route: an idle instance (the warmest) if there is one. Otherwise, for each busy (or
    starting) instance, the expected wait = predicted duration of its running request -
    elapsed + the predicted durations of the requests queued on it (a starting one: the
    rest of its cold start first); take the smallest, and queue there if it is less than
    the expected cold start (the function's cold-start estimate), else cold start a new
    instance. Durations are the payload-aware predictions of
    ``fn.stats.predict_duration(payload_bytes)``, made for each request when it is routed
    and remembered per instance (a heap of predicted finish times finds the smallest wait
    in O(log n) amortised).

    Two guards against trusting a duration prediction too far (on the bundled 40-function
    Azure day the plain rule cost 1.6 million seconds of waiting behind executions that
    ran minutes longer than predicted):

    - the expected wait includes the predictions' typical error, an exponentially weighted
      mean of |actual - predicted| over the function's completed requests (before the
      first completion: the predicted duration itself), so functions whose durations vary
      by more than a cold start never wait, and functions with steady short durations do;
    - an instance whose running request has already outrun its prediction is not waited
      for (its remaining time is unknown; max(0, predicted - elapsed) would call it 0).

    Keep-alive (adaptive): after an execution, keep the instance idle for a window derived
    from the function's last ``window`` (64) inter-arrival gaps, clamped to
    [``min_keepalive_ms`` (1 s), ``max_keepalive_ms`` (30 min)], then kill it; with fewer
    than ``min_gaps`` (3) gaps seen it uses ``default_keepalive_ms`` (10 min). The window:

    - ``keepalive=cost`` (default): the one that minimises the expected cost of an idle
      period if the next gap is like the recent ones, memory held for min(gap, T) against
      a cold start when the gap outlasts T, priced with ``CostWeights`` (overridable with
      ``gb_s_usd`` and ``latency_usd_per_s``), plus ``keepalive_margin`` (5%);
    - ``keepalive=percentile``: the ``percentile`` (95th) of the gaps.

    The cost rule beats the 95th percentile on the bundled traces (weighted cost, seed 7:
    Azure 2019 10 functions 8.47 vs 21.69 USD, 40 functions 184.6 vs 220.5, Azure 2021
    0.178 vs 0.200), because a gap distribution with a long tail makes the percentile
    keep every instance of a bursty function idle through long lulls. The window is
    refreshed after every ``refresh_every`` (8) new gaps (at once while the window is
    filling), which keeps the per-decision cost O(1) amortised.

    Decision cost: O(1), or O(log instances) amortised when no instance is idle.
    """

    name = "default"

    def __init__(self, keepalive: str = "cost", percentile: float = 95.0, window: int = 64,
                 min_gaps: int = 3, min_keepalive_ms: float = 1_000.0,
                 max_keepalive_ms: float = 1_800_000.0, default_keepalive_ms: float = 600_000.0,
                 refresh_every: int = 8, keepalive_margin: float = 0.05,
                 gb_s_usd: float | None = None, latency_usd_per_s: float | None = None) -> None:
        n = self.name
        if keepalive not in ("cost", "percentile"):
            raise PolicySpecError(f"{n}: keepalive must be 'cost' or 'percentile', got {keepalive!r}")
        self.keepalive = keepalive
        d = CostWeights()
        self.weights = CostWeights(
            gb_s_usd=d.gb_s_usd if gb_s_usd is None else number(n, "gb_s_usd", gb_s_usd),
            latency_usd_per_s=(d.latency_usd_per_s if latency_usd_per_s is None
                               else number(n, "latency_usd_per_s", latency_usd_per_s, strict=False)))
        self.keepalive_margin = number(n, "keepalive_margin", keepalive_margin, strict=False)
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
        if type(st) is not ExpectedWaitState:     # unset, or another policy's (a hot swap)
            st = fn.policy_state = ExpectedWaitState(self.window)
        return st

    # ------------------------------------------------------------------ route
    def route(self, now_ms: float, request: RequestView, fn: FunctionView) -> RouteDecision:
        st = fn.policy_state
        if type(st) is not ExpectedWaitState:
            st = self.state(fn)
        last = st.last_arrival_ms
        if last is not None:
            gap = now_ms - last
            st.gaps.append(gap if gap > 0.0 else 0.0)     # max(0.0, gap), without the call
            st.new_gaps += 1
        st.last_arrival_ms = now_ms
        stats = fn.stats
        predicted = stats.duration.predict(request.payload_bytes)   # stats.predict_duration
        cold = stats.cold_start_ms
        ledger = st.ledger
        ledger.sync(fn, cold)
        idle = fn.idle
        inst = idle[-1] if idle else warm_slot(fn)
        if inst is not None:
            ledger.assigned(inst, predicted, now_ms)
            return Assign(inst)
        best, wait = ledger.soonest_free(now_ms)
        # the predictions' typical error (their own duration while none has completed yet)
        margin = ledger.abs_error_ms if ledger.abs_error_ms is not None else predicted
        if best is not None and wait + margin < cold:
            ledger.assigned(best, predicted, now_ms)
            return Assign(best)
        ledger.spawned(now_ms, predicted)
        return SPAWN

    # --------------------------------------------------------------- keep-alive
    def keepalive_ms(self, fn: FunctionView) -> float:
        """The current adaptive keep-alive window of ``fn``."""
        st = self.state(fn)
        if len(st.gaps) < self.min_gaps:
            return self.default_keepalive_ms
        cold = fn.stats.cold_start_ms
        # While the window fills, refresh at every call whose inputs changed (a new gap, or
        # a new cold-start estimate for the cost rule): with the same inputs the window
        # computed last time is the answer.
        if (st.keepalive_ms is None or st.new_gaps >= self.refresh_every
                or (len(st.gaps) < self.window and (st.new_gaps or cold != st.keepalive_cold_ms))):
            gaps = sorted(st.gaps)
            if self.keepalive == "percentile":
                k = max(0, math.ceil(self.percentile / 100.0 * len(gaps)) - 1)   # nearest rank
                window = gaps[k]
            else:
                window = self.cheapest_window(gaps, fn.memory_mb / 1024.0, cold)
            st.keepalive_ms = min(self.max_keepalive_ms, max(self.min_keepalive_ms, window))
            st.keepalive_cold_ms = cold
            st.new_gaps = 0
        return st.keepalive_ms

    def cheapest_window(self, sorted_gaps: list[float], mem_gb: float, cold_ms: float) -> float:
        """The keep-alive T minimising the expected cost of one idle period if the next gap
        is drawn from ``sorted_gaps``: memory for min(gap, T) plus, when the gap outlasts T,
        a cold start (its latency and the memory while it starts). Candidates are 0 and
        just past each observed gap. O(len(sorted_gaps))."""
        w = self.weights
        mem_per_ms = mem_gb * w.gb_s_usd / 1000.0
        cold = (w.latency_usd_per_s / 1000.0 + mem_per_ms) * cold_ms
        n = len(sorted_gaps)
        best_cost, best_window = cold, 0.0          # T = 0: every request cold
        covered = 0.0
        later = n                                   # n - k for the k-th smallest gap
        for gap in sorted_gaps:
            later -= 1
            covered += gap
            cost = (mem_per_ms * (covered + later * gap) + later * cold) / n
            if cost < best_cost:
                best_cost, best_window = cost, gap
        return best_window * (1.0 + self.keepalive_margin) if best_window > 0 else 0.0

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        st = fn.policy_state
        if type(st) is not ExpectedWaitState:
            st = self.state(fn)
        idle = idle_for(now_ms, instance)
        if idle <= EPS_MS:
            st.ledger.finished(instance, now_ms)
        if instance.queue:
            return INVOKE
        return keep_until(self.keepalive_ms(fn), idle)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "keepalive": self.keepalive, "percentile": self.percentile,
                "window": self.window, "keepalive_margin": self.keepalive_margin,
                "gb_s_usd": self.weights.gb_s_usd, "latency_usd_per_s": self.weights.latency_usd_per_s,
                "min_gaps": self.min_gaps, "min_keepalive_ms": self.min_keepalive_ms,
                "max_keepalive_ms": self.max_keepalive_ms,
                "default_keepalive_ms": self.default_keepalive_ms, "refresh_every": self.refresh_every}
