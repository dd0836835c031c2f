"""Request features end to end: X-WL-Feature headers (and boto3's ClientContext on the Lambda
path) reach the live policy as RequestView.features, bad ones get a 400 naming the problem, the
router records them as trace columns, and the simulator replaying that trace hands the same
features to the same policy."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from wl.testing import PlatformClient, start_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

BUILD = Path(__file__).resolve().parent.parent / "examples" / "build"

PRIORITY_POLICY = '''
from policies.builtin.default import ExpectedWait
from policies.interface import Reject

SEEN = []  # (request id, features) of every route decision, for the simulator half of the test


class ByPriority(ExpectedWait):
    """The default policy, except that requests with a negative ``priority`` are throttled."""
    name = "by_priority"

    def route(self, now_ms, request, fn):
        features = dict(request.features or {})
        SEEN.append((request.id, features))
        if features.get("priority", 0.0) < 0:
            return Reject(retry_after_ms=2000)
        return super().route(now_ms, request, fn)
'''


def client_context(features: dict) -> str:
    return base64.b64encode(json.dumps({"custom": {"wl_features": features}}).encode()).decode()


def test_features_reach_the_live_policy_are_recorded_and_replay_in_the_simulator(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    policy_file = tmp_path / "by_priority.py"
    policy_file.write_text(PRIORITY_POLICY)
    platform = start_platform(tmp_path / "wl", policy=f"custom:{policy_file}",
                              cache_dir=request.config.cache.mkdir("wl-node-cache"))
    try:
        wl = PlatformClient(platform)
        wl.deploy("echo", BUILD / "echo.wasm", {"memory_mb": 16})

        assert wl.invoke("echo", b"plain").output == b"plain"
        r = wl.invoke("echo", b"vip", headers={"X-WL-Feature-Priority": "2", "X-WL-Feature-Batch-Size": "12.5"})
        assert r.status == 200 and r.output == b"vip"
        r = wl.invoke("echo", b"later", headers={"X-WL-Feature-Priority": "-1"})
        assert r.status == 429 and r.error == "throttled" and r.headers["retry-after"] == "2"

        for headers, problem in (({"X-WL-Feature-Priority": "high"}, "'high' is not a finite number"),
                                 ({"X-WL-Feature-Priority": "nan"}, "not a finite number"),
                                 ({"X-WL-Feature-Arrival-Ms": "1"}, "feature name 'arrival_ms'"),
                                 ({f"X-WL-Feature-F{i}": "1" for i in range(17)}, "at most 16 features")):
            r = wl.invoke("echo", b"x", headers=headers)
            assert r.status == 400 and r.error == "bad_request" and problem in r.message, (headers, r.message)

        lam = wl.lambda_client()
        ok = lam.invoke(FunctionName="echo", Payload=b'"ctx"', ClientContext=client_context({"priority": 3}))
        assert ok["StatusCode"] == 200 and ok["Payload"].read() == b'"ctx"'
        with pytest.raises(ClientError) as throttled:
            lam.invoke(FunctionName="echo", Payload=b"{}", ClientContext=client_context({"priority": -5}))
        assert throttled.value.response["Error"]["Code"] == "TooManyRequestsException"
        with pytest.raises(ClientError) as bad:
            lam.invoke(FunctionName="echo", Payload=b"{}", ClientContext=client_context({"priority": "soon"}))
        assert bad.value.response["Error"]["Code"] == "InvalidParameterValueException"
        assert "'soon' is not a finite number" in bad.value.response["Error"]["Message"]

        # The CLI: wl invoke --feature NAME=NUMBER.
        from typer.testing import CliRunner

        from wl.cli import app

        runner = CliRunner()
        r = runner.invoke(app, ["invoke", "echo", "--data", "cli", "--feature", "priority=-2", "--url", wl.base_url])
        assert r.exit_code == 1 and "throttled" in r.stderr
        r = runner.invoke(app, ["invoke", "echo", "--data", "cli", "-F", "priority=x", "--url", wl.base_url])
        assert r.exit_code == 1 and "'x' is not a finite number" in r.stderr
        r = runner.invoke(app, ["invoke", "echo", "--feature", "priority", "--url", wl.base_url])
        assert r.exit_code == 2 and "expected NAME=NUMBER" in r.stderr

        trace_csv = tmp_path / "traffic.csv"
        trace_csv.write_bytes(wl.trace("csv"))
    finally:
        platform.stop()

    # The trace: one row per executed request, a column per feature name, empty where absent.
    lines = trace_csv.read_text().splitlines()
    assert lines[0] == ("app,function,arrival_ms,duration_ms,memory_mb,payload_bytes,"
                        "cold,wait_ms,cold_start_ms,exec_ms,start_ms,end_ms,node,status,batch_size,priority")
    assert [line.split(",")[-2:] for line in lines[1:]] == [["", ""], ["12.5", "2.0"], ["", "3.0"]]

    # Replayed in the simulator, the same policy class sees the same features per request.
    import importlib.util

    from wlsim.engine import simulate
    from wlsim.traces import read_trace

    spec = importlib.util.spec_from_file_location("by_priority_sim", policy_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = simulate(read_trace(trace_csv), module.ByPriority())
    assert result.requests["rejected"].sum() == 0
    assert [features for _, features in module.SEEN] == [{}, {"batch_size": 12.5, "priority": 2.0}, {"priority": 3.0}]
