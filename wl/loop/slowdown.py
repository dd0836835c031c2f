"""An experimental cold-start model for ``wl fidelity``: the platform's CPU slowdown.

Live on this 2-core machine a cold start is ~3 ms when the platform is quiet and tens of ms
when it is saturated (the opening burst of the Azure slice: ~250 requests/s for 4 s). The
profiles draw each spawn's cold start independently (``wl``) or by the requests in flight
(``wl-load``); a policy that reads its functions' measured cold starts (the learned one keeps
or kills by their EWMA, with a cliff at ~5 ms) then sees the long ones at the wrong times
(bench/README.md, 2026-12-02 03:40). Here a spawn's cold start is

    base / (1 - rho),   rho = min(max_utilization, (a * arrivals + b * spawns) / window)

with ``arrivals`` the requests that reached the router and ``spawns`` the earlier spawns, both
in the last ``window`` ms: ``a`` and ``b`` are the CPU ms one request and one spawn cost, and
1 / (1 - rho) is a processor-sharing server's slowdown at utilization rho. ``base`` is drawn
from the cold starts after the run's first ``settle_ms`` (the steady state: the opening
burst's slow starts are what the slowdown has to produce). ``a`` and ``b`` are fitted by least
squares on log(cold start). Fitted leave-one-out on the other policies' runs of one session it
put the learned policy's recorded replay at +3.2% cold starts (the ``wl`` profile: -19%) and
kept fixed_ttl, default and hybrid_histogram within 1.5% (two sessions); the learned policy's
mean instances stayed -12.5% off, and with a base that keeps the early tail it is -24% again.
So it is a check (``bench/fidelity.py --slowdown``, ``--slowdown-from`` an earlier session's
output folder), not a profile: whether a and b and a tight base carry over between sessions is
not measured yet.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

QUANTILE_PROBS = range(0, 101, 5)


@dataclass(frozen=True)
class Slowdown:
    window_ms: float
    per_request_ms: float                   # a: CPU ms per request reaching the router
    per_spawn_ms: float                     # b: CPU ms per spawn
    base_quantiles_ms: tuple[float, ...]    # the steady-state cold start, at 0, 5, ..., 100 %
    max_utilization: float = 0.95
    r2_log: float = float("nan")            # share of the variance of log(cold start) explained

    def factor(self, arrivals: float, spawns: float) -> float:
        rho = min(self.max_utilization, (self.per_request_ms * arrivals + self.per_spawn_ms * spawns) / self.window_ms)
        return 1.0 / (1.0 - rho)


def spawn_load(recorded: pd.DataFrame, window_ms: float) -> pd.DataFrame:
    """Per cold request of a router recording: its time, its cold start, the requests that
    reached the router and the earlier cold requests in the ``window_ms`` before it."""
    rec = recorded.sort_values("arrival_ms", kind="stable")
    arrivals = rec["arrival_ms"].to_numpy(float)
    cold = rec[rec["cold"].fillna(False).astype(bool)]
    t = cold["arrival_ms"].to_numpy(float)
    return pd.DataFrame({
        "t_ms": t, "cold_ms": cold["cold_start_ms"].to_numpy(float),
        "arrivals": np.searchsorted(arrivals, t, "right") - np.searchsorted(arrivals, t - window_ms, "right"),
        "spawns": np.arange(len(t)) - np.searchsorted(t, t - window_ms, "left"),
    })


def fit_slowdown(recordings: Sequence[pd.DataFrame], window_ms: float = 500.0, settle_ms: float = 8000.0,
                 max_utilization: float = 0.95) -> Slowdown:
    """``Slowdown`` fitted to the cold starts of router recordings (see the module docstring);
    raises ValueError when they hold too few cold starts after ``settle_ms``."""
    samples = pd.concat([spawn_load(r, window_ms) for r in recordings], ignore_index=True)
    steady = samples.loc[samples["t_ms"] > settle_ms, "cold_ms"].to_numpy(float)
    if steady.size < 10 or len(samples) < 20:
        raise ValueError(f"too few cold starts to fit a slowdown ({len(samples)}, {steady.size} after "
                         f"{settle_ms:g} ms)")
    base = tuple(float(q) for q in np.percentile(steady, QUANTILE_PROBS))
    y = np.log(np.maximum(samples["cold_ms"].to_numpy(float), 1e-3) / base[len(base) // 2])
    arrivals, spawns = samples["arrivals"].to_numpy(float), samples["spawns"].to_numpy(float)
    best = (np.inf, 0.0, 0.0)
    for a in np.linspace(0.0, 6.0, 61):
        for b in np.linspace(0.0, 40.0, 81):
            rho = np.minimum(max_utilization, (a * arrivals + b * spawns) / window_ms)
            err = float(np.mean((y + np.log1p(-rho)) ** 2))
            if err < best[0]:
                best = (err, float(a), float(b))
    total = float(np.mean((y - y.mean()) ** 2))
    return Slowdown(window_ms, best[1], best[2], base, max_utilization,
                    1.0 - best[0] / total if total > 0 else float("nan"))


def simulate_slowdown(table: pd.DataFrame, policy: str, slowdown: Slowdown, seed: int = 0) -> Any:
    """Replay ``table`` with each spawn's cold start drawn from ``slowdown`` (the engine's own
    per-function value is set just before each spawn, as ``simulate_cold_starts_at`` does)."""
    from policies.registry import load_policy
    from wlsim.config import ColdStartModel, SimConfig, draw_quantile
    from wlsim.engine import Simulation

    rng = np.random.default_rng(seed)
    window = slowdown.window_ms

    class Slowed(Simulation):
        spawned: list[float]

        def emit_spawn(self, inst: Any, row: Any, now: float) -> None:
            times = self.__dict__.setdefault("spawned", [])
            arrived = self._arrival            # the trace's arrival times (ascending)
            n_arrivals = bisect.bisect_right(arrived, now) - bisect.bisect_right(arrived, now - window)
            n_spawns = len(times) - bisect.bisect_left(times, now - window)
            times.append(now)
            inst.fn.cold_start_ms = draw_quantile(slowdown.base_quantiles_ms, rng.random()) * \
                slowdown.factor(n_arrivals, n_spawns)
            super().emit_spawn(inst, row, now)

    # the functions' cold-start prior (before their first measured one) as in the profile replays
    median = slowdown.base_quantiles_ms[len(slowdown.base_quantiles_ms) // 2]
    config = SimConfig(cold_start=ColdStartModel(base_ms=median, per_mb_ms=0.0), seed=seed)
    return Slowed(table, config, load_policy(policy)).run()


def session_recordings(folder: str | Path) -> list[pd.DataFrame]:
    """The router recordings of an earlier ``bench/fidelity.py`` / ``wl fidelity`` output folder
    (its ``live-*/recorded.parquet``); raises ValueError naming the folder when it has none."""
    found = sorted(Path(folder).glob("live-*/recorded.parquet"))
    if not found:
        raise ValueError(f"{folder}: no live-*/recorded.parquet (not a wl fidelity output folder?)")
    return [pd.read_parquet(path) for path in found]


def slowdown_check(results: Sequence[Any], window_ms: float = 500.0, seeds: int = 3,
                   reference: Sequence[pd.DataFrame] | None = None) -> list[dict[str, Any]]:
    """For each policy of a ``wl fidelity`` session (``PolicyFidelity``): the slowdown fitted on
    the *other* policies' router recordings (or on ``reference``: recordings of another session,
    to see whether the fit carries over), its recorded replay's cold starts and mean instances
    against live (mean over ``seeds``), as relative errors."""
    from wl.loop.fidelity import live_metrics, rel_error
    from wlsim.metrics import summarize

    out = []
    recorded = {f.policy: f.load.recorded for f in results if f.load.recorded is not None and len(f.load.recorded)}
    for f in results:
        others = list(reference) if reference is not None else [r for p, r in recorded.items() if p != f.policy]
        if f.policy not in recorded or not others:
            continue
        try:
            model = fit_slowdown(others, window_ms)
        except ValueError as error:
            out.append({"policy": f.policy, "error": str(error)})
            continue
        rec = recorded[f.policy]
        cols = [c for c in ("app", "function", "arrival_ms", "duration_ms", "memory_mb", "payload_bytes") if c in rec]
        table = rec[cols].reset_index(drop=True)
        runs = [summarize(simulate_slowdown(table, f.policy, model, seed)) for seed in range(seeds)]
        live = live_metrics(f.load)
        out.append({"policy": f.policy, "fitted_on": "reference session" if reference is not None else
                    "the session's other policies", "window_ms": window_ms, "per_request_ms": model.per_request_ms,
                    "per_spawn_ms": model.per_spawn_ms, "r2_log": model.r2_log,
                    "base_p50_ms": model.base_quantiles_ms[len(model.base_quantiles_ms) // 2],
                    "cold_starts": [float(r["cold_starts"]) for r in runs],
                    "error_cold_starts": rel_error(float(np.mean([r["cold_starts"] for r in runs])),
                                                   live["cold_starts"]),
                    "error_mean_instances": rel_error(float(np.mean([r["mean_instances"] for r in runs])),
                                                      live["mean_instances"])})
    return out
