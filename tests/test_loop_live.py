"""The live loop end to end: a short synthetic trace (bursts, idle gaps on both sides of the
keep-alive) driven against a real platform with ``wl load``'s driver, then replayed in the
simulator calibrated with the bundled ``wl`` profile; the cold-start counts must agree.

Bounds (cold starts, relative to live): the simulator fed the router's recording within 10%,
fed the trace as sent within 15%. Measured for this test's trace and policy on the project's
shared 2-core machine under load average ~10 (bench/README.md, "fidelity.py"): 0 to +0.6% both
ways, cold/warm agreement 99.5-100% (2 runs); with the earlier httpx driver up to +8.2%. A 15 s
run has ~150 cold starts: a few requests decided differently near the TTL move it by several %.
"""

from __future__ import annotations

import json

import pytest

from wl.loop.calibrate import calibrate, probe_plan
from wl.loop.fidelity import KILL_AT_ONCE, compare_run, polled_instances, warm_up
from wl.loop.live import live_result
from wl.loop.load import SYNTHETIC_WASM, LoadError, prepare_functions, run_load
from wl.testing import start_platform
from wlruntime.router.client import RouterClient
from wlsim.metrics import summarize
from wlsim.profile import load_profile

pytestmark = pytest.mark.e2e

POLICY = "fixed_ttl:ttl_ms=1000"


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    assert SYNTHETIC_WASM.is_file(), "build the examples first (make -C examples)"
    p = start_platform(tmp_path_factory.mktemp("loop"), nodes=1, policy=KILL_AT_ONCE, node_memory_mb=10_000_000,
                       node_workers=200)
    yield p
    p.stop()


def test_unreachable_platform_is_named() -> None:
    plan = probe_plan(functions=2, seconds=2)
    with pytest.raises(LoadError, match="unreachable"):
        run_load("http://127.0.0.1:9", None, plan)


def test_live_cold_starts_match_the_calibrated_simulator(platform) -> None:
    plan = probe_plan(seed=1, functions=5, seconds=15)
    with RouterClient(platform.router_url, platform.token) as client:
        with pytest.raises(LoadError, match="--deploy-synthetic"):
            prepare_functions(client, plan, deploy_synthetic=False)
        assert sorted(prepare_functions(client, plan, deploy_synthetic=True)) == sorted(plan.functions["deployed"])
        warm_up(client, plan)
        client.set_policy(POLICY)
    load = run_load(platform.router_url, platform.token, plan)
    summary = load.summary()
    assert summary["ok"] == len(plan.requests), summary["statuses"]
    assert load.recorded is not None and len(load.recorded) == len(plan.requests)
    # every request joined with its own row of the router's trace (by function and exec_ms)
    assert load.records["router_arrival_ms"].notna().mean() > 0.99
    assert (load.records["router_arrival_ms"] >= load.records["sent_ms"] - 5.0).all()

    # the live run, rebuilt as a SimResult, summarised by the simulator's own metrics code
    live_run = live_result(load)
    s = summarize(live_run)
    assert s["cold_starts"] == load.records["cold"].sum() and s["served"] == len(plan.requests)
    inst = live_run.instances
    assert len(inst) == load.records["instance"].nunique()
    assert ((inst["created_ms"] <= inst["ready_ms"]) & (inst["ready_ms"] <= inst["died_ms"])).all()
    assert inst["invocations"].sum() == len(plan.requests)
    polled = polled_instances(load)    # the state polls' instance counts: the same mean within 10%
    assert abs(s["mean_instances"] - polled["mean_instances"]) <= 0.10 * polled["mean_instances"]

    fid = compare_run(load, POLICY, load_profile("wl"), SYNTHETIC_WASM.stat().st_size)
    live = fid.live["cold_starts"]
    assert 30 < live < len(plan.requests)            # the trace exercises both sides of the TTL
    assert abs(fid.errors("recorded")["cold_starts"]) <= 0.10, (live, fid.recorded["cold_starts"])
    assert abs(fid.errors("intended")["cold_starts"]) <= 0.15, (live, fid.intended["cold_starts"])
    assert fid.cold_match > 0.8

    # the run calibrates a profile whose cold start is the live one (a few ms, not a container's)
    if load.info["valid"]:
        profile = calibrate([load])
        assert profile.cold_start.by_abi["wasi-command"].p50_ms < 50


def test_default_policy_live_matches_the_simulator(platform) -> None:
    """``default`` prices its keep-alive with the cold-start time it measures, so it is the
    policy most sensitive to the platform's timings. At this test's rate (~13 requests/s, no
    burst of spawns) the cold start stays at its calibrated few ms. Measured (2026-12-02, load
    average ~7): cold starts +3.9% in all three replays, mean instances -4.0 to -4.6%; earlier
    runs with the previous profile +6.7% and +16.1%. Bound: 20% on cold starts, 15% on mean
    instances (the simulator's definition on both sides: wl.loop.live)."""
    plan = probe_plan(seed=1, functions=5, seconds=15)
    with RouterClient(platform.router_url, platform.token) as client:
        prepare_functions(client, plan, deploy_synthetic=True)
        warm_up(client, plan)
        client.set_policy("default")
    load = run_load(platform.router_url, platform.token, plan)
    assert load.summary()["ok"] == len(plan.requests)
    fid = compare_run(load, "default", load_profile("wl"), SYNTHETIC_WASM.stat().st_size)
    assert 30 < fid.live["cold_starts"] < len(plan.requests)
    for which in ("recorded", "recorded_cold"):
        errors = fid.errors(which)
        assert abs(errors["cold_starts"]) <= 0.20, (which, fid.live["cold_starts"], errors)
        assert abs(errors["mean_instances"]) <= 0.15, (which, fid.live["mean_instances"], errors)


def test_invalid_run_refuses_to_calibrate(platform) -> None:
    """A run is invalid when the driver's p99 lateness passes the bound; calibrate says so."""
    plan = probe_plan(seed=2, functions=2, seconds=2)
    load = run_load(platform.router_url, platform.token, plan, deploy_synthetic=True, max_lateness_ms=0.0)
    assert not load.info["valid"] and "late" in load.info["invalid_because"]
    with pytest.raises(LoadError, match="no valid load run"):
        calibrate([load])


def test_wl_load_and_calibrate_commands(platform, tmp_path) -> None:
    """The CLI: a canonical CSV trace, functions deployed on demand, then a profile fitted from
    the run folder; an unreachable platform is a one-line error, exit 2."""
    from typer.testing import CliRunner

    from wl.cli import app

    rows = ["app,function,arrival_ms,duration_ms,memory_mb"]
    for burst in range(4):                     # bursts 1.5 s apart: past the 1 s TTL, all cold
        for k in range(3):
            rows += [f"a,cli-{f},{burst * 1500 + k},{20 + 10 * k},{64 * (f + 1)}" for f in range(2)]
    trace = tmp_path / "t.csv"
    trace.write_text("\n".join(rows) + "\n")
    runner = CliRunner()
    with RouterClient(platform.router_url, platform.token) as client:
        client.set_policy(POLICY)
    args = ["load", str(trace), "--url", platform.router_url, "--token", platform.token, "--out", str(tmp_path / "run"),
            "--max-lateness-ms", "1000"]
    missing = runner.invoke(app, args)
    assert missing.exit_code == 2 and "--deploy-synthetic" in missing.output
    done = runner.invoke(app, [*args, "--deploy-synthetic"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "run" / "requests.parquet").is_file() and "cold starts" in done.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())   # wlsim.metrics of the live run
    assert metrics["served"] == 24 and metrics["cold_starts"] >= 16 and "simulator summarises" in done.output
    cal = runner.invoke(app, ["calibrate", str(tmp_path / "run"), "--out", str(tmp_path / "p.json")])
    assert cal.exit_code == 0, cal.output
    assert load_profile(str(tmp_path / "p.json")).cold_start.by_abi["wasi-command"].samples >= 5
    keyed = runner.invoke(app, ["calibrate", str(tmp_path / "run"), "--load-measure", "spawns_50ms",
                                "--out", str(tmp_path / "q.json")])
    assert keyed.exit_code == 0, keyed.output
    assert load_profile(str(tmp_path / "q.json")).cold_start.by_abi["wasi-command"].samples >= 5
    bad = runner.invoke(app, ["calibrate", str(tmp_path / "run"), "--load-measure", "cpu"])
    assert bad.exit_code == 2 and "in_flight" in bad.output and "spawns_50ms" in bad.output
    fid = runner.invoke(app, ["fidelity", str(trace), "--policy", POLICY, "--live", str(tmp_path / "run"),
                              "--profile", str(tmp_path / "p.json"), "--out", str(tmp_path / "fid")])
    assert fid.exit_code == 0, fid.output
    assert (tmp_path / "fid" / "fidelity.json").is_file() and (tmp_path / "fid" / "fidelity.png").is_file()
    down = runner.invoke(app, ["load", str(trace), "--url", "http://127.0.0.1:9", "--token", "x"])
    assert down.exit_code == 2 and "unreachable" in down.output


def test_session_profile_is_fitted_on_a_fresh_platform_and_simulated_with(tmp_path) -> None:
    """``--profile session`` in short: a fresh platform of its own (not the module's), a 4 s
    probe under a 1 ms keep-alive (every request a cold start), the profile fitted, written where
    asked, and the simulator drawing its spawns' cold starts from it."""
    from wl.loop.calibrate import profile_for

    plan = probe_plan(seed=3, functions=3, seconds=4)
    profile = profile_for("session", tmp_path, plans=[plan], policy="fixed_ttl:ttl_ms=1", log=lambda m: None)
    assert profile.name == "session" and profile.measured["runs"] == 1
    assert load_profile(str(tmp_path / "profile-session.json")) == profile
    assert (tmp_path / "calibration-1" / "requests.parquet").is_file()      # the run, for a later look
    fitted = profile.cold_start.by_abi["wasi-command"]
    assert fitted.samples >= 5 and 0 < fitted.p50_ms < 50
    assert fitted.by_load is None or fitted.by_load.measure == "spawns_50ms"   # keyed like the session's
    sim = profile.simulate(plan.canonical(), "fixed_ttl:ttl_ms=1")
    cold = sim.requests.loc[sim.requests["cold"], "cold_start_ms"]
    assert len(cold) and cold.between(fitted.quantiles_ms[0], fitted.quantiles_ms[-1]).all()


def test_wl_fidelity_refuses_a_session_profile_for_earlier_runs(tmp_path) -> None:
    from typer.testing import CliRunner

    from wl.cli import app

    trace = tmp_path / "t.csv"
    trace.write_text("app,function,arrival_ms,duration_ms,memory_mb\na,f,0,10,64\n")
    result = CliRunner().invoke(app, ["fidelity", str(trace), "--profile", "session", "--live", str(tmp_path)])
    assert result.exit_code == 2 and "--profile session" in result.output and "--live" in result.output
