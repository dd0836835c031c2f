"""wl fidelity's diagnostics: the recorded-cold-start replay takes each function's own live cold
starts, the conditioning of a prediction (seeds, scaled cold starts), the experimental slowdown
cold-start model, and the load driver keeps its garbage collections out of the send schedule."""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
import pytest

from policies.builtin._common import idle_for, keep_until
from policies.interface import INVOKE, FunctionView, IdleDecision, InstanceView, Policy
from wl.loop.fidelity import conditioning, simulate_cold_starts_at
from wl.loop.load import LoadResult, plan_load, quiet_gc
from wl.loop.slowdown import (
    Slowdown,
    fit_slowdown,
    session_recordings,
    simulate_slowdown,
    slowdown_check,
    spawn_load,
)
from wlsim.engine import simulate
from wlsim.profile import ProfileError, function_info, load_profile, parse_profile

pytestmark = pytest.mark.unit


def _two_functions() -> pd.DataFrame:
    # f and g each get one request at a time, far apart, so every request is a cold start under
    # a 1 ms keep-alive
    rows = [("f", t) for t in (0.0, 5_000.0)] + [("g", t) for t in (10.0, 5_010.0)]
    rows.sort(key=lambda r: r[1])
    return pd.DataFrame({"app": [r[0] for r in rows], "function": [r[0] for r in rows],
                         "arrival_ms": [r[1] for r in rows], "duration_ms": 20.0, "memory_mb": 128.0})


def test_each_spawn_takes_its_own_functions_nearest_cold_start() -> None:
    table = _two_functions()
    # live: f's cold starts 2 and 3 ms, g's 40 and 50 ms, each g one 10 ms after an f
    at = np.array([0.0, 10.0, 5_000.0, 5_010.0])
    cold = np.array([2.0, 40.0, 3.0, 50.0])
    names = np.array(["f", "g", "f", "g"])
    result = simulate_cold_starts_at(table, "fixed_ttl:ttl_ms=1", load_profile("wl").sim_config(), at, cold, names)
    req = result.requests.sort_values("arrival_ms")
    assert req["cold"].all()
    assert req["cold_start_ms"].tolist() == pytest.approx([2.0, 40.0, 3.0, 50.0])


def test_without_function_names_the_nearest_of_any_function_is_taken() -> None:
    table = _two_functions()
    # only g had cold starts recorded, at f's times: without names f takes them too
    at, cold = np.array([0.0, 5_000.0]), np.array([40.0, 50.0])
    result = simulate_cold_starts_at(table, "fixed_ttl:ttl_ms=1", load_profile("wl").sim_config(), at, cold)
    req = result.requests.sort_values("arrival_ms")
    assert req["cold_start_ms"].tolist() == pytest.approx([40.0, 40.0, 50.0, 50.0])


def test_a_function_without_live_cold_starts_takes_any_functions() -> None:
    table = _two_functions()
    at, cold, names = np.array([0.0, 5_000.0]), np.array([2.0, 3.0]), np.array(["f", "f"])
    result = simulate_cold_starts_at(table, "fixed_ttl:ttl_ms=1", load_profile("wl").sim_config(), at, cold, names)
    g = result.requests[result.requests["function"] == "g"].sort_values("arrival_ms")
    assert g["cold_start_ms"].tolist() == pytest.approx([2.0, 3.0])


def test_the_driver_freezes_what_is_alive_and_counts_its_collections() -> None:
    before = gc.get_freeze_count()
    with quiet_gc() as stats:
        assert gc.get_freeze_count() > before      # the caller's objects: not walked by a collection now
        gc.collect()
        gc.collect()
    assert gc.get_freeze_count() == 0
    assert stats["collections"] == 2
    assert stats["max_ms"] >= 0.0 and stats["total_ms"] >= stats["max_ms"]
    assert all(cb.__name__ != "timed" for cb in gc.callbacks)


def test_a_scaled_profile_scales_every_cold_start_and_nothing_else() -> None:
    wl = load_profile("wl-load")
    half = wl.with_cold_starts_scaled(0.5)
    a, b = half.cold_start.by_abi["wasi-command"], wl.cold_start.by_abi["wasi-command"]
    assert a.p50_ms == pytest.approx(b.p50_ms / 2) and a.p99_ms == pytest.approx(b.p99_ms / 2)
    assert a.quantiles_ms == pytest.approx([q / 2 for q in b.quantiles_ms])
    assert a.by_load.quantiles_ms[-1] == pytest.approx([q / 2 for q in b.by_load.quantiles_ms[-1]])
    assert a.by_load.upper == b.by_load.upper
    assert (half.request_overhead_ms, half.front, half.client) == (wl.request_overhead_ms, wl.front, wl.client)
    # the same seed draws the same quantile: every spawn's cold start is exactly halved
    table = _two_functions()
    info = function_info(["f", "g"], code_bytes=0)
    full_run = simulate(table, "fixed_ttl:ttl_ms=1", load_profile("wl").sim_config(info, seed=3)).requests
    half_run = simulate(table, "fixed_ttl:ttl_ms=1", load_profile("wl").with_cold_starts_scaled(0.5)
                        .sim_config(info, seed=3)).requests
    assert half_run["cold_start_ms"].to_numpy() == pytest.approx(full_run["cold_start_ms"].to_numpy() / 2)


@pytest.mark.parametrize("factor", [0.0, -1.0, float("inf"), float("nan")])
def test_a_bad_scale_factor_is_refused(factor: float) -> None:
    with pytest.raises(ProfileError, match="scale factor"):
        load_profile("wl").with_cold_starts_scaled(factor)


def _recorded_run() -> LoadResult:
    table = _two_functions()
    plan = plan_load(table, speed=1.0, duration_scale=1.0)
    recorded = table.assign(payload_bytes=32)
    return LoadResult(plan, pd.DataFrame(), pd.DataFrame(), recorded, {})


def test_a_fixed_keep_alive_is_not_moved_by_seeds_or_the_cold_start_level() -> None:
    c = conditioning(_recorded_run(), "fixed_ttl:ttl_ms=1", load_profile("wl"), 0, seeds=3, scales=(0.5, 2.0))
    assert c["cold_starts_seed0"] == 4 and c["seeds"] == 3
    assert c["seed_range"] == [0.0, 0.0]
    assert c["scaled"] == {"x0.5": 0.0, "x2": 0.0}


def test_a_run_without_the_router_recording_has_no_conditioning() -> None:
    run = _recorded_run()
    run.recorded = None
    assert conditioning(run, "fixed_ttl:ttl_ms=1", load_profile("wl"), 0) == {}


# ------------------------------------------------------------------ the slowdown model (wl.loop.slowdown)

def test_the_slowdown_is_a_processor_sharing_factor_capped_at_the_utilization_bound() -> None:
    model = Slowdown(window_ms=100.0, per_request_ms=2.0, per_spawn_ms=5.0, base_quantiles_ms=(3.0, 3.0))
    assert model.factor(0, 0) == 1.0
    assert model.factor(10, 4) == pytest.approx(1 / (1 - 0.4))
    assert model.factor(1000, 1000) == pytest.approx(1 / (1 - 0.95))


def _recording(a: float, b: float, window_ms: float, base_ms: float) -> pd.DataFrame:
    # a burst (400 requests in 2 s, half of them cold at random, so spawns do not just follow
    # arrivals) and then one lone cold request a second (their slowdown ~1: the base); each cold
    # start is exactly base / (1 - rho) for the counts the recording itself gives
    rng = np.random.default_rng(1)
    arrival = np.concatenate([np.sort(rng.uniform(0, 2_000, 400)), np.arange(8_500.0, 20_000.0, 1_000.0)])
    cold = np.concatenate([rng.random(400) < 0.5, np.ones(12, bool)])
    rec = pd.DataFrame({"app": "f", "function": "f", "arrival_ms": arrival, "duration_ms": 5.0, "memory_mb": 128.0,
                        "cold": cold, "cold_start_ms": 0.0})
    load = spawn_load(rec, window_ms)
    rho = np.minimum(0.95, (a * load["arrivals"] + b * load["spawns"]) / window_ms)
    rec.loc[rec["cold"], "cold_start_ms"] = base_ms / (1 - rho.to_numpy())
    return rec


def test_the_fit_recovers_known_costs_per_request_and_per_spawn() -> None:
    model = fit_slowdown([_recording(2.0, 4.0, 500.0, 3.0)], window_ms=500.0, settle_ms=8_000.0)
    assert (model.per_request_ms, model.per_spawn_ms) == pytest.approx((2.0, 4.0))
    assert model.base_quantiles_ms[10] == pytest.approx(3.0, rel=0.01)      # the lone requests' ~1.004 x base
    assert model.r2_log == pytest.approx(1.0, abs=0.01)


def test_too_few_cold_starts_are_refused_by_name() -> None:
    rec = _recording(2.0, 4.0, 500.0, 3.0).tail(15)
    with pytest.raises(ValueError, match="too few cold starts"):
        fit_slowdown([rec])


def test_each_simulated_spawn_is_slowed_by_the_requests_and_spawns_before_it() -> None:
    table = pd.DataFrame({"app": ["f", "g", "h"], "function": ["f", "g", "h"], "arrival_ms": [0.0, 1.0, 2.0],
                          "duration_ms": 10.0, "memory_mb": 128.0})
    model = Slowdown(window_ms=100.0, per_request_ms=10.0, per_spawn_ms=20.0, base_quantiles_ms=(3.0, 3.0))
    req = simulate_slowdown(table, "fixed_ttl:ttl_ms=1", model).requests.sort_values("arrival_ms")
    # rho = (10 x arrivals so far, itself included + 20 x earlier spawns) / 100: 0.1, 0.4, 0.7
    assert req["cold_start_ms"].tolist() == pytest.approx([3 / 0.9, 3 / 0.6, 3 / 0.3])


def test_the_check_needs_another_policys_recording() -> None:
    from types import SimpleNamespace

    run = _recorded_run()
    assert slowdown_check([SimpleNamespace(policy="default", load=run)]) == []


def test_an_earlier_sessions_recordings_are_read_from_its_output_folder(tmp_path) -> None:
    rec = _recording(2.0, 4.0, 500.0, 3.0)
    (tmp_path / "live-default").mkdir()
    rec.to_parquet(tmp_path / "live-default" / "recorded.parquet")
    found = session_recordings(tmp_path)
    assert len(found) == 1 and len(found[0]) == len(rec)
    with pytest.raises(ValueError, match=r"no live-\*/recorded\.parquet"):
        session_recordings(tmp_path / "live-default")


def test_the_check_fits_on_a_reference_session_when_given_one() -> None:
    from types import SimpleNamespace

    run = _recorded_run()
    run.recorded = run.recorded.assign(cold=True, cold_start_ms=3.0)
    run.records = pd.DataFrame({"status": [200] * 4, "cold": [True] * 4, "wait_ms": 3.0,
                                "latency_ms": 25.0, "duration_ms": 20.0, "sent_ms": run.recorded["arrival_ms"]})
    run.instances = pd.DataFrame({"t_ms": [0.0], "starting": [0], "busy": [0], "idle": [0], "memory_mb": [128.0]})
    rows = slowdown_check([SimpleNamespace(policy="fixed_ttl:ttl_ms=1", load=run)],
                          reference=[_recording(2.0, 4.0, 500.0, 3.0)], seeds=1)
    assert len(rows) == 1 and rows[0]["fitted_on"] == "reference session"
    assert (rows[0]["per_request_ms"], rows[0]["per_spawn_ms"]) == pytest.approx((2.0, 4.0))
    assert rows[0]["cold_starts"] == [4.0]            # 1 ms keep-alive, requests seconds apart: all cold


class _KeepsOnlyWhenColdStartsAreSlow(Policy):
    """A cliff like the learned policy's: keep an idle instance 10 s when its function's measured
    cold starts average >= 5 ms, else kill it at once."""

    name = "cliff"

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        if instance.queue:
            return INVOKE
        return keep_until(10_000.0 if fn.stats.cold_start_ms >= 5.0 else 0.0, idle_for(now_ms, instance))


def test_a_policy_at_a_cold_start_cliff_shows_in_the_conditioning() -> None:
    # one function, a request every 500 ms: with 2 ms cold starts the cliff policy kills after
    # each (every request cold); with them x4 (8 ms) it keeps (one cold start)
    table = pd.DataFrame({"app": "f", "function": "f", "arrival_ms": np.arange(0.0, 20_000.0, 500.0),
                          "duration_ms": 20.0, "memory_mb": 128.0, "payload_bytes": 32})
    run = LoadResult(plan_load(table, speed=1.0, duration_scale=1.0), pd.DataFrame(), pd.DataFrame(), table, {})
    constant = parse_profile({"name": "constant", "source": "test", "cold_start": {"base_ms": 2.0}})
    c = conditioning(run, _KeepsOnlyWhenColdStartsAreSlow(), constant, 0, seeds=2, scales=(4.0,))
    assert c["cold_starts_seed0"] == len(table) and c["seed_range"] == [0.0, 0.0]
    assert c["scaled"]["x4"] == pytest.approx(1 / len(table) - 1)
