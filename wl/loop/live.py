"""A live run as a ``wlsim.result.SimResult``, so ``wlsim.metrics`` summarises it with the same
code and the same definitions as a simulated run (cold starts, waits, instances, GB-s, cost).

Built from what ``wl load`` keeps:

- requests: the driver's records joined exactly with the router's trace (``_join_recorded``):
  arrival at the router, wait (cold start excluded), cold, cold_start_ms, start and end on the
  router's clock (run time), the instance each ran on (X-WL-Instance). ``exec_ms`` is the time
  the router saw the instance busy (the simulator's exec_ms is the trace duration it replays,
  which for a recording is that same busy time). A 429 is a rejection.
- instances, one per X-WL-Instance id, instance seen in a state poll or in the instance log:
  ``created_ms`` = the spawning request's start - its cold start (the router spawns when it
  routes the request; ``ready_ms`` = that start, as the model has it); an instance that served
  no cold request (pre-warmed) is created at the first poll that saw it, ready at its first
  request or that poll. When the run has the router's instance log (``instance_log.parquet``,
  ``/admin/trace?kind=instances``: every death with its created/ready/died times on the trace's
  clock) those times are exact and taken from it; an instance it lacks was alive at the end.
  Otherwise (runs recorded before the log) ``died_ms`` is estimated: the state polls give, for
  an idle instance, its remaining keep-alive: the last poll that saw it + that remainder (the
  kill the policy asked for), or, when it was not idle then, that poll's time; an instance no
  poll saw (it lived less than one poll interval) dies at its last execution's end. The polls
  come every ``sample_ms`` (200 ms): a death is known to that resolution at worst, exactly when
  its keep-alive ran out as planned, and keep-alives shorter than a poll lose their idle time
  (one fidelity run under a 25 ms TTL: 10.1 idle GB-s estimated, 46.4 from the log, 45.7
  simulated). ``busy_ms`` = the sum of its executions (concurrency 1), ``idle_ms`` = alive -
  starting - busy. As in the simulator, the run ends at the last completion (the horizon):
  instances still alive then die there, and instances created after it are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from wl.loop.load import LoadError, LoadResult
from wlsim.result import INSTANCE_COLUMNS, REQUEST_COLUMNS, SimResult


def live_result(load: LoadResult, policy: str = "live") -> SimResult:
    """The live run as a SimResult (see the module docstring); raises LoadError when the run
    has no router trace joined to it (e.g. the router's trace endpoint was unavailable)."""
    r = load.records
    if "router_start_ms" not in r or r["router_start_ms"].notna().sum() == 0:
        raise LoadError("this load run has no router trace joined to its requests (router_start_ms): "
                        "re-run it with this version of wl load")
    ok = (r["status"] == 200).to_numpy() & r["router_start_ms"].notna().to_numpy()
    rejected = (r["status"] == 429).to_numpy()
    start = r["router_start_ms"].to_numpy(float)
    end = r["router_end_ms"].to_numpy(float)
    # The simulator's horizon: the last completion; instances alive then die there, and one
    # started after it (e.g. a pre-warm the router's log caught) is not part of the run.
    horizon = float(np.nanmax(np.append(end[ok], 0.0)))
    instances = _instances(load, ok)
    instances = instances[instances["created_ms"].to_numpy(float) < horizon].reset_index(drop=True)
    ids = dict(zip(instances["instance"], range(len(instances))))
    arrival = np.where(ok, r["router_arrival_ms"].to_numpy(float), r["sent_ms"].to_numpy(float))
    cold = r["cold"].fillna(False).astype(bool).to_numpy() & ok
    cold_ms = np.where(cold, r["router_cold_start_ms"].fillna(0.0).to_numpy(float), 0.0)
    requests = pd.DataFrame({
        "request_id": r["request_id"].to_numpy(np.int64), "function": r["function"].astype(str).to_numpy(),
        "arrival_ms": arrival,
        "wait_ms": np.where(ok, np.maximum(0.0, start - arrival - cold_ms), np.nan),
        "cold": cold, "cold_start_ms": np.where(ok, cold_ms, np.nan),
        "exec_ms": np.where(ok, end - start, np.nan), "end_ms": np.where(ok, end, np.nan),
        "latency_ms": np.where(ok, end - arrival, np.nan),
        "instance_id": [ids.get(i, -1) if k else -1 for i, k in zip(r["instance"], ok)],
        "rejected": rejected,
    })
    # requests that neither ran nor were rejected (errors, timeouts) have no place in either table
    requests = requests[ok | rejected].astype(REQUEST_COLUMNS).reset_index(drop=True)
    died = np.minimum(instances["died_ms"].to_numpy(float), horizon)
    table = instances.assign(instance_id=np.arange(len(instances), dtype=np.int64), died_ms=died,
                             idle_ms=np.maximum(0.0, died - instances["ready_ms"].to_numpy(float)
                                                - instances["busy_ms"].to_numpy(float)))[list(INSTANCE_COLUMNS)]
    return SimResult(policy, requests, table.astype(INSTANCE_COLUMNS), horizon,
                     params={"source": "live", "trace": load.info.get("trace", ""), "speed": load.info.get("speed")})


def _instances(load: LoadResult, ok: np.ndarray) -> pd.DataFrame:
    r = load.records[ok]
    memory = dict(zip(load.plan.functions["function"], load.plan.functions["memory_mb"].astype(float)))
    busy = (r["router_end_ms"] - r["router_start_ms"]).to_numpy(float)
    runs = pd.DataFrame({"instance": r["instance"].astype(str).to_numpy(), "function": r["function"].to_numpy(),
                         "node": r["node"].astype(str).to_numpy(), "start": r["router_start_ms"].to_numpy(float),
                         "end": r["router_end_ms"].to_numpy(float), "busy": busy,
                         "cold": r["cold"].fillna(False).astype(bool).to_numpy(),
                         "cold_ms": r["router_cold_start_ms"].fillna(0.0).to_numpy(float)})
    spawned = runs[runs["cold"]].sort_values("start").groupby("instance").first()
    per = runs.groupby("instance").agg(function=("function", "first"), node=("node", "first"),
                                      first_start=("start", "min"), last_end=("end", "max"), busy_ms=("busy", "sum"),
                                      invocations=("start", "size"))
    samples = load.instance_samples
    if samples is not None and len(samples):
        seen = samples.sort_values("t_ms").groupby("instance").agg(
            function=("function", "first"), first_t=("t_ms", "first"), last_t=("t_ms", "last"),
            last_state=("state", "last"), last_left=("keepalive_left_ms", "last"))
        polls = np.unique(samples["t_ms"].to_numpy(float))
    else:
        seen = pd.DataFrame(columns=["function", "first_t", "last_t", "last_state", "last_left"])
        polls = np.empty(0)
    log = _logged(load)
    names = per.index.union(seen.index).union(log.index)
    out = pd.DataFrame(index=names)
    out["function"] = (per["function"].reindex(names).fillna(seen["function"].reindex(names))
                       .fillna(log["function"].reindex(names)))
    out["node"] = per["node"].reindex(names).fillna("")
    out["busy_ms"] = per["busy_ms"].reindex(names).fillna(0.0)
    out["invocations"] = per["invocations"].reindex(names).fillna(0).astype(np.int64)
    first_t = seen["first_t"].reindex(names).to_numpy(float)
    first_start = per["first_start"].reindex(names).to_numpy(float)
    ready = spawned["start"].reindex(names).to_numpy(float)
    created = ready - spawned["cold_ms"].reindex(names).to_numpy(float)
    prewarmed = np.isnan(created)
    ready = np.where(prewarmed, np.fmin(first_start, first_t), ready)
    created = np.where(prewarmed, np.fmin(first_t, ready), created)
    last_end = per["last_end"].reindex(names).to_numpy(float)
    last_t = seen["last_t"].reindex(names).to_numpy(float)
    idle_then = (seen["last_state"].reindex(names) == "idle").to_numpy()
    left = seen["last_left"].reindex(names).to_numpy(float)
    # the poll after the last one that saw it: it was dead by then
    k = np.searchsorted(polls, np.nan_to_num(last_t, nan=-np.inf), side="right")
    next_poll = np.append(polls, np.inf)[k]
    died = np.where(idle_then & np.isfinite(left), np.minimum(last_t + np.nan_to_num(left), next_poll), last_t)
    died = np.where(np.isnan(last_t), last_end, np.fmax(died, last_end))
    evicted = np.zeros(len(names), dtype=bool)
    if load.instance_log is not None:
        # The router's own record: exact. Times before the run's start are clipped to it (the run
        # starts at 0, as a simulation does); an instance it lacks was still alive at the end.
        logged = log.reindex(names)
        known = logged["died_ms"].notna().to_numpy()
        log_ready = logged["ready_ms"].to_numpy(float)
        log_died = logged["died_ms"].to_numpy(float)
        with np.errstate(invalid="ignore"):     # rows the log lacks are NaN; np.where drops them
            created = np.where(known, np.fmax(logged["created_ms"].to_numpy(float), 0.0), created)
            # one that died starting was never ready: starting all its life, no idle time
            ready = np.where(known, np.fmax(np.where(np.isnan(log_ready), log_died, log_ready), 0.0), ready)
        died = np.where(known, logged["died_ms"].to_numpy(float), np.inf)
        evicted = known & logged["evicted"].fillna(False).astype(bool).to_numpy()
    out["created_ms"], out["ready_ms"], out["died_ms"] = created, ready, died
    out["idle_ms"] = np.maximum(0.0, died - ready - out["busy_ms"].to_numpy(float))
    out["memory_mb"] = out["function"].map(memory).astype(float)
    out["prewarmed"] = prewarmed          # no request was spawned with it: the policy's pre-warm
    out["evicted"] = evicted
    out = out.reset_index(names="instance")
    return out.sort_values(["created_ms", "instance"], kind="stable").reset_index(drop=True)


def _logged(load: LoadResult) -> pd.DataFrame:
    """The router's instance log of the run, one row per instance that died during it (empty
    for an older run without it)."""
    columns = ["function", "created_ms", "ready_ms", "died_ms", "evicted"]
    log = load.instance_log
    if log is None or log.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="instance"))
    log = log[log["died_ms"] >= 0.0].astype({"instance": str})
    return log.drop_duplicates("instance", keep="last").set_index("instance")[columns]


def live_summary(load: LoadResult, policy: str = "live", **kwargs: Any) -> dict[str, Any]:
    """``wlsim.metrics.summarize`` of the live run (``kwargs``: its weights)."""
    from wlsim.metrics import summarize

    return summarize(live_result(load, policy), **kwargs)
