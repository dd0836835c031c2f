"""The engine's streamed mode (StreamingSimulation / simulate_stream): arrivals in batches,
results to Parquet parts; the same per-request and per-instance tables as the in-memory run,
with memory held to a batch plus the requests in flight."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
from conftest import Chaotic
from test_engine_equivalence import TIGHT, random_trace

from wlsim.config import ColdStartModel, SimConfig
from wlsim.engine import Simulation, StreamingSimulation, simulate, simulate_stream
from wlsim.result import read_streamed
from wlsim.traces import TraceError
from wlsim.traces.synthetic import azure_like

pytestmark = pytest.mark.unit


def batches(trace: pd.DataFrame, sizes: list[int]):
    """The trace cut into batches of the given sizes, cycled (uneven on purpose)."""
    start, k = 0, 0
    while start < len(trace):
        size = sizes[k % len(sizes)]
        yield trace.iloc[start:start + size]
        start += size
        k += 1


def assert_streamed_equals(one, out_dir, summary) -> None:
    req, inst = read_streamed(out_dir)
    pdt.assert_frame_equal(req, one.requests)
    pdt.assert_frame_equal(inst, one.instances)
    assert summary.horizon_ms == one.horizon_ms
    q = one.requests
    assert summary.invocations == len(q) and summary.rejected == int(q.rejected.sum())
    assert summary.cold == int(q.cold.sum()) and summary.instances == len(one.instances)
    assert summary.latency_ms_sum == pytest.approx(q.latency_ms.sum())
    assert summary.mean_wait_ms == pytest.approx(q.wait_ms.mean())
    assert summary.idle_mb_ms == pytest.approx((one.instances.memory_mb * one.instances.idle_ms).sum())
    assert json.loads((out_dir / "summary.json").read_text())["invocations"] == len(q)


@pytest.fixture(scope="module")
def azure_small():
    return azure_like(60, 8_000, 1.0, seed=5)


@pytest.mark.parametrize("spec", ["fixed_ttl:ttl_ms=60000", "default", "hybrid_histogram", "kpa", "faascache"])
def test_streamed_run_equals_in_memory_run(tmp_path, azure_small, spec):
    one = simulate(azure_small, spec)
    summary = simulate_stream(batches(azure_small, [1000, 37, 2500]), spec, tmp_path, rows_per_part=700)
    assert summary.request_parts > 5                 # many parts: rows crossed part boundaries
    assert_streamed_equals(one, tmp_path, summary)


def test_streamed_equals_in_memory_under_memory_pressure_rejections_and_features(tmp_path):
    # Two bounded nodes, evictions, rejections, pre-warms and re-routes (a seeded random
    # policy: any change in the order of decisions changes its stream), per-function
    # concurrency, payloads, a feature column with gaps and drawn cold starts.
    t = random_trace(3, n=4000)
    rng = np.random.default_rng(3)
    t["payload_bytes"] = rng.integers(0, 5000, size=len(t))
    t["concurrency"] = np.where(t["function"] == "fn1", 3.0, np.nan)
    t["feature_x"] = np.where(rng.random(len(t)) < 0.3, np.nan, rng.random(len(t)))
    config = SimConfig(nodes=2, node_memory_mb=6144.0, seed=9,
                       cold_start=ColdStartModel(base_ms=200.0, per_mb_ms=0.25,
                                                 quantiles_ms={"fn2": (50.0, 100.0, 900.0)}))
    one = simulate(t, Chaotic(11), config)
    assert one.requests.rejected.any() and one.instances.evicted.any() and one.instances.prewarmed.any()
    summary = simulate_stream(batches(t, [333, 1, 1200]), Chaotic(11), tmp_path, config, rows_per_part=500)
    assert_streamed_equals(one, tmp_path, summary)


def test_step_wise_streamed_run_gives_the_same_decisions_and_rewards(tmp_path):
    t = random_trace(4, n=2500)
    a = Simulation(t, TIGHT, Chaotic(5))
    b = StreamingSimulation(batches(t, [400]), tmp_path, TIGHT, Chaotic(5))
    policy_a, policy_b = Chaotic(5), Chaotic(5)
    steps = 0
    while (da := a.next_decision()) is not None:
        db = b.next_decision()
        assert (db.kind, db.now_ms, db.reason, db.fn.name) == (da.kind, da.now_ms, da.reason, da.fn.name)
        assert b.accrued_wait_ms() == a.accrued_wait_ms() and b.idle_mb_ms() == a.idle_mb_ms()
        if da.kind == "route":
            assert db.request.id == da.request.id
            a.apply(policy_a.route(da.now_ms, da.request, da.fn))
            b.apply(policy_b.route(db.now_ms, db.request, db.fn))
        else:
            a.apply(policy_a.on_idle(da.now_ms, da.instance, da.fn))
            b.apply(policy_b.on_idle(db.now_ms, db.instance, db.fn))
        steps += 1
    assert b.next_decision() is None and steps > len(t)
    assert (b.completed, b.rejected, b.cold_starts) == (a.completed, a.rejected, a.cold_starts)
    assert_streamed_equals(a.result(), tmp_path, b.result())


def test_memory_holds_a_batch_and_the_requests_in_flight_not_the_trace(tmp_path, azure_small):
    sim = StreamingSimulation(batches(azure_small, [200]), tmp_path, SimConfig(), None, rows_per_part=300)
    held, buffered = [], []

    def sample(done, loaded):
        held.append(sim.held_requests)
        buffered.append(sim.buffered_rows)

    import wlsim.engine as engine
    every = engine.PROGRESS_EVERY
    engine.PROGRESS_EVERY = 50          # sample often
    try:
        summary = sim.run(progress=sample)
    finally:
        engine.PROGRESS_EVERY = every
    assert summary.invocations == len(azure_small) and len(held) > 100
    assert max(held) < 200 + 100       # a batch plus the few in flight, for a 40x longer trace
    assert max(buffered) <= 300 + 300  # a part's worth of request rows and of instance rows at most
    assert sim.held_requests == 0 and sim.instances == []


def test_bad_streams_name_the_problem(tmp_path):
    t = random_trace(5, n=200)
    changed = t.copy()
    changed.loc[100:, "memory_mb"] = np.where(changed.loc[100:, "function"] == "fn0", 999.0,
                                              changed.loc[100:, "memory_mb"])
    with pytest.raises(TraceError, match=r"batch from row 100.*'fn0' changes from memory_mb 128, .* to 999"):
        simulate_stream(batches(changed, [100]), "fixed_ttl", tmp_path)
    with pytest.raises(TraceError, match=r"batch from row 0.*'fn0' has memory_mb 128 and 999"):
        simulate_stream(batches(changed, [150]), "fixed_ttl", tmp_path)
    backwards = [t.iloc[100:], t.iloc[:100]]
    with pytest.raises(TraceError, match="arrivals not sorted: the batch starts at"):
        simulate_stream(backwards, "fixed_ttl", tmp_path)
    with pytest.raises(ValueError, match="needs the whole trace ahead"):
        simulate_stream(batches(t, [100]), "oracle", tmp_path)
    with pytest.raises(TraceError, match="empty trace"):
        simulate_stream([t.iloc[:0]], "fixed_ttl", tmp_path)
