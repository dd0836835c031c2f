"""Exact sharded replay: a trace split by application across workers, merged into the
result one process would give.

Why it is exact, and when it is not possible. With unbounded node memory and one node,
applications never compete: an instance's placement, eviction or rejection never depends on
another application's instances, and the built-in policies keep their state per function
(hybrid histogram per application, hence shards by application, not by function). So each
application's requests and instances come out the same whether it is simulated alone or
with every other one, except for one global quantity: the horizon (the last completion of the
whole trace), at which instances still alive die and after which keep-alive timers are
dropped. A shard that ends earlier than the whole trace would close its instances too early,
so every shard is run to the global horizon ``H``: a zero-length sentinel invocation of a
function of its own (cold start 0 ms) arrives at ``H`` and keeps the shard's clock going until
then; its rows are dropped in the merge. ``H`` is not known before the run: the first pass
puts the sentinel at a lower bound (the latest ``arrival + duration``), and only the shards
that then ended before the true ``H`` run a second time (see ``ShardedRun.reruns``).

What cannot shard (ShardError says which): drawn cold starts (``ColdStartModel.quantiles_ms``:
one random stream in global spawn order); a node memory bound (``SimConfig.node_memory_mb``)
or a policy's own memory cap (``faascache:memory_cap_mb``): applications compete for memory,
so evictions and rejections depend on all of them at once; more than one node (where an
instance goes depends on the other applications' instances); and a policy whose decisions
read state shared across applications: the built-in ``default`` (it pools idle periods
across functions) or a policy class with ``shardable = False``. Other custom policies cannot
be checked here: tests/test_shard.py's equality test is how a policy shows that it shards.

Sharding is for using several cores, not for bounding memory: a trace larger than memory is
replayed in one streamed pass in one process (``wlsim.traces.stream.stream_replay``, the
engine's streamed mode), which needs none of the conditions above.

Merging: requests keep their trace row as ``request_id``; instance ids are renumbered in
spawn order (created_ms, then the trace row of the request that caused the spawn), which
is the order one process numbers them in.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from wlsim.config import SimConfig
    from wlsim.parallel import Executor
    from wlsim.result import SimResult

SENTINEL = "__wl_shard_horizon__"
# Built-in policies whose state spans applications (a policy class can say the same with
# ``shardable = False``).
COUPLED_POLICIES = {
    "default": "it pools idle periods across functions for the ones with too few of their own",
}


class ShardError(ValueError):
    """This run cannot be split by application without changing its result."""


def check_shardable(config: SimConfig, spec: str) -> None:
    """Raise ShardError when ``config`` or the policy couples applications."""
    from policies.registry import load_policy

    if math.isfinite(config.node_memory_mb):
        raise ShardError(
            f"cannot shard with a node memory bound (node_memory_mb={config.node_memory_mb:g}): "
            "applications then compete for memory, and which instance is evicted or which request "
            "is rejected depends on every application at once; replay in one process instead")
    if getattr(config.cold_start, "quantiles_ms", None):
        raise ShardError("cannot shard with drawn cold starts (ColdStartModel.quantiles_ms, e.g. a measured "
                         "profile): every spawn draws from one random stream in global spawn order, so a "
                         "shard would draw different values; use constant cold starts or one process")
    if config.nodes != 1:
        raise ShardError(f"cannot shard with {config.nodes} nodes: where an instance is placed depends "
                         "on the other applications' instances; use one node or one process")
    from wlsim.compare import spec_name

    policy = load_policy(spec)
    why = COUPLED_POLICIES.get(spec_name(spec))
    if why is None and getattr(policy, "shardable", True) is False:
        why = "it declares shardable = False (its state spans applications)"
    if why is not None:
        raise ShardError(f"cannot shard policy {spec!r}: {why}, so an application's decisions depend "
                         "on the others; replay it in one process")
    cap = policy.describe().get("memory_cap_mb")
    if cap is not None and math.isfinite(float(cap)):
        raise ShardError(f"cannot shard policy {spec!r}: its memory cap ({cap} MB) is shared by all "
                         "applications, so its decisions depend on all of them at once")


def plan_shards(trace: pd.DataFrame, shards: int) -> list[np.ndarray]:
    """Row numbers of each shard: whole applications, the largest first onto the shard with the
    fewest invocations so far (longest-processing-time balancing); no empty shards."""
    import pandas as pd

    codes, uniques = pd.factorize(trace["app"], sort=False)
    counts = np.bincount(codes, minlength=len(uniques))
    shards = max(1, min(int(shards), len(uniques)))
    load = np.zeros(shards, dtype=np.int64)
    shard_of_app = np.empty(len(uniques), dtype=np.int64)
    for app in np.argsort(-counts, kind="stable"):
        k = int(np.argmin(load))
        shard_of_app[app] = k
        load[k] += counts[app]
    shard_of_row = shard_of_app[codes]
    return [np.flatnonzero(shard_of_row == k) for k in range(shards)]


def lower_horizon_ms(trace: pd.DataFrame) -> float:
    """No run ends before every invocation could have finished without waiting."""
    return float((trace["arrival_ms"].to_numpy(np.float64) + trace["duration_ms"].to_numpy(np.float64)).max())


def _with_sentinel(part: pd.DataFrame, at_ms: float) -> pd.DataFrame:
    import pandas as pd

    row = {c: [np.nan] for c in part.columns}
    row.update(app=[SENTINEL], function=[SENTINEL], arrival_ms=[at_ms], duration_ms=[0.0], memory_mb=[1.0])
    if "payload_bytes" in part.columns:
        row["payload_bytes"] = [0]
    extra = pd.DataFrame(row)[list(part.columns)]
    for c in ("app", "function"):   # one more category, not a copy of every name as an object
        if isinstance(part[c].dtype, pd.CategoricalDtype):
            if SENTINEL not in part[c].cat.categories:
                part[c] = part[c].cat.add_categories([SENTINEL])
            extra[c] = pd.Categorical(extra[c], categories=part[c].cat.categories)
    return pd.concat([part, extra], ignore_index=True)


def _sentinel_config(config: SimConfig) -> SimConfig:
    cold = config.cold_start
    per_fn = dict(cold.per_function_ms) | {SENTINEL: 0.0}
    return dataclasses.replace(config, cold_start=dataclasses.replace(cold, per_function_ms=per_fn))


def run_shard(trace: pd.DataFrame, task: tuple[np.ndarray | None, str, SimConfig, float]) -> SimResult:
    """One shard in a worker: its rows (None: the whole table) plus the sentinel at ``until_ms``."""
    from wlsim.engine import simulate

    rows, spec, config, until_ms = task
    part = _with_sentinel(trace if rows is None else trace.iloc[rows].reset_index(drop=True), until_ms)
    return simulate(part, spec, _sentinel_config(config))


@dataclass
class ShardedRun:
    """What ``sharded_simulate`` did: the merged result and how many shards ran twice."""
    result: SimResult
    shards: int
    reruns: int
    shard_wall_s: list[float] = field(default_factory=list)


def sharded_simulate(trace: pd.DataFrame, spec: str, config: SimConfig | None = None, *,
                     shards: int | None = None, executor: Executor | None = None) -> ShardedRun:
    """``simulate(trace, spec, config)`` split by application into ``shards`` tasks of
    ``executor`` (default: local processes, one per core) and merged; raises ShardError when
    the run cannot be split exactly (see the module docstring)."""
    import time

    from wlsim.config import SimConfig
    from wlsim.parallel import LocalExecutor
    from wlsim.traces.table import validate

    config = config if config is not None else SimConfig()
    check_shardable(config, spec)
    trace = validate(trace, "trace")
    executor = executor if executor is not None else LocalExecutor(0)
    plan = plan_shards(trace, shards if shards is not None else executor.workers)
    started = time.perf_counter()
    guess = lower_horizon_ms(trace)
    results = _run(executor, trace, plan, range(len(plan)), spec, config, guess)
    horizon = max(_real_horizon(r) for r in results.values())
    # Shards that stopped at the guess while the whole trace went on (or, with rejections, whose
    # guess overshot it) run again to the true horizon.
    late = [k for k, r in results.items() if r.horizon_ms != horizon]
    if late:
        results |= _run(executor, trace, plan, late, spec, config, horizon)
    merged = merge([results[k] for k in range(len(plan))], plan, horizon)
    merged.wall_s = time.perf_counter() - started
    return ShardedRun(merged, len(plan), len(late), [results[k].wall_s for k in range(len(plan))])


def _run(executor: Executor, trace: pd.DataFrame, plan: list[np.ndarray], which: Any, spec: str,
         config: SimConfig, until_ms: float) -> dict[int, SimResult]:
    from policies.registry import with_absolute_path

    which = list(which)
    tasks = [("trace", (plan[k], with_absolute_path(spec), config, until_ms)) for k in which]
    return {which[i]: r for i, r in executor.run(run_shard, tasks, {"trace": trace})}


def _real_horizon(result: SimResult) -> float:
    """The shard's last completion of a real (not sentinel) request (a rejected one counts at its
    arrival: under unbounded memory only a per-function limit or the policy rejects)."""
    req = result.requests
    real = req["function"] != SENTINEL
    ends = req.loc[real, "end_ms"].to_numpy(np.float64)
    arrivals = req.loc[real, "arrival_ms"].to_numpy(np.float64)   # a rejected request ends on arrival
    return float(np.nanmax(np.where(np.isnan(ends), arrivals, ends)))


def merge(parts: list[SimResult], plan: list[np.ndarray], horizon_ms: float) -> SimResult:
    """The shards' results as one: request ids back to trace rows, instance ids renumbered in
    spawn order, sentinel rows dropped."""
    import pandas as pd

    from wlsim.result import SimResult

    requests, instances = [], []
    for k, (r, rows) in enumerate(zip(parts, plan, strict=True)):
        req = r.requests
        keep = (req["function"] != SENTINEL).to_numpy()
        req = req.loc[keep].copy()
        req["request_id"] = rows[req["request_id"].to_numpy()]
        inst = r.instances.loc[(r.instances["function"] != SENTINEL).to_numpy()].copy()
        # the trace row of the request each instance was spawned for (prewarm: none)
        cold = req.loc[req["cold"].to_numpy(bool) & (req["instance_id"].to_numpy() >= 0)]
        first_row = pd.Series(cold["request_id"].to_numpy(), index=cold["instance_id"].to_numpy())
        first_row = first_row.groupby(level=0).min()
        inst["_row"] = inst["instance_id"].map(first_row).fillna(np.inf).to_numpy(np.float64)
        inst["_shard"] = k
        req["_shard"] = k
        requests.append(req)
        instances.append(inst)
    inst = pd.concat(instances, ignore_index=True)
    inst = inst.sort_values(["created_ms", "_row", "_shard", "instance_id"], kind="stable").reset_index(drop=True)
    new_id = {(s, i): n for n, (s, i) in enumerate(zip(inst["_shard"], inst["instance_id"], strict=True))}
    req = pd.concat(requests, ignore_index=True)
    req["instance_id"] = [new_id.get((s, i), -1) for s, i in zip(req["_shard"], req["instance_id"], strict=True)]
    req = req.sort_values("request_id").drop(columns="_shard").reset_index(drop=True)
    inst["instance_id"] = np.arange(len(inst), dtype=np.int64)
    inst = inst.drop(columns=["_row", "_shard"])
    req = req.astype(dict(parts[0].requests.dtypes.items()))
    inst = inst.astype(dict(parts[0].instances.dtypes.items()))
    params = dict(parts[0].params)
    if isinstance(params.get("config"), dict):   # the config the caller gave, not the shard's
        cold = dict(params["config"].get("cold_start") or {})
        per_fn = {k: v for k, v in (cold.get("per_function_ms") or {}).items() if k != SENTINEL}
        params["config"] = params["config"] | {"cold_start": cold | {"per_function_ms": per_fn}}
    return SimResult(policy=parts[0].policy, requests=req, instances=inst, horizon_ms=horizon_ms,
                     params=params)
