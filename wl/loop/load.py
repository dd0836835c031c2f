"""``wl load``: replay a trace against a running platform, open loop, at the trace's own times.

Every trace row becomes one request at ``t0 + arrival_ms / speed`` to a function of the same
name (``deployed_name``), whose payload asks the bundled synthetic function
(``examples/c/synthetic.c``) to last the row's ``duration_ms`` (x ``duration_scale``, default
``1/speed`` so the trace's concurrency is kept) and to write ``min(memory_mb, touch_mb_cap)`` MB;
every payload has the same size (``SYNTHETIC_PAYLOAD_BYTES``): the trace has none to reproduce.
Functions the platform lacks are deployed (``--deploy-synthetic``) with the row's memory as
their configured memory and a concurrency limit of 1000 (the simulator's default: no limit).

Open loop: a request is sent at its time whatever happened to the earlier ones. The driver
measures itself: every request's lateness (actual send - scheduled send) is recorded, and a run
whose p99 lateness passes ``max_lateness_ms`` is reported invalid (its cold starts and queueing
would be the driver's, not the platform's). Per request it records scheduled and send times,
client latency, status and the router's X-WL-* answer headers (cold, wait, execution, node,
instance). Instances over time come from polling the router's ``/admin/state``. After the run
the router's recorded trace is fetched and joined per request (arrival at the router, time the
instance was busy), which ``wl calibrate`` and ``wl fidelity`` use.

Output folder: ``plan.parquet`` (the trace as scheduled, canonical columns: what the simulator
replays as "intended"), ``requests.parquet``, ``instances.parquet`` (instance counts per function
at each state poll), ``instance_samples.parquet`` (every instance at each poll: state, keep-alive
left), ``recorded.parquet`` (the router's trace of the run, canonical and outcome columns),
``instance_log.parquet`` (every instance that died during the run, its exact lifetime),
``load.json`` (the summary: lateness, validity, the policy's deadline fallbacks) and
``metrics.json`` (``wlsim.metrics.summarize`` of the run rebuilt as a simulator result,
``wl.loop.live``).
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wl.loop.http import HttpError, RawHttpClient
from wlsim.profile import SYNTHETIC_WASM  # one path: what the profile assumes is what is deployed

MAX_CONCURRENCY = 1000          # the registry's largest per-function concurrency limit
MIN_MEMORY_MB = 16              # the synthetic module itself needs a few MB
SYNTHETIC_PAYLOAD_BYTES = 32    # every synthetic request's size (the module reads up to 128 bytes)
DAY_MS = 86_400_000.0


class LoadError(Exception):
    """A user-facing problem with a load run (bad input, unreachable platform, missing functions)."""


# ----------------------------------------------------------------------------- the plan

def deployed_name(function: str) -> str:
    """The platform name for a trace function: itself when valid, else lowercased with other
    characters as '-', cut to 63 characters (Azure's 64-hex-digit hashes are one too long)."""
    from wlruntime.registry.models import name_problem

    if name_problem(function) is None:
        return function
    name = re.sub(r"[^a-z0-9_-]+", "-", function.lower()).strip("-_") or "f"
    if not name[0].isalnum():
        name = "f" + name
    return name[:63]


@dataclass
class LoadPlan:
    """What will be sent: one row per request, times in ms from the run's start."""
    requests: pd.DataFrame     # request_id, app, function, deployed, arrival_ms, duration_ms, memory_mb, touch_mb
    functions: pd.DataFrame    # function, deployed, memory_mb, timeout_ms, requests
    speed: float = 1.0
    duration_scale: float = 1.0
    source: str = ""

    def canonical(self) -> pd.DataFrame:
        """The plan as a canonical trace (what the simulator replays as the intended schedule)."""
        r = self.requests
        return pd.DataFrame({"app": r["app"], "function": r["function"], "arrival_ms": r["arrival_ms"],
                             "duration_ms": r["duration_ms"], "memory_mb": r["memory_mb"]}).reset_index(drop=True)

    @property
    def span_s(self) -> float:
        return float(self.requests["arrival_ms"].max()) / 1000.0 if len(self.requests) else 0.0


def plan_load(table: pd.DataFrame, *, speed: float = 1.0, duration_scale: float | None = None,
              max_duration_ms: float | None = None, functions: int | None = None,
              touch_mb_cap: float = 4.0, source: str = "") -> LoadPlan:
    """Turn a canonical trace into a load plan (see the module docstring)."""
    if not speed > 0 or not math.isfinite(speed):
        raise LoadError(f"--speed must be a positive number, got {speed}")
    scale = 1.0 / speed if duration_scale is None else float(duration_scale)
    if not scale >= 0:
        raise LoadError(f"--duration-scale must be >= 0, got {duration_scale}")
    if len(table) == 0:
        raise LoadError("the trace has no invocations in the chosen window")
    t = table
    if functions is not None:
        if functions < 1:
            raise LoadError(f"--functions must be >= 1, got {functions}")
        busiest = t["function"].value_counts().index[:functions]
        t = t[t["function"].isin(busiest)]
    t = t.sort_values("arrival_ms", kind="stable").reset_index(drop=True)
    duration = t["duration_ms"].to_numpy(dtype=float) * scale
    if max_duration_ms is not None:
        duration = np.minimum(duration, max_duration_ms)
    memory = np.ceil(t["memory_mb"].to_numpy(dtype=float))
    memory = np.where(np.isfinite(memory), np.maximum(memory, MIN_MEMORY_MB), 128.0)
    fn_memory = pd.Series(memory).groupby(t["function"].to_numpy()).max()
    names = {f: deployed_name(f) for f in fn_memory.index}
    clashes = pd.Series(list(names.values())).value_counts()
    if (clashes > 1).any():
        raise LoadError(f"trace functions map to the same platform name {clashes.index[0]!r}; rename them")
    cap = max(0.0, float(touch_mb_cap))
    requests = pd.DataFrame({
        "request_id": np.arange(len(t), dtype=np.int64),
        "app": t["app"].astype(str).to_numpy() if "app" in t else t["function"].astype(str).to_numpy(),
        "function": t["function"].astype(str).to_numpy(),
        "deployed": t["function"].map(names).to_numpy(),
        "arrival_ms": (t["arrival_ms"].to_numpy(dtype=float) - float(t["arrival_ms"].min())) / speed,
        "duration_ms": duration,
        # every request of a function holds its configured memory live, so the plan says the same
        "memory_mb": t["function"].map(fn_memory).to_numpy(dtype=float),
    })
    requests["touch_mb"] = np.minimum(requests["memory_mb"] - MIN_MEMORY_MB / 2, cap).clip(lower=0.0)
    longest = requests.groupby("function")["duration_ms"].max()
    fns = pd.DataFrame({"function": fn_memory.index, "deployed": [names[f] for f in fn_memory.index],
                        "memory_mb": fn_memory.to_numpy().astype(int)})
    fns["timeout_ms"] = [int(min(900_000, max(2_000, 2 * longest[f] + 2_000))) for f in fns["function"]]
    fns["requests"] = fns["function"].map(requests["function"].value_counts()).astype(int)
    return LoadPlan(requests, fns, speed=speed, duration_scale=scale, source=source)


# ----------------------------------------------------------------------------- the run

@dataclass
class LoadResult:
    plan: LoadPlan
    records: pd.DataFrame                 # one row per request (see run_load)
    instances: pd.DataFrame               # t_ms, function, starting, busy, idle, memory_mb, cold_start_ms_ewma
    recorded: pd.DataFrame | None         # the router's trace of the run (canonical, times from t0)
    info: dict[str, Any] = field(default_factory=dict)
    # every instance at every state poll: t_ms, instance, function, state, keepalive_left_ms
    # (what wl.loop.live reconstructs the instance table from; None in older output folders)
    instance_samples: pd.DataFrame | None = None
    # every instance that died during the run, from the router: instance, function, created_ms,
    # ready_ms, died_ms (run time), evicted -- exact lifetimes (None in older output folders)
    instance_log: pd.DataFrame | None = None

    def summary(self) -> dict[str, Any]:
        return load_summary(self)

    def write(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.plan.canonical().to_parquet(out / "plan.parquet", index=False)
        self.plan.functions.to_parquet(out / "functions.parquet", index=False)
        self.records.to_parquet(out / "requests.parquet", index=False)
        self.instances.to_parquet(out / "instances.parquet", index=False)
        if self.instance_samples is not None:
            self.instance_samples.to_parquet(out / "instance_samples.parquet", index=False)
        if self.recorded is not None:
            self.recorded.to_parquet(out / "recorded.parquet", index=False)
        if self.instance_log is not None:
            self.instance_log.to_parquet(out / "instance_log.parquet", index=False)
        (out / "load.json").write_text(json.dumps(_json_safe({**self.info, "summary": self.summary()}),
                                                  indent=2) + "\n")
        metrics = self.metrics()
        if metrics is not None:
            (out / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2) + "\n")
        return out

    def metrics(self) -> dict[str, Any] | None:
        """``wlsim.metrics.summarize`` of this run (the simulator's own definitions, see
        wl.loop.live); None when the run has no router trace or per-instance polls to rebuild
        it from."""
        from wl.loop.live import live_summary

        if self.instance_samples is None:
            return None
        try:
            return live_summary(self, policy=str(self.info.get("policy", "live")))
        except LoadError:
            return None

    @classmethod
    def read(cls, folder: str | Path) -> LoadResult:
        folder = Path(folder)
        if not (folder / "load.json").is_file() or not (folder / "requests.parquet").is_file():
            raise LoadError(f"{folder} is not a wl load output folder (no load.json / requests.parquet)")
        info = json.loads((folder / "load.json").read_text())
        records = pd.read_parquet(folder / "requests.parquet")
        canonical = pd.read_parquet(folder / "plan.parquet")
        fns = pd.read_parquet(folder / "functions.parquet")
        reqs = canonical.assign(request_id=np.arange(len(canonical)),
                                deployed=canonical["function"].map(dict(zip(fns["function"], fns["deployed"]))))
        plan = LoadPlan(reqs, fns, speed=info.get("speed", 1.0), duration_scale=info.get("duration_scale", 1.0),
                        source=info.get("trace", ""))
        recorded = pd.read_parquet(folder / "recorded.parquet") if (folder / "recorded.parquet").is_file() else None
        info.pop("summary", None)
        samples = folder / "instance_samples.parquet"
        log = folder / "instance_log.parquet"
        return cls(plan, records, pd.read_parquet(folder / "instances.parquet"), recorded, info,
                   pd.read_parquet(samples) if samples.is_file() else None,
                   pd.read_parquet(log) if log.is_file() else None)


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _percentiles(x: Any, qs: tuple[float, ...] = (50, 99)) -> list[float]:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return [float(np.percentile(x, q)) if x.size else float("nan") for q in qs]


def load_summary(result: LoadResult) -> dict[str, Any]:
    r = result.records
    ok = r["status"] == 200
    late50, late99 = _percentiles(r["lateness_ms"])
    lat50, lat99 = _percentiles(r.loc[ok, "latency_ms"])
    wait50, wait99 = _percentiles(r.loc[ok, "wait_ms"])
    statuses = {str(k): int(v) for k, v in r["status"].value_counts().sort_index().items()}
    # send -> arrival at the router's policy (the HTTP front): grows when the router falls behind
    front = (r["router_arrival_ms"] - r["sent_ms"]) if "router_arrival_ms" in r else pd.Series(dtype=float)
    front50, front99 = _percentiles(front)
    return {
        "requests": len(r), "ok": int(ok.sum()), "statuses": statuses,
        "cold_starts": int(r.loc[ok, "cold"].fillna(False).astype(bool).sum()),
        "lateness_p50_ms": late50, "lateness_p99_ms": late99,
        "lateness_max_ms": float(r["lateness_ms"].max()) if len(r) else float("nan"),
        "max_lateness_ms": result.info.get("max_lateness_ms"),
        "valid": bool(result.info.get("valid", False)), "invalid_because": result.info.get("invalid_because", ""),
        "client_latency_p50_ms": lat50, "client_latency_p99_ms": lat99,
        "router_wait_p50_ms": wait50, "router_wait_p99_ms": wait99,
        "front_p50_ms": front50, "front_p99_ms": front99,
        "policy_fallbacks": result.info.get("policy_fallbacks"),
        "driver_gc": result.info.get("driver_gc"),
        # requests executing or starting at once (every node's wasm threads hold one each: past
        # their number, requests queue on the node and the router sees longer cold starts)
        "peak_starting_busy": int(result.instances.groupby("t_ms")[["starting", "busy"]].sum().sum(axis=1).max())
        if len(result.instances) else 0,
        "span_s": result.info.get("span_s"), "rate_per_s": result.info.get("rate_per_s"),
    }


def _check_lateness(lateness: np.ndarray, bound_ms: float, errors: int) -> str:
    """Why the run is invalid ('' when it is valid)."""
    if lateness.size == 0:
        return "no request was sent"
    p99 = float(np.percentile(lateness, 99))
    if p99 > bound_ms:
        return (f"the driver was late: p99 lateness {p99:.1f} ms > {bound_ms:g} ms (the machine is too busy "
                "or --speed too high: the platform saw a different schedule than the trace's)")
    if errors:
        return f"{errors} requests never reached the router (connection errors)"
    return ""


def prepare_functions(client: Any, plan: LoadPlan, deploy_synthetic: bool) -> list[str]:
    """Check that every trace function exists on the platform; deploy the synthetic function for
    the missing ones when asked. Returns the names deployed."""
    from wlruntime.router.client import RouterClientError

    try:
        client.health()
        existing = {f["name"] for f in client.functions()}
    except RouterClientError as error:
        if error.status is None:
            raise LoadError(f"the platform at {client.base_url} is unreachable (is `wl up` running there?)") from None
        raise LoadError(f"the router at {client.base_url} refused the function listing: {error.message} "
                        f"(HTTP {error.status}; pass --token?)") from None
    missing = plan.functions[~plan.functions["deployed"].isin(existing)]
    if len(missing) and not deploy_synthetic:
        shown = ", ".join(missing["deployed"].head(5))
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise LoadError(f"the platform lacks {len(missing)} of the trace's {len(plan.functions)} functions "
                        f"({shown}{more}); pass --deploy-synthetic to deploy the bundled synthetic function "
                        "under those names")
    if len(missing) and not SYNTHETIC_WASM.is_file():
        raise LoadError(f"{SYNTHETIC_WASM} is missing: build it with `make -C examples build/synthetic.wasm`")
    code = SYNTHETIC_WASM.read_bytes() if len(missing) else b""
    for row in missing.itertuples():
        try:
            client.deploy(row.deployed, code, memory_mb=int(row.memory_mb), timeout_ms=int(row.timeout_ms),
                          concurrency=MAX_CONCURRENCY, abi="wasi-command")
        except RouterClientError as error:
            raise LoadError(f"deploying the synthetic function as {row.deployed!r} failed: {error}") from None
    return list(missing["deployed"])


def run_load(url: str, token: str | None, plan: LoadPlan, *, mode: str = "sleep", deploy_synthetic: bool = False,
             max_lateness_ms: float = 50.0, sample_ms: float = 200.0, lead_s: float = 0.5) -> LoadResult:
    """Deploy what is missing (if asked), send the plan open loop, collect everything."""
    from wlruntime.router.client import RouterClient

    if mode not in ("sleep", "busy"):
        raise LoadError(f"--mode must be sleep or busy, got {mode!r}")
    with RouterClient(url, token, timeout=30.0) as client:
        deployed = prepare_functions(client, plan, deploy_synthetic)
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:  # pragma: no cover (uvloop is a dependency)
            runner = asyncio.run
        before = _policy_fallbacks(client)
        with quiet_gc() as driver_gc:
            records, samples, per_instance, t0_epoch = runner(_drive(client.base_url, token, plan, mode, sample_ms,
                                                                     lead_s))
        after = _policy_fallbacks(client)
        recorded, t0_router = _recorded(client, plan, t0_epoch, records)
        instance_log = _instance_log(client, plan, t0_router)
    lateness = records["lateness_ms"].to_numpy(dtype=float)
    errors = int((records["status"] == 0).sum())
    why = _check_lateness(lateness, max_lateness_ms, errors)
    replaced = sum(after[k] - before.get(k, 0) for k in after)
    if replaced and not why:
        why = (f"{replaced} of the policy's decisions were made by the base policy (it overran its decision "
               "budget: WL_ROUTER_DECISION_BUDGET_MS), which the simulator never does")
    info = {"url": url, "trace": plan.source, "speed": plan.speed, "duration_scale": plan.duration_scale,
            "mode": mode, "max_lateness_ms": max_lateness_ms, "valid": not why, "invalid_because": why,
            "deployed": deployed, "t0_epoch_s": t0_epoch, "sample_ms": sample_ms, "span_s": plan.span_s,
            "rate_per_s": len(records) / plan.span_s if plan.span_s > 0 else float("nan"),
            "functions": len(plan.functions),
            # the driver's own garbage collections during the run (quiet_gc): a pause here is
            # lateness the platform never caused
            "driver_gc": driver_gc,
            # decisions a user policy (learned:, custom:, wasm:) overran its time budget on, answered
            # by the base policy instead (wlruntime.router.deadline): the simulator never does that
            "policy_fallbacks": {k: after[k] - before.get(k, 0) for k in after}}
    if recorded is not None:
        records = _join_recorded(records, recorded)
    return LoadResult(plan, records, samples, recorded, info, per_instance, instance_log)


@contextmanager
def quiet_gc() -> Iterator[dict[str, float]]:
    """Keep the driver's garbage collections short while it sends: everything alive now (the
    caller's data: earlier runs, their simulations, pandas) is collected once and frozen
    (``gc.freeze``), so a full collection during the run walks only what the run allocates.
    Measured (2026-12-02): the fidelity bench's process held ~170,000 tracked objects by its
    fourth policy, a full collection of them took 0.13-0.3 s, and that run's driver stalled
    124 ms at once (every request due in that window sent together; the router kept answering)
    -- its p99 lateness 57.8 ms made the run invalid. Yields the collections during the block:
    count, total and longest pause (ms)."""
    gc.collect()
    gc.freeze()
    stats = {"collections": 0, "total_ms": 0.0, "max_ms": 0.0}
    started = [0.0]

    def timed(phase: str, _: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000.0
        stats["collections"] += 1
        stats["total_ms"] += ms
        stats["max_ms"] = max(stats["max_ms"], ms)

    gc.callbacks.append(timed)
    try:
        yield stats
    finally:
        gc.callbacks.remove(timed)
        gc.unfreeze()


def synthetic_payloads(duration_ms: Any, touch_mb: Any, mode: str) -> list[bytes]:
    """The synthetic function's requests ("<duration_ms> <touch_mb> <mode>"), all padded to one
    length: the trace has no payloads, so their size must carry no signal. Unpadded, the size grew
    with the duration's digits; the platform's duration estimate (``DurationPredictor``, fitted on
    payload size) then found a slope the simulator (payload 0) never sees, and the learned
    policy's predicted-duration feature differed live."""
    texts = [f"{d:.3f} {m:g} {mode}" for d, m in zip(duration_ms, touch_mb)]
    return [t.ljust(SYNTHETIC_PAYLOAD_BYTES).encode() for t in texts]


async def _drive(base_url: str, token: str | None, plan: LoadPlan, mode: str, sample_ms: float,
                 lead_s: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, float]:
    import httpx

    req = plan.requests
    n = len(req)
    arrival_s = req["arrival_ms"].to_numpy(dtype=float) / 1000.0
    deployed = req["deployed"].tolist()
    payloads = synthetic_payloads(req["duration_ms"], req["touch_mb"], mode)
    sent = np.full(n, np.nan)
    latency = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int64)
    headers: list[dict[str, str] | None] = [None] * n
    errors: list[str] = [""] * n
    timeout = float(plan.functions["timeout_ms"].max()) / 1000.0 + 30.0
    clock = time.perf_counter  # uvloop's loop.time() ticks in whole ms: too coarse for lateness
    samples: list[tuple[float, str, int, int, int, float]] = []
    per_instance: list[tuple[float, str, str, str, float]] = []
    raw = RawHttpClient(base_url)
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as http:  # the state polls only
        await raw.open(max(1, min(2 * _peak_concurrency(req) + 16, 512)))  # live runs longer than planned
        t0 = clock() + lead_s
        t0_epoch = time.time() + lead_s

        async def send(i: int) -> None:
            start = clock()
            try:
                at, code, answer_headers, body = await asyncio.wait_for(
                    raw.post(f"/invoke/{deployed[i]}", payloads[i]), timeout)
            except (TimeoutError, OSError, HttpError) as error:
                sent[i] = (start - t0) * 1000.0
                errors[i] = f"{type(error).__name__}: {error}"
                latency[i] = (clock() - start) * 1000.0
                return
            sent[i] = (at - t0) * 1000.0
            latency[i] = (clock() - at) * 1000.0
            status[i] = code
            headers[i] = {k: v for k, v in answer_headers.items() if k.startswith("x-wl-")}
            if code != 200:
                errors[i] = body[:200].decode("utf-8", "replace")

        async def sample(stop: asyncio.Event) -> None:
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            while not stop.is_set():
                t = (clock() - t0) * 1000.0
                try:
                    state = (await http.get("/admin/state", headers=auth, timeout=5.0)).json()
                except (httpx.HTTPError, ValueError):
                    state = {}
                for name, fn in (state.get("functions") or {}).items():
                    counts = {"starting": 0, "busy": 0, "idle": 0}
                    for inst in fn.get("instances", []):
                        counts[inst.get("state", "idle")] = counts.get(inst.get("state", "idle"), 0) + 1
                        left = inst.get("keepalive_left_ms")
                        per_instance.append((t, str(inst.get("id")), name, str(inst.get("state", "idle")),
                                             math.nan if left is None else float(left)))
                    samples.append((t, name, counts["starting"], counts["busy"], counts["idle"],
                                    float(fn.get("cold_start_ms_ewma", math.nan))))
                try:
                    await asyncio.wait_for(stop.wait(), sample_ms / 1000.0)
                except TimeoutError:
                    pass

        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(stop))
        tasks = []
        for i in range(n):
            target = t0 + arrival_s[i]
            delay = target - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(i)))
        await asyncio.gather(*tasks)
        stop.set()
        await sampler
    raw.close()
    h = [x or {} for x in headers]

    def header(name: str, conv: Any) -> list[Any]:
        return [conv(x[name]) if name in x else None for x in h]

    records = pd.DataFrame({
        "request_id": req["request_id"].to_numpy(), "function": req["function"].to_numpy(),
        "deployed": req["deployed"].to_numpy(), "scheduled_ms": req["arrival_ms"].to_numpy(dtype=float),
        "duration_ms": req["duration_ms"].to_numpy(dtype=float), "memory_mb": req["memory_mb"].to_numpy(dtype=float),
        "sent_ms": sent, "lateness_ms": sent - req["arrival_ms"].to_numpy(dtype=float), "latency_ms": latency,
        "status": status,
        "cold": pd.array(header("x-wl-cold", lambda v: v == "1"), dtype="boolean"),
        "wait_ms": pd.array(header("x-wl-wait-ms", float), dtype="Float64").astype(float),
        "exec_ms": pd.array(header("x-wl-duration-ms", float), dtype="Float64").astype(float),
        "node": header("x-wl-node", str), "instance": header("x-wl-instance", str), "error": errors,
    })
    memory = plan.functions.set_index("deployed")["memory_mb"]
    inst = pd.DataFrame(samples, columns=["t_ms", "deployed", "starting", "busy", "idle", "cold_start_ms_ewma"])
    inst = inst[inst["deployed"].isin(memory.index)]
    back = dict(zip(plan.functions["deployed"], plan.functions["function"]))
    inst = inst.assign(memory_mb=inst["deployed"].map(memory).astype(float), function=inst["deployed"].map(back))
    each = pd.DataFrame(per_instance, columns=["t_ms", "instance", "deployed", "state", "keepalive_left_ms"])
    each = each[each["deployed"].isin(memory.index)]
    each = each.assign(function=each["deployed"].map(back)).drop(columns="deployed")
    return records, inst.reset_index(drop=True), each.reset_index(drop=True), t0_epoch


def _policy_fallbacks(client: Any) -> dict[str, int]:
    """The router's counts of decisions its policy's deadline answered with the base policy
    (overruns, and decisions made while an overrun call still ran), from /metrics."""
    from wlruntime.router.client import RouterClientError

    counts = {"overruns": 0, "busy_fallbacks": 0}
    try:
        text = client.metrics()
    except RouterClientError:
        return counts
    for line in text.splitlines():
        for key in counts:
            if line.startswith((f"wl_router_policy_{key}_total{{", f"wl_router_policy_{key}{{")):
                counts[key] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def _peak_concurrency(req: pd.DataFrame) -> int:
    """Requests in flight at once if each took its duration (connections to open up front)."""
    start = req["arrival_ms"].to_numpy(dtype=float)
    end = start + req["duration_ms"].to_numpy(dtype=float) + 5.0
    times = np.concatenate([start, end])
    delta = np.concatenate([np.ones(start.size), -np.ones(end.size)])
    order = np.lexsort((delta, times))
    return int(np.cumsum(delta[order]).max()) if start.size else 0


def _recorded(client: Any, plan: LoadPlan, t0_epoch: float,
              records: pd.DataFrame) -> tuple[pd.DataFrame | None, float | None]:
    """The router's trace rows of this run, names mapped back, times in ms from the run's t0;
    and the run's t0 on the router's clock (None when there are no rows to place it by)."""
    from wlruntime.router.client import RouterClientError

    try:
        raw = client.trace("csv")
    except RouterClientError:
        return None, None
    table = pd.read_csv(io.BytesIO(raw))
    back = dict(zip(plan.functions["deployed"], plan.functions["function"]))
    table = table[table["function"].isin(back)]
    if table.empty:
        return table, None
    # The router's clock: ms since 00:00 UTC of the day it started (so it passes DAY_MS after
    # midnight). Find the day offset that puts its rows nearest this run.
    t0_day = (t0_epoch % 86400.0) * 1000.0
    end = float(np.nanmax(records["sent_ms"])) if len(records) else 0.0
    latest = float(table["arrival_ms"].max())
    t0_router = t0_day + round((latest - t0_day - end) / DAY_MS) * DAY_MS
    # The run's requests reach the router after t0 (the first is sent at t0 at the earliest);
    # rows before it are earlier traffic (a warm-up), 5 ms of slack for the two clocks.
    table = table[(table["arrival_ms"] >= t0_router - 5.0) & (table["arrival_ms"] <= t0_router + end + 60_000.0)]
    table = table.assign(function=table["function"].map(back),
                         arrival_ms=(table["arrival_ms"] - t0_router).clip(lower=0.0))
    for name in ("start_ms", "end_ms"):   # outcome columns: the same clock
        if name in table:
            table[name] = table[name] - t0_router
    return table.sort_values("arrival_ms", kind="stable").reset_index(drop=True), t0_router


def _instance_log(client: Any, plan: LoadPlan, t0_router: float | None) -> pd.DataFrame | None:
    """The router's log of the instances that died during this run (``/admin/trace?kind=instances``):
    instance, function (mapped back), created_ms, ready_ms, died_ms (on the run's time base, as the
    trace's times: the router's clock - ``t0_router``), evicted. None when the router has no such
    log (an older router) or the run has no recorded trace to place it by."""
    from wlruntime.router.client import RouterClientError

    if t0_router is None:
        return None
    try:
        raw = client.instance_log("parquet")
    except RouterClientError:
        return None
    table = pd.read_parquet(io.BytesIO(raw))
    back = dict(zip(plan.functions["deployed"], plan.functions["function"]))
    # instances that died before the run (a warm-up) were not part of it
    table = table[table["function"].isin(back) & (table["died_ms"] >= t0_router)]
    table = table.assign(function=table["function"].map(back))
    for name in ("created_ms", "ready_ms", "died_ms"):
        table[name] = table[name] - t0_router
    return table.sort_values("died_ms", kind="stable").reset_index(drop=True)


def _join_recorded(records: pd.DataFrame, recorded: pd.DataFrame) -> pd.DataFrame:
    """Match each request with its row in the router's trace, exactly: the router writes the
    node's execution time with the same three decimals in the trace's ``exec_ms`` and in the
    answer's X-WL-Duration-Ms, so (function, exec_ms) names the row; the rare tie (two
    executions of one function equal to the microsecond) goes to the row whose wait (cold start
    included, X-WL-Wait-Ms) is nearest the answer's, then to the one that reached the router
    within the request's send..answer window. (Matching on the busy time alone, as before, paired
    requests of equal durations with each other's rows: the router's front then looked up to
    1 s behind.) A recording without ``exec_ms`` (an older router) is not joined. Adds
    ``router_arrival_ms`` and ``router_busy_ms`` (NaN when unmatched)."""
    arrival = np.full(len(records), np.nan)
    busy = np.full(len(records), np.nan)
    row = np.full(len(records), -1, dtype=np.int64)
    if "exec_ms" not in recorded or recorded.empty:
        return records.assign(router_arrival_ms=arrival, router_busy_ms=busy)
    rec = recorded.dropna(subset=["exec_ms"])
    r_arr = rec["arrival_ms"].to_numpy(dtype=float)
    r_dur = rec["duration_ms"].to_numpy(dtype=float)
    r_wait = (rec["wait_ms"].fillna(0.0) + rec["cold_start_ms"].fillna(0.0)).to_numpy(dtype=float)
    rows: dict[tuple[str, int], list[int]] = {}
    for j, key in enumerate(zip(rec["function"].astype(str), np.rint(rec["exec_ms"].to_numpy(float) * 1000.0))):
        rows.setdefault((key[0], int(key[1])), []).append(j)
    ok = records.index[(records["status"] == 200).to_numpy() & records["exec_ms"].notna().to_numpy()]
    keys = zip(records.loc[ok, "function"].astype(str), np.rint(records.loc[ok, "exec_ms"].to_numpy(float) * 1000.0),
               records.loc[ok, "wait_ms"].to_numpy(float), records.loc[ok, "sent_ms"].to_numpy(float),
               records.loc[ok, "latency_ms"].to_numpy(float))
    for idx, (fn, exec_us, wait, sent, latency) in zip(ok, keys):
        candidates = rows.get((fn, int(exec_us)))
        if not candidates:
            continue
        if len(candidates) > 1:
            inside = (r_arr[candidates] >= sent - 5.0) & (r_arr[candidates] <= sent + latency + 5.0)
            j = candidates[int(np.lexsort((~inside, np.abs(r_wait[candidates] - wait)))[0])]
        else:
            j = candidates[0]
        candidates.remove(j)
        arrival[idx], busy[idx], row[idx] = r_arr[j], r_dur[j], j
    out = records.assign(router_arrival_ms=arrival, router_busy_ms=busy)
    # The router's own times of the request (run time, its policy clock): what wl.loop.live
    # rebuilds the per-request and per-instance tables from.
    for name in ("start_ms", "end_ms", "cold_start_ms"):
        if name in rec:
            values = rec[name].to_numpy(float)
            out[f"router_{name}"] = np.where(row >= 0, values[np.maximum(row, 0)], np.nan)
    return out
