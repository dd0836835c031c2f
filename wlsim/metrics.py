"""Summaries of a SimResult: cold starts, latency percentiles, memory, cost, instances over time.

Everything is vectorised over the result's columns (no Python loop over requests, instances
or time steps), so a million-request result summarises in a fraction of a second.

Definitions (the numbers every table and plot uses):
- served = requests not rejected; latency statistics are over served requests only.
- cold_start_rate = cold starts / served requests.
- Percentiles use numpy's default (linear interpolation between order statistics).
- added latency = end-to-end latency - execution time (queueing wait + cold start), summed.
- GB = 1024 MB (as AWS Lambda bills); GB-s = memory_mb / 1024 * seconds.
- total memory = memory held from ``created_ms`` to ``died_ms`` (starting, busy and idle);
  idle memory = memory held while idle (the instance table's ``idle_ms``).
- The observed period runs from the first arrival (or the first instance, if one came earlier)
  to the horizon: a trace recorded live starts at its time of day, not at 0.
- mean instances = instance-seconds alive / the observed period; peak instances = the most alive
  at once (an instance is alive on [created_ms, died_ms)).
- Cost (USD): memory_usd = gb_s_usd * total GB-s; request_usd = request_usd * served requests;
  latency_usd = latency_usd_per_s * added latency seconds; reject_usd = a price per rejected
  request if the weights define ``reject_usd`` (else 0); weighted_cost_usd = their sum.
- Metrics that cannot be gamed (most of every policy's cost is execution memory that all
  policies pay, and a policy can hide cold starts by queueing behind long executions):
  exec_gb_s = memory held while executing, over *all* invocations (each at its function's
  memory; a policy-independent constant of the trace); unavoidable_usd = gb_s_usd * exec_gb_s
  + request_usd * invocations; avoidable_cost_usd = weighted_cost_usd - unavoidable_usd (idle
  memory, memory while starting, added latency, rejections). The wait distribution
  (``wait_ms``: queued behind a busy or starting instance, cold start excluded): wait_p99_ms,
  wait_p999_ms, wait_max_ms; added_p99_ms / added_p999_ms: the same of wait + cold start;
  waits_over_cold_start = served requests that waited longer than a cold start of their
  function (its instances' mean ready - created) would have taken.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from policies.interface import CostWeights

DEFAULT_WEIGHTS = CostWeights()  # frozen, so one shared default is safe

if TYPE_CHECKING:
    import pandas as pd

    from wlsim.result import SimResult

MB_PER_GB = 1024.0

# Column order of a summary row (compare's table and summary.csv follow it).
SUMMARY_FIELDS = (
    "policy", "invocations", "served", "rejected", "cold_starts", "cold_start_rate",
    "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms", "mean_wait_ms",
    "added_latency_s", "idle_gb_s", "total_gb_s", "peak_instances", "mean_instances",
    "memory_usd", "request_usd", "latency_usd", "reject_usd", "weighted_cost_usd",
    "exec_gb_s", "avoidable_cost_usd", "wait_p99_ms", "wait_p999_ms", "wait_max_ms",
    "added_p99_ms", "added_p999_ms", "waits_over_cold_start",
    "wall_s", "sim_invocations_per_s",
)


def _column(df: pd.DataFrame, name: str, dtype: Any = np.float64) -> np.ndarray:
    return df[name].to_numpy(dtype=dtype, na_value=np.nan if dtype == np.float64 else False)


def _instance_intervals(result: SimResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """created, died (NaN died -> the horizon) and memory_mb of every instance."""
    inst = result.instances
    created = _column(inst, "created_ms")
    died = _column(inst, "died_ms")
    died = np.where(np.isnan(died), result.horizon_ms, died)
    return created, died, _column(inst, "memory_mb")


def observed_start_ms(result: SimResult) -> float:
    """When the run's activity begins: the first arrival or instance, whichever is earlier."""
    firsts = [float(np.nanmin(col)) for col in (_column(result.requests, "arrival_ms"),
                                                 _column(result.instances, "created_ms")) if col.size]
    return min(firsts) if firsts else 0.0


def peak_instances(created: np.ndarray, died: np.ndarray) -> int:
    """The most instances alive at once, each alive on [created, died)."""
    if created.size == 0:
        return 0
    times = np.concatenate([created, died])
    deltas = np.concatenate([np.ones(created.size, np.int64), -np.ones(died.size, np.int64)])
    # At equal times deaths (-1) sort before births (+1): half-open intervals do not overlap.
    order = np.lexsort((deltas, times))
    return int(np.cumsum(deltas[order]).max())


def _per_function(result: SimResult) -> tuple[np.ndarray, np.ndarray]:
    """Each request's function memory (MB) and cold-start time (ms), from the function's
    instances (memory_mb; mean of ready_ms - created_ms); NaN for a function that never had
    an instance (all its requests rejected)."""
    import pandas as pd

    inst = result.instances
    req_fn = result.requests["function"]
    if len(inst) == 0:
        nan = np.full(len(req_fn), np.nan)
        return nan, nan.copy()
    per_fn = pd.DataFrame({"function": inst["function"],
                           "memory_mb": inst["memory_mb"].astype(np.float64),
                           "cold_ms": (inst["ready_ms"] - inst["created_ms"]).astype(np.float64)}
                          ).groupby("function", observed=True).agg({"memory_mb": "first", "cold_ms": "mean"})
    codes = per_fn.index.get_indexer(req_fn)
    mem = np.append(per_fn["memory_mb"].to_numpy(np.float64), np.nan)[codes]
    cold = np.append(per_fn["cold_ms"].to_numpy(np.float64), np.nan)[codes]
    return mem, cold


def summarize(result: SimResult, weights: CostWeights = DEFAULT_WEIGHTS) -> dict[str, Any]:
    """One row of numbers for a run (see the module docstring for every definition)."""
    req = result.requests
    rejected_mask = _column(req, "rejected", bool)
    served_mask = ~rejected_mask
    invocations = len(req)
    served = int(served_mask.sum())
    rejected = invocations - served

    cold_starts = int(_column(req, "cold", bool)[served_mask].sum())
    latency = _column(req, "latency_ms")[served_mask]
    exec_ms = _column(req, "exec_ms")[served_mask]
    wait = _column(req, "wait_ms")[served_mask]
    if served:
        p50, p95, p99 = np.percentile(latency, [50, 95, 99])
        lat_max = float(latency.max())
        mean_wait = float(wait.mean())
    else:
        p50 = p95 = p99 = lat_max = mean_wait = float("nan")
    added = latency - exec_ms
    added_latency_s = float(added.sum()) / 1000.0
    if served:
        wait_p99, wait_p999 = np.percentile(wait, [99, 99.9])
        added_p99, added_p999 = np.percentile(added, [99, 99.9])
        wait_max = float(wait.max())
    else:
        wait_p99 = wait_p999 = added_p99 = added_p999 = wait_max = float("nan")
    fn_mem, fn_cold = _per_function(result)
    all_exec = _column(req, "exec_ms")
    exec_gb_s = float(np.nansum(fn_mem * all_exec)) / MB_PER_GB / 1000.0
    waits_over_cold = int((wait > fn_cold[served_mask]).sum())

    created, died, memory_mb = _instance_intervals(result)
    gb = memory_mb / MB_PER_GB
    total_gb_s = float((gb * (died - created)).sum()) / 1000.0
    idle_gb_s = float((gb * _column(result.instances, "idle_ms")).sum()) / 1000.0
    period = result.horizon_ms - observed_start_ms(result)
    mean_instances = float((died - created).sum() / period) if period > 0 else float("nan")

    memory_usd = weights.gb_s_usd * total_gb_s
    request_usd = weights.request_usd * served
    latency_usd = weights.latency_usd_per_s * added_latency_s
    reject_usd = float(getattr(weights, "reject_usd", 0.0)) * rejected
    weighted = memory_usd + request_usd + latency_usd + reject_usd
    unavoidable_usd = weights.gb_s_usd * exec_gb_s + weights.request_usd * invocations
    wall = float(result.wall_s)
    return {
        "policy": result.policy,
        "invocations": invocations,
        "served": served,
        "rejected": rejected,
        "cold_starts": cold_starts,
        "cold_start_rate": cold_starts / served if served else float("nan"),
        "latency_p50_ms": float(p50),
        "latency_p95_ms": float(p95),
        "latency_p99_ms": float(p99),
        "latency_max_ms": lat_max,
        "mean_wait_ms": mean_wait,
        "added_latency_s": added_latency_s,
        "idle_gb_s": idle_gb_s,
        "total_gb_s": total_gb_s,
        "peak_instances": peak_instances(created, died),
        "mean_instances": mean_instances,
        "memory_usd": memory_usd,
        "request_usd": request_usd,
        "latency_usd": latency_usd,
        "reject_usd": reject_usd,
        "weighted_cost_usd": weighted,
        "exec_gb_s": exec_gb_s,
        "avoidable_cost_usd": weighted - unavoidable_usd,
        "wait_p99_ms": float(wait_p99),
        "wait_p999_ms": float(wait_p999),
        "wait_max_ms": wait_max,
        "added_p99_ms": float(added_p99),
        "added_p999_ms": float(added_p999),
        "waits_over_cold_start": waits_over_cold,
        "wall_s": wall,
        "sim_invocations_per_s": invocations / wall if wall > 0 else float("nan"),
    }


def _sum_min(sorted_x: np.ndarray, prefix: np.ndarray, t: np.ndarray) -> np.ndarray:
    """For each t: sum_i min(t, x_i), with x sorted and prefix = [0, cumsum(x)]."""
    k = np.searchsorted(sorted_x, t, side="right")          # how many x_i <= t
    return prefix[k] + t * (sorted_x.size - k)


def instances_over_time(result: SimResult, step_ms: float) -> pd.DataFrame:
    """Instances alive over the run, sampled every ``step_ms`` from the step holding the first
    arrival (``observed_start_ms``; a live recording starts at its time of day) to the horizon.

    Columns: ``time_ms`` (start of each step), ``instances`` (alive at that instant),
    ``mean_instances`` (time-average over [time_ms, time_ms + step_ms), so short spikes
    between samples still count), ``memory_mb`` (memory held at that instant).
    """
    import pandas as pd  # heavy import kept local

    if not step_ms > 0:
        raise ValueError(f"step_ms must be positive, got {step_ms!r}")
    created, died, memory_mb = _instance_intervals(result)
    horizon = max(float(result.horizon_ms), float(died.max()) if died.size else 0.0)
    first = np.floor(observed_start_ms(result) / step_ms) * step_ms
    n_steps = max(1, int(np.ceil((horizon - first) / step_ms)))
    t = first + np.arange(n_steps, dtype=np.float64) * step_ms

    c_order, d_order = np.argsort(created, kind="stable"), np.argsort(died, kind="stable")
    c_sorted, d_sorted = created[c_order], died[d_order]
    # Alive at t: created <= t < died.
    born = np.searchsorted(c_sorted, t, side="right")
    dead = np.searchsorted(d_sorted, t, side="right")
    c_mem = np.concatenate([[0.0], np.cumsum(memory_mb[c_order])])
    d_mem = np.concatenate([[0.0], np.cumsum(memory_mb[d_order])])

    # Integral of the alive count from 0 to t = sum_i (min(t, died_i) - min(t, created_i)).
    c_prefix = np.concatenate([[0.0], np.cumsum(c_sorted)])
    d_prefix = np.concatenate([[0.0], np.cumsum(d_sorted)])
    edges = np.append(t, t[-1] + step_ms)
    alive_integral = _sum_min(d_sorted, d_prefix, edges) - _sum_min(c_sorted, c_prefix, edges)
    return pd.DataFrame({
        "time_ms": t,
        "instances": (born - dead).astype(np.int64),
        "mean_instances": np.diff(alive_integral) / step_ms,
        "memory_mb": c_mem[born] - d_mem[dead],
    })
