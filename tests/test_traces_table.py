"""The canonical trace table: validation errors, reading, writing, round trips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wlsim.traces import CANONICAL_COLUMNS, TraceError, read_trace, validate, write_trace

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
GOOD_CSV = """app,function,arrival_ms,duration_ms,memory_mb
a,f,0,10,128
a,f,5,12,128
b,g,7,3.5,256
"""


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Same columns, dtypes and values (pd.testing compares categoricals element by element,
    which takes seconds on these tables)."""
    assert list(a.columns) == list(b.columns)
    assert a.dtypes.to_dict() == b.dtypes.to_dict()
    assert a.equals(b)


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def table(**overrides) -> pd.DataFrame:
    data = {"app": ["a", "a", "b"], "function": ["f", "f", "g"], "arrival_ms": [0.0, 5.0, 7.0],
            "duration_ms": [10.0, 12.0, 3.5], "memory_mb": [128.0, 128.0, 256.0]}
    data.update(overrides)
    return pd.DataFrame(data)


def test_good_csv_reads_with_canonical_dtypes(tmp_path):
    df = read_trace(write(tmp_path, GOOD_CSV))
    assert list(df.columns) == list(CANONICAL_COLUMNS)
    assert isinstance(df["app"].dtype, pd.CategoricalDtype)
    assert isinstance(df["function"].dtype, pd.CategoricalDtype)
    assert df["arrival_ms"].dtype == np.float64 and df["memory_mb"].dtype == np.float64
    assert df["function"].tolist() == ["f", "f", "g"]
    assert df["duration_ms"].tolist() == [10.0, 12.0, 3.5]


# ------------------------------------------------------------------ every bad-input case

@pytest.mark.parametrize("text, row, line, column, words", [
    # missing column (no row)
    ("app,function,arrival_ms,memory_mb\na,f,0,128\n", None, None, "duration_ms", "missing column"),
    # NaN duration: an empty cell and a literal NaN
    ("app,function,arrival_ms,duration_ms,memory_mb\na,f,0,10,128\na,f,5,,128\n", 2, 3, "duration_ms",
     "missing or NaN"),
    ("app,function,arrival_ms,duration_ms,memory_mb\na,f,0,NaN,128\n", 1, 2, "duration_ms", "NaN"),
    # negative duration
    ("app,function,arrival_ms,duration_ms,memory_mb\na,f,0,10,128\na,f,1,2,128\na,f,2,-3,128\n",
     3, 4, "duration_ms", "negative"),
    # non-numeric duration
    ("app,function,arrival_ms,duration_ms,memory_mb\na,f,0,fast,128\n", 1, 2, "duration_ms", "not a number"),
    # unsorted arrivals
    ("app,function,arrival_ms,duration_ms,memory_mb\na,f,0,1,128\na,f,9,1,128\nb,g,4,1,128\n",
     3, 4, "arrival_ms", "not sorted"),
    # non-positive memory
    ("app,function,arrival_ms,duration_ms,memory_mb\na,f,0,1,128\na,f,1,1,0\n", 2, 3, "memory_mb", "positive"),
    # negative arrival
    ("app,function,arrival_ms,duration_ms,memory_mb\na,f,-1,1,128\n", 1, 2, "arrival_ms", "negative"),
    # missing function name
    ("app,function,arrival_ms,duration_ms,memory_mb\na,f,0,1,128\na,,1,1,128\n", 2, 3, "function", "missing"),
    # bad payload
    ("app,function,arrival_ms,duration_ms,memory_mb,payload_bytes\na,f,0,1,128,1.5\n", 1, 2, "payload_bytes",
     "integer"),
    # non-numeric extra feature column
    ("app,function,arrival_ms,duration_ms,memory_mb,tier\na,f,0,1,128,gold\n", 1, 2, "tier", "numeric"),
])
def test_bad_csv_names_file_row_and_column(tmp_path, text, row, line, column, words):
    path = write(tmp_path, text)
    with pytest.raises(TraceError) as e:
        read_trace(path)
    err = e.value
    assert isinstance(err, ValueError)
    assert err.row == row and err.line == line and err.column == column
    message = str(err)
    assert str(path) in message and f"'{column}'" in message and words in message
    if row is not None:
        assert f"row {row} (line {line})" in message


def test_empty_table(tmp_path):
    path = write(tmp_path, "app,function,arrival_ms,duration_ms,memory_mb\n")
    with pytest.raises(TraceError, match="empty trace") as e:
        read_trace(path)
    assert str(path) in str(e.value)


def test_empty_file(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(TraceError, match="empty file") as e:
        read_trace(path)
    assert str(path) in str(e.value)


def test_nonexistent_file(tmp_path):
    path = tmp_path / "nope.parquet"
    with pytest.raises(TraceError, match="no such file") as e:
        read_trace(path)
    assert str(path) in str(e.value)


def test_garbage_csv_text(tmp_path):
    path = write(tmp_path, 'this is "not, a trace\n1,2,3,4,5,6\n"\x00\x00,,\n')
    with pytest.raises(TraceError) as e:
        read_trace(path)
    assert str(path) in str(e.value)


def test_garbage_csv_binary(tmp_path):
    path = tmp_path / "junk.csv"
    path.write_bytes(bytes(np.random.default_rng(1).integers(128, 256, 4000, dtype=np.uint8)))
    with pytest.raises(TraceError, match="cannot read") as e:
        read_trace(path)
    assert str(path) in str(e.value)


def test_csv_with_wrong_columns_is_missing_columns(tmp_path):
    path = write(tmp_path, "x,y\n1,2\n")
    with pytest.raises(TraceError, match="missing columns 'app', 'function'"):
        read_trace(path)


def test_garbage_parquet(tmp_path):
    path = tmp_path / "junk.parquet"
    path.write_bytes(b"PAR1 definitely not parquet")
    with pytest.raises(TraceError, match="cannot read as Parquet") as e:
        read_trace(path)
    assert str(path) in str(e.value)


def test_unsupported_extension(tmp_path):
    path = write(tmp_path, GOOD_CSV, "t.json")
    with pytest.raises(TraceError, match="unsupported trace format"):
        read_trace(path)


def test_validate_dataframe_errors_name_source():
    with pytest.raises(TraceError, match=r"mine\.csv, row 2, column 'duration_ms': duration_ms is missing or NaN"):
        validate(table(duration_ms=[1.0, np.nan, 2.0]), "mine.csv")
    with pytest.raises(TraceError, match=r"mine\.csv, row 3, column 'arrival_ms'"):
        validate(table(arrival_ms=[0.0, 5.0, 4.0]), "mine.csv")
    with pytest.raises(TraceError, match=r"mine\.csv, row 1, column 'duration_ms': duration_ms is infinite"):
        validate(table(duration_ms=[np.inf, 1.0, 2.0]), "mine.csv")
    with pytest.raises(TraceError, match="empty trace"):
        validate(table().iloc[:0], "mine.csv")


def test_validate_normalises_order_and_types():
    df = table(payload_bytes=[10.0, 20.0, 30.0], cpu=[0.5, 0.25, 1.0])[
        ["cpu", "memory_mb", "payload_bytes", "function", "app", "duration_ms", "arrival_ms"]]
    out = validate(df, "x")
    assert list(out.columns) == list(CANONICAL_COLUMNS) + ["payload_bytes", "cpu"]
    assert out["payload_bytes"].dtype == np.int64
    assert out["payload_bytes"].tolist() == [10, 20, 30]
    assert out["cpu"].tolist() == [0.5, 0.25, 1.0]


# ------------------------------------------------------------------ writing and round trips

def rich_table(n: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    fn = rng.integers(0, 7, n)
    return validate(pd.DataFrame({
        "app": [f"app{i % 3}" for i in fn],
        "function": [f"fn{i}" for i in fn],
        "arrival_ms": np.sort(rng.uniform(0, 1e7, n)),
        "duration_ms": rng.exponential(123.456, n),
        "memory_mb": rng.choice([128.0, 333.3], n),
        "payload_bytes": rng.integers(0, 10**9, n),
        "priority": rng.random(n) / 3,
    }), "rich")


@pytest.mark.parametrize("name", ["t.parquet", "t.csv", "t.csv.gz", "t.pq"])
def test_round_trip_is_exact(tmp_path, name):
    df = rich_table()
    path = write_trace(df, tmp_path / "sub" / name)
    back = read_trace(path)
    assert_same_table(back, df)
    assert [p.name for p in path.parent.iterdir()] == [name]  # no temp file left behind


def test_bad_table_is_not_written_and_old_file_survives(tmp_path):
    path = write_trace(table(), tmp_path / "t.parquet")
    before = path.read_bytes()
    with pytest.raises(TraceError, match="negative duration_ms"):
        write_trace(table(duration_ms=[1.0, -1.0, 2.0]), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]
    with pytest.raises(TraceError, match="unsupported output format"):
        write_trace(table(), tmp_path / "t.txt")
    assert not (tmp_path / "t.txt").exists()


def test_minute_window_on_a_canonical_trace(tmp_path):
    df = table(arrival_ms=[0.0, 61_000.0, 130_000.0])
    path = write_trace(df, tmp_path / "t.parquet")
    second = read_trace(path, start_minute=2, end_minute=2)
    assert second["arrival_ms"].tolist() == [1000.0]
    assert read_trace(path, start_minute=2)["arrival_ms"].tolist() == [1000.0, 70_000.0]
    assert list(second["function"].cat.categories) == ["f"]  # g no longer occurs
    with pytest.raises(TraceError, match="no invocations in minutes 5"):
        read_trace(path, start_minute=5)


def test_million_rows_stay_small():
    n = 1_000_000
    df = validate(pd.DataFrame({
        "app": np.repeat([f"app{i}" for i in range(100)], n // 100),
        "function": np.repeat([f"fn{i}" for i in range(100)], n // 100),
        "arrival_ms": np.arange(n, dtype=np.float64),
        "duration_ms": np.ones(n), "memory_mb": np.full(n, 128.0)}), "big")
    # 3 float64 columns = 24 MB; the two name columns must add little (categorical codes).
    assert df.memory_usage(deep=True).sum() < 27e6


def test_trace_cli_module_does_not_import_pandas():
    code = "import sys, wlsim.traces.cli, wlsim.traces; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert out.stdout.strip() == "False"


def test_public_api_exports():
    from wlsim import traces

    for name in ("TraceError", "CANONICAL_COLUMNS", "validate", "read_trace", "write_trace",
                 "load_azure2019", "load_azure2021", "poisson", "diurnal", "mmpp", "payload_driven"):
        assert name in traces.__all__ and getattr(traces, name) is not None
    assert traces.CANONICAL_COLUMNS == ("app", "function", "arrival_ms", "duration_ms", "memory_mb")
    assert issubclass(traces.TraceError, ValueError)


def test_a_canonical_csv_named_like_an_azure_file_is_read_as_canonical(tmp_path):
    for name in ("experiment_run.csv", "x_inv.csv", "y_mem.csv"):
        assert len(read_trace(write(tmp_path, GOOD_CSV, name))) == 3
