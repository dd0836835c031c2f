"""Synthetic timer-triggered functions for the imitation policy's training rollouts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wlsim.rl.imitate import TIMER_PERIODS_S, synthetic_timers, with_synthetic_timers

pytestmark = pytest.mark.unit


def test_synthetic_timers_fire_periodically_with_a_small_jitter():
    span = 3_600_000.0
    timers = synthetic_timers(12, span, seed=4)
    assert timers["function"].nunique() >= 10            # a 30-min timer may fire once or twice only
    assert timers["arrival_ms"].between(0.0, span + 40_000.0).all()
    for _, t in timers.groupby("function"):
        gaps = np.diff(t["arrival_ms"].to_numpy())
        if gaps.size < 3:
            continue
        period = np.median(gaps)
        assert min(TIMER_PERIODS_S, key=lambda p: abs(p * 1000.0 - period)) * 1000.0 == pytest.approx(period, rel=0.05)
        assert np.quantile(np.abs(gaps - period), 0.9) < 0.1 * period      # tight: a timer, not Poisson
    assert synthetic_timers(12, span, seed=4).equals(timers)              # seeded


def test_a_trace_with_synthetic_timers_keeps_its_rows_in_arrival_order():
    real = pd.DataFrame({"app": pd.Categorical(["a", "a", "b"]), "function": pd.Categorical(["a", "a", "b"]),
                         "arrival_ms": [10.0, 500_000.0, 900_000.0], "duration_ms": 100.0, "memory_mb": 256.0})
    both = with_synthetic_timers(real, 3, seed=0)
    assert both["arrival_ms"].is_monotonic_increasing
    assert len(both[both["function"].isin(["a", "b"])]) == 3
    assert both["function"].str.startswith("synthetic-timer-").sum() == len(both) - 3 > 0
    assert with_synthetic_timers(real, 0, seed=0) is real
