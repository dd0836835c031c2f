"""The hybrid histogram keep-alive and pre-warm policy of Shahrad et al., "Serverless in the
Wild", USENIX ATC 2020, mapped onto wl's decision points."""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

from policies.builtin._common import EPS_MS, idle_for, keep_until, number, warm_slot
from policies.interface import (
    INVOKE,
    KILL,
    SPAWN,
    Assign,
    FunctionView,
    IdleDecision,
    InstanceView,
    Policy,
    PolicySpecError,
    RequestView,
    RouteDecision,
)

HISTOGRAM = "histogram"      # the histogram is representative: pre-warm + keep-alive from it
UNCERTAIN = "uncertain"      # too few idle times or a flat histogram (low CV): standard keep-alive
OUT_OF_BOUNDS = "oob"        # mostly idle times beyond the range: forecast branch


class _Fenwick:
    """Counts per bin with O(log n) add and "first bin whose running total reaches k"."""

    __slots__ = ("n", "tree", "top")

    def __init__(self, n: int) -> None:
        self.n = n
        self.tree = [0] * (n + 1)
        self.top = 1 << (n.bit_length() - 1)

    def add(self, i: int) -> None:
        i += 1
        tree, n = self.tree, self.n
        while i <= n:
            tree[i] += 1
            i += i & -i

    def first_reaching(self, k: int) -> int:
        """Smallest bin index whose cumulative count is >= k (k >= 1)."""
        pos, step, tree, n = 0, self.top, self.tree, self.n
        while step:
            nxt = pos + step
            if nxt <= n and tree[nxt] < k:
                pos = nxt
                k -= tree[nxt]
            step >>= 1
        return pos   # 0-based bin index


class AppHistogram:
    """Idle-time statistics of one application (or function, with ``per_app=False``)."""

    __slots__ = ("bins", "counts", "in_range", "oob", "sumsq", "recent", "last_end_ms", "fns",
                 "version", "_cached", "prewarm_at_ms", "prewarm_delay_ms")

    def __init__(self, n_bins: int, history: int) -> None:
        self.bins = _Fenwick(n_bins)
        self.counts = [0] * n_bins
        self.in_range = 0                 # idle times inside the histogram's range
        self.oob = 0                      # idle times beyond it
        self.sumsq = 0                    # sum of squared bin counts (for the CV, O(1) update)
        self.recent: deque[float] = deque(maxlen=history)   # latest idle times (forecast branch)
        self.last_end_ms: float | None = None
        self.fns: list[FunctionView] = []
        self.version = 0
        self._cached: tuple[int, tuple[str, float, float]] | None = None
        self.prewarm_at_ms: float | None = None   # a KILL that asked for a pre-warm, and when
        self.prewarm_delay_ms = 0.0

    @property
    def samples(self) -> int:
        return self.in_range + self.oob

    def record(self, idle_ms: float, bin_ms: float) -> None:
        b = int(idle_ms // bin_ms)
        counts = self.counts
        if b < len(counts):
            c = counts[b]
            self.sumsq += 2 * c + 1
            counts[b] = c + 1
            # self.bins.add(b), inlined: this runs at every arrival
            bins = self.bins
            tree, n = bins.tree, bins.n
            i = b + 1
            while i <= n:
                tree[i] += 1
                i += i & -i
            self.in_range += 1
        else:
            self.oob += 1
        self.recent.append(idle_ms)
        self.version += 1

    def cv(self) -> float:
        """Coefficient of variation of the bin counts (sample standard deviation / mean)."""
        n = len(self.counts)
        if self.in_range == 0:
            return 0.0
        mean = self.in_range / n
        var = max(0.0, (self.sumsq - n * mean * mean) / (n - 1))
        return math.sqrt(var) / mean

    def in_flight(self, routing: FunctionView) -> bool:
        """Whether an execution of the app is running (or queued) besides the arrival of
        ``routing`` being routed (already counted in its stats). O(functions of the app):
        arrivals minus completions, confirmed by a live non-idle instance (the count drifts
        only by rejected requests, which never complete)."""
        for f in self.fns:
            s = f.stats
            if s.arrivals - s.completions > (f is routing) and f.live_count > len(f.idle):
                return True
        return False


class HybridHistogram(Policy):
    """Hybrid histogram policy (Shahrad et al., ATC 2020).

    Per application, a histogram of idle times: the time from the end of the app's last
    execution to its next arrival (0 when an execution of the app is still running), in
    ``bin_ms`` bins (1 minute) over ``range_ms`` (4 hours); idle times beyond the range are
    counted as out of bounds (OOB). From the histogram:

    - pre-warm window = the ``head_percentile`` (5th) bin's start, minus ``margin`` (10%);
    - keep-alive window = the ``tail_percentile`` (99th) bin's end, plus ``margin``, minus
      the pre-warm window (so the instance is warm from the pre-warm point to the tail).

    Branches, in the paper's order:

    1. OOB idle times are at least ``oob_threshold`` (50%) of all: the paper forecasts the
       next idle time with ARIMA. **wl leaves ARIMA out** (it needs a time-series library and
       a model fit per app); instead the forecast is the median of the last
       ``forecast_history`` (5) idle times, used exactly as the paper uses ARIMA's forecast:
       pre-warm = forecast x (1 - ``forecast_margin``) and keep-alive =
       forecast x ``forecast_margin`` x 2 (15% either side).
    2. The histogram is not representative: fewer than ``min_samples`` (5) idle times seen
       (wl's addition: a single idle time would otherwise pass the CV test), or the CV of the
       bin counts is below ``cv_threshold`` (2, the value of the paper's sweeps and of the
       public reimplementations): the paper's standard keep-alive, no pre-warm and a
       keep-alive of ``fallback_keepalive_ms`` (default = the histogram range, 4 hours).
    3. Otherwise the histogram windows above.

    In wl's decision points: when an execution ends and the pre-warm window is > 0, the
    instance is killed and ``prewarm`` returns the pre-warm window, so the engine spawns a
    fresh instance that long after the end (ahead of the predicted arrival); that
    pre-warmed instance is kept idle for the keep-alive window and then killed. With a
    pre-warm window of 0 the instance just stays alive for the keep-alive window. Routing is
    the warmest idle instance, else a cold start. An engine only asks ``prewarm`` after the
    last instance of the function died, so with several instances only the last one's
    death schedules the pre-warm.

    Decision cost: O(log bins) per arrival and per idle decision (a Fenwick tree keeps the
    percentiles, the CV is updated in O(1)).
    """

    name = "hybrid_histogram"

    def __init__(self, bin_ms: float = 60_000.0, range_ms: float = 4 * 3_600_000.0,
                 head_percentile: float = 5.0, tail_percentile: float = 99.0, margin: float = 0.10,
                 cv_threshold: float = 2.0, oob_threshold: float = 0.5, min_samples: int = 5,
                 fallback_keepalive_ms: float | None = None, forecast_margin: float = 0.15,
                 forecast_history: int = 5, per_app: bool = True) -> None:
        n = self.name
        self.bin_ms = number(n, "bin_ms", bin_ms)
        self.range_ms = number(n, "range_ms", range_ms)
        if self.range_ms < self.bin_ms:
            raise PolicySpecError(f"{n}: range_ms ({range_ms}) must be at least bin_ms ({bin_ms})")
        self.n_bins = max(2, round(self.range_ms / self.bin_ms))
        self.head_percentile = number(n, "head_percentile", head_percentile)
        self.tail_percentile = number(n, "tail_percentile", tail_percentile)
        if not self.head_percentile <= self.tail_percentile <= 100:
            raise PolicySpecError(f"{n}: need 0 < head_percentile <= tail_percentile <= 100, "
                                  f"got {head_percentile} and {tail_percentile}")
        self.margin = number(n, "margin", margin, strict=False)
        if self.margin >= 1:
            raise PolicySpecError(f"{n}: margin must be < 1, got {margin!r}")
        self.cv_threshold = number(n, "cv_threshold", cv_threshold, strict=False)
        self.oob_threshold = number(n, "oob_threshold", oob_threshold)
        self.min_samples = int(number(n, "min_samples", min_samples, minimum=1, strict=False))
        self.fallback_keepalive_ms = (self.range_ms if fallback_keepalive_ms is None
                                      else number(n, "fallback_keepalive_ms", fallback_keepalive_ms))
        self.forecast_margin = number(n, "forecast_margin", forecast_margin)
        if self.forecast_margin >= 1:
            raise PolicySpecError(f"{n}: forecast_margin must be < 1, got {forecast_margin!r}")
        self.forecast_history = int(number(n, "forecast_history", forecast_history, minimum=1,
                                           strict=False))
        if not isinstance(per_app, bool):
            raise PolicySpecError(f"{n}: per_app must be true or false, got {per_app!r}")
        self.per_app = per_app
        self._apps: dict[str, AppHistogram] = {}

    # ------------------------------------------------------------------ state
    def prepare(self, trace: Any) -> None:
        self._apps = {}          # a new run starts with empty histograms

    def app_state(self, fn: FunctionView) -> AppHistogram:
        st = fn.policy_state
        if type(st) is not AppHistogram:     # unset, or another policy's (a hot swap)
            key = fn.app if self.per_app else fn.name
            st = self._apps.get(key)
            if st is None:
                st = self._apps[key] = AppHistogram(self.n_bins, self.forecast_history)
            st.fns.append(fn)
            fn.policy_state = st
        return st

    def windows(self, fn: FunctionView) -> tuple[str, float, float]:
        """(branch, pre-warm window ms, keep-alive window ms) for ``fn``'s app right now."""
        st = self.app_state(fn)
        cached = st._cached
        if cached is not None and cached[0] == st.version:
            return cached[1]
        out = self._compute(st)
        st._cached = (st.version, out)
        return out

    def _compute(self, st: AppHistogram) -> tuple[str, float, float]:
        samples = st.in_range + st.oob             # st.samples
        if samples < self.min_samples:
            return UNCERTAIN, 0.0, self.fallback_keepalive_ms
        if st.oob / samples >= self.oob_threshold:
            forecast = statistics.median(st.recent)
            return (OUT_OF_BOUNDS, forecast * (1.0 - self.forecast_margin),
                    max(EPS_MS * 2, forecast * self.forecast_margin * 2.0))
        if st.cv() < self.cv_threshold:
            return UNCERTAIN, 0.0, self.fallback_keepalive_ms
        total = st.in_range
        head = st.bins.first_reaching(max(1, math.ceil(total * self.head_percentile / 100.0 - 1e-9)))
        tail = st.bins.first_reaching(max(1, math.ceil(total * self.tail_percentile / 100.0 - 1e-9)))
        prewarm = head * self.bin_ms * (1.0 - self.margin)
        keepalive_end = (tail + 1) * self.bin_ms * (1.0 + self.margin)
        return HISTOGRAM, prewarm, keepalive_end - prewarm

    # --------------------------------------------------------------- decisions
    def route(self, now_ms: float, request: RequestView, fn: FunctionView) -> RouteDecision:
        st = fn.policy_state
        if type(st) is not AppHistogram:
            st = self.app_state(fn)
        end = fn.stats.last_end_ms
        last = st.last_end_ms
        if end is not None and (last is None or end > last):
            st.last_end_ms = last = end
        if last is not None:
            st.record(0.0 if st.in_flight(fn) else max(0.0, now_ms - last), self.bin_ms)
        idle = fn.idle
        inst = idle[-1] if idle else warm_slot(fn)
        return Assign(inst) if inst is not None else SPAWN

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        if instance.queue:
            return INVOKE
        st = fn.policy_state
        if type(st) is not AppHistogram:
            st = self.app_state(fn)
        cached = st._cached                     # self.windows(fn), inlined
        if cached is not None and cached[0] == st.version:
            _, prewarm, keepalive = cached[1]
        else:
            _, prewarm, keepalive = self.windows(fn)
        idle = idle_for(now_ms, instance)
        if instance.invocations == 0:          # pre-warmed and not used yet
            return keep_until(keepalive, idle)
        if idle <= EPS_MS:                      # an execution just ended
            if st.last_end_ms is None or now_ms > st.last_end_ms:
                st.last_end_ms = now_ms
            if prewarm > 0:
                st.prewarm_at_ms, st.prewarm_delay_ms = now_ms, prewarm
                return KILL
        # stay warm until the end of the window measured from the end of the execution
        return keep_until(prewarm + keepalive, idle)

    def prewarm(self, now_ms: float, fn: FunctionView) -> float | None:
        st = self.app_state(fn)
        if st.prewarm_at_ms is not None and st.prewarm_at_ms == now_ms:
            st.prewarm_at_ms = None
            return st.prewarm_delay_ms
        return None      # killed at the end of a keep-alive: wait for the next arrival

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "bin_ms": self.bin_ms, "range_ms": self.range_ms,
                "head_percentile": self.head_percentile, "tail_percentile": self.tail_percentile,
                "margin": self.margin, "cv_threshold": self.cv_threshold,
                "oob_threshold": self.oob_threshold, "min_samples": self.min_samples,
                "fallback_keepalive_ms": self.fallback_keepalive_ms,
                "forecast_margin": self.forecast_margin, "forecast_history": self.forecast_history,
                "per_app": self.per_app, "arima": False}
