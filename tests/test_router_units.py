"""In-process checks of the router's pieces that need no servers: the live-policy rule, the
recorded trace's format, settings, the views' types and the small HTTP helpers."""

from __future__ import annotations

import csv
import gc
import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from policies.features import FunctionStats
from policies.interface import FunctionView, InstanceView
from policies.registry import PolicySpecError
from wlruntime.config import ConfigError, load_settings
from wlruntime.router.client import metric_value
from wlruntime.router.core import NodeRef, _ms, load_live_policy
from wlruntime.router.server import _arn, _metadata, _retry_after_s
from wlruntime.router.state import Function, Instance
from wlruntime.router.trace import COLUMNS, Outcome, TraceRecorder, outcome

pytestmark = pytest.mark.unit


def test_live_router_refuses_offline_policies_and_loads_the_rest() -> None:
    with pytest.raises(PolicySpecError, match="future"):
        load_live_policy("oracle")
    policy = load_live_policy("fixed_ttl:ttl_ms=5000")
    assert policy.describe() == {"name": "fixed_ttl", "ttl_ms": 5000.0}
    with pytest.raises(PolicySpecError, match="unknown policy"):
        load_live_policy("no_such_policy")


def test_trace_is_the_canonical_table_sorted_by_arrival(tmp_path: Path) -> None:
    trace = TraceRecorder(max_rows=3)
    trace.record("a", "f", 30.0, 1.5, 16, 10)
    trace.record("a", "f", 10.0, 2.25, 16, 0)
    trace.record("b", "g", 20.0, 3.0, 64, 5)
    trace.record("b", "g", 5.0, 4.0, 64, 7)      # past max_rows: the oldest row is dropped
    assert len(trace) == 3 and trace.dropped == 1
    rows = list(csv.reader(io.StringIO(trace.to_csv().decode())))
    assert tuple(rows[0]) == COLUMNS
    assert [r[2] for r in rows[1:]] == ["5.000", "10.000", "20.000"]
    path = trace.write(tmp_path / "t.parquet")
    table = pq.read_table(path)
    assert table.column_names == list(COLUMNS)
    assert table.column("arrival_ms").to_pylist() == [5.0, 10.0, 20.0]
    assert table.column("payload_bytes").to_pylist() == [7, 0, 5]
    with pytest.raises(ValueError, match=r"t\.json"):
        trace.write(tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()


def test_trace_rows_with_outcomes_are_read_back_and_left_to_the_collector() -> None:
    trace = TraceRecorder()
    trace.add("a", "f", 10.0, 2.5, 16.0, 4, None, True, 0.5, 12.0, 2.0, 22.5, 25.0, "n1", "ok")
    trace.record("a", "f", 30.0, 1.5, 16.0, 0, cold=False, wait_ms=0.0, cold_start_ms=0.0, exec_ms=1.0,
                 start_ms=30.0, end_ms=31.5, node="n2", status="timeout")
    trace.record("a", "f", 40.0, 1.0, 16.0, 0)   # no outcome
    assert [outcome(row) for row in trace.rows] == [
        Outcome(True, 0.5, 12.0, 2.0, 22.5, 25.0, "n1", "ok"),
        Outcome(False, 0.0, 0.0, 1.0, 30.0, 31.5, "n2", "timeout"), Outcome()]
    rows = list(csv.DictReader(io.StringIO(trace.to_csv().decode())))
    assert (rows[0]["cold"], rows[0]["cold_start_ms"], rows[0]["node"], rows[1]["status"], rows[2]["cold"]) == (
        "1", "12.000", "n1", "timeout", "")
    # The recorder keeps up to a million rows: each must be a tuple the garbage collector stops
    # tracking (numbers and strings only, no tuple subclass inside), not one it walks forever.
    gc.collect()
    assert not any(gc.is_tracked(row) for row in trace.rows)


def test_router_settings_from_env_and_errors_name_the_key() -> None:
    s = load_settings(env={"WL_ROUTER_NODES": "127.0.0.1:7710, 127.0.0.1:7711", "WL_ROUTER_POLICY": "kpa",
                           "WL_NODE_COUNT": "2"})
    assert s.router.nodes == ["127.0.0.1:7710", "127.0.0.1:7711"]
    assert s.router.policy == "kpa" and s.node.count == 2 and s.router.scheduler_port == 7702
    with pytest.raises(ConfigError, match="WL_ROUTER_SCHEDULER_PORT"):
        load_settings(env={"WL_ROUTER_SCHEDULER_PORT": "99999"})


def test_router_records_are_the_policy_views() -> None:
    fn = Function("echo", 3, {"memory_mb": 32, "concurrency": 5, "timeout_ms": 700, "max_payload_bytes": 99})
    assert isinstance(fn, FunctionView) and isinstance(fn.stats, FunctionStats)
    assert (fn.memory_mb, fn.max_instances, fn.timeout_ms, fn.max_payload_bytes) == (32.0, 5, 700, 99)
    node = NodeRef.__new__(NodeRef)   # no channel needed for a record
    node.name = "node-1"
    inst = Instance(1, fn, node, "echo-x-1", created_ms=5.0)
    assert isinstance(inst, InstanceView)
    assert (inst.node, inst.memory_mb, inst.concurrency, inst.state, inst.version) == ("node-1", 32.0, 1, "starting", 3)
    fn.update(4, {"memory_mb": 64})
    assert fn.version == 4 and fn.memory_mb == 64.0 and inst.version == 3


def test_http_helpers() -> None:
    scope = {"headers": [(b"x-wl-meta-user", b"ada"), (b"content-type", b"text/plain"), (b"x-other", b"no")]}
    assert _metadata(scope, "rid") == {"user": "ada", "content_type": "text/plain", "aws_request_id": "rid"}
    assert _arn("echo") == "arn:aws:lambda:local:000000000000:function:echo"
    assert _arn("echo", "2").endswith(":function:echo:2")
    assert _retry_after_s(1) == b"1" and _retry_after_s(1001) == b"2"
    assert _ms(0.2) == 1 and _ms(1500.2) == 1501 and _ms(1e12) == 2**32 - 1


def test_metric_value_sums_matching_samples() -> None:
    text = ('# HELP x\nwl_x_total{function="a",outcome="ok"} 3.0\nwl_x_total{function="b",outcome="ok"} 4.0\n'
            'wl_x_total{function="a",outcome="timeout"} 1.0\nwl_x_created{function="a"} 17.0\n')
    assert metric_value(text, "wl_x_total") == 8.0
    assert metric_value(text, "wl_x_total", function="a") == 4.0
    assert metric_value(text, "wl_x_total", outcome="ok", function="b") == 4.0
    assert metric_value(text, "wl_y_total") == 0.0
