"""Hand-computed scenarios for wlsim.engine: every number asserted here was worked out on
paper from the model's rules (cold start 250 ms unless stated, memory 1024 MB = 1 GB)."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from policies.interface import (
    BUSY,
    IDLE,
    INVOKE,
    KILL,
    SPAWN,
    STARTING,
    Assign,
    KeepAlive,
    Policy,
    Reject,
    Spawn,
)
from wlsim.config import ColdStartModel, SimConfig
from wlsim.engine import PolicyAnswerError, Simulation, simulate
from wlsim.result import INSTANCE_COLUMNS, REQUEST_COLUMNS
from wlsim.traces import TraceError

pytestmark = pytest.mark.unit

COLD = 250.0
CONFIG = SimConfig(cold_start=ColdStartModel(base_ms=COLD, per_mb_ms=0.0))


def trace(rows: list[tuple], memory_mb: float = 1024.0) -> pd.DataFrame:
    """rows: (function, arrival_ms, duration_ms) or (function, arrival_ms, duration_ms, memory_mb)."""
    return pd.DataFrame({
        "app": [r[0] for r in rows],
        "function": [r[0] for r in rows],
        "arrival_ms": [float(r[1]) for r in rows],
        "duration_ms": [float(r[2]) for r in rows],
        "memory_mb": [float(r[3]) if len(r) > 3 else memory_mb for r in rows],
    })


class TTL(Policy):
    """Warmest idle instance, else a cold start; keep alive ``ttl_ms`` after each execution,
    kill when asked again after the keep-alive ran out."""
    name = "test_ttl"

    def __init__(self, ttl_ms: float = 5000.0) -> None:
        self.ttl_ms = ttl_ms

    def on_idle(self, now_ms, instance, fn):
        if instance.queue:
            return INVOKE
        if instance.keepalive_until_ms is not None:   # asked at expiry
            return KILL
        return KeepAlive(self.ttl_ms)


class QueueOnAny(TTL):
    """Queue on the first live instance (even busy or starting) rather than cold start."""
    name = "test_queue"

    def route(self, now_ms, request, fn):
        if fn.idle:
            return Assign(fn.idle[-1])
        for inst in fn.instances.values():
            if inst.active < inst.concurrency and inst.state in (IDLE, BUSY):
                return Assign(inst)
        for inst in fn.instances.values():
            return Assign(inst)
        return SPAWN


def req(result, i: int) -> dict:
    return result.requests.iloc[i].to_dict()


def inst(result, i: int) -> dict:
    return result.instances.iloc[i].to_dict()


def test_cold_warm_cold_exact_numbers() -> None:
    r = simulate(trace([("f", 0, 100), ("f", 1000, 100), ("f", 20000, 100)]), TTL(5000), CONFIG)
    q = r.requests
    assert list(q.cold) == [True, False, True]
    assert list(q.wait_ms) == [0.0, 0.0, 0.0]
    assert list(q.cold_start_ms) == [250.0, 0.0, 250.0]
    assert list(q.end_ms) == [350.0, 1100.0, 20350.0]
    assert list(q.latency_ms) == [350.0, 100.0, 350.0]
    assert list(q.instance_id) == [0, 0, 1]
    i = r.instances
    # Instance 0: starts 0-250, busy 250-350, idle 350-1000, busy 1000-1100, idle 1100-6100
    # (the 5 s keep-alive), killed at 6100. Instance 1: 20000-20250 starting, busy to 20350,
    # the horizon (the last completion), where it is closed.
    assert list(i.created_ms) == [0.0, 20000.0]
    assert list(i.ready_ms) == [250.0, 20250.0]
    assert list(i.died_ms) == [6100.0, 20350.0]
    assert list(i.busy_ms) == [200.0, 100.0]
    assert list(i.idle_ms) == [5650.0, 0.0]
    assert list(i.invocations) == [2, 1]
    assert r.horizon_ms == 20350.0
    idle_gb_s = float((i.memory_mb / 1024 * i.idle_ms).sum() / 1000)
    total_gb_s = float((i.memory_mb / 1024 * (i.died_ms - i.created_ms)).sum() / 1000)
    assert idle_gb_s == pytest.approx(5.65)
    assert total_gb_s == pytest.approx(6.1 + 0.35)


def test_result_frames_have_the_documented_columns_and_dtypes() -> None:
    r = simulate(trace([("f", 0, 100), ("g", 5, 10)]), TTL(), CONFIG)
    assert list(r.requests.columns) == list(REQUEST_COLUMNS)
    assert {c: str(t) for c, t in r.requests.dtypes.items()} == REQUEST_COLUMNS
    assert list(r.instances.columns) == list(INSTANCE_COLUMNS)
    assert {c: str(t) for c, t in r.instances.dtypes.items()} == INSTANCE_COLUMNS
    assert list(r.requests.function) == ["f", "g"]
    assert list(r.instances.node) == ["node0", "node0"]
    assert r.policy == "test_ttl" and r.params["name"] == "test_ttl"
    assert r.params["config"]["cold_start"]["base_ms"] == COLD


def test_queue_behind_a_starting_then_a_busy_instance() -> None:
    # r0 spawns at 0 (ready 250, runs 250-350). r1 at 50 queues on the starting instance:
    # 200 ms of cold start, then 100 ms behind r0 -> runs 350-450.
    # r2 at 1000 finds it idle (warm, 1000-1100); r3 at 1030 queues behind r2: waits 70 ms.
    rows = [("f", 0, 100), ("f", 50, 100), ("f", 1000, 100), ("f", 1030, 100)]
    r = simulate(trace(rows), QueueOnAny(5000), CONFIG)
    q = r.requests
    assert list(q.cold) == [True, False, False, False]
    assert list(q.cold_start_ms) == [250.0, 200.0, 0.0, 0.0]
    assert list(q.wait_ms) == [0.0, 100.0, 0.0, 70.0]
    assert list(q.end_ms) == [350.0, 450.0, 1100.0, 1200.0]
    assert list(q.latency_ms) == [350.0, 400.0, 100.0, 170.0]
    assert len(r.instances) == 1
    assert (q.latency_ms == q.wait_ms + q.cold_start_ms + q.exec_ms).all()


def test_concurrency_two_runs_two_at_once_and_queues_the_third() -> None:
    # Concurrency 2: r0 spawns (ready 250), r1 at 10 queues on the starting instance, and
    # both start at 250 and end at 350. r2 at 260 finds both slots taken: it queues and takes
    # the first freed slot at 350 (wait 90). r3 at 300 queues too and starts at 350 when the
    # second slot frees (wait 50); both end at 450.
    cfg = SimConfig(concurrency=2, cold_start=ColdStartModel(base_ms=COLD, per_mb_ms=0.0))
    rows = [("f", 0, 100), ("f", 10, 100), ("f", 260, 100), ("f", 300, 100)]
    seen = []

    class Watch(QueueOnAny):
        def route(self, now_ms, request, fn):
            if fn.instances:
                i = next(iter(fn.instances.values()))
                seen.append((now_ms, i.state, i.active, i.queue_len, i.exec_started_ms))
            return super().route(now_ms, request, fn)

    r = simulate(trace(rows), Watch(5000), cfg)
    q = r.requests
    assert list(q.end_ms) == [350.0, 350.0, 450.0, 450.0]
    assert list(q.wait_ms) == [0.0, 0.0, 90.0, 50.0]
    assert list(q.cold_start_ms) == [250.0, 240.0, 0.0, 0.0]
    assert list(q.instance_id) == [0, 0, 0, 0]
    assert seen == [(10.0, STARTING, 0, 1, None), (260.0, BUSY, 2, 0, 250.0), (300.0, BUSY, 2, 1, 250.0)]
    i = inst(r, 0)
    assert i["busy_ms"] == 200.0 and i["invocations"] == 4 and i["idle_ms"] == 0.0


def test_memory_pressure_evicts_the_least_recently_used_idle_instance() -> None:
    # One node of 2048 MB, three 1024 MB functions, long keep-alives. f (idle since 350) and
    # g (idle since 1350) fill the node; h at 2000 needs room: the LRU idle one (f) is evicted.
    cfg = SimConfig(node_memory_mb=2048, cold_start=ColdStartModel(base_ms=COLD, per_mb_ms=0.0))
    rows = [("f", 0, 100), ("g", 1000, 100), ("h", 2000, 100)]
    r = simulate(trace(rows), TTL(60_000), cfg)
    i = r.instances
    assert list(i.function) == ["f", "g", "h"]
    assert list(i.evicted) == [True, False, False]
    assert i.died_ms.iloc[0] == 2000.0 and i.idle_ms.iloc[0] == 1650.0
    assert not r.requests.rejected.any()
    assert list(r.requests.cold) == [True, True, True]


def test_memory_pressure_rejects_when_nothing_idle_can_be_evicted() -> None:
    cfg = SimConfig(node_memory_mb=1024, cold_start=ColdStartModel(base_ms=COLD, per_mb_ms=0.0))
    r = simulate(trace([("f", 0, 1000), ("g", 10, 100)]), TTL(), cfg)
    q = r.requests
    assert list(q.rejected) == [False, True]
    row = req(r, 1)
    assert math.isnan(row["wait_ms"]) and math.isnan(row["end_ms"]) and math.isnan(row["latency_ms"])
    assert row["instance_id"] == -1 and not row["cold"]
    assert len(r.instances) == 1
    # A function bigger than a whole node is always rejected.
    r = simulate(trace([("big", 0, 10, 4096)]), TTL(), cfg)
    assert list(r.requests.rejected) == [True] and len(r.instances) == 0 and r.horizon_ms == 0.0


def test_evict_answer_that_frees_too_little_rejects_without_killing() -> None:
    class Stingy(TTL):
        def evict(self, now_ms, need_mb, candidates):
            return []

    cfg = SimConfig(node_memory_mb=1024, cold_start=ColdStartModel(base_ms=COLD, per_mb_ms=0.0))
    r = simulate(trace([("f", 0, 100), ("g", 1000, 100)]), Stingy(60_000), cfg)
    assert list(r.requests.rejected) == [False, True]
    assert not r.instances.evicted.any()

    class Wrong(TTL):
        def evict(self, now_ms, need_mb, candidates):
            return [candidates[0], candidates[0]]

    with pytest.raises(PolicyAnswerError, match="evict returned"):
        simulate(trace([("f", 0, 100), ("g", 1000, 100)]), Wrong(60_000), cfg)


def test_spawn_goes_to_the_node_with_most_free_memory_or_the_named_one() -> None:
    cfg = SimConfig(nodes=2, node_memory_mb=3072, cold_start=ColdStartModel(base_ms=COLD, per_mb_ms=0.0))
    rows = [("f", 0, 1000), ("f", 10, 1000), ("f", 20, 1000, 1024)]
    r = simulate(trace(rows), TTL(), cfg)
    assert list(r.instances.node) == ["node0", "node1", "node0"]

    # Unbounded nodes (the default capacity) still spread spawns by memory in use.
    unbounded = SimConfig(nodes=3, cold_start=ColdStartModel(base_ms=COLD, per_mb_ms=0.0))
    r = simulate(trace(rows + [("f", 30, 1000)]), TTL(), unbounded)
    assert list(r.instances.node) == ["node0", "node1", "node2", "node0"]

    class OnNode1(TTL):
        def route(self, now_ms, request, fn):
            return Spawn(node="node1")

    r = simulate(trace(rows), OnNode1(), cfg)
    assert list(r.instances.node) == ["node1", "node1", "node1"]
    # A fourth 1024 MB instance on node1 does not fit (3072 MB, all busy): it is rejected.
    r = simulate(trace(rows + [("f", 30, 1000)]), OnNode1(), cfg)
    assert list(r.requests.rejected) == [False, False, False, True]

    class Nowhere(TTL):
        def route(self, now_ms, request, fn):
            return Spawn(node="node7")

    with pytest.raises(PolicyAnswerError, match="unknown node 'node7'"):
        simulate(trace(rows), Nowhere(), cfg)


class PrewarmAfter(TTL):
    """Keep alive 1 s; once the last instance is killed, pre-warm one after ``delay_ms``."""
    name = "test_prewarm"

    def __init__(self, delay_ms: float) -> None:
        super().__init__(1000.0)
        self.delay_ms = delay_ms
        self.asked: list[float] = []

    def prewarm(self, now_ms, fn):
        self.asked.append(now_ms)
        return self.delay_ms


def test_prewarm_fires_and_serves_the_next_request_warm() -> None:
    # r0: cold 0-350, idle 350, killed 1350 -> prewarm asked, delay 3000 -> spawned at 4350,
    # ready 4600, idle; on_idle keeps it 1000 ms (until 5600). r1 at 5000 is warm.
    p = PrewarmAfter(3000.0)
    r = simulate(trace([("f", 0, 100), ("f", 5000, 100)]), p, CONFIG)
    assert p.asked == [1350.0]
    assert list(r.requests.cold) == [True, False]
    assert list(r.requests.instance_id) == [0, 1]
    i = inst(r, 1)
    assert i["prewarmed"] and i["created_ms"] == 4350.0 and i["ready_ms"] == 4600.0
    assert i["idle_ms"] == 400.0 and i["died_ms"] == 5100.0
    assert req(r, 1)["latency_ms"] == 100.0


def test_prewarm_is_cancelled_by_an_earlier_arrival() -> None:
    # Killed at 1350, pre-warm due at 4350, but r1 arrives at 2000 first: no pre-warm instance.
    p = PrewarmAfter(3000.0)
    r = simulate(trace([("f", 0, 100), ("f", 2000, 100), ("f", 2500, 100)]), p, CONFIG)
    assert list(r.requests.cold) == [True, True, False]
    assert not r.instances.prewarmed.any()
    assert len(r.instances) == 2


def test_reject_is_recorded() -> None:
    class EveryOther(TTL):
        def route(self, now_ms, request, fn):
            return Reject() if request.id % 2 else super().route(now_ms, request, fn)

    rows = [("f", t, 10) for t in range(0, 1000, 100)]
    r = simulate(trace(rows), EveryOther(), CONFIG)
    q = r.requests
    assert list(q.rejected) == [i % 2 == 1 for i in range(10)]
    assert q[q.rejected].latency_ms.isna().all() and (q[q.rejected].instance_id == -1).all()
    assert q[~q.rejected].latency_ms.notna().all()


def test_non_invoke_answer_reroutes_the_queue() -> None:
    # r0 spawns inst 0 (ready 250, runs to 350); r1 (10) and r2 (20) queue on it. At 350
    # on_idle says KILL with two queued: both are re-routed at 350. r1 spawns inst 1 (ready
    # 600, runs 600-700); r2 queues on the starting inst 1 and runs 700-800.
    class KillFirst(QueueOnAny):
        def __init__(self):
            super().__init__()
            self.prewarm_asked = []

        def on_idle(self, now_ms, instance, fn):
            if instance.id == 0:
                return KILL
            return INVOKE if instance.queue else KILL

        def prewarm(self, now_ms, fn):
            self.prewarm_asked.append(now_ms)

    p = KillFirst()
    r = simulate(trace([("f", 0, 100), ("f", 10, 100), ("f", 20, 100)]), p, CONFIG)
    q = r.requests
    assert list(q.instance_id) == [0, 1, 1]
    assert list(q.cold) == [True, True, False]
    assert list(q.end_ms) == [350.0, 700.0, 800.0]
    assert list(q.cold_start_ms) == [250.0, 250.0, 250.0]
    assert list(q.wait_ms) == [0.0, 340.0, 430.0]
    assert list(r.instances.died_ms) == [350.0, 800.0]
    # Not asked at 350 (the queue was re-routed), only when the last instance died idle.
    assert p.prewarm_asked == [800.0]


def test_views_are_kept_up_to_date_for_policies() -> None:
    checks: list[str] = []

    class Inspect(TTL):
        def route(self, now_ms, request, fn):
            assert request.function == fn.name and request.arrival_ms == now_ms
            assert fn.stats.arrivals == request.id + 1          # recorded before route
            assert list(fn.instances) == sorted(fn.instances)   # creation order
            assert all(i.state == IDLE for i in fn.idle)
            if fn.idle:
                assert fn.idle[-1].idle_since_ms == max(i.idle_since_ms for i in fn.idle)
                assert fn.idle[-1].idle_ms(now_ms) == now_ms - fn.idle[-1].idle_since_ms
            checks.append("route")
            return super().route(now_ms, request, fn)

        def on_idle(self, now_ms, instance, fn):
            assert instance.state == IDLE and instance in fn.idle and instance.id in fn.instances
            assert instance.exec_started_ms is None and instance.active == 0
            if instance.keepalive_until_ms is None:   # just finished an execution
                assert instance.idle_since_ms == now_ms and fn.idle[-1] is instance
                assert fn.stats.completions >= instance.invocations
            else:                                     # keep-alive ran out
                assert instance.keepalive_until_ms == now_ms
            checks.append("idle")
            return super().on_idle(now_ms, instance, fn)

    rows = [("f", 0, 100), ("f", 50, 100), ("f", 400, 100), ("f", 9000, 10)]
    simulate(trace(rows), Inspect(1000), CONFIG)
    assert checks.count("route") == 4 and checks.count("idle") >= 6


def test_invalid_answers_give_clear_errors() -> None:
    class BadRoute(TTL):
        def route(self, now_ms, request, fn):
            return KILL

    with pytest.raises(PolicyAnswerError, match="must return Assign, Spawn or Reject"):
        simulate(trace([("f", 0, 10)]), BadRoute(), CONFIG)

    class InvokeNothing(TTL):
        def on_idle(self, now_ms, instance, fn):
            return INVOKE

    with pytest.raises(PolicyAnswerError, match="INVOKE with nothing queued"):
        simulate(trace([("f", 0, 10)]), InvokeNothing(), CONFIG)

    class CrossAssign(TTL):
        def route(self, now_ms, request, fn):
            if fn.name == "g":
                return Assign(self.f_inst)
            r = super().route(now_ms, request, fn)
            return r

        def on_idle(self, now_ms, instance, fn):
            self.f_inst = instance
            return super().on_idle(now_ms, instance, fn)

    with pytest.raises(PolicyAnswerError, match="not an instance of this function"):
        simulate(trace([("f", 0, 10), ("g", 500, 10)]), CrossAssign(), CONFIG)

    with pytest.raises(PolicyAnswerError, match="prewarm for 'f'"):
        simulate(trace([("f", 0, 10), ("f", 9000, 10)]), PrewarmAfter(-5.0), CONFIG)


def test_bad_traces_name_the_problem() -> None:
    with pytest.raises(TraceError, match="duration_ms"):
        simulate(pd.DataFrame({"app": ["a"], "function": ["f"], "arrival_ms": [0.0], "memory_mb": [128.0]}),
                 TTL(), CONFIG)
    with pytest.raises(TraceError, match=r"row 2.*not sorted"):
        simulate(trace([("f", 10, 1), ("f", 5, 1)]), TTL(), CONFIG)
    with pytest.raises(TraceError, match="empty"):
        simulate(trace([]), TTL(), CONFIG)


def test_policy_spec_string_and_prepare() -> None:
    seen = []

    class Offline(TTL):
        def prepare(self, trace):
            seen.append(len(trace))

    simulate(trace([("f", 0, 10), ("f", 1, 10)]), Offline(), CONFIG)
    assert seen == [2]
    with pytest.raises(ValueError, match="unknown policy"):
        simulate(trace([("f", 0, 10)]), "no_such_policy", CONFIG)


def test_request_features_and_payload_reach_the_policy() -> None:
    got = []

    class Look(TTL):
        def route(self, now_ms, request, fn):
            got.append((request.payload_bytes, dict(request.features)))
            return super().route(now_ms, request, fn)

    t = trace([("f", 0, 10), ("f", 5, 10)])
    t["payload_bytes"] = [100, 2000]
    t["user_tier"] = [1.0, 3.0]
    simulate(t, Look(), CONFIG)
    assert got == [(100.0, {"user_tier": 1.0}), (2000.0, {"user_tier": 3.0})]


def test_progress_callback_is_called_with_counts() -> None:
    calls = []
    rows = [("f", float(i), 1.0) for i in range(10_000)]
    simulate(trace(rows), TTL(), CONFIG, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (10_000, 10_000)
    assert 2 <= len(calls) <= 10
    assert all(b[0] >= a[0] for a, b in pairwise(calls))


def test_cold_start_model_per_function_and_memory() -> None:
    cfg = SimConfig(cold_start=ColdStartModel(base_ms=100.0, per_mb_ms=0.5, per_function_ms={"g": 7.0}))
    r = simulate(trace([("f", 0, 10, 512), ("g", 0, 10, 512)]), TTL(), cfg)
    assert list(r.requests.cold_start_ms) == [356.0, 7.0]
    assert list(r.instances.memory_mb) == [512.0, 512.0]


QUANTILES = (1.0, 2.0, 3.0, 5.0, 20.0)   # at 0, 25, 50, 75, 100 %


def test_cold_starts_are_drawn_per_spawn_from_the_quantiles_deterministically_per_seed() -> None:
    # TTL(1): every one of 4000 requests 1 s apart is a cold start of its own.
    rows = [("f", 1000.0 * i, 1.0) for i in range(4000)] + [("g", 4_000_000.0, 1.0)]
    model = ColdStartModel(base_ms=100.0, per_mb_ms=0.0, per_function_ms={"f": 3.0}, quantiles_ms={"f": QUANTILES})

    def cold_ms(seed: int) -> np.ndarray:
        r = simulate(trace(rows), TTL(1.0), SimConfig(cold_start=model, seed=seed))
        assert r.requests.cold.all()
        assert r.requests.cold_start_ms.iloc[-1] == 100.0       # g has no distribution: constant
        return r.requests.cold_start_ms.to_numpy()[:-1]

    drawn = cold_ms(7)
    assert np.array_equal(drawn, cold_ms(7))                    # same seed, same run
    assert not np.array_equal(drawn, cold_ms(8))
    assert drawn.min() >= 1.0 and drawn.max() <= 20.0
    # Piecewise-uniform between quantiles: each quarter of the draws falls between two of them.
    for q, value in zip((0.25, 0.5, 0.75), QUANTILES[1:4], strict=True):
        assert abs(float(np.mean(drawn <= value)) - q) < 0.03, (q, value)
    assert np.median(drawn) == pytest.approx(3.0, abs=0.15)


def test_a_cold_start_distribution_must_be_ascending() -> None:
    with pytest.raises(ValueError, match=r"quantiles_ms\['f'\]"):
        ColdStartModel(quantiles_ms={"f": (3.0, 1.0)})
    with pytest.raises(ValueError, match="at least 2"):
        ColdStartModel(quantiles_ms={"f": (3.0,)})


def test_running_totals_match_the_frames() -> None:
    rows = [("f", 0, 100), ("g", 30, 500), ("f", 1000, 100), ("g", 1200, 50), ("f", 30000, 1)]
    sim = Simulation(trace(rows), CONFIG)
    r = sim.run(TTL(2000))
    served = r.requests[~r.requests.rejected]
    assert sim.completed == len(served)
    assert sim.completed_latency_ms == pytest.approx(served.latency_ms.sum())
    assert sim.idle_mb_ms() == pytest.approx(float((r.instances.idle_ms * r.instances.memory_mb).sum()))
    assert sim.cold_starts == int(r.instances.ready_ms.notna().sum())
    assert sim.accrued_wait_ms() == pytest.approx(float((served.wait_ms + served.cold_start_ms).sum()))
    assert np.isclose(sim.now_ms, r.horizon_ms)


def test_accrued_wait_counts_waiting_requests_as_time_passes() -> None:
    # r0 spawns at 0 (ready 250); r1 at 50 queues on the starting instance and runs at 350.
    policy = QueueOnAny(5000)
    sim = Simulation(trace([("f", 0, 100), ("f", 50, 100)]), CONFIG, policy)
    seen = []
    while (d := sim.next_decision()) is not None:
        seen.append((d.kind, d.now_ms, sim.accrued_wait_ms()))
        sim.apply(policy.route(d.now_ms, d.request, d.fn) if d.kind == "route"
                  else policy.on_idle(d.now_ms, d.instance, d.fn))
    # At 50: r0 has waited 50, r1 0. At 350 (r0 done; r1 still queued): r0 waited 250 for its
    # cold start, r1 300 so far. At 450 both have started: 250 + 300.
    assert seen == [("route", 0.0, 0.0), ("route", 50.0, 50.0), ("idle", 350.0, 550.0), ("idle", 450.0, 550.0)]
    r = sim.result()
    assert sim.accrued_wait_ms() == float((r.requests.wait_ms + r.requests.cold_start_ms).sum())


def test_a_keep_alive_too_short_to_move_the_clock_is_an_error() -> None:
    class Tiny(TTL):
        def on_idle(self, now_ms, instance, fn):
            return KeepAlive(1e-30)

    with pytest.raises(PolicyAnswerError, match="too short to move the clock"):
        simulate(trace([("f", 1000, 10), ("f", 5000, 10)]), Tiny(), CONFIG)


def test_fractional_memory_sizes_that_fit_exactly_fit() -> None:
    # 0.1 + 0.2 > 0.3 in floating point; the node still holds both.
    cfg = SimConfig(node_memory_mb=0.3, cold_start=ColdStartModel(base_ms=COLD, per_mb_ms=0.0))
    r = simulate(trace([("a", 0, 100, 0.1), ("b", 1, 100, 0.2)]), TTL(), cfg)
    assert not r.requests.rejected.any() and not r.instances.evicted.any()


def test_max_instances_rejects_spawns_beyond_the_limit_like_the_live_router() -> None:
    seen_limits = []

    class AlwaysSpawn(TTL):
        def route(self, now_ms, request, fn):
            seen_limits.append(fn.max_instances)
            return SPAWN

        def prewarm(self, now_ms, fn):
            return 1.0  # asks for a pre-warm 1 ms after each arrival: never beyond the limit

    # Five requests at once, each 1 s: two instances start, the other three are rejected (429
    # live); after they finish (keep-alive 5 s) a new arrival is still over the limit.
    rows = [("f", 0, 1000)] * 5 + [("f", 3000, 10)]
    result = simulate(trace(rows), AlwaysSpawn(), SimConfig(cold_start=CONFIG.cold_start, max_instances=2))
    req = result.requests
    assert req["rejected"].tolist() == [False, False, True, True, True, True]
    assert req["cold"].tolist()[:2] == [True, True]
    assert len(result.instances) == 2 and set(seen_limits) == {2}
    unlimited = simulate(trace(rows), AlwaysSpawn(), CONFIG)
    assert not unlimited.requests["rejected"].any() and len(unlimited.instances) >= 6
    with pytest.raises(ValueError, match="max_instances"):
        simulate(trace(rows), AlwaysSpawn(), SimConfig(max_instances=0))
