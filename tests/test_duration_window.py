"""The default policy's execution-time window (``policies.builtin.default.DurationWindow``):
its compiled quantile of the times longer than an elapsed time is the one ``wait_bound``
took from a sorted window (``upper_quantile`` after ``bisect_right``) to the bit, on random
windows with ties, thresholds equal to values, before and after the ring wraps; and it
survives pickling."""

from __future__ import annotations

import math
import pickle
from bisect import bisect_right

import numpy as np
import pytest

from policies.builtin.default import DurationWindow, SortedWindow, upper_quantile

pytestmark = pytest.mark.unit


def reference(window: SortedWindow, threshold: float, q: float, min_tail: int) -> float:
    s = window.sorted
    lo = bisect_right(s, threshold)
    if len(s) - lo < min_tail:
        return math.inf
    return upper_quantile(s, lo, q)


@pytest.mark.parametrize("maxlen", [1, 8, 128])
def test_quantile_above_is_the_sorted_windows(maxlen):
    rng = np.random.default_rng(maxlen)
    fast, slow = DurationWindow(maxlen), SortedWindow(maxlen)
    checked = finite = 0
    for k in range(3 * maxlen + 200):
        v = float(rng.choice([rng.lognormal(4.0, 2.0), float(rng.integers(0, 20)) * 50.0, 0.0]))
        fast.add(v)
        slow.add(v)
        assert len(fast) == len(slow) and fast.sorted == slow.sorted
        values = slow.sorted
        for threshold in (-math.inf, 0.0, float(rng.uniform(0, 500)), values[len(values) // 2], values[-1]):
            for q, min_tail in ((0.95, 3), (0.5, 1), (1.0, 1), (0.0, 2)):
                got = fast.quantile_above(threshold, q, min_tail)
                assert got == reference(slow, threshold, q, min_tail), (k, threshold, q, min_tail)
                checked += 1
                finite += got != math.inf
    assert finite > checked // 8      # both answers exercised


def test_a_pickled_window_keeps_its_values():
    w = DurationWindow(16)
    for k in range(40):
        w.add(float(k % 7) * 3.5)
    copy = pickle.loads(pickle.dumps(w))
    assert copy.sorted == w.sorted and len(copy) == len(w)
    copy.add(100.0)
    w.add(100.0)
    assert copy.quantile_above(1.0, 0.95, 3) == w.quantile_above(1.0, 0.95, 3)
