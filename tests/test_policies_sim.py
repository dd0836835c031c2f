"""The built-in policies in the real simulator (wlsim.engine) on small synthetic traces:
they serve every request, are deterministic, and relate sensibly to each other; the oracle's
weighted cost is never beaten."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from policies.interface import CostWeights
from policies.registry import BUILTINS
from wlsim.config import SimConfig
from wlsim.engine import simulate
from wlsim.metrics import summarize
from wlsim.traces import diurnal, load_azure2021, mmpp, payload_driven, poisson

pytestmark = pytest.mark.integration  # every policy through whole simulations

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "policies" / "keep_warm_5min.py"
ALL_SPECS = [*sorted(BUILTINS), f"custom:{EXAMPLE}"]


def single_function(arrivals_ms, duration_ms: float, memory_mb: float = 256.0) -> pd.DataFrame:
    arrivals = np.asarray(arrivals_ms, dtype=float)
    return pd.DataFrame({"app": "app", "function": "fn", "arrival_ms": arrivals,
                         "duration_ms": np.full(len(arrivals), duration_ms), "memory_mb": memory_mb})


TRACES = {
    "poisson": lambda: poisson(6, 1.0, seed=1),
    "mmpp": lambda: mmpp(4, 1.0, seed=2),
    "mmpp_hot": lambda: mmpp(3, 0.25, on_rate_per_s=20.0, seed=3),
    "diurnal": lambda: diurnal(4, 4.0, seed=4),
    "payload": lambda: payload_driven(4, 1.0, seed=5),
    "azure2021": lambda: load_azure2021(ROOT / "traces" / "azure2021" / "Azure2021_200.csv"),
}


@pytest.fixture(scope="module")
def runs():
    """Every policy on every trace, simulated once for the whole module."""
    out = {}
    for tname, make in TRACES.items():
        trace = make()
        out[tname] = (trace, {spec: simulate(trace, spec) for spec in ALL_SPECS})
    return out


def test_every_policy_serves_every_request(runs):
    for tname, (trace, results) in runs.items():
        for spec, r in results.items():
            req = r.requests
            assert len(req) == len(trace), (tname, spec)
            assert not req.rejected.any(), (tname, spec)
            assert (req.latency_ms >= req.exec_ms - 1e-6).all(), (tname, spec)
            inst = r.instances
            assert (inst.died_ms >= inst.created_ms).all(), (tname, spec)
            assert inst.invocations.sum() == len(trace), (tname, spec)


def test_the_oracle_weighted_cost_is_never_beaten(runs):
    weights = CostWeights()
    for tname, (_, results) in runs.items():
        costs = {spec: summarize(r, weights)["weighted_cost_usd"] for spec, r in results.items()}
        oracle = costs.pop("oracle")
        beaten = {spec: c for spec, c in costs.items() if c < oracle}
        assert not beaten, f"{tname}: oracle {oracle:.6f} beaten by {beaten}"


def test_the_oracle_idles_least_and_prewarms_ahead_of_sparse_calls(runs):
    for tname, (_, results) in runs.items():
        idle = {spec: summarize(r)["idle_gb_s"] for spec, r in results.items()}
        oracle = idle.pop("oracle")
        assert oracle < min(idle.values()), (tname, oracle, idle)
    # azure2021 is sparse: instances are killed between calls and pre-warmed for the next
    assert runs["azure2021"][1]["oracle"].instances.prewarmed.sum() > 20


def test_policies_are_deterministic():
    trace = mmpp(3, 0.5, seed=11)
    for spec in ALL_SPECS:
        a, b = simulate(trace, spec), simulate(trace, spec)
        pd.testing.assert_frame_equal(a.requests, b.requests)
        pd.testing.assert_frame_equal(a.instances, b.instances)


@pytest.mark.parametrize("tname", ["poisson", "mmpp", "diurnal"])
def test_a_longer_ttl_never_gives_more_cold_starts(tname):
    trace = TRACES[tname]()
    cold = [int(simulate(trace, f"fixed_ttl:ttl_ms={ttl}").requests.cold.sum())
            for ttl in (1_000, 10_000, 60_000, 300_000, 1_800_000)]
    assert cold == sorted(cold, reverse=True), cold
    assert cold[0] > cold[-1]


def test_the_example_custom_policy_equals_a_five_minute_ttl():
    trace = TRACES["mmpp"]()
    mine, ttl = simulate(trace, f"custom:{EXAMPLE}"), simulate(trace, "fixed_ttl:ttl_ms=300000")
    pd.testing.assert_frame_equal(mine.requests, ttl.requests)
    pd.testing.assert_frame_equal(mine.instances, ttl.instances)


def test_hybrid_histogram_prewarms_a_periodic_function():
    # a call every 10 minutes for 3 hours: idle times just under 10 min (bin 9), so the
    # policy unloads after each call and pre-warms 8.1 min later, warm until 11 min
    trace = single_function(np.arange(0, 3 * 3_600_000, 600_000), 100.0)
    hh = simulate(trace, "hybrid_histogram")
    ttl = simulate(trace, "fixed_ttl")
    assert hh.requests.cold.sum() == 1                      # only the very first call
    assert hh.instances.prewarmed.sum() >= len(trace) - 7   # after 5 idle times: pre-warms
    hh_idle, ttl_idle = summarize(hh)["idle_gb_s"], summarize(ttl)["idle_gb_s"]
    assert hh_idle < ttl_idle / 2


def test_expected_wait_queues_only_when_that_beats_a_cold_start():
    # constant 50 ms executions, a cold start of 250 + 0.5 x 256 = 378 ms
    rng = np.random.default_rng(0)
    trace = single_function(np.sort(rng.uniform(0, 600_000, 6_000)), 50.0)
    r = simulate(trace, "default")
    waited = r.requests.wait_ms
    assert (waited > 0).sum() > 0                           # it does queue (at new peaks)
    assert waited.max() < 378.0                             # never longer than a cold start
    short_ttl = simulate(trace, "fixed_ttl:ttl_ms=2000")
    assert r.requests.cold.sum() < short_ttl.requests.cold.sum()
    assert summarize(r)["weighted_cost_usd"] < summarize(short_ttl)["weighted_cost_usd"]


def test_kpa_scales_up_for_a_burst_and_back_down():
    # 200 requests of 2 s within 4 s, then nothing for 10 minutes, then one more
    burst = list(np.linspace(0, 4_000, 200))
    trace = single_function(burst + [600_000.0], 2_000.0)
    r = simulate(trace, "kpa")
    inst = r.instances
    assert len(inst) >= 20                                  # scaled out for the burst
    # all burst instances were gone before the last call: it cold starts on a fresh one
    assert bool(r.requests.cold.iloc[-1])
    assert (inst.died_ms.iloc[:-1] < 600_000).all()


def test_faascache_evicts_by_priority_under_memory_pressure():
    # two functions on a 1 GB node: a hot 512 MB one and a rare 512 MB one, plus a third
    # that needs room; every spawn finds memory by evicting idle instances
    rows = []
    for t in range(0, 600_000, 2_000):
        rows.append(("hot", float(t)))
    for t in range(1_000, 600_000, 60_000):
        rows.append(("rare", float(t)))
    for t in range(1_500, 600_000, 45_000):
        rows.append(("third", float(t)))
    rows.sort(key=lambda x: x[1])
    trace = pd.DataFrame({"app": [f for f, _ in rows], "function": [f for f, _ in rows],
                          "arrival_ms": [t for _, t in rows], "duration_ms": 100.0, "memory_mb": 400.0})
    config = SimConfig(node_memory_mb=1024.0)
    r = simulate(trace, "faascache", config)
    assert not r.requests.rejected.any()
    evicted = r.instances[r.instances.evicted]
    assert len(evicted) > 0
    # the hot function has the highest priority: it is evicted far less often than the others
    by_fn = evicted.function.value_counts()
    assert by_fn.get("hot", 0) < min(by_fn.get("rare", 0), by_fn.get("third", 0))
    lru = simulate(trace, "fixed_ttl:ttl_ms=3600000", config)
    assert r.requests.cold.sum() <= lru.requests.cold.sum()


def test_faascache_memory_cap_binds():
    trace = TRACES["poisson"]()
    cap = 1024.0
    capped = simulate(trace, f"faascache:memory_cap_mb={cap:g}")
    uncapped = simulate(trace, "faascache")
    inst = capped.instances
    created, died = inst["created_ms"].to_numpy(), inst["died_ms"].to_numpy()
    # live memory at every spawn (the only moment it grows) never passes the cap: the peak
    peak = max(inst["memory_mb"].to_numpy()[(created <= t) & (t < died)].sum() for t in created)
    assert peak <= cap + 1e-6
    assert summarize(uncapped)["peak_instances"] * trace["memory_mb"].max() > cap   # it would bind
    assert summarize(capped)["idle_gb_s"] < summarize(uncapped)["idle_gb_s"]
    # room was made by evicting idle instances within the spawn (Spawn(evict=...)); a request
    # was refused only when its instance would not have fit under the cap
    assert inst["evicted"].sum() > 0 and len(inst) > len(uncapped.instances)
    memory = inst["memory_mb"].to_numpy()
    rejected = capped.requests["rejected"].to_numpy()
    for t, need in zip(trace["arrival_ms"].to_numpy()[rejected], trace["memory_mb"].to_numpy()[rejected],
                       strict=True):
        assert memory[(created <= t) & (t < died)].sum() + need > cap
