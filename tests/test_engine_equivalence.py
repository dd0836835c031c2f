"""The engine's three ways of running give identical results: run() versus the step-wise API,
lazy keep-alive expiry versus an eager event per keep-alive, one long keep-alive versus many
re-extended short ones; and a seed fully determines a run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
from conftest import Chaotic

from policies.interface import (
    IDLE,
    INVOKE,
    KILL,
    KeepAlive,
    Policy,
)
from wlsim.config import ColdStartModel, SimConfig
from wlsim.engine import Simulation, simulate

pytestmark = pytest.mark.unit


def random_trace(seed: int, n: int = 3000, functions: int = 6, integer_ms: bool = False) -> pd.DataFrame:
    """Bursty arrivals over a few functions with mixed durations and memory sizes."""
    rng = np.random.default_rng(seed)
    fn = rng.integers(0, functions, size=n)
    gaps = rng.exponential(200.0, size=n) * rng.choice([0.05, 1.0, 30.0], size=n, p=[0.5, 0.4, 0.1])
    arrival = np.cumsum(gaps)
    duration = rng.lognormal(np.log(150.0), 1.0, size=n)
    if integer_ms:
        arrival = np.floor(arrival)
        duration = np.floor(duration) + 1
    memory = np.array([128.0, 256.0, 512.0, 1024.0, 2048.0, 384.0])[fn % 6]
    names = np.array([f"fn{i}" for i in range(functions)])[fn]
    return pd.DataFrame({"app": names, "function": names, "arrival_ms": arrival,
                         "duration_ms": duration, "memory_mb": memory})


class TTL(Policy):
    name = "ttl"

    def __init__(self, ttl_ms: float) -> None:
        self.ttl_ms = ttl_ms

    def on_idle(self, now_ms, instance, fn):
        if instance.queue:
            return INVOKE
        if instance.keepalive_until_ms is not None:
            return KILL
        return KeepAlive(self.ttl_ms)


class ReExtendingTTL(Policy):
    """The same TTL as a chain of short keep-alives: asked every ``step_ms`` while idle."""
    name = "ttl_steps"

    def __init__(self, ttl_ms: float, step_ms: float) -> None:
        self.ttl_ms = ttl_ms
        self.step_ms = step_ms
        self.asks = 0

    def on_idle(self, now_ms, instance, fn):
        self.asks += 1
        if instance.queue:
            return INVOKE
        idle = now_ms - instance.idle_since_ms
        if idle >= self.ttl_ms:
            return KILL
        return KeepAlive(min(self.step_ms, self.ttl_ms - idle))


TIGHT = SimConfig(nodes=2, node_memory_mb=6144.0, cold_start=ColdStartModel(base_ms=200.0, per_mb_ms=0.25))


def assert_same(a, b) -> None:
    pdt.assert_frame_equal(a.requests, b.requests)
    pdt.assert_frame_equal(a.instances, b.instances)
    assert a.horizon_ms == b.horizon_ms


def step_through(trace, config, policy):
    """Drive a Simulation decision by decision, answering with ``policy``."""
    sim = Simulation(trace, config, policy)
    times, kinds = [], set()
    while (d := sim.next_decision()) is not None:
        assert sim.next_decision() is d          # idempotent until answered
        times.append(d.now_ms)
        kinds.add((d.kind, d.reason))
        if d.kind == "route":
            assert d.request is not None and d.instance is None and d.request.function == d.fn.name
            sim.apply(policy.route(d.now_ms, d.request, d.fn))
        else:
            assert d.instance is not None and d.instance.state == IDLE and d.instance.fn is d.fn
            sim.apply(policy.on_idle(d.now_ms, d.instance, d.fn))
    assert times == sorted(times), "decision times must never go back"
    return sim.result(), kinds


def test_step_api_equals_run_under_a_chaotic_policy_and_memory_pressure() -> None:
    t = random_trace(1)
    ran = simulate(t, Chaotic(7), TIGHT)
    stepped, kinds = step_through(t, TIGHT, Chaotic(7))
    assert_same(ran, stepped)
    # The run exercised every decision kind and the interesting paths.
    assert kinds == {("route", "arrival"), ("route", "reroute"), ("idle", "finished"),
                     ("idle", "expired"), ("idle", "ready")}
    assert ran.requests.rejected.any() and ran.instances.evicted.any() and ran.instances.prewarmed.any()
    assert (ran.requests.wait_ms > 0).any()


def test_step_api_equals_run_for_ttl_and_counters_track_rewards() -> None:
    t = random_trace(2, functions=4)
    ran = simulate(t, TTL(2000.0), SimConfig())
    sim = Simulation(t, SimConfig(), TTL(2000.0))
    lat, idle = [], []
    policy = TTL(2000.0)
    while (d := sim.next_decision()) is not None:
        lat.append(sim.completed_latency_ms)
        idle.append(sim.idle_mb_ms())
        sim.apply(policy.route(d.now_ms, d.request, d.fn) if d.kind == "route"
                  else policy.on_idle(d.now_ms, d.instance, d.fn))
    res = sim.result()
    assert_same(ran, res)
    assert np.all(np.diff(lat) >= 0) and np.all(np.diff(idle) >= -1e-6)
    assert sim.completed_latency_ms == np.float64(res.requests.latency_ms.sum()) or np.isclose(
        sim.completed_latency_ms, res.requests.latency_ms.sum())
    assert np.isclose(sim.idle_mb_ms(), (res.instances.idle_ms * res.instances.memory_mb).sum())


def test_run_can_take_over_a_step_wise_simulation() -> None:
    t = random_trace(3)
    full = simulate(t, Chaotic(11), TIGHT)
    policy = Chaotic(11)
    sim = Simulation(t, TIGHT, policy)
    for _ in range(500):
        d = sim.next_decision()
        sim.apply(policy.route(d.now_ms, d.request, d.fn) if d.kind == "route"
                  else policy.on_idle(d.now_ms, d.instance, d.fn))
    sim.next_decision()                          # one outstanding, answered by run()
    assert_same(full, sim.run())


def test_lazy_expiry_equals_an_eager_event_per_keep_alive() -> None:
    for seed in (4, 5):
        t = random_trace(seed)
        lazy = Simulation(t, TIGHT, Chaotic(seed)).run()
        eager = Simulation(t, TIGHT, Chaotic(seed), eager_expiry=True).run()
        assert_same(lazy, eager)
    t = random_trace(6)
    assert_same(Simulation(t, SimConfig(), TTL(1500.0)).run(),
                Simulation(t, SimConfig(), TTL(1500.0), eager_expiry=True).run())


def test_one_long_keep_alive_equals_a_chain_of_re_extended_ones() -> None:
    # Integer ms everywhere, so both policies reach the kill at exactly the same instant.
    t = random_trace(8, integer_ms=True)
    steps = ReExtendingTTL(5000.0, 700.0)
    once = simulate(t, TTL(5000.0), SimConfig())
    chained = simulate(t, steps, SimConfig())
    assert_same(once, chained)
    assert steps.asks > 2 * len(t)   # the chain really asked many more times
    assert once.instances.idle_ms.sum() > 0 and (once.instances.died_ms < once.horizon_ms).any()


def test_same_seed_gives_identical_frames() -> None:
    t = random_trace(9)
    a = simulate(t, Chaotic(3), TIGHT)
    b = simulate(t.copy(), Chaotic(3), TIGHT)
    assert_same(a, b)
    c = simulate(t, Chaotic(4), TIGHT)
    assert not c.requests.equals(a.requests)      # the seed matters


def test_instance_accounting_adds_up() -> None:
    r = simulate(random_trace(10), Chaotic(1), TIGHT)
    i = r.instances
    started = i.ready_ms.notna()
    life = i.died_ms - i.created_ms
    starting = (i.ready_ms.where(started, i.died_ms) - i.created_ms)
    assert np.allclose(starting + i.busy_ms + i.idle_ms, life)
    assert (i.busy_ms >= 0).all() and (i.idle_ms >= 0).all()
    q = r.requests[~r.requests.rejected]
    assert np.allclose(q.wait_ms + q.cold_start_ms + q.exec_ms, q.latency_ms)
    assert (q.wait_ms >= -1e-9).all() and (q.cold_start_ms >= 0).all()
    assert int(i.invocations.sum()) == len(q)
    assert (q.groupby("instance_id").size() == i.set_index("instance_id").invocations[
        q.instance_id.unique()].sort_index().values).all()
