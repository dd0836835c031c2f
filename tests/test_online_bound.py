"""examples/learned/online_bound.py: the oracle with each function's first gap blinded, on a
5-minute timer and a function called once, and the per-cause decomposition of a run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

from policies.builtin.oracle import Oracle
from wlsim.engine import simulate
from wlsim.metrics import summarize

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[1] / "examples/learned/online_bound.py"
spec = importlib.util.spec_from_file_location("online_bound", SCRIPT)
ob = importlib.util.module_from_spec(spec)
sys.modules["online_bound"] = ob
spec.loader.exec_module(ob)

PERIOD_MS = 300_000.0
ONCE_AT_MS = 10_000.0


def trace() -> pd.DataFrame:
    rows = [("a", "timer", 1_000.0 + k * PERIOD_MS, 100.0, 256.0) for k in range(4)]
    rows.append(("a", "once", ONCE_AT_MS, 100.0, 256.0))
    df = pd.DataFrame(rows, columns=["app", "function", "arrival_ms", "duration_ms", "memory_mb"])
    return df.sort_values("arrival_ms", kind="stable").reset_index(drop=True)


def run(policy):
    result = simulate(trace(), policy)
    return result, summarize(result)


def test_the_oracle_pre_warms_every_later_call():
    _, s = run(Oracle())
    assert s["cold_starts"] == 2                       # each function's first call only


def test_keep_or_cold_pays_a_cold_start_for_the_first_gap_only():
    result, s = run(ob.FirstGapOracle("keep_or_cold"))
    assert s["cold_starts"] == 3                       # the timer's 2nd call; the 3rd and 4th are pre-warmed
    colds = ob.decompose(result).cold_starts
    assert colds.loc["timer", "first gap"] == 1 and colds.loc["timer", "later gaps"] == 0
    assert s["idle_gb_s"] < 1.0


def test_ttl_keeps_every_function_blind_for_t():
    t_ms = 400_000.0                                   # longer than the timer's first gap
    _, s = run(ob.FirstGapOracle("ttl", ttl_ms=t_ms))
    assert s["cold_starts"] == 2
    # the timer idles through its first gap; the function called once cannot be told apart: kept T
    first_gap_ms = PERIOD_MS - 100.0 - 378.0           # after its first execution (cold start 378 ms)
    assert s["idle_gb_s"] == pytest.approx((first_gap_ms + t_ms) / 1000.0 * 0.25, rel=1e-3)
    _, short = run(ob.FirstGapOracle("ttl", ttl_ms=1_000.0))
    assert short["cold_starts"] == 3


@pytest.mark.parametrize(("minutes", "colds", "unused"), [((1, 2, 5), 2, 2 + 3), ((1, 2), 3, 2 + 2)])
def test_chain_pre_warms_at_the_guessed_periods(minutes, colds, unused):
    chain = [m * 60_000.0 for m in minutes]
    result, s = run(ob.FirstGapOracle("chain", chain_ms=chain))
    assert s["cold_starts"] == colds                   # warm at the 2nd call iff 5 min is guessed
    inst = result.instances
    assert int((inst["prewarmed"] & (inst["invocations"] == 0)).sum()) == unused
    usd = ob.decompose(result).usd
    assert usd.loc["once", "unused pre-warms"] > 0


def test_decompose_adds_up_to_the_run_and_bad_modes_are_refused():
    result, s = run(ob.FirstGapOracle("ttl", ttl_ms=60_000.0))
    assert ob.decompose(result).usd.to_numpy().sum() == pytest.approx(s["weighted_cost_usd"], rel=1e-9)
    with pytest.raises(ValueError, match="first_gap must be one of"):
        ob.FirstGapOracle("guess")
    with pytest.raises(ValueError, match="ttl_ms"):
        ob.FirstGapOracle("ttl", ttl_ms=-1.0)
