"""Unit tests of the built-in policies' decisions on hand-built FunctionView / InstanceView
scenes (no engine): every expected number below is worked out by hand in the comments."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from policies.builtin.default import ExpectedWait
from policies.builtin.faascache import FaasCache
from policies.builtin.fixed_ttl import FixedTTL
from policies.builtin.hybrid_histogram import HISTOGRAM, OUT_OF_BOUNDS, UNCERTAIN, HybridHistogram
from policies.builtin.kpa import KPA
from policies.builtin.oracle import FunctionFuture, Oracle
from policies.features import FunctionStats
from policies.interface import (
    BUSY,
    IDLE,
    INVOKE,
    KILL,
    SPAWN,
    STARTING,
    Assign,
    CostWeights,
    FunctionView,
    InstanceView,
    KeepAlive,
    Reject,
    RequestView,
    Spawn,
)
from policies.registry import PolicySpecError

pytestmark = pytest.mark.unit

MIN = 60_000.0
HOUR = 3_600_000.0


# ----------------------------------------------------------------------------- scenes

def make_fn(name: str = "f", *, memory_mb: float = 256.0, concurrency: int = 1, cold_ms: float = 500.0,
            duration_ms: float = 100.0, app: str = "") -> FunctionView:
    stats = FunctionStats(cold_start_prior_ms=cold_ms, duration_prior_ms=duration_ms)
    return FunctionView(name, app=app, memory_mb=memory_mb, concurrency=concurrency, stats=stats)


class Scene:
    """A function's instances, moved between states the way an engine would."""

    def __init__(self, fn: FunctionView) -> None:
        self.fn = fn
        self.next_id = 0
        self.next_request = 0

    def spawn(self, now: float, *, state: str = STARTING) -> InstanceView:
        inst = InstanceView(self.next_id, self.fn, "node0", self.fn.memory_mb, self.fn.concurrency, now)
        self.next_id += 1
        self.fn.instances[inst.id] = inst
        if state == IDLE:
            self.make_idle(inst, now)
        elif state == BUSY:
            self.start(inst, now)
        return inst

    def start(self, inst: InstanceView, now: float) -> None:
        if inst.state == IDLE:
            self.fn.idle.remove(inst)
        inst.state = BUSY
        inst.active = 1
        inst.exec_started_ms = now
        inst.idle_since_ms = None
        inst.keepalive_until_ms = None

    def make_idle(self, inst: InstanceView, now: float, *, finished: bool = False) -> None:
        if finished:
            inst.invocations += 1
        inst.state = IDLE
        inst.active = 0
        inst.exec_started_ms = None
        inst.idle_since_ms = now
        inst.keepalive_until_ms = None
        self.fn.idle.append(inst)

    def kill(self, inst: InstanceView) -> None:
        if inst in self.fn.idle:
            self.fn.idle.remove(inst)
        inst.state = "dead"
        del self.fn.instances[inst.id]

    def request(self, now: float, payload_bytes: int = 0, *, record: bool = True,
                request_id: int | None = None) -> RequestView:
        """A request arriving now (recorded in the function's stats, as engines do first)."""
        if record:
            self.fn.stats.record_arrival(now)
        rid = self.next_request if request_id is None else request_id
        self.next_request += 1
        return RequestView(rid, self.fn.name, now, payload_bytes)


def keeps(decision, ms: float) -> bool:
    """``decision`` is KeepAlive for ``ms`` (up to float rounding)."""
    return isinstance(decision, KeepAlive) and decision.ms == pytest.approx(ms)


def run_request(policy, sc: Scene, inst: InstanceView, t: float, duration: float):
    """A request at ``t`` routed (expected onto ``inst``), executed, and ``on_idle`` asked at
    its end. Returns the on_idle answer."""
    fn = sc.fn
    assert policy.route(t, sc.request(t), fn) == Assign(inst)
    sc.start(inst, t)
    fn.stats.record_completion(t + duration, duration)
    sc.make_idle(inst, t + duration, finished=True)
    return policy.on_idle(t + duration, inst, fn)


# ----------------------------------------------------------------------------- fixed TTL

def test_fixed_ttl_keeps_alive_for_the_ttl_then_kills():
    fn, p = make_fn(), FixedTTL(ttl_ms=60_000)
    sc = Scene(fn)
    a = sc.spawn(0, state=BUSY)
    sc.make_idle(a, 1_000, finished=True)
    assert p.on_idle(1_000, a, fn) == KeepAlive(60_000)        # just finished
    a.keepalive_until_ms = 61_000                                 # what the engine holds at expiry
    assert p.on_idle(61_000, a, fn) == KILL                       # the keep-alive ran out
    assert p.on_idle(31_000, a, fn) == KeepAlive(30_000)          # an early re-ask: the remainder


def test_fixed_ttl_after_reuse_starts_a_fresh_ttl():
    fn, p = make_fn(), FixedTTL()                                 # default 10 minutes
    sc = Scene(fn)
    a = sc.spawn(0, state=IDLE)
    # used again just before its keep-alive ran out; the execution ends after the old expiry
    assert run_request(p, sc, a, 599_000, 5_000) == KeepAlive(600_000)


def test_fixed_ttl_routes_to_the_warmest_idle_instance_else_spawns():
    fn, p = make_fn(), FixedTTL()
    sc = Scene(fn)
    old = sc.spawn(0, state=IDLE)
    warm = sc.spawn(0, state=BUSY)
    sc.make_idle(warm, 500, finished=True)                        # freed later: the warmest
    assert p.route(600, sc.request(600), fn) == Assign(warm)
    sc.start(warm, 600)
    assert p.route(700, sc.request(700), fn) == Assign(old)
    sc.start(old, 700)
    assert p.route(800, sc.request(800), fn) == SPAWN


def test_fixed_ttl_uses_a_free_slot_of_a_busy_instance_and_runs_the_queue():
    fn, p = make_fn(concurrency=4), FixedTTL()
    sc = Scene(fn)
    a = sc.spawn(0, state=BUSY)
    assert p.route(10, sc.request(10), fn) == Assign(a)           # 1 of 4 slots in use
    a.queue.append("queued request")
    assert p.on_idle(20, a, fn) == INVOKE


@pytest.mark.parametrize("bad", [0, -5, "abc", float("inf"), True])
def test_fixed_ttl_rejects_bad_ttl(bad):
    with pytest.raises(PolicySpecError, match="ttl_ms"):
        FixedTTL(ttl_ms=bad)


# ------------------------------------------------------------------------ hybrid histogram

def feed_idle_times(policy: HybridHistogram, sc: Scene, idle_times_ms: list[float],
                    duration: float = 100.0) -> tuple[InstanceView, float]:
    """One warm instance serves a request, then one per idle time, each arriving that long
    after the previous execution ended. Returns the instance and the last end time."""
    inst = sc.spawn(0, state=IDLE)
    t = 0.0
    for gap in [0.0, *idle_times_ms]:
        t += gap
        assert policy.route(t, sc.request(t), sc.fn) == Assign(inst)
        sc.start(inst, t)
        t += duration
        sc.fn.stats.record_completion(t, duration)
        sc.make_idle(inst, t, finished=True)
    return inst, t


def test_hybrid_histogram_windows_from_a_regular_idle_time():
    p = HybridHistogram()
    fn = make_fn()
    sc = Scene(fn)
    inst, end = feed_idle_times(p, sc, [10.5 * MIN] * 10)
    branch, prewarm, keepalive = p.windows(fn)
    # all ten idle times in bin 10 ([10, 11) minutes): head = tail = bin 10
    assert branch == HISTOGRAM
    assert prewarm == pytest.approx(10 * MIN * 0.9)                   # 540,000 ms
    assert keepalive == pytest.approx(11 * MIN * 1.1 - 10 * MIN * 0.9)  # 726,000 - 540,000
    # after an execution: unload, and pre-warm the pre-warm window later
    assert p.on_idle(end, inst, fn) == KILL
    sc.kill(inst)
    assert p.prewarm(end, fn) == pytest.approx(540_000)
    # the pre-warmed instance (never used) stays warm for the keep-alive window, then dies
    ready = end + 540_000 + 500
    pre = sc.spawn(end + 540_000)
    sc.make_idle(pre, ready)
    assert keeps(p.on_idle(ready, pre, fn), 186_000)
    assert p.on_idle(ready + 186_000, pre, fn) == KILL
    sc.kill(pre)
    assert p.prewarm(ready + 186_000, fn) is None                  # expiry: no new pre-warm


def test_hybrid_histogram_percentiles_of_a_mixture():
    p = HybridHistogram()
    fn = make_fn()
    feed_idle_times(p, Scene(fn), [2.5 * MIN] * 95 + [30.2 * MIN] * 5)
    branch, prewarm, keepalive = p.windows(fn)
    # 5th percentile: the 5th of 100 idle times, bin 2; 99th: the 99th, bin 30
    assert branch == HISTOGRAM
    assert prewarm == pytest.approx(2 * MIN * 0.9)
    assert prewarm + keepalive == pytest.approx(31 * MIN * 1.1)


def test_hybrid_histogram_short_idle_times_mean_keep_alive_without_prewarm():
    p = HybridHistogram()
    fn = make_fn()
    sc = Scene(fn)
    inst, end = feed_idle_times(p, sc, [20_000.0] * 8)              # bin 0: no pre-warm
    assert p.windows(fn) == (HISTOGRAM, 0.0, pytest.approx(1 * MIN * 1.1))
    assert keeps(p.on_idle(end, inst, fn), 66_000)
    assert p.on_idle(end + 66_000, inst, fn) == KILL


def test_hybrid_histogram_falls_back_to_the_standard_keep_alive():
    # too few idle times (min_samples = 5)
    p = HybridHistogram()
    fn = make_fn()
    sc = Scene(fn)
    inst, end = feed_idle_times(p, sc, [10.5 * MIN] * 3)
    assert p.windows(fn) == (UNCERTAIN, 0.0, 4 * HOUR)
    assert p.on_idle(end, inst, fn) == KeepAlive(4 * HOUR)
    # a flat histogram: one idle time in each of bins 1..100 of 240: mean count 100/240,
    # sample variance (100 - 240 x (100/240)^2) / 239 = 0.24407, CV = 0.49404 / 0.41667 < 2
    p = HybridHistogram()
    fn = make_fn()
    feed_idle_times(p, Scene(fn), [(k + 0.5) * MIN for k in range(1, 101)])
    assert fn.policy_state.cv() == pytest.approx(1.18569, abs=1e-5)
    assert p.windows(fn) == (UNCERTAIN, 0.0, 4 * HOUR)
    # the fallback keep-alive is a parameter
    p = HybridHistogram(fallback_keepalive_ms=20 * MIN)
    fn = make_fn()
    feed_idle_times(p, Scene(fn), [MIN])
    assert p.windows(fn) == (UNCERTAIN, 0.0, 20 * MIN)


def test_hybrid_histogram_out_of_bounds_uses_the_forecast_branch():
    p = HybridHistogram()
    fn = make_fn()
    feed_idle_times(p, Scene(fn), [5 * HOUR] * 6)
    branch, prewarm, keepalive = p.windows(fn)
    # forecast = median of the last 5 idle times = 5 h; pre-warm 85% of it, keep-alive 30%
    assert branch == OUT_OF_BOUNDS
    assert prewarm == pytest.approx(0.85 * 5 * HOUR)
    assert keepalive == pytest.approx(0.30 * 5 * HOUR)


def test_hybrid_histogram_counts_zero_idle_time_while_the_app_is_busy():
    p = HybridHistogram()
    fn = make_fn()
    sc = Scene(fn)
    a = sc.spawn(0, state=IDLE)
    b = sc.spawn(0, state=IDLE)
    p.route(0, sc.request(0), fn)
    sc.start(b, 0)                               # the warmest (b) runs the first request
    fn.stats.record_completion(100, 100)
    sc.make_idle(b, 100, finished=True)
    p.route(5 * MIN, sc.request(5 * MIN), fn)   # idle for 5 minutes: bin 4
    sc.start(b, 5 * MIN)
    p.route(5 * MIN + 10, sc.request(5 * MIN + 10), fn)   # b still running: idle time 0
    st = fn.policy_state
    assert st.counts[4] == 1 and st.counts[0] == 1 and st.in_range == 2
    assert a.state == IDLE


def test_hybrid_histogram_shares_one_histogram_per_app():
    p = HybridHistogram()
    f1, f2 = make_fn("f1", app="shop"), make_fn("f2", app="shop")
    assert p.app_state(f1) is p.app_state(f2)
    p = HybridHistogram(per_app=False)
    f1, f2 = make_fn("f1", app="shop"), make_fn("f2", app="shop")
    assert p.app_state(f1) is not p.app_state(f2)


@pytest.mark.parametrize("params, field", [({"margin": 1.5}, "margin"), ({"bin_ms": 0}, "bin_ms"),
                                           ({"head_percentile": 99, "tail_percentile": 5}, "head_percentile"),
                                           ({"per_app": "yes"}, "per_app")])
def test_hybrid_histogram_rejects_bad_params(params, field):
    with pytest.raises(PolicySpecError, match=field):
        HybridHistogram(**params)


# ----------------------------------------------------------------------------- FaasCache

def test_faascache_evicts_in_greedy_dual_order():
    p = FaasCache()
    fa = make_fn("a", memory_mb=256, cold_ms=500)
    fb = make_fn("b", memory_mb=1024, cold_ms=2000)
    fc = make_fn("c", memory_mb=128, cold_ms=100)
    sa, sb, sc_ = Scene(fa), Scene(fb), Scene(fc)
    a1 = sa.spawn(0, state=IDLE)
    b1 = sb.spawn(0, state=IDLE)
    for t in (1, 2, 3):
        p.route(t, sa.request(t), fa)           # frequency 3
    p.route(4, sb.request(4), fb)               # frequency 1
    # priority = clock + frequency x cold start / memory
    assert fa.policy_state.priority == pytest.approx(3 * 500 / 256)   # 5.859375
    assert fb.policy_state.priority == pytest.approx(2000 / 1024)     # 1.953125
    assert p.evict(10, 100, [a1, b1]) == [b1]   # lowest priority first
    assert p.clock == pytest.approx(2000 / 1024)  # the clock moves up to the victim's priority
    sb.kill(b1)
    # later accesses start from the advanced clock
    p.route(20, sa.request(20), fa)             # a: frequency 4
    p.route(21, sc_.request(21), fc)            # c: frequency 1
    assert fa.policy_state.priority == pytest.approx(2000 / 1024 + 4 * 500 / 256)   # 9.765625
    assert fc.policy_state.priority == pytest.approx(2000 / 1024 + 100 / 128)       # 2.734375
    a2 = sa.spawn(5, state=IDLE)                # a1 idle since 0, a2 since 5
    c1 = sc_.spawn(0, state=IDLE)
    # 300 MB needed: c (128 MB) first, then a's least recently used instance (256 MB)
    assert p.evict(30, 300, [a2, c1, a1]) == [c1, a1]
    assert p.clock == pytest.approx(2000 / 1024 + 4 * 500 / 256)


def test_faascache_keeps_idle_instances_and_resets_frequency_when_none_live():
    p = FaasCache()
    fn = make_fn()
    sc = Scene(fn)
    a = sc.spawn(0, state=IDLE)
    assert run_request(p, sc, a, 10, 100) == KeepAlive(HOUR)      # re-asked hourly, never killed
    assert p.on_idle(10 + HOUR, a, fn) == KeepAlive(HOUR)
    assert fn.policy_state.freq == 1
    sc.kill(a)
    p.route(5 * HOUR, sc.request(5 * HOUR), fn)   # no live instance: the count starts again
    assert fn.policy_state.freq == 1


def test_faascache_memory_cap_evicts_idle_instances_in_priority_order_within_the_spawn():
    p = FaasCache(memory_cap_mb=1536)
    cheap = make_fn("cheap", memory_mb=512, cold_ms=100)     # priority 100/512 per access
    dear = make_fn("dear", memory_mb=512, cold_ms=1000)      # priority 1000/512 per access
    third = make_fn("third", memory_mb=1024, cold_ms=1000)
    s1, s2, s3 = Scene(cheap), Scene(dear), Scene(third)
    c = s1.spawn(0, state=IDLE)
    d = s2.spawn(0, state=IDLE)
    assert run_request(p, s1, c, 1, 10) == KeepAlive(HOUR)          # kept: memory is a cache
    assert run_request(p, s2, d, 2, 10) == KeepAlive(HOUR)
    # 1024 MB live; a 1024 MB spawn would hold 2048 > 1536: 512 MB must go, the cheapest first
    assert p.route(20, s3.request(20), third) == Spawn(evict=[c])
    assert p.clock == pytest.approx(100 / 512)                       # aged up to the victim
    s1.kill(c)
    s3.spawn(20, state=IDLE)
    # third was inserted after the eviction: from the aged clock, 100/512 + 1000/1024 = 1.17,
    # below dear's 1000/512 = 1.95. 1536 MB live (dear 512, third 1024); cheap again needs
    # 512 MB: third's instance, the lowest priority, is evicted (all 1024 MB of it)
    assert third.policy_state.priority == pytest.approx(100 / 512 + 1000 / 1024)
    assert p.route(30, s1.request(30), cheap) == Spawn(evict=[third.idle[0]])


def test_faascache_memory_cap_evicts_several_until_the_spawn_fits():
    p = FaasCache(memory_cap_mb=1024)
    small = [make_fn(f"s{k}", memory_mb=256, cold_ms=100 * (k + 1)) for k in range(4)]
    scenes = [Scene(f) for f in small]
    insts = [sc.spawn(0, state=IDLE) for sc in scenes]
    for k, (sc, inst) in enumerate(zip(scenes, insts, strict=True)):
        run_request(p, sc, inst, 1 + k, 10)        # priorities 100/256 < 200/256 < ...
    big = make_fn("big", memory_mb=600, cold_ms=5000)
    # 1024 live + 600 > 1024: 600 MB must go: three 256 MB instances, lowest priority first
    assert p.route(50, Scene(big).request(50), big) == Spawn(evict=insts[:3])
    assert p.clock == pytest.approx(300 / 256)


def test_faascache_memory_cap_rejects_when_nothing_idle_can_make_room():
    p = FaasCache(memory_cap_mb=1024, retry_after_ms=2_000)
    fn = make_fn("f", memory_mb=512)
    other = make_fn("g", memory_mb=256)
    sc, so = Scene(fn), Scene(other)
    sc.spawn(0, state=BUSY)
    sc.spawn(0, state=STARTING)
    g = so.spawn(0, state=IDLE)
    p.on_idle(5, g, other)                                           # seen: its memory counts
    # 1280 MB live, 256 of it idle: a 512 MB spawn needs 768 MB freed; even evicting every
    # idle instance would not do: nothing is evicted and the request is refused (not queued)
    assert p.route(10, sc.request(10), fn) == Reject(2_000)
    assert p.clock == 0.0
    assert p.route(11, so.request(11), other) == Assign(g)           # a warm one still runs


def test_faascache_without_a_cap_never_evicts_from_route():
    p = FaasCache()
    fns = [make_fn(f"f{k}", memory_mb=4096) for k in range(3)]
    for k, f in enumerate(fns):
        Scene(f).spawn(0, state=IDLE)
        assert p.route(k, Scene(fns[k]).request(k), fns[k]) == Assign(f.idle[-1])
    new = make_fn("new", memory_mb=4096)
    assert p.route(9, Scene(new).request(9), new) == SPAWN


# ----------------------------------------------------------------------------------- KPA

def test_kpa_panics_on_a_burst_and_scales_up():
    p = KPA()
    fn = make_fn(duration_ms=2_000)
    sc = Scene(fn)
    sc.request(0)
    sc.spawn(0, state=BUSY)                     # one instance, busy
    for k in range(20):                         # 20 arrivals in one second
        t = 50.0 * (k + 1)
        decision = p.route(t, sc.request(t), fn)
        assert decision == SPAWN                # no free slot, fewer live than desired
    # at t = 1000: 21 requests in flight; Little's law over 6 s gives 21/6 x 2 s = 7,
    # the in-flight count 21 wins: desired = ceil(21 / 0.7) = 30 >= 2 x 1 live -> panic
    assert p.desired(1_000, fn) == (30, True)
    assert fn.policy_state.panic_until_ms == 61_000


def test_kpa_keeps_instances_during_panic_and_scales_down_after():
    p = KPA()
    fn = make_fn(duration_ms=2_000)
    sc = Scene(fn)
    insts = [sc.spawn(0, state=BUSY) for _ in range(5)]
    for k in range(10):
        sc.request(100.0 * k)
    p.route(1_000, sc.request(1_000), fn)       # 11 in flight: panic until 61 s
    for i, inst in enumerate(insts):
        fn.stats.record_completion(2_000 + i, 2_000)
        sc.make_idle(inst, 2_000 + i, finished=True)
    # 11 - 5 = 6 requests still in flight (never completed here): still panicking
    assert p.on_idle(10_000, insts[0], fn) == KeepAlive(51_000)
    for _ in range(6):
        fn.stats.record_completion(10_000, 2_000)
    # in panic (until 61 s) the desired count never drops below the 5 live instances
    assert p.desired(60_500, fn) == (5, True)
    assert p.desired(61_500, fn) == (0, False)                  # the window is empty now
    assert p.on_idle(61_500, insts[0], fn) == KILL              # 5 live > 0 desired


def test_kpa_keeps_an_idle_instance_until_the_stable_window_empties():
    p = KPA()
    fn = make_fn()
    sc = Scene(fn)
    a = sc.spawn(0, state=IDLE)
    assert run_request(p, sc, a, 0, 100) == KeepAlive(59_900)  # the arrival at 0 leaves at 60 s
    assert p.on_idle(60_000, a, fn) == KILL                    # nothing in the window: desired 0


def test_kpa_queues_only_within_the_queue_limit():
    fn = make_fn(duration_ms=50)
    sc = Scene(fn)
    busy = sc.spawn(0, state=BUSY)
    for t in (0.0, 20_000.0, 40_000.0):
        sc.request(t)
        fn.stats.record_completion(t + 50, 50)
    # 3 arrivals in 60 s x 50 ms: desired 1 = live, no panic: queue if allowed, else spawn
    assert KPA(queue_limit=1).route(59_000, sc.request(59_000, record=False), fn) == Assign(busy)
    busy.queue.append("waiting")
    assert KPA(queue_limit=1).route(59_000, sc.request(59_000, record=False), fn) == SPAWN
    assert KPA().route(59_000, sc.request(59_000, record=False), fn) == SPAWN


# ------------------------------------------------------------------------- expected wait

def warmed_up(p: ExpectedWait, fn: FunctionView, sc: Scene, duration: float) -> tuple[InstanceView, float]:
    """Ten requests of exactly the predicted duration through one instance, so the
    prediction is exact. Returns the instance and the time."""
    a = sc.spawn(0, state=IDLE)
    t = 0.0
    for _ in range(10):
        run_request(p, sc, a, t, duration)
        t += duration + 1_000
    assert fn.stats.predict_duration() == pytest.approx(duration)
    assert fn.policy_state.durations.order == [pytest.approx(duration)] * 10   # as the ledger timed them
    return a, t


def test_expected_wait_queues_when_the_busy_instance_frees_before_a_cold_start():
    p = ExpectedWait()
    fn = make_fn(cold_ms=500, duration_ms=300)
    sc = Scene(fn)
    a, t = warmed_up(p, fn, sc, 300)
    assert p.route(t, sc.request(t), fn) == Assign(a)
    sc.start(a, t)
    # 250 ms into an execution whose recent durations are all 300 ms: 50 ms left < 500 ms
    assert p.route(t + 250, sc.request(t + 250), fn) == Assign(a)
    a.queue.append("r")
    # a request already waits there: no queueing behind a queue, a cold start instead
    assert p.route(t + 250, sc.request(t + 250), fn) == SPAWN


def test_expected_wait_spawns_when_the_wait_exceeds_the_cold_start():
    p = ExpectedWait()
    fn = make_fn(cold_ms=200, duration_ms=300)
    sc = Scene(fn)
    a, t = warmed_up(p, fn, sc, 300)
    p.route(t, sc.request(t), fn)
    sc.start(a, t)
    assert p.route(t + 50, sc.request(t + 50), fn) == SPAWN        # 250 ms > 200 ms
    assert p.route(t + 150, sc.request(t + 150), fn) == Assign(a)  # 150 ms < 200 ms


def test_expected_wait_does_not_wait_for_a_request_that_outran_its_prediction():
    p = ExpectedWait()
    fn = make_fn(cold_ms=500, duration_ms=300)
    sc = Scene(fn)
    a, t = warmed_up(p, fn, sc, 300)
    p.route(t, sc.request(t), fn)
    sc.start(a, t)
    assert p.route(t + 400, sc.request(t + 400), fn) == SPAWN       # longer than every duration seen


def test_expected_wait_bounds_the_wait_with_a_high_quantile_of_the_remaining_time():
    # durations alternate 100 ms and 5 s: the mean (2.55 s) says nothing useful; 50 ms into an
    # execution, the 95th percentile of what is left is ~5 s > the 500 ms cold start
    p = ExpectedWait()
    fn = make_fn(cold_ms=500, duration_ms=100)
    sc = Scene(fn)
    a = sc.spawn(0, state=IDLE)
    t = 0.0
    for k in range(20):
        d = 100.0 if k % 2 else 5_000.0
        run_request(p, sc, a, t, d)
        t += d + 1_000
    p.route(t, sc.request(t), fn)
    sc.start(a, t)
    assert p.route(t + 50, sc.request(t + 50), fn) == SPAWN
    # before min_durations completions it never queues (the remaining time is unknown)
    fresh, g = ExpectedWait(), make_fn("g", cold_ms=500, duration_ms=10)
    sg = Scene(g)
    b = sg.spawn(0, state=IDLE)
    fresh.route(0, sg.request(0), g)
    sg.start(b, 0)
    assert fresh.route(1, sg.request(1), g) == SPAWN


def test_expected_wait_percentile_keep_alive_follows_the_idle_periods():
    p = ExpectedWait(keepalive="percentile", min_keepalive_ms=MIN)
    fn = make_fn(memory_mb=256, cold_ms=378)
    sc = Scene(fn)
    a = sc.spawn(0, state=IDLE)
    # no idle period seen yet: the break-even time (an idle period costing a cold start)
    w = CostWeights()
    mem_usd_per_s = 0.25 * w.gb_s_usd
    break_even = (w.latency_usd_per_s + mem_usd_per_s) * 0.378 / mem_usd_per_s * 1000
    assert keeps(run_request(p, sc, a, 0, 100), break_even)
    t = 0.0
    for _ in range(10):
        t += 2 * MIN
        answer = run_request(p, sc, a, t, 100)
    assert answer == KeepAlive(2 * MIN - 100)                       # p95 of ten idle periods
    assert p.on_idle(t + 100 + 2 * MIN, a, fn) == KILL
    fast = make_fn("fast")
    sf = Scene(fast)
    b = sf.spawn(0, state=IDLE)
    for k in range(10):
        answer = run_request(p, sf, b, k * 1_000.0, 10)
    assert answer == KeepAlive(MIN)                                 # ~1 s idle periods, clamped to 1 min


def test_expected_wait_cost_keep_alive_bridges_only_the_gaps_worth_it():
    # 1 GB, 500 ms cold start: one cold start costs (0.001 + 1.66667e-5) x 0.5 = 5.083e-4 USD,
    # 30.5 s of idle memory. Idle periods: ten of 10 s and ten of 20 min. Expected cost per
    # idle period: T = 0 -> 5.083e-4; T = 10 s -> (1.667e-8 x (10 x 10 s + 10 x 10 s) + 10 x
    # 5.083e-4) / 20 = 4.208e-4; T = 20 min -> 1.667e-8 x 10 x (10 s + 20 min) / 20 = 0.0101
    p = ExpectedWait(prewarming=False)
    fn = make_fn(memory_mb=1024, cold_ms=500)
    sc = Scene(fn)
    a = sc.spawn(0, state=IDLE)
    t = 0.0
    run_request(p, sc, a, t, 100)
    for gap in [10_000.0] * 10 + [20 * MIN] * 10:
        t += gap
        answer = run_request(p, sc, a, t, 100)
    assert keeps(answer, (10_000 - 100) * 1.05)                     # the 10 s idle periods, plus 5%
    # only long idle periods: never worth bridging, so the shortest keep-alive (1 s)
    fn2 = make_fn("g", memory_mb=1024, cold_ms=500)
    sg = Scene(fn2)
    b = sg.spawn(0, state=IDLE)
    for k in range(5):
        answer = run_request(p, sg, b, k * 5 * MIN, 100)
    assert answer == KeepAlive(1_000)


def test_expected_wait_learns_idle_periods_of_killed_instances_and_prewarms_periodic_functions():
    # a timer every 5 minutes, a 1 GB function (break-even ~30 s): keeping alive 5 min costs
    # ~10x a cold start, a pre-warm ready just before the next call costs the start's memory
    p = ExpectedWait()
    fn = make_fn(memory_mb=1024, cold_ms=500)
    sc = Scene(fn)
    t = 0.0
    inst = sc.spawn(t, state=IDLE)
    for _ in range(12):
        if inst is None:                                            # killed: the next call is cold
            assert p.route(t, sc.request(t), fn) == SPAWN
            inst = sc.spawn(t, state=IDLE)
            sc.fn.policy_state.ledger.sync(fn, 500)
        else:
            assert p.route(t, sc.request(t), fn) == Assign(inst)
        sc.start(inst, t)
        fn.stats.record_completion(t + 100, 100)
        sc.make_idle(inst, t + 100, finished=True)
        answer = p.on_idle(t + 100, inst, fn)
        if answer == KILL:
            sc.kill(inst)
            inst = None
            delay = p.prewarm(t + 100, fn)
            if delay is not None:
                break
        else:
            assert p.on_idle(t + 100 + answer.ms, inst, fn) == KILL
            sc.kill(inst)
            inst = None
        t += 5 * MIN
    # the killed instances' idle periods (5 min - 100 ms) were learned; a pre-warm is due so that
    # an instance is ready 2% before the next call
    assert delay is not None
    assert t + 100 + delay + 500 == pytest.approx(t + (5 * MIN - 100) * 0.98 - 500 + 100, abs=1)


# -------------------------------------------------------------------------------- oracle

GB_FN_COLD_MS = 500.0


def oracle_for(arrivals: list[float], durations: list[float], **params) -> tuple[Oracle, FunctionView, Scene]:
    trace = pd.DataFrame({"app": "a", "function": "f", "arrival_ms": arrivals, "duration_ms": durations,
                          "memory_mb": 1024.0})
    p = Oracle(**params)
    p.prepare(trace)
    fn = make_fn("f", memory_mb=1024, cold_ms=GB_FN_COLD_MS)
    return p, fn, Scene(fn)


def break_even_ms() -> float:
    """Idle ms of a 1 GB instance that cost as much as one 500 ms cold start (~30.5 s)."""
    w = CostWeights()
    return (w.latency_usd_per_s + w.gb_s_usd) * 0.5 / w.gb_s_usd * 1000.0


def test_oracle_last_instance_keeps_for_short_gaps_and_prewarms_for_long_ones():
    p, fn, sc = oracle_for([1_000, 1_400, 61_000], [100, 100, 100])
    a = sc.spawn(0, state=IDLE)
    # 300 ms to the next arrival: cheaper than a pre-warm's 500 ms cold start -> keep
    assert run_request(p, sc, a, 1_000, 100) == KeepAlive(300 + 1)
    # 59.5 s: kill, and pre-warm so the new instance is ready 1 ms before the arrival
    assert run_request(p, sc, a, 1_400, 100) == KILL
    sc.kill(a)
    assert p.prewarm(1_500, fn) == pytest.approx(59_500 - 500 - 1)
    b = sc.spawn(60_499)
    sc.make_idle(b, 60_999)
    assert p.on_idle(60_999, b, fn) == KeepAlive(1 + 1)         # ready: keep until its arrival
    assert run_request(p, sc, b, 61_000, 100) == KILL           # no arrival left
    assert p.prewarm(61_100, fn) is None


def test_oracle_keeps_a_second_instance_only_while_its_level_returns_in_time():
    # r0 runs 0-5000 on A; r1 1000-2000 on B; r2 at 3000 needs a second instance again
    p, fn, sc = oracle_for([0, 1_000, 3_000, 50_000], [5_000, 1_000, 100, 100])
    a = sc.spawn(0, state=IDLE)
    b = sc.spawn(0, state=IDLE)
    assert p.route(0, sc.request(0), fn) == Assign(b)           # warmest first
    sc.start(b, 0)
    assert p.route(1_000, sc.request(1_000), fn) == Assign(a)
    sc.start(a, 1_000)
    sc.make_idle(a, 2_000, finished=True)
    # b busy until 5000; demand returns to 2 at 3000: 1 s away -> keep until then
    assert p.on_idle(2_000, a, fn) == KeepAlive(1_000 + 1)
    assert run_request(p, sc, a, 3_000, 100) == KILL             # next level-2 need: never
    sc.kill(a)
    assert p.prewarm(3_100, fn) is None                          # b still alive: no pre-warm
    sc.make_idle(b, 5_000, finished=True)
    # the last instance: 45 s to r3 -> kill and pre-warm
    assert p.on_idle(5_000, b, fn) == KILL
    assert p.prewarm(5_000, fn) == pytest.approx(45_000 - 500 - 1)


def test_oracle_kills_an_instance_another_will_replace_before_the_next_arrival():
    # r0 0-1000 on A, r1 500-800 on B; r2 at 1500 is served by A (free at 1000): B's
    # level is not needed again, although the next arrival is only 700 ms away
    p, fn, sc = oracle_for([0, 500, 1_500, 20_000], [1_000, 300, 100, 100])
    a = sc.spawn(0, state=IDLE)
    b = sc.spawn(0, state=IDLE)
    assert p.route(0, sc.request(0), fn) == Assign(b)
    sc.start(b, 0)
    assert p.route(500, sc.request(500), fn) == Assign(a)
    sc.start(a, 500)
    sc.make_idle(a, 800, finished=True)
    assert p.on_idle(800, a, fn) == KILL


def test_oracle_long_gaps_beyond_break_even_are_not_bridged_by_a_second_instance():
    be = break_even_ms()
    assert be == pytest.approx(30_500, rel=1e-3)
    for gap, expected in ((be - 1_000, KeepAlive(be - 1_000 + 1)), (be + 1_000, KILL)):
        # r0 on A for a long time; r1 on B; r2 needs a second instance again `gap` after B frees
        p, fn, sc = oracle_for([0, 1_000, 1_100 + gap], [200_000, 100, 100])
        a = sc.spawn(0, state=IDLE)
        b = sc.spawn(0, state=IDLE)
        p.route(0, sc.request(0), fn)
        sc.start(b, 0)
        assert run_request(p, sc, a, 1_000, 100) == expected


def test_oracle_queues_behind_a_busy_instance_only_when_that_is_cheaper():
    p, fn, sc = oracle_for([0, 900, 3_000, 3_200], [1_000, 100, 2_500, 100])
    a = sc.spawn(0, state=IDLE)
    assert p.route(0, sc.request(0), fn) == Assign(a)
    sc.start(a, 0)
    assert p.route(900, sc.request(900), fn) == Assign(a)         # exact wait 100 ms < 500 ms
    a.queue.append(1)
    fn.stats.record_completion(1_000, 1_000)
    assert p.on_idle(1_000, a, fn) == INVOKE
    a.queue.clear()
    sc.start(a, 1_000)
    sc.make_idle(a, 1_100, finished=True)
    fn.stats.record_completion(1_100, 100)
    p.on_idle(1_100, a, fn)
    assert p.route(3_000, sc.request(3_000), fn) == Assign(a)
    sc.start(a, 3_000)
    assert p.route(3_200, sc.request(3_200), fn) == SPAWN         # 2,300 ms > a cold start


def test_oracle_spawns_into_a_burst_even_when_the_first_wait_is_short():
    # one instance frees 100 ms after r1 arrives, but 20 more requests follow every 10 ms
    arrivals = [0, 900] + [910 + 10 * k for k in range(20)]
    p, fn, sc = oracle_for(arrivals, [1_000] + [100] * 21)
    a = sc.spawn(0, state=IDLE)
    p.route(0, sc.request(0), fn)
    sc.start(a, 0)
    assert p.route(900, sc.request(900), fn) == SPAWN


def test_oracle_evicts_the_instance_needed_last():
    trace = pd.DataFrame({"app": "a", "function": ["soon", "late", "soon", "late"],
                          "arrival_ms": [0, 0, 1_000, 900_000], "duration_ms": 10.0, "memory_mb": 128.0})
    p = Oracle()
    p.prepare(trace)
    soon, late, never = make_fn("soon"), make_fn("late"), make_fn("never")
    i_soon = Scene(soon).spawn(0, state=IDLE)
    i_late = Scene(late).spawn(0, state=IDLE)
    i_never = Scene(never).spawn(0, state=IDLE)
    assert p.evict(500, 300, [i_soon, i_late, i_never]) == [i_never, i_late]   # 256 MB each


def test_oracle_needs_the_trace():
    fn = make_fn()
    with pytest.raises(RuntimeError, match="prepare"):
        Oracle().route(0, Scene(fn).request(0), fn)
    assert Oracle.needs_future is True


def test_function_future_first_exceeding_matches_a_scan():
    import numpy as np

    rng = np.random.default_rng(3)
    arrivals = np.sort(rng.uniform(0, 10_000, 300))
    durations = rng.exponential(200, 300)
    fut = FunctionFuture(arrivals, durations)
    ends = np.sort(arrivals + durations)
    assert fut.demand == [int(j + 1 - np.searchsorted(ends, arrivals[j], side="right")) for j in range(300)]
    for _ in range(500):
        lo, hi = sorted(rng.integers(0, 301, 2))
        level = int(rng.integers(0, max(fut.demand) + 1))
        expected = next((j for j in range(lo, hi) if fut.demand[j] > level), -1)
        assert fut.first_exceeding(int(lo), int(hi), level) == expected


def test_every_builtin_describes_its_parameters():
    for cls in (FixedTTL, HybridHistogram, FaasCache, KPA, ExpectedWait, Oracle):
        d = cls().describe()
        assert d["name"] == cls.name and len(d) > 1
        assert all(isinstance(v, (int, float, bool, str, type(None))) for v in d.values())
    assert math.isclose(FixedTTL(ttl_ms=5).describe()["ttl_ms"], 5)


def test_policies_survive_a_hot_swap_of_per_function_state():
    # the live router may swap policies: each must ignore another's fn.policy_state
    fn = make_fn()
    sc = Scene(fn)
    a = sc.spawn(0, state=IDLE)
    t = 0.0
    for p in (ExpectedWait(), HybridHistogram(), FaasCache(), KPA(), FixedTTL(), ExpectedWait()):
        t += 1_000
        assert isinstance(run_request(p, sc, a, t, 10), KeepAlive)


def test_deferred_sorted_window_matches_the_eager_one():
    """Read at random moments (after 0, a few, or many additions), the deferred window holds
    the same sorted values as the SortedWindow it stands in for, at every window size."""
    import random

    from policies.builtin.default import DeferredSortedWindow, SortedWindow

    rng = random.Random(7)
    for maxlen in (1, 3, 8, 128, 512):
        eager, deferred = SortedWindow(maxlen), DeferredSortedWindow(maxlen)
        for _ in range(3000):
            v = float(rng.choice([0.0, 1.0, 2.5, rng.expovariate(1e-3)]))   # ties included
            eager.add(v)
            deferred.add(v)
            if rng.random() < rng.choice([0.01, 0.2, 1.0]):
                assert deferred.sorted == eager.sorted
                assert len(deferred) == len(eager)
        assert deferred.sorted == eager.sorted


def test_arrivals_in_last_cursor_matches_a_search():
    """The per-window cursor gives the count a binary search of the recent arrivals gives,
    also for a query earlier than the previous one and past the deque's capacity."""
    import random
    from bisect import bisect_right

    rng = random.Random(3)
    stats = FunctionStats(recent_maxlen=64)
    t = 0.0
    for _ in range(2000):
        t += rng.expovariate(1 / 500.0)
        if rng.random() < 0.7:
            stats.record_arrival(t)
        now = t - rng.choice([0.0, 0.0, 0.0, 5_000.0])       # now and then an earlier query
        for window in (1_000.0, 60_000.0, 3_600_000.0):
            r = stats.recent
            expected = len(r) - bisect_right(r, now - window) if r else 0
            if r and r[0] > now - window:
                expected = len(r)
            assert stats.arrivals_in_last(now, window) == expected
