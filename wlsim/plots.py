"""Paper-ready plots of simulation results (matplotlib, Agg canvas; no display needed).

- added latency (wait + cold start, what a policy adds to execution): a CDF on a log axis and
  a tail view (the fraction of requests above x, log-log), one line per policy;
- the Pareto view: cold starts against idle memory (both log, always), the oracle drawn as an
  offline bound (a star, and the region it bounds shaded), the Pareto-efficient policies
  connected; beside it, each policy's avoidable cost / the oracle's with its p99.9 wait, so
  cost and queueing are visible too;
- instances over time on the trace's own clock, the legend outside the axes, a log axis
  when one policy holds far more instances than the rest.

Every figure uses the Okabe-Ito colour-blind-safe palette plus distinct line styles and
markers, short policy labels (``fixed_ttl:ttl_ms=60000`` -> ``TTL 60s``), and is written as
PNG and PDF (``write_plots``). Figures are built with ``matplotlib.figure.Figure`` rather than
pyplot, so no global state or GUI backend is involved and plotting is safe in worker processes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from wlsim.result import SimResult

PLOT_FILES = {
    "latency_cdf": "latency_cdf.png",
    "pareto": "pareto.png",
    "instances": "instances_over_time.png",
}
EXTRA_FORMATS = ("pdf",)   # written beside every PNG

# Okabe & Ito (2008), distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "h")
ORACLE_COLOR = "#555555"
ADDED_FLOOR_MS = 0.1       # added latency below this is drawn at it (0 cannot sit on a log axis)


def short_label(spec: str) -> str:
    """A short, readable label for a policy spec: ``fixed_ttl:ttl_ms=60000`` -> ``TTL 60s``,
    ``learned:examples/learned/azure40`` -> ``learned azure40``, ``custom:path/x.py`` ->
    ``custom x``; other parameters are kept as ``k=v``."""
    name, _, rest = spec.strip().partition(":")
    if name in ("learned", "custom", "wasm", "uploaded"):
        stem = Path(rest.split(":", 1)[0].rstrip("/")).name
        stem = re.sub(r"\.(py|wasm)$", "", stem)
        return f"{name} {stem}" if stem else name
    params = dict(p.split("=", 1) for p in rest.split(",") if "=" in p)
    if name == "fixed_ttl":
        ms = float(params.pop("ttl_ms", 600_000))
        label = "TTL " + (f"{ms / 60_000:g}min" if ms >= 60_000 and ms % 60_000 == 0 else f"{ms / 1000:g}s")
    else:
        label = {"hybrid_histogram": "hybrid hist.", "faascache": "FaasCache", "kpa": "KPA"}.get(name, name)
    if params:
        label += " " + ",".join(f"{k}={v}" for k, v in params.items())
    return label


def _style(i: int) -> dict[str, object]:
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]}


def _is_oracle(label: str) -> bool:
    return label.split(":", 1)[0] == "oracle"


def _figure(width: float = 8.0, height: float = 5.0) -> Figure:
    from matplotlib.figure import Figure  # heavy import kept local
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    for fmt in EXTRA_FORMATS:
        fig.savefig(path.with_suffix(f".{fmt}"), format=fmt)
    return path


def _cdf_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A few thousand (value, fraction) points that trace the empirical CDF, denser in the
    tail, instead of one point per request."""
    n = values.size
    p = np.linspace(0.0, 1.0, 1001)
    if n > 100:
        p = np.unique(np.concatenate([p, 1.0 - np.geomspace(1e-2, 1.0 / n, 400)]))
    return np.quantile(values, p), p


def added_latency_ms(r: SimResult) -> np.ndarray:
    """Wait + cold start of each served request (end-to-end latency minus execution)."""
    req = r.requests
    lat = req["latency_ms"].to_numpy(dtype=np.float64, na_value=np.nan)
    added = lat - req["exec_ms"].to_numpy(dtype=np.float64, na_value=np.nan)
    added = added[~np.isnan(added)]
    return np.where(added < 1e-3, 0.0, added)     # float residue of end - arrival - exec is 0


def latency_cdf(results: Mapping[str, SimResult], path: str | Path) -> Path:
    """Added latency (wait + cold start) per served request: CDF on a log axis (left) and the
    tail, P(added > x) on log-log axes (right). End-to-end latency would mostly show the
    executions, which no policy changes."""
    fig = _figure(11.0, 4.6)
    ax, tail = fig.subplots(1, 2)
    drawn = 0
    biggest = ADDED_FLOOR_MS * 10
    lowest = 1.0            # the smallest share of requests with no added latency
    for i, (label, r) in enumerate(results.items()):
        added = added_latency_ms(r)
        if added.size == 0:
            continue
        drawn += 1
        style = _style(i) if not _is_oracle(label) else {"color": ORACLE_COLOR, "linestyle": ":"}
        x, p = _cdf_points(np.maximum(added, ADDED_FLOOR_MS))
        lowest = min(lowest, float(np.mean(added <= ADDED_FLOOR_MS)))
        ax.plot(x, p, label=short_label(label), linewidth=1.5, **style)
        s = np.sort(added)
        above = 1.0 - np.arange(1, s.size + 1) / s.size         # P(added > s[k])
        keep = (above > 0) & (s > 0)
        if keep.any():
            xs, ys = s[keep], above[keep]
            if xs.size > 3000:                                  # thin out, keeping the tail
                idx = np.unique(np.geomspace(1, xs.size, 3000).astype(int) - 1)
                xs, ys = xs[idx], ys[idx]
            tail.step(xs, ys, where="post", linewidth=1.5, **style)
            biggest = max(biggest, float(s[-1]))
    for a in (ax, tail):
        a.set_xscale("log")
        a.grid(True, which="both", alpha=0.3)
        a.set_xlabel("added latency: wait + cold start (ms, log)")
    ax.set_xlim(ADDED_FLOOR_MS, biggest * 1.5)
    tail.set_xlim(1.0, biggest * 1.5)
    # Most requests usually add nothing (warm, no wait): start the axis just below the lowest
    # such share so the differences between policies are visible (the label says where).
    bottom = max(0.0, np.floor((lowest - 0.05) * 20) / 20) if drawn else 0.0
    ax.set_ylim(bottom, 1.0)
    ax.set_ylabel("fraction of served requests" + (f" (axis from {bottom:g})" if bottom > 0 else ""))
    ax.set_title(f"Added latency CDF (below {ADDED_FLOOR_MS:g} ms drawn at it)", fontsize="medium")
    tail.set_yscale("log")
    tail.set_ylabel("fraction of requests with more (log)")
    tail.set_title("Tail: P(added latency > x)", fontsize="medium")
    if drawn:
        fig.legend(loc="outside right center", fontsize="small", frameon=False)
    else:
        ax.text(0.5, 0.5, "no served requests", transform=ax.transAxes, ha="center")
    return _save(fig, path)


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the Pareto-efficient points when both x and y are to be minimised, in
    increasing x. A point is efficient when no other point is <= on both and < on one."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    order = np.lexsort((y, x))                  # by x, then y
    front: list[int] = []
    best_y = np.inf
    for i in order:                             # one pass over policies, not requests
        if y[i] < best_y:
            front.append(int(i))
            best_y = y[i]
    return np.array(front, dtype=np.int64)


def _log_floor(values: np.ndarray) -> float:
    """Where a 0 is drawn on a log axis: a decade below the smallest positive value."""
    pos = values[values > 0]
    return float(pos.min()) / 10.0 if pos.size else 1.0


def pareto(summary: pd.DataFrame, path: str | Path, x: str = "idle_gb_s",
           y: str = "cold_start_rate") -> Path:
    """Cold starts against idle memory (log-log, lower left is better), one marker per policy
    named in the legend (labels never collide), the Pareto-efficient non-oracle policies
    connected and the oracle drawn as an offline bound; with the summary's
    ``avoidable_cost_usd`` (and the oracle's), a second panel of avoidable cost / the oracle's
    per policy, annotated with the p99.9 wait."""
    has_cost = "avoidable_cost_usd" in summary and "wait_p999_ms" in summary
    fig = _figure(12.0 if has_cost else 8.5, 5.0)
    ax, bars = fig.subplots(1, 2, width_ratios=(1.4, 1)) if has_cost else (fig.add_subplot(), None)
    xs = summary[x].to_numpy(dtype=np.float64)
    scale = 100.0 if y == "cold_start_rate" else 1.0
    ys = summary[y].to_numpy(dtype=np.float64) * scale
    labels = summary["policy"].astype(str).tolist()
    oracle = np.array([_is_oracle(lab) for lab in labels])
    ok = ~(np.isnan(xs) | np.isnan(ys))
    x_floor, y_floor = _log_floor(xs[ok]), _log_floor(ys[ok])
    px, py = np.maximum(xs, x_floor), np.maximum(ys, y_floor)
    real = ok & ~oracle
    if real.any():
        front = np.flatnonzero(real)[pareto_front(px[real], py[real])]
        ax.plot(px[front], py[front], "-", color="#999999", zorder=1, linewidth=1.2,
                label="Pareto-efficient (non-oracle)")
    k = 0
    for i, lab in enumerate(labels):
        if not ok[i]:
            continue
        if oracle[i]:
            ax.scatter(px[i], py[i], marker="*", s=260, color=ORACLE_COLOR, zorder=4,
                       label="oracle (offline bound, not reachable)")
            continue
        ax.scatter(px[i], py[i], marker=MARKERS[k % len(MARKERS)], s=70, color=PALETTE[k % len(PALETTE)],
                   edgecolor="black", linewidth=0.5, zorder=3, label=short_label(lab))
        k += 1
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis in (ax.xaxis, ax.yaxis):         # 1-2-5 ticks, readable labels, no minor labels
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(FuncFormatter(_human))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%" if scale == 100.0 else _human(v, _)))
    ax.margins(0.15)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_xlabel({"idle_gb_s": "idle memory (GB-s, log)", "total_gb_s": "total memory (GB-s, log)"}.get(x, x))
    ax.set_ylabel("cold starts (% of served requests, log)" if y == "cold_start_rate" else y.replace("_", " "))
    ax.set_title("Cold starts vs idle memory (lower left is better)", fontsize="medium")
    if bars is not None:
        _cost_bars(bars, summary)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right center", fontsize="small", frameon=False)
    return _save(fig, path)


def _human(v: float, _pos: object = None) -> str:
    """Tick labels such as 30k, 1.5M instead of raw numbers."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def _cost_bars(ax: Axes, summary: pd.DataFrame) -> None:
    """Avoidable cost / the oracle's (or in USD without an oracle), one bar per policy, with
    its p99.9 wait written beside it."""
    labels = summary["policy"].astype(str).tolist()
    avoid = summary["avoidable_cost_usd"].to_numpy(dtype=np.float64)
    ratio = summary["avoidable_vs_oracle"].to_numpy(dtype=np.float64) if "avoidable_vs_oracle" in summary else None
    use_ratio = ratio is not None and np.isfinite(ratio).any()
    vals = ratio if use_ratio else avoid
    waits = summary["wait_p999_ms"].to_numpy(dtype=np.float64)
    ypos = np.arange(len(labels))[::-1]
    k = 0
    for i, lab in enumerate(labels):
        color = ORACLE_COLOR if _is_oracle(lab) else PALETTE[k % len(PALETTE)]
        if not _is_oracle(lab):
            k += 1
        v = vals[i] if np.isfinite(vals[i]) else 0.0
        ax.barh(ypos[i], v, color=color, alpha=0.85, edgecolor="black", linewidth=0.5)
        w = waits[i]
        note = f" {v:.2f}" + (f", wait p99.9 {w:,.0f} ms" if np.isfinite(w) and w > 0 else "")
        ax.text(v, ypos[i], note, va="center", fontsize="x-small")
    ax.set_yticks(ypos, [short_label(lab) for lab in labels], fontsize="small")
    if use_ratio:
        ax.axvline(1.0, color=ORACLE_COLOR, linestyle=":", linewidth=1)
    ax.set_xlabel("avoidable cost ÷ oracle's" if use_ratio else "avoidable cost (USD)")
    ax.set_title("Avoidable cost (idle + cold-start memory, latency)", fontsize="medium")
    ax.margins(x=0.45)
    ax.grid(True, axis="x", alpha=0.3)


def instances_plot(results: Mapping[str, SimResult], path: str | Path,
                   step_ms: float | None = None, clock_offset_ms: float = 0.0) -> Path:
    """Instances alive over time (time-average per step), one line per policy, on the
    trace's own clock (``clock_offset_ms``: where the simulated 0 sits in the trace, e.g.
    12 h for minutes 721-1440 of a day). The y axis turns logarithmic when one policy's
    peak is over 20 times another's; the x axis ends with the runs."""
    from wlsim.metrics import instances_over_time

    horizon = max((r.horizon_ms for r in results.values()), default=0.0)
    if step_ms is None:  # about 500 steps, at least a second each
        step_ms = max(1000.0, float(np.ceil(horizon / 500 / 1000.0)) * 1000.0)
    hours = horizon >= 3 * 3600_000
    unit, div = ("h", 3600_000.0) if hours else ("min", 60_000.0)
    fig = _figure(10.0, 4.8)
    ax = fig.add_subplot()
    peaks, lo, hi = [], np.inf, -np.inf
    for i, (label, r) in enumerate(results.items()):
        t = instances_over_time(r, step_ms)
        style = _style(i) if not _is_oracle(label) else {"color": ORACLE_COLOR, "linestyle": ":"}
        clock = (t["time_ms"] + clock_offset_ms) / div
        ax.plot(clock, t["mean_instances"], label=short_label(label), linewidth=1.1, **style)
        peaks.append(float(t["mean_instances"].max()) if len(t) else 0.0)
        if len(t):
            lo = min(lo, float(clock.iloc[0]))
            hi = max(hi, float(clock.iloc[-1]) + step_ms / div)
    positive = [p for p in peaks if p > 0]
    if len(positive) >= 2 and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
        ax.set_ylabel(f"instances alive (mean per {step_ms / 1000:g} s, log)")
    else:
        ax.set_ylabel(f"instances alive (mean per {step_ms / 1000:g} s)")
    if np.isfinite(lo):
        ax.set_xlim(lo, hi)
    ax.set_xlabel(f"trace time ({unit})")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("Instances over time", fontsize="medium")
    if results:
        fig.legend(loc="outside right center", fontsize="small", frameon=False)
    return _save(fig, path)


def write_plots(results: Mapping[str, SimResult], summary: pd.DataFrame,
                out_dir: str | Path, clock_offset_ms: float = 0.0) -> dict[str, Path]:
    """The three standard plots into ``out_dir`` (PNG, plus PDF beside each); returns
    {kind: PNG path}."""
    out = Path(out_dir)
    return {
        "latency_cdf": latency_cdf(results, out / PLOT_FILES["latency_cdf"]),
        "pareto": pareto(summary, out / PLOT_FILES["pareto"]),
        "instances": instances_plot(results, out / PLOT_FILES["instances"], clock_offset_ms=clock_offset_ms),
    }
