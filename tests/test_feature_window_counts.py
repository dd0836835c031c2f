"""The per-window arrival counts that FunctionStats keeps by walking a cursor per window
(policies.features.arrivals_in_windows) equal a direct search of the arrivals it keeps, on
random sequences: before the ring is full, exactly full, and long after it wrapped; with
queries that go back in time and windows first asked late."""

from __future__ import annotations

import random
from bisect import bisect_right

import pytest

from policies.features import FunctionStats

pytestmark = pytest.mark.unit

WINDOWS = (1_000.0, 10_000.0, 60_000.0)


def direct_counts(kept: list[float], now_ms: float, windows: tuple[float, ...]) -> list[int]:
    """Arrivals in (now - window, now] among the kept ones, by binary search."""
    return [len(kept) - bisect_right(kept, now_ms - w) for w in windows]


@pytest.mark.parametrize("maxlen, n_arrivals", [(4096, 600), (200, 200), (64, 2000), (1, 50)])
@pytest.mark.parametrize("seed", [1, 2])
def test_cursor_counts_equal_a_direct_search(maxlen: int, n_arrivals: int, seed: int) -> None:
    rng = random.Random(seed)
    stats = FunctionStats(recent_maxlen=maxlen)
    arrivals: list[float] = []
    t = 0.0
    for i in range(n_arrivals):
        # whole milliseconds: ties, and arrivals exactly on a window's edge, happen often
        t += rng.choice([0.0, float(rng.randint(1, 100)), float(rng.randint(100, 4_000))])
        stats.record_arrival(t)
        arrivals.append(t)
        kept = arrivals[-maxlen:]
        # usually now (or a bit later: a decision after an execution), now and then earlier
        now = t + rng.choice([0.0, 0.0, float(rng.randint(0, 5_000)), -float(rng.randint(0, 3_000)),
                              rng.choice(kept) + rng.choice(WINDOWS) - t])   # an arrival on the edge
        windows = WINDOWS if i > n_arrivals // 3 else WINDOWS[:2]   # the last window asked late
        assert stats.arrivals_in_windows(now, windows) == direct_counts(kept, now, windows)
        assert stats.arrivals_in_last(now, 30_000.0) == direct_counts(kept, now, (30_000.0,))[0]


def test_no_arrivals_count_zero() -> None:
    assert FunctionStats().arrivals_in_windows(5.0, WINDOWS) == [0, 0, 0]
