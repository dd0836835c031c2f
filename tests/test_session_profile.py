"""``--profile session`` (wl.loop.calibrate.session_profile): the recipe it runs, that it stops at
the first invalid calibration run, and that the other names still load the bundled profiles. The
live part (a fresh platform, a short probe) is in tests/test_loop_live.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import wl.loop.fidelity as fidelity_module
from wl.loop.calibrate import (
    SESSION_MAX_DURATION_MS,
    cold_start_summary,
    probe_plan,
    profile_for,
    session_plans,
    session_profile,
)
from wl.loop.load import LoadError
from wlsim.profile import ProfileError, load_profile

pytestmark = pytest.mark.unit


def test_the_session_runs_the_bundled_profiles_recipe_and_an_hourly_burst() -> None:
    probe, trace, burst = session_plans()
    assert probe.source == "calibration probe" and len(probe.requests) == len(probe_plan().requests)
    assert trace.source == "traces/azure2019/40" and trace.speed == 4.0
    assert len(trace.requests) == 1308                      # minutes 1081-1082, every function
    assert trace.requests["duration_ms"].max() <= SESSION_MAX_DURATION_MS
    assert 29.0 < trace.span_s <= 30.0
    # 17:00's burst (not the fidelity slice's minutes) at x15: its 11 functions (at most 20), 8 s
    assert burst.source == "traces/azure2019/40" and burst.speed == 15.0
    assert len(burst.functions) == 11 and len(burst.requests) == 1233 and 7.5 < burst.span_s <= 8.0
    assert len(burst.requests) / burst.span_s > 150        # the fidelity slice's opening rate, not its mean


def test_an_invalid_calibration_run_stops_the_session_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    calls = []

    def late_run(plan, policy, **kwargs):
        calls.append(plan.source)
        return SimpleNamespace(info={"valid": False, "trace": plan.source,
                                     "invalid_because": "p99 lateness 80.0 ms > 50.0 ms"})

    monkeypatch.setattr(fidelity_module, "run_policy_live", late_run)
    with pytest.raises(LoadError, match=r"run 1 \(calibration probe\) is not valid: p99 lateness 80.0 ms"):
        session_profile(plans=[probe_plan(functions=2, seconds=2), probe_plan(seed=1, functions=2, seconds=2)],
                        out=tmp_path / "p.json", log=lambda m: None)
    assert calls == ["calibration probe"]                  # the second run never started
    assert not (tmp_path / "p.json").exists()


def test_other_names_are_the_bundled_profiles_or_files(tmp_path) -> None:
    assert profile_for("wl", tmp_path) == load_profile("wl")
    assert not (tmp_path / "profile-session.json").exists()
    with pytest.raises(ProfileError, match="no bundled profile of that name"):
        profile_for("no-such-profile", tmp_path)


def test_the_reported_cold_start_quantiles_are_the_profiles() -> None:
    wl = load_profile("wl").cold_start.by_abi["wasi-command"]
    assert cold_start_summary(load_profile("wl")) == {"p50_ms": wl.p50_ms, "p90_ms": wl.p90_ms, "p99_ms": wl.p99_ms}
    container = load_profile("container")                  # no measured ABI: its constant
    assert cold_start_summary(container) == {"p50_ms": container.cold_start.base_ms, "p90_ms": None, "p99_ms": None}
