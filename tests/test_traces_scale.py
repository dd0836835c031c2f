"""Traces at scale: the Azure-like generator, chunked Parquet write/read, bounded-memory replay."""

import numpy as np
import pandas as pd
import pytest

from wlsim.engine import simulate
from wlsim.traces import TraceError, validate
from wlsim.traces.stream import iter_trace, pack_apps, read_apps, scan, stream_replay, write_chunks
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


def test_pack_apps_bounds_shards():
    shards = pack_apps({"a": 50, "b": 30, "c": 30, "d": 10, "huge": 500}, max_rows=60)
    assert ["huge"] in shards                     # too big to split: alone
    for s in shards:
        if s != ["huge"]:
            assert sum({"a": 50, "b": 30, "c": 30, "d": 10}[x] for x in s) <= 60
    assert sorted(x for s in shards for x in s) == ["a", "b", "c", "d", "huge"]


@pytest.mark.parametrize("spec", ["fixed_ttl:ttl_ms=60000", "hybrid_histogram"])
def test_stream_replay_by_shards_equals_one_run(tmp_path, spec):
    path = tmp_path / "t.parquet"
    write_chunks(azure_like_chunks(100, 6_000, 1.0, seed=2), path)
    run = stream_replay(path, spec, tmp_path / "out", max_rows=1500, batch_rows=1000)
    assert run.shards >= 4
    one = simulate(pd.read_parquet(path), spec)
    req = pd.read_parquet(tmp_path / "out" / "requests").sort_values("request_id").reset_index(drop=True)
    cols = ["request_id", "arrival_ms", "wait_ms", "cold", "cold_start_ms", "end_ms", "rejected"]
    pd.testing.assert_frame_equal(req[cols], one.requests[cols])
    inst = pd.read_parquet(tmp_path / "out" / "instances")
    assert run.horizon_ms == one.horizon_ms
    assert inst["idle_ms"].sum() == pytest.approx(one.instances["idle_ms"].sum())
    assert run.cold_starts == int(one.requests["cold"].sum())


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(TraceError, match="invocations must be >= 1"):
        next(azure_like_chunks(10, 0))
    with pytest.raises(TraceError, match="no such file"):
        next(iter_trace(tmp_path / "missing.parquet"))
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(bad)
    with pytest.raises(TraceError, match="missing column"):
        scan(bad)
