"""The load-dependent cold start: the bucket draw (wlsim.config.LoadColdStart), the engine
drawing each spawn from the bucket of the requests in flight, the profile's ``by_load`` table
(validation, a profile without it unchanged), and ``wl calibrate`` fitting it from a hand-made run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from policies.registry import load_policy
from wl.loop.calibrate import calibrate, fit_load_buckets, load_cold_samples
from wl.loop.load import LoadResult, _join_recorded, plan_load
from wlsim.config import ColdStartModel, LoadColdStart, SimConfig
from wlsim.engine import Simulation, simulate, simulate_stream
from wlsim.profile import FunctionInfo, ProfileError, load_profile, parse_profile
from wlsim.result import read_streamed

pytestmark = pytest.mark.unit

STEP = LoadColdStart(upper=(3.0, 10.0), quantiles_ms=((1.0, 1.0), (500.0, 500.0), (2000.0, 2000.0)))


def test_the_bucket_is_chosen_by_its_bounds() -> None:
    assert STEP.table(0) == (1.0, 1.0)
    assert STEP.table(2.9) == (1.0, 1.0)
    assert STEP.table(3) == (500.0, 500.0)         # a bound belongs to the bucket above it
    assert STEP.table(9) == (500.0, 500.0)
    assert STEP.table(10) == (2000.0, 2000.0)
    assert STEP.table(10_000) == (2000.0, 2000.0)  # the last bucket is open
    spread = LoadColdStart(upper=(5.0,), quantiles_ms=((1.0, 3.0), (100.0, 200.0, 400.0)))
    assert spread.draw(7, 0.25) == pytest.approx(150.0)   # inverse CDF of the bucket's table
    assert spread.draw(0, 0.5) == pytest.approx(2.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"upper": (3.0,), "quantiles_ms": ((1.0, 2.0),)}, "need 2 quantile tables"),
    ({"upper": (5.0, 3.0), "quantiles_ms": ((1.0, 2.0),) * 3}, "ascending"),
    ({"upper": (3.0,), "quantiles_ms": ((1.0, 2.0), (5.0, 1.0))}, r"quantiles_ms\[1\]"),
])
def test_a_bad_table_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadColdStart(**kwargs)


def _trace(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame({"app": [r[0] for r in rows], "function": [r[0] for r in rows],
                         "arrival_ms": [r[1] for r in rows], "duration_ms": [r[2] for r in rows],
                         "memory_mb": 128.0})


def test_each_spawn_draws_from_the_bucket_of_the_requests_in_flight() -> None:
    # a ends before b arrives; b, c, d, e each spawn with 1, 2, 3, ... requests in flight.
    rows = [("a", 0.0, 5.0), ("b", 10.0, 1000.0), ("c", 11.0, 1000.0), ("d", 12.0, 1000.0),
            ("e", 13.0, 1000.0), ("f", 5000.0, 1.0)]
    model = ColdStartModel(base_ms=9.0, per_mb_ms=0.0, by_load=dict.fromkeys("abcdef", STEP))
    sim = Simulation(_trace(rows), SimConfig(cold_start=model), load_policy("fixed_ttl:ttl_ms=100000"))
    result = sim.run()
    assert result.requests["cold"].all()
    # in flight at each spawn: 1, 1, 2, 3, 4, then 1 after everything ended
    assert result.requests["cold_start_ms"].tolist() == [1.0, 1.0, 1.0, 500.0, 500.0, 1.0]
    # the policies see the drawn cold start (the router's measurement live), not the estimate
    stats = {f.name: f.stats.cold_start_ms for f in sim.functions}
    assert stats["d"] == pytest.approx(500.0) and stats["b"] == pytest.approx(1.0)


def test_draws_are_deterministic_per_seed() -> None:
    rows = [(f"f{i % 7}", 3.0 * i, 40.0) for i in range(600)]
    table = LoadColdStart(upper=(4.0,), quantiles_ms=((1.0, 2.0, 9.0), (50.0, 300.0, 900.0)))
    model = ColdStartModel(base_ms=5.0, per_mb_ms=0.0, by_load={f"f{i}": table for i in range(7)})

    def cold(seed: int) -> np.ndarray:
        r = simulate(_trace(rows), load_policy("fixed_ttl:ttl_ms=1"), SimConfig(cold_start=model, seed=seed))
        return r.requests["cold_start_ms"].to_numpy()

    assert np.array_equal(cold(3), cold(3))
    assert not np.array_equal(cold(3), cold(4))
    drawn = cold(3)[cold(3) > 0]
    assert len(drawn) > 100 and drawn.min() >= 1.0 and drawn.max() <= 900.0
    assert (drawn >= 50.0).any() and (drawn <= 9.0).any()   # both buckets were used


def test_the_streamed_replay_draws_the_same(tmp_path) -> None:
    # batches of 97 rows: the in-flight count crosses batch boundaries
    rows = [(f"f{i % 5}", 2.0 * i + (i % 3), 30.0 + i % 11) for i in range(800)]
    table = LoadColdStart(upper=(6.0,), quantiles_ms=((1.0, 2.0, 9.0), (50.0, 300.0, 900.0)))
    config = SimConfig(cold_start=ColdStartModel(by_load={f"f{i}": table for i in range(5)}), seed=2)
    one = simulate(_trace(rows), load_policy("fixed_ttl:ttl_ms=3"), config)
    t = _trace(rows)
    simulate_stream((t.iloc[k:k + 97] for k in range(0, len(t), 97)), load_policy("fixed_ttl:ttl_ms=3"),
                    tmp_path, config)
    streamed = read_streamed(tmp_path)[0].sort_values("request_id").reset_index(drop=True)
    assert (one.requests["cold_start_ms"] >= 50).any()
    np.testing.assert_array_equal(streamed["cold_start_ms"].to_numpy(), one.requests["cold_start_ms"].to_numpy())


def _profile_doc(by_load: dict | None) -> dict:
    abi: dict = {"p50_ms": 4.0, "quantiles_ms": [2.0, 4.0, 8.0]}
    if by_load is not None:
        abi["by_load"] = by_load
    return {"name": "t", "source": "test", "cold_start": {"base_ms": 4.0, "by_abi": {"wasi-command": abi}}}


def test_a_profile_without_the_table_behaves_as_before() -> None:
    functions = {"f": FunctionInfo("wasi-command", 1_048_576)}
    plain = parse_profile(_profile_doc(None)).cold_start_model(functions)
    assert plain.by_load == {} and plain.quantiles_ms == {"f": (2.0, 4.0, 8.0)}
    rows = [("f", 10.0 * i, 3.0) for i in range(300)]
    policy = "fixed_ttl:ttl_ms=5"
    before = simulate(_trace(rows), load_policy(policy), SimConfig(cold_start=ColdStartModel(
        base_ms=4.0, per_mb_ms=0.0, per_function_ms={"f": 4.0}, quantiles_ms={"f": (2.0, 4.0, 8.0)}), seed=1))
    after = simulate(_trace(rows), load_policy(policy), SimConfig(cold_start=plain, seed=1))
    pd.testing.assert_frame_equal(before.requests, after.requests)
    # the bundled wl-load profile has the table; wl and container do not
    assert isinstance(load_profile("wl-load").cold_start_model(functions).by_load["f"], LoadColdStart)
    assert load_profile("wl").cold_start_model(functions).by_load == {}
    assert load_profile("container").cold_start_model(functions).by_load == {}


def test_a_profile_table_becomes_the_engine_model() -> None:
    doc = _profile_doc({"upper": [3, 10], "quantiles_ms": [[1, 2], [3, 4], [5, 6]], "samples": [5, 5, 5]})
    doc["cold_start"]["by_abi"]["wasi-command"]["per_code_mb_ms"] = 1.0
    model = parse_profile(doc).cold_start_model({"f": FunctionInfo("wasi-command", 2 * 1_048_576)})
    assert model.by_load["f"] == LoadColdStart((3.0, 10.0), ((3.0, 4.0), (5.0, 6.0), (7.0, 8.0)))  # +2 MB of code
    assert model.cold_start_ms("f", 128) == pytest.approx(6.0)    # the estimate stays the median (+ code)


@pytest.mark.parametrize("by_load, message", [
    ({"upper": [3], "quantiles_ms": [[1, 2]]}, "by_load: Value error, quantiles_ms: 1 bounds in upper need 2"),
    ({"upper": [5, 3], "quantiles_ms": [[1, 2]] * 3}, "by_load: Value error, upper: expected ascending"),
    ({"upper": [3], "quantiles_ms": [[1, 2], [4, 1]]}, r"by_load: Value error, quantiles_ms\[1\]"),
    ({"upper": [3], "quantiles_ms": [[1, 2], [3, 4]], "samples": [1]}, "by_load: Value error, samples"),
    ({"upper": [], "quantiles_ms": [[1, 2]]}, "by_load.upper"),
    ({"upper": [3], "quantiles_ms": [[1, 2], [3, 4]], "measure": "spawns"}, "by_load.measure"),
])
def test_a_bad_profile_table_names_the_field(tmp_path, by_load: dict, message: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_profile_doc(by_load)))
    with pytest.raises(ProfileError, match=message) as error:
        load_profile(str(path))
    assert str(path) in str(error.value) and "cold_start.by_abi.wasi-command.by_load" in str(error.value)


def _hand_made_run() -> LoadResult:
    """One function per request. 40 quiet cold starts (one request in flight, 2-6 ms), then a
    burst: 40 requests 1 ms apart, each a cold start of 1 s while the earlier ones still run."""
    quiet = [(f"q{i}", 100.0 * i, 10.0, 2.0 + i % 5) for i in range(40)]
    burst = [(f"b{i}", 10_000.0 + i, 5000.0, 1000.0) for i in range(40)]
    rows = quiet + burst
    trace = pd.DataFrame({"app": [r[0] for r in rows], "function": [r[0] for r in rows],
                          "arrival_ms": [r[1] for r in rows], "duration_ms": [r[2] for r in rows],
                          "memory_mb": 128.0})
    plan = plan_load(trace, speed=1.0, duration_scale=1.0)
    cold_ms = np.array([r[3] for r in rows])
    arrival = trace["arrival_ms"].to_numpy()
    exec_ms = trace["duration_ms"].to_numpy() + np.arange(len(rows)) * 1e-3   # distinct: an exact join
    start = arrival + cold_ms
    recorded = pd.DataFrame({"app": trace["function"], "function": trace["function"], "arrival_ms": arrival,
                             "duration_ms": exec_ms, "memory_mb": 128.0, "cold": True, "wait_ms": 0.0,
                             "cold_start_ms": cold_ms, "exec_ms": exec_ms, "start_ms": start,
                             "end_ms": start + exec_ms, "node": "n1", "status": "ok"})
    records = pd.DataFrame({
        "request_id": range(len(rows)), "function": trace["function"], "deployed": trace["function"],
        "scheduled_ms": arrival, "duration_ms": trace["duration_ms"], "memory_mb": 128.0, "sent_ms": arrival,
        "lateness_ms": 0.0, "latency_ms": cold_ms + exec_ms + 1.0, "status": 200,
        "cold": pd.array([True] * len(rows), dtype="boolean"), "wait_ms": cold_ms, "exec_ms": exec_ms,
        "node": "n1", "instance": [f"{f}-0" for f in trace["function"]], "error": ""})
    return LoadResult(plan, _join_recorded(records, recorded), pd.DataFrame(), recorded, {"valid": True},
                      pd.DataFrame())


def test_calibrate_fits_the_table_from_a_run() -> None:
    run = _hand_made_run()
    samples = load_cold_samples([run])
    # quiet: 1 in flight each; burst request k: the k earlier burst requests still run, + itself
    assert samples["in_flight"].tolist() == [1] * 40 + list(range(1, 41))
    table = fit_load_buckets(samples, candidates=(2, 10, 30), min_samples=5)
    assert table is not None
    # below 2: the 40 quiet ones and the burst's first (1 in flight); then 8, 20, 11 of the burst
    assert table.upper == [2.0, 10.0, 30.0] and table.samples == [41, 8, 20, 11]
    assert table.quantiles_ms[0][0] == 2.0 and table.quantiles_ms[1] == [1000.0] * 21
    assert table.fit["in_flight"]["r2_log"] > 0.9   # only the burst's first spawn is off its bucket
    # a bucket with too few samples merges into the one below it; no load at all: no table
    assert fit_load_buckets(samples, candidates=(2, 10, 39), min_samples=5).upper == [2.0, 10.0]
    assert fit_load_buckets(samples.iloc[:40], candidates=(2, 10), min_samples=5) is None

    profile = calibrate([run], name="hand")
    abi = profile.cold_start.by_abi["wasi-command"]
    assert abi.by_load is not None and abi.by_load.quantiles_ms[-1][len(abi.by_load.quantiles_ms[-1]) // 2] == 1000.0
    # the memory fit uses the spawns below the first bound only (10 in flight: the 40 quiet ones
    # and 9 of the burst): median 5 ms; over every cold start it would be 503 ms
    assert profile.cold_start.by_abi["wasi-command"].by_load.upper == [10.0]
    assert profile.cold_start.base_ms == pytest.approx(5.0)
    assert parse_profile(profile.model_dump()) == profile      # what it writes reads back


SPAWNS = LoadColdStart(upper=(2.0,), quantiles_ms=((1.0, 1.0), (500.0, 500.0)), measure="spawns_50ms")


def test_keyed_by_spawns_each_spawn_draws_from_the_cold_starts_of_the_50_ms_before() -> None:
    # a..e arrive 10 ms apart (0, 1, 2, 3, 4 spawns in the 50 ms before each, itself excluded);
    # f comes 35 ms after e, when only d and e are within 50 ms; g alone, a second later.
    rows = [("a", 0.0, 1.0), ("b", 10.0, 1.0), ("c", 20.0, 1.0), ("d", 30.0, 1.0), ("e", 40.0, 1.0),
            ("f", 75.0, 1.0), ("g", 1075.0, 1.0)]
    model = ColdStartModel(base_ms=9.0, per_mb_ms=0.0, by_load=dict.fromkeys("abcdefg", SPAWNS))
    result = simulate(_trace(rows), load_policy("fixed_ttl:ttl_ms=1"), SimConfig(cold_start=model))
    assert result.requests["cold"].all()
    assert result.requests["cold_start_ms"].tolist() == [1.0, 1.0, 500.0, 500.0, 500.0, 500.0, 1.0]


def test_a_table_keyed_by_an_unknown_measure_is_refused() -> None:
    with pytest.raises(ValueError, match=r"LoadColdStart\.measure: expected one of in_flight, spawns_50ms"):
        LoadColdStart(upper=(2.0,), quantiles_ms=((1.0, 1.0), (5.0, 5.0)), measure="spawns")


def test_calibrate_keys_the_table_by_the_spawns_just_before() -> None:
    run = _hand_made_run()
    samples = load_cold_samples([run])
    # quiet: 100 ms apart, none within 50 ms; burst request k: the k before it, 1 ms apart
    assert samples["spawns_50ms"].tolist() == [0] * 40 + list(range(40))
    profile = calibrate([run], name="hand", load_measure="spawns_50ms")
    table = profile.cold_start.by_abi["wasi-command"].by_load
    # below 1: the 40 quiet ones and the burst's first; the higher bounds hold < 30 each and merge
    assert table is not None and table.measure == "spawns_50ms" and table.upper == [1.0] and table.samples == [41, 39]
    assert table.quantiles_ms[0][0] == 2.0 and table.quantiles_ms[-1] == [1000.0] * 21
    assert set(table.fit) == {"spawns_50ms", "in_flight (alternative, not used)"}
    sim = profile.cold_start_model({"f": FunctionInfo("wasi-command", 0)}).by_load["f"]
    assert sim.measure == "spawns_50ms"


def test_a_spawn_counts_from_when_it_was_decided_its_arrival_plus_its_wait() -> None:
    from types import SimpleNamespace

    # x arrives first but waits 30 ms for its spawn: decided at 30, after y (10) and z (20)
    recorded = pd.DataFrame({"function": ["x", "y", "z"], "memory_mb": 128.0, "arrival_ms": [0.0, 10.0, 20.0],
                             "wait_ms": [30.0, 0.0, 0.0], "cold_start_ms": 3.0, "exec_ms": 5.0, "cold": True,
                             "status": "ok"})
    samples = load_cold_samples([SimpleNamespace(recorded=recorded)])
    assert samples.set_index("function")["spawns_50ms"].to_dict() == {"x": 2, "y": 0, "z": 1}
