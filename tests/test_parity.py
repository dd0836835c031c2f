"""One platform model, two drivers: the same arrivals and the same (seeded) policy through the
simulator (wlsim.engine) and through the real router code (wlruntime.router: Router, Dispatch,
NodePool, KeepAliveTimers) give the same decisions, cold flags and instances.

The router runs on a virtual clock with an in-process node transport (wlruntime.router.virtual;
the one stand-in: it replaces the node's gRPC service and answers each call after the trace's
duration on the virtual clock; a spawn takes the simulator's cold-start time, and the request
riding in it then its duration). Times are whole milliseconds or exact binary fractions of them, so both
drivers compute the same floats.

One difference is inherent to the live design and kept out of the comparison: the router
learns that a cold start ended only when the Spawn call (which carries the first request)
returns, so between the end of the cold start and the end of that first request the
instance is STARTING live and BUSY in the simulator. A policy that routes on that
distinction (or on the cold-start estimate updated at that moment) may decide differently
in that window (the log below leaves instance states out for that reason). Likewise, when
that first request ends at exactly the instant another execution ends, the simulator (which
schedules the end when the cold start ends) and the router (which sees it as the Spawn call's
reply) may take the two in a different order; real time has no such ties, and the trace's
durations make them rare.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import Chaotic

from policies.features import FunctionStats
from policies.interface import Assign, KeepAlive, Policy, Spawn
from policies.registry import BUILTINS, load_policy
from wlruntime.registry.models import DEFAULT_MAX_INSTANCES
from wlruntime.router.core import Router
from wlruntime.router.state import RouterError
from wlruntime.router.virtual import VirtualPlatform
from wlsim.config import ColdStartModel, SimConfig
from wlsim.engine import Simulation

pytestmark = pytest.mark.unit

NODES = 2
NODE_MB = 6144.0
COLD = ColdStartModel(base_ms=200.0, per_mb_ms=0.25)       # whole ms for the memory sizes used
# The registry's cap on a function's live instances in both drivers; never reached here (the nodes
# hold at most 2 * 6144 / 128 = 96 instances).
CONFIG = SimConfig(nodes=NODES, node_memory_mb=NODE_MB, cold_start=COLD, max_instances=DEFAULT_MAX_INSTANCES)


def whole_ms_trace(seed: int, n: int = 300, functions: int = 5) -> pd.DataFrame:
    """Bursty arrivals in whole ms (the equivalence test's generator, floored); durations in
    1/1024 ms, exact in binary, so that two executions rarely end at the same instant."""
    rng = np.random.default_rng(seed)
    fn = rng.integers(0, functions, size=n)
    gaps = rng.exponential(200.0, size=n) * rng.choice([0.05, 1.0, 30.0], size=n, p=[0.5, 0.4, 0.1])
    arrival = np.floor(np.cumsum(gaps))
    duration = np.floor(rng.lognormal(np.log(150.0), 1.0, size=n)) + rng.integers(1, 1024, size=n) / 1024
    memory = np.array([128.0, 256.0, 512.0, 1024.0, 2048.0])[fn % 5]
    names = np.array([f"fn{i}" for i in range(functions)])[fn]
    return pd.DataFrame({"app": names, "function": names, "arrival_ms": arrival,
                         "duration_ms": duration, "memory_mb": memory})


class Logged(Policy):
    """Records every decision (its inputs' identities and the answer) of the policy it wraps."""

    def __init__(self, inner: Policy) -> None:
        self.inner = inner
        self.name = inner.name
        self.log: list[tuple] = []

    def prepare(self, trace: Any) -> None:
        self.inner.prepare(trace)

    def describe(self) -> dict:
        return self.inner.describe()

    def route(self, now_ms, request, fn):
        answer = self.inner.route(now_ms, request, fn)
        self.log.append(("route", now_ms, request.id, _answer(answer)))
        return answer

    def on_idle(self, now_ms, instance, fn):
        answer = self.inner.on_idle(now_ms, instance, fn)
        self.log.append(("on_idle", now_ms, instance.id, len(instance.queue), _answer(answer)))
        return answer

    def prewarm(self, now_ms, fn):
        delay = self.inner.prewarm(now_ms, fn)
        self.log.append(("prewarm", now_ms, fn.name, delay))
        return delay

    def evict(self, now_ms, need_mb, candidates):
        chosen = self.inner.evict(now_ms, need_mb, candidates)
        self.log.append(("evict", now_ms, need_mb, [c.id for c in candidates], [c.id for c in chosen]))
        return chosen


def _answer(answer: Any) -> tuple:
    if isinstance(answer, Assign):
        return ("assign", answer.instance.id)
    if isinstance(answer, Spawn):
        return ("spawn", answer.node, [i.id for i in answer.evict])
    if isinstance(answer, KeepAlive):
        return ("keep_alive", answer.ms)
    return (type(answer).__name__.lower(),)


# ------------------------------------------------------------------ the router on a virtual clock

def run_router(trace: pd.DataFrame, policy: Policy, concurrency: int = 1,
               payloads: list[bytes] | None = None) -> tuple[dict[int, Any], Router]:
    """Drive the router with the trace's arrivals (each with its payload, default empty); returns
    ({row: Result or RouterError}, router)."""
    durations = trace["duration_ms"].to_numpy()
    names = list(dict.fromkeys(trace["function"]))
    memory = trace.groupby("function", sort=False)["memory_mb"].max().to_dict()
    cold_ms = {name: COLD.cold_start_ms(name, memory[name]) for name in names}

    async def main() -> tuple[dict[int, Any], Router]:
        platform = await VirtualPlatform.create(
            policy, [f"node{k}" for k in range(NODES)], NODE_MB,
            duration_ms=lambda invoke: float(durations[int(invoke.metadata["row"])]),
            cold_start_ms=cold_ms.__getitem__)
        for name in names:   # deployed functions, as the registry would describe them
            fn = platform.deploy(name, {"memory_mb": int(memory[name]), "max_instances": DEFAULT_MAX_INSTANCES})
            fn.stats = FunctionStats(cold_start_prior_ms=cold_ms[name])   # the simulator's prior
            fn.concurrency = concurrency
        await platform.run((t, row, name, b"" if payloads is None else payloads[row], {"row": str(row)})
                           for row, (t, name)
                           in enumerate(zip(trace["arrival_ms"], trace["function"], strict=True)))
        return platform.outcomes, platform.router

    return asyncio.run(main())


def compare(trace: pd.DataFrame, make_policy: Any, concurrency: int = 1,
            payloads: list[bytes] | None = None) -> Logged:
    """The simulator on ``trace`` and the router on its arrivals (with ``payloads``, when given:
    what a live driver sends) decide the same; returns the router's decision log."""
    sim_policy, live_policy = Logged(make_policy()), Logged(make_policy())
    sim = Simulation(trace, dataclasses.replace(CONFIG, concurrency=concurrency), sim_policy)
    result = sim.run()
    outcomes, router = run_router(trace, live_policy, concurrency, payloads)

    assert live_policy.log == sim_policy.log
    requests = result.requests
    live_cold = [not isinstance(outcomes[r], RouterError) and outcomes[r].cold for r in range(len(trace))]
    sim_cold = [bool(c) and not rej for c, rej in zip(requests.cold, requests.rejected, strict=True)]
    assert live_cold == sim_cold
    live_rejected = [isinstance(outcomes[r], RouterError) for r in range(len(trace))]
    assert live_rejected == requests.rejected.tolist()
    live_instance = [-1 if isinstance(o, RouterError) else int(o.instance.rsplit("-", 1)[1])
                     for o in (outcomes[r] for r in range(len(trace)))]
    assert live_instance == requests.instance_id.tolist()
    assert router.dispatch._next_instance_id == len(result.instances)
    assert sum(live_cold) > 0 and live_policy.log
    return live_policy


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_seeded_random_policy_decides_the_same_in_the_simulator_and_the_router(seed: int) -> None:
    compare(whole_ms_trace(seed), lambda: Chaotic(seed, whole_ms=True))


def test_executions_per_instance_above_one_run_the_same_in_both() -> None:
    compare(whole_ms_trace(4), lambda: Chaotic(4, whole_ms=True), concurrency=3)


@pytest.mark.parametrize("name", [b for b in BUILTINS if b != "oracle"])
def test_each_builtin_decides_the_same_in_the_simulator_and_the_router(name: str) -> None:
    compare(whole_ms_trace(7, n=250), lambda: load_policy(name))


@pytest.mark.parametrize("artifact", ["examples/learned/azure40", "examples/learned/azure40-fewer-cold"])
def test_the_bundled_learned_policies_decide_the_same_in_the_simulator_and_the_router(artifact: str) -> None:
    # the imitation policy's features (idle periods, arrivals per window, time of day, predicted
    # duration, cold start, instances, pre-warm use) are read from the model's state in both
    path = Path(__file__).resolve().parents[1] / artifact
    log = compare(whole_ms_trace(9, n=400), lambda: load_policy(f"learned:{path}")).log
    keep_alives = {a[-1][1] for a in log if a[0] == "on_idle" and a[-1][0] == "keep_alive"}
    assert len(keep_alives) > 1     # the network chose between actions, not one answer throughout


@pytest.mark.parametrize("seed", [5, 6])
def test_random_evictions_within_spawns_run_the_same_in_both(seed: int) -> None:
    # Spawn(evict=[random idle instances of any function]): the model's kills, then the spawn
    trace = whole_ms_trace(seed)
    compare(trace, lambda: Chaotic(seed, whole_ms=True, evict_in_spawn=True))
    result = Simulation(trace, CONFIG, Chaotic(seed, whole_ms=True, evict_in_spawn=True)).run()
    assert result.instances.evicted.sum() > 0


def test_faascache_evicting_under_its_memory_cap_runs_the_same_in_both() -> None:
    # 5 functions of 128-2048 MB under a 4 GB cap: spawns evict idle instances of other
    # functions (Spawn(evict=...): the model's kills, Kill calls to the nodes live) and, when
    # the memory is all busy, requests are refused
    trace = whole_ms_trace(8)
    compare(trace, lambda: load_policy("faascache:memory_cap_mb=4096"))
    result = Simulation(trace, CONFIG, load_policy("faascache:memory_cap_mb=4096")).run()
    assert result.instances.evicted.sum() > 0 and result.requests.rejected.sum() > 0
