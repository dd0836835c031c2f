"""The imitation policy's idle-period bins as a property of the artifact (spec.json
"bin_edges_ms"): a policy decides with its own edges (keep-alives, pre-warm windows, the cost
matrix of both the numpy and the compiled path), bad edges are refused with a clear error, and
training bins its labels with the edges it is given and writes them into the artifact."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from policies.imitation import EDGES_MS, N_BINS, N_FEATURES, ImitationPolicy, bin_edges, cost_matrix
from policies.interface import CostWeights
from policies.learned import ArtifactError, LearnedPolicy
from policies.registry import PolicySpecError, load_policy
from wlsim.engine import simulate

pytestmark = pytest.mark.unit

# Edges for a platform with millisecond cold starts: 0, 2 ms .. 2 min, inf
LIVE_EDGES = bin_edges(2.0, 120_000.0)


def sure_of(bin_index: int, hidden_layers: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """A network that predicts bin ``bin_index`` whatever the features (one hidden layer: the
    fused compiled kernel; two: the numpy path)."""
    b_out = np.full(N_BINS, -50.0)
    b_out[bin_index] = 50.0
    layers = [(np.zeros((4, N_FEATURES)), np.zeros(4))]
    layers += [(np.zeros((4, 4)), np.zeros(4))] * (hidden_layers - 1)
    return layers + [(np.zeros((N_BINS, 4)), b_out)]


def two_calls() -> pd.DataFrame:
    """One function (1 GB, 762 ms cold start in the default simulator), called twice 50 minutes
    apart: the first instance's idle time is the keep-alive chosen after its execution."""
    return pd.DataFrame({"app": "a", "function": "f", "arrival_ms": [0.0, 3_000_000.0], "duration_ms": 100.0,
                         "memory_mb": 1024.0})


def test_the_default_edges_are_unchanged():
    expected = np.concatenate([[0.0], np.geomspace(500.0, 7_200_000.0, 20), [np.inf]])
    assert EDGES_MS.view(np.int64).tolist() == expected.view(np.int64).tolist()
    assert ImitationPolicy(sure_of(3)).edges_ms is EDGES_MS


@pytest.mark.parametrize("hidden_layers", [1, 2])
def test_an_artifact_with_its_own_edges_keeps_alive_to_them(tmp_path, hidden_layers):
    # sure of a gap in bin 5: 20-36 ms with these edges (keep to 36 ms: far cheaper than a
    # 762 ms cold start), 3.8-6.2 s with the default ones (cheaper to kill)
    folder = ImitationPolicy(sure_of(5, hidden_layers), bin_edges_ms=list(LIVE_EDGES[:-1])).save(tmp_path / "art")
    spec = json.loads((folder / "spec.json").read_text())
    assert spec["bin_edges_ms"] == [float(e) for e in LIVE_EDGES[:-1]]
    policy = load_policy(f"learned:{folder}")
    assert isinstance(policy, ImitationPolicy)
    assert policy.edges_ms.tolist() == LIVE_EDGES.tolist()
    assert policy.describe()["bin_edges_ms"] == spec["bin_edges_ms"]
    first = simulate(two_calls(), policy).instances.iloc[0]
    assert first["idle_ms"] == pytest.approx(LIVE_EDGES[6])
    default = simulate(two_calls(), ImitationPolicy(sure_of(5, hidden_layers))).instances.iloc[0]
    assert default["idle_ms"] == 0.0
    assert "bin_edges_ms" not in ImitationPolicy(sure_of(5, hidden_layers)).describe()


def test_a_pickled_policy_keeps_its_edges():
    import pickle

    from policies.interface import KILL

    policy = pickle.loads(pickle.dumps(ImitationPolicy(sure_of(5), bin_edges_ms=list(LIVE_EDGES[:-1]))))
    assert policy.edges_ms.tolist() == LIVE_EDGES.tolist()
    assert policy._keep_answers[0.0] is KILL          # on_idle tests the kill answer by identity
    assert simulate(two_calls(), policy).instances.iloc[0]["idle_ms"] == pytest.approx(LIVE_EDGES[6])


@pytest.mark.parametrize("k", [0, 2, 11])
def test_keep_alive_answers_are_at_the_artifacts_own_edges(k):
    r = simulate(two_calls(), ImitationPolicy(sure_of(k), bin_edges_ms=list(LIVE_EDGES[:-1])))
    assert r.instances.iloc[0]["idle_ms"] == pytest.approx(LIVE_EDGES[k + 1])


def test_a_prewarm_window_is_the_artifacts_own_bin():
    # sure of bin 15 (6.6-11.8 s): kill, have an instance ready at the bin's lower edge after the
    # execution and keep it to the upper edge
    r = simulate(two_calls(), ImitationPolicy(sure_of(15), bin_edges_ms=list(LIVE_EDGES[:-1])))
    first, warm = r.instances.iloc[0], r.instances.iloc[1]
    assert first["idle_ms"] == 0.0 and bool(warm["prewarmed"])
    assert warm["ready_ms"] == pytest.approx(first["died_ms"] + LIVE_EDGES[15])
    assert warm["died_ms"] == pytest.approx(first["died_ms"] + LIVE_EDGES[16])


def test_the_compiled_cost_matrix_follows_the_edges_to_the_bit():
    from policies.imitation import representative_ms
    from policies.imitation_kernel import N_COSTS, IdleWindow, cost_inputs, fill_costs

    w = CostWeights()
    fs = IdleWindow(64).fs
    bins = cost_inputs(LIVE_EDGES, representative_ms(LIVE_EDGES))
    for mem_mb, cold_ms in ((128.0, 1.5), (1024.0, 3.7), (512.0, 762.0), (256.0, 0.0)):
        reference = cost_matrix(mem_mb / 1024.0, cold_ms, w.gb_s_usd, w.latency_usd_per_s, LIVE_EDGES)
        assert not np.array_equal(reference, cost_matrix(mem_mb / 1024.0, cold_ms, w.gb_s_usd, w.latency_usd_per_s))
        mem = mem_mb / 1024.0 * w.gb_s_usd / 1000.0
        fill_costs(fs, mem, (w.latency_usd_per_s / 1000.0 + mem) * cold_ms, cold_ms, bins)
        compiled = fs[fs.size - N_COSTS:].reshape(reference.shape)
        assert compiled.view(np.int64).tolist() == reference.view(np.int64).tolist()


def test_the_first_bins_representative_is_half_its_upper_edge():
    from policies.imitation import REPRESENTATIVE_MS, representative_ms

    assert REPRESENTATIVE_MS[0] == 250.0
    g = representative_ms(LIVE_EDGES)
    assert g[0] == 1.0 and g[-1] == 2 * 120_000.0 and g[5] == pytest.approx(np.sqrt(LIVE_EDGES[5] * LIVE_EDGES[6]))


def test_an_artifact_without_edges_has_the_default_ones(tmp_path):
    folder = ImitationPolicy(sure_of(3)).save(tmp_path / "art")
    spec = json.loads((folder / "spec.json").read_text())
    del spec["bin_edges_ms"]
    (folder / "spec.json").write_text(json.dumps(spec))
    assert load_policy(f"learned:{folder}").edges_ms.tolist() == EDGES_MS.tolist()


def _edges_with(k: int, value: object) -> list[object]:
    edges: list[object] = [float(e) for e in LIVE_EDGES[:-1]]
    edges[k] = value
    return edges


@pytest.mark.parametrize("edges, message", [
    ([float(e) for e in LIVE_EDGES[:-2]], "must hold 21 edges.*got 20"),
    ([float(e) for e in LIVE_EDGES], "must hold 21 edges.*got 22"),
    (_edges_with(0, 1.0), "must start at 0"),
    (_edges_with(5, _edges_with(0, 0.0)[4]), r"strictly increasing: edge 5 \(.*\) is not above edge 4"),
    (_edges_with(9, 1.0), "strictly increasing: edge 9"),
    (_edges_with(1, -2.0), r"bin_edges_ms\[1\] must be positive"),
    (_edges_with(20, float("inf")), r"bin_edges_ms\[20\] must be finite"),
    (_edges_with(3, None), r"bin_edges_ms\[3\] must be a number"),
    ("0,2,4", "must be a list of 21 numbers"),
])
def test_bad_edges_are_refused_with_a_clear_error(tmp_path, edges, message):
    folder = ImitationPolicy(sure_of(3)).save(tmp_path / "art")
    spec = json.loads((folder / "spec.json").read_text())
    spec["bin_edges_ms"] = edges
    (folder / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ArtifactError, match=message) as err:
        LearnedPolicy.load(folder)
    assert str(folder) in str(err.value)
    with pytest.raises(PolicySpecError, match=message):     # the registry's error (the router answers 400)
        load_policy(f"learned:{folder}")
    with pytest.raises(PolicySpecError, match=message):
        ImitationPolicy(sure_of(3), bin_edges_ms=edges)     # type: ignore[arg-type]


def test_bin_edges_refuse_a_bad_range():
    for low, high in ((0.0, 10.0), (5.0, 2.0), (3.0, 3.0), (1.0, float("inf")), (float("nan"), 2.0)):
        with pytest.raises(ValueError, match="0 < low < high"):
            bin_edges(low, high)
    with pytest.raises(ValueError, match="strictly increasing"):
        bin_edges(1.0, 1.0 + 1e-15)       # too narrow for float64: equal edges


def test_training_bins_its_labels_with_the_given_edges_and_the_artifact_carries_them(tmp_path, monkeypatch):
    import wlsim.rl.imitate as imitate

    # a function called every ~130 ms for 100 ms: warm idle periods of ~30 ms (all in bin 0 of
    # the default edges, in bin 5 of LIVE_EDGES: 20-36 ms)
    rng = np.random.default_rng(3)
    arrivals = np.arange(0.0, 6 * 60_000.0, 130.0) + rng.uniform(0.0, 2.0, 2770)
    trace = pd.DataFrame({"app": "a", "function": "f", "arrival_ms": arrivals, "duration_ms": 100.0,
                          "memory_mb": 256.0})
    path = tmp_path / "trace.csv"
    trace.to_csv(path, index=False)
    seen = []
    real_bin_of = imitate.bin_of

    def spy(gaps_ms, edges_ms=EDGES_MS):
        labels = real_bin_of(gaps_ms, edges_ms)
        seen.append((edges_ms, labels))
        return labels

    monkeypatch.setattr(imitate, "bin_of", spy)
    cfg = imitate.ImitationConfig(trace=str(path), train_minutes=(1, 4), validation_minutes=(5, 6), iterations=1,
                                  epochs=2, eval_every=2, hidden=4, out=str(tmp_path / "run"), tensorboard=False,
                                  bins_ms=(2.0, 120_000.0))
    artifact = imitate.train(cfg, log=lambda *_: None)
    (edges, labels), = seen
    assert edges.tolist() == LIVE_EDGES.tolist()
    assert len(labels) > 1000 and np.mean(labels == 5) > 0.9
    assert np.mean(real_bin_of(np.full(10, 30.0)) == 0) == 1.0          # the default edges: bin 0
    spec = json.loads((artifact / "spec.json").read_text())
    assert spec["bin_edges_ms"] == [float(e) for e in LIVE_EDGES[:-1]]
    assert spec["training"]["bins_ms"] == [2.0, 120_000.0]
    assert load_policy(f"learned:{artifact}").edges_ms.tolist() == LIVE_EDGES.tolist()


def test_training_refuses_a_bad_range_before_any_work(tmp_path):
    from wlsim.rl.imitate import ImitationConfig, parse_bins_ms, train

    with pytest.raises(ValueError, match="0 < low < high"):
        train(ImitationConfig(bins_ms=(50.0, 5.0), out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()
    assert parse_bins_ms("2,120000") == (2.0, 120_000.0)
    for bad, message in (("2", "takes LO,HI"), ("2,x", "takes LO,HI"), ("1,2,3", "takes LO,HI"),
                         ("0,10", "0 < low < high"), ("9,3", "0 < low < high")):
        with pytest.raises(ValueError, match=message):
            parse_bins_ms(bad)


def test_the_imitate_command_refuses_bad_bins(tmp_path):
    from wl.cli import app

    result = CliRunner().invoke(app, ["rl", "imitate", "--bins-ms", "500,5", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "--bins-ms 500,5" in result.output + (result.stderr or "") and "0 < low < high" in result.stderr
    assert not (tmp_path / "run").exists()
