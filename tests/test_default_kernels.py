"""The default policy's compiled searches compute what their Python source computes, bit for
bit (numba must neither reorder nor fuse the floating-point operations), and the cheaper
on_idle path answers as the full one."""

from __future__ import annotations

import random

import numpy as np
import pytest

import policies.builtin.default as default_module
from policies.builtin.default import ExpectedWait, _grid_array, _kernels
from policies.interface import KeepAlive

pytestmark = pytest.mark.unit


def random_gaps(rng: random.Random) -> list[float]:
    """Sorted idle periods: periodic (near-equal, many ties in cost), exponential, or a mixture
    with repeated values."""
    n = rng.choice([3, 5, 16, 17, 40, 128, 512])
    kind = rng.random()
    if kind < 0.35:
        period = rng.choice([5_000.0, 60_000.0, 300_000.0])
        gaps = [period + rng.gauss(0, period * 0.01) for _ in range(n)]
    elif kind < 0.7:
        mean = rng.choice([1_000.0, 60_000.0, 600_000.0])
        gaps = [rng.expovariate(1 / mean) for _ in range(n)]
    else:
        gaps = [rng.choice([rng.uniform(0, 2_000), 60_000.0, 120_000.0]) for _ in range(n)]
    return sorted(max(0.0, g) for g in gaps)


def test_compiled_searches_are_their_python_source():
    _, cheapest_gap, prewarm_search = _kernels()
    rng = random.Random(5)
    outcomes = set()
    for _ in range(400):
        g = np.array(random_gaps(rng))
        mem_per_ms = rng.choice([0.125, 0.25, 2.0]) * 1.66667e-5 / 1000.0
        cold_ms = rng.choice([0.0, 0.5, 3.7, 300.0, 5_000.0])
        cold = (rng.choice([0.0, 1e-5, 1e-4]) / 1000.0 + mem_per_ms) * cold_ms
        assert cheapest_gap(g, mem_per_ms, cold) == default_module._cheapest_gap(g, mem_per_ms, cold)
        keep_ms = rng.choice([0.0, 1_000.0, float(g[len(g) // 2]), float(g[-1]) * 1.05])
        args = (g, _grid_array(len(g)), mem_per_ms, cold, cold_ms, keep_ms, 0.02)
        compiled = prewarm_search(*args)
        assert compiled == default_module._prewarm_search(*args)
        outcomes.add(compiled[0])
    assert outcomes == {0, 1, 2}          # no plan, a plan, and "rounding decides" were all met


class _Fn:
    """Just enough of a FunctionView for on_idle's cached-window path."""

    def __init__(self) -> None:
        self.policy_state = None
        self.instances = {1: None, 2: None}
        self.memory_mb = 128.0
        self.stats = type("S", (), {"cold_start_ms": 250.0})()


class _Inst:
    def __init__(self) -> None:
        self.id, self.state, self.idle_since_ms, self.queue, self.invocations = 1, "idle", 5_000.0, (), 3


def test_on_idle_with_a_cached_window_answers_as_keepalive_ms_does():
    policy = ExpectedWait(prewarming=False)
    fn = _Fn()
    st = policy.state(fn)
    for k in range(policy.window):                # a full window: the cached path applies
        policy.sample(st, 1_000.0 + 10.0 * k)
    inst = _Inst()
    first = policy.on_idle(5_000.0, inst, fn)     # refreshes (new samples)
    assert first == KeepAlive(policy.keepalive_ms(fn))
    again = policy.on_idle(5_000.0, inst, fn)     # nothing changed: the same (reused) answer
    assert again is first
    later = policy.on_idle(5_400.0, inst, fn)     # idle 400 ms: the rest of the window
    assert later == KeepAlive(policy.keepalive_ms(fn) - 400.0)


def test_a_free_cold_start_skips_both_searches_with_their_answers():
    """With a cold start of 0 ms the refresh answers T = 0 (clamped) and no pre-warm plan
    without running the searches: what they answer for those samples."""
    policy = ExpectedWait()
    fn = _Fn()
    fn.stats.cold_start_ms = 0.0
    st = policy.state(fn)
    rng = random.Random(2)
    for _ in range(policy.window):
        policy.sample(st, rng.choice([0.0, rng.expovariate(1 / 5_000.0)]))
    window = policy.keepalive_ms(fn)
    gaps = st.idle_periods.sorted
    searched = policy.cheapest_window(gaps, fn.memory_mb / 1024.0, 0.0)
    assert window == min(policy.max_keepalive_ms, max(policy.min_keepalive_ms, searched))
    planned = type(st)(policy.window)
    policy.plan_prewarm(planned, gaps, fn.memory_mb / 1024.0, 0.0, searched)
    assert st.prewarm_at_ms is None and planned.prewarm_at_ms is None
