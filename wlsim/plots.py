"""PNG plots of simulation results (matplotlib, Agg canvas; no display needed).

- latency CDF: one line per policy, log-x;
- the Pareto view: cold-start rate against idle memory GB-s, one labelled point per policy,
  the Pareto-efficient ones (no other policy is at least as good on both) connected;
- instances over time: one line per policy.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so no global state
or GUI backend is involved and plotting is safe in worker processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from wlsim.result import SimResult

PLOT_FILES = {
    "latency_cdf": "latency_cdf.png",
    "pareto": "pareto.png",
    "instances": "instances_over_time.png",
}


def _figure(width: float = 8.0, height: float = 5.0) -> Figure:
    from matplotlib.figure import Figure  # heavy import kept local
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _cdf_points(latency_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A few thousand (latency, fraction) points that trace the empirical CDF, denser in the
    tail, instead of one point per request."""
    n = latency_ms.size
    p = np.linspace(0.0, 1.0, 1001)
    if n > 100:
        p = np.unique(np.concatenate([p, 1.0 - np.geomspace(1e-2, 1.0 / n, 400)]))
    return np.quantile(latency_ms, p), p


def latency_cdf(results: Mapping[str, SimResult], path: str | Path) -> Path:
    """End-to-end latency CDF of served requests, one line per policy, log-scaled x."""
    fig = _figure()
    ax = fig.add_subplot()
    smallest = np.inf
    for label, r in results.items():
        lat = r.requests["latency_ms"].to_numpy(dtype=np.float64, na_value=np.nan)
        lat = lat[~np.isnan(lat)]
        if lat.size == 0:
            continue
        x, p = _cdf_points(lat)
        positive = x[x > 0]
        if positive.size:
            smallest = min(smallest, positive.min())
        ax.plot(x, p, label=label, linewidth=1.4)
    ax.set_xscale("log")
    if np.isfinite(smallest):
        ax.set_xlim(left=smallest)  # a 0 ms latency cannot sit on a log axis
    ax.set_xlabel("end-to-end latency (ms, log scale)")
    ax.set_ylabel("fraction of served requests")
    ax.set_ylim(0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("Latency CDF")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize="small")
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


def pareto(summary: pd.DataFrame, path: str | Path, x: str = "idle_gb_s",
           y: str = "cold_start_rate") -> Path:
    """Cold starts against idle memory, one labelled point per policy (summary rows, with a
    ``policy`` column), the Pareto-efficient points connected."""
    fig = _figure()
    ax = fig.add_subplot()
    xs = summary[x].to_numpy(dtype=np.float64)
    ys = summary[y].to_numpy(dtype=np.float64)
    scale = 100.0 if y == "cold_start_rate" else 1.0
    labels = summary["policy"].astype(str).tolist()
    ok = ~(np.isnan(xs) | np.isnan(ys))
    front = pareto_front(xs[ok], ys[ok])
    idx = np.flatnonzero(ok)[front]
    ax.plot(xs[idx], ys[idx] * scale, "-", color="tab:gray", alpha=0.7, zorder=1,
            label="Pareto-efficient")
    efficient = np.zeros(len(xs), bool)
    efficient[idx] = True
    ax.scatter(xs[ok & ~efficient], ys[ok & ~efficient] * scale, s=40, color="tab:blue", zorder=2)
    ax.scatter(xs[efficient], ys[efficient] * scale, s=55, color="tab:red", zorder=3)
    for xi, yi, lab, good in zip(xs, ys, labels, ok):
        if good:
            ax.annotate(lab, (xi, yi * scale), textcoords="offset points", xytext=(5, 5), fontsize="small")
    ax.set_ylabel("cold starts (% of served requests)" if y == "cold_start_rate" else y.replace("_", " "))
    ax.grid(True, alpha=0.3)
    shown = xs[ok]
    if shown.size >= 2 and shown.min() > 0 and shown.max() / shown.min() > 50:
        ax.set_xscale("log")  # policies often differ by orders of magnitude in idle memory
    else:
        ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.margins(x=0.12, y=0.12)  # room for the labels
    log = " (log scale)" if ax.get_xscale() == "log" else ""
    ax.set_xlabel({"idle_gb_s": "idle memory (GB-s)", "total_gb_s": "total memory (GB-s)"}.get(x, x) + log)
    ax.set_title("Cold starts vs idle memory (lower left is better)")
    ax.legend(loc="upper right", fontsize="small")
    return _save(fig, path)


def instances_plot(results: Mapping[str, SimResult], path: str | Path,
                   step_ms: float | None = None) -> Path:
    """Instances alive over time (time-average per step), one line per policy."""
    from wlsim.metrics import instances_over_time

    horizon = max((r.horizon_ms for r in results.values()), default=0.0)
    if step_ms is None:  # about 500 steps, at least a second each
        step_ms = max(1000.0, float(np.ceil(horizon / 500 / 1000.0)) * 1000.0)
    hours = horizon >= 3 * 3600_000
    unit, div = ("h", 3600_000.0) if hours else ("min", 60_000.0)
    fig = _figure(9.0, 5.0)
    ax = fig.add_subplot()
    for label, r in results.items():
        t = instances_over_time(r, step_ms)
        ax.plot(t["time_ms"] / div, t["mean_instances"], label=label, linewidth=1.0)
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel(f"instances alive (mean per {step_ms / 1000:g} s)")
    ax.grid(True, alpha=0.3)
    ax.set_title("Instances over time")
    ax.legend(loc="upper right", fontsize="small")
    return _save(fig, path)


def write_plots(results: Mapping[str, SimResult], summary: pd.DataFrame,
                out_dir: str | Path) -> dict[str, Path]:
    """The three standard plots into ``out_dir``; returns {kind: path}."""
    out = Path(out_dir)
    return {
        "latency_cdf": latency_cdf(results, out / PLOT_FILES["latency_cdf"]),
        "pareto": pareto(summary, out / PLOT_FILES["pareto"]),
        "instances": instances_plot(results, out / PLOT_FILES["instances"]),
    }
