"""wl's default policy: queue behind a busy instance only when even a pessimistic estimate of
its remaining execution is shorter than a cold start, and keep idle instances alive for the
window that minimises the expected cost of the function's idle periods."""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from collections import deque
from itertools import accumulate
from typing import Any

from policies.builtin._common import EPS_MS, WorkLedger, idle_for, keep_until, number, warm_slot
from policies.interface import (
    INVOKE,
    KILL,
    SPAWN,
    STARTING,
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

GHOSTS = 64          # killed instances remembered per function (see ExpectedWait, keep-alive)
VECTOR_GAPS = 48     # cheapest_window: numpy's fixed cost per call beats the loop from this many gaps


class SortedWindow:
    """The last ``maxlen`` values, kept both in arrival order and sorted (O(maxlen) per add,
    which is a memmove of at most a few hundred bytes)."""

    __slots__ = ("order", "sorted")

    def __init__(self, maxlen: int) -> None:
        self.order: deque[float] = deque(maxlen=maxlen)
        self.sorted: list[float] = []

    def add(self, value: float) -> None:
        order = self.order
        if len(order) == order.maxlen:
            old = order[0]
            s = self.sorted
            del s[bisect_right(s, old) - 1]
        order.append(value)
        insort(self.sorted, value)

    def __len__(self) -> int:
        return len(self.order)


class DeferredSortedWindow:
    """A SortedWindow whose sorted copy is brought up to date only when read: for windows
    written far more often than read (the pooled idle periods, which only a function with too
    few of its own reads; the durations, read only when no instance is idle). The additions
    and evictions since the last read are applied then (or the window re-sorted when they are
    many): the same sorted values as a SortedWindow."""

    __slots__ = ("order", "_sorted", "_added", "_evicted", "_stale")

    def __init__(self, maxlen: int) -> None:
        self.order: deque[float] = deque(maxlen=maxlen)
        self._sorted: list[float] = []
        self._added: list[float] = []
        self._evicted: list[float] = []
        self._stale = False                 # too many changes since the last read: re-sort

    def add(self, value: float) -> None:
        order = self.order
        if self._stale:
            order.append(value)
            return
        if len(order) == order.maxlen:
            self._evicted.append(order[0])
        order.append(value)
        added = self._added
        added.append(value)
        if len(added) > 32 and 4 * len(added) > len(order):
            self._stale = True
            added.clear()
            self._evicted.clear()

    @property
    def sorted(self) -> list[float]:
        if self._stale:
            self._sorted = sorted(self.order)
            self._stale = False
        elif self._added:
            s = self._sorted
            for v in self._added:           # first the additions: an evicted value may be one of them
                insort(s, v)
            for v in self._evicted:
                del s[bisect_right(s, v) - 1]
            self._added.clear()
            self._evicted.clear()
        return self._sorted

    def __len__(self) -> int:
        return len(self.order)


def upper_quantile(sorted_values: list[float], lo: int, q: float) -> float:
    """The nearest-rank ``q`` quantile of ``sorted_values[lo:]`` (non-empty)."""
    n = len(sorted_values) - lo
    return sorted_values[lo + min(n - 1, max(0, math.ceil(q * n) - 1))]


_GRID_POSITIONS: dict[int, list[int]] = {}


def grid_positions(n: int) -> list[int]:
    """The indices of the pre-warm search's grid in ``n`` sorted samples (at most 16, evenly
    spread), cached per ``n`` (the window sizes repeat)."""
    pos = _GRID_POSITIONS.get(n)
    if pos is None:
        import numpy as np

        pos = _GRID_POSITIONS[n] = [int(k) for k in np.linspace(0, n - 1, min(n, 16)).astype(int)]
    return pos


class ExpectedWaitState:
    __slots__ = ("ledger", "durations", "idle_periods", "ghosts", "new_samples", "keepalive_ms",
                 "keepalive_cold_ms", "prewarm_at_ms", "prewarm_window_ms", "prewarmed_for")

    def __init__(self, window: int) -> None:
        self.ledger = WorkLedger()                   # predicted work put on each instance
        self.durations = DeferredSortedWindow(window)   # recent execution times (ms)
        self.idle_periods = SortedWindow(window)     # recent idle periods, had instances been kept
        self.ghosts: deque[float] = deque(maxlen=GHOSTS)   # idle_since of recently killed instances
        self.new_samples = 0                         # idle periods added since keepalive_ms was computed
        self.keepalive_ms: float | None = None
        self.keepalive_cold_ms = math.nan            # the cold-start estimate keepalive_ms used
        # When pre-warming beats keeping alive: kill after an execution, have an instance
        # ready prewarm_at_ms after the killed one went idle, keep it prewarm_window_ms.
        self.prewarm_at_ms: float | None = None
        self.prewarm_window_ms = 0.0
        self.prewarmed_for: float | None = None      # the ghost whose pre-warm was scheduled


class ExpectedWait(Policy):
    """The project default.

    Route: the warmest idle instance if there is one. Otherwise queue behind the busy (or
    starting) instance expected to be free first (a heap of predicted finish times, from the
    payload-aware ``fn.stats.predict_duration``), but only when a *pessimistic* estimate of
    the wait is shorter than the function's cold start:

    - busy, nothing else queued on it: the ``wait_quantile`` (95th percentile) of the
      remaining time of an execution that has already run ``elapsed`` ms, from the function's
      last ``window`` (128) execution times (those longer than ``elapsed``: durations are
      heavy-tailed, and an execution past its typical length is likely a long one). Fewer
      than ``min_tail`` (3) such samples: the remaining time is unknown, so no queueing;
    - starting, with only its own request: the rest of its cold start plus the
      ``wait_quantile`` of the durations;
    - anything else (a queue already waiting, fewer than ``min_durations`` (8) completed
      executions seen): a cold start.

    Queueing only while the wait bound is below a cold start bounds how long a request waits
    behind a long execution (on the bundled Azure 2019 day the mean-based rule made requests
    wait up to 34 s), and skips a cold start and the idle instance it would leave behind.

    Keep-alive: after an execution keep the instance idle for a window T, then kill it. T
    minimises the expected cost of an idle period (memory for min(gap, T), plus a cold start
    when the gap outlasts T, priced with ``CostWeights``; ``gb_s_usd`` and
    ``latency_usd_per_s`` override them) over the function's last ``window`` idle periods,
    plus ``keepalive_margin`` (5%); ``keepalive=percentile`` takes their ``percentile`` (95th)
    instead. An idle period is measured as if instances were never killed: the time until an
    idle instance is reused, or, for a killed instance, until the next cold start of its
    function (which that instance would have served: requests go to the warmest instance, so a
    killed instance is the next one used after the live idle ones). So the samples are not
    censored by the window chosen. With fewer than ``min_gaps`` (3) idle periods seen, T is
    the break-even time (the idle time that costs as much as a cold start: keeping alive that
    long costs at most twice the best choice in hindsight, the ski-rental bound), or
    ``default_keepalive_ms`` when given. T is clamped to [``min_keepalive_ms`` (1 s),
    ``max_keepalive_ms`` (30 min)] and refreshed after every ``refresh_every`` (8) new idle
    periods (at once while the window fills), keeping decisions O(1) amortised.

    Decision cost: O(1) amortised, O(log instances) when no instance is idle.
    """

    name = "default"

    def __init__(self, keepalive: str = "cost", percentile: float = 95.0, window: int = 128,
                 min_gaps: int = 3, min_keepalive_ms: float = 1_000.0,
                 max_keepalive_ms: float = 1_800_000.0, default_keepalive_ms: float | None = None,
                 refresh_every: int = 8, keepalive_margin: float = 0.05,
                 gb_s_usd: float | None = None, latency_usd_per_s: float | None = None,
                 wait_quantile: float = 0.95, min_durations: int = 8, min_tail: int = 3,
                 prewarming: bool = True, prewarm_slack: float = 0.02) -> None:
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
        self.default_keepalive_ms = number(n, "default_keepalive_ms", default_keepalive_ms, allow_none=True)
        self.refresh_every = int(number(n, "refresh_every", refresh_every, minimum=1, strict=False))
        self.wait_quantile = number(n, "wait_quantile", wait_quantile)
        if self.wait_quantile > 1:
            raise PolicySpecError(f"{n}: wait_quantile must be <= 1, got {wait_quantile!r}")
        self.min_durations = int(number(n, "min_durations", min_durations, minimum=1, strict=False))
        self.min_tail = int(number(n, "min_tail", min_tail, minimum=1, strict=False))
        self.prewarming = bool(prewarming)
        self.prewarm_slack = number(n, "prewarm_slack", prewarm_slack, strict=False)
        # Idle periods of all functions, the prior of a function with too few of its own.
        self.pooled = DeferredSortedWindow(4 * self.window)

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
        stats = fn.stats
        predicted = stats.duration.predict(request.payload_bytes)   # stats.predict_duration
        cold = stats.cold_start_ms
        ledger = st.ledger
        ledger.sync(fn, cold)
        idle = fn.idle
        if idle:
            inst = idle[-1]
            since = inst.idle_since_ms
            if inst.invocations == 0 and st.ghosts:   # a pre-warmed instance stands in for a killed one
                self.sample(st, now_ms - st.ghosts.pop())
            elif since is not None:
                self.sample(st, now_ms - since if now_ms > since else 0.0)
            ledger.assigned(inst, predicted, now_ms)
            return Assign(inst)
        inst = warm_slot(fn)                       # a busy instance with a free slot (concurrency > 1)
        if inst is not None:
            ledger.assigned(inst, predicted, now_ms)
            return Assign(inst)
        best, _ = ledger.soonest_free(now_ms)
        if best is not None and self.wait_bound(now_ms, best, st, cold) < cold:
            ledger.assigned(best, predicted, now_ms)
            return Assign(best)
        ghosts = st.ghosts
        if ghosts:                                 # the killed instance this request would have used
            self.sample(st, now_ms - ghosts.pop())
        ledger.spawned(now_ms, predicted)
        return SPAWN

    def sample(self, st: ExpectedWaitState, idle_period_ms: float) -> None:
        st.idle_periods.add(idle_period_ms)
        st.new_samples += 1
        self.pooled.add(idle_period_ms)

    def wait_bound(self, now_ms: float, inst: InstanceView, st: ExpectedWaitState, cold_ms: float) -> float:
        """A pessimistic (``wait_quantile``) wait for ``inst`` to be free; inf when unknown."""
        durations = st.durations
        if len(durations) < self.min_durations:
            return math.inf
        s = durations.sorted
        if inst.state == STARTING:
            if inst.queue_len > 1:
                return math.inf
            ready = inst.created_ms + cold_ms
            return max(0.0, ready - now_ms) + upper_quantile(s, 0, self.wait_quantile)
        if inst.queue_len > 0 or inst.exec_started_ms is None:
            return math.inf
        elapsed = now_ms - inst.exec_started_ms
        lo = bisect_right(s, elapsed)
        if len(s) - lo < self.min_tail:
            return math.inf
        return upper_quantile(s, lo, self.wait_quantile) - elapsed

    # --------------------------------------------------------------- keep-alive
    def break_even_ms(self, fn: FunctionView) -> float:
        """Idle ms whose memory costs as much as one cold start of ``fn``."""
        w = self.weights
        mem_per_ms = fn.memory_mb / 1024.0 * w.gb_s_usd / 1000.0
        cold = fn.stats.cold_start_ms
        if mem_per_ms <= 0:
            return self.max_keepalive_ms
        return (w.latency_usd_per_s / 1000.0 + mem_per_ms) * cold / mem_per_ms

    def keepalive_ms(self, fn: FunctionView) -> float:
        """The current keep-alive window of ``fn``."""
        st = self.state(fn)
        samples = st.idle_periods
        cold = fn.stats.cold_start_ms
        if len(samples) < self.min_gaps:
            if self.default_keepalive_ms is not None:
                window = self.default_keepalive_ms
            elif len(self.pooled) >= self.min_gaps:
                window = self.cheapest_window(self.pooled.sorted, fn.memory_mb / 1024.0, cold)
            else:
                window = self.break_even_ms(fn)
            return min(self.max_keepalive_ms, max(self.min_keepalive_ms, window))
        # While the window fills, refresh at every call whose inputs changed (a new sample,
        # or a new cold-start estimate for the cost rule): with the same inputs the window
        # computed last time is the answer.
        if (st.keepalive_ms is None or st.new_samples >= self.refresh_every
                or (len(samples) < self.window and (st.new_samples or cold != st.keepalive_cold_ms))):
            gaps = samples.sorted
            if self.keepalive == "percentile":
                k = max(0, math.ceil(self.percentile / 100.0 * len(gaps)) - 1)   # nearest rank
                window = gaps[k]
            else:
                window = self.cheapest_window(gaps, fn.memory_mb / 1024.0, cold)
                # Pre-warming pays only when typical idle periods are many cold starts long
                # (a busy function's are not: skip the O(grid x samples) search for it).
                if self.prewarming and gaps[len(gaps) // 2] > 10.0 * cold:
                    self.plan_prewarm(st, gaps, fn.memory_mb / 1024.0, cold, window)
                else:
                    st.prewarm_at_ms = None
            st.keepalive_ms = min(self.max_keepalive_ms, max(self.min_keepalive_ms, window))
            st.keepalive_cold_ms = cold
            st.new_samples = 0
        return st.keepalive_ms

    def cheapest_window(self, sorted_gaps: list[float], mem_gb: float, cold_ms: float) -> float:
        """The keep-alive T minimising the expected cost of one idle period if it is drawn
        from ``sorted_gaps``: memory for min(gap, T) plus, when the gap outlasts T, a cold
        start (its latency and the memory while it starts). Candidates are 0 and just past
        each observed gap. O(len(sorted_gaps)); from ``VECTOR_GAPS`` gaps on with numpy (the
        same sums in the same order: cumsum adds sequentially, as the loop does)."""
        w = self.weights
        mem_per_ms = mem_gb * w.gb_s_usd / 1000.0
        cold = (w.latency_usd_per_s / 1000.0 + mem_per_ms) * cold_ms
        n = len(sorted_gaps)
        if cold <= 0.0:                             # no cold-start price: T = 0 (no window costs < 0)
            return 0.0
        if n >= VECTOR_GAPS:
            import numpy as np

            g = np.array(sorted_gaps)
            later_ = np.arange(n - 1, -1, -1, dtype=np.float64)
            costs = (mem_per_ms * (np.cumsum(g) + later_ * g) + later_ * cold) / n
            k = int(costs.argmin())                 # the first cheapest, as the loop's strict <
            best = sorted_gaps[k] if costs[k] < cold else 0.0
            return best * (1.0 + self.keepalive_margin) if best > 0 else 0.0
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

    def plan_prewarm(self, st: ExpectedWaitState, sorted_gaps: list[float], mem_gb: float, cold_ms: float,
                     keep_window_ms: float) -> None:
        """Set ``st.prewarm_at_ms``/``prewarm_window_ms`` when killing after an execution and
        pre-warming an instance to be ready at S after the idle period began, kept for W,
        has a lower expected cost over the idle-period samples than keeping alive
        ``keep_window_ms``. Per sample gap g: g < S is a cold start; S <= g <= S + W costs
        the pre-warm's cold-start memory and g - S of idle memory; g > S + W both that
        (W) and a cold start. S and W come from a grid of the samples' quantiles (periodic
        functions, e.g. timers, have tight gaps longer than the break-even time).

        It runs at every refresh of a function's keep-alive (at each new idle period while
        its window fills), so it is kept cheap without changing a plan: the grid's costs come
        from prefix sums over the sorted gaps (O(grid^2 + samples)), and only when that leaves
        the choice open within rounding (two pairs, or the best pair and keeping alive, closer
        than ``tolerance``) does the gap-by-gap search (``plan_prewarm_exact``) decide, whose
        sums, tie-breaking and comparison are the reference."""
        n = len(sorted_gaps)
        w = self.weights
        mem_per_ms = mem_gb * w.gb_s_usd / 1000.0
        cold = (w.latency_usd_per_s / 1000.0 + mem_per_ms) * cold_ms
        prefix = list(accumulate(sorted_gaps, initial=0.0))
        k = bisect_right(sorted_gaps, keep_window_ms)
        keep = mem_per_ms * prefix[k] + (n - k) * (mem_per_ms * keep_window_ms + cold)
        st.prewarm_at_ms = None
        if keep <= 0.0:     # keeping alive costs nothing (no cold-start price): no pre-warm costs less
            return          # (every term of every pair's cost is >= 0; exact whatever the summing order)
        grid: list[float] = []
        for i in grid_positions(n):                 # the distinct grid values, ascending
            v = sorted_gaps[i]
            if not grid or v != grid[-1]:
                grid.append(v)
        slack = self.prewarm_slack
        starts = [s for s in (v * (1.0 - slack) - cold_ms for v in grid) if s > cold_ms]
        if not starts:                               # no pre-warm can be ready in time
            return
        import numpy as np  # only here: refreshes are rare

        ends = [v * (1.0 + slack) for v in grid]
        g = np.array(sorted_gaps)
        S = np.array(starts)[:, None]
        E = np.maximum(np.array(ends), S)                           # window end
        before = g.searchsorted(S, "left")                          # gaps < S: a cold start
        upto = g.searchsorted(E, "right")                           # gaps <= E: served in time
        P = np.array(prefix)
        approx = (before * cold + mem_per_ms * ((cold_ms - S) * (upto - before) + (P[upto] - P[before]))
                  + (n - upto) * (mem_per_ms * (E - S + cold_ms) + cold))
        best = int(approx.argmin())
        best_cost = float(approx.flat[best])
        # Either way of summing is off by far less than this (~n * 2^-52 of the largest
        # term); with a margin this wide the cheaper side is the same in exact sums.
        tolerance = 1e-9 * n * (cold + mem_per_ms * (cold_ms + 2.0 * sorted_gaps[-1] + 2.0 * float(E[-1, -1])))
        i, j = divmod(best, len(ends))
        if abs(best_cost - keep) <= tolerance or not self._only_equivalents(
                np.flatnonzero(approx <= best_cost + tolerance), E, i, j, sorted_gaps[-1]):
            self.plan_prewarm_exact(st, sorted_gaps, mem_gb, cold_ms, keep_window_ms)
            return
        if best_cost < keep:
            st.prewarm_at_ms = float(starts[i])
            st.prewarm_window_ms = float(max(ends[j] - starts[i], self.min_keepalive_ms))

    @staticmethod
    def _only_equivalents(band: Any, E: Any, i: int, j: int, largest_gap: float) -> bool:
        """Whether every (S, W) pair in ``band`` (flat indices) costs, gap by gap, exactly what
        pair (i, j) does: the same start and the same window end, or both ends past every gap
        (then each gap's cost is the same). Ties between such pairs go to the first, in both
        ways of summing."""
        m = E.shape[1]
        e = float(E[i, j])
        for b in band.tolist():
            i2, j2 = divmod(b, m)
            e2 = float(E[i2, j2])
            if i2 != i or not (e2 == e or (e2 >= largest_gap and e >= largest_gap)):
                return False
        return True

    def plan_prewarm_exact(self, st: ExpectedWaitState, sorted_gaps: list[float], mem_gb: float, cold_ms: float,
                           keep_window_ms: float) -> None:
        """``plan_prewarm`` summing every (S, W) pair's cost gap by gap: O(grid^2 x samples)."""
        import numpy as np

        w = self.weights
        mem_per_ms = mem_gb * w.gb_s_usd / 1000.0
        cold = (w.latency_usd_per_s / 1000.0 + mem_per_ms) * cold_ms
        g = np.asarray(sorted_gaps)
        keep = float(np.where(g <= keep_window_ms, mem_per_ms * g,
                              mem_per_ms * keep_window_ms + cold).sum())
        grid = np.unique(g[grid_positions(len(g))])
        starts = grid * (1.0 - self.prewarm_slack) - cold_ms        # ready a little early
        starts = starts[starts > cold_ms]                           # else a keep-alive does it
        st.prewarm_at_ms = None
        if starts.size == 0:
            return
        ends = grid * (1.0 + self.prewarm_slack)
        S = starts[:, None, None]
        E = np.maximum(ends[None, :, None], S)                      # window end
        G = g[None, None, :]
        cost = np.where(G < S, cold, mem_per_ms * cold_ms + mem_per_ms * (np.minimum(G, E) - S)
                        + np.where(G > E, cold, 0.0)).sum(axis=2)
        i, j = np.unravel_index(int(np.argmin(cost)), cost.shape)
        if cost[i, j] < keep:
            st.prewarm_at_ms = float(starts[i])
            st.prewarm_window_ms = float(max(ends[j] - starts[i], self.min_keepalive_ms))

    def prewarm(self, now_ms: float, fn: FunctionView) -> float | None:
        st = fn.policy_state
        if type(st) is not ExpectedWaitState or st.prewarm_at_ms is None or not st.ghosts:
            return None
        origin = st.ghosts[-1]
        if origin == st.prewarmed_for:
            return None                   # this idle period had its pre-warm (it went unused)
        st.prewarmed_for = origin
        spawn_at = origin + st.prewarm_at_ms - fn.stats.cold_start_ms
        return max(0.0, spawn_at - now_ms)

    @staticmethod
    def settle_execution(st: ExpectedWaitState, instance: InstanceView, now_ms: float) -> None:
        """At an instance's first idle moment: its last execution's duration joins the
        function's window and its work ledger entry closes (shared with the learned policy)."""
        ledger = st.ledger
        started = ledger.started.get(instance.id)
        if started is not None and ledger.work.get(instance.id):
            st.durations.add(max(0.0, now_ms - started))
        ledger.finished(instance, now_ms)

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        st = fn.policy_state
        if type(st) is not ExpectedWaitState:
            st = self.state(fn)
        idle = idle_for(now_ms, instance)
        if idle <= EPS_MS:
            self.settle_execution(st, instance, now_ms)
        if instance.queue:
            return INVOKE
        window = self.keepalive_ms(fn)
        if instance.invocations == 0 and st.prewarm_at_ms is not None:
            return keep_until(st.prewarm_window_ms, idle)      # pre-warmed: wait for its request
        if st.prewarm_at_ms is not None and len(fn.instances) == 1:
            answer = KILL          # the last instance: pre-warm its successor instead
        else:
            answer = keep_until(window, idle)
        if answer is KILL and instance.idle_since_ms is not None and instance.invocations > 0:
            st.ghosts.append(instance.idle_since_ms)
        return answer

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "keepalive": self.keepalive, "percentile": self.percentile,
                "window": self.window, "keepalive_margin": self.keepalive_margin,
                "gb_s_usd": self.weights.gb_s_usd, "latency_usd_per_s": self.weights.latency_usd_per_s,
                "min_gaps": self.min_gaps, "min_keepalive_ms": self.min_keepalive_ms,
                "max_keepalive_ms": self.max_keepalive_ms,
                "default_keepalive_ms": self.default_keepalive_ms, "refresh_every": self.refresh_every,
                "wait_quantile": self.wait_quantile, "min_durations": self.min_durations,
                "min_tail": self.min_tail, "prewarming": self.prewarming, "prewarm_slack": self.prewarm_slack}
