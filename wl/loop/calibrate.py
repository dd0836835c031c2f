"""``wl calibrate``: fit a platform profile (``wlsim.profile.Profile``) from live load runs.

From each request of one or more ``wl load`` runs (valid ones only: a late driver distorts
every number):

- cold start (router side: arrival at the router to the start of execution, the X-WL-Wait-Ms
  of a request that rode its instance's spawn): p10/p50/p90/p99 per ABI, and a least-squares
  slope against the function's configured memory (clipped at 0; the per-function medians are
  what is fitted, so a busy function does not dominate);
- per-request overhead: the time the router saw the instance busy minus the duration the
  request asked the synthetic function for (instantiation of the ABI 1 module, the call);
- the HTTP front: ``delay_ms`` and ``per_request_ms`` of the FIFO model in wlsim.profile,
  grid-searched to fit the router's recorded arrival of each request against its send time;
- the client's response path: client latency minus the router's own part, median.
"""

from __future__ import annotations

import platform as _platform
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from wl.loop.load import LoadError, LoadResult
from wlsim.profile import AbiColdStart, ClientSpec, ColdStartSpec, FrontSpec, Profile, front_arrivals

SYNTHETIC_ABI = "wasi-command"


def _ok(records: pd.DataFrame) -> pd.DataFrame:
    return records[records["status"] == 200]


def cold_start_samples(results: Sequence[LoadResult]) -> pd.DataFrame:
    """Cold requests of every run: function, memory_mb, cold_ms."""
    parts = []
    for r in results:
        ok = _ok(r.records)
        cold = ok[ok["cold"].fillna(False).astype(bool)]
        parts.append(pd.DataFrame({"function": cold["function"], "memory_mb": cold["memory_mb"],
                                   "cold_ms": cold["wait_ms"].astype(float)}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["function", "memory_mb", "cold_ms"])


def fit_memory_slope(samples: pd.DataFrame) -> tuple[float, float]:
    """(base_ms, per_mb_ms) through the per-function median cold starts; slope clipped at 0."""
    per_fn = samples.groupby("function").agg(memory_mb=("memory_mb", "first"), cold_ms=("cold_ms", "median"))
    overall = float(samples["cold_ms"].median())
    if len(per_fn) < 3 or per_fn["memory_mb"].nunique() < 2:
        return overall, 0.0
    slope, intercept = np.polyfit(per_fn["memory_mb"].to_numpy(float), per_fn["cold_ms"].to_numpy(float), 1)
    if slope <= 0 or intercept < 0:
        return overall, 0.0
    return float(intercept), float(slope)


def fit_front(sent_ms: np.ndarray, router_ms: np.ndarray) -> tuple[float, float, float]:
    """(delay_ms, per_request_ms, mean absolute error ms) of the FIFO front model."""
    order = np.argsort(sent_ms, kind="stable")
    sent, arrived = sent_ms[order], router_ms[order]
    best = (float(np.median(arrived - sent)), 0.0, float("inf"))
    for s in np.concatenate([np.arange(0.0, 2.0, 0.05), np.arange(2.0, 10.0, 0.25)]):
        shaped = front_arrivals(sent, 0.0, s)
        d = max(0.0, float(np.percentile(arrived - shaped, 10)))
        err = float(np.mean(np.abs(front_arrivals(sent, d, s) - arrived)))
        if err < best[2] - 1e-9:
            best = (d, float(s), err)
    return best


def calibrate(results: Sequence[LoadResult], name: str = "wl", note: str = "") -> Profile:
    """Fit a profile from load runs; raises LoadError when there is nothing valid to fit."""
    valid = [r for r in results if r.info.get("valid")]
    if not valid:
        why = "; ".join(r.info.get("invalid_because", "?") for r in results) or "no runs given"
        raise LoadError(f"no valid load run to calibrate from ({why})")
    cold = cold_start_samples(valid)
    if len(cold) < 5:
        raise LoadError(f"only {len(cold)} cold starts in the runs: too few to fit (send bursts after idle gaps)")
    x = cold["cold_ms"].to_numpy(float)
    p10, p50, p90, p99 = (float(v) for v in np.percentile(x, [10, 50, 90, 99]))
    base, per_mb = fit_memory_slope(cold)

    records = pd.concat([_ok(r.records).assign(run=i) for i, r in enumerate(valid)], ignore_index=True)
    matched = records.dropna(subset=["router_arrival_ms", "router_busy_ms"]) if "router_arrival_ms" in records else \
        records.iloc[0:0]
    if len(matched):
        overhead = float(np.median(matched["router_busy_ms"] - matched["duration_ms"]))
        fronts = [fit_front(g["sent_ms"].to_numpy(float), g["router_arrival_ms"].to_numpy(float))
                  for _, g in matched.groupby("run")]
        delay = float(np.median([f[0] for f in fronts]))
        per_request = float(np.median([f[1] for f in fronts]))
        front_err = float(np.median([f[2] for f in fronts]))
        router_part = ((matched["router_arrival_ms"] - matched["sent_ms"]) + matched["wait_ms"]
                       + matched["router_busy_ms"])
        response = float(np.median(matched["latency_ms"] - router_part))
    else:  # the router's trace was not available: overheads from the headers alone
        overhead = float(np.median(records["exec_ms"] - records["duration_ms"]))
        delay = per_request = front_err = 0.0
        response = float(np.median(records["latency_ms"] - records["wait_ms"] - records["exec_ms"]))
    lateness = np.concatenate([r.records["lateness_ms"].to_numpy(float) for r in valid])
    measured = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": _platform.node(),
        "cpus": _cpu_count(), "runs": len(valid), "requests": len(records), "cold_starts": len(cold),
        "matched_with_router_trace": len(matched), "driver_lateness_p99_ms": float(np.percentile(lateness, 99)),
        "front_fit_mean_abs_error_ms": front_err,
        "code": "examples/build/synthetic.wasm (one code size: per_code_mb_ms not fitted)",
        "traces": sorted({str(r.info.get("trace", "")) for r in valid}), "note": note,
    }
    return Profile(
        name=name,
        source=f"measured on wl with `wl calibrate` ({len(valid)} load runs, {len(records)} requests, "
               f"{len(cold)} cold starts)",
        measured=measured,
        cold_start=ColdStartSpec(base_ms=round(base, 3), per_mb_ms=round(per_mb, 6), by_abi={
            SYNTHETIC_ABI: AbiColdStart(p50_ms=round(p50, 3), p10_ms=round(p10, 3), p90_ms=round(p90, 3),
                                        p99_ms=round(p99, 3), samples=len(cold),
                                        quantiles_ms=[round(float(q), 3)
                                                      for q in np.percentile(x, range(0, 101, 5))])}),
        request_overhead_ms=round(max(0.0, overhead), 3),
        front=FrontSpec(delay_ms=round(delay, 3), per_request_ms=round(per_request, 3)),
        client=ClientSpec(response_ms=round(max(0.0, response), 3)),
    )


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 0


def probe_plan(seed: int = 0, functions: int = 6, seconds: float = 30.0) -> Any:
    """A load of its own for calibrating without a trace: functions of 64 MB to 2 GB, each in
    bursts of 1-8 requests (20-200 ms each) separated by idle gaps of 0.5-4 s, so it has cold
    starts, warm hits and queueing."""
    from wl.loop.load import plan_load

    rng = np.random.default_rng(seed)
    rows = []
    memories = np.linspace(64, 2048, functions).round()
    for k in range(functions):
        t = float(rng.uniform(0, 1000))
        while t < seconds * 1000.0:
            for _ in range(int(rng.integers(1, 9))):
                rows.append((f"probe-{k}", f"probe-{k}", t + float(rng.uniform(0, 20)), float(rng.uniform(20, 200)),
                             float(memories[k])))
            t += float(rng.uniform(500, 4000))
    table = pd.DataFrame(rows, columns=["app", "function", "arrival_ms", "duration_ms", "memory_mb"])
    return plan_load(table, speed=1.0, duration_scale=1.0, source="calibration probe")
