"""wl's default policy: queue behind a busy instance only when even a pessimistic estimate of
its remaining execution is shorter than a cold start, and keep idle instances alive for the
window that minimises the expected cost of the function's idle periods."""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from collections import deque
from typing import Any

from policies.builtin._common import EPS_MS, WorkLedger, keep_until, number, warm_slot
from policies.interface import (
    IDLE,
    INVOKE,
    KILL,
    SPAWN,
    STARTING,
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

GHOSTS = 64          # killed instances remembered per function (see ExpectedWait, keep-alive)


class _SortedArray:
    """The ``array`` view of a window's ``sorted`` values (its ``_array`` slot is reset by
    every add)."""

    __slots__ = ()

    @property
    def array(self) -> Any:
        """``sorted`` as a float64 numpy array (for the compiled kernels), built once per change."""
        a = self._array
        if a is None:
            values = self.sorted
            np = _np or _kernels()[0]
            # np.fromiter: faster than np.array of a list
            a = self._array = np.fromiter(values, np.float64, len(values))
        return a


class SortedWindow(_SortedArray):
    """The last ``maxlen`` values, kept both in arrival order and sorted (O(maxlen) per add,
    which is a memmove of at most a few hundred bytes)."""

    __slots__ = ("order", "sorted", "_array")

    def __init__(self, maxlen: int) -> None:
        self.order: deque[float] = deque(maxlen=maxlen)
        self.sorted: list[float] = []
        self._array: Any = None             # the sorted values as a numpy array, until the next add

    def add(self, value: float) -> None:
        order = self.order
        s = self.sorted
        if len(order) == order.maxlen:
            del s[bisect_right(s, order[0]) - 1]
        order.append(value)
        insort(s, value)
        self._array = None

    def __len__(self) -> int:
        return len(self.order)


class DeferredSortedWindow(_SortedArray):
    """A SortedWindow whose sorted copy is brought up to date only when read: for windows
    written far more often than read (the pooled idle periods, which only a function with too
    few of its own reads; the durations, read only when no instance is idle). The additions
    and evictions since the last read are applied then (or the window re-sorted when they are
    many): the same sorted values as a SortedWindow."""

    __slots__ = ("order", "_sorted", "_added", "_evicted", "_stale", "_array")

    def __init__(self, maxlen: int) -> None:
        self.order: deque[float] = deque(maxlen=maxlen)
        self._sorted: list[float] = []
        self._added: list[float] = []
        self._evicted: list[float] = []
        self._stale = False                 # too many changes since the last read: re-sort
        self._array: Any = None             # the sorted values as a numpy array, until the next add

    def add(self, value: float) -> None:
        order = self.order
        self._array = None
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


class DurationWindow:
    """The last ``maxlen`` execution times of one function, in a float64 ring (``add``: one
    float store), for ``ExpectedWait.wait_bound``'s one question: the nearest-rank quantile of
    the times longer than an execution's elapsed time, answered by a compiled selection
    (``_upper_quantile_above``) over the ring instead of keeping a sorted copy: the same value
    as ``upper_quantile`` of the sorted window (an order statistic is one of the values)."""

    __slots__ = ("maxlen", "appended", "ring", "scratch", "_view")

    def __init__(self, maxlen: int) -> None:
        np = _np or _kernels()[0]
        self.maxlen = maxlen
        self.appended = 0
        buf = np.zeros(2 * maxlen)
        self.ring = buf[:maxlen]                # value j at ring[j % maxlen]
        self.scratch = buf[maxlen:]             # the selection's work space
        self._view = memoryview(self.ring)      # float stores from Python

    def add(self, value: float) -> None:
        j = self.appended
        self._view[j % self.maxlen] = value
        self.appended = j + 1

    @property
    def order(self) -> list[float]:
        """The values kept, oldest first."""
        j, m = self.appended, self.maxlen
        return [self._view[k % m] for k in range(max(0, j - m), j)]

    @property
    def sorted(self) -> list[float]:
        return sorted(self.order)

    def quantile_above(self, threshold: float, q: float, min_tail: int) -> float:
        """``upper_quantile(sorted, bisect_right(sorted, threshold), q)``; inf when fewer than
        ``min_tail`` values exceed ``threshold``."""
        n = self.appended if self.appended < self.maxlen else self.maxlen
        return _QUANTILE_ABOVE(self.ring, n, threshold, q, min_tail, self.scratch)

    def __len__(self) -> int:
        return self.appended if self.appended < self.maxlen else self.maxlen

    def __getstate__(self) -> dict[str, Any]:
        return {"maxlen": self.maxlen, "appended": self.appended, "ring": self.ring.copy()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["maxlen"])
        self.ring[:] = state["ring"]
        self.appended = state["appended"]


def upper_quantile(sorted_values: list[float], lo: int, q: float) -> float:
    """The nearest-rank ``q`` quantile of ``sorted_values[lo:]`` (non-empty)."""
    n = len(sorted_values) - lo
    return sorted_values[lo + min(n - 1, max(0, math.ceil(q * n) - 1))]


_GRID_POSITIONS: dict[int, list[int]] = {}
_GRID_ARRAYS: dict[int, Any] = {}


def grid_positions(n: int) -> list[int]:
    """The indices of the pre-warm search's grid in ``n`` sorted samples (at most 16, evenly
    spread), cached per ``n`` (the window sizes repeat)."""
    pos = _GRID_POSITIONS.get(n)
    if pos is None:
        import numpy as np

        pos = _GRID_POSITIONS[n] = [int(k) for k in np.linspace(0, n - 1, min(n, 16)).astype(int)]
    return pos


def _grid_array(n: int) -> Any:
    """``grid_positions(n)`` as an int64 numpy array (the compiled search's input), cached per ``n``."""
    a = _GRID_ARRAYS.get(n)
    if a is None:
        np = _kernels()[0]
        a = _GRID_ARRAYS[n] = np.array(grid_positions(n), dtype=np.int64)
    return a


# The keep-alive search and the pre-warm search, compiled by numba (``_kernels``). Plain
# Python here (``.py_func`` of the compiled ones); each sum and comparison is the one the
# numpy and list code they replace did, in the same order (numba, without fastmath, neither
# reorders nor fuses floating-point operations), so the windows and plans are bit-identical.

def _cheapest_gap(g: Any, mem_per_ms: float, cold: float) -> float:
    """The gap of sorted ``g`` whose keep-alive (just past it) has the lowest mean cost per
    idle period, if that is below ``cold`` (every period cold), else 0.0; the first such gap
    on ties. See ``ExpectedWait.cheapest_window``."""
    n = g.shape[0]
    best_cost = cold
    best = 0.0
    covered = 0.0                           # the sum of the gaps up to this one, added in order
    later = n                               # n - k for the k-th smallest gap
    for k in range(n):
        gap = g[k]
        later -= 1
        covered += gap
        cost = (mem_per_ms * (covered + later * gap) + later * cold) / n
        if cost < best_cost:
            best_cost = cost
            best = gap
    return best


def _prewarm_search(g: Any, pos: Any, mem_per_ms: float, cold: float, cold_ms: float, keep_window_ms: float,
                    slack: float) -> tuple[int, float, float]:
    """``ExpectedWait.plan_prewarm``'s search over sorted ``g`` from prefix sums: (0, 0, 0)
    when keeping alive is cheaper or no pre-warm can be ready in time, (1, start, end) for the
    cheapest (start, window end) pair when it beats keeping alive, (2, 0, 0) when rounding
    could change the choice (the gap-by-gap search decides)."""
    n = g.shape[0]
    prefix = _np.empty(n + 1)
    prefix[0] = 0.0
    for t in range(n):
        prefix[t + 1] = prefix[t] + g[t]
    k = _np.searchsorted(g, keep_window_ms, side="right")
    keep = mem_per_ms * prefix[k] + (n - k) * (mem_per_ms * keep_window_ms + cold)
    if keep <= 0.0:     # keeping alive costs nothing (no cold-start price): no pre-warm costs less
        return 0, 0.0, 0.0
    grid = _np.empty(pos.shape[0])          # the distinct grid values, ascending
    m = 0
    for t in range(pos.shape[0]):
        v = g[pos[t]]
        if m == 0 or v != grid[m - 1]:
            grid[m] = v
            m += 1
    starts = _np.empty(m)
    ends = _np.empty(m)
    ns = 0
    below, above = 1.0 - slack, 1.0 + slack
    for t in range(m):
        s = grid[t] * below - cold_ms       # ready a little early
        if s > cold_ms:                     # else a keep-alive does it
            starts[ns] = s
            ns += 1
        ends[t] = grid[t] * above
    if ns == 0:                             # no pre-warm can be ready in time
        return 0, 0.0, 0.0
    approx = _np.empty(ns * m)
    for i in range(ns):
        s = starts[i]
        before = _np.searchsorted(g, s, side="left")        # gaps < s: a cold start
        for j in range(m):
            e = ends[j] if ends[j] > s else s           # window end
            upto = _np.searchsorted(g, e, side="right")     # gaps <= e: served in time
            approx[i * m + j] = (before * cold + mem_per_ms * ((cold_ms - s) * (upto - before)
                                                               + (prefix[upto] - prefix[before]))
                                 + (n - upto) * (mem_per_ms * (e - s + cold_ms) + cold))
    best = 0                                # the first cheapest pair, as argmin
    best_cost = approx[0]
    for b in range(1, ns * m):
        if approx[b] < best_cost:
            best_cost = approx[b]
            best = b
    # Either way of summing is off by far less than this (~n * 2^-52 of the largest
    # term); with a margin this wide the cheaper side is the same in exact sums.
    last_end = ends[m - 1] if ends[m - 1] > starts[ns - 1] else starts[ns - 1]
    tolerance = 1e-9 * n * (cold + mem_per_ms * (cold_ms + 2.0 * g[n - 1] + 2.0 * last_end))
    if abs(best_cost - keep) <= tolerance:
        return 2, 0.0, 0.0
    i, j = best // m, best % m
    e_best = ends[j] if ends[j] > starts[i] else starts[i]
    largest = g[n - 1]
    for b in range(ns * m):                 # a pair as cheap within rounding must cost the same, gap by gap:
        if approx[b] <= best_cost + tolerance:      # the same start and end, or both ends past every gap
            i2, j2 = b // m, b % m
            e2 = ends[j2] if ends[j2] > starts[i2] else starts[i2]
            if i2 != i or not (e2 == e_best or (e2 >= largest and e_best >= largest)):
                return 2, 0.0, 0.0
    if best_cost < keep:
        return 1, starts[i], ends[j]
    return 0, 0.0, 0.0


def _upper_quantile_above(ring: Any, n: int, threshold: float, q: float, min_tail: int, scratch: Any) -> float:
    """``upper_quantile(s, bisect_right(s, threshold), q)`` for ``s`` the sorted ``ring[:n]``
    (inf when fewer than ``min_tail`` values exceed ``threshold``), without sorting: the
    values above ``threshold`` are copied to ``scratch`` and the one of the nearest rank
    selected in place (Hoare's selection: an order statistic is one of the values, so the
    answer is the sorted window's, to the bit)."""
    m = 0
    for j in range(n):
        v = ring[j]
        if v > threshold:                       # bisect_right: values <= threshold come before
            scratch[m] = v
            m += 1
    if m < min_tail or m == 0:
        return _np.inf
    k = min(m - 1, max(0, math.ceil(q * m) - 1))
    lo, hi = 0, m - 1
    while lo < hi:                              # the k-th smallest of scratch[:m] into scratch[k]
        pivot = scratch[(lo + hi) >> 1]
        i, j = lo, hi
        while i <= j:
            while scratch[i] < pivot:
                i += 1
            while scratch[j] > pivot:
                j -= 1
            if i <= j:
                scratch[i], scratch[j] = scratch[j], scratch[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break                               # scratch[j + 1 .. i - 1] all equal the pivot
    return scratch[k]


_np: Any = None
_KERNELS: tuple[Any, Any, Any] | None = None
_QUANTILE_ABOVE: Any = None     # compiled _upper_quantile_above (set by _kernels)


def _kernels() -> tuple[Any, Any, Any]:
    """(numpy, compiled ``_cheapest_gap``, compiled ``_prewarm_search``), compiled (or loaded
    from numba's cache next to this module) on first use: ExpectedWait's constructor, so a
    decision never waits for a compilation."""
    global _np, _KERNELS, _QUANTILE_ABOVE
    if _KERNELS is None:
        import numpy as np
        from numba import njit

        _np = np

        def compiled(signature: str, f: Any, nogil: bool = True) -> Any:
            try:
                return njit(signature, cache=True, nogil=nogil)(f)
            except RuntimeError:   # no writable cache folder: compile in memory
                return njit(signature, nogil=nogil)(f)

        signature = "float64(float64[::1], int64, float64, float64, int64, float64[::1])"
        # Called through its compiled overload's entry point, without numba's dispatch (~0.5 µs
        # of typing its arguments): its arrays are always a DurationWindow's own float64 ones.
        # It keeps the GIL: its selection works in the window's scratch array in place, which
        # another thread's decision on the same function must not change meanwhile.
        _QUANTILE_ABOVE = compiled(signature, _upper_quantile_above, nogil=False).get_overload(signature)
        _KERNELS = (np, compiled("float64(float64[::1], float64, float64)", _cheapest_gap),
                    compiled("Tuple((int64, float64, float64))(float64[::1], int64[::1], float64, float64, "
                             "float64, float64, float64)", _prewarm_search))
    return _KERNELS


class ExpectedWaitState:
    __slots__ = ("ledger", "durations", "idle_periods", "ghosts", "new_samples", "keepalive_ms",
                 "keepalive_cold_ms", "prewarm_at_ms", "prewarm_window_ms", "prewarmed_for", "keep_answer",
                 "prewarm_used")

    def __init__(self, window: int) -> None:
        self.ledger = WorkLedger()                   # predicted work put on each instance
        self.durations = DurationWindow(window)      # recent execution times (ms)
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
        self.keep_answer: KeepAlive | None = None     # KeepAlive(keepalive_ms), reused (answers are immutable)
        self.prewarm_used = 0                        # requests routed to a pre-warmed instance


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
    # The type of this policy's per-function state (``state`` makes one): route and on_idle
    # compare ``type(fn.policy_state)`` with it, so a subclass's state needs no extra call.
    state_class: type[ExpectedWaitState] = ExpectedWaitState

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
        _kernels()          # compiled (or loaded from the cache) now, not at a live decision

    def state(self, fn: FunctionView) -> ExpectedWaitState:
        st = fn.policy_state
        if type(st) is not ExpectedWaitState:     # unset, or another policy's (a hot swap)
            st = fn.policy_state = ExpectedWaitState(self.window)
        return st

    # ------------------------------------------------------------------ route
    def route(self, now_ms: float, request: RequestView, fn: FunctionView) -> RouteDecision:
        st = fn.policy_state
        if type(st) is not self.state_class:
            st = self.state(fn)
        stats = fn.stats
        predicted = stats.duration.predict(request.payload_bytes)   # stats.predict_duration
        cold = stats.cold_start_ms
        ledger = st.ledger
        instances = fn.instances
        if instances and next(reversed(instances)) not in ledger.entries:
            ledger.sync(fn, cold)                  # an instance it has not seen (sync's own test, inlined)
        idle = fn.idle
        if idle:
            inst = idle[-1]
            since = inst.idle_since_ms
            if inst.invocations == 0 and st.ghosts:   # a pre-warmed instance stands in for a killed one
                st.prewarm_used += 1
                self.sample(st, now_ms - st.ghosts.pop())
            elif since is not None:
                self.sample(st, now_ms - since if now_ms > since else 0.0)
            ledger.assigned(inst, predicted, now_ms)
            return Assign(inst)
        if fn.concurrency > 1:                     # a busy instance with a free slot
            inst = warm_slot(fn)
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
        m = self.min_durations                     # len(durations) < m, without the __len__ call
        if durations.appended < m or durations.maxlen < m:
            return math.inf
        if inst.state == STARTING:
            if inst.queue_len > 1:
                return math.inf
            ready = inst.created_ms + cold_ms
            return max(0.0, ready - now_ms) + durations.quantile_above(-math.inf, self.wait_quantile, 1)
        if inst.queue_len > 0 or inst.exec_started_ms is None:
            return math.inf
        elapsed = now_ms - inst.exec_started_ms
        # upper_quantile(sorted, bisect_right(sorted, elapsed), q), inf with < min_tail longer ones
        return durations.quantile_above(elapsed, self.wait_quantile, self.min_tail) - elapsed

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
        return self._keepalive(fn, self.state(fn))

    def _keepalive(self, fn: FunctionView, st: ExpectedWaitState) -> float:
        samples = st.idle_periods
        cold = fn.stats.cold_start_ms
        if len(samples) < self.min_gaps:
            if self.default_keepalive_ms is not None:
                window = self.default_keepalive_ms
            elif len(self.pooled) >= self.min_gaps:
                window = self.cheapest_window(self.pooled.array, fn.memory_mb / 1024.0, cold)
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
            elif self.cold_start_price(fn.memory_mb / 1024.0, cold) == 0.0:
                # A cold start costs nothing: cheapest_window answers T = 0 and plan_prewarm no
                # plan (idle periods are >= 0, so keeping alive for 0 costs exactly 0), without
                # the samples' array.
                window = 0.0
                st.prewarm_at_ms = None
            else:
                window = self.cheapest_window(samples.array, fn.memory_mb / 1024.0, cold)
                # Pre-warming pays only when typical idle periods are many cold starts long
                # (a busy function's are not: skip the O(grid x samples) search for it).
                if self.prewarming and gaps[len(gaps) // 2] > 10.0 * cold:
                    self.plan_prewarm(st, samples.array, fn.memory_mb / 1024.0, cold, window)
                else:
                    st.prewarm_at_ms = None
            st.keepalive_ms = min(self.max_keepalive_ms, max(self.min_keepalive_ms, window))
            st.keepalive_cold_ms = cold
            st.new_samples = 0
        return st.keepalive_ms

    def cold_start_price(self, mem_gb: float, cold_ms: float) -> float:
        """What one cold start of ``cold_ms`` costs, in the cost rule's units: its latency
        and the memory held while it starts (as cheapest_window and plan_prewarm price it)."""
        w = self.weights
        return (w.latency_usd_per_s / 1000.0 + mem_gb * w.gb_s_usd / 1000.0) * cold_ms

    def cheapest_window(self, sorted_gaps: Any, mem_gb: float, cold_ms: float) -> float:
        """The keep-alive T minimising the expected cost of one idle period if it is drawn
        from ``sorted_gaps`` (a list, or a float64 numpy array: ``SortedWindow.array``):
        memory for min(gap, T) plus, when the gap outlasts T, a cold start (its latency and
        the memory while it starts). Candidates are 0 and just past each observed gap.
        O(len(sorted_gaps)), compiled (``_cheapest_gap``)."""
        w = self.weights
        mem_per_ms = mem_gb * w.gb_s_usd / 1000.0
        cold = (w.latency_usd_per_s / 1000.0 + mem_per_ms) * cold_ms
        if cold <= 0.0:                             # no cold-start price: T = 0 (no window costs < 0)
            return 0.0
        np, cheapest_gap, _ = _KERNELS or _kernels()
        if type(sorted_gaps) is not np.ndarray:
            sorted_gaps = np.array(sorted_gaps, dtype=np.float64)
        best_window = cheapest_gap(sorted_gaps, mem_per_ms, cold)
        return best_window * (1.0 + self.keepalive_margin) if best_window > 0 else 0.0

    def plan_prewarm(self, st: ExpectedWaitState, sorted_gaps: Any, mem_gb: float, cold_ms: float,
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
        from prefix sums over the sorted gaps (O(grid^2 + samples), compiled:
        ``_prewarm_search``), and only when that leaves the choice open within rounding (two
        pairs, or the best pair and keeping alive, closer than ``tolerance``) does the
        gap-by-gap search (``plan_prewarm_exact``) decide, whose sums, tie-breaking and
        comparison are the reference. ``sorted_gaps``: a list or a float64 numpy array."""
        w = self.weights
        mem_per_ms = mem_gb * w.gb_s_usd / 1000.0
        cold = (w.latency_usd_per_s / 1000.0 + mem_per_ms) * cold_ms
        np, _, prewarm_search = _KERNELS or _kernels()
        if type(sorted_gaps) is not np.ndarray:
            sorted_gaps = np.array(sorted_gaps, dtype=np.float64)
        found, start, end = prewarm_search(sorted_gaps, _grid_array(len(sorted_gaps)),
                                           mem_per_ms, cold, cold_ms, keep_window_ms, self.prewarm_slack)
        st.prewarm_at_ms = None
        if found == 2:
            self.plan_prewarm_exact(st, sorted_gaps, mem_gb, cold_ms, keep_window_ms)
        elif found == 1:
            st.prewarm_at_ms = start
            st.prewarm_window_ms = max(end - start, self.min_keepalive_ms)

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
        ran = st.ledger.finished(instance, now_ms)
        if ran is not None:
            st.durations.add(ran if ran > 0.0 else 0.0)

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        st = fn.policy_state
        if type(st) is not ExpectedWaitState:
            st = self.state(fn)
        since = instance.idle_since_ms               # idle_for, inlined
        if instance.state != IDLE or since is None or now_ms <= since:
            idle = 0.0
        else:
            idle = now_ms - since
        if idle <= EPS_MS:
            self.settle_execution(st, instance, now_ms)
        if instance.queue:
            return INVOKE
        # keepalive_ms, without its recomputation when nothing it depends on changed: a full
        # sample window with fewer than refresh_every new samples (and at least min_gaps).
        window = st.keepalive_ms
        n = len(st.idle_periods)
        if window is None or st.new_samples >= self.refresh_every or n < self.window or n < self.min_gaps:
            window = self._keepalive(fn, st)
        if st.prewarm_at_ms is not None:
            if instance.invocations == 0:
                return keep_until(st.prewarm_window_ms, idle)      # pre-warmed: wait for its request
            if len(fn.instances) == 1:
                answer = KILL          # the last instance: pre-warm its successor instead
            else:
                answer = keep_until(window, idle)
        elif idle == 0.0:              # just finished: the same answer for the same window
            answer = st.keep_answer
            if answer is None or answer.ms != window:
                answer = keep_until(window, 0.0)
                if answer is not KILL:
                    st.keep_answer = answer
        else:
            answer = keep_until(window, idle)
        if answer is KILL and since is not None and instance.invocations > 0:
            st.ghosts.append(since)
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
