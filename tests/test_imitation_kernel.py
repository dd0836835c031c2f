"""The fused decision (policies.imitation_kernel: features, forward pass, expected cost and
argmin in one compiled call) decides exactly as the Python feature encoder and the per-call
kernel it replaces: the same feature vector to the bit at every decision, the same replays,
with every decision parameter; its idle-period window and arrival counts are the reference
structures' (SortedWindow, FunctionStats.arrivals_in_windows)."""

from __future__ import annotations

import pickle
import random
from bisect import bisect_right

import numpy as np
import pandas as pd
import pytest

from policies.builtin.default import SortedWindow
from policies.features import FunctionStats
from policies.imitation import N_BINS, N_FEATURES, ImitationPolicy
from policies.imitation_kernel import (
    HEADER,
    IdleWindow,
    _arrivals_after,
    _merge_idle_periods,
    features_and_decide,
)
from policies.registry import load_policy
from wlsim.engine import simulate
from wlsim.traces import read_trace

pytestmark = pytest.mark.unit

AZURE40 = "examples/learned/azure40"


def network(seed: int, hidden: int = 16, scale: float = 0.8) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, scale, (hidden, N_FEATURES)), rng.normal(0, 0.2, hidden)),
            (rng.normal(0, scale, (N_BINS, hidden)), rng.normal(0, 0.2, N_BINS))]


def python_path(policy: ImitationPolicy) -> ImitationPolicy:
    """The same policy deciding through the Python encoder (``features``) and the per-call
    kernel (``_decide``), the code the fused call replaced (set before any function state)."""
    policy._fused = False
    return policy


def mixed_trace(seed: int = 1) -> pd.DataFrame:
    """Functions whose idle periods and arrival counts cover the encoder's cases: a hot one
    (more arrivals than the 4096-long ring, bursts with equal arrival times), a periodic timer,
    heavy-tailed gaps (a few samples, then more than two idle windows' worth), payload-dependent
    durations, and one seen once."""
    rng = np.random.default_rng(seed)
    rows = []
    t = np.cumsum(rng.exponential(150.0, 5200))
    t[100:140] = t[100]                                      # a burst at one instant
    rows.append(pd.DataFrame({"function": "hot", "arrival_ms": t, "duration_ms": rng.uniform(5, 80, t.size),
                              "memory_mb": 256.0, "payload_bytes": rng.integers(0, 4000, t.size)}))
    t = 30_000.0 + 60_000.0 * np.arange(13) + rng.normal(0, 30.0, 13)
    rows.append(pd.DataFrame({"function": "timer", "arrival_ms": t, "duration_ms": 400.0, "memory_mb": 1024.0}))
    t = np.cumsum(rng.lognormal(np.log(4_000.0), 1.6, 420))
    rows.append(pd.DataFrame({"function": "tail", "arrival_ms": t, "duration_ms": rng.lognormal(5, 1.2, t.size),
                              "memory_mb": 512.0}))
    rows.append(pd.DataFrame({"function": "once", "arrival_ms": [12_345.0], "duration_ms": 50.0, "memory_mb": 128.0}))
    trace = pd.concat(rows, ignore_index=True)
    trace["app"] = "a"
    trace["payload_bytes"] = trace["payload_bytes"].fillna(0).astype(int)
    limit = trace.loc[trace.function == "hot", "arrival_ms"].max()
    return trace[trace.arrival_ms <= limit].sort_values("arrival_ms", kind="stable").reset_index(drop=True)


def assert_same_replay(trace: pd.DataFrame, make) -> None:
    fused, reference = make(), python_path(make())
    assert fused._fused
    a, b = simulate(trace, fused), simulate(trace, reference)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.instances, b.instances)


@pytest.mark.parametrize("decision", [{}, {"own_prewarm": True}, {"own_prewarm": "long"},
                                      {"cold_start_weight": 5.0}, {"timers": True}])
def test_fused_decisions_replay_as_the_python_encoders(decision):
    assert_same_replay(mixed_trace(), lambda: ImitationPolicy(network(4), **decision))


def test_the_bundled_policy_replays_azure_days_as_before():
    """A slice of the bundled 2019 day (its busiest functions wrap the arrival ring) and the
    Azure 2021 sample; the whole-day hashes are in bench/README.md."""
    for trace in (read_trace("traces/azure2019/40", start_minute=600, end_minute=640),
                  read_trace("traces/azure2021/Azure2021_200.csv")):
        assert_same_replay(trace, lambda: load_policy(f"learned:{AZURE40}"))


class Compared(ImitationPolicy):
    """Decides fused, then computes the Python encoder's features and the per-call kernel's
    action on the same state and records whether they agree."""

    def __init__(self, layers) -> None:
        super().__init__(layers)
        self.decisions = 0
        self.ring_wrapped = self.window_wrapped = False

    def choose(self, now_ms, inst, fn, st):  # type: ignore[no-untyped-def]
        a = super().choose(now_ms, inst, fn, st)
        fused_x = self._x.copy()
        self._fused = False
        try:
            b = super().choose(now_ms, inst, fn, st)
        finally:
            self._fused = True
        assert fused_x.view(np.int64).tolist() == self._x.view(np.int64).tolist(), (fused_x, self._x)
        assert a == b
        self.decisions += 1
        self.ring_wrapped |= fn.stats.recent.appended > fn.stats.recent.maxlen
        self.window_wrapped |= st.idle_periods.appended > 2 * self.window
        return a


def test_every_fused_feature_vector_is_the_python_encoders_to_the_bit():
    policy = Compared(network(7))
    simulate(mixed_trace(2), policy)
    assert policy.decisions > 3000 and policy.ring_wrapped and policy.window_wrapped


def test_the_idle_window_keeps_the_sorted_window_values():
    """Additions in random batches between merges (the kernel merges at each decision; more
    than a window's worth between two merges re-sorts), repeated values included."""
    rng = random.Random(3)
    for maxlen in (1, 2, 5, 128):
        window, reference = IdleWindow(maxlen), SortedWindow(maxlen)
        for _ in range(60):
            for _ in range(rng.choice([0, 1, 1, 2, maxlen, maxlen + 1, 3 * maxlen])):
                v = rng.choice([0.0, 500.0, rng.uniform(0, 1e4), rng.expovariate(1e-5)])
                window.add(v)
                reference.add(v)
            _merge_idle_periods(window.fs, window.appended, maxlen)
            n = len(reference)
            start = HEADER + 2 * maxlen
            assert window.fs[start:start + n].tolist() == reference.sorted
            assert window.order == list(reference.order) and window.sorted == reference.sorted
            assert len(window) == n


def test_arrival_counts_are_the_function_stats_counts():
    rng = random.Random(5)
    for maxlen in (1, 7, 50):
        stats = FunctionStats(recent_maxlen=maxlen)
        t = 0.0
        for _ in range(400):
            t += rng.choice([0.0, 1_000.0, rng.expovariate(1 / 700.0)])
            stats.record_arrival(t)
            r = stats.recent
            for now in (t, t + 0.5, t + 1_000.0):
                windows = (1_000.0, 3_000.0, 60_000.0)
                expected = stats.arrivals_in_windows(now, windows)
                assert [_arrivals_after(r.buf, r.appended, r.maxlen, now - w) for w in windows] == expected
                kept = list(r)
                assert expected == [len(kept) - bisect_right(kept, now - w) for w in windows]


def test_a_pickled_fused_policy_decides_the_same():
    """Pickling copies the buffers the fused kernel shares: they are views into one array again."""
    trace = mixed_trace(3).head(3000)
    policy = ImitationPolicy(network(9))
    copy = pickle.loads(pickle.dumps(policy))
    assert copy._x1.base is copy._net or np.shares_memory(copy._x1, copy._net)
    a, b = simulate(trace, policy), simulate(trace, copy)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.instances, b.instances)


def test_the_fused_kernel_never_compiles_at_a_decision():
    """One explicit signature, compiled (or loaded from the cache) at import: a replay, also
    one whose clock is in whole milliseconds (ints where floats are expected), adds none."""
    signatures = list(features_and_decide.signatures)
    assert len(signatures) == 1
    trace = pd.DataFrame({"app": "a", "function": "f", "arrival_ms": [k * 40_000 + (k % 3) * 700 for k in range(40)],
                          "duration_ms": 50, "memory_mb": 256})
    assert len(simulate(trace, ImitationPolicy(network(5))).requests) == 40
    policy = ImitationPolicy(network(5))
    window = IdleWindow(policy.window)
    stats = FunctionStats()
    stats.record_arrival(1000)
    a = features_and_decide(policy._net, window.fs, stats.recent.buf, 1, 4096, 0, 1000, 0, 1, 100, 1, 1000, 0)
    assert a >= 0 and list(features_and_decide.signatures) == signatures


def test_the_compiled_cost_matrix_is_cost_matrix_to_the_bit():
    """fill_costs (at every cold start of the fused policy) against the numpy reference, over
    memory sizes, cold starts (also 0 and longer than the first bins: useless pre-warms) and
    prices (a cold-start weight, free memory)."""
    from policies.imitation import cost_matrix
    from policies.imitation_kernel import DEFAULT_COST_INPUTS, N_COSTS, fill_costs

    rng = np.random.default_rng(11)
    fs = IdleWindow(128).fs
    for _ in range(500):
        mem_mb = float(rng.choice([128.0, 256.0, 1536.0, rng.uniform(1, 4096)]))
        cold_ms = float(rng.choice([0.0, 3.7, 499.9, 500.0, 827.0, rng.uniform(0, 20_000)]))
        gb_s_usd = float(rng.choice([0.0, 1.66667e-5, rng.uniform(1e-6, 1e-4)]))
        latency = float(rng.choice([0.0, 1e-4, rng.uniform(0, 1e-2)])) * float(rng.choice([1.0, 5.0]))
        reference = cost_matrix(mem_mb / 1024.0, cold_ms, gb_s_usd, latency)
        mem = mem_mb / 1024.0 * gb_s_usd / 1000.0
        fill_costs(fs, mem, (latency / 1000.0 + mem) * cold_ms, cold_ms, DEFAULT_COST_INPUTS)
        compiled = fs[fs.size - N_COSTS:].reshape(reference.shape)
        assert compiled.view(np.int64).tolist() == reference.view(np.int64).tolist()
