"""A live run rebuilt as a simulator result (wl.loop.live), on a hand-made run whose every
number is known: the driver's records joined exactly with the router's trace, instances from
the requests' X-WL-Instance and the state polls, summarised by wlsim.metrics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from wl.loop.live import live_result
from wl.loop.load import LoadError, LoadResult, _join_recorded, plan_load
from wlsim.metrics import summarize

pytestmark = pytest.mark.unit


def _run() -> LoadResult:
    trace = pd.DataFrame({"app": "a", "function": "f", "arrival_ms": [0.0, 1.0, 1200.0, 1500.0],
                          "duration_ms": [1000.0, 1000.0, 10.0, 20.0], "memory_mb": 128.0})
    plan = plan_load(trace, speed=1.0, duration_scale=1.0)
    # Driver side: requests 0 and 1 ran exactly as long (the same exec_ms to the microsecond) on
    # two new instances; 2 was refused (429); 3 ran warm on instance 0.
    records = pd.DataFrame({
        "request_id": [0, 1, 2, 3], "function": "f", "deployed": "f", "scheduled_ms": trace["arrival_ms"],
        "duration_ms": trace["duration_ms"], "memory_mb": 128.0, "sent_ms": [0.0, 1.0, 1200.0, 1500.0],
        "lateness_ms": 0.0, "latency_ms": [1008.0, 1008.0, 2.0, 22.0], "status": [200, 200, 429, 200],
        "cold": pd.array([True, True, None, False], dtype="boolean"),
        "wait_ms": [4.0, 5.0, np.nan, 0.0], "exec_ms": [1000.123, 1000.123, np.nan, 20.5],
        "node": ["n1", "n1", None, "n1"], "instance": ["f-b-0", "f-b-1", None, "f-b-0"], "error": "",
    })
    # Router side, in arrival order (request 1 reached the router first): busy = exec + 1 ms
    recorded = pd.DataFrame({
        "app": "a", "function": "f", "arrival_ms": [0.2, 0.3, 1500.1], "duration_ms": [1001.123, 1001.123, 21.5],
        "memory_mb": 128.0, "cold": [True, True, False], "wait_ms": [0.0, 0.0, 0.0],
        "cold_start_ms": [5.0, 4.0, 0.0], "exec_ms": [1000.123, 1000.123, 20.5],
        "start_ms": [5.3, 4.2, 1500.1], "end_ms": [1006.423, 1005.323, 1521.6],
    })
    # State polls: at 1200 both idle (keep-alive left 800 / 100 ms), at 1400 only instance 0
    polls = pd.DataFrame({"t_ms": [200.0, 200.0, 1200.0, 1200.0, 1400.0],
                          "instance": ["f-b-0", "f-b-1", "f-b-0", "f-b-1", "f-b-0"], "function": "f",
                          "state": ["busy", "busy", "idle", "idle", "idle"],
                          "keepalive_left_ms": [np.nan, np.nan, 800.0, 100.0, 600.0]})
    return LoadResult(plan, _join_recorded(records, recorded), pd.DataFrame(), recorded, {"valid": True}, polls)


def test_requests_join_their_own_router_rows() -> None:
    r = _run().records
    # equal exec_ms: the wait (cold start included) tells requests 0 and 1 apart
    assert r["router_arrival_ms"].tolist()[:2] == [0.3, 0.2]
    assert r["router_cold_start_ms"].tolist()[:2] == [4.0, 5.0]
    assert math.isnan(r["router_arrival_ms"][2]) and r["router_arrival_ms"][3] == 1500.1


def test_live_run_as_a_simulator_result() -> None:
    result = live_result(_run())
    inst = result.instances.set_index("instance_id")
    assert inst["created_ms"].tolist() == pytest.approx([0.2, 0.3])       # start - cold start
    assert inst["ready_ms"].tolist() == pytest.approx([4.2, 5.3])
    # instance 0 alive at the end (the horizon, the last completion); instance 1 killed when its
    # keep-alive ran out: the poll at 1200 + 100 ms left
    assert inst["died_ms"].tolist() == pytest.approx([1521.6, 1300.0])
    assert inst["invocations"].tolist() == [2, 1]
    assert inst["busy_ms"].tolist() == pytest.approx([1001.123 + 21.5, 1001.123])
    s = summarize(result)
    assert (s["served"], s["rejected"], s["cold_starts"]) == (3, 1, 2)
    alive_ms = (1521.6 - 0.2) + (1300.0 - 0.3)
    assert s["mean_instances"] == pytest.approx(alive_ms / (1521.6 - 0.2))   # observed from the first arrival
    assert s["peak_instances"] == 2


def test_a_run_without_the_router_trace_is_named() -> None:
    run = _run()
    run.records = run.records.drop(columns=["router_start_ms"])
    with pytest.raises(LoadError, match="router trace"):
        live_result(run)


def test_policy_fallbacks_are_read_from_the_router_metrics() -> None:
    """A user policy's decisions answered by the base policy (deadline overruns) make a live run
    something the simulator never does; wl load reads their counts from /metrics."""
    from wl.loop.load import _policy_fallbacks

    class Client:
        def metrics(self) -> str:
            return ('# HELP wl_router_policy_overruns_total ...\n'
                    'wl_router_policy_overruns_total{decision="route"} 3.0\n'
                    'wl_router_policy_overruns_total{decision="on_idle"} 2.0\n'
                    'wl_router_policy_busy_fallbacks_total{decision="route"} 7.0\n'
                    'wl_router_policy_slow 0.0\n')

    assert _policy_fallbacks(Client()) == {"overruns": 5, "busy_fallbacks": 7}
