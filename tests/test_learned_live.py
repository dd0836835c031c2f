"""bench/learned_live.py: the training slice is compressed exactly like the live slice, the
imitation trainer simulates with the profile it is given, and the committed live-gain result
agrees with the code that derives its gains."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "examples" / "learned" / "azure40-wl"


def _load_script():
    spec = importlib.util.spec_from_file_location("learned_live", ROOT / "bench" / "learned_live.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("learned_live", module)
    spec.loader.exec_module(module)
    return module


ll = _load_script()


def test_real_minutes_map_to_whole_compressed_minutes() -> None:
    assert ll.compressed_minutes((1, 600)) == (1, 40)
    assert ll.compressed_minutes((601, 720)) == (41, 48)
    with pytest.raises(ValueError, match="whole compressed minutes"):
        ll.compressed_minutes((1, 601))


def test_gain_is_the_share_of_the_baseline_cost_saved() -> None:
    assert ll.gain(90.0, 100.0) == pytest.approx(10.0)
    assert ll.gain(110.0, 100.0) == pytest.approx(-10.0)


def test_training_trace_is_compressed_like_the_live_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from wlsim.traces import read_trace

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(ll, "TRAIN_REAL", (1, 30))         # a short slice keeps the test fast
    plan = ll.test_plan()
    train = ll.compressed_training_trace()
    real = read_trace(ll.TRACE, seed=0, start_minute=1, end_minute=30)
    real = real[real["function"].astype(str).isin(set(plan.functions["function"]))]
    assert len(train) == len(real) > 0
    assert set(train["function"]) <= set(plan.functions["function"])
    # time / speed from the slice's start, durations / speed capped like the live plan
    assert np.allclose(np.sort(train["arrival_ms"].to_numpy()), np.sort(real["arrival_ms"].to_numpy()) / ll.SPEED)
    assert train["arrival_ms"].max() < 30 * 60_000 / ll.SPEED
    assert np.isclose(train["duration_ms"].sum(),
                      np.minimum(real["duration_ms"].to_numpy() / ll.SPEED, ll.MAX_DURATION_MS).sum())
    # each function at the memory the live run deploys it with
    deployed = plan.functions.set_index("function")["memory_mb"]
    assert (train["memory_mb"].to_numpy() == train["function"].map(deployed).to_numpy()).all()


def test_imitation_trainer_simulates_with_the_given_profile(tmp_path) -> None:
    from wlsim.profile import ProfileError, load_profile
    from wlsim.rl.imitate import ImitationConfig, _simulate, train

    trace = pd.DataFrame({"app": ["a"] * 3, "function": ["f"] * 3, "arrival_ms": [0.0, 10_000.0, 20_000.0],
                          "duration_ms": [5.0] * 3, "memory_mb": [128.0] * 3})
    container = _simulate(trace, "fixed_ttl:ttl_ms=1", None)
    wl = _simulate(trace, "fixed_ttl:ttl_ms=1", "wl")
    prof = load_profile("wl")
    wl_max = prof.cold_start.by_abi["wasi-command"].quantiles_ms[-1]
    assert (wl.requests["cold_start_ms"] <= wl_max).all()
    assert (container.requests["cold_start_ms"] > 250).all()
    # the profile's front and per-request overhead shape the trace, as wl fidelity's prediction
    assert wl.requests["exec_ms"].tolist() == [5.0 + prof.request_overhead_ms] * 3
    assert container.requests["exec_ms"].tolist() == [5.0] * 3
    with pytest.raises(ProfileError, match="nope"):
        train(ImitationConfig(profile="nope", out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()      # refused before any work


def test_committed_gains_follow_from_the_committed_costs() -> None:
    results = sorted(RESULTS.glob("live-gain-*.json"))
    assert results, f"no live result in {RESULTS}"
    for path in results:
        doc = json.loads(path.read_text())
        rows = doc["policies"]
        assert {r["policy"].split(":")[0] for r in rows} >= {"default", "fixed_ttl", "learned"}, path.name
        assert doc["gains_percent"] == ll.gains(rows), path.name
        for r in rows:
            assert r["predicted"]["weighted_cost_usd"] > 0 and r["as_sent"]["weighted_cost_usd"] > 0, path.name
