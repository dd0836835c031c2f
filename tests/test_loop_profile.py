"""Platform profiles (wlsim.profile) and load plans (wl.loop.load): loading, bad input, and what
they feed the simulator."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from wl.loop.load import LoadError, deployed_name, plan_load
from wlsim.config import SimConfig
from wlsim.profile import FunctionInfo, ProfileError, bundled_profiles, front_arrivals, load_profile, parse_profile

pytestmark = pytest.mark.unit


def test_bundled_profiles_load_by_name() -> None:
    assert {"wl", "container"} <= set(bundled_profiles())
    container = load_profile("container")
    assert container.cold_start_model().cold_start_ms("f", 16) == pytest.approx(258.0)  # 250 + 0.5 * 16
    assert "ATC" in container.source
    wl = load_profile("wl")
    # measured on wl: a wasm cold start is a few ms, far below the container's hundreds
    assert 0 < wl.cold_start_model().cold_start_ms("f", 16) < 50
    assert wl.measured["cold_starts"] > 0


def test_default_profile_is_container() -> None:
    assert load_profile(None).name == "container"
    assert load_profile(None).cold_start_model() == SimConfig().cold_start


def test_profile_from_a_file_and_per_abi_cold_starts(tmp_path) -> None:
    doc = {"name": "mine", "source": "test", "cold_start": {
        "base_ms": 10.0, "per_mb_ms": 0.1,
        "by_abi": {"component": {"p50_ms": 30.0, "per_code_mb_ms": 2.0}},
        "per_function_ms": {"pinned": 7.0}}}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    prof = load_profile(str(path))
    model = prof.cold_start_model({"big": FunctionInfo("component", 5 * 1_048_576),
                                   "cmd": FunctionInfo("wasi-command", 1000)})
    assert model.cold_start_ms("big", 128) == pytest.approx(40.0)      # ABI median + 2 ms/MB of code
    assert model.cold_start_ms("cmd", 100) == pytest.approx(20.0)      # ABI unknown to the profile
    assert model.cold_start_ms("pinned", 100) == pytest.approx(7.0)
    assert model.cold_start_ms("other", 50) == pytest.approx(15.0)
    assert prof.sim_config(nodes=2).nodes == 2


def test_a_measured_distribution_becomes_per_spawn_draws(tmp_path) -> None:
    doc = {"name": "mine", "source": "test", "cold_start": {
        "base_ms": 10.0, "by_abi": {
            "component": {"p50_ms": 30.0, "per_code_mb_ms": 2.0, "quantiles_ms": [10.0, 30.0, 90.0]},
            "wasi-command": {"p50_ms": 3.0}}}}
    prof = parse_profile(doc)
    model = prof.cold_start_model({"big": FunctionInfo("component", 5 * 1_048_576),
                                   "cmd": FunctionInfo("wasi-command", 1000)})
    assert model.quantiles_ms == {"big": (20.0, 40.0, 100.0)}    # shifted like the median
    assert model.cold_start_ms("big", 128) == pytest.approx(40.0)  # the estimate stays the median
    assert model.cold_start_ms("cmd", 128) == pytest.approx(3.0)   # no distribution: constant
    assert load_profile("container").cold_start_model().quantiles_ms == {}
    bad = json.loads(json.dumps(doc))
    bad["cold_start"]["by_abi"]["component"]["quantiles_ms"] = [5.0, 1.0]
    with pytest.raises(ProfileError, match="quantiles_ms"):
        parse_profile(bad)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"name": "x", "source": "s"}', "cold_start"),
    ('{"name": "x", "source": "s", "cold_start": {"base_ms": -3}}', "cold_start.base_ms"),
    ('{"name": "x", "source": "s", "cold_start": {"base_ms": 1}, "colds": 1}', "colds"),
])
def test_bad_profile_files_are_named(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ProfileError) as error:
        load_profile(str(path))
    assert str(path) in str(error.value) and message in str(error.value)


def test_unknown_profile_name() -> None:
    with pytest.raises(ProfileError, match="no bundled profile of that name"):
        load_profile("no-such-profile")


def test_front_arrivals_is_the_fifo_recurrence() -> None:
    rng = np.random.default_rng(3)
    sent = np.sort(rng.uniform(0, 200, 300))
    got = front_arrivals(sent, 1.5, 2.0)
    expect, prev = [], -math.inf
    for t in sent:
        prev = max(t + 1.5, prev + 2.0)
        expect.append(prev)
    np.testing.assert_allclose(got, expect)
    # unsorted input: each row keeps its own arrival
    order = rng.permutation(sent.size)
    np.testing.assert_allclose(front_arrivals(sent[order], 1.5, 2.0), got[order])


def test_shape_trace_spreads_a_burst_and_adds_overhead() -> None:
    prof = parse_profile({"name": "p", "source": "s", "cold_start": {"base_ms": 3},
                          "request_overhead_ms": 2.0, "front": {"delay_ms": 1.0, "per_request_ms": 4.0}})
    burst = pd.DataFrame({"app": "a", "function": "f", "arrival_ms": [0.0, 0.5, 1.0, 1.5],
                          "duration_ms": [10.0, 10.0, 10.0, 10.0], "memory_mb": 64.0})
    shaped = prof.shape_trace(burst)
    assert shaped["arrival_ms"].tolist() == [1.0, 5.0, 9.0, 13.0]     # 4 sent within 2 ms, spread over 12
    assert shaped["duration_ms"].tolist() == [12.0] * 4
    assert burst["arrival_ms"].tolist() == [0.0, 0.5, 1.0, 1.5]       # input untouched


def _trace() -> pd.DataFrame:
    return pd.DataFrame({"app": ["a"] * 5, "function": ["f1", "f1", "f2", "f1", "f3"],
                         "arrival_ms": [1000.0, 1200.0, 1300.0, 3000.0, 5000.0],
                         "duration_ms": [100.0, 200.0, 300.0, 400.0, 5000.0],
                         "memory_mb": [128.0, 128.0, 1024.0, 128.0, 8.0]})


def test_plan_scales_time_and_keeps_busiest_functions() -> None:
    plan = plan_load(_trace(), speed=2.0, max_duration_ms=1000.0, functions=2)
    r = plan.requests
    assert set(r["function"]) == {"f1", "f2"}                       # f3 has one request: dropped
    assert r["arrival_ms"].tolist() == [0.0, 100.0, 150.0, 1000.0]   # from the first arrival, / speed
    assert r["duration_ms"].tolist() == [50.0, 100.0, 150.0, 200.0]  # 1/speed by default
    fns = plan.functions.set_index("function")
    assert fns.loc["f2", "memory_mb"] == 1024
    assert (plan.canonical().columns == ["app", "function", "arrival_ms", "duration_ms", "memory_mb"]).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"speed": 0.0}, "--speed"), ({"duration_scale": -1.0}, "--duration-scale"), ({"functions": 0}, "--functions"),
])
def test_plan_bad_input(kwargs, message: str) -> None:
    with pytest.raises(LoadError, match=message):
        plan_load(_trace(), **kwargs)


def test_plan_of_an_empty_window() -> None:
    with pytest.raises(LoadError, match="no invocations"):
        plan_load(_trace().iloc[0:0])


def test_deployed_names_are_valid_platform_names() -> None:
    from wlruntime.registry.models import name_problem

    azure = "a" * 64                     # Azure 2019 function hashes are one character too long
    assert name_problem(deployed_name(azure)) is None and len(deployed_name(azure)) == 63
    assert deployed_name("echo") == "echo"
    assert name_problem(deployed_name("My Func!")) is None


def test_trace_functions_run_as_the_synthetic_function() -> None:
    from wlsim.profile import SYNTHETIC_ABI, SYNTHETIC_WASM, function_info, trace_sim_config

    info = function_info(["f", "g", "f"])
    assert set(info) == {"f", "g"}
    size = SYNTHETIC_WASM.stat().st_size if SYNTHETIC_WASM.is_file() else 0
    assert info["f"] == FunctionInfo(SYNTHETIC_ABI, size) == FunctionInfo("wasi-command", size)
    assert function_info(["f"], code_bytes=7)["f"].code_bytes == 7
    config = trace_sim_config("wl", ["f", "g"], seed=3)
    assert config.seed == 3 and set(config.cold_start.quantiles_ms) == {"f", "g"}
    assert trace_sim_config(None, ["f"]).cold_start == SimConfig().cold_start
