"""The cheaper decision paths decide exactly as the code they replaced: the default's pre-warm
search from prefix sums (vs the gap-by-gap search it falls back to), the recent-arrivals ring
(vs the deque of floats it replaces)."""

from __future__ import annotations

import random
import sys
from bisect import bisect_left, bisect_right
from collections import deque
from itertools import islice

import pytest

from policies.builtin.default import ExpectedWait, ExpectedWaitState
from policies.features import FunctionStats, RecentArrivals

pytestmark = pytest.mark.unit


def random_gaps(rng: random.Random) -> list[float]:
    """Idle-period samples of the shapes the search meets: periodic (timers), exponential,
    and mixtures with repeated values (ties between grid pairs)."""
    n = rng.choice([3, 5, 16, 17, 40, 128, 512])
    kind = rng.random()
    if kind < 0.3:
        period = rng.choice([5_000.0, 60_000.0, 300_000.0])
        gaps = [period + rng.gauss(0, period * 0.01) for _ in range(n)]
    elif kind < 0.6:
        mean = rng.choice([1_000.0, 60_000.0, 600_000.0])
        gaps = [rng.expovariate(1 / mean) for _ in range(n)]
    else:
        gaps = [rng.choice([rng.uniform(0, 2_000), 60_000.0, 120_000.0, 60_000.0 * rng.randint(1, 5)])
                for _ in range(n)]
    return sorted(max(0.0, g) for g in gaps)


def test_prewarm_plan_from_prefix_sums_is_the_gap_by_gap_plan():
    rng = random.Random(7)
    policy = ExpectedWait()
    planned = 0
    for _ in range(600):
        gaps = random_gaps(rng)
        mem_gb = rng.choice([0.125, 0.25, 1.0, 2.0])
        cold_ms = rng.choice([0.0, 0.5, 3.7, 50.0, 300.0, 1_500.0, 5_000.0])
        keep_ms = rng.choice([0.0, 1_000.0, gaps[len(gaps) // 2], gaps[-1] * 1.05])
        fast, exact = ExpectedWaitState(128), ExpectedWaitState(128)
        policy.plan_prewarm(fast, gaps, mem_gb, cold_ms, keep_ms)
        policy.plan_prewarm_exact(exact, gaps, mem_gb, cold_ms, keep_ms)
        assert (fast.prewarm_at_ms, fast.prewarm_window_ms) == (exact.prewarm_at_ms, exact.prewarm_window_ms)
        planned += fast.prewarm_at_ms is not None
    assert 100 < planned < 500          # both outcomes were exercised


def test_prewarm_plan_ties_go_to_the_first_pair():
    """All gaps equal: many (start, end) pairs cost exactly the same; the first one wins, as
    in the gap-by-gap search's argmin."""
    policy = ExpectedWait()
    for gaps in ([60_000.0] * 20, [60_000.0] * 10 + [120_000.0] * 10):
        fast, exact = ExpectedWaitState(128), ExpectedWaitState(128)
        policy.plan_prewarm(fast, gaps, 0.25, 300.0, 1_000.0)
        policy.plan_prewarm_exact(exact, gaps, 0.25, 300.0, 1_000.0)
        assert fast.prewarm_at_ms is not None
        assert (fast.prewarm_at_ms, fast.prewarm_window_ms) == (exact.prewarm_at_ms, exact.prewarm_window_ms)


def test_recent_arrivals_reads_like_the_deque_it_replaces():
    rng = random.Random(11)
    for maxlen in (1, 2, 7, 64):
        ring, ref = RecentArrivals(maxlen), deque(maxlen=maxlen)
        t = 0.0
        for _ in range(5 * maxlen + 3):
            t += rng.choice([0.0, rng.expovariate(1 / 100.0)])     # repeated times too
            ring.append(t)
            ref.append(t)
            assert len(ring) == len(ref)
            assert list(ring) == list(ref)
            assert list(islice(reversed(ring), 5)) == list(islice(reversed(ref), 5))
            assert ring[0] == ref[0] and ring[-1] == ref[-1] and ring[len(ref) // 2] == ref[len(ref) // 2]
            for x in (ref[0] - 1.0, ref[0], ref[len(ref) // 2], ref[-1], ref[-1] + 1.0, rng.uniform(ref[0], t)):
                assert ring.bisect_right(x) == bisect_right(ref, x)
                assert ring.bisect_left(x) == bisect_left(ref, x)
                assert bisect_right(ring, x) == bisect_right(ref, x)      # works as a sequence too
        with pytest.raises(IndexError):
            ring[len(ref)]


def test_arrival_counts_from_the_ring_match_a_search_of_all_arrivals():
    rng = random.Random(5)
    stats = FunctionStats(recent_maxlen=50)
    arrivals: list[float] = []
    t = 0.0
    for _ in range(3000):
        t += rng.expovariate(1 / 400.0)
        stats.record_arrival(t)
        arrivals.append(t)
        now = t - rng.choice([0.0, 0.0, 3_000.0])                 # now and then an earlier query
        kept = arrivals[-50:]
        for window, count in zip((1_000.0, 10_000.0, 60_000.0),
                                 stats.arrivals_in_windows(now, (1_000.0, 10_000.0, 60_000.0))):
            assert count == len(kept) - bisect_right(kept, now - window)


def test_recent_arrivals_take_8_bytes_each():
    ring = RecentArrivals(4096)
    for k in range(10_000):
        ring.append(float(k))
    assert len(ring) == 4096
    assert sys.getsizeof(ring.buf) < 4096 * 8 * 1.1 + 200


def one_hidden_layer(seed: int, hidden: int = 32, scale: float = 0.5) -> list:
    import numpy as np

    from policies.imitation import N_BINS, N_FEATURES

    rng = np.random.default_rng(seed)
    return [(rng.normal(0, scale, (hidden, N_FEATURES)), rng.normal(0, 0.1, hidden)),
            (rng.normal(0, scale, (N_BINS, hidden)), rng.normal(0, 0.1, N_BINS))]


@pytest.mark.parametrize("scale", [0.5, 40.0])       # 40: logits too large for exp without the max shift
def test_compiled_decision_picks_the_numpy_paths_action(scale):
    """The compiled kernel (one call) against the numpy forward pass and expected cost it
    replaces, on random feature vectors, cost matrices and instance counts: the same action,
    expected costs equal to rounding."""
    import numpy as np

    from policies.imitation import N_FEATURES, N_KEEP, ImitationPolicy, cost_matrix, decision_kernel

    policy = ImitationPolicy(one_hidden_layer(3, scale=scale))
    assert policy._compiled and policy._safe_exp == (scale < 1)
    kernel = decision_kernel()
    rng = np.random.default_rng(4)
    for _ in range(2000):
        costs = cost_matrix(rng.choice([0.125, 0.5, 2.0]), rng.choice([3.7, 250.0, 2_000.0]),
                            policy.weights.gb_s_usd, policy.weights.latency_usd_per_s * rng.choice([1.0, 8.0]))
        policy._x[:] = rng.uniform(-0.2, 1.2, N_FEATURES)
        with np.errstate(invalid="ignore"):       # an underflowed probability times an infinite cost
            reference = np.dot(policy.unnormalised(policy._x), costs)
        keep_only = bool(rng.random() < 0.5)
        n = N_KEEP if keep_only else len(reference)
        a = kernel(policy._x1, policy._wb[0], policy._h1[0], policy._wb_last, policy._probs, costs,
                   policy._expected, n, policy._safe_exp)
        assert a == int(np.argmin(reference[:n]))
        np.testing.assert_allclose(policy._expected[:n], reference[:n], rtol=1e-12)   # only the actions it may choose


def test_the_kernel_is_compiled_at_load_not_at_a_decision():
    """Loading a one-hidden-layer policy compiles the kernel for the buffers' types; the
    decisions of a replay then add no compilation (the live router has a decision deadline)."""
    import pandas as pd

    from policies.imitation import ImitationPolicy, decision_kernel
    from wlsim.engine import simulate

    policy = ImitationPolicy(one_hidden_layer(5))
    signatures = list(decision_kernel().signatures)
    assert len(signatures) == 1
    arrivals = [k * 40_000.0 + (k % 3) * 700.0 for k in range(40)]
    trace = pd.DataFrame({"app": "a", "function": "f", "arrival_ms": arrivals, "duration_ms": 50.0, "memory_mb": 256.0})
    result = simulate(trace, policy)
    assert len(result.requests) == 40
    assert list(decision_kernel().signatures) == signatures


def _cheapest_window_loop(policy: ExpectedWait, sorted_gaps: list[float], mem_gb: float, cold_ms: float) -> float:
    """cheapest_window as it was before it was compiled: the loop over the sorted gaps."""
    w = policy.weights
    mem_per_ms = mem_gb * w.gb_s_usd / 1000.0
    cold = (w.latency_usd_per_s / 1000.0 + mem_per_ms) * cold_ms
    n = len(sorted_gaps)
    if cold <= 0.0:
        return 0.0
    best_cost, best_window, covered, later = cold, 0.0, 0.0, n
    for gap in sorted_gaps:
        later -= 1
        covered += gap
        cost = (mem_per_ms * (covered + later * gap) + later * cold) / n
        if cost < best_cost:
            best_cost, best_window = cost, gap
    return best_window * (1.0 + policy.keepalive_margin) if best_window > 0 else 0.0


def _cheapest_window_numpy(policy: ExpectedWait, sorted_gaps: list[float], mem_gb: float, cold_ms: float) -> float:
    """cheapest_window as it was before it was compiled, from 48 gaps on: numpy's cumsum and argmin."""
    import numpy as np

    w = policy.weights
    mem_per_ms = mem_gb * w.gb_s_usd / 1000.0
    cold = (w.latency_usd_per_s / 1000.0 + mem_per_ms) * cold_ms
    n = len(sorted_gaps)
    if cold <= 0.0:
        return 0.0
    g = np.array(sorted_gaps)
    later = np.arange(n - 1, -1, -1, dtype=np.float64)
    costs = (mem_per_ms * (np.cumsum(g) + later * g) + later * cold) / n
    k = int(costs.argmin())
    best = sorted_gaps[k] if costs[k] < cold else 0.0
    return best * (1.0 + policy.keepalive_margin) if best > 0 else 0.0


def test_compiled_cheapest_window_is_the_loop_and_the_numpy_sums():
    """The compiled keep-alive search (given a list or the window's numpy array) returns, bit
    for bit, the window of the loop and of the numpy cumsum it replaced (ties included)."""
    import numpy as np

    rng = random.Random(9)
    policy = ExpectedWait()
    cases = []
    for _ in range(400):
        gaps = random_gaps(rng)
        cases.append((gaps, rng.choice([0.125, 1.0]), rng.choice([0.0, 3.7, 300.0, 5_000.0])))
    cases.append(([60_000.0] * 40, 0.25, 300.0))              # every candidate ties
    compiled = [policy.cheapest_window(g, m, c) for g, m, c in cases]
    from_array = [policy.cheapest_window(np.array(g), m, c) for g, m, c in cases]
    looped = [_cheapest_window_loop(policy, g, m, c) for g, m, c in cases]
    summed = [_cheapest_window_numpy(policy, g, m, c) for g, m, c in cases]
    assert compiled == from_array == looped == summed
    assert sum(len(g) >= 48 for g, _, _ in cases) > 50
    assert any(w > 0 for w in looped) and any(w == 0 for w in looped)
