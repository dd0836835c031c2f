"""``wl.loop.fidelity.fidelity(keep=...)``: each policy's live run is on disk as soon as it ends,
so a later policy's failure (a platform that would not start, a router gone mid warm-up) loses
none of the finished runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import wl.loop.fidelity as fid
from wl.loop.load import LoadError, LoadResult, _join_recorded, plan_load
from wlsim.profile import load_profile

pytestmark = pytest.mark.unit


def _run() -> LoadResult:
    """One cold request, as a live run records it."""
    trace = pd.DataFrame({"app": "a", "function": "f", "arrival_ms": [0.0], "duration_ms": [10.0],
                          "memory_mb": 128.0})
    plan = plan_load(trace, speed=1.0, duration_scale=1.0)
    records = pd.DataFrame({
        "request_id": [0], "function": "f", "deployed": "f", "scheduled_ms": [0.0], "duration_ms": [10.0],
        "memory_mb": 128.0, "sent_ms": [0.0], "lateness_ms": 0.0, "latency_ms": [16.0], "status": 200,
        "cold": pd.array([True], dtype="boolean"), "wait_ms": [4.0], "exec_ms": [9.5], "node": "n1",
        "instance": ["f-0"], "error": "",
    })
    recorded = pd.DataFrame({
        "app": "a", "function": "f", "arrival_ms": [1.0], "duration_ms": [10.0], "memory_mb": 128.0, "cold": [True],
        "wait_ms": [0.0], "cold_start_ms": [4.0], "exec_ms": [9.5], "start_ms": [5.0], "end_ms": [15.0],
    })
    counts = pd.DataFrame({"t_ms": [0.0, 200.0], "deployed": "f", "starting": [0, 0], "busy": [1, 0],
                           "idle": [0, 1], "cold_start_ms_ewma": 4.0, "memory_mb": 128.0, "function": "f"})
    polls = pd.DataFrame(columns=["t_ms", "instance", "function", "state", "keepalive_left_ms"])
    return LoadResult(plan, _join_recorded(records, recorded), counts, recorded, {"valid": True}, polls)


def test_a_failed_policy_keeps_the_runs_before_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run()

    def live(plan, policy, **_):
        if policy == "default":
            raise LoadError("the router is unreachable")
        return run

    monkeypatch.setattr(fid, "run_policy_live", live)
    said: list[str] = []
    with pytest.raises(LoadError, match="unreachable"):
        fid.fidelity(run.plan, ["fixed_ttl:ttl_ms=2000", "default"], load_profile("wl"), keep=tmp_path,
                     log=said.append)
    kept = tmp_path / "live-fixed_ttl_ttl_ms=2000"
    assert (kept / "load.json").exists()
    assert len(LoadResult.read(kept).records) == 1
    assert not (tmp_path / "live-default").exists()
    assert said and "live-fixed_ttl_ttl_ms=2000" in said[-1]


def test_without_keep_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run()
    monkeypatch.setattr(fid, "run_policy_live", lambda plan, policy, **_: run)
    monkeypatch.chdir(tmp_path)
    results = fid.fidelity(run.plan, ["fixed_ttl:ttl_ms=2000"], load_profile("wl"), log=lambda _: None)
    assert [f.policy for f in results] == ["fixed_ttl:ttl_ms=2000"]
    assert list(tmp_path.iterdir()) == []
