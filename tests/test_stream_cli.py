"""``wl sim replay --stream``: one bounded-memory pass over a Parquet trace through typer's
CliRunner, results as Parquet parts equal to the in-memory replay's."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from wlsim.cli import app
from wlsim.engine import simulate
from wlsim.result import read_streamed
from wlsim.traces.stream import write_chunks
from wlsim.traces.synthetic import azure_like_chunks

pytestmark = pytest.mark.unit   # in-process, files only

runner = CliRunner()


@pytest.fixture(scope="module")
def trace_parquet(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "t.parquet"
    write_chunks(azure_like_chunks(50, 5_000, 1.0, seed=4), path)
    return path


def test_replay_stream_writes_parts_and_summary(tmp_path, trace_parquet):
    out = tmp_path / "out"
    r = runner.invoke(app, ["replay", "-p", "fixed_ttl", "-t", str(trace_parquet), "--stream", "-o", str(out),
                            "--json", "--no-progress"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)["summary"]
    one = simulate(pd.read_parquet(trace_parquet), "fixed_ttl")
    req, inst = read_streamed(out)
    pd.testing.assert_frame_equal(req, one.requests)
    pd.testing.assert_frame_equal(inst, one.instances)
    assert summary["invocations"] == len(one.requests) and summary["cold"] == int(one.requests.cold.sum())
    assert json.loads((out / "summary.json").read_text())["horizon_ms"] == one.horizon_ms


@pytest.mark.parametrize("extra, message", [
    (["--start-minute", "3"], "--stream replays the whole file"),
    (["-p", "oracle"], "needs the whole trace ahead"),
])
def test_replay_stream_refuses_what_it_cannot_do(tmp_path, trace_parquet, extra, message):
    args = ["replay", "-p", "fixed_ttl", "-t", str(trace_parquet), "--stream", "-o", str(tmp_path), "--no-progress"]
    r = runner.invoke(app, args + extra)
    assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output
    assert "Traceback" not in r.output


def test_replay_stream_needs_a_parquet_file(tmp_path):
    r = runner.invoke(app, ["replay", "-p", "fixed_ttl", "-t", "traces/azure2019/40", "--stream", "--no-progress"])
    assert r.exit_code == 2 and ".parquet" in r.output
