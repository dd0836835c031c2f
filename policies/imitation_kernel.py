"""The imitation policy's whole decision in one compiled call: the feature vector, the forward
pass, the expected cost of every action and its argmin (``policies.imitation``; numba).

Why. The per-function statistics the features read change at nearly every decision (the
request that just finished added an idle period and an arrival, and moved the duration
estimate), so caching features does not help; computing them in Python costs more than the
network itself (18 features: ~4.5 µs against ~1 µs), and each compiled call costs ~0.1 µs per
argument to enter. So the kernel reads its inputs where they already are, in few arguments:

- ``net``: the policy's one array: a header (hidden width, whether exp needs no max shift),
  the feature buffer (with the bias input 1 at its end), the first layer's matrix (bias
  folded in as its last row), the hidden buffer (bias 1 at its end), the output layer's
  matrix, and the probabilities and expected-cost buffers (``net_views`` reads them out);
- ``fs``: one function's array: how many idle periods have been merged into its sorted copy,
  the static features (break-even time and the memory / cold-start / break-even features, set
  when the memory or the cold-start estimate changes), the last ``2 x window`` idle periods in
  a ring (written from Python by ``IdleWindow.add``, a float store), the sorted copy of the
  last ``window`` of them (kept by the kernel: the periods added since the last decision are
  merged in at the next one), and the function's cost matrix;
- the arrival ring of ``FunctionStats.recent`` as it is (an ``array.array``, read in place);
  the arrival counts per window are binary searches of it (the same counts as
  ``FunctionStats.arrivals_in_windows``, which walks cursors instead);
- scalars computed in Python from Python objects: the idle and live instance counts, the
  predicted duration, this minute of day's arrival count and the first arrival (the learned
  rate at this time of day, ``FunctionStats.rate_for_time_of_day``'s arithmetic), the share
  of used pre-warms.

Every feature is the Python encoder's (``ImitationPolicy.features``, the reference) to the
bit: the same libm ``log1p``, the same divisions in the same order, the same indices into the
same sorted values; the decision itself is ``policies.imitation._decide``, called from here.
The kernel has one explicit signature, compiled (or loaded from numba's cache next to this
module) when this module is imported, i.e. when a policy loads, never at a decision.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, types

from policies.features import MS_PER_DAY
from policies.imitation import (
    ACTIONS,
    ARRIVAL_WINDOWS_MS,
    COUNT_SCALE,
    EDGES_MS,
    MS_SCALE,
    N_ACTIONS,
    N_BINS,
    N_FEATURES,
    N_KEEP,
    REPRESENTATIVE_MS,
    decision_kernel,
)

# fs: per-function array layout (float64)
SYNCED = 0            # idle periods merged into the sorted copy (counted over all additions)
BREAK_EVEN = 1        # break-even ms, then its feature, the memory feature, the cold-start feature
HEADER = 8
N_COSTS = N_BINS * N_ACTIONS
WINDOW_60S, WINDOW_600S, WINDOW_3600S = ARRIVAL_WINDOWS_MS
# net: the policy's array layout: [hidden width, safe_exp], then the buffers (net_views)
NET_HEADER = 2


def function_array_size(window: int) -> int:
    return HEADER + 3 * window + N_COSTS


class IdleWindow:
    """The last ``maxlen`` idle periods of one function, kept in the kernel's per-function
    array ``fs`` (a ring of the last ``2 x maxlen``: ``add`` is one float store); read like
    ``policies.builtin.default.SortedWindow`` (``order``, ``sorted``, ``array``, ``len``) by
    the Python encoder and the default's keep-alive rule. The sorted copy inside ``fs`` is the
    kernel's (merged at its next call); ``sorted`` here sorts the last ``maxlen`` values (the
    same values)."""

    __slots__ = ("fs", "ring", "size", "maxlen", "appended")

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self.size = 2 * maxlen
        self.fs = np.zeros(function_array_size(maxlen))
        self.ring = memoryview(self.fs)[HEADER:HEADER + self.size]     # float stores from Python
        self.appended = 0

    def add(self, value: float) -> None:
        j = self.appended
        self.ring[j % self.size] = value
        self.appended = j + 1

    @property
    def order(self) -> list[float]:
        """The last ``maxlen`` values, oldest first."""
        j, size = self.appended, self.size
        return [self.ring[k % size] for k in range(max(0, j - self.maxlen), j)]

    @property
    def sorted(self) -> list[float]:
        return sorted(self.order)

    @property
    def array(self) -> np.ndarray:
        return np.array(self.sorted)

    def __len__(self) -> int:
        return min(self.appended, self.maxlen)

    def __getstate__(self) -> dict[str, Any]:
        return {"fs": self.fs, "maxlen": self.maxlen, "appended": self.appended}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.maxlen, self.size, self.fs = state["maxlen"], 2 * state["maxlen"], state["fs"]
        self.ring = memoryview(self.fs)[HEADER:HEADER + self.size]
        self.appended = state["appended"]


def set_static(fs: np.ndarray, break_even_ms: float, static_features: tuple[float, float, float],
               mem_usd_per_ms: float, cold_usd: float, cold_ms: float, bins: np.ndarray) -> None:
    """A function's memory or cold-start estimate changed (at every cold start): its break-even
    time, the features that depend only on those (break-even, memory, cold start) and its cost
    matrix (``fill_costs``; ``bins``: the policy's ``cost_inputs``)."""
    fs[BREAK_EVEN] = break_even_ms
    fs[BREAK_EVEN + 1:BREAK_EVEN + 4] = static_features
    fill_costs(fs, mem_usd_per_ms, cold_usd, cold_ms, bins)


# Per action (ACTIONS' order): 0 keep / 1 kill / 2 pre-warm
ACTION_KIND = np.array([{"keep": 0, "kill": 1, "prewarm": 2}[kind] for kind, _, _ in ACTIONS], dtype=np.int64)


def cost_inputs(edges_ms: np.ndarray, representative_ms: np.ndarray) -> np.ndarray:
    """What ``fill_costs`` reads of a policy's bins, in one array: each bin's representative gap,
    then each action's window start and end (ms). An argument, not module constants: numba
    freezes globals into the compiled (and cached) code, and an artifact has its own bins."""
    return np.concatenate([representative_ms, [edges_ms[i] for _, i, _ in ACTIONS],
                           [edges_ms[j + 1] for _, _, j in ACTIONS]]).astype(np.float64)


DEFAULT_COST_INPUTS = cost_inputs(EDGES_MS, REPRESENTATIVE_MS)    # the default bins'


def _fill_costs(fs: Any, mem: float, cold: float, cold_ms: float, bins: Any) -> None:
    """``policies.imitation.cost_matrix`` (the reference, numpy) into the function's array, the
    same operations on the same values element by element (``mem``: USD per ms of memory,
    ``cold``: one cold start's USD, as cost_matrix computes them; ``bins``: ``cost_inputs``):
    the same matrix, in ~1 µs instead of numpy's ~40 (it runs at every cold start, when the
    estimate moves)."""
    costs = fs[fs.size - N_COSTS:].reshape((N_BINS, N_ACTIONS))
    representative = bins[:N_BINS]
    action_start = bins[N_BINS:N_BINS + N_ACTIONS]
    action_end = bins[N_BINS + N_ACTIONS:]
    for a in range(N_ACTIONS):
        kind = ACTION_KIND[a]
        if kind == 1:                                   # kill: a cold start whatever the gap
            for b in range(N_BINS):
                costs[b, a] = cold
        elif kind == 0:                                 # keep until t
            t = action_end[a]
            for b in range(N_BINS):
                g = representative[b]
                costs[b, a] = mem * g if g <= t else mem * t + cold
        else:                                           # pre-warm: ready at s, kept until e
            s_ms, e_ms = action_start[a], action_end[a]
            for b in range(N_BINS):
                g = representative[b]
                if s_ms <= cold_ms:                     # cannot be ready in time: useless
                    costs[b, a] = np.inf
                elif g < s_ms:
                    costs[b, a] = cold
                else:
                    v = mem * cold_ms + mem * ((g if g <= e_ms else e_ms) - s_ms)
                    costs[b, a] = v + (cold if g > e_ms else 0.0)


def pack_network(wb0: np.ndarray, wb1: np.ndarray, safe_exp: bool) -> np.ndarray:
    """The policy's ``net`` array from its two bias-folded matrices (inputs + 1, hidden) and
    (hidden + 1, bins)."""
    hidden = wb0.shape[1]
    assert wb0.shape == (N_FEATURES + 1, hidden) and wb1.shape == (hidden + 1, N_BINS)
    net = np.zeros(NET_HEADER + (N_FEATURES + 1) + wb0.size + (hidden + 1) + wb1.size + N_BINS + N_ACTIONS)
    net[0], net[1] = hidden, float(safe_exp)
    x1, w0, h1, w1, _, _ = net_views(net)
    x1[:] = 1.0
    h1[:] = 1.0
    w0[:] = wb0
    w1[:] = wb1
    return net


def net_views(net: np.ndarray) -> tuple[np.ndarray, ...]:
    """Views into ``net``: features (+ bias 1), first matrix, hidden (+ bias 1), output matrix,
    probabilities, expected costs (the buffers ``_decide`` takes)."""
    hidden = int(net[0])
    k = NET_HEADER
    out = []
    for shape in ((N_FEATURES + 1,), (N_FEATURES + 1, hidden), (hidden + 1,), (hidden + 1, N_BINS), (N_BINS,),
                  (N_ACTIONS,)):
        size = int(np.prod(shape))
        out.append(net[k:k + size].reshape(shape))
        k += size
    return tuple(out)


def _arrivals_after(buf: Any, appended: int, maxlen: int, lo: float) -> int:
    """Kept arrivals later than ``lo`` (``FunctionStats.recent``'s ring: arrival j at
    ``buf[j % maxlen]``, ascending over j): a binary search over the ring's logical order."""
    if appended <= maxlen:
        n, start = appended, 0
    else:
        n, start = maxlen, appended % maxlen
    a, b = 0, n
    while a < b:
        mid = (a + b) >> 1
        j = start + mid                         # (start + mid) % maxlen without a division:
        if j >= maxlen:                         # start < maxlen and mid < maxlen
            j -= maxlen
        if buf[j] <= lo:
            a = mid + 1
        else:
            b = mid
    return n - a


def _merge_idle_periods(fs: Any, n_samples: int, window: int) -> None:
    """Bring the sorted copy of the last ``window`` idle periods up to date with the ring
    (``n_samples`` added in all): remove each evicted value, insert each new one (the same
    values as ``SortedWindow``); after more than ``window`` additions, sort the last ``window``."""
    size = 2 * window
    ring = fs[HEADER:HEADER + size]
    srt = fs[HEADER + size:HEADER + size + window]
    synced = int(fs[SYNCED])
    if n_samples - synced > window:
        first = n_samples - window
        for k in range(window):
            srt[k] = ring[(first + k) % size]
        srt.sort()
        fs[SYNCED] = n_samples
        return
    for j in range(synced, n_samples):
        n = j if j < window else window         # values in the sorted copy before this addition
        if j >= window:                         # evict the value added window additions ago
            old = ring[(j - window) % size]
            a, b = 0, n
            while a < b:                        # its first position (equal values are one value)
                mid = (a + b) >> 1
                if srt[mid] < old:
                    a = mid + 1
                else:
                    b = mid
            for k in range(a, n - 1):
                srt[k] = srt[k + 1]
            n -= 1
        v = ring[j % size]
        k = n
        while k > 0 and srt[k - 1] > v:        # insert after equal values (insort)
            srt[k] = srt[k - 1]
            k -= 1
        srt[k] = v
    fs[SYNCED] = n_samples


def _features_and_decide(net: Any, fs: Any, arrivals: Any, appended: int, maxlen: int, n_samples: int,
                         now_ms: float, n_idle: int, n_instances: int, predicted_ms: float, minute_count: int,
                         first_arrival_ms: float,
                         prewarm_share: float) -> int:
    """Fill the feature vector (``ImitationPolicy.features``' values) into ``net`` and return
    the index of the action with the lowest expected cost (``_decide``)."""
    hidden = int(net[0])
    k = NET_HEADER
    x1 = net[k:k + N_FEATURES + 1]
    k += N_FEATURES + 1
    wb0 = net[k:k + (N_FEATURES + 1) * hidden].reshape((N_FEATURES + 1, hidden))
    k += (N_FEATURES + 1) * hidden
    h1 = net[k:k + hidden + 1]
    k += hidden + 1
    wb1 = net[k:k + (hidden + 1) * N_BINS].reshape((hidden + 1, N_BINS))
    k += (hidden + 1) * N_BINS
    probs = net[k:k + N_BINS]
    expected = net[k + N_BINS:k + N_BINS + N_ACTIONS]

    window = (fs.size - HEADER - N_COSTS) // 3
    size = 2 * window
    _merge_idle_periods(fs, n_samples, window)
    n = n_samples if n_samples < window else window
    be = fs[BREAK_EVEN]
    be_feature = fs[BREAK_EVEN + 1]
    if n:
        ring = fs[HEADER:HEADER + size]
        srt = fs[HEADER + size:HEADER + size + n]
        last = math.log1p(ring[(n_samples - 1) % size]) / MS_SCALE
        x1[0] = last
        x1[1] = math.log1p(ring[(n_samples - 2) % size]) / MS_SCALE if n > 1 else last
        x1[2] = math.log1p(srt[n // 10]) / MS_SCALE
        x1[3] = math.log1p(srt[n // 2]) / MS_SCALE
        x1[4] = math.log1p(srt[(9 * n) // 10]) / MS_SCALE
        a, b = 0, n
        while a < b:                            # bisect_left(sorted, break-even)
            mid = (a + b) >> 1
            if srt[mid] < be:
                a = mid + 1
            else:
                b = mid
        x1[6] = a / n
    else:
        x1[0] = 0.0
        x1[1] = 0.0
        x1[2] = be_feature
        x1[3] = be_feature
        x1[4] = be_feature
        x1[6] = 0.5
    x1[5] = math.log1p(n) / COUNT_SCALE
    if appended:
        x1[7] = math.log1p(_arrivals_after(arrivals, appended, maxlen, now_ms - WINDOW_60S)) / COUNT_SCALE
        x1[8] = math.log1p(_arrivals_after(arrivals, appended, maxlen, now_ms - WINDOW_600S)) / COUNT_SCALE
        x1[9] = math.log1p(_arrivals_after(arrivals, appended, maxlen, now_ms - WINDOW_3600S)) / COUNT_SCALE
    else:
        x1[7] = 0.0
        x1[8] = 0.0
        x1[9] = 0.0
    if first_arrival_ms != first_arrival_ms:       # NaN: no arrival yet
        rate = 0.0
    else:                                           # FunctionStats.rate_for_time_of_day
        days = math.ceil((now_ms - first_arrival_ms + 1) / MS_PER_DAY)
        rate = minute_count / (days if days > 1 else 1) / 60.0
    x1[10] = math.log1p(60.0 * rate) / COUNT_SCALE
    x1[11] = math.log1p(n_idle) / COUNT_SCALE
    x1[12] = math.log1p(n_instances) / COUNT_SCALE
    x1[13] = math.log1p(predicted_ms) / MS_SCALE
    x1[14] = fs[BREAK_EVEN + 2]
    x1[15] = fs[BREAK_EVEN + 3]
    x1[16] = be_feature
    x1[17] = prewarm_share
    costs = fs[fs.size - N_COSTS:].reshape((N_BINS, N_ACTIONS))
    return _decide_jit(x1, wb0, h1, wb1, probs, costs, expected, N_KEEP if n_instances > 1 else N_ACTIONS,
                       net[1] != 0.0)


def _jit(f: Any, signature: Any = None) -> Any:
    """Compiled, keeping the GIL (no ``nogil``): the call holds a buffer export of
    ``FunctionStats.recent``'s ``array.array``, and an arrival appended from another thread
    meanwhile would fail with BufferError (the live router's deadline thread)."""
    args = () if signature is None else (signature,)
    try:
        return njit(*args, cache=True)(f)
    except RuntimeError:       # numba finds no writable cache folder: compile in memory
        return njit(*args)(f)


_decide_jit = decision_kernel()
_arrivals_after = _jit(_arrivals_after)
fill_costs = _jit(_fill_costs, types.void(types.float64[::1], types.float64, types.float64, types.float64,
                                          types.float64[::1]))
_merge_idle_periods = _jit(_merge_idle_periods)
_f64 = types.float64
_i64 = types.int64
# One signature: a live decision never compiles (an int where a float is expected is converted).
SIGNATURE = types.int64(_f64[::1], _f64[::1], types.PyArray(_f64, 1, "C"), _i64, _i64, _i64, _f64, _i64, _i64,
                        _f64, _i64, _f64, _f64)
features_and_decide = _jit(_features_and_decide, SIGNATURE)
# The same compiled code without numba's dispatch, which types every one of the 13 arguments
# to pick an overload (~1 µs of a ~3 µs decision). Its arrays' dtypes are NOT checked (an int64
# array would be read as float64): only for the arrays the policy makes itself (``net``, an
# ``IdleWindow.fs``, ``FunctionStats.recent.buf``: an array('d')). Scalars are converted as the
# dispatcher converts them (an int where a float is expected).
features_and_decide_unchecked = features_and_decide.get_overload(SIGNATURE)
