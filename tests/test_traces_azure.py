"""Azure Functions 2019 and 2021 loaders on the bundled real traces."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wlsim.traces import TraceError, load_azure2019, load_azure2021, read_trace
from wlsim.traces.azure import PERCENTILE_COLUMNS, PERCENTILES
from wlsim.traces.table import DEFAULT_MEMORY_MB

pytestmark = pytest.mark.unit

TRACES = Path(__file__).resolve().parents[1] / "traces"
AZ19 = TRACES / "azure2019"
AZ21 = TRACES / "azure2021" / "Azure2021_200.csv"
TOTALS = {"10": 69_586, "40": 143_189}


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Same columns, dtypes and values (pd.testing compares categoricals element by element,
    which takes seconds on these tables)."""
    assert list(a.columns) == list(b.columns)
    assert a.dtypes.to_dict() == b.dtypes.to_dict()
    assert a.equals(b)


def counts_by_minute(df: pd.DataFrame, names: pd.DataFrame, n_minutes: int) -> np.ndarray:
    """Rebuild the (function row, minute) count matrix from the loaded invocations."""
    row_of = {name: i for i, name in enumerate(names["function"])}
    rows = np.array([row_of[c] for c in df["function"].cat.categories])[df["function"].cat.codes]
    minutes = (df["arrival_ms"].to_numpy() // 60_000).astype(int)
    assert minutes.min() >= 0 and minutes.max() < n_minutes
    out = np.zeros((len(names), n_minutes), dtype=np.int64)
    np.add.at(out, (rows, minutes), 1)
    return out


@pytest.mark.parametrize("prefix", ["10", "40"])
def test_counts_equal_azure_per_minute_counts_exactly(prefix):
    inv = pd.read_csv(AZ19 / f"{prefix}_inv.csv")
    expected = inv[[f"minute_{m}" for m in range(1, 1441)]].to_numpy()
    df, names = load_azure2019(AZ19 / prefix, seed=7, return_names=True)
    assert len(df) == TOTALS[prefix] == expected.sum()
    assert list(names["HashFunction"]) == list(inv["HashFunction"])
    np.testing.assert_array_equal(counts_by_minute(df, names, 1440), expected)
    assert df["arrival_ms"].is_monotonic_increasing
    assert df["arrival_ms"].iloc[-1] < 1440 * 60_000


def test_minute_range_counts_and_rebasing():
    inv = pd.read_csv(AZ19 / "40_inv.csv")
    first, second = (load_azure2019(AZ19 / "40", start_minute=s, end_minute=e, return_names=True)
                     for s, e in ((1, 720), (721, 1440)))
    for (df, names), cols in ((first, range(1, 721)), (second, range(721, 1441))):
        expected = inv[[f"minute_{m}" for m in cols]].to_numpy()
        np.testing.assert_array_equal(counts_by_minute(df, names, 720), expected)
    assert len(first[0]) + len(second[0]) == 143_189
    # a window is that part of the full day (same seed), re-based to start at 0 (up to float rounding)
    full = load_azure2019(AZ19 / "40")
    late = full[full["arrival_ms"] >= 720 * 60_000].reset_index(drop=True)
    np.testing.assert_allclose(second[0]["arrival_ms"], late["arrival_ms"] - 720 * 60_000, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(second[0]["duration_ms"], late["duration_ms"])
    assert second[0]["function"].astype(str).tolist() == late["function"].astype(str).tolist()
    # read_trace passes the window through
    assert len(read_trace(AZ19 / "40", start_minute=721, end_minute=1440)) == len(second[0])
    with pytest.raises(TraceError, match="outside the file's minutes"):
        load_azure2019(AZ19 / "40", start_minute=700, end_minute=1500)


def test_trigger_column_variant_loads_identically(tmp_path):
    inv = pd.read_csv(AZ19 / "10_inv.csv")
    inv = inv.copy()
    inv.insert(3, "Trigger", ["http", "timer", "queue", "event", "storage"] * 2)
    inv.to_csv(tmp_path / "t_inv.csv", index=False)
    shutil.copy(AZ19 / "10_run.csv", tmp_path / "t_run.csv")
    shutil.copy(AZ19 / "10_mem.csv", tmp_path / "t_mem.csv")
    with_trigger, names = load_azure2019(tmp_path / "t", seed=3, return_names=True)
    plain = load_azure2019(AZ19 / "10", seed=3)
    assert_same_table(with_trigger, plain)
    assert list(names["Trigger"]) == list(inv["Trigger"])
    assert len(read_trace(tmp_path)) == 69_586  # a folder holding one trace


def test_same_seed_same_trace_different_seed_different():
    a, b, c = (load_azure2019(AZ19 / "10", seed=s) for s in (1, 1, 2))
    assert_same_table(a, b)
    assert len(a) == len(c)
    assert not np.array_equal(a["arrival_ms"].to_numpy(), c["arrival_ms"].to_numpy())
    assert not np.array_equal(np.sort(a["duration_ms"].to_numpy()), np.sort(c["duration_ms"].to_numpy()))


def test_durations_follow_each_functions_percentiles():
    run = pd.read_csv(AZ19 / "40_run.csv").set_index("HashFunction")
    df, names = load_azure2019(AZ19 / "40", seed=0, return_names=True)
    assert (names["duration_source"] == "run").all()
    for _, fn in names.iterrows():
        pct = run.loc[fn["HashFunction"], list(PERCENTILE_COLUMNS)].to_numpy(dtype=float)
        d = df.loc[df["function"] == fn["function"], "duration_ms"].to_numpy()
        assert len(d) == fn["invocations"]
        assert d.min() >= pct[0] and d.max() <= pct[-1]
        # The inverse CDF passes through every percentile: the share of samples below the
        # k-th percentile is k% (within 4.5 binomial standard errors), where it is not tied.
        for k in range(1, len(PERCENTILES) - 1):
            if pct[k - 1] < pct[k] < pct[k + 1]:
                p = PERCENTILES[k] / 100
                assert abs(np.mean(d <= pct[k]) - p) <= 4.5 * np.sqrt(p * (1 - p) / len(d)) + 1e-9


def test_memory_is_the_apps_average_and_missing_apps_get_the_default(tmp_path):
    mem = pd.read_csv(AZ19 / "10_mem.csv")
    df, names = load_azure2019(AZ19 / "10", return_names=True)
    expected = dict(zip(mem["HashApp"], mem["AverageAllocatedMb"].astype(float)))
    for _, fn in names.iterrows():
        got = df.loc[df["function"] == fn["function"], "memory_mb"].unique()
        assert got.tolist() == [expected[fn["HashApp"]]]
    # drop one app from the memory file
    shutil.copy(AZ19 / "10_inv.csv", tmp_path / "m_inv.csv")
    shutil.copy(AZ19 / "10_run.csv", tmp_path / "m_run.csv")
    mem.iloc[1:].to_csv(tmp_path / "m_mem.csv", index=False)
    df2, names2 = load_azure2019(tmp_path / "m", return_names=True)
    missing = names2.loc[names2["HashApp"] == mem["HashApp"].iloc[0], "function"].item()
    assert df2.loc[df2["function"] == missing, "memory_mb"].unique().tolist() == [DEFAULT_MEMORY_MB]


def test_short_names_are_unique_prefixes_and_map_back():
    df, names = load_azure2019(AZ19 / "40", return_names=True)
    assert names["function"].is_unique
    assert all(h.startswith(s) and len(s) == 8 for s, h in zip(names["function"], names["HashFunction"]))
    assert set(df["function"].cat.categories) == set(names["function"])


def test_function_missing_from_run_gets_typical_distribution(tmp_path):
    shutil.copy(AZ19 / "10_inv.csv", tmp_path / "r_inv.csv")
    shutil.copy(AZ19 / "10_mem.csv", tmp_path / "r_mem.csv")
    run = pd.read_csv(AZ19 / "10_run.csv")
    run.iloc[1:].to_csv(tmp_path / "r_run.csv", index=False)
    df, names = load_azure2019(tmp_path / "r", return_names=True)
    assert len(df) == 69_586
    assert names["duration_source"].tolist() == ["typical"] + ["run"] * 9


def test_every_way_to_name_an_azure2019_trace():
    base = len(read_trace(AZ19 / "10"))
    for form in (AZ19 / "10_inv.csv", AZ19 / "10_run.csv", str(AZ19 / "10")):
        assert len(read_trace(form)) == base
    with pytest.raises(TraceError, match="several Azure 2019 traces"):
        read_trace(AZ19)


@pytest.mark.parametrize("damage, words, column", [
    (lambda inv: inv.drop(columns=["HashApp"]), "missing column 'HashApp'", "HashApp"),
    (lambda inv: inv.drop(columns=[f"minute_{m}" for m in range(1, 1441)]), "no minute_N columns", "minute_1"),
    (lambda inv: inv.assign(minute_5=[1.5] + [0] * 9), "integer count", "minute_5"),
    (lambda inv: inv.assign(minute_9=[0, np.nan] + [0] * 8), "integer count", "minute_9"),
    (lambda inv: inv.assign(minute_3=[0, 0, -1] + [0] * 7), "integer count", "minute_3"),
])
def test_bad_azure2019_inv_names_file_row_column(tmp_path, damage, words, column):
    damage(pd.read_csv(AZ19 / "10_inv.csv")).to_csv(tmp_path / "b_inv.csv", index=False)
    shutil.copy(AZ19 / "10_run.csv", tmp_path / "b_run.csv")
    shutil.copy(AZ19 / "10_mem.csv", tmp_path / "b_mem.csv")
    with pytest.raises(TraceError, match=words) as e:
        load_azure2019(tmp_path / "b")
    assert e.value.column == column and "b_inv.csv" in str(e.value)


def test_bad_azure2019_run_and_missing_files(tmp_path):
    shutil.copy(AZ19 / "10_inv.csv", tmp_path / "b_inv.csv")
    shutil.copy(AZ19 / "10_mem.csv", tmp_path / "b_mem.csv")
    with pytest.raises(TraceError, match=r"b_run\.csv: no such file"):
        load_azure2019(tmp_path / "b")
    run = pd.read_csv(AZ19 / "10_run.csv")
    run.drop(columns=["percentile_Average_50"]).to_csv(tmp_path / "b_run.csv", index=False)
    with pytest.raises(TraceError, match="missing column 'percentile_Average_50'"):
        load_azure2019(tmp_path / "b")
    run.assign(percentile_Average_99=["x"] + [1] * 9).to_csv(tmp_path / "b_run.csv", index=False)
    with pytest.raises(TraceError, match=r"b_run.csv, row 1 \(line 2\), column 'percentile_Average_99'"):
        load_azure2019(tmp_path / "b")


# ---------------------------------------------------------------------------------- 2021

def test_azure2021_rows_order_and_times():
    raw = pd.read_csv(AZ21)
    df, names = load_azure2021(AZ21, return_names=True)
    assert len(df) == 199 == len(raw)
    assert df["arrival_ms"].is_monotonic_increasing and df["arrival_ms"].iloc[0] == 0.0
    start = raw["end_timestamp"] - raw["duration"]
    order = np.argsort(start.to_numpy(), kind="stable")
    np.testing.assert_allclose(df["arrival_ms"], (start.to_numpy()[order] - start.min()) * 1000, atol=1e-6)
    np.testing.assert_allclose(df["duration_ms"], raw["duration"].to_numpy()[order] * 1000)
    full = dict(zip(names["function"], names["func"]))
    assert [full[f] for f in df["function"].astype(str)] == raw["func"].to_numpy()[order].tolist()
    assert df["function"].nunique() == 31 and df["app"].nunique() == 13
    assert (df["memory_mb"] == DEFAULT_MEMORY_MB).all()
    assert_same_table(read_trace(AZ21), df)


def test_azure2021_bad_rows(tmp_path):
    raw = pd.read_csv(AZ21)
    raw.iloc[:5].drop(columns=["duration"]).to_csv(tmp_path / "a.csv", index=False)
    raw.iloc[:5].drop(columns=["duration"]).assign(duration_s=1).to_csv(tmp_path / "b.csv", index=False)
    bad = raw.iloc[:5].copy()
    bad.loc[3, "duration"] = -1
    bad.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(TraceError, match="missing column"):
        load_azure2021(tmp_path / "a.csv")
    with pytest.raises(TraceError, match=r"c\.csv, row 4 \(line 5\), column 'duration'"):
        read_trace(tmp_path / "c.csv")
