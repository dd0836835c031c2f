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


def test_training_with_synthetic_timers_labels_their_decisions_and_records_it(tmp_path):
    import json

    from wlsim.rl.imitate import ImitationConfig, train

    rng = np.random.default_rng(2)
    arrivals = np.sort(rng.uniform(0, 30 * 60_000.0, 300))
    trace = pd.DataFrame({"app": "f", "function": "f", "arrival_ms": arrivals, "duration_ms": 150.0,
                          "memory_mb": 256.0})
    path = tmp_path / "trace.csv"
    trace.to_csv(path, index=False)
    logs: dict[int, list[str]] = {}
    for timers in (0, 4):
        cfg = ImitationConfig(trace=str(path), train_minutes=(1, 20), validation_minutes=(21, 30), iterations=1,
                              epochs=2, eval_every=2, out=str(tmp_path / f"run-{timers}"), hidden=4,
                              tensorboard=False, synthetic_timers=timers)
        logs[timers] = []
        train(cfg, log=logs[timers].append)
        meta = json.loads((tmp_path / f"run-{timers}" / "train.json").read_text())["meta"]
        assert meta["synthetic_timers"] == timers

    def decisions(lines: list[str]) -> int:
        line = next(m for m in lines if m.startswith("iteration 0:"))
        return int(line.split(":")[1].split("new")[0].replace(",", ""))

    assert decisions(logs[4]) > decisions(logs[0])        # the timers' keep-alive decisions were labelled too
