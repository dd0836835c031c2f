"""Exact instance lifetimes in a live run: the router logs every instance's death
(``/admin/trace?kind=instances``), ``wl load`` keeps it (``instance_log.parquet``) and
``wl.loop.live`` takes created/ready/died from it; runs without it fall back to the state polls.

The e2e test runs keep-alives shorter than a state poll (200 ms), which the polls cannot see:
there the estimate loses the idle time the log keeps."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from wl.loop.live import live_result
from wl.loop.load import SYNTHETIC_WASM, LoadResult, _join_recorded, plan_load, prepare_functions, run_load
from wl.testing import start_platform
from wlruntime.router.client import RouterClient, RouterClientError

TTL_MS = 30.0


def _run(instance_log: pd.DataFrame | None) -> LoadResult:
    """Two requests, each cold on its own instance, no state poll saw either (both lived less
    than a poll interval): request 0 on f-0 (ready 5, ran to 15), request 1 on f-1 (ready 504,
    ran to 524, the horizon)."""
    trace = pd.DataFrame({"app": "a", "function": "f", "arrival_ms": [0.0, 500.0], "duration_ms": [10.0, 20.0],
                          "memory_mb": 1024.0})
    plan = plan_load(trace, speed=1.0, duration_scale=1.0)
    records = pd.DataFrame({
        "request_id": [0, 1], "function": "f", "deployed": "f", "scheduled_ms": [0.0, 500.0],
        "duration_ms": [10.0, 20.0], "memory_mb": 1024.0, "sent_ms": [0.0, 500.0], "lateness_ms": 0.0,
        "latency_ms": [16.0, 25.0], "status": 200, "cold": pd.array([True, True], dtype="boolean"),
        "wait_ms": [4.0, 4.0], "exec_ms": [9.5, 19.5], "node": "n1", "instance": ["f-0", "f-1"], "error": "",
    })
    recorded = pd.DataFrame({
        "app": "a", "function": "f", "arrival_ms": [1.0, 500.0], "duration_ms": [10.0, 20.0], "memory_mb": 1024.0,
        "cold": [True, True], "wait_ms": [0.0, 0.0], "cold_start_ms": [4.0, 4.0], "exec_ms": [9.5, 19.5],
        "start_ms": [5.0, 504.0], "end_ms": [15.0, 524.0],
    })
    polls = pd.DataFrame(columns=["t_ms", "instance", "function", "state", "keepalive_left_ms"])
    return LoadResult(plan, _join_recorded(records, recorded), pd.DataFrame(), recorded, {"valid": True}, polls,
                      instance_log)


@pytest.mark.unit
def test_without_the_log_an_unpolled_instance_dies_at_its_last_execution() -> None:
    inst = live_result(_run(None)).instances
    assert inst["created_ms"].tolist() == pytest.approx([1.0, 500.0])
    assert inst["died_ms"].tolist() == pytest.approx([15.0, 524.0])
    assert inst["idle_ms"].tolist() == pytest.approx([0.0, 0.0])


@pytest.mark.unit
def test_the_log_gives_exact_lifetimes() -> None:
    log = pd.DataFrame({
        # a warm-up instance that died before the run; f-0 killed 30 ms after its request;
        # a pre-warmed instance no request or poll saw, evicted; one that died starting
        # (no ready_ms); one created after the horizon. f-1 is absent: alive at the end.
        "instance": ["w-0", "f-0", "p-0", "s-0", "late"], "function": "f",
        "created_ms": [-900.0, 1.0, 100.0, 200.0, 600.0], "ready_ms": [-890.0, 5.0, 103.0, np.nan, 604.0],
        "died_ms": [-500.0, 45.0, 300.0, 210.0, 700.0], "evicted": [False, False, True, False, False],
    })
    result = live_result(_run(log))
    inst = result.instances.set_index("instance_id")
    assert inst["created_ms"].tolist() == pytest.approx([1.0, 100.0, 200.0, 500.0])
    assert inst["ready_ms"].tolist() == pytest.approx([5.0, 103.0, 210.0, 504.0])
    assert inst["died_ms"].tolist() == pytest.approx([45.0, 300.0, 210.0, 524.0])
    assert inst["idle_ms"].tolist() == pytest.approx([30.0, 197.0, 0.0, 0.0])
    assert inst["evicted"].tolist() == [False, True, False, False]
    assert inst["prewarmed"].tolist() == [False, True, True, False]
    # the requests point at their own instances
    assert result.requests["instance_id"].tolist() == [0, 3]


@pytest.mark.unit
def test_the_log_is_written_and_read_back_and_older_folders_still_read(tmp_path) -> None:
    log = pd.DataFrame({"instance": ["f-0"], "function": "f", "created_ms": [1.0], "ready_ms": [5.0],
                        "died_ms": [45.0], "evicted": [False]})
    _run(log).write(tmp_path / "new")
    pd.testing.assert_frame_equal(LoadResult.read(tmp_path / "new").instance_log, log)
    _run(None).write(tmp_path / "old")
    assert not (tmp_path / "old" / "instance_log.parquet").exists()
    assert LoadResult.read(tmp_path / "old").instance_log is None


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    assert SYNTHETIC_WASM.is_file(), "build the examples first (make -C examples)"
    p = start_platform(tmp_path_factory.mktemp("instance-log"), nodes=1, policy=f"fixed_ttl:ttl_ms={TTL_MS:g}")
    yield p
    p.stop()


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_keep_alive_shorter_than_a_poll_is_measured_exactly(platform) -> None:
    # one function, a 10 ms request every 300 ms: each one cold, its instance alive ~40 ms
    trace = pd.DataFrame({"app": "a", "function": "ttl-probe", "arrival_ms": np.arange(20) * 300.0,
                          "duration_ms": 10.0, "memory_mb": 64.0})
    plan = plan_load(trace, speed=1.0, duration_scale=1.0)
    with RouterClient(platform.router_url, platform.token) as client:
        prepare_functions(client, plan, deploy_synthetic=True)
        client.invoke("ttl-probe", b"0 0 sleep")  # the node compiles the module once, before the run
        with pytest.raises(RouterClientError, match="kind"):
            client._admin("GET", "/admin/trace", params={"kind": "nodes"})
        logged = pd.read_csv(io.BytesIO(client.instance_log("csv")))
    assert list(logged.columns) == ["instance", "function", "created_ms", "ready_ms", "died_ms", "evicted"]
    load = run_load(platform.router_url, platform.token, plan)
    assert load.summary()["ok"] == len(plan.requests)
    log = load.instance_log
    # every instance died before the log was fetched, but perhaps the last (its keep-alive may
    # outlast the fetch)
    assert log is not None and set(load.records["instance"][:-1]) <= set(log["instance"])
    # the log is on the run's time base: each death follows its instance's last request's end
    last_end = load.records.groupby("instance")["router_end_ms"].max()
    after = (log.set_index("instance")["died_ms"] - last_end).dropna()
    assert len(after) >= len(plan.requests) - 1
    assert after.between(TTL_MS - 1.5, TTL_MS + 50.0).all(), after.describe()

    result = live_result(load)
    exact = result.instances
    # the last instance is still alive at the horizon (the last completion), where it dies
    assert (exact["died_ms"] == result.horizon_ms).sum() == 1
    served = exact[(exact["invocations"] > 0) & (exact["died_ms"] < result.horizon_ms)]
    assert len(served) >= len(plan.requests) - 3
    # the instances' idle time is their keep-alive (plus the timer's lateness on a busy machine;
    # measured 30.0-30.7 ms at load average 0.5; uvloop's timers tick in whole ms)
    assert served["idle_ms"].median() == pytest.approx(TTL_MS, abs=5.0)
    assert (served["idle_ms"] >= TTL_MS - 1.5).all()
    # the state polls (every 200 ms) see few of these instances: without the log most idle time is lost
    load.instance_log = None
    estimated = live_result(load).instances
    assert estimated["idle_ms"].sum() < 0.5 * served["idle_ms"].sum()
