"""The imitation-learned keep-alive policy: cost model, decisions, labels, artifact, training."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from policies.imitation import ACTIONS, EDGES_MS, N_BINS, N_FEATURES, REPRESENTATIVE_MS, ImitationPolicy, cost_matrix
from policies.interface import CostWeights
from policies.registry import load_policy
from wlsim.engine import simulate
from wlsim.metrics import summarize

pytestmark = pytest.mark.unit

W = CostWeights()


def periodic_trace(period_ms: float, n: int, duration_ms: float = 100.0, memory_mb: float = 1024.0) -> pd.DataFrame:
    return pd.DataFrame({"app": "a", "function": "timer", "arrival_ms": np.arange(n) * period_ms,
                         "duration_ms": duration_ms, "memory_mb": memory_mb})


def one_bin_network(bin_index: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """A network that predicts bin ``bin_index`` whatever the features."""
    b1 = np.full(N_BINS, -50.0)
    b1[bin_index] = 50.0
    return [(np.zeros((4, N_FEATURES)), np.zeros(4)), (np.zeros((N_BINS, 4)), b1)]


def test_cost_matrix_prices_keep_kill_and_prewarm():
    mem_gb, cold_ms = 1.0, 500.0
    c = cost_matrix(mem_gb, cold_ms, W.gb_s_usd, W.latency_usd_per_s)
    assert c.shape == (N_BINS, len(ACTIONS))
    per_ms = W.gb_s_usd / 1000.0
    cold = (W.latency_usd_per_s / 1000.0 + per_ms) * cold_ms
    kill = ACTIONS.index(("kill", 0, 0))
    assert np.allclose(c[:, kill], cold)
    keep5 = ACTIONS.index(("keep", 5, 5))                    # until EDGES_MS[6]
    g = REPRESENTATIVE_MS
    assert c[3, keep5] == pytest.approx(per_ms * g[3])       # a shorter gap: memory only
    assert c[9, keep5] == pytest.approx(per_ms * EDGES_MS[6] + cold)
    pw = ACTIONS.index(("prewarm", 10, 10))
    assert c[10, pw] == pytest.approx(per_ms * cold_ms + per_ms * (g[10] - EDGES_MS[10]))
    assert c[4, pw] == pytest.approx(cold)                   # came before the pre-warm
    assert c[15, pw] == pytest.approx(per_ms * (cold_ms + EDGES_MS[11] - EDGES_MS[10]) + cold)


def test_a_short_predicted_gap_keeps_alive_and_a_long_one_prewarms():
    # every 60 s, a 1 GB function: the break-even is ~30 s, so keeping 60 s costs twice a cold
    # start; a pre-warm just before the next call costs the start's memory only
    trace = periodic_trace(60_000.0, 30)
    gap_bin = int(np.searchsorted(EDGES_MS, 59_900.0, side="right") - 1)
    p = ImitationPolicy(one_bin_network(gap_bin))
    r = simulate(trace, p)
    assert r.instances["prewarmed"].sum() >= 25
    assert r.requests["cold"].sum() <= 3
    # predicting gaps shorter than a cold start (762 ms here), it keeps instances alive instead
    short = ImitationPolicy(one_bin_network(1))             # 500-825 ms
    r2 = simulate(periodic_trace(700.0, 200), short)
    assert r2.instances["prewarmed"].sum() == 0 and r2.requests["cold"].sum() <= 2   # the first calls only


def test_recorded_labels_are_the_hindsight_idle_periods():
    p = ImitationPolicy()             # no network: the default's decisions, recorded
    p.record()
    simulate(periodic_trace(60_000.0, 20), p)
    x, y = p.dataset()
    assert x.shape[1] == N_FEATURES and len(y) >= 15
    # each idle period: from the end of an execution to the next call a minute later (100 ms
    # after the call when warm, 100 ms + the 762 ms cold start after a cold one)
    warm, cold = np.isclose(y, 59_900.0, atol=1.0), np.isclose(y, 59_138.0, atol=1.0)
    assert np.all(warm | cold) and warm.sum() >= 10


def test_artifact_round_trip_decides_identically(tmp_path):
    rng = np.random.default_rng(0)
    layers = [(rng.normal(0, 0.5, (8, N_FEATURES)), rng.normal(0, 0.1, 8)),
              (rng.normal(0, 0.5, (N_BINS, 8)), rng.normal(0, 0.1, N_BINS))]
    folder = ImitationPolicy(layers).save(tmp_path / "art", {"seed": 0})
    spec = json.loads((folder / "spec.json").read_text())
    assert spec["format_version"] == 2 and spec["kind"] == "keepalive-imitation"
    loaded = load_policy(f"learned:{folder}")
    assert isinstance(loaded, ImitationPolicy)
    trace = pd.concat([periodic_trace(45_000.0, 20), periodic_trace(2_000.0, 300).assign(function="busy")])
    trace = trace.sort_values("arrival_ms", kind="stable").reset_index(drop=True)
    a, b = simulate(trace, ImitationPolicy(layers)), simulate(trace, loaded)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.instances, b.instances)


def test_a_bad_imitation_artifact_is_refused_with_a_clear_error(tmp_path):
    from policies.registry import PolicySpecError

    folder = ImitationPolicy(one_bin_network(3)).save(tmp_path / "art")
    spec = json.loads((folder / "spec.json").read_text())
    spec["features"] = spec["features"][:-1]
    (folder / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(PolicySpecError, match="features"):
        load_policy(f"learned:{folder}")


def test_training_selects_on_validation_and_writes_artifact_and_logs(tmp_path):
    from wlsim.rl.imitate import ImitationConfig, train

    rows = []
    rng = np.random.default_rng(1)
    for f, period in (("timer", 120_000.0), ("busy", 3_000.0)):
        t = np.arange(0, 40 * 60_000, period) + rng.uniform(0, 200, int(40 * 60_000 / period))
        rows.append(pd.DataFrame({"app": f, "function": f, "arrival_ms": t, "duration_ms": 200.0,
                                  "memory_mb": 512.0}))
    trace = pd.concat(rows).sort_values("arrival_ms").reset_index(drop=True)
    path = tmp_path / "trace.csv"
    trace.to_csv(path, index=False)
    cfg = ImitationConfig(trace=str(path), train_minutes=(1, 30), validation_minutes=(31, 40), iterations=2,
                          epochs=4, eval_every=2, out=str(tmp_path / "run"), hidden=8)
    artifact = train(cfg, log=lambda *_: None)
    policy = load_policy(f"learned:{artifact}")
    assert isinstance(policy, ImitationPolicy)
    history = json.loads((tmp_path / "run" / "train.json").read_text())
    assert len(history["history"]) == 4                       # 2 rounds x 2 evaluations
    assert {"cold_starts", "idle_gb_s", "weighted_cost_usd"} <= set(history["history"][0])
    assert history["meta"]["validation_cost_usd"] <= min(h["weighted_cost_usd"] for h in history["history"]) + 1e-12 \
        or "default" in history["meta"]["selected"]
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    assert summarize(simulate(trace, policy))["served"] == len(trace)


def test_own_prewarm_lets_a_functions_own_idle_periods_time_the_prewarm():
    # the network wrongly predicts sub-second gaps for a 60 s timer: it keeps 825 ms, never pre-warms;
    # with own_prewarm the default's search over the function's own idle periods pre-warms it
    trace = periodic_trace(60_000.0, 30)
    wrong = one_bin_network(1)
    plain = simulate(trace, ImitationPolicy(wrong))
    own = simulate(trace, ImitationPolicy(wrong, own_prewarm=True))
    assert plain.instances["prewarmed"].sum() == 0
    assert own.instances["prewarmed"].sum() >= 20
    assert own.requests["cold"].sum() < plain.requests["cold"].sum()


def test_an_unpickled_policy_decides_like_the_original():
    """A pickled policy (a worker process's copy) rebuilds its buffer views: its feature vector
    stays the forward pass's input, so it decides as the original does."""
    import pickle

    rng = np.random.default_rng(1)
    layers = [(rng.normal(0, 0.5, (8, N_FEATURES)), rng.normal(0, 0.1, 8)),
              (rng.normal(0, 0.5, (N_BINS, 8)), rng.normal(0, 0.1, N_BINS))]
    copy = pickle.loads(pickle.dumps(ImitationPolicy(layers)))
    copy._x[:] = 0.3                                  # what ``features`` writes reaches the network
    expected = ImitationPolicy(layers).unnormalised(np.full(N_FEATURES, 0.3))
    np.testing.assert_array_equal(copy.unnormalised(copy._x), expected)
    trace = pd.concat([periodic_trace(45_000.0, 20), periodic_trace(2_000.0, 300).assign(function="busy")])
    trace = trace.sort_values("arrival_ms", kind="stable").reset_index(drop=True)
    a, b = simulate(trace, ImitationPolicy(layers)), simulate(trace, copy)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.instances, b.instances)


def two_function_trace(minutes: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for f, period in (("timer", 120_000.0), ("busy", 3_000.0)):
        t = np.arange(0, minutes * 60_000, period) + rng.uniform(0, 200, int(minutes * 60_000 / period))
        rows.append(pd.DataFrame({"app": f, "function": f, "arrival_ms": t, "duration_ms": 200.0,
                                  "memory_mb": 512.0}))
    return pd.concat(rows).sort_values("arrival_ms").reset_index(drop=True)


def test_fresh_windows_are_renamed_copies_of_short_windows_in_the_rollout_trace():
    from wlsim.rl.imitate import FRESH_TAG, ImitationPolicy, rollout, with_fresh_windows

    trace = two_function_trace()
    both = with_fresh_windows(trace, 5, 10, seed=3)
    assert np.all(np.diff(both["arrival_ms"].to_numpy()) >= 0)
    original = both[~both["function"].str.contains(FRESH_TAG, regex=False)]
    assert len(original) == len(trace)                          # the slice itself is intact
    fresh = both[both["function"].str.contains(FRESH_TAG, regex=False)]
    windows = fresh.groupby(fresh["function"].str.split(FRESH_TAG).str[1])
    assert windows.ngroups == 5
    for _, w in windows:
        assert w["arrival_ms"].max() - w["arrival_ms"].min() < 10 * 60_000
        base = set(w["function"].str.split(FRESH_TAG).str[0])
        assert base <= {"timer", "busy"}
        assert (w["app"] == w["function"]).all()               # apps renamed with their functions
        # each row is a copy of a row of the slice at its original time
        src = trace[trace["function"].isin(base)]
        assert set(w["arrival_ms"]) <= set(src["arrival_ms"])
    # the windows' functions start with no history: their decisions are labelled too
    x_plain, _, _ = rollout(trace, ImitationPolicy())
    x_fresh, _, r = rollout(both, ImitationPolicy())
    assert len(x_fresh) > len(x_plain)
    assert summarize(r)["served"] == len(both)


@pytest.mark.parametrize(("n", "minutes", "message"), [(-1, 20, "number of windows must be >= 0"),
                                                        (3, 0, "at least 1 minute"),
                                                        (3, 41, "41-minute window does not fit")])
def test_a_bad_fresh_window_setting_is_refused_with_a_clear_error(n, minutes, message):
    from wlsim.rl.imitate import with_fresh_windows

    with pytest.raises(ValueError, match=message):
        with_fresh_windows(two_function_trace(), n, minutes, seed=0)


def test_imitate_refuses_a_bad_fresh_window_count_before_training(tmp_path):
    from typer.testing import CliRunner

    from wlsim.rl.cli import app

    path = tmp_path / "trace.csv"
    two_function_trace().to_csv(path, index=False)
    result = CliRunner().invoke(app, ["imitate", "--trace", str(path), "--train-minutes", "1,30",
                                      "--validation-minutes", "31,40", "--fresh-windows", "-2",
                                      "--out", str(tmp_path / "run"), "--no-tensorboard"])
    assert result.exit_code != 0
    assert "number of windows must be >= 0, got -2" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run" / "artifact").exists()
