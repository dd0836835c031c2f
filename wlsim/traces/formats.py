"""What a trace path names, and reading any supported trace into the canonical table.

The one entry point across formats (``read_trace``): canonical Parquet/CSV files
(``wlsim.traces.table``) and Azure Functions traces (``wlsim.traces.azure``), told apart by
extension and header. Kept out of ``table`` so that the Azure loaders, which build on the
canonical table, and the table do not import each other.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from wlsim.traces import azure
from wlsim.traces.table import (
    _CSV_SUFFIXES,
    _PARQUET_SUFFIXES,
    TraceError,
    _read_csv,
    _read_parquet,
    _suffix,
    select_minutes,
    validate,
)


def _csv_header(path: Path) -> list[str]:
    """The first line of a CSV, split on commas (for sniffing Azure formats)."""
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            first = f.readline()
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise TraceError(path, f"cannot read as a text CSV file ({e})") from None
    return [c.strip().strip('"').lstrip("\ufeff") for c in first.strip().split(",")]


def _azure2019_prefix(path: Path) -> Path | None:
    """The prefix of an Azure 2019 trace named by ``path``: the prefix itself
    (``traces/azure2019/40``) or a folder holding exactly one trace. None if ``path`` names
    neither (its files are recognised by their headers instead, see ``trace_kind``)."""
    if path.is_dir():
        prefixes = sorted(p.name[: -len("_inv.csv")] for p in path.glob("*_inv.csv"))
        if len(prefixes) == 1:
            return path / prefixes[0]
        if len(prefixes) > 1:
            raise TraceError(path, "folder holds several Azure 2019 traces; name one of them: "
                             + ", ".join(str(path / p) for p in prefixes))
        return None
    if not path.exists() and path.with_name(path.name + "_inv.csv").exists():
        return path
    return None


def trace_kind(path: str | os.PathLike) -> tuple[str, Path]:
    """What ``path`` names, told apart by extension and header: ("azure2019", prefix),
    ("azure2021", file), ("parquet", file) or ("csv", file). Raises TraceError otherwise."""
    path = Path(path)
    prefix = _azure2019_prefix(path)
    if prefix is not None:
        return "azure2019", prefix
    if not path.exists():
        raise TraceError(path, "no such file (expected a .parquet or .csv trace, or an Azure 2019 "
                               "prefix such as traces/azure2019/40)")
    if path.is_dir():
        raise TraceError(path, "is a folder with no Azure 2019 *_inv.csv trace in it")
    suffix = _suffix(path)
    if suffix in _PARQUET_SUFFIXES:
        return "parquet", path
    if suffix in _CSV_SUFFIXES:
        header = _csv_header(path)
        is_inv = "HashFunction" in header and any(c.startswith("minute_") for c in header)
        is_run = "HashFunction" in header and "percentile_Average_50" in header
        is_mem = "HashApp" in header and "AverageAllocatedMb" in header
        if is_inv or is_run or is_mem:
            return "azure2019", path
        if {"app", "func", "end_timestamp", "duration"} <= set(header):
            return "azure2021", path
        return "csv", path
    raise TraceError(path, f"unsupported trace format {suffix or '(no extension)'!r}; "
                           "expected .parquet, .csv or an Azure 2019 prefix")


def read_trace(path: str | os.PathLike, *, seed: int = 0, start_minute: int | None = None,
               end_minute: int | None = None) -> pd.DataFrame:
    """Read any supported trace into the canonical table.

    ``path`` may be a canonical Parquet (``.parquet``/``.pq``) or CSV (``.csv``/``.csv.gz``)
    file, an Azure Functions 2019 trace (its prefix such as ``traces/azure2019/40``, one of its
    ``_inv/_run/_mem.csv`` files, or a folder holding one trace) or an Azure Functions 2021
    CSV (``app,func,end_timestamp,duration``); the formats are told apart by their headers.
    ``seed`` drives the sampling the Azure 2019 loader does. ``start_minute``/``end_minute``
    (1-based, inclusive) keep part of the trace, re-based to start at 0 ms.
    Raises TraceError naming the file (and row/column) when the trace is unusable.
    """
    kind, path = trace_kind(path)
    if kind == "azure2019":
        return azure.load_azure2019(path, seed=seed, start_minute=start_minute, end_minute=end_minute)
    if kind == "azure2021":
        df = azure.load_azure2021(path)
    elif kind == "parquet":
        df = validate(_read_parquet(path), str(path))
    else:
        df = validate(_read_csv(path), str(path), first_line=2)
    return select_minutes(df, start_minute, end_minute, str(path))
