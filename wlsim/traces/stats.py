"""Summary statistics of a canonical trace (what ``wl trace info`` prints)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Spread:
    """Mean, median, coefficient of variation, 99th percentile and maximum of a sample."""
    n: int
    mean: float
    median: float
    cv: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> Spread:
        values = np.asarray(values, dtype=np.float64)
        if len(values) == 0:
            return cls(0, np.nan, np.nan, np.nan, np.nan, np.nan)
        mean = float(values.mean())
        cv = float(values.std() / mean) if mean > 0 else np.nan
        return cls(len(values), mean, float(np.median(values)), cv,
                   float(np.percentile(values, 99)), float(values.max()))


@dataclass(frozen=True)
class TraceSummary:
    invocations: int
    functions: int
    apps: int
    first_ms: float
    last_ms: float
    span_ms: float
    rate_per_s: float              # invocations / span
    iat_all_ms: Spread             # inter-arrival times of the merged stream
    iat_function_ms: Spread        # inter-arrival times within each function, pooled
    duration_ms: Spread
    memory_mb: Spread              # per invocation
    has_payload: bool
    feature_columns: list[str]


def within_function_gaps(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Inter-arrival gaps inside each function: (function code of each gap, gap ms)."""
    codes = df["function"].cat.codes.to_numpy()
    arrival = df["arrival_ms"].to_numpy()
    order = np.lexsort((arrival, codes))
    codes, arrival = codes[order], arrival[order]
    same = codes[1:] == codes[:-1]
    return codes[1:][same], np.diff(arrival)[same]


def summarize(df: pd.DataFrame) -> TraceSummary:
    from wlsim.traces.table import CANONICAL_COLUMNS, OPTIONAL_COLUMNS

    arrival = df["arrival_ms"].to_numpy()
    first, last = float(arrival[0]), float(arrival[-1])
    span = last - first
    _, gaps = within_function_gaps(df)
    known = set(CANONICAL_COLUMNS) | set(OPTIONAL_COLUMNS)
    return TraceSummary(
        invocations=len(df),
        functions=int(df["function"].nunique()),
        apps=int(df["app"].nunique()),
        first_ms=first, last_ms=last, span_ms=span,
        rate_per_s=len(df) / (span / 1000.0) if span > 0 else np.nan,
        iat_all_ms=Spread.of(np.diff(arrival)),
        iat_function_ms=Spread.of(gaps),
        duration_ms=Spread.of(df["duration_ms"].to_numpy()),
        memory_mb=Spread.of(df["memory_mb"].to_numpy()),
        has_payload="payload_bytes" in df.columns,
        feature_columns=[c for c in df.columns if c not in known],
    )


def per_function(df: pd.DataFrame) -> pd.DataFrame:
    """One row per function, busiest first: app, invocations, share, rate per minute over the
    trace's span, inter-arrival mean/median/CV (ms), duration p50/p99 (ms), memory (MB)."""
    arrival = df["arrival_ms"].to_numpy()
    span_min = max(arrival[-1] - arrival[0], 1e-9) / 60_000.0
    grouped = df.groupby("function", observed=True, sort=False)
    out = pd.DataFrame({
        "app": grouped["app"].first().astype(str),
        "invocations": grouped.size(),
        "duration_p50_ms": grouped["duration_ms"].median(),
        "duration_p99_ms": grouped["duration_ms"].quantile(0.99),
        "memory_mb": grouped["memory_mb"].mean(),
    })
    out.index = out.index.astype(str)
    out["share"] = out["invocations"] / len(df)
    out["rate_per_min"] = out["invocations"] / span_min
    codes, gaps = within_function_gaps(df)
    categories = df["function"].cat.categories.astype(str)
    g = pd.Series(gaps).groupby(np.asarray(categories)[codes])
    iat = pd.DataFrame({"iat_mean_ms": g.mean(), "iat_median_ms": g.median(),
                        "iat_cv": g.std(ddof=0) / g.mean()})
    out = out.join(iat)
    out.index.name = "function"
    return out.sort_values("invocations", ascending=False, kind="stable")


def counts_over_time(arrival_ms: np.ndarray, bin_ms: float, start_ms: float = 0.0,
                     end_ms: float | None = None) -> np.ndarray:
    """Invocations per bin of ``bin_ms`` from ``start_ms`` to ``end_ms`` (default: last arrival)."""
    end = float(arrival_ms[-1]) if end_ms is None else end_ms
    n_bins = max(1, int(np.floor((end - start_ms) / bin_ms)) + 1)
    idx = np.clip(((arrival_ms - start_ms) // bin_ms).astype(np.int64), 0, n_bins - 1)
    return np.bincount(idx, minlength=n_bins)


_BINS = [(1_000.0, "second"), (2_000.0, "2 s"), (5_000.0, "5 s"), (10_000.0, "10 s"), (30_000.0, "30 s"),
         (60_000.0, "minute"), (120_000.0, "2 min"), (300_000.0, "5 min"), (600_000.0, "10 min"),
         (900_000.0, "15 min"), (1_800_000.0, "30 min"), (3_600_000.0, "hour"), (7_200_000.0, "2 h"),
         (10_800_000.0, "3 h"), (21_600_000.0, "6 h"), (43_200_000.0, "12 h"), (86_400_000.0, "day")]


def rate_bin_ms(span_ms: float, max_bins: int = 40) -> tuple[float, str]:
    """The smallest round bin width giving at most ``max_bins`` bins over ``span_ms``
    (a day gives hours), and its label."""
    for width, label in _BINS:
        if span_ms / width < max_bins:
            return width, label
    return 7 * 86_400_000.0, "week"


SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: np.ndarray) -> str:
    """Unicode block sparkline scaled to the maximum (an empty bin is a space)."""
    values = np.asarray(values, dtype=np.float64)
    top = values.max() if len(values) else 0.0
    if top <= 0:
        return " " * len(values)
    levels = np.ceil(values / top * len(SPARK_BLOCKS)).astype(int) - 1
    return "".join(" " if v <= 0 else SPARK_BLOCKS[min(level, len(SPARK_BLOCKS) - 1)]
                   for v, level in zip(values, levels))
