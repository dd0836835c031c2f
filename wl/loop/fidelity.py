"""``wl fidelity``: the same trace live and in the calibrated simulator, per policy.

For each policy: a fresh platform (or the one at ``--url``) runs the load plan (``wl load``),
and the simulator replays it twice with the profile's cold starts:

- ``intended``: the trace as sent (each request at the time the driver actually sent it, so
  the driver's own lateness is not counted against the model), reshaped by the profile (the
  HTTP front's FIFO and the per-request overhead): what the simulator predicts from the
  workload alone, without the platform's recording;
- ``recorded``: the router's own trace of the run (arrival at the router, time busy), which
  needs no reshaping, with the profile's cold starts: the model and the profile's cold starts;
- ``recorded_cold``: the same, but each spawn takes the cold start the platform had at that
  moment (the function's own recorded cold start nearest in time; a function that had none
  live takes the nearest of any function): the model alone, fed every timing the platform
  showed. On this 2-core machine the cold start grows with load
  (bursts of spawns: p50 ~4 ms idle, hundreds of ms in a burst of 100 spawns/s), which the
  profile's distribution does not model; a policy that reads the cold-start time (``default``
  prices its keep-alive with it) then keeps instances far longer live than with the profile's
  draws. This replay separates that platform effect from the policy model.

Live numbers are ``wlsim.metrics.summarize`` of the live run rebuilt as a SimResult
(``wl.loop.live.live_result``: per request from the router's trace, per instance from the
requests' X-WL-Instance and the router's state polls), so live and simulated runs share one
definition of cold starts, instances (alive from the first arrival to the last completion) and
idle GB-s; router-side added latency = arrival at the router to the start of execution
(X-WL-Wait-Ms; the simulator's wait_ms + cold_start_ms); client-side added latency = client
latency - the requested duration. A run without the router's trace falls back to the polled
instance counts. Each live/sim pair gets a relative error (sim - live) / live.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from wl.loop.load import LoadPlan, LoadResult, run_load
from wlsim.profile import Profile, function_info, synthetic_code_bytes

if TYPE_CHECKING:
    from policies.interface import Policy

METRICS = ("cold_starts", "router_added_p50_ms", "router_added_p99_ms", "client_added_p50_ms",
           "client_added_p99_ms", "mean_instances", "peak_instances", "idle_gb_s")
KILL_AT_ONCE = "fixed_ttl:ttl_ms=1"   # the warm-up's policy: compile the code, keep no instance


@dataclass
class PolicyFidelity:
    policy: str
    live: dict[str, float]
    intended: dict[str, float]
    recorded: dict[str, float]
    recorded_cold: dict[str, float]         # the recording replayed with the live cold-start times
    cold_match: float                       # per-request cold/warm agreement, intended sim vs live
    per_function: pd.DataFrame              # function, live, intended, recorded cold starts
    load: LoadResult
    sims: dict[str, Any]                    # "intended"/"recorded" -> SimResult
    conditioning: dict[str, Any] = field(default_factory=dict)   # see conditioning(); {} when not run

    def errors(self, which: str = "intended") -> dict[str, float]:
        sim = {"intended": self.intended, "recorded": self.recorded, "recorded_cold": self.recorded_cold}[which]
        return {m: rel_error(sim[m], self.live[m]) for m in METRICS}

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "valid": bool(self.load.info.get("valid")),
                "invalid_because": self.load.info.get("invalid_because", ""),
                "live": self.live, "intended": self.intended, "recorded": self.recorded,
                "recorded_cold": self.recorded_cold,
                "error_intended": self.errors("intended"), "error_recorded": self.errors("recorded"),
                "error_recorded_cold": self.errors("recorded_cold"),
                "cold_match": self.cold_match, "load": self.load.summary(), "conditioning": self.conditioning,
                "per_function": self.per_function.to_dict("records"), "series": self.series()}

    def live_run(self) -> Any:
        """The live run as a SimResult (wl.loop.live), or None for a run without the router's
        trace joined or the state polls per instance."""
        from wl.loop.live import live_result
        from wl.loop.load import LoadError

        if self.load.instance_samples is None:
            return None
        try:
            return live_result(self.load, self.policy)
        except LoadError:
            return None

    def series(self, step_ms: float = 500.0) -> dict[str, Any]:
        """What the plots draw, small enough to keep in fidelity.json (e.g. for a notebook):
        instances over time (``wlsim.metrics.instances_over_time``'s step means, live and each
        replay) and router-side added latency (wait + cold start) at the percentiles 0..100."""
        from wlsim.metrics import instances_over_time

        runs = {"live": self.live_run(), **self.sims}
        q = np.linspace(0, 100, 101)
        out: dict[str, Any] = {"step_ms": step_ms, "instances": {}, "added_ms_percentiles": {"q": q.tolist()}}
        for name, run in runs.items():
            if run is None:
                continue
            inst = instances_over_time(run, step_ms)
            out["instances"][name] = {"time_s": (inst["time_ms"] / 1000.0).round(3).tolist(),
                                      "instances": inst["mean_instances"].round(3).tolist()}
            req = run.requests[~run.requests["rejected"].to_numpy(bool)]
            added = (req["wait_ms"].fillna(0.0) + req["cold_start_ms"].fillna(0.0)).to_numpy(float)
            out["added_ms_percentiles"][name] = np.percentile(added, q).round(3).tolist() if added.size else []
        return out


def rel_error(sim: float, live: float) -> float:
    if not (math.isfinite(sim) and math.isfinite(live)):
        return float("nan")
    if live == 0:
        return 0.0 if sim == 0 else float("inf")
    return (sim - live) / live


# ------------------------------------------------------------------------- live metrics

def live_metrics(load: LoadResult) -> dict[str, float]:
    r = load.records
    ok = r[r["status"] == 200]
    router_added = ok["wait_ms"].to_numpy(float)
    client_added = (ok["latency_ms"] - ok["duration_ms"]).to_numpy(float)
    out = {"router_added_p50_ms": _pct(router_added, 50), "router_added_p99_ms": _pct(router_added, 99),
           "client_added_p50_ms": _pct(client_added, 50), "client_added_p99_ms": _pct(client_added, 99)}
    polled = polled_instances(load)
    if "router_start_ms" in r and load.instance_samples is not None and r["router_start_ms"].notna().any():
        from wl.loop.live import live_result
        from wlsim.metrics import summarize

        s = summarize(live_result(load))
        out.update({m: float(s[m]) for m in ("cold_starts", "mean_instances", "peak_instances", "idle_gb_s",
                                             "served", "rejected")})
        out.update({f"{k}_polled": v for k, v in polled.items()})
        return out
    return {**out, **polled, "cold_starts": float(ok["cold"].fillna(False).astype(bool).sum()),
            "served": float(len(ok)), "rejected": float((r["status"] == 429).sum())}


def polled_instances(load: LoadResult) -> dict[str, float]:
    """Mean/peak instances and idle GB-s from the router's state polls (instance counts per
    function every ``sample_ms``): the check on ``live_result``'s rebuilt instance table, and
    the numbers of a run recorded without the router's trace."""
    r = load.records
    inst = load.instances
    end = float(np.nanmax(r["sent_ms"] + r["latency_ms"])) if len(r) else 0.0
    inst = inst[(inst["t_ms"] >= 0) & (inst["t_ms"] <= end)]
    per_sample = inst.assign(alive=inst["starting"] + inst["busy"] + inst["idle"],
                             idle_mb=inst["idle"] * inst["memory_mb"]).groupby("t_ms")[["alive", "idle_mb"]].sum()
    # Each sample holds until the next one (or the end of the run): time-weighted, because a
    # busy router answers the state poll late and the samples are then further apart.
    t = per_sample.index.to_numpy(float)
    dt = np.diff(t, append=max(end, t[-1])) if t.size else t
    weight = float(dt.sum())
    return {
        "mean_instances": float((per_sample["alive"].to_numpy() * dt).sum() / weight) if weight > 0 else float("nan"),
        "peak_instances": float(per_sample["alive"].max()) if len(per_sample) else float("nan"),
        "idle_gb_s": float((per_sample["idle_mb"].to_numpy() * dt).sum()) / 1024.0 / 1000.0,
    }


def _pct(x: np.ndarray, q: float) -> float:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if x.size else float("nan")


def sim_metrics(result: Any, scheduled_ms: np.ndarray | None, duration_ms: np.ndarray | None,
                response_ms: float) -> dict[str, float]:
    from wlsim.metrics import summarize

    s = summarize(result)
    req = result.requests.sort_values("request_id", kind="stable")
    served = ~req["rejected"].to_numpy(bool)
    added = (req["wait_ms"].fillna(0.0) + req["cold_start_ms"].fillna(0.0)).to_numpy(float)[served]
    out = {"cold_starts": float(s["cold_starts"]),
           "router_added_p50_ms": _pct(added, 50), "router_added_p99_ms": _pct(added, 99),
           "mean_instances": float(s["mean_instances"]), "peak_instances": float(s["peak_instances"]),
           "idle_gb_s": float(s["idle_gb_s"]), "served": float(s["served"]), "rejected": float(s["rejected"])}
    if scheduled_ms is not None and duration_ms is not None:
        client = (req["end_ms"].to_numpy(float) - scheduled_ms + response_ms - duration_ms)[served]
        out["client_added_p50_ms"], out["client_added_p99_ms"] = _pct(client, 50), _pct(client, 99)
    else:
        out["client_added_p50_ms"] = out["client_added_p99_ms"] = float("nan")
    return out


# ------------------------------------------------------------------------- the comparison

def as_sent(load: LoadResult) -> pd.DataFrame:
    """The plan with each request at its actual send time (a request never sent keeps its
    scheduled time); rows stay in plan order, so request ids match the load's records."""
    table = load.plan.canonical()
    sent = load.records["sent_ms"].to_numpy(float)
    # a timer may fire a fraction of a ms early: the first send can be just before t0
    sent = np.where(np.isfinite(sent), np.maximum(sent, 0.0), table["arrival_ms"].to_numpy(float))
    # a send that had to open a connection is written ms after later ones; the simulator needs sorted
    # arrivals and the rows must keep their ids, so such a send counts at its predecessor's time
    return table.assign(arrival_ms=np.maximum.accumulate(sent))


def simulate_both(load: LoadResult, policy: str, profile: Profile, code_bytes: int) -> dict[str, Any]:
    from wlsim.engine import simulate

    config = profile.sim_config(function_info(load.plan.functions["function"], code_bytes=code_bytes))
    intended = simulate(profile.shape_trace(as_sent(load)), policy, config)
    out = {"intended": intended}
    if load.recorded is not None and len(load.recorded):
        # the payload sizes too: the platform's duration estimate reads them (what the router saw)
        cols = ["app", "function", "arrival_ms", "duration_ms", "memory_mb"] + \
            [c for c in ("payload_bytes",) if c in load.recorded]
        table = load.recorded[cols].reset_index(drop=True)
        out["recorded"] = simulate(table, policy, config)
        cold = load.recorded[load.recorded["cold"].fillna(False).astype(bool)] if "cold" in load.recorded else None
        if cold is not None and len(cold):
            cold = cold.sort_values("arrival_ms", kind="stable")
            out["recorded_cold"] = simulate_cold_starts_at(
                table, policy, profile.sim_config(), cold["arrival_ms"].to_numpy(float),
                cold["cold_start_ms"].to_numpy(float), cold["function"].astype(str).to_numpy())
    return out


def simulate_cold_starts_at(table: pd.DataFrame, policy: str, config: Any, at_ms: np.ndarray,
                            cold_ms: np.ndarray, functions: np.ndarray | None = None) -> Any:
    """Replay ``table`` with each spawn's cold start = ``cold_ms`` of the time in ``at_ms``
    (ascending) nearest the spawn: among the spawning function's own (``functions``: the
    function of each entry), or of any function when it has none there or ``functions`` is
    None. A policy that reads the function's own cold-start estimate (the learned policy's
    EWMA decides keep or kill near ~5 ms) must get that function's times, not a neighbour's.
    ``config``'s functions must draw no cold starts of their own (no quantile tables): the
    engine then takes the function's ``cold_start_ms`` at each spawn, which this sets just
    before it."""
    from policies.registry import load_policy
    from wlsim.engine import Simulation

    at_ms, cold_ms = np.asarray(at_ms, float), np.asarray(cold_ms, float)
    own: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if functions is not None:
        names = np.asarray(functions).astype(str)
        own = {name: (at_ms[names == name], cold_ms[names == name]) for name in np.unique(names)}

    def nearest(times: np.ndarray, values: np.ndarray, now: float) -> float:
        k = int(np.searchsorted(times, now))
        if k == len(times) or (k > 0 and now - times[k - 1] <= times[k] - now):
            k -= 1
        return float(values[k])

    class ColdStartsAt(Simulation):
        def emit_spawn(self, inst: Any, row: Any, now: float) -> None:
            times, values = own.get(inst.fn.name, (at_ms, cold_ms))
            inst.fn.cold_start_ms = nearest(times, values, now)
            super().emit_spawn(inst, row, now)

    t0 = time.perf_counter()
    result = ColdStartsAt(table, config, load_policy(policy)).run()
    result.wall_s = time.perf_counter() - t0
    return result


def compare_run(load: LoadResult, policy: str, profile: Profile, code_bytes: int) -> PolicyFidelity:
    sims = simulate_both(load, policy, profile, code_bytes)
    sent = as_sent(load)
    intended = sim_metrics(sims["intended"], sent["arrival_ms"].to_numpy(float), sent["duration_ms"].to_numpy(float),
                           profile.client.response_ms)
    recorded = sim_metrics(sims["recorded"], None, None, 0.0) if "recorded" in sims else \
        dict.fromkeys(intended, float("nan"))
    recorded_cold = sim_metrics(sims["recorded_cold"], None, None, 0.0) if "recorded_cold" in sims else \
        dict.fromkeys(intended, float("nan"))
    live = live_metrics(load)
    r = load.records
    sim_req = sims["intended"].requests.sort_values("request_id", kind="stable")
    both = r["status"].eq(200).to_numpy() & ~sim_req["rejected"].to_numpy(bool)
    live_cold = r["cold"].fillna(False).astype(bool).to_numpy()
    cold_match = float(np.mean(live_cold[both] == sim_req["cold"].to_numpy(bool)[both])) if both.any() else float("nan")
    per_fn = pd.DataFrame({"live": r[r["status"] == 200].groupby("function")["cold"].sum().astype(int),
                           "intended": sim_req[sim_req["cold"]].groupby("function").size()})
    for which in ("recorded", "recorded_cold"):
        if which in sims:
            rec = sims[which].requests
            per_fn[which] = rec[rec["cold"]].groupby("function").size()
    per_fn = per_fn.fillna(0).astype(int).rename_axis("function").reset_index()
    return PolicyFidelity(policy, live, intended, recorded, recorded_cold, cold_match, per_fn, load, sims)


def conditioning(load: LoadResult, policy: str | Policy, profile: Profile, code_bytes: int, *, seeds: int = 5,
                 scales: Sequence[float] = (0.8, 1.25)) -> dict[str, Any]:
    """How far the recorded replay's cold starts can be trusted to the issue's +-5%: the same
    replay (the router's recording, the profile's cold starts) with other seeds of the cold-start
    draws, and with every cold-start time scaled by ``scales``. Cold starts as relative changes
    against seed 0 (the ``recorded`` replay).

    Why: a policy whose decision turns on the measured cold-start time can sit at a cliff. The
    bundled learned policy (``azure40``, trained with the simulator's default 250 ms + 0.5 ms/MB
    cold starts) keeps or kills an instance by its function's cold-start estimate (the EWMA of
    its measured cold starts): replaying the 02:17 quiet-machine run's recording with a constant
    cold start of <= 4.5 ms, 2,243-2,246 of its 2,246 requests are cold; 5 ms 1,923, 6 ms 1,265,
    8 ms 874 (live: 1,204). wl's cold starts are 3-5 ms, so the
    prediction moves with the cold-start level (x0.8: +29%) and with where the few long ones
    fall (the EWMA decides per function and is self-reinforcing: killing brings ~3 ms cold
    starts that keep it low). fixed_ttl, hybrid_histogram and default barely move."""
    from wlsim.engine import simulate
    from wlsim.metrics import summarize

    if load.recorded is None or not len(load.recorded):
        return {}
    cols = ["app", "function", "arrival_ms", "duration_ms", "memory_mb"] + \
        [c for c in ("payload_bytes",) if c in load.recorded]
    table = load.recorded[cols].reset_index(drop=True)
    info = function_info(load.plan.functions["function"], code_bytes=code_bytes)

    def cold_starts(prof: Profile, seed: int = 0) -> float:
        return float(summarize(simulate(table, policy, prof.sim_config(info, seed=seed)))["cold_starts"])

    base = cold_starts(profile)
    by_seed = [base] + [cold_starts(profile, seed) for seed in range(1, seeds)]
    return {"cold_starts_seed0": base, "seeds": seeds,
            "seed_range": [rel_error(min(by_seed), base), rel_error(max(by_seed), base)],
            "scaled": {f"x{f:g}": rel_error(cold_starts(profile.with_cold_starts_scaled(f)), base) for f in scales}}


def run_policy_live(plan: LoadPlan, policy: str, *, url: str | None = None, token: str | None = None,
                    nodes: int = 1, workers: int = 200, max_lateness_ms: float = 50.0, mode: str = "sleep",
                    sample_ms: float = 200.0, data_dir: str | Path | None = None, log: Any = print) -> LoadResult:
    """Run ``plan`` live under ``policy``: on a fresh platform of its own (compiled code warmed
    first, so cold starts are the steady-state ones the model knows), or on the one at ``url``."""
    from wlruntime.router.client import RouterClient

    platform = None
    if url is None:
        from wl.testing import start_platform

        folder = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="wl-fidelity-"))
        platform = start_platform(folder, nodes=nodes, policy=KILL_AT_ONCE, node_memory_mb=10_000_000,
                                  node_workers=workers)
        url, token = platform.router_url, platform.token
    try:
        with RouterClient(url, token, timeout=60.0) as client:
            from wl.loop.load import prepare_functions

            prepare_functions(client, plan, deploy_synthetic=True)
            if platform is not None:
                warm_up(client, plan)
            # the warm-up's traffic must not be in the statistics the policy reads (arrivals per
            # window, time of day, cold-start and duration estimates): the simulator starts without
            client.set_policy(policy, fresh_statistics=platform is not None)
        log(f"  {policy}: sending {len(plan.requests):,} requests over {plan.span_s:.1f} s")
        return run_load(url, token, plan, mode=mode, max_lateness_ms=max_lateness_ms, sample_ms=sample_ms)
    finally:
        if platform is not None:
            platform.stop()


def warm_up(client: Any, plan: LoadPlan, timeout_s: float = 60.0) -> None:
    """Invoke every function (the node compiles and caches its code) and then as many at once as
    the plan may run (a fresh node's first spawns into unused wasm memory slots take hundreds of
    ms on this machine, measured: the model is of the steady state), under the kill-at-once
    policy; then wait until no instance is left."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from wl.loop.load import _peak_concurrency
    from wlruntime.router.client import RouterClient

    names = list(plan.functions["deployed"])
    for name in names:
        client.invoke(name, b"0 0 sleep")
    count = min(200, max(2 * len(names), 2 * _peak_concurrency(plan.requests)))
    # one client per thread: one httpx client shared by the 32 threads failed 2 of 4 runs on
    # 2026-12-02 with EBADF (its connection pool racing on a connection the server had closed)
    local, clients = threading.local(), []

    def invoke(i: int) -> Any:
        own = getattr(local, "client", None)
        if own is None:
            own = local.client = RouterClient(client.base_url, client.token, timeout=60.0)
            clients.append(own)
        return own.invoke(names[i % len(names)], b"20 0 sleep")

    try:
        with ThreadPoolExecutor(32) as pool:
            for _ in range(2):
                list(pool.map(invoke, range(count)))
    finally:
        for own in clients:
            own.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(fn["instances"] for fn in client.state()["functions"].values()):
            return
        time.sleep(0.05)


def fidelity(plan: LoadPlan, policies: Sequence[str], profile: Profile, *, url: str | None = None,
             token: str | None = None, nodes: int = 1, workers: int = 200, max_lateness_ms: float = 50.0,
             mode: str = "sleep", log: Any = print, keep: Path | None = None) -> list[PolicyFidelity]:
    """Each policy live, in turn, compared with the simulator. ``keep``: a folder where each live
    run is written (``live-<policy>``) as soon as it ends, so a later policy's failure loses none
    of the finished runs (``wl fidelity TRACE --live FOLDER...`` compares them afterwards)."""
    code_bytes = synthetic_code_bytes()
    out = []
    for policy in policies:
        try:
            load = run_policy_live(plan, policy, url=url, token=token, nodes=nodes, workers=workers,
                                   max_lateness_ms=max_lateness_ms, mode=mode, log=log)
        except Exception:
            if keep is not None and out:
                log(f"  {policy}: the run failed; the finished runs are kept in {keep}: "
                    + ", ".join(f"live-{_safe(f.policy)}" for f in out))
            raise
        if keep is not None:
            load.write(keep / f"live-{_safe(policy)}")
        out.append(compare_run(load, policy, profile, code_bytes))
    return out


# ------------------------------------------------------------------------- output

LABELS = {"cold_starts": "cold starts", "router_added_p50_ms": "router added p50 ms",
          "router_added_p99_ms": "router added p99 ms", "client_added_p50_ms": "client added p50 ms",
          "client_added_p99_ms": "client added p99 ms", "mean_instances": "mean instances",
          "peak_instances": "peak instances", "idle_gb_s": "idle GB-s"}


def write_report(results: Sequence[PolicyFidelity], out: Path, meta: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for f in results:
        for m in METRICS:
            rows.append({"policy": f.policy, "metric": m, "live": f.live[m], "sim_intended": f.intended[m],
                         "error_intended": f.errors("intended")[m], "sim_recorded": f.recorded[m],
                         "error_recorded": f.errors("recorded")[m], "sim_recorded_cold": f.recorded_cold[m],
                         "error_recorded_cold": f.errors("recorded_cold")[m]})
        f.load.write(out / f"live-{_safe(f.policy)}")
    table = pd.DataFrame(rows)
    table.to_csv(out / "fidelity.csv", index=False)
    doc = {**meta, "policies": [f.to_dict() for f in results]}
    (out / "fidelity.json").write_text(json.dumps(_json_safe(doc), indent=2) + "\n")
    plot(results, out)
    return out


def _safe(spec: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec)


def _json_safe(v: Any) -> Any:
    from wl.loop.load import _json_safe as safe

    return safe(v)


def plot(results: Sequence[PolicyFidelity], out: Path) -> None:
    """instances over time and router-side added-latency CDFs, sim (intended) against live."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wlsim.metrics import instances_over_time

    n = len(results)
    fig, axes = plt.subplots(2, n, figsize=(5 * n, 7), squeeze=False)
    for k, f in enumerate(results):
        ax = axes[0][k]
        live_run = f.live_run()
        if live_run is not None:         # the same function draws live and simulated runs
            live = instances_over_time(live_run, 200.0)
            ax.plot(live["time_ms"] / 1000.0, live["instances"], label="live", lw=1.2)
        else:
            inst = f.load.instances
            live = inst.assign(alive=inst["starting"] + inst["busy"] + inst["idle"]).groupby("t_ms")["alive"].sum()
            ax.plot(live.index / 1000.0, live.to_numpy(), label="live (polled)", lw=1.2)
        for which, style in (("intended", "--"), ("recorded", ":"), ("recorded_cold", "-.")):
            if which in f.sims:
                sim = instances_over_time(f.sims[which], 200.0)
                ax.plot(sim["time_ms"] / 1000.0, sim["instances"], style, label=f"sim ({which})", lw=1.2)
        ax.set_title(f.policy)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("instances")
        ax.legend()
        ax = axes[1][k]
        ok = f.load.records[f.load.records["status"] == 200]
        _cdf(ax, ok["wait_ms"].to_numpy(float), "live (router)")
        _cdf(ax, (ok["latency_ms"] - ok["duration_ms"]).to_numpy(float), "live (client)")
        req = f.sims["intended"].requests
        added = (req["wait_ms"].fillna(0) + req["cold_start_ms"].fillna(0)).to_numpy(float)
        _cdf(ax, added[~req["rejected"].to_numpy(bool)], "sim (as sent)")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("added latency (ms)")
        ax.set_ylabel("fraction of requests")
        ax.legend()
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"fidelity.{ext}", dpi=120)
    plt.close(fig)


def _cdf(ax: Any, x: np.ndarray, label: str) -> None:
    x = np.sort(x[np.isfinite(x)])
    if x.size:
        ax.plot(x, np.arange(1, x.size + 1) / x.size, label=label, lw=1.2)
