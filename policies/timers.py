"""Timer-aware pre-warming: detect a function that is called at a fixed period (a timer
trigger) from its own arrival times, and plan a pre-warmed instance ready just before its next
call (as SPES and hybrid histogram do for "regular" functions).

Why. One cold start is priced like tens of idle GB-s, while a pre-warm costs only the memory
of its start-up plus a short window: for a function called every minute, killing after each
call and pre-warming just in time costs a fraction of keeping it alive or starting it cold.
A keep-alive policy that predicts idle periods from coarse bins (``policies.imitation``) or
from a window of samples cannot time that pre-warm before it has seen the period a few times;
a period read off the last few arrivals can, after two or three calls.

Pieces (no engine imports, no clock; read by ``ImitationPolicy`` when its ``timers`` decision
parameter is on):

- ``detect_period``: the last ``min_gaps`` gaps between firings (arrivals closer than
  ``burst_ms`` are one firing: a timer may start several calls at once) all within
  ``tolerance`` of their median: that median is the period.
- ``TimerConfig.plan``: when the function is periodic, when to have an instance ready (ms
  after its last execution ended) and for how long: ready ``slack`` before the predicted call,
  kept ``2 * slack``. With fewer than ``min_gaps`` gaps seen (a new function) and ``prior``
  on: a chain of guesses at common timer periods (cron's "every N minutes") and at the gaps
  seen so far, soonest first, each a short pre-warm tried after the previous one went unused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from itertools import islice, pairwise
from typing import Any

import numpy as np

from policies.interface import PolicySpecError

# Common cron periods of timer triggers ("every N minutes"): the guesses for a function seen
# once. A prior from how timers are written, not from any trace.
CRON_PERIODS_MS = tuple(m * 60_000.0 for m in (1, 2, 5, 10, 15, 30, 60))
MAX_LOOKBACK = 256      # arrivals read back at most per detection (bounds a burst's cost)
JITTER_GAPS = 8         # gaps read back at most to measure a period's jitter


@dataclass(frozen=True)
class TimerPlan:
    """Pre-warms to try after an execution, in order: instance ready ``starts_ms[i]`` after the
    execution ended, kept ``window_ms``; ``periodic``: from a detected period (else guesses)."""

    starts_ms: tuple[float, ...]
    window_ms: float
    periodic: bool


def iter_firings(arrivals_newest_first: Iterable[float], burst_ms: float) -> Iterator[float]:
    """Firing times, newest first, from arrival times given newest first: the arrivals within
    ``burst_ms`` of a firing's newest one are that firing (its time: their earliest). Reads at
    most ``MAX_LOOKBACK`` arrivals."""
    newest = first = math.nan
    for k, t in enumerate(arrivals_newest_first):
        if k >= MAX_LOOKBACK:
            break
        if newest - t <= burst_ms:
            first = t
            continue
        if k:
            yield first
        newest = first = t
    if first == first:                      # not NaN: one firing still open
        yield first


def firings(arrivals_newest_first: Iterable[float], burst_ms: float, wanted: int) -> list[float]:
    """The last ``wanted`` firing times, newest first (``iter_firings``)."""
    return list(islice(iter_firings(arrivals_newest_first, burst_ms), wanted))


def detect_period(arrivals_newest_first: Iterable[float], min_gaps: int, tolerance: float,
                  tolerance_ms: float, burst_ms: float) -> tuple[float, float, float] | None:
    """(period, last firing, jitter) when the last ``min_gaps`` gaps between firings are each
    within ``max(tolerance * period, tolerance_ms)`` of their median (the period), else None.
    The jitter is the largest deviation from the period over those gaps and the earlier ones
    that also fit (up to ``JITTER_GAPS``): a pre-warm window must cover it. Periods not longer
    than ``burst_ms`` are not timers. Reads the firings lazily: a function that is no timer is
    told after ``min_gaps + 1`` of them."""
    it = iter_firings(arrivals_newest_first, burst_ms)
    times = list(islice(it, min_gaps + 1))
    if len(times) < min_gaps + 1:
        return None
    recent = sorted(a - b for a, b in pairwise(times))
    period = recent[len(recent) // 2]
    allowed = max(tolerance * period, tolerance_ms)
    if period <= burst_ms or recent[-1] - period > allowed or period - recent[0] > allowed:
        return None
    jitter = max(recent[-1] - period, period - recent[0])
    previous = times[-1]
    for t in islice(it, max(0, JITTER_GAPS - min_gaps)):
        deviation = abs(previous - t - period)
        if deviation > allowed:
            break
        jitter = max(jitter, deviation)
        previous = t
    return period, times[0], jitter


def _detect_period_ring(buf: Any, appended: int, maxlen: int, min_gaps: int, tolerance: float,
                        tolerance_ms: float, burst_ms: float) -> tuple[bool, float, float, float]:
    """``detect_period`` over ``FunctionStats.recent``'s ring (arrival j at ``buf[j % maxlen]``,
    ``appended`` in all), compiled by numba (``ring_detector``): the same firings (the same
    ``MAX_LOOKBACK`` arrivals read), the same subtractions, sort, comparisons and maxima in the
    same order, so the same (found, period, last firing, jitter) to the bit. It replaces the
    generators that cost ~6 µs per decision of the function's last instance."""
    wanted = min_gaps + 1 + (JITTER_GAPS - min_gaps if min_gaps < JITTER_GAPS else 0)
    times = np.empty(wanted)
    count = 0
    newest = first = math.nan
    n = appended if appended < maxlen else maxlen
    for k in range(n):                          # iter_firings over the arrivals, newest first
        if k >= MAX_LOOKBACK or count >= wanted:
            break
        t = buf[(appended - 1 - k) % maxlen]
        if newest - t <= burst_ms:
            first = t
            continue
        if k:
            times[count] = first
            count += 1
        newest = first = t
    if count < wanted and first == first:    # not NaN: one firing still open
        times[count] = first
        count += 1
    if count < min_gaps + 1:
        return False, 0.0, 0.0, 0.0
    recent = np.empty(min_gaps)
    for k in range(min_gaps):
        recent[k] = times[k] - times[k + 1]
    recent.sort()
    period = recent[min_gaps // 2]
    allowed = tolerance * period
    if tolerance_ms > allowed:                  # max(tolerance * period, tolerance_ms)
        allowed = tolerance_ms
    if period <= burst_ms or recent[min_gaps - 1] - period > allowed or period - recent[0] > allowed:
        return False, 0.0, 0.0, 0.0
    jitter = recent[min_gaps - 1] - period
    if period - recent[0] > jitter:
        jitter = period - recent[0]
    previous = times[min_gaps]
    for k in range(min_gaps + 1, count):
        t = times[k]
        deviation = abs(previous - t - period)
        if deviation > allowed:
            break
        if deviation > jitter:
            jitter = deviation
        previous = t
    return True, period, times[0], jitter


_RING_DETECTOR: Any = None


def ring_detector() -> Any:
    """``_detect_period_ring`` compiled (explicit signature; or loaded from numba's cache next
    to this module): imported and compiled when a policy with the timer layer loads (numba and
    numpy only then), never at a decision."""
    global _RING_DETECTOR
    if _RING_DETECTOR is None:
        from numba import njit, types

        f64, i64 = types.float64, types.int64
        signature = types.Tuple((types.boolean, f64, f64, f64))(types.PyArray(f64, 1, "C"), i64, i64, i64, f64,
                                                                   f64, f64)
        try:    # keeps the GIL: the call holds a buffer export of the arrivals' array.array
            _RING_DETECTOR = njit(signature, cache=True)(_detect_period_ring)
        except RuntimeError:       # no writable cache folder: compile in memory
            _RING_DETECTOR = njit(signature)(_detect_period_ring)
    return _RING_DETECTOR


@dataclass(frozen=True)
class TimerConfig:
    """The detector's and the plan's parameters (an artifact's ``"decision": {"timers": ...}``).
    The defaults of ``min_gaps``, ``tolerance``, ``tolerance_ms`` and ``prior`` were selected on
    minutes 1-720 of the bundled Azure 2019 day (examples/learned/README.md); the others are
    design choices (a window of 2 s, or 2% of the period, or twice the jitter seen)."""

    min_gaps: int = 3              # equal gaps that make a function periodic
    tolerance: float = 0.01        # a gap's allowed deviation from the period, relative ...
    tolerance_ms: float = 50.0     # ... or absolute, whichever is larger
    burst_ms: float = 250.0        # arrivals this close are one firing
    slack: float = 0.01            # pre-warm ready this much before the predicted call, relative ...
    slack_ms: float = 1_000.0      # ... or absolute, whichever is larger (also >= jitter_factor x the jitter seen)
    jitter_factor: float = 2.0
    prior: bool = False            # guess CRON_PERIODS_MS (and the gaps seen) for a new function

    @classmethod
    def parse(cls, value: Any, owner: str) -> TimerConfig | None:
        """``timers`` as given to a policy: False/None (off), True (these defaults) or an
        object of the fields above. Raises PolicySpecError naming what is wrong."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, TimerConfig):
            return value
        if not isinstance(value, Mapping):
            raise PolicySpecError(f"{owner}: timers must be true, false or an object of "
                                  f"{', '.join(f.name for f in fields(cls))}; got {value!r}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise PolicySpecError(f"{owner}: timers has unknown field(s) {', '.join(map(str, unknown))} "
                                  f"(known: {', '.join(known)})")
        out: dict[str, Any] = {}
        for name, v in value.items():
            if name == "prior":
                if not isinstance(v, bool):
                    raise PolicySpecError(f"{owner}: timers.prior must be true or false, got {v!r}")
            elif name == "min_gaps":
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise PolicySpecError(f"{owner}: timers.min_gaps must be an integer >= 1, got {v!r}")
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise PolicySpecError(f"{owner}: timers.{name} must be a finite number >= 0, got {v!r}")
            out[name] = v
        return cls(**out)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def plan(self, now_ms: float, arrivals: Sequence[float], cold_start_ms: float) -> TimerPlan | None:
        """The pre-warm plan after an execution that ended at ``now_ms``, from the function's
        recent arrival times (ascending; ``FunctionStats.recent``): a detected period's next
        call, or (``prior``, fewer than ``min_gaps`` gaps seen) the guesses; None when neither
        applies."""
        ring = getattr(arrivals, "buf", None)
        if ring is not None:            # FunctionStats.recent: the compiled detector reads its ring in place
            periodic, period, last, jitter = (_RING_DETECTOR or ring_detector())(
                ring, arrivals.appended, arrivals.maxlen, self.min_gaps, self.tolerance, self.tolerance_ms,
                self.burst_ms)
            found = (period, last, jitter) if periodic else None
        else:
            found = detect_period(reversed(arrivals), self.min_gaps, self.tolerance, self.tolerance_ms,
                                  self.burst_ms)
        if found is not None:
            period, last, jitter = found
            slack = max(self.slack * period, self.slack_ms, self.jitter_factor * jitter)
            due = last + period
            if due + slack <= now_ms:        # past its due time already: the next call after now
                due += period * math.ceil((now_ms - slack - due) / period + 1e-9)
            return TimerPlan((max(0.0, due - slack - now_ms),), 2.0 * slack, True)
        if not self.prior or not len(arrivals):
            return None
        times = firings(reversed(arrivals), self.burst_ms, self.min_gaps + 1)
        if len(times) > self.min_gaps:      # enough gaps seen, and no period in them: not a timer
            return None
        # A new function: guess the cron periods and the gaps seen so far, soonest first.
        seen = [a - b for a, b in pairwise(times) if a - b > self.burst_ms]
        slack = self.slack_ms
        starts = sorted({times[0] + p - slack - now_ms for p in (*CRON_PERIODS_MS, *seen)})
        return TimerPlan(tuple(s for s in starts if s > cold_start_ms), 2.0 * slack, False)
