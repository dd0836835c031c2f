"""The imitation policy's decision parameters (cold_start_weight, own_prewarm), carried by an
artifact's spec.json "decision" field, and the bookkeeping it skips when the network decides."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from policies.imitation import N_BINS, N_FEATURES, ImitationPolicy
from policies.registry import PolicySpecError, load_policy
from wlsim.engine import simulate
from wlsim.metrics import summarize

pytestmark = pytest.mark.unit


def uncertain_network() -> list[tuple[np.ndarray, np.ndarray]]:
    """Equal probability for every idle-period bin, whatever the features."""
    return [(np.zeros((4, N_FEATURES)), np.zeros(4)), (np.zeros((N_BINS, 4)), np.zeros(N_BINS))]


def irregular_trace(n: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    gaps = rng.lognormal(mean=np.log(20_000.0), sigma=1.5, size=n)
    return pd.DataFrame({"app": "a", "function": "f", "arrival_ms": np.cumsum(gaps),
                         "duration_ms": 100.0, "memory_mb": 512.0})


def test_a_higher_cold_start_weight_trades_idle_memory_for_fewer_cold_starts():
    trace = irregular_trace()
    plain = summarize(simulate(trace, ImitationPolicy(uncertain_network())))
    heavy = summarize(simulate(trace, ImitationPolicy(uncertain_network(), cold_start_weight=8.0)))
    assert heavy["cold_starts"] < plain["cold_starts"]
    assert heavy["idle_gb_s"] > plain["idle_gb_s"]


def test_the_artifact_carries_the_decision_parameters(tmp_path):
    policy = ImitationPolicy(uncertain_network(), cold_start_weight=5.0, own_prewarm="long")
    folder = policy.save(tmp_path / "art")
    spec = json.loads((folder / "spec.json").read_text())
    assert spec["decision"] == {"own_prewarm": "long", "cold_start_weight": 5.0}
    loaded = load_policy(f"learned:{folder}")
    assert isinstance(loaded, ImitationPolicy)
    assert (loaded.cold_start_weight, loaded.own_prewarm) == (5.0, "long")
    assert loaded.describe()["cold_start_weight"] == 5.0
    trace = irregular_trace(150)
    a, b = simulate(trace, policy), simulate(trace, loaded)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.instances, b.instances)


@pytest.mark.parametrize("decision, named", [({"cold_start_weight": -1}, "cold_start_weight"),
                                             ({"own_prewarm": "sometimes"}, "own_prewarm"),
                                             ({"speed": 2}, "decision"), ("fast", "decision")])
def test_a_bad_decision_field_is_refused_with_a_clear_error(tmp_path, decision, named):
    folder = ImitationPolicy(uncertain_network()).save(tmp_path / "art")
    spec = json.loads((folder / "spec.json").read_text())
    spec["decision"] = decision
    (folder / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(PolicySpecError, match=named):
        load_policy(f"learned:{folder}")


def test_the_pooled_idle_periods_are_kept_only_when_the_defaults_rule_reads_them():
    trace = irregular_trace(100)
    network = ImitationPolicy(uncertain_network())
    simulate(trace, network)
    assert len(network.pooled) == 0
    for reader in (ImitationPolicy(), ImitationPolicy(uncertain_network(), own_prewarm=True)):
        simulate(trace, reader)
        assert len(reader.pooled) > 50
