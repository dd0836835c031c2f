"""wlsim.metrics on hand-built SimResults with hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import make_result, two_function_result

from policies.interface import CostWeights
from wlsim.metrics import SUMMARY_FIELDS, instances_over_time, peak_instances, summarize
from wlsim.result import INSTANCE_COLUMNS, REQUEST_COLUMNS, SimResult

pytestmark = pytest.mark.unit

NAN = float("nan")


def test_summarize_exact_numbers():
    weights = CostWeights(gb_s_usd=1e-5, request_usd=1e-6, latency_usd_per_s=0.01, reject_usd=0.002)
    s = summarize(two_function_result(), weights)
    assert list(s) == list(SUMMARY_FIELDS)
    assert s["policy"] == "hand"
    assert (s["invocations"], s["served"], s["rejected"], s["cold_starts"]) == (5, 4, 1, 2)
    assert s["cold_start_rate"] == 0.5
    # served latencies sorted: 100, 250, 400, 1500 (linear interpolation between them)
    assert s["latency_p50_ms"] == pytest.approx(325.0)     # 250 + 0.5 * 150
    assert s["latency_p95_ms"] == pytest.approx(1335.0)    # 400 + 0.85 * 1100
    assert s["latency_p99_ms"] == pytest.approx(1467.0)    # 400 + 0.97 * 1100
    assert s["latency_max_ms"] == 1500.0
    assert s["mean_wait_ms"] == pytest.approx(12.5)        # 50 / 4
    assert s["added_latency_s"] == pytest.approx(0.85)     # 300 + 50 + 500 ms
    assert s["total_gb_s"] == pytest.approx(0.5 * 61.3 + 2.0 * 1.5)
    assert s["idle_gb_s"] == pytest.approx(0.5 * 60.6)
    assert s["peak_instances"] == 2
    assert s["mean_instances"] == pytest.approx((61300 + 1500) / 100_000)
    assert s["memory_usd"] == pytest.approx(33.65e-5)
    assert s["request_usd"] == pytest.approx(4e-6)         # served requests only
    assert s["latency_usd"] == pytest.approx(0.0085)
    assert s["reject_usd"] == pytest.approx(0.002)        # one rejected request
    assert s["weighted_cost_usd"] == pytest.approx(33.65e-5 + 4e-6 + 0.0085 + 0.002)
    assert s["wall_s"] == 0.5
    assert s["sim_invocations_per_s"] == pytest.approx(10.0)


def test_summarize_default_weights_are_the_interface_defaults():
    w = CostWeights()
    s = summarize(two_function_result())
    assert s["memory_usd"] == pytest.approx(w.gb_s_usd * 33.65)
    assert s["latency_usd"] == pytest.approx(w.latency_usd_per_s * 0.85)


def test_summarize_all_rejected_has_nan_latency_and_zero_memory():
    requests = [(0, "f", 0.0, NAN, False, NAN, 10.0, NAN, NAN, -1, True)]
    s = summarize(make_result(requests, [], horizon_ms=1000.0, wall_s=0.0))
    assert (s["served"], s["rejected"], s["cold_starts"], s["peak_instances"]) == (0, 1, 0, 0)
    assert math.isnan(s["latency_p99_ms"]) and math.isnan(s["cold_start_rate"])
    assert s["total_gb_s"] == 0.0 and s["mean_instances"] == 0.0
    assert math.isnan(s["sim_invocations_per_s"])


def test_peak_instances_half_open_intervals():
    # One dies at 10 as the next is born at 10: never two alive at once.
    assert peak_instances(np.array([0.0, 10.0]), np.array([10.0, 20.0])) == 1
    assert peak_instances(np.array([0.0, 5.0, 6.0]), np.array([10.0, 20.0, 7.0])) == 3
    assert peak_instances(np.array([]), np.array([])) == 0


def test_instances_over_time_exact():
    t = instances_over_time(two_function_result(), step_ms=1000.0)
    assert list(t.columns) == ["time_ms", "instances", "mean_instances", "memory_mb"]
    assert len(t) == 100
    assert t["time_ms"].iloc[[0, 1, 99]].tolist() == [0.0, 1000.0, 99000.0]
    by_time = t.set_index("time_ms")
    # f alive on [0, 61300), g on [2000, 3500)
    assert by_time.loc[[0.0, 1000.0, 2000.0, 3000.0, 4000.0, 61000.0, 62000.0], "instances"].tolist() \
        == [1, 1, 2, 2, 1, 1, 0]
    assert by_time.loc[[0.0, 2000.0, 3000.0, 61000.0, 62000.0], "mean_instances"].tolist() \
        == pytest.approx([1.0, 2.0, 1.5, 0.3, 0.0])
    assert by_time.loc[[0.0, 2000.0, 62000.0], "memory_mb"].tolist() == pytest.approx([512.0, 2560.0, 0.0])
    # The time-average over all steps equals the summary's mean instances.
    assert t["mean_instances"].mean() == pytest.approx(summarize(two_function_result())["mean_instances"])


def test_instances_over_time_rejects_bad_step():
    with pytest.raises(ValueError, match="step_ms"):
        instances_over_time(two_function_result(), step_ms=0)


def test_summarize_large_result_matches_direct_computation():
    # A larger random result: the vectorised numbers equal a straightforward computation.
    rng = np.random.default_rng(7)
    n, m = 20_000, 500
    arrival = np.sort(rng.uniform(0, 1e6, n))
    wait = rng.exponential(5, n)
    cold = rng.random(n) < 0.1
    cold_ms = np.where(cold, 300.0, 0.0)
    exec_ms = rng.exponential(100, n)
    rejected = rng.random(n) < 0.01
    latency = wait + cold_ms + exec_ms
    req = pd.DataFrame({
        "request_id": np.arange(n), "function": "f", "arrival_ms": arrival,
        "wait_ms": np.where(rejected, np.nan, wait), "cold": cold & ~rejected,
        "cold_start_ms": np.where(rejected, np.nan, cold_ms), "exec_ms": exec_ms,
        "end_ms": np.where(rejected, np.nan, arrival + latency),
        "latency_ms": np.where(rejected, np.nan, latency),
        "instance_id": np.where(rejected, -1, 0), "rejected": rejected,
    }).astype(REQUEST_COLUMNS)
    created = rng.uniform(0, 9e5, m)
    died = created + rng.uniform(0, 1e5, m)
    mem = rng.choice([128.0, 256.0, 1024.0], m)
    inst = pd.DataFrame({
        "instance_id": np.arange(m), "function": "f", "node": "n0", "memory_mb": mem,
        "created_ms": created, "ready_ms": created + 300, "died_ms": died, "busy_ms": 0.0,
        "idle_ms": (died - created) / 2, "invocations": 1, "prewarmed": False, "evicted": False,
    }).astype(INSTANCE_COLUMNS)
    r = SimResult("rand", req, inst, horizon_ms=1e6, wall_s=1.0)
    s = summarize(r)
    ok = ~rejected
    assert s["served"] == ok.sum() and s["cold_starts"] == (cold & ok).sum()
    assert s["latency_p99_ms"] == pytest.approx(np.percentile(latency[ok], 99))
    assert s["total_gb_s"] == pytest.approx(((mem / 1024) * (died - created) / 1000).sum())
    step = 10_000.0
    t = instances_over_time(r, step)
    # brute force at a few sample instants
    for k in (0, 17, 55, 89):
        at = k * step
        assert t["instances"].iloc[k] == ((created <= at) & (at < died)).sum()
        assert t["memory_mb"].iloc[k] == pytest.approx(mem[(created <= at) & (at < died)].sum())
        overlap = np.clip(np.minimum(died, at + step) - np.maximum(created, at), 0, None).sum()
        assert t["mean_instances"].iloc[k] == pytest.approx(overlap / step)
    starts = np.sort(created)
    assert s["peak_instances"] == max(((created <= c) & (c < died)).sum() for c in starts)


def test_a_trace_recorded_at_its_time_of_day_summarises_like_one_starting_at_zero():
    # The live router records arrival_ms as ms since 00:00 UTC: shift the hand-built run to 15:00.
    base = two_function_result()
    shift = 15 * 3_600_000.0
    req, inst = base.requests.copy(), base.instances.copy()
    for col in ("arrival_ms", "end_ms"):
        req[col] += shift
    for col in ("created_ms", "ready_ms", "died_ms"):
        inst[col] += shift
    shifted = SimResult("hand", req, inst, horizon_ms=base.horizon_ms + shift, wall_s=0.5)
    assert summarize(shifted)["mean_instances"] == pytest.approx(summarize(base)["mean_instances"])
    t = instances_over_time(shifted, step_ms=1000.0)
    assert len(t) == 100 and t["time_ms"].iloc[0] == shift
    assert t["mean_instances"].tolist() == pytest.approx(instances_over_time(base, 1000.0)["mean_instances"].tolist())


def test_avoidable_cost_and_wait_distribution():
    weights = CostWeights(gb_s_usd=1e-5, request_usd=1e-6, latency_usd_per_s=0.01, reject_usd=0.002)
    s = summarize(two_function_result(), weights)
    # execution memory of all 5 invocations at their function's memory (rejected one included)
    assert s["exec_gb_s"] == pytest.approx(0.5 * 0.4 + 2.0 * 1.05)
    unavoidable = 1e-5 * s["exec_gb_s"] + 1e-6 * 5
    assert s["avoidable_cost_usd"] == pytest.approx(s["weighted_cost_usd"] - unavoidable)
    # served waits 0, 0, 50, 0 (linear interpolation); added: 300, 0, 50, 500
    assert s["wait_p99_ms"] == pytest.approx(50.0 * (1 - 3 * 0.01))   # between 50 and 0
    assert s["wait_max_ms"] == 50.0
    assert s["added_p999_ms"] == pytest.approx(300 + 0.997 * 200)
    assert s["waits_over_cold_start"] == 0                           # 50 ms < f's 300 ms cold start


def test_waits_longer_than_a_cold_start_are_counted_per_function():
    # f's cold start takes 300 ms; g's 1000 ms. A 400 ms wait on f counts, one on g does not.
    requests = [
        (0, "f", 0.0, 0.0, True, 300.0, 10.0, 310.0, 310.0, 0, False),
        (1, "f", 100.0, 400.0, False, 0.0, 10.0, 510.0, 410.0, 0, False),
        (2, "g", 0.0, 0.0, True, 1000.0, 10.0, 1010.0, 1010.0, 1, False),
        (3, "g", 100.0, 400.0, False, 0.0, 10.0, 1020.0, 920.0, 1, False),
    ]
    instances = [
        (0, "f", "n0", 128.0, 0.0, 300.0, 2000.0, 20.0, 1680.0, 2, False, False),
        (1, "g", "n0", 128.0, 0.0, 1000.0, 2000.0, 20.0, 980.0, 2, False, False),
    ]
    s = summarize(make_result(requests, instances, horizon_ms=2000.0))
    assert s["waits_over_cold_start"] == 1
    assert s["wait_max_ms"] == 400.0


def test_compare_adds_avoidable_ratio_against_the_oracle():
    from wlsim.compare import summary_table

    base = two_function_result()
    table = summary_table({"p": base, "oracle": base})
    assert table["avoidable_vs_oracle"].tolist() == pytest.approx([1.0, 1.0])
