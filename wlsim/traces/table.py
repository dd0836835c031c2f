"""The canonical per-invocation trace table: validation, reading and writing.

One row per invocation, sorted by arrival:

    app (str), function (str), arrival_ms (float64, ms from the trace start, ascending),
    duration_ms (float64 >= 0), memory_mb (float64 > 0),
    optional payload_bytes (int64 >= 0) and any other numeric feature columns.

``app`` and ``function`` are pandas categoricals so a million rows stay small; compare them
with strings as usual (``df.function == "f1"``) or use ``.cat.codes`` for dense integer ids.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from wlcommon.files import atomic_output
from wlmodel.schema import CANONICAL_COLUMNS, OPTIONAL_COLUMNS, OUTCOME_COLUMNS  # the one trace schema

DEFAULT_MEMORY_MB = 256.0  # memory of an invocation whose source trace has none (Azure 2021, missing apps)

# pandas >= 3 parses floats round-trip exactly by default (and deprecates the option).
_EXACT_FLOATS = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SUFFIXES = (".csv", ".csv.gz")


class TraceError(ValueError):
    """A trace that cannot be used. The message names the file and, when known, the row
    (1-based, header excluded; plus the file line for CSV) and the column."""

    def __init__(self, source: str | os.PathLike, problem: str, *, row: int | None = None,
                 column: str | None = None, line: int | None = None) -> None:
        self.source = str(source)
        self.problem = problem
        self.row = row
        self.column = column
        self.line = line
        where = [self.source]
        if row is not None:
            where.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(": ".join([", ".join(where), problem]))


def _row_error(source: str, problem: str, index: int, column: str,
               first_line: int | None) -> TraceError:
    """Error for the data row at 0-based position ``index``."""
    line = None if first_line is None else first_line + index
    return TraceError(source, problem, row=index + 1, column=column, line=line)


def _numeric(df: pd.DataFrame, column: str, source: str, first_line: int | None) -> np.ndarray:
    """The column as float64; a value that is not a number is an error naming its row."""
    raw = df[column]
    if pd.api.types.is_bool_dtype(raw):
        return raw.to_numpy(dtype=np.float64)
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values) & raw.notna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise _row_error(source, f"{raw.iloc[i]!r} is not a number", i, column, first_line)
    return values


def _first(mask: np.ndarray) -> int | None:
    return int(np.argmax(mask)) if mask.any() else None


def _names(df: pd.DataFrame, column: str, source: str, first_line: int | None) -> pd.Categorical:
    """The column as a categorical of non-empty strings."""
    raw = df[column]
    missing = _first(raw.isna().to_numpy())
    if missing is not None:
        raise _row_error(source, "missing name", missing, column, first_line)
    if isinstance(raw.dtype, pd.CategoricalDtype) and pd.api.types.is_string_dtype(raw.cat.categories):
        # Already compact: keep the codes (no per-row strings), list only the names that occur.
        names = pd.Categorical(raw.array).remove_unused_categories()
        blank = np.asarray(names.categories.str.strip() == "")[names.codes]
    else:
        names = pd.Categorical(raw.astype(str))
        blank = np.asarray(names.categories.str.strip() == "")[names.codes]
    empty = _first(blank)
    if empty is not None:
        raise _row_error(source, "empty name", empty, column, first_line)
    return names


def _finite_error(values: np.ndarray, i: int, column: str) -> str:
    return f"{column} is {'missing or NaN' if np.isnan(values[i]) else 'infinite'}"


def validate(df: pd.DataFrame, source: str, *, first_line: int | None = None) -> pd.DataFrame:
    """Check ``df`` against the canonical schema and return a normalised copy: canonical
    columns first (app/function categorical, times and memory float64), then payload_bytes
    (int64), then any extra numeric feature columns; a fresh RangeIndex.

    ``source`` names the file in error messages; ``first_line`` is the file line of the first
    data row (2 for a CSV with a header) so messages can point at the line as well.
    Raises TraceError on a missing column, an empty table, a non-numeric, NaN or negative
    duration, a non-positive memory, a negative, NaN or unsorted arrival, or a bad payload.
    """
    source = str(source)
    if not isinstance(df, pd.DataFrame):
        raise TraceError(source, f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in CANONICAL_COLUMNS if c not in df.columns]
    if missing:
        raise TraceError(source, f"missing column{'s' if len(missing) > 1 else ''} "
                                 f"{', '.join(repr(c) for c in missing)}; a trace needs "
                                 f"{', '.join(CANONICAL_COLUMNS)}", column=missing[0])
    if len(df) == 0:
        raise TraceError(source, "empty trace: no invocations")

    out: dict[str, object] = {
        "app": _names(df, "app", source, first_line),
        "function": _names(df, "function", source, first_line),
    }

    arrival = _numeric(df, "arrival_ms", source, first_line)
    i = _first(~np.isfinite(arrival))
    if i is not None:
        raise _row_error(source, _finite_error(arrival, i, "arrival_ms"), i,
                         "arrival_ms", first_line)
    i = _first(arrival < 0)
    if i is not None:
        raise _row_error(source, f"negative arrival_ms {arrival[i]} (ms from the trace start)", i,
                         "arrival_ms", first_line)
    i = _first(np.diff(arrival) < 0)
    if i is not None:
        raise _row_error(source, f"arrivals not sorted: arrival_ms {arrival[i + 1]} comes after "
                                 f"{arrival[i]} in the row before; sort the trace by arrival_ms",
                         i + 1, "arrival_ms", first_line)
    out["arrival_ms"] = arrival

    duration = _numeric(df, "duration_ms", source, first_line)
    i = _first(~np.isfinite(duration))
    if i is not None:
        raise _row_error(source, _finite_error(duration, i, "duration_ms"), i,
                         "duration_ms", first_line)
    i = _first(duration < 0)
    if i is not None:
        raise _row_error(source, f"negative duration_ms {duration[i]}", i, "duration_ms", first_line)
    out["duration_ms"] = duration

    memory = _numeric(df, "memory_mb", source, first_line)
    i = _first(~(np.isfinite(memory) & (memory > 0)))
    if i is not None:
        raise _row_error(source, f"memory_mb must be a positive number, got {memory[i]}", i,
                         "memory_mb", first_line)
    out["memory_mb"] = memory

    if "payload_bytes" in df.columns:
        payload = _numeric(df, "payload_bytes", source, first_line)
        i = _first(~(np.isfinite(payload) & (payload >= 0) & (payload == np.floor(payload))))
        if i is not None:
            raise _row_error(source, f"payload_bytes must be a non-negative integer, got {payload[i]}",
                             i, "payload_bytes", first_line)
        out["payload_bytes"] = payload.astype(np.int64)

    known = set(CANONICAL_COLUMNS) | set(OPTIONAL_COLUMNS)
    for column in df.columns:
        if column in known:
            continue
        name = str(column)
        raw = df[column]
        if name in OUTCOME_COLUMNS:
            out[name] = raw.to_numpy()   # a live recording's outcomes: kept, never a feature
        elif pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw):
            out[name] = raw.to_numpy()
        else:
            try:
                out[name] = _numeric(df, column, source, first_line)
            except TraceError as e:
                raise TraceError(source, f"{e.problem} (extra columns are request features and "
                                         "must be numeric)", row=e.row, column=name, line=e.line) from None
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------ reading

def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in _PARQUET_SUFFIXES + _CSV_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix.lower()


def select_minutes(df: pd.DataFrame, start_minute: int | None, end_minute: int | None,
                    source: str) -> pd.DataFrame:
    """Keep arrivals inside minutes [start_minute, end_minute] (1-based, inclusive, the Azure
    2019 convention) and measure them from the start of the window."""
    if start_minute is None and end_minute is None:
        return df
    start = 1 if start_minute is None else int(start_minute)
    if start < 1 or (end_minute is not None and int(end_minute) < start):
        raise TraceError(source, f"bad minute range {start_minute}..{end_minute} "
                                 "(minutes are 1-based and start <= end)")
    lo = (start - 1) * 60_000.0
    hi = np.inf if end_minute is None else int(end_minute) * 60_000.0
    arrival = df["arrival_ms"].to_numpy()
    keep = (arrival >= lo) & (arrival < hi)
    out = df.loc[keep].reset_index(drop=True)
    if len(out) == 0:
        raise TraceError(source, f"no invocations in minutes {start}..{end_minute or 'end'}")
    out["arrival_ms"] = out["arrival_ms"] - lo
    for column in ("app", "function"):  # list only the names that still occur
        out[column] = out[column].cat.remove_unused_categories()
    return out


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as e:
        raise TraceError(path, f"cannot read as Parquet ({e})") from None


def read_csv_checked(path: str | os.PathLike, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` with parse failures turned into a TraceError naming the file."""
    try:
        return pd.read_csv(path, **_EXACT_FLOATS, **kwargs)
    except FileNotFoundError:
        raise TraceError(path, "no such file") from None
    except pd.errors.EmptyDataError:
        raise TraceError(path, "empty file (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError, EOFError) as e:
        message = " ".join(str(e).split())  # one line
        raise TraceError(path, f"cannot parse as CSV ({message})") from None


def _read_csv(path: Path) -> pd.DataFrame:
    return read_csv_checked(path, dtype={"app": str, "function": str})


# ------------------------------------------------------------------------------ writing

def write_trace(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Validate ``df`` and write it as Parquet (``.parquet``/``.pq``, via pyarrow) or CSV
    (``.csv``/``.csv.gz``), by extension. Writes a temporary file in the same folder and
    renames it into place, so a failure never leaves a half-written trace. Returns the path."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in _PARQUET_SUFFIXES + _CSV_SUFFIXES:
        raise TraceError(path, f"unsupported output format {suffix or '(no extension)'!r}; "
                               "use .parquet or .csv")
    table = validate(df, f"<table to write to {path}>")
    with atomic_output(path) as tmp:
        if suffix in _PARQUET_SUFFIXES:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp)
        else:
            table.to_csv(tmp, index=False, compression="gzip" if suffix == ".csv.gz" else None)
    return path
