"""The timer layer (policies.timers): the period detector on exact, jittered and irregular
arrivals, its pre-warm plans, and its hook in the imitation policy (off: the network alone
decides; on: a periodic function is pre-warmed just in time), carried by an artifact's
spec.json "decision" field."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from policies.imitation import N_BINS, N_FEATURES, ImitationPolicy
from policies.registry import PolicySpecError, load_policy
from policies.timers import CRON_PERIODS_MS, TimerConfig, detect_period, firings
from wlsim.engine import simulate
from wlsim.metrics import summarize

pytestmark = pytest.mark.unit


def newest_first(gaps_ms: list[float], start_ms: float = 1_000.0) -> list[float]:
    return list(reversed(np.cumsum([start_ms, *gaps_ms]).tolist()))


def detect(gaps_ms: list[float], min_gaps: int = 2, tolerance: float = 0.05) -> tuple[float, float, float] | None:
    return detect_period(newest_first(gaps_ms), min_gaps, tolerance, 250.0, 250.0)


# ------------------------------------------------------------------------------ detector
def test_exact_gaps_are_a_period_read_from_the_last_firing():
    arrivals = newest_first([60_000.0] * 5)
    assert detect_period(arrivals, 2, 0.01, 250.0, 250.0) == (60_000.0, arrivals[0], 0.0)


def test_jittered_gaps_within_the_tolerance_are_a_period_with_their_jitter():
    period, _, jitter = detect([120_400.0, 119_300.0, 120_100.0, 119_900.0])
    assert period == 120_100.0             # the median of the last two gaps (119,900 and 120,100)
    assert jitter == pytest.approx(800.0)  # 119,300 is the gap furthest from it


def test_irregular_gaps_too_few_gaps_and_sub_burst_periods_are_not_timers():
    rng = np.random.default_rng(0)
    assert detect(rng.lognormal(np.log(60_000.0), 1.0, 6).tolist()) is None
    assert detect([60_000.0, 80_000.0]) is None               # the last two gaps differ by 29%
    assert detect([60_000.0]) is None                         # one gap: not enough for min_gaps=2
    assert detect([60_000.0], min_gaps=1) is not None
    assert detect([100.0] * 5) is None                        # within burst_ms: one firing


def test_the_jitter_stops_at_the_first_gap_that_does_not_fit():
    # The last two gaps fit; the one before is 10 s off (no longer the same schedule).
    period, _, jitter = detect([50_000.0, 60_000.0, 60_500.0])
    assert (period, jitter) == (60_500.0, 500.0)


def test_concurrent_calls_are_one_firing():
    arrivals = sorted([0.0, 0.0, 5.0, 60_000.0, 60_000.0, 60_010.0, 120_000.0], reverse=True)
    assert firings(arrivals, 250.0, 5) == [120_000.0, 60_000.0, 0.0]
    assert detect_period(arrivals, 2, 0.01, 250.0, 250.0) == (60_000.0, 120_000.0, 0.0)


# ------------------------------------------------------------------------------ plans
def test_a_periodic_plan_is_ready_slack_before_the_next_call():
    cfg = TimerConfig(min_gaps=2, slack_ms=1_000.0)
    arrivals = [0.0, 60_000.0, 120_000.0]               # ascending, as FunctionStats.recent
    plan = cfg.plan(now_ms=120_500.0, arrivals=arrivals, cold_start_ms=400.0)
    assert plan is not None and plan.periodic
    assert plan.starts_ms == (180_000.0 - 1_000.0 - 120_500.0,)
    assert plan.window_ms == 2_000.0
    # an execution that outlasted the next call: the one after it
    late = cfg.plan(now_ms=185_000.0, arrivals=arrivals, cold_start_ms=400.0)
    assert late.starts_ms == (240_000.0 - 1_000.0 - 185_000.0,)


def test_a_new_function_gets_a_chain_of_cron_guesses_and_an_irregular_one_nothing():
    cfg = TimerConfig(min_gaps=2, prior=True)
    once = cfg.plan(now_ms=10_300.0, arrivals=[10_000.0], cold_start_ms=400.0)
    assert not once.periodic
    assert once.starts_ms == tuple(10_000.0 + p - 1_000.0 - 10_300.0 for p in CRON_PERIODS_MS)
    twice = cfg.plan(now_ms=100_300.0, arrivals=[10_000.0, 100_000.0], cold_start_ms=400.0)
    assert 100_000.0 + 90_000.0 - 1_000.0 - 100_300.0 in twice.starts_ms   # the gap seen is a guess too
    assert list(twice.starts_ms) == sorted(twice.starts_ms)
    assert cfg.plan(now_ms=200_300.0, arrivals=[10_000.0, 100_000.0, 200_000.0], cold_start_ms=400.0) is None
    assert TimerConfig().plan(now_ms=10_300.0, arrivals=[10_000.0], cold_start_ms=400.0) is None


# ------------------------------------------------------------------------------ the hook
def keep_alive_network() -> list[tuple[np.ndarray, np.ndarray]]:
    """Always predicts a ~1 s idle period: keep alive briefly, never pre-warm."""
    out_bias = np.full(N_BINS, -20.0)
    out_bias[1] = 20.0
    return [(np.zeros((4, N_FEATURES)), np.zeros(4)), (np.zeros((N_BINS, 4)), out_bias)]


def timer_trace(period_ms: float = 60_000.0, calls: int = 30) -> pd.DataFrame:
    rows = [("t", "t", 7_000.0 + k * period_ms, 200.0, 256.0) for k in range(calls)]
    rows += [("r", "r", float(t), 100.0, 256.0)
             for t in np.cumsum(np.random.default_rng(1).lognormal(np.log(40_000.0), 1.2, 40))]
    df = pd.DataFrame(rows, columns=["app", "function", "arrival_ms", "duration_ms", "memory_mb"])
    return df.sort_values("arrival_ms", kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("period_ms", [60_000.0, 120_000.0])
def test_timers_on_pre_warm_a_periodic_function_just_in_time(period_ms):
    trace = timer_trace(period_ms, 20)
    off = simulate(trace, ImitationPolicy(keep_alive_network()))
    on = simulate(trace, ImitationPolicy(keep_alive_network(), timers={"min_gaps": 2, "prior": True}))
    cold_off = off.requests.groupby("function")["cold"].sum()
    cold_on = on.requests.groupby("function")["cold"].sum()
    assert cold_off["t"] == 20                          # the network alone never reaches the next call
    # only the first call: the cron guesses (at 120 s the 60-s guess goes unused and the next one
    # in the chain is used), the gap seen, then the period
    assert cold_on["t"] == 1
    assert summarize(on)["weighted_cost_usd"] < summarize(off)["weighted_cost_usd"]


def test_the_selected_layer_pre_warms_from_the_fourth_call_and_leaves_near_calls_to_the_network():
    slow = simulate(timer_trace(60_000.0, 12), ImitationPolicy(keep_alive_network(), timers=True))
    cold = slow.requests[slow.requests.function == "t"]["cold"].tolist()
    assert cold == [True] * 4 + [False] * 8             # 3 equal gaps, then each call pre-warmed
    # a 1.5-s timer: a pre-warm (ready 1 s early, kept 2 s) would not cost less than keeping
    # alive, so the layer leaves the network's choice (decisions as with the layer off)
    fast_trace = timer_trace(1_500.0, 40)
    fast_on = simulate(fast_trace, ImitationPolicy(keep_alive_network(), timers=True))
    fast_off = simulate(fast_trace, ImitationPolicy(keep_alive_network()))
    pd.testing.assert_frame_equal(fast_on.requests, fast_off.requests)


def test_timers_off_never_runs_the_layer(monkeypatch):
    trace = timer_trace()
    before = simulate(trace, ImitationPolicy(keep_alive_network()))

    def fail(*args: object) -> None:
        raise AssertionError("the timer layer ran while off")

    monkeypatch.setattr(ImitationPolicy, "plan_timer", fail)
    for off in (None, False):
        after = simulate(trace, ImitationPolicy(keep_alive_network(), timers=off))
        pd.testing.assert_frame_equal(before.requests, after.requests)
        pd.testing.assert_frame_equal(before.instances, after.instances)


# ------------------------------------------------------------------------------ the artifact
def test_the_artifact_carries_the_timer_layer(tmp_path):
    policy = ImitationPolicy(keep_alive_network(), timers={"min_gaps": 3, "tolerance": 0.02})
    spec = json.loads((policy.save(tmp_path / "on") / "spec.json").read_text())
    assert spec["decision"]["timers"] == TimerConfig(min_gaps=3, tolerance=0.02).as_dict()
    loaded = load_policy(f"learned:{tmp_path / 'on'}")
    assert loaded.timers == TimerConfig(min_gaps=3, tolerance=0.02)
    trace = timer_trace()
    pd.testing.assert_frame_equal(simulate(trace, policy).requests, simulate(trace, loaded).requests)
    # off: the field is left out, so artifacts without the layer are written as before
    spec_off = json.loads((ImitationPolicy(keep_alive_network()).save(tmp_path / "off") / "spec.json").read_text())
    assert "timers" not in spec_off["decision"]
    assert load_policy(f"learned:{tmp_path / 'off'}").timers is None


@pytest.mark.parametrize("timers, named", [("sometimes", "timers must be true, false or an object"),
                                           ({"min_gaps": 0}, "timers.min_gaps"),
                                           ({"tolerance": -0.1}, "timers.tolerance"),
                                           ({"slack_ms": "1s"}, "timers.slack_ms"),
                                           ({"prior": "yes"}, "timers.prior"),
                                           ({"period": 60}, "timers has unknown field.*period")])
def test_a_bad_timers_value_is_refused_with_a_clear_error(tmp_path, timers, named):
    with pytest.raises(PolicySpecError, match=named):
        ImitationPolicy(keep_alive_network(), timers=timers)
    folder = ImitationPolicy(keep_alive_network()).save(tmp_path / "art")
    spec = json.loads((folder / "spec.json").read_text())
    spec["decision"]["timers"] = timers
    (folder / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(PolicySpecError, match=f"spec.json decision: learned: {named}"):
        load_policy(f"learned:{folder}")
