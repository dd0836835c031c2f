"""Online per-function statistics that every engine (simulator, live router) keeps the same way,
so policies and the learned policy's feature encoder see identical numbers in both.

The engine calls ``record_arrival`` at every arrival (before asking ``route``),
``record_cold_start`` when a cold start finishes and ``record_completion`` when an
execution finishes. Everything is O(1) amortised per call.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator

MINUTES_PER_DAY = 1440
MS_PER_MINUTE = 60_000.0
MS_PER_DAY = MS_PER_MINUTE * MINUTES_PER_DAY


class DurationPredictor:
    """Payload-aware duration estimate: online least squares of duration on payload size
    (``d ~ a + b * payload_bytes``) with exponential forgetting, falling back to an EWMA of
    durations until payload sizes vary enough to fit a slope."""

    __slots__ = ("alpha", "n", "ewma", "sw", "sx", "sy", "sxx", "sxy", "forget")

    def __init__(self, prior_ms: float = 100.0, alpha: float = 0.1, forget: float = 0.999) -> None:
        self.alpha = alpha
        self.forget = forget
        self.n = 0
        self.ewma = prior_ms
        self.sw = self.sx = self.sy = self.sxx = self.sxy = 0.0

    def update(self, duration_ms: float, payload_bytes: float = 0.0) -> None:
        self.n += 1
        self.ewma = duration_ms if self.n == 1 else self.ewma + self.alpha * (duration_ms - self.ewma)
        f = self.forget
        x = float(payload_bytes)
        self.sw = self.sw * f + 1.0
        self.sx = self.sx * f + x
        self.sy = self.sy * f + duration_ms
        self.sxx = self.sxx * f + x * x
        self.sxy = self.sxy * f + x * duration_ms

    def predict(self, payload_bytes: float = 0.0) -> float:
        if self.n >= 8:
            sx2 = self.sx * self.sx
            var = self.sw * self.sxx - sx2
            # Fit a slope only when payload sizes actually vary (relative variance test;
            # max(1.0, sx2) without the call: twice per request).
            if var > 1e-9 * (sx2 if sx2 > 1.0 else 1.0):
                b = (self.sw * self.sxy - self.sx * self.sy) / var
                a = (self.sy - b * self.sx) / self.sw
                d = a + b * float(payload_bytes)
                return d if d > 0.0 else 0.0        # max(0.0, d) without the call (NaN -> 0.0 too)
        return self.ewma


class RecentArrivals:
    """The last ``maxlen`` arrival times (ascending), 8 bytes each: a float array that grows
    until it holds ``maxlen`` values and is then overwritten oldest first (a ring; the
    ``collections.deque`` of Python floats it replaces took ~4x the memory, which with many
    functions was most of a streamed replay's). Read like that deque: ``len``, ``[i]``
    (negative too), iteration, ``reversed``; ``bisect_left``/``bisect_right`` search it.

    The arrival counted ``j`` (from 0; ``appended`` in all) sits at ``buf[j % maxlen]``."""

    __slots__ = ("buf", "maxlen", "appended")

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError(f"recent arrivals: maxlen must be >= 1, got {maxlen}")
        self.buf = array("d")
        self.maxlen = maxlen
        self.appended = 0

    def append(self, t: float) -> None:
        a = self.appended
        if a < self.maxlen:
            self.buf.append(t)
        else:
            self.buf[a % self.maxlen] = t
        self.appended = a + 1

    def __len__(self) -> int:
        a = self.appended
        return a if a < self.maxlen else self.maxlen

    def __getitem__(self, k: int) -> float:
        n = len(self)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError("recent arrivals index out of range")
        return self.buf[(self.appended - n + k) % self.maxlen]

    def __iter__(self) -> Iterator[float]:
        a, m = self.appended, self.maxlen
        if a <= m:
            return iter(self.buf)
        head = a % m
        return iter(self.buf[head:] + self.buf[:head])

    def __reversed__(self) -> Iterator[float]:
        buf, a, m = self.buf, self.appended, self.maxlen
        if a <= m:
            yield from reversed(buf)
            return
        head = a % m
        for j in range(head - 1, -1, -1):       # the newer part, then the older
            yield buf[j]
        for j in range(m - 1, head - 1, -1):
            yield buf[j]

    def bisect_right(self, x: float) -> int:
        """The number of arrivals <= ``x``."""
        buf, a, m = self.buf, self.appended, self.maxlen
        head = a % m if a > m else 0
        if not head:
            return bisect_right(buf, x)
        if buf[0] <= x:              # the older part (buf[head:]) is all <= buf[0], the newer part's first
            return m - head + bisect_right(buf, x, 0, head)
        return bisect_right(buf, x, head, m) - head

    def bisect_left(self, x: float) -> int:
        """The number of arrivals < ``x``."""
        buf, a, m = self.buf, self.appended, self.maxlen
        head = a % m if a > m else 0
        if not head:
            return bisect_left(buf, x)
        if buf[0] < x:
            return m - head + bisect_left(buf, x, 0, head)
        return bisect_left(buf, x, head, m) - head


class FunctionStats:
    """Traffic, duration and cold-start statistics of one function."""

    __slots__ = ("recent", "minute_counts", "minute_days", "first_arrival_ms", "last_arrival_ms",
                 "last_end_ms", "arrivals", "completions", "cold_starts", "cold_start_ms",
                 "duration", "_cold_alpha", "_cursors")

    def __init__(self, cold_start_prior_ms: float = 500.0, duration_prior_ms: float = 100.0,
                 recent_maxlen: int = 4096) -> None:
        self.recent = RecentArrivals(recent_maxlen)              # recent arrival times, ascending
        self.minute_counts = [0] * MINUTES_PER_DAY              # arrivals per minute-of-day, all days
        self.minute_days = 0.0                                    # distinct days observed (for rates)
        self.first_arrival_ms: float | None = None
        self.last_arrival_ms: float | None = None
        self.last_end_ms: float | None = None
        self.arrivals = 0
        self.completions = 0
        self.cold_starts = 0
        self.cold_start_ms = cold_start_prior_ms                  # EWMA of observed cold starts
        self.duration = DurationPredictor(prior_ms=duration_prior_ms)
        self._cold_alpha = 0.2
        # window_ms -> [lo, index]: the last arrivals_in_last query of that window (lo = now -
        # window) and the absolute index (counted over all appends) of the first arrival > lo.
        self._cursors: dict[float, list] = {}

    # -- updates (engine) ------------------------------------------------------------
    def record_arrival(self, now_ms: float) -> None:
        self.arrivals += 1
        if self.first_arrival_ms is None:
            self.first_arrival_ms = now_ms
        self.last_arrival_ms = now_ms
        r = self.recent                  # r.append(now_ms), inlined: once per request
        a = r.appended
        if a < r.maxlen:
            r.buf.append(now_ms)
        else:
            r.buf[a % r.maxlen] = now_ms
        r.appended = a + 1
        self.minute_counts[int(now_ms // MS_PER_MINUTE) % MINUTES_PER_DAY] += 1

    def record_cold_start(self, cold_start_ms: float) -> None:
        self.cold_starts += 1
        self.cold_start_ms += self._cold_alpha * (cold_start_ms - self.cold_start_ms) if self.cold_starts > 1 \
            else cold_start_ms - self.cold_start_ms

    def record_completion(self, now_ms: float, duration_ms: float, payload_bytes: float = 0.0) -> None:
        self.completions += 1
        self.last_end_ms = now_ms
        # self.duration.update(duration_ms, payload_bytes), inlined (the same arithmetic in
        # the same order): it runs once per request and the call was a third of this method.
        d = self.duration
        n = d.n = d.n + 1
        d.ewma = duration_ms if n == 1 else d.ewma + d.alpha * (duration_ms - d.ewma)
        f = d.forget
        x = float(payload_bytes)
        d.sw = d.sw * f + 1.0
        d.sx = d.sx * f + x
        d.sy = d.sy * f + duration_ms
        d.sxx = d.sxx * f + x * x
        d.sxy = d.sxy * f + x * duration_ms

    # -- queries (policies, feature encoder) ---------------------------------------
    def arrivals_in_last(self, now_ms: float, window_ms: float) -> int:
        """Arrivals in (now - window, now]; exact while the window fits in ``recent``."""
        return self.arrivals_in_windows(now_ms, (window_ms,))[0]

    def arrivals_in_windows(self, now_ms: float, windows_ms: tuple[float, ...]) -> list[int]:
        """``arrivals_in_last(now_ms, w)`` for each window ``w``, in one call.

        Policies ask the same few windows at every decision with a clock that only moves
        forward, so each window keeps a cursor that walks forward over the arrivals (O(1)
        amortised) instead of a binary search; a query earlier than the previous one of its
        window falls back to the search."""
        r = self.recent
        buf, appended, m = r.buf, r.appended, r.maxlen
        if appended <= m:                         # not wrapped yet: arrival j sits at buf[j]
            if not appended:
                return [0] * len(windows_ms)
            base = 0
            first = buf[0]
        else:
            base = appended - m                   # absolute index of the oldest arrival kept
            first = buf[base % m]
        cursors = self._cursors
        out = []
        for window_ms in windows_ms:
            lo = now_ms - window_ms
            if first > lo:                        # every kept arrival is in the window
                out.append(appended - base)
                continue
            cursor = cursors.get(window_ms)
            if cursor is None or lo < cursor[0]:  # first query of this window, or the clock went back
                j = base + r.bisect_right(lo)
                if cursor is None:
                    cursors[window_ms] = [lo, j]
                    out.append(appended - j)
                    continue
            else:                                 # everything before the cursor is <= its lo <= lo
                j = cursor[1]
                if j < base:
                    j = base
                if base:                          # wrapped: arrival j sits at buf[j % m]
                    while j < appended and buf[j % m] <= lo:
                        j += 1
                else:
                    while j < appended and buf[j] <= lo:
                        j += 1
            cursor[0] = lo
            cursor[1] = j
            out.append(appended - j)
        return out

    def rate_for_time_of_day(self, now_ms: float) -> float:
        """Learned arrivals per second at this minute of day, averaged over the days seen so far."""
        first = self.first_arrival_ms
        if first is None:
            return 0.0
        days = math.ceil((now_ms - first + 1) / MS_PER_DAY)
        if not days > 1.0:                # max(1.0, days), without the call
            days = 1.0
        return self.minute_counts[int(now_ms // MS_PER_MINUTE) % MINUTES_PER_DAY] / days / 60.0

    def predict_duration(self, payload_bytes: float = 0.0) -> float:
        return self.duration.predict(payload_bytes)

