"""wasm: policies (policies/wasm.py, ABI wl-policy v1) with real wasmtime, the real simulator and
the real live platform: the C example decides exactly like its Python twin, bad modules are
refused at load with a clear error, a trapping / looping / nonsense module raises
WasmPolicyError quickly, state persists across decisions, and the live router falls back to
its base policy when a wasm policy fails."""

from __future__ import annotations

import math
import pickle
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wasmtime

from policies.interface import (
    BUSY,
    IDLE,
    INVOKE,
    KILL,
    SPAWN,
    Assign,
    FunctionView,
    InstanceView,
    KeepAlive,
    Policy,
    Reject,
    RequestView,
)
from policies.registry import PolicySpecError, load_policy
from policies.wasm import WasmPolicy, WasmPolicyError
from wlsim.config import SimConfig
from wlsim.engine import simulate
from wlsim.traces import mmpp, poisson

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
KEEP_WARM = EXAMPLES / "build" / "policies" / "keep_warm.wasm"
WAT = Path(__file__).resolve().parent / "fixtures" / "wat"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module", autouse=True)
def built_examples() -> None:
    """The example policy (and echo.wasm for the live test) built from source by examples/Makefile."""
    subprocess.run(["make", "-C", str(EXAMPLES), "policies", "c"], check=True, capture_output=True, timeout=120)


def wasm_file(tmp_path: Path, name: str, wat: str) -> Path:
    path = tmp_path / f"{name}.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    return path


def fixture_wasm(tmp_path: Path, name: str) -> Path:
    return wasm_file(tmp_path, name, (WAT / f"{name}.wat").read_text())


def answering(route: tuple[float, float] = (1, 0), on_idle: tuple[float, float] = (5, 0), status: int = 0,
              prewarm: float | None = None) -> str:
    """WAT of a module that always gives these answers (the buffer is at 1024)."""
    def body(answer: tuple[float, float]) -> str:
        a, b = (("nan" if math.isnan(x) else repr(float(x))) for x in answer)
        return (f"(f64.store (i32.const 1024) (f64.const {a})) (f64.store (i32.const 1032) (f64.const {b}))"
                f" (i32.const {status})")
    extra = ""
    if prewarm is not None:
        extra = f'(func (export "wl_prewarm") (param i32) (result i32) {body((prewarm, 0))})'
    return f"""(module (memory (export "memory") 1)
      (func (export "wl_policy_v1_buffer") (param i32) (result i32) (i32.const 1024))
      (func (export "wl_route") (param i32) (result i32) {body(route)})
      (func (export "wl_on_idle") (param i32) (result i32) {body(on_idle)})
      {extra})"""


def reject_with_input(index: int) -> str:
    """WAT of a module whose route rejects with retry_after_ms = 1000 + input value ``index``."""
    return f"""(module (memory (export "memory") 1)
      (func (export "wl_policy_v1_buffer") (param i32) (result i32) (i32.const 1024))
      (func (export "wl_route") (param i32) (result i32)
        (f64.store (i32.const 1032) (f64.add (f64.const 1000) (f64.load (i32.const {1024 + 8 * index}))))
        (f64.store (i32.const 1024) (f64.const 2))
        (i32.const 0))
      (func (export "wl_on_idle") (param i32) (result i32)
        (f64.store (i32.const 1024) (f64.const 5)) (i32.const 0)))"""


# ---------------------------------------------------------------------------- the Python twin

KEEP_MS = 5 * 60 * 1000.0


class KeepWarmTwin(Policy):
    """examples/policies/wasm/keep_warm.c in Python, decision for decision."""

    name = "keep_warm_twin"

    def route(self, now_ms: float, request: RequestView, fn: FunctionView):
        duration = fn.stats.duration.predict(request.payload_bytes)
        best_idle = best_busy = None
        best_idle_ms = best_wait = 0.0
        for inst in fn.instances.values():
            if inst.state == IDLE:
                idle_ms = now_ms - inst.idle_since_ms if inst.idle_since_ms is not None else 0.0
                if best_idle is None or idle_ms <= best_idle_ms:
                    best_idle, best_idle_ms = inst, idle_ms
            elif inst.state == BUSY:
                elapsed = now_ms - inst.exec_started_ms if inst.exec_started_ms is not None else 0.0
                remaining = max(0.0, duration - elapsed)
                if inst.active < fn.concurrency:
                    remaining = 0.0
                wait = remaining + len(inst.queue) * duration
                if best_busy is None or wait < best_wait:
                    best_busy, best_wait = inst, wait
        if best_idle is not None:
            return Assign(best_idle)
        if best_busy is not None and best_wait < fn.stats.cold_start_ms:
            return Assign(best_busy)
        if fn.max_instances is not None and len(fn.instances) >= fn.max_instances:
            return Assign(best_busy) if best_busy is not None else Reject(1000.0)
        return SPAWN

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView):
        if instance.queue:
            return INVOKE
        idle_ms = now_ms - instance.idle_since_ms if instance.state == IDLE and instance.idle_since_ms is not None \
            else 0.0
        remaining = KEEP_MS - idle_ms
        return KeepAlive(remaining) if remaining > 1e-3 else KILL


# ---------------------------------------------------------------------------- (1) equivalence

def burst_trace() -> pd.DataFrame:
    """Bursts of long requests (so requests queue behind busy instances and the limit bites)
    plus sparse functions whose instances outlive and miss the 5-minute keep-alive."""
    hot = mmpp(2, 0.3, on_rate_per_s=15.0, seed=11)
    hot["duration_ms"] = np.random.default_rng(3).uniform(50.0, 400.0, len(hot))
    sparse = poisson(2, 1.0, rate_per_s=1 / 240, seed=12)
    sparse["function"] = "sparse-" + sparse["function"].astype(str)
    return pd.concat([hot, sparse], ignore_index=True).sort_values("arrival_ms", kind="stable",
                                                                 ignore_index=True)


@pytest.mark.parametrize("max_instances", [None, 2])
def test_the_c_example_replays_exactly_like_its_python_twin(max_instances: int | None) -> None:
    trace = burst_trace()
    config = SimConfig(max_instances=max_instances)
    wasm = simulate(trace, f"wasm:{KEEP_WARM}", config)
    twin = simulate(trace, KeepWarmTwin(), config)
    pd.testing.assert_frame_equal(wasm.requests, twin.requests)
    pd.testing.assert_frame_equal(wasm.instances, twin.instances)
    req = wasm.requests
    assert len(req) == len(trace)
    # the run exercised every branch: warm reuse, cold starts, queueing behind a busy instance
    assert req.cold.any() and (~req.cold).any()
    assert (req.wait_ms[~req.cold] > 0).any()
    assert (wasm.instances.died_ms - wasm.instances.created_ms).max() > KEEP_MS
    if max_instances is not None:
        assert wasm.instances.groupby("function").size().max() >= max_instances


def test_wl_sim_compare_runs_wasm_policies_in_worker_processes() -> None:
    """compare loads every spec in the parent, then forks workers that load them again: the
    engine must not depend on threads the fork left behind (a hang before the fix)."""
    from wlsim.compare import compare

    trace = burst_trace()
    spec = f"wasm:{KEEP_WARM}"
    table, results = compare(trace, [spec, "default"], jobs=2, progress=False, include_oracle=False)
    assert list(table["policy"]) == [spec, "default"]
    pd.testing.assert_frame_equal(results[spec].requests, simulate(trace, KeepWarmTwin()).requests)


def test_the_input_layout_matches_the_documented_table(tmp_path: Path) -> None:
    fn = FunctionView("f", memory_mb=256.0, concurrency=1, max_instances=7)
    for t in (1_000.0, 50_000.0, 99_500.0, 100_000.0):
        fn.stats.record_arrival(t)
    busy = InstanceView(41, fn, "n0", 128.0, 1, created_ms=20_000.0)
    busy.state, busy.active, busy.exec_started_ms, busy.queue, busy.invocations = BUSY, 1, 99_000.0, [1, 2], 3
    idle = InstanceView(42, fn, "n0", 128.0, 1, created_ms=30_000.0)
    idle.state, idle.idle_since_ms = IDLE, 97_500.0
    fn.instances = {41: busy, 42: idle}
    request = RequestView(9, "f", 100_000.0, payload_bytes=1234)
    expected = {0: 100_000.0, 1: 1234.0, 2: -1.0, 3: 256.0, 4: 1.0, 5: 7.0, 6: fn.stats.cold_start_ms,
                7: fn.stats.predict_duration(1234), 8: 2.0, 9: 3.0, 10: 4.0, 11: 500.0, 12: 4.0, 13: 2.0,
                14: 41.0, 15: 1.0, 16: 1.0, 17: 2.0, 18: 1_000.0, 19: 128.0, 20: 3.0, 21: 80_000.0,
                22: 42.0, 23: 2.0, 24: 0.0, 25: 0.0, 26: 2_500.0, 27: 128.0, 28: 0.0, 29: 70_000.0}
    for index, value in expected.items():
        policy = WasmPolicy(wasm_file(tmp_path, f"field{index}", reject_with_input(index)))
        assert policy.route(100_000.0, request, fn) == Reject(1000.0 + value), index


# ---------------------------------------------------------------------------- (2) bad modules

def test_bad_modules_are_refused_at_load_naming_the_problem(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wasm"
    garbage.write_bytes(b"definitely not wasm")
    component = tmp_path / "component.wasm"
    component.write_bytes(wasmtime.wat2wasm("(component)"))
    truncated = tmp_path / "truncated.wasm"
    truncated.write_bytes(KEEP_WARM.read_bytes()[:200])
    missing = wasm_file(tmp_path, "missing", """(module (memory (export "memory") 1)
        (func (export "wl_route") (param i32) (result i32) (i32.const 0)))""")
    wrong_type = wasm_file(tmp_path, "wrong_type", answering().replace(
        '(func (export "wl_route") (param i32) (result i32)', '(func (export "wl_route") (param f64) (result i32)'))
    imports = wasm_file(tmp_path, "imports", answering().replace(
        '(module', '(module (import "env" "now" (func (result f64)))', 1))
    cases = [
        (f"wasm:{tmp_path / 'nope.wasm'}", "not found"),
        (f"wasm:{garbage}", "is not a WebAssembly module"),
        (f"wasm:{component}", "is a WebAssembly component"),
        (f"wasm:{truncated}", "does not compile"),
        (f"wasm:{missing}", "missing export(s) wl_policy_v1_buffer, wl_on_idle"),
        (f"wasm:{wrong_type}", "export 'wl_route' must be a function (i32) -> i32"),
        (f"wasm:{imports}", "imports env.now"),
        (f"wasm:{KEEP_WARM}:budget=5", "unknown parameter(s) budget"),
        (f"wasm:{KEEP_WARM}:fuel=0", "fuel must be a positive number"),
        (f"wasm:{KEEP_WARM}:memory_mb=lots", "memory_mb must be a positive number"),
        ("wasm", "needs a path"),
    ]
    for spec, problem in cases:
        with pytest.raises(PolicySpecError) as e:
            load_policy(spec)
        assert problem in str(e.value), (spec, str(e.value))


def test_a_module_needing_more_memory_than_its_cap_is_refused(tmp_path: Path) -> None:
    big = wasm_file(tmp_path, "big", answering().replace('(memory (export "memory") 1)',
                                                          '(memory (export "memory") 100)'))  # 6.25 MiB
    with pytest.raises(PolicySpecError, match="instantiation failed"):
        load_policy(f"wasm:{big}:memory_mb=4")
    assert load_policy(f"wasm:{big}:memory_mb=8").describe()["memory_mb"] == 8


# ---------------------------------------------------------------------------- (3) failing decisions

def one_function() -> tuple[FunctionView, InstanceView, RequestView]:
    fn = FunctionView("f")
    fn.stats.record_arrival(0.0)
    inst = InstanceView(1, fn, "n0", 128.0, 1, created_ms=0.0)
    inst.state, inst.idle_since_ms = IDLE, 0.0
    fn.instances[1] = inst
    fn.idle.append(inst)
    return fn, inst, RequestView(0, "f", 0.0)


def test_trap_loop_and_nonsense_raise_wasm_policy_error(tmp_path: Path) -> None:
    fn, inst, req = one_function()
    trap = load_policy(f"wasm:{fixture_wasm(tmp_path, 'policy_trap')}")
    with pytest.raises(WasmPolicyError, match=r"policy_trap\.wasm: wl_route trapped: .*unreachable"):
        trap.route(0.0, req, fn)
    with pytest.raises(WasmPolicyError, match="wl_on_idle trapped"):
        trap.on_idle(0.0, inst, fn)

    loop = load_policy(f"wasm:{fixture_wasm(tmp_path, 'policy_loop')}:fuel=2000000")
    t = time.perf_counter()
    with pytest.raises(WasmPolicyError, match=r"policy_loop\.wasm: wl_route ran out of fuel"):
        loop.route(0.0, req, fn)
    assert time.perf_counter() - t < 5.0
    assert loop.on_idle(0.0, inst, fn) == KILL      # re-instantiated after the trap: still usable

    nonsense = [
        (answering(route=(7, 0)), "route", "route answered action 7.0"),
        (answering(route=(0, 99)), "route", "assigned to 99.0, which is not the id of a live instance of f"),
        (answering(route=(0, 1.5)), "route", "assigned to 1.5"),
        (answering(route=(math.nan, 0)), "route", "route answered action nan"),
        (answering(route=(2, -5)), "route", "retry_after_ms=-5.0"),
        (answering(status=3), "route", "wl_route returned error code 3"),
        (answering(on_idle=(4, math.nan)), "on_idle", "keep alive nan ms"),
        (answering(on_idle=(4, 0)), "on_idle", "keep alive 0.0 ms"),
        (answering(on_idle=(3, 0)), "on_idle", "invoke for instance 1, which has nothing queued"),
        (answering(on_idle=(1, 0)), "on_idle", "on_idle answered action 1.0"),
        (answering(prewarm=-3), "prewarm", "prewarm answered -3.0"),
        (answering().replace("(i32.const 1024))", "(i32.const 65530))", 1), "route",
         "returned 65530, not a buffer of 22 f64"),
    ]
    for i, (wat, decision, problem) in enumerate(nonsense):
        policy = WasmPolicy(wasm_file(tmp_path, f"nonsense{i}", wat))
        with pytest.raises(WasmPolicyError) as e:
            if decision == "route":
                policy.route(0.0, req, fn)
            elif decision == "on_idle":
                policy.on_idle(0.0, inst, fn)
            else:
                policy.prewarm(0.0, fn)
        assert problem in str(e.value) and f"nonsense{i}.wasm" in str(e.value), (wat, str(e.value))


def test_valid_answers_map_to_decisions(tmp_path: Path) -> None:
    fn, inst, req = one_function()
    inst.queue.append("queued")

    def policy(**answers) -> WasmPolicy:
        return WasmPolicy(wasm_file(tmp_path, f"ok{len(list(tmp_path.iterdir()))}", answering(**answers)))

    assert policy(route=(0, 1)).route(0.0, req, fn) == Assign(inst)
    assert policy(route=(1, 0)).route(0.0, req, fn) == SPAWN
    assert policy(route=(2, 1500)).route(0.0, req, fn) == Reject(1500.0)
    assert policy(on_idle=(3, 0)).on_idle(0.0, inst, fn) == INVOKE
    assert policy(on_idle=(4, 2500)).on_idle(0.0, inst, fn) == KeepAlive(2500.0)
    assert policy(on_idle=(5, 0)).on_idle(0.0, inst, fn) == KILL
    assert policy(prewarm=250).prewarm(0.0, fn) == 250.0
    assert policy(prewarm=-1).prewarm(0.0, fn) is None
    assert policy().prewarm(0.0, fn) is None       # no wl_prewarm export: no pre-warming


def test_state_persists_across_decisions_and_pickling_starts_afresh(tmp_path: Path) -> None:
    fn, inst, req = one_function()
    path = fixture_wasm(tmp_path, "policy_counter")
    policy = load_policy(f"wasm:{path}:fuel=1000:memory_mb=2")
    assert [policy.route(0.0, req, fn).retry_after_ms for _ in range(3)] == [1.0, 2.0, 3.0]
    assert policy.on_idle(0.0, inst, fn) == KILL
    assert policy.route(0.0, req, fn).retry_after_ms == 4.0

    path.unlink()                                  # the module's bytes travel with the policy
    copy = pickle.loads(pickle.dumps(policy))
    assert copy.describe() == policy.describe()
    assert copy.describe()["fuel"] == 1000 and copy.describe()["sha256"] == policy.sha256[:12]
    assert [copy.route(0.0, req, fn).retry_after_ms for _ in range(2)] == [1.0, 2.0]
    assert policy.route(0.0, req, fn).retry_after_ms == 5.0


def test_memory_growth_is_followed_and_capped(tmp_path: Path) -> None:
    fn, _, _ = one_function()
    req = RequestView(0, "f", 1000.0)
    path = fixture_wasm(tmp_path, "policy_grow")
    capped = load_policy(f"wasm:{path}:memory_mb=64")
    # every answer is read from a page the previous decision had not seen; growth past 64 MB fails
    assert [capped.route(1000.0, req, fn).retry_after_ms for _ in range(3)] == [1000.0] * 3
    roomy = load_policy(f"wasm:{path}:memory_mb=256")
    # pages: 1 -> 2 (buffer) -> 2002 (route), -> 2003 -> 4003, -> 4004 and the third route's
    # 2000 more pages would pass 256 MiB
    assert [roomy.route(1000.0, req, fn).retry_after_ms for _ in range(3)] == [1003.0, 3004.0, 1000.0]


def test_a_failing_wasm_policy_is_reported_by_the_simulator(tmp_path: Path) -> None:
    trap = fixture_wasm(tmp_path, "policy_trap")
    with pytest.raises(WasmPolicyError, match="wl_route trapped"):
        simulate(poisson(1, 0.05, seed=1), f"wasm:{trap}")


# ---------------------------------------------------------------------------- (4) the live router

def test_the_live_router_runs_a_wasm_policy_and_falls_back_when_it_fails(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from wl.testing import PlatformClient, metric_value, start_platform

    trap = fixture_wasm(tmp_path, "policy_trap")
    platform = start_platform(tmp_path / "wl", policy=f"wasm:{KEEP_WARM}",
                              cache_dir=request.config.cache.mkdir("wl-node-cache"))
    try:
        wl = PlatformClient(platform)
        described = wl.policy()
        assert described["name"] == "wasm" and described["path"] == str(KEEP_WARM), described
        wl.deploy("echo", EXAMPLES / "build" / "echo.wasm", {"memory_mb": 16})
        first = wl.invoke("echo", b"one")
        second = wl.invoke("echo", b"two")
        assert (first.status, first.output, first.cold) == (200, b"one", True)
        assert (second.status, second.output, second.cold) == (200, b"two", False)  # kept warm by keep_warm
        assert metric_value(wl.metrics(), "wl_router_policy_errors_total") == 0

        wl.set_policy(f"wasm:{trap}")
        for i in range(3):
            r = wl.invoke("echo", f"fallback {i}".encode())
            assert (r.status, r.output) == (200, f"fallback {i}".encode())
        assert metric_value(wl.metrics(), "wl_router_policy_errors_total", decision="route") >= 3
    finally:
        platform.stop()
