"""The timer layer's compiled period detector (``policies.timers._detect_period_ring``, which
``TimerConfig.plan`` runs on ``FunctionStats.recent``) against the Python reference
``detect_period`` over the same arrivals: the same answer to the bit on periodic, jittered,
bursty and irregular arrivals, before and after the arrival ring wraps, for several
detector settings."""

from __future__ import annotations

import numpy as np
import pytest

from policies.features import RecentArrivals
from policies.timers import MAX_LOOKBACK, TimerConfig, detect_period, ring_detector

pytestmark = pytest.mark.unit


def arrival_times(rng: np.random.Generator, n: int) -> list[float]:
    """Ascending arrivals mixing a timer (with jitter and bursts of calls at once) and noise."""
    period = float(rng.choice([250.0, 1_000.0, 60_000.0, 300_000.0, rng.uniform(300.0, 90_000.0)]))
    jitter = float(rng.choice([0.0, 0.0, 5.0, 40.0, 0.02 * period]))
    t, out = 0.0, []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.7:           # the timer's next call (sometimes a burst of a few)
            t += period + rng.uniform(-jitter, jitter)
            out.append(t)
            for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.3 else 0):
                t += float(rng.uniform(0.0, 300.0))
                out.append(t)
        else:                    # an irregular call
            t += float(rng.exponential(period / 3))
            out.append(t)
        if rng.random() < 0.05:  # exact repeats (equal gaps, equal times)
            out.append(t)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_detector_answers_as_detect_period(seed):
    rng = np.random.default_rng(seed)
    detector = ring_detector()
    configs = [TimerConfig(), TimerConfig(min_gaps=1), TimerConfig(min_gaps=2, tolerance=0.05),
               TimerConfig(min_gaps=8, tolerance_ms=100.0), TimerConfig(min_gaps=10, burst_ms=0.0)]
    checked = found = 0
    for maxlen in (7, 64, 4096):
        times = arrival_times(rng, 400)
        recent = RecentArrivals(maxlen)
        for k, t in enumerate(times):
            recent.append(t)
            if k % 3 and k > 40:
                continue
            for c in configs:
                expected = detect_period(reversed(recent), c.min_gaps, c.tolerance, c.tolerance_ms, c.burst_ms)
                periodic, period, last, jitter = detector(recent.buf, recent.appended, recent.maxlen, c.min_gaps,
                                                          c.tolerance, c.tolerance_ms, c.burst_ms)
                assert (period, last, jitter) == expected if periodic else expected is None, (seed, maxlen, k, c)
                checked += 1
                found += periodic
    assert found > 50 and checked - found > 50       # both answers were exercised


def test_an_empty_ring_and_a_long_burst():
    detector = ring_detector()
    c = TimerConfig()
    empty = RecentArrivals(16)
    assert detector(empty.buf, 0, 16, c.min_gaps, c.tolerance, c.tolerance_ms, c.burst_ms)[0] is False
    burst = RecentArrivals(1024)                       # more arrivals than MAX_LOOKBACK within one firing
    for k in range(3 * MAX_LOOKBACK):
        burst.append(60_000.0 * (k // MAX_LOOKBACK) + 0.5 * (k % MAX_LOOKBACK))
    expected = detect_period(reversed(burst), 1, c.tolerance, c.tolerance_ms, 1e9)
    periodic, *values = detector(burst.buf, burst.appended, burst.maxlen, 1, c.tolerance, c.tolerance_ms, 1e9)
    assert (tuple(values) if periodic else None) == expected


def test_plan_reads_the_ring_as_the_reference_reads_a_list():
    """TimerConfig.plan on FunctionStats.recent (the compiled path) and on the same arrivals as
    a list (the Python path): the same plans."""
    rng = np.random.default_rng(3)
    c = TimerConfig()
    recent = RecentArrivals(4096)
    plans = 0
    for t in arrival_times(rng, 300):
        recent.append(t)
        now = t + float(rng.uniform(0.0, 500.0))
        a, b = c.plan(now, recent, 250.0), c.plan(now, list(recent), 250.0)
        assert a == b
        plans += a is not None
    assert plans > 10
