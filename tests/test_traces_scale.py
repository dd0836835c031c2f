"""Traces at scale: the Azure-like generator, chunked Parquet write/read, bounded-memory replay."""

import numpy as np
import pandas as pd
import pytest

from wlsim.engine import simulate
from wlsim.result import read_streamed
from wlsim.traces import TraceError, validate
from wlsim.traces.stream import iter_trace, read_apps, scan, stream_replay, write_chunks
from wlsim.traces.synthetic import azure_like, azure_like_chunks

pytestmark = pytest.mark.integration  # million-row traces


def test_generator_chunks_form_one_sorted_valid_trace_of_the_asked_size():
    chunks = list(azure_like_chunks(300, 20_000, 2.0, seed=3))
    assert len(chunks) == 12                      # one per 10 simulated minutes
    whole = validate(pd.concat(chunks, ignore_index=True), "generated")   # sorted, canonical
    assert abs(len(whole) - 20_000) < 5 * np.sqrt(20_000)
    assert whole["arrival_ms"].max() < 2 * 3_600_000
    per_fn = whole["function"].value_counts()
    assert per_fn.iloc[0] > 20 * per_fn.median()   # skewed: a few functions take most calls
    # each function lives in one application with one memory size
    assert (whole.groupby("function", observed=True)["app"].nunique() == 1).all()
    assert (whole.groupby("app", observed=True)["memory_mb"].nunique() == 1).all()
    again = azure_like(300, 20_000, 2.0, seed=3)
    pd.testing.assert_frame_equal(whole, again)    # seeded


def test_write_then_read_in_batches(tmp_path):
    path = tmp_path / "t.parquet"
    rows = write_chunks(azure_like_chunks(200, 20_000, 1.0, seed=1), path)
    whole = azure_like(200, 20_000, 1.0, seed=1)
    assert rows == len(whole)
    batches = list(iter_trace(path, batch_rows=3000))
    assert max(len(b) for b in batches) <= 3000 and len(batches) >= rows // 3000
    back = pd.concat(batches, ignore_index=True)
    np.testing.assert_array_equal(back["arrival_ms"], whole["arrival_ms"])
    assert back["function"].astype(str).tolist() == whole["function"].astype(str).tolist()
    info = scan(path, batch_rows=3000)
    assert info.rows == rows and info.functions == whole["function"].nunique()
    assert sum(info.app_rows.values()) == rows
    some = sorted(info.app_rows)[:5]
    part, row_ids = read_apps(path, some, batch_rows=3000)
    assert set(part["app"].astype(str)) == set(some) and len(part) == sum(info.app_rows[a] for a in some)
    np.testing.assert_array_equal(part["arrival_ms"].to_numpy(), whole["arrival_ms"].to_numpy()[row_ids])


@pytest.mark.parametrize("spec", ["fixed_ttl:ttl_ms=60000", "hybrid_histogram", "default"])
def test_stream_replay_in_one_pass_equals_one_in_memory_run(tmp_path, spec):
    path = tmp_path / "t.parquet"
    write_chunks(azure_like_chunks(100, 6_000, 1.0, seed=2), path)
    seen = []
    run = stream_replay(path, spec, tmp_path / "out", batch_rows=1000, rows_per_part=800,
                        progress=lambda done, total: seen.append((done, total)))
    one = simulate(pd.read_parquet(path), spec)
    req, inst = read_streamed(tmp_path / "out")
    pd.testing.assert_frame_equal(req, one.requests)
    pd.testing.assert_frame_equal(inst, one.instances)
    assert run.horizon_ms == one.horizon_ms and run.request_parts >= 7
    assert run.cold == int(one.requests["cold"].sum()) and run.invocations == len(one.requests)
    assert seen[-1] == (len(one.requests), len(one.requests))


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(TraceError, match="invocations must be >= 1"):
        next(azure_like_chunks(10, 0))
    with pytest.raises(TraceError, match="no such file"):
        next(iter_trace(tmp_path / "missing.parquet"))
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(bad)
    with pytest.raises(TraceError, match="missing column"):
        scan(bad)
