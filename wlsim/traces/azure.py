"""Loaders for the Azure Functions public traces (2019 and 2021) into the canonical table.

Azure Functions 2019 (Shahrad et al., ATC 2020) gives, per function, invocation counts per
minute of a day, a duration distribution (percentiles) and, per app, allocated memory.
The loader turns them into single invocations, sampling what the data leaves open with a
seeded numpy Generator:

* every function gets exactly the published count of arrivals in every minute, at instants
  drawn uniformly inside that minute;
* every duration is drawn from the function's distribution: a piecewise-linear inverse CDF
  through percentiles 0, 1, 25, 50, 75, 99 and 100 of ``_run.csv``;
* every invocation holds its app's ``AverageAllocatedMb`` (``DEFAULT_MEMORY_MB`` when the
  app is missing from ``_mem.csv``).

Azure Functions 2021 (Zhang et al., SOSP 2021) lists single invocations: ``app, func,
end_timestamp, duration`` in seconds; arrival = end - duration, shifted so the trace starts at 0.

The 64-hex-digit hashes are shortened to their first 8 characters (more where needed to keep
them unique); pass ``return_names=True`` for the mapping back to the full hashes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from wlsim.traces.table import DEFAULT_MEMORY_MB, TraceError, read_csv_checked, validate

MINUTES_PER_DAY = 1440
PERCENTILES = (0, 1, 25, 50, 75, 99, 100)
PERCENTILE_COLUMNS = tuple(f"percentile_Average_{p}" for p in PERCENTILES)
_MINUTE_COLUMN = re.compile(r"^minute_(\d+)$")


def short_names(values: pd.Series | np.ndarray | list[str], min_len: int = 8) -> dict[str, str]:
    """Map each distinct value to its shortest prefix of at least ``min_len`` characters that is
    still unique among the distinct values."""
    distinct = list(dict.fromkeys(str(v) for v in values))
    longest = max((len(v) for v in distinct), default=0)
    for n in range(min_len, longest + 1):
        prefixes = [v[:n] for v in distinct]
        if len(set(prefixes)) == len(distinct):
            return dict(zip(distinct, prefixes))
    return {v: v for v in distinct}


def _function_names(apps: pd.Series, functions: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Short app names and short function names; a function hash that occurs in several apps
    is qualified with its app (``app.function``) so function names stay unique."""
    app_short = apps.map(short_names(apps))
    func_short = functions.map(short_names(functions))
    apps_per_function = pd.Series(apps.to_numpy()).groupby(functions.to_numpy()).nunique()
    shared = functions.map(apps_per_function) > 1
    qualified = app_short + "." + func_short
    return app_short, func_short.where(~shared, qualified)


# --------------------------------------------------------------------------------- 2019

def azure2019_files(prefix: str | os.PathLike) -> tuple[Path, Path, Path]:
    """The ``_inv``, ``_run`` and ``_mem`` CSV files of an Azure 2019 trace, given its prefix
    (``traces/azure2019/40``) or any one of its files."""
    prefix = Path(prefix)
    for part in ("_inv.csv", "_run.csv", "_mem.csv"):
        if prefix.name.endswith(part):
            prefix = prefix.with_name(prefix.name[: -len(part)])
    files = tuple(prefix.with_name(prefix.name + part) for part in ("_inv.csv", "_run.csv", "_mem.csv"))
    for f in files:
        if not f.exists():
            raise TraceError(f, f"no such file (an Azure 2019 trace {prefix} needs "
                                f"{', '.join(p.name for p in files)})")
    return files  # type: ignore[return-value]


def _require(df: pd.DataFrame, columns: list[str] | tuple[str, ...], source: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TraceError(source, f"missing column{'s' if len(missing) > 1 else ''} "
                                 f"{', '.join(repr(c) for c in missing)}", column=missing[0])


def _checked_matrix(df: pd.DataFrame, columns: list[str], source: Path, *,
                    integer: bool) -> np.ndarray:
    """The columns as a float64 matrix; a non-numeric, NaN or negative cell (or a fractional
    count, when ``integer``) is an error naming its row and column."""
    sub = df[columns]
    text = [c for c, dtype in sub.dtypes.items() if not pd.api.types.is_numeric_dtype(dtype)]
    if text:  # only the rare non-numeric columns go through the (slow, per-column) conversion
        sub = sub.assign(**{c: pd.to_numeric(sub[c], errors="coerce") for c in text})
    block = sub.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(block) | (block < 0)
    if integer:
        bad |= block != np.floor(block)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raw = df[columns[c]].iloc[r]
        what = "an integer count >= 0" if integer else "a number >= 0"
        raise TraceError(source, f"{raw!r} is not {what}", row=int(r) + 1, line=int(r) + 2,
                         column=columns[c])
    return block


def _key_columns(*frames: pd.DataFrame) -> list[str]:
    """The hash columns the frames share that identify a function (owner, app, function)."""
    return [c for c in ("HashOwner", "HashApp", "HashFunction") if all(c in f.columns for f in frames)]


def load_azure2019(prefix: str | os.PathLike, *, seed: int = 0, start_minute: int | None = None,
                   end_minute: int | None = None, default_memory_mb: float = DEFAULT_MEMORY_MB,
                   return_names: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Load an Azure Functions 2019 trace (``{prefix}_inv.csv``, ``_run.csv``, ``_mem.csv``).

    ``start_minute``/``end_minute`` (1-based, inclusive, like the ``minute_N`` columns; default
    the whole file) select part of the day; arrivals are ms from the start of ``start_minute``.
    A function missing from ``_run.csv`` gets the typical distribution (the median of each
    percentile over the functions that have one); an app missing from ``_mem.csv`` gets
    ``default_memory_mb``. With ``return_names`` also returns the name mapping: one row per
    function with its short ``function`` and ``app`` names, the full hashes (and ``Trigger``
    when the file has it), and ``duration_source`` ("run" or "typical").
    """
    inv_path, run_path, mem_path = azure2019_files(prefix)
    inv = read_csv_checked(inv_path)
    run = read_csv_checked(run_path)
    mem = read_csv_checked(mem_path)

    # Invocation counts: one row per function, one column per minute (Trigger optional).
    _require(inv, ["HashFunction", "HashApp"], inv_path)
    minute_cols = sorted((c for c in inv.columns if _MINUTE_COLUMN.match(str(c))),
                         key=lambda c: int(_MINUTE_COLUMN.match(c).group(1)))
    if not minute_cols:
        raise TraceError(inv_path, "no minute_N columns (expected minute_1..minute_1440)", column="minute_1")
    if len(inv) == 0:
        raise TraceError(inv_path, "empty trace: no functions")
    minute_numbers = np.array([int(_MINUTE_COLUMN.match(c).group(1)) for c in minute_cols])
    first, last = int(minute_numbers[0]), int(minute_numbers[-1])
    start = first if start_minute is None else int(start_minute)
    end = last if end_minute is None else int(end_minute)
    if not (first <= start <= end <= last):
        raise TraceError(inv_path, f"minute range {start}..{end} is outside the file's minutes "
                                   f"{first}..{last} (or start > end)")
    counts = _checked_matrix(inv, minute_cols, inv_path, integer=True).astype(np.int64)

    _require(run, ["HashFunction"], run_path)
    keys = _key_columns(inv, run)
    for col in ("HashFunction", "HashApp"):
        blank = inv[col].isna() | (inv[col].astype(str).str.strip() == "")
        if blank.any():
            r = int(np.argmax(blank.to_numpy()))
            raise TraceError(inv_path, "missing hash", row=r + 1, line=r + 2, column=col)
    dup = inv[keys].duplicated().to_numpy()
    if dup.any():
        r = int(np.argmax(dup))
        raise TraceError(inv_path, "function listed twice", row=r + 1, line=r + 2, column="HashFunction")

    # Duration percentiles per function, aligned with the inv rows.
    _require(run, list(keys) + list(PERCENTILE_COLUMNS), run_path)
    run = run.drop_duplicates(subset=keys, keep="first").reset_index(drop=True)
    pct = _checked_matrix(run, list(PERCENTILE_COLUMNS), run_path, integer=False)
    # Percentiles of 30-second averages are monotone in principle; repair rounding glitches.
    pct = np.maximum.accumulate(pct, axis=1)
    row_of = pd.MultiIndex.from_frame(run[keys].astype(str)).get_indexer(
        pd.MultiIndex.from_frame(inv[keys].astype(str)))
    has_run = row_of >= 0
    if not has_run.any():
        raise TraceError(run_path, f"none of the functions of {inv_path.name} has a duration row")
    typical = np.median(pct, axis=0)
    func_pct = np.where(has_run[:, None], pct[np.maximum(row_of, 0)], typical)

    # Memory per app.
    mem_keys = [c for c in ("HashOwner", "HashApp") if c in mem.columns and c in inv.columns]
    _require(mem, ["HashApp", "AverageAllocatedMb"], mem_path)
    mem = mem.drop_duplicates(subset=mem_keys, keep="first").reset_index(drop=True)
    mem_mb = _checked_matrix(mem, ["AverageAllocatedMb"], mem_path, integer=False)[:, 0]
    if (mem_mb <= 0).any():
        r = int(np.argmax(mem_mb <= 0))
        raise TraceError(mem_path, f"AverageAllocatedMb must be positive, got {mem_mb[r]}",
                         row=r + 1, line=r + 2, column="AverageAllocatedMb")
    app_row = pd.MultiIndex.from_frame(mem[mem_keys].astype(str)).get_indexer(
        pd.MultiIndex.from_frame(inv[mem_keys].astype(str)))
    func_mem = np.where(app_row >= 0, mem_mb[np.maximum(app_row, 0)], float(default_memory_mb))

    app_names, func_names = _function_names(inv["HashApp"].astype(str), inv["HashFunction"].astype(str))

    # One invocation per count, in (function, minute) order. The whole file is sampled and
    # then windowed, so a minute range is that part of the full day for the same seed.
    n_funcs, n_minutes = counts.shape
    cell = np.repeat(np.arange(n_funcs * n_minutes), counts.ravel())
    func_idx = cell // n_minutes
    minute = minute_numbers[cell % n_minutes]
    rng = np.random.default_rng(seed)
    within = rng.random(len(cell)) * 60_000.0
    duration = _sample_percentiles(func_pct[func_idx], rng.random(len(cell)))
    keep = (minute >= start) & (minute <= end)
    if not keep.any():
        raise TraceError(inv_path, f"empty trace: no invocations in minutes {start}..{end}")
    func_idx, duration = func_idx[keep], duration[keep]
    minute_start = (minute[keep] - start) * 60_000.0
    # The clip keeps a draw within rounding of 1 from landing in the next minute.
    arrival = np.minimum(minute_start + within[keep], np.nextafter(minute_start + 60_000.0, 0.0))

    order = np.argsort(arrival, kind="stable")
    func_idx = func_idx[order]
    df = pd.DataFrame({
        "app": pd.Categorical.from_codes(*_codes(app_names.to_numpy(), func_idx)),
        "function": pd.Categorical.from_codes(*_codes(func_names.to_numpy(), func_idx)),
        "arrival_ms": arrival[order],
        "duration_ms": duration[order],
        "memory_mb": func_mem[func_idx],
    })
    df = validate(df, str(inv_path))
    if not return_names:
        return df
    names = pd.DataFrame({"function": func_names, "app": app_names})
    for col in ("HashFunction", "HashApp", "HashOwner", "Trigger"):
        if col in inv.columns:
            names[col] = inv[col].to_numpy()
    names["duration_source"] = np.where(has_run, "run", "typical")
    names["memory_mb"] = func_mem
    in_range = (minute_numbers >= start) & (minute_numbers <= end)
    names["invocations"] = counts[:, in_range].sum(axis=1)
    return df, names


def _codes(names: np.ndarray, func_idx: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Categorical codes per invocation for per-function ``names`` (which may repeat)."""
    categories, per_function = np.unique(names, return_inverse=True)
    return per_function[func_idx], list(categories)


def _sample_percentiles(points: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF samples: row i of ``points`` holds the values at PERCENTILES for sample i,
    ``u`` the uniform draws; linear interpolation between neighbouring percentiles."""
    p = np.asarray(PERCENTILES, dtype=np.float64) / 100.0
    seg = np.clip(np.searchsorted(p, u, side="right") - 1, 0, len(p) - 2)
    rows = np.arange(len(u))
    lo, hi = points[rows, seg], points[rows, seg + 1]
    frac = (u - p[seg]) / (p[seg + 1] - p[seg])
    return lo + frac * (hi - lo)


# --------------------------------------------------------------------------------- 2021

AZURE2021_COLUMNS = ("app", "func", "end_timestamp", "duration")


def load_azure2021(path: str | os.PathLike, *, default_memory_mb: float = DEFAULT_MEMORY_MB,
                   return_names: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Load an Azure Functions 2021 invocation CSV (``app,func,end_timestamp,duration``, seconds).

    arrival = end_timestamp - duration, shifted so the first arrival is at 0 ms; rows are
    sorted by arrival (stable). The file has no memory, so every invocation gets
    ``default_memory_mb``. With ``return_names`` also returns the short-name mapping.
    """
    path = Path(path)
    raw = read_csv_checked(path, dtype={"app": str, "func": str})
    _require(raw, AZURE2021_COLUMNS, path)
    if len(raw) == 0:
        raise TraceError(path, "empty trace: no invocations")
    for col in ("app", "func"):
        blank = raw[col].isna() | (raw[col].astype(str).str.strip() == "")
        if blank.any():
            r = int(np.argmax(blank.to_numpy()))
            raise TraceError(path, "missing name", row=r + 1, line=r + 2, column=col)
    end_s = _checked_matrix(raw, ["end_timestamp"], path, integer=False)[:, 0]
    duration_s = _checked_matrix(raw, ["duration"], path, integer=False)[:, 0]
    start_s = end_s - duration_s
    order = np.argsort(start_s, kind="stable")
    apps = raw["app"].astype(str)
    app_names, func_names = _function_names(apps, raw["func"].astype(str))
    df = pd.DataFrame({
        "app": pd.Categorical(app_names.to_numpy()[order]),
        "function": pd.Categorical(func_names.to_numpy()[order]),
        "arrival_ms": (start_s[order] - start_s.min()) * 1000.0,
        "duration_ms": duration_s[order] * 1000.0,
        "memory_mb": np.full(len(raw), float(default_memory_mb)),
    })
    df = validate(df, str(path))
    if not return_names:
        return df
    names = (pd.DataFrame({"function": func_names, "app": app_names, "func": raw["func"], "HashApp": apps})
             .drop_duplicates(subset=["function"]).reset_index(drop=True))
    return df, names
