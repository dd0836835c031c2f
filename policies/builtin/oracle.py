"""The offline oracle: knows every future arrival and duration of the trace being simulated,
and keeps an instance warm exactly when that is cheaper than the cold start it avoids."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from heapq import heapify, heapreplace
from typing import Any

from policies.builtin._common import WorkLedger, number, warm_slot
from policies.interface import (
    IDLE,
    INVOKE,
    KILL,
    SPAWN,
    Assign,
    CostWeights,
    FunctionView,
    IdleDecision,
    InstanceView,
    KeepAlive,
    Policy,
    PolicySpecError,
    RequestView,
    RouteDecision,
)

# The most busy instances the queue-or-spawn look-ahead replays (the earliest free ones).
LOOKAHEAD_INSTANCES = 64


class FunctionFuture:
    """One function's whole trace, arranged for O(log n) look-ahead queries.

    ``demand[j]`` is the number of the function's requests executing right after arrival
    ``j`` if every request ran from its arrival for its duration (ends at the same instant
    as an arrival come first, so the freed instance can serve it). A max segment tree over
    ``demand`` answers "the first arrival from j on at which demand exceeds v".
    """

    __slots__ = ("arrivals", "durations", "ends", "demand", "size", "tree", "next_idx")

    def __init__(self, arrivals: Any, durations: Any) -> None:
        import numpy as np

        arrivals = np.asarray(arrivals, dtype=float)
        durations = np.asarray(durations, dtype=float)
        ends = np.sort(arrivals + durations)
        demand = np.arange(1, len(arrivals) + 1) - np.searchsorted(ends, arrivals, side="right")
        self.arrivals: list[float] = arrivals.tolist()
        self.durations: list[float] = durations.tolist()
        self.ends: list[float] = ends.tolist()
        self.demand: list[int] = demand.tolist()
        size = 1
        while size < max(1, len(self.demand)):
            size *= 2
        tree = [0] * (2 * size)
        tree[size:size + len(self.demand)] = self.demand
        for i in range(size - 1, 0, -1):
            a, b = tree[2 * i], tree[2 * i + 1]
            tree[i] = a if a > b else b
        self.size = size
        self.tree = tree
        self.next_idx = 0        # first arrival not routed yet

    def first_unrouted(self, now_ms: float) -> int:
        return max(self.next_idx, bisect_left(self.arrivals, now_ms))

    def demand_at(self, now_ms: float, j0: int) -> int:
        """Requests of the trace executing at ``now_ms`` among the arrivals before ``j0``."""
        return max(0, j0 - bisect_right(self.ends, now_ms))

    def first_exceeding(self, lo: int, hi: int, level: int) -> int:
        """First index j in [lo, hi) with demand[j] > level, or -1."""
        if lo >= hi:
            return -1
        x = level + 1
        if self.demand[lo] >= x:          # the common case: the very next arrival
            return lo
        tree, size = self.tree, self.size
        a, b = lo + size, hi + size
        right: list[int] = []
        node = -1
        while a < b:
            if a & 1:
                if tree[a] >= x:
                    node = a
                    break
                a += 1
            if b & 1:
                b -= 1
                right.append(b)
            a >>= 1
            b >>= 1
        if node < 0:
            for r in reversed(right):
                if tree[r] >= x:
                    node = r
                    break
            else:
                return -1
        while node < size:
            node = 2 * node if tree[2 * node] >= x else 2 * node + 1
        return node - size


class OracleState:
    __slots__ = ("future", "ledger", "prewarm_at_ms", "prewarm_delay_ms", "break_even_cold_ms",
                 "break_even_mem_mb", "break_even_ms")

    def __init__(self, future: FunctionFuture | None) -> None:
        self.future = future
        self.ledger = WorkLedger()                 # exact durations put on each instance
        self.prewarm_at_ms: float | None = None
        self.prewarm_delay_ms = 0.0
        # Oracle._break_even_ms as last computed and its inputs (on_idle needs it at every
        # decision; the inputs rarely change).
        self.break_even_cold_ms = math.nan
        self.break_even_mem_mb = math.nan
        self.break_even_ms = 0.0


class Oracle(Policy):
    """Offline reference policy that knows all future arrivals (simulator only).

    ``prepare(trace)`` stores, per function, the sorted arrival times and durations. The
    decisions, with cost in the same weights as the results (``CostWeights``: memory at
    ``gb_s_usd`` per GB-s, user latency beyond the execution at ``latency_usd_per_s``):

    * Keep or kill, when an instance X frees at t. Instances are interchangeable and routing
      is last-in-first-out (the warmest idle instance serves the next arrival), so X is
      next used at the first future arrival at which the function's demand (requests
      executing) rises above its present level: every free instance above X in the stack
      is used first. The present level is the trace's demand at t (or the number of busy
      instances, if smaller); the future demand comes from the trace with each request
      executing from its arrival. Keeping X until that use u costs
      ``mem_GB x (u - t) x gb_s_usd``. What keeping avoids:
        - if X is the last live instance, the engine pre-warms after a kill, so the
          alternative is to kill X and pre-warm one instance to be ready
          ``prewarm_margin_ms`` before the next arrival: ``mem_GB x (cold_start +
          margin) x gb_s_usd`` (memory while it starts, no latency);
        - otherwise a cold start at u: ``latency_usd_per_s x cold_start + mem_GB x
          cold_start x gb_s_usd``.
      X is kept until just after u (``slack_ms``) iff that costs less, else killed. If X
      is not used at u after all (another instance freed first), the engine asks again
      and the same rule decides from then on.
    * Route: the warmest idle instance. Else, knowing each busy instance's exact remaining
      work, queue on the one free soonest if (a) waiting costs this request less than a
      cold start would (``latency x wait < latency x cold_start + mem x cold_start``) and
      (b) a new instance would not save more waiting later: the next ``lookahead``
      arrivals (within ``lookahead_cold_starts`` cold starts' time) are replayed, each on
      the instance free soonest, once with this request queued and once with it on a new
      instance, and the spawn wins if it saves the later requests more waiting (in USD)
      than its start costs in memory. Else cold start. A pre-warmed instance still
      starting is simply the soonest-free candidate.
    * Evict (memory pressure): idle instances whose function's next arrival is furthest
      away first (Belady).

    Why this is a lower bound, and exactly when. Take one function whose instances each
    run one request at a time, a deterministic known cold start, memory that never runs
    out, and a policy that never lets a request wait behind another. For each level k,
    every maximal interval of length g during which fewer than k of the function's
    requests execute (a "gap" at level k) costs that policy either a k-th instance's
    memory for the whole gap (mem x g) or a spawn that restores the count, and a spawn
    costs at least the memory held while it starts (mem x cold_start), plus a cold
    start's latency unless it was made ahead of demand, which the engine allows only for
    one instance after the function's last instance died. Distinct (level, gap) pairs
    need distinct spawns, so the policy pays at least, per gap, min(mem x g, the
    cheapest replacement allowed there), plus each level's first cold start and the
    execution memory that every policy pays. Gaps at lower levels nest inside gaps at
    higher ones and are shorter, so "keep iff cheaper" is consistent across levels, and
    the oracle pays exactly that minimum per gap (up to ``prewarm_margin_ms`` and
    ``slack_ms`` of memory). Where the assumptions bend it is a reference, not a proof:
    cold starts and queueing shift executions away from their arrivals, so the demand it
    reads from the trace is then off by up to a cold start or a wait; and a policy that
    queues trades waiting for instances, where the oracle's choice is exact for the
    request itself but its effect on later requests is judged by the bounded replay
    above. On every bundled and synthetic trace tested, no built-in policy reaches the
    oracle's weighted cost (tests/test_oracle_bound.py, tests/test_policies_sim.py).

    Decision cost: O(log n) per idle decision (bisect + segment tree over the
    function's n arrivals); O(1) per route with an idle instance, else O(log instances)
    plus, when waiting is a candidate, the replay (at most ``lookahead`` arrivals).

    Parameters: gb_s_usd, latency_usd_per_s, request_usd (default: CostWeights()),
    prewarm (use pre-warming, default true), prewarm_margin_ms (default 1),
    slack_ms (keep-alive past the predicted use, default 1), lookahead (arrivals
    replayed, default 256), lookahead_cold_starts (replay horizon in cold starts,
    default 20).
    """

    name = "oracle"
    needs_future = True

    def __init__(self, gb_s_usd: float | None = None, latency_usd_per_s: float | None = None,
                 request_usd: float | None = None, prewarm: bool = True,
                 prewarm_margin_ms: float = 1.0, slack_ms: float = 1.0, lookahead: int = 256,
                 lookahead_cold_starts: float = 20.0) -> None:
        n = self.name
        d = CostWeights()
        self.weights = CostWeights(
            gb_s_usd=d.gb_s_usd if gb_s_usd is None else number(n, "gb_s_usd", gb_s_usd),
            latency_usd_per_s=(d.latency_usd_per_s if latency_usd_per_s is None
                               else number(n, "latency_usd_per_s", latency_usd_per_s, strict=False)),
            request_usd=d.request_usd if request_usd is None else number(n, "request_usd", request_usd,
                                                                         strict=False))
        if not isinstance(prewarm, bool):
            raise PolicySpecError(f"{n}: prewarm must be true or false, got {prewarm!r}")
        self.use_prewarm = prewarm
        self.prewarm_margin_ms = number(n, "prewarm_margin_ms", prewarm_margin_ms, strict=False)
        self.slack_ms = number(n, "slack_ms", slack_ms)
        self.lookahead = int(number(n, "lookahead", lookahead, strict=False))
        self.lookahead_cold_starts = number(n, "lookahead_cold_starts", lookahead_cold_starts,
                                            strict=False)
        self._futures: dict[str, FunctionFuture] | None = None
        self._row_function: list[str] = []
        self._row_index: list[int] = []

    # ------------------------------------------------------------------ prepare
    def prepare(self, trace: Any) -> None:
        import numpy as np

        missing = [c for c in ("function", "arrival_ms", "duration_ms") if c not in trace.columns]
        if missing:
            raise ValueError(f"oracle.prepare: trace lacks column(s) {', '.join(missing)}")
        names = trace["function"].astype(str).to_numpy()
        arrivals = trace["arrival_ms"].to_numpy(dtype=float)
        durations = trace["duration_ms"].to_numpy(dtype=float)
        uniq, codes = np.unique(names, return_inverse=True)
        order = np.lexsort((np.arange(len(arrivals)), arrivals, codes))
        bounds = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
        index_in_fn = np.empty(len(arrivals), dtype=np.int64)
        futures: dict[str, FunctionFuture] = {}
        for k, name in enumerate(uniq):
            rows = order[bounds[k]:bounds[k + 1]]
            futures[str(name)] = FunctionFuture(arrivals[rows], durations[rows])
            index_in_fn[rows] = np.arange(len(rows))
        self._futures = futures
        self._row_function = names.tolist()
        self._row_index = index_in_fn.tolist()

    def state(self, fn: FunctionView) -> OracleState:
        st = fn.policy_state
        if type(st) is not OracleState:     # unset, or another policy's (a hot swap)
            if self._futures is None:
                raise RuntimeError("the oracle needs prepare(trace) with the whole trace before a run "
                                   "(it is an offline policy; the live router cannot run it)")
            st = fn.policy_state = OracleState(self._futures.get(fn.name))
        return st

    def _duration(self, request: RequestView, fn: FunctionView, fut: FunctionFuture | None) -> float:
        """The request's exact duration from the trace; also marks it routed."""
        if fut is None:
            return fn.stats.predict_duration(request.payload_bytes)
        rid = request.id
        j = -1
        if 0 <= rid < len(self._row_index) and self._row_function[rid] == fn.name:
            j = self._row_index[rid]
            if fut.arrivals[j] != request.arrival_ms:
                j = -1
        if j < 0:   # ids that are not trace rows: find it by arrival time
            j = min(bisect_left(fut.arrivals, request.arrival_ms, lo=fut.next_idx), len(fut.arrivals) - 1)
        fut.next_idx = max(fut.next_idx, j + 1)
        return fut.durations[j]

    # ------------------------------------------------------------------ costs
    def _cold_cost(self, mem_gb: float, cold_ms: float) -> float:
        """USD of one cold start: its latency and the memory held while it starts."""
        w = self.weights
        return (w.latency_usd_per_s + mem_gb * w.gb_s_usd) * cold_ms / 1000.0

    def _break_even_ms(self, mem_gb: float, cold_ms: float) -> float:
        """Idle time whose memory costs as much as one cold start."""
        return self._cold_cost(mem_gb, cold_ms) / (max(mem_gb, 1e-12) * self.weights.gb_s_usd) * 1000.0

    # ------------------------------------------------------------------ route
    def route(self, now_ms: float, request: RequestView, fn: FunctionView) -> RouteDecision:
        st = fn.policy_state
        if type(st) is not OracleState:
            st = self.state(fn)
        duration = self._duration(request, fn, st.future)
        cold = fn.stats.cold_start_ms
        ledger = st.ledger
        ledger.sync(fn, cold)
        inst = warm_slot(fn)
        if inst is not None:
            ledger.assigned(inst, duration, now_ms)
            return Assign(inst)
        best, wait = ledger.soonest_free(now_ms)
        mem_gb = fn.memory_mb / 1024.0
        if best is not None and \
                self.weights.latency_usd_per_s * wait / 1000.0 < self._cold_cost(mem_gb, cold) and \
                not self._spawn_pays(now_ms, fn, st, duration, cold, mem_gb):
            ledger.assigned(best, duration, now_ms)
            return Assign(best)
        ledger.spawned(now_ms, duration)
        return SPAWN

    def _spawn_pays(self, now_ms: float, fn: FunctionView, st: OracleState, duration: float,
                    cold: float, mem_gb: float) -> bool:
        """Whether a new instance now saves more waiting over the coming arrivals than it
        costs: replay the next ``lookahead`` arrivals (within ``lookahead_cold_starts`` cold
        starts' time), each on the
        instance free soonest and with no further spawns, once with this request queued
        ("q") and once with it on a new instance ready after a cold start ("s"). Only the
        ``lookahead`` + 1 earliest-free instances can matter (at most LOOKAHEAD_INSTANCES
        are replayed, which only overstates both options' waits when more are busy). The
        replay stops early once every replayed instance of "q" is free again."""
        fut = st.future
        if fut is None:
            return True
        frees = st.ledger.earliest_finishes(now_ms, min(self.lookahead + 1, LOOKAHEAD_INSTANCES))
        if not frees:
            return True
        q = list(frees)                   # ascending: already a heap
        start = q[0] if q[0] > now_ms else now_ms
        wait_q = start - now_ms
        heapreplace(q, start + duration)
        s = frees + [now_ms + cold + duration]
        heapify(s)
        wait_s = cold
        q_all_free = max(frees[-1], start + duration)
        arrivals, durations = fut.arrivals, fut.durations
        lo = fut.next_idx
        hi = min(lo + self.lookahead, len(arrivals))
        limit = now_ms + self.lookahead_cold_starts * cold
        for j in range(lo, hi):
            a = arrivals[j]
            if a > limit or a >= q_all_free:
                break
            d = durations[j]
            t = q[0] if q[0] > a else a
            wait_q += t - a
            heapreplace(q, t + d)
            if t + d > q_all_free:
                q_all_free = t + d
            t = s[0] if s[0] > a else a
            wait_s += t - a
            heapreplace(s, t + d)
        w = self.weights
        return w.latency_usd_per_s * (wait_q - wait_s) > w.gb_s_usd * mem_gb * cold

    # ---------------------------------------------------------------- on_idle
    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        st = fn.policy_state
        if type(st) is not OracleState:
            st = self.state(fn)
        if instance.idle_since_ms == now_ms or instance.state != IDLE:    # an execution just ended
            st.ledger.finished(instance, now_ms)
        if instance.queue:
            return INVOKE
        fut = st.future
        if fut is None:
            return KILL               # never invoked again
        arrivals = fut.arrivals
        j0 = fut.next_idx
        if j0 < len(arrivals) and arrivals[j0] < now_ms:     # arrivals we did not route
            j0 = bisect_left(arrivals, now_ms, lo=j0)
        if j0 >= len(arrivals):
            return KILL
        cold = fn.stats.cold_start_ms
        gap = arrivals[j0] - now_ms
        mem = instance.memory_mb
        if cold != st.break_even_cold_ms or mem != st.break_even_mem_mb:
            st.break_even_ms = self._break_even_ms(mem / 1024.0, cold)
            st.break_even_cold_ms, st.break_even_mem_mb = cold, mem
        horizon = st.break_even_ms
        if len(fn.instances) <= 1:                  # fn.live_count
            # nothing else alive: the next arrival is ours; the alternative is a pre-warm
            if self.use_prewarm:
                if gap < cold + self.prewarm_margin_ms:
                    return KeepAlive(gap + self.slack_ms)
                st.prewarm_at_ms = now_ms
                st.prewarm_delay_ms = max(0.0, gap - cold - self.prewarm_margin_ms)
                return KILL
            if gap < horizon:
                return KeepAlive(gap + self.slack_ms)
            return KILL
        if gap >= horizon:
            return KILL
        # X is next used when the demand rises above the present level (LIFO routing)
        others_busy = len(fn.instances) - len(fn.idle) - (0 if instance.state == IDLE else 1)
        level = min(fut.demand_at(now_ms, j0), others_busy)
        if fut.demand[j0] <= level:
            hi = bisect_right(arrivals, now_ms + horizon, lo=j0)
            use = fut.first_exceeding(j0 + 1, hi, level)
            if use < 0:
                return KILL
            gap = arrivals[use] - now_ms
        return KeepAlive(gap + self.slack_ms)

    def prewarm(self, now_ms: float, fn: FunctionView) -> float | None:
        st = self.state(fn)
        if st.prewarm_at_ms is not None and st.prewarm_at_ms == now_ms:
            st.prewarm_at_ms = None
            return st.prewarm_delay_ms
        return None

    # ------------------------------------------------------------------ evict
    def evict(self, now_ms: float, need_mb: float,
              candidates: Sequence[InstanceView]) -> list[InstanceView]:
        def next_arrival(inst: InstanceView) -> float:
            fut = self.state(inst.fn).future
            if fut is None:
                return float("inf")
            j = fut.first_unrouted(now_ms)
            return fut.arrivals[j] if j < len(fut.arrivals) else float("inf")

        chosen: list[InstanceView] = []
        freed = 0.0
        for inst in sorted(candidates, key=next_arrival, reverse=True):
            if freed >= need_mb:
                break
            chosen.append(inst)
            freed += inst.memory_mb
        return chosen

    def describe(self) -> dict[str, Any]:
        w = self.weights
        return {"name": self.name, "gb_s_usd": w.gb_s_usd, "latency_usd_per_s": w.latency_usd_per_s,
                "request_usd": w.request_usd, "prewarm": self.use_prewarm,
                "prewarm_margin_ms": self.prewarm_margin_ms, "slack_ms": self.slack_ms,
                "lookahead": self.lookahead, "lookahead_cold_starts": self.lookahead_cold_starts}
