"""The imitation-learned keep-alive policy: a small network, trained to predict the idle
period the offline oracle acts on, picks per function and per idle period how long to keep an
instance alive, or to kill it and pre-warm a successor. numpy and numba only (the live router
runs it).

Why this shape. The oracle's choice after an execution depends on one number it knows and an
online policy does not: how long the instance would stay idle (the gap until the request it
would serve next). Keep alive exactly that long when it costs less than a cold start, else
kill and pre-warm a successor just in time. The network predicts that gap as a distribution
over ``N_BINS`` bins (the artifact's edges: by default 0, then log-spaced 500 ms .. 2 h; a
platform with millisecond cold starts needs shorter ones) from per-function features (recent
idle periods and their quantiles, arrivals in the last minute / 10 minutes / hour, the learned
traffic at this time of day, predicted duration from the payload, memory, cold start, how many
instances are idle), and the policy takes the action with the lowest expected cost under that distribution
(keep for the upper edge of a bin; or kill, then have an instance ready at the lower edge of
a bin and keep it until the upper edge of the same or a later bin). Trained by
``wlsim.rl.imitate`` with cross-entropy on the hindsight gaps (the oracle's labels), from
rollouts of the default policy and then of the learned policy itself (DAgger).

Decision parameters (an artifact's spec.json "decision" field): ``own_prewarm`` (True: for
the last live instance, when the default's pre-warm search over the function's own idle
periods finds a pre-warm cheaper than keeping alive, follow it instead of the network, exact
timing for periodic functions, which the bins only approximate; "long": only when the network
chose to kill or pre-warm), ``cold_start_weight`` (the cold start's latency price in the
expected cost, relative to the cost weights: > 1 trades idle memory for fewer cold starts) and
``timers`` (``policies.timers``, off by default: for the last live instance, a period detected
in the function's arrivals replaces the network's choice by a pre-warm just before the next
call; a new function gets a chain of short pre-warms at common cron periods).

Routing is the default's (``policies.builtin.default.ExpectedWait``): the warmest idle
instance, else queue only when a high quantile of the remaining execution beats a cold start.

Decision cost: for a network with one hidden layer (every bundled artifact) the whole decision
is one call of a numba-compiled kernel (``policies.imitation_kernel.features_and_decide``;
compiled, or loaded from numba's cache, when the policy loads): it fills the feature vector from
per-function arrays (the idle periods in a ring it merges into a sorted copy, the static
features and cost matrix; the arrival ring of ``FunctionStats`` read in place), to the bit the
values of the Python encoder ``features`` (the reference, used by deeper networks), then runs
``_decide``: the forward pass, the expected cost of every action and its argmin, whose sums run
in input order (its expected costs agree with numpy's to ~1e-14 relative and the replays of the
bundled traces are identical). Deeper networks take the numpy path: two np.dot calls into
preallocated buffers (biases folded into the matrices), a tanh and an exp in place, one more
np.dot with the cost matrix. Neither needs the softmax's normalisation (a positive factor does
not move the argmin).
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Sequence
from pathlib import Path
from types import MethodType
from typing import Any, ClassVar

import numpy as np

from policies.builtin._common import EPS_MS, keep_until, number
from policies.builtin.default import ExpectedWait, ExpectedWaitState
from policies.features import MINUTES_PER_DAY, MS_PER_MINUTE
from policies.interface import (
    IDLE,
    INVOKE,
    KILL,
    FunctionView,
    IdleDecision,
    InstanceView,
    PolicySpecError,
    RequestView,
    RouteDecision,
)
from policies.timers import TimerConfig, ring_detector

KIND = "keepalive-imitation"
N_BINS = 21                # bins of the predicted idle-period distribution (the network's outputs)
DEFAULT_BINS_MS = (500.0, 7_200_000.0)   # the default edges' log-spaced range: 500 ms .. 2 h


def bin_edges(low_ms: float = DEFAULT_BINS_MS[0], high_ms: float = DEFAULT_BINS_MS[1]) -> np.ndarray:
    """The idle-period bins' edges (ms): 0, then ``N_BINS - 1`` edges log-spaced from ``low_ms``
    to ``high_ms``, then inf. An artifact carries its own (spec.json "bin_edges_ms"): the cost-
    optimal keep-alive may be far below 500 ms (a platform whose cold start takes 1.5 ms)."""
    if not (math.isfinite(low_ms) and math.isfinite(high_ms) and 0.0 < low_ms < high_ms):
        raise ValueError(f"bin edges: the log-spaced range must be finite with 0 < low < high, "
                         f"got low {low_ms!r} ms, high {high_ms!r} ms")
    # checked: a range too narrow for float64 would give equal edges
    return check_edges(np.concatenate([[0.0], np.geomspace(low_ms, high_ms, N_BINS - 1)]))


def check_edges(edges_ms: Any) -> np.ndarray:
    """An artifact's "bin_edges_ms" (the ``N_BINS`` finite edges, 0 first, strictly increasing)
    as the ``N_BINS + 1`` edges a policy uses (inf appended); ValueError naming what is wrong."""
    if not isinstance(edges_ms, (list, tuple, np.ndarray)):
        raise ValueError(f"bin_edges_ms must be a list of {N_BINS} numbers, got {type(edges_ms).__name__}")
    if len(edges_ms) != N_BINS:
        raise ValueError(f"bin_edges_ms must hold {N_BINS} edges (the network has {N_BINS} bins; inf, the "
                         f"last bin's upper edge, is implied), got {len(edges_ms)}")
    for k, e in enumerate(edges_ms):
        if isinstance(e, bool) or not isinstance(e, (int, float, np.integer, np.floating)):
            raise ValueError(f"bin_edges_ms[{k}] must be a number, got {e!r}")
        if not math.isfinite(e):
            raise ValueError(f"bin_edges_ms[{k}] must be finite, got {e!r}")
    edges = [float(e) for e in edges_ms]
    if edges[0] != 0.0:
        raise ValueError(f"bin_edges_ms must start at 0 (the first bin holds the shortest idle periods), "
                         f"got {edges[0]!r}")
    for k in range(1, N_BINS):
        if edges[k] <= 0.0:
            raise ValueError(f"bin_edges_ms[{k}] must be positive, got {edges[k]!r}")
        if edges[k] <= edges[k - 1]:
            raise ValueError(f"bin_edges_ms must be strictly increasing: edge {k} ({edges[k]!r}) is not above "
                             f"edge {k - 1} ({edges[k - 1]!r})")
    return np.array(edges + [math.inf])


def representative_ms(edges_ms: np.ndarray) -> np.ndarray:
    """A representative gap per bin: the first, half its upper edge; the last, twice its lower
    edge; the others, their geometric middle."""
    n = len(edges_ms) - 1
    return np.array([edges_ms[1] / 2] + [math.sqrt(edges_ms[i] * edges_ms[i + 1]) for i in range(1, n - 1)]
                    + [2 * edges_ms[-2]])


# The default bins (artifacts without "bin_edges_ms"; every artifact of this version before it).
EDGES_MS = bin_edges()
REPRESENTATIVE_MS = representative_ms(EDGES_MS)
PREWARM_SPAN = 3           # a pre-warmed instance is kept through at most this many bins
MS_SCALE = 15.0            # log1p(ms) / 15 ~ [0, 1.1]
COUNT_SCALE = 8.0
ARRIVAL_WINDOWS_MS = (60_000.0, 600_000.0, 3_600_000.0)   # the arrivals_* features' windows
# log1p(k) / COUNT_SCALE for the counts a decision usually sees (arrivals in a window, samples,
# instances): a list index instead of a log1p and a division, the same float.
COUNT_FEATURE = [math.log1p(k) / COUNT_SCALE for k in range(4097)]
N_COUNT_FEATURE = len(COUNT_FEATURE)

FEATURES = (
    "last_idle", "prev_idle", "idle_p10", "idle_p50", "idle_p90", "idle_samples", "share_below_break_even",
    "arrivals_60s", "arrivals_600s", "arrivals_3600s", "rate_time_of_day", "idle_instances", "live_instances",
    "predicted_duration", "memory_mb", "cold_start", "break_even", "prewarmed_share",
)
N_FEATURES = len(FEATURES)


def actions() -> list[tuple[str, int, int]]:
    """The action list: ("keep", i, i) keeps alive until the upper edge of bin i (i = 0: kill
    now... bin 0's upper edge, 500 ms by default), then ("prewarm", i, j): kill, have an instance ready
    at the lower edge of bin i and keep it until the upper edge of bin j (i <= j < i + span)."""
    out = [("keep", i, i) for i in range(N_BINS - 1)]
    out.append(("kill", 0, 0))
    for i in range(1, N_BINS - 1):
        for j in range(i, min(N_BINS - 1, i + PREWARM_SPAN)):
            out.append(("prewarm", i, j))
    return out


ACTIONS = actions()
N_ACTIONS = len(ACTIONS)


def action_plans(edges_ms: np.ndarray = EDGES_MS) -> list[tuple[tuple[float, float] | None, float]]:
    """Per action: the pre-warm plan it sets (ready after ms, keep ms; None for none) and the
    keep-alive (ms) it gives the instance that just finished, for bins with these edges
    (precomputed: no per-decision float conversions)."""
    out: list[tuple[tuple[float, float] | None, float]] = []
    for kind, i, j in ACTIONS:
        if kind == "prewarm":
            out.append(((float(edges_ms[i]), float(edges_ms[j + 1] - edges_ms[i])), 0.0))
        else:
            out.append((None, 0.0 if kind == "kill" else float(edges_ms[i + 1])))
    return out


def keep_answers(plans: list[tuple[tuple[float, float] | None, float]]) -> dict[float, IdleDecision]:
    """keep_until(keep, 0.0) of every action's keep-alive, made once: the answer right after an
    execution (idle 0) without a new KeepAlive per decision (answers are immutable)."""
    return {keep: keep_until(keep, 0.0) for _, keep in plans}


ACTION_PLANS = action_plans()              # the default bins' (a policy makes its own from its edges)
KEEP_ANSWERS = keep_answers(ACTION_PLANS)
N_KEEP = N_BINS        # keep actions and kill come first: the only ones when other instances live
# own_prewarm: False (the network decides), True (the function's own pre-warm plan, when it has
# one, replaces the network's choice for the last instance), "long" (only when the network
# chose to kill or pre-warm, i.e. expects a gap longer than keeping alive is worth)
OWN_PREWARM_MODES = (False, True, "long")


def cost_matrix(mem_gb: float, cold_ms: float, gb_s_usd: float, latency_usd_per_s: float,
                edges_ms: np.ndarray = EDGES_MS) -> np.ndarray:
    """Cost (USD) of each action (rows) if the idle period falls in each bin (columns), for bins
    with these edges (each bin's gap: ``representative_ms``)."""
    mem = mem_gb * gb_s_usd / 1000.0                         # USD per ms of memory held
    cold = (latency_usd_per_s / 1000.0 + mem) * cold_ms     # one cold start
    g = representative_ms(edges_ms)
    rows = []
    for kind, i, j in ACTIONS:
        if kind == "kill":
            rows.append(np.full(N_BINS, cold))
        elif kind == "keep":
            t = edges_ms[i + 1]
            rows.append(np.where(g <= t, mem * g, mem * t + cold))
        else:
            s, e = edges_ms[i], edges_ms[j + 1]
            if s <= cold_ms:                                  # cannot be ready in time: useless
                rows.append(np.full(N_BINS, np.inf))
                continue
            rows.append(np.where(g < s, cold, mem * cold_ms + mem * (np.minimum(g, e) - s)
                                 + np.where(g > e, cold, 0.0)))
    return np.ascontiguousarray(np.array(rows).T)           # (bins, actions): probs @ C


def _decide(x1: np.ndarray, wb0: np.ndarray, h1: np.ndarray, wb1: np.ndarray, probs: np.ndarray,
            costs: np.ndarray, expected: np.ndarray, n_consider: int, safe_exp: bool) -> int:
    """One decision of a one-hidden-layer network, compiled by numba (``decision_kernel``) into
    one call in place of numpy's six (dot, tanh, dot, exp, dot, argmin: ~0.7 µs each, whatever
    their size): the hidden layer ``tanh(x1 @ wb0)`` into ``h1`` (its last entry stays 1, the
    bias input), ``exp`` of the logits ``h1 @ wb1`` into ``probs`` (less their maximum unless
    ``safe_exp``), their expected cost per action ``probs @ costs`` into ``expected`` (the first
    ``n_consider`` actions only: the others cannot be chosen), and the first cheapest of them
    (numpy's argmin: a NaN counts as the least). Products are summed in input order (BLAS may
    order and fuse them differently: the costs agree to ~1e-14 relative, checked to pick the
    same actions)."""
    n_in, n_hidden = wb0.shape
    for j in range(n_hidden):
        h1[j] = 0.0
    for k in range(n_in):                 # row by row: contiguous inner loops, each sum in k order
        xk = x1[k]
        for j in range(n_hidden):
            h1[j] += xk * wb0[k, j]
    for j in range(n_hidden):
        h1[j] = math.tanh(h1[j])
    n_h1, n_out = wb1.shape
    for j in range(n_out):
        probs[j] = 0.0
    for k in range(n_h1):
        hk = h1[k]
        for j in range(n_out):
            probs[j] += hk * wb1[k, j]
    if not safe_exp:
        top = probs[0]
        for j in range(1, n_out):
            if probs[j] > top:
                top = probs[j]
        for j in range(n_out):
            probs[j] -= top
    for j in range(n_out):
        probs[j] = math.exp(probs[j])
    for a in range(n_consider):           # only the actions that may be chosen (the keep and kill
        expected[a] = 0.0                 # actions when other instances live: ~90% of decisions)
    for b in range(n_out):
        pb = probs[b]
        for a in range(n_consider):
            expected[a] += pb * costs[b, a]
    best = 0
    for a in range(n_consider):
        e = expected[a]
        if e != e:
            return a
        if e < expected[best]:
            best = a
    return best


_KERNEL: Any = None
_FUSED: Any = None        # policies.imitation_kernel.features_and_decide_unchecked, imported by the first fused policy


def decision_kernel() -> Any:
    """``_decide`` compiled by numba (imported here only: the policy module stays light for
    those that never load a network). The machine code is cached next to this module
    (``cache=True``): the first load in a fresh tree compiles (~1 s), later ones load it
    (~0.2 s); ``ImitationPolicy`` calls it at load, never at a decision."""
    global _KERNEL
    if _KERNEL is None:
        from numba import njit

        try:
            _KERNEL = njit(cache=True, nogil=True)(_decide)
        except RuntimeError:       # numba finds no writable cache folder: compile in memory (at load)
            _KERNEL = njit(nogil=True)(_decide)
    return _KERNEL


class ImitationState(ExpectedWaitState):
    __slots__ = ("keep_ms", "costs", "costs_key", "prewarm_plan", "prewarms", "static", "timer_starts",
                 "timer_next")

    def __init__(self, window: int, fused: bool = False) -> None:
        super().__init__(window)
        if fused:          # the idle periods in the fused kernel's per-function array
            from policies.imitation_kernel import IdleWindow

            self.idle_periods = IdleWindow(window)  # type: ignore[assignment]
        self.keep_ms: dict[int, float] = {}          # instance id -> chosen keep-alive
        self.costs: np.ndarray | None = None
        self.costs_key = (math.nan, math.nan)
        self.prewarm_plan: tuple[float, float] | None = None   # (ready after ms, keep ms)
        self.prewarms = 0                            # pre-warms started (ExpectedWaitState counts the used ones)
        # (memory, cold start, break-even, and the features that depend only on them)
        self.static: tuple[float, float, float, float, float, float] | None = None
        # The timer layer's chain of pre-warm plans ((ready after ms, keep ms); None: no chain)
        # and the next one to try when the last pre-warm went unused.
        self.timer_starts: tuple[tuple[float, float], ...] | None = None
        self.timer_next = 0


class ImitationPolicy(ExpectedWait):
    """See the module docstring. ``layers``: [(W (out, in), b)], tanh between, logits last.
    Without layers it decides like ``default`` and only records (see ``recorder``)."""

    name: ClassVar[str] = "learned"
    state_class = ImitationState

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]] | None = None,
                 meta: dict[str, Any] | None = None, path: str | None = None,
                 own_prewarm: bool | str = False, cold_start_weight: float = 1.0,
                 timers: bool | dict[str, Any] | TimerConfig | None = None,
                 bin_edges_ms: Sequence[float] | None = None, **default_params: Any) -> None:
        super().__init__(**default_params)
        if own_prewarm not in OWN_PREWARM_MODES:
            raise PolicySpecError(f"{self.name}: own_prewarm must be one of {OWN_PREWARM_MODES}, got {own_prewarm!r}")
        self.own_prewarm = own_prewarm
        # The bins the network predicts over (an artifact's "bin_edges_ms": its N_BINS finite
        # edges; None: the default EDGES_MS) and what follows from them: each bin's gap in the
        # expected cost, each action's keep-alive and pre-warm window.
        try:
            self.edges_ms = EDGES_MS if bin_edges_ms is None else check_edges(bin_edges_ms)
        except ValueError as e:
            raise PolicySpecError(f"{self.name}: {e}") from None
        self.representative_ms = representative_ms(self.edges_ms)
        self._plans = action_plans(self.edges_ms)
        self._keep_answers = keep_answers(self._plans)
        # The price of a cold start's latency in the network's expected-cost choice, relative
        # to the cost weights (> 1: fewer cold starts for more idle memory; the features, and
        # so the network's prediction, do not change).
        self.cold_start_weight = number(self.name, "cold_start_weight", cold_start_weight)
        # The timer layer (policies.timers; None: off, the network alone decides).
        self.timers = TimerConfig.parse(timers, self.name)
        if self.timers is not None:
            ring_detector()            # its compiled period detector: now, not at a live decision
        self.meta = meta or {}
        self.path = path
        self.w = [np.ascontiguousarray(w.T, dtype=np.float64) for w, _ in (layers or [])]
        self.b = [np.asarray(b, dtype=np.float64) for _, b in (layers or [])]
        # Fused forward pass: each layer's bias folded into its matrix as a last input row, fed
        # by a constant 1 at the end of the input buffer, so a layer is one np.dot into a
        # preallocated buffer (plus tanh in place for hidden layers).
        self._wb = [np.ascontiguousarray(np.vstack([w, b[None, :]])) for w, b in zip(self.w, self.b)]
        self._x1 = np.ones(N_FEATURES + 1)
        self._h1 = [np.ones(w.shape[1] + 1) for w in self.w[:-1]]
        self._wb_last = self._wb[-1] if self._wb else None
        self._logits = np.zeros(N_BINS)
        self._probs = np.zeros(N_BINS)
        self._expected = np.zeros(len(ACTIONS))
        self._net: np.ndarray | None = None      # the buffers above in one array (fused decisions)
        self._views()
        # exp(logits) cannot overflow when |logit| is bounded this way (tanh outputs are in [-1, 1]):
        # then the softmax's max-subtraction can be skipped.
        last_w = self._wb[-1] if self._wb else None
        self._safe_exp = last_w is not None and len(self.w) > 1 and float(np.abs(last_w).sum(axis=0).max()) < 600.0
        # One hidden layer (every bundled artifact): the decision is one compiled call.
        self._compiled = len(self.w) == 2
        # ... and the feature vector too: the features, forward pass, expected cost and argmin
        # are one call of policies.imitation_kernel.features_and_decide.
        self._fused = self._compiled
        self._cost_inputs: np.ndarray | None = None   # the bins as the kernel's fill_costs reads them
        if self._compiled:
            from policies.imitation_kernel import cost_inputs, pack_network

            self._net = pack_network(self._wb[0], self._wb_last, self._safe_exp)
            self._cost_inputs = cost_inputs(self.edges_ms, self.representative_ms)
            self._views()
            self._compile()
        # The pooled idle periods are the default's keep-alive prior for a function with few
        # samples: read only when the default's rule decides (no network, or own_prewarm).
        self._pool_samples = not self.w or own_prewarm
        # Training: (features, pending label) rows, filled by ``record``.
        self.recording: list[np.ndarray] | None = None
        self.labels: list[float] = []
        self._pending: dict[int, int] = {}
        self._ghost_rows: dict[float, int] = {}
        self._sample_key: tuple[str, Any] | None = None
        self._bind_route()

    def _bind_route(self) -> None:
        """Not recording, ``route`` is the default's: bound on the instance, so an engine's
        route call (once per request) skips this class's wrapper. ``record`` unbinds it; a
        subclass that overrides ``route`` keeps its own."""
        if self.recording is None and type(self).route is ImitationPolicy.route:
            self.route = MethodType(ExpectedWait.route, self)  # type: ignore[method-assign]

    def _views(self) -> None:
        """Views into the preallocated buffers (rebuilt after unpickling: a pickled view comes
        back as a copy, and a memoryview cannot be pickled)."""
        if self._net is not None:        # the buffers are views into the one array the fused kernel takes
            from policies.imitation_kernel import net_views

            self._x1, self._wb[0], self._h1[0], self._wb_last, self._probs, self._expected = net_views(self._net)
            self._wb[-1] = self._wb_last
        self._x = self._x1[:N_FEATURES]                    # the features view the encoder fills
        self._xm = memoryview(self._x1)                    # the same memory, for fast scalar stores
        self._hidden = [(wb, out, out[:-1]) for wb, out in zip(self._wb[:-1], self._h1)]
        self._expected_keep = self._expected[:N_KEEP]      # the keep and kill actions' costs
        self._argmin_all, self._argmin_keep = self._expected.argmin, self._expected_keep.argmin

    def _compile(self) -> None:
        """Compile (or load the cached) decision kernel for these buffers' types now, at load:
        a live decision must never wait for a compilation. The fused kernel has one explicit
        signature: importing its module compiles it (or loads it from numba's cache)."""
        global _FUSED
        if self._fused and _FUSED is None:
            from policies.imitation_kernel import features_and_decide_unchecked

            _FUSED = features_and_decide_unchecked       # its arguments are this policy's own arrays
        costs = cost_matrix(0.125, 250.0, self.weights.gb_s_usd, self.weights.latency_usd_per_s, self.edges_ms)
        x1 = self._x1.copy()
        decision_kernel()(x1, self._wb[0], self._h1[0].copy(), self._wb_last, self._probs.copy(), costs,
                          self._expected.copy(), N_KEEP, self._safe_exp)

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for view in ("_x", "_xm", "_hidden", "_expected_keep", "_argmin_all", "_argmin_keep"):
            del d[view]
        d.pop("route", None)            # a bound method (_bind_route makes it again)
        del d["_keep_answers"]          # made again: on_idle tests its KILL by identity
        return d

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._keep_answers = keep_answers(self._plans)
        self._views()
        self._bind_route()
        if self.timers is not None:
            ring_detector()
        if self._compiled:
            self._compile()

    # ------------------------------------------------------------------ state
    def state(self, fn: FunctionView) -> ImitationState:
        st = fn.policy_state
        if type(st) is not ImitationState:
            st = fn.policy_state = ImitationState(self.window, self._fused)
        return st

    def record(self) -> None:
        """Start recording (features, hindsight idle period) pairs: ``dataset()``."""
        self.recording, self.labels = [], []
        self._pending, self._ghost_rows = {}, {}
        self.__dict__.pop("route", None)         # route attributes labels again (the wrapper below)

    def dataset(self) -> tuple[np.ndarray, np.ndarray]:
        """Features and idle-period labels (ms) of every decision whose idle period ended."""
        if not self.recording:
            return np.zeros((0, N_FEATURES)), np.zeros(0)
        y = np.asarray(self.labels)
        keep = ~np.isnan(y)
        return np.asarray(self.recording)[keep], y[keep]

    def sample(self, st: ExpectedWaitState, idle_period_ms: float) -> None:
        """An idle period ended (ExpectedWait.route calls this): also the label of the
        decision that started it, when recording."""
        if self._pool_samples:
            super().sample(st, idle_period_ms)
        elif self._fused:   # the same, into the kernel's ring (IdleWindow.add, inlined: once per request)
            w = st.idle_periods
            j = w.appended
            w.ring[j % w.size] = idle_period_ms
            w.appended = j + 1
            st.new_samples += 1
        else:           # ExpectedWait.sample without the pooled window, which only the default's rule reads
            st.idle_periods.add(idle_period_ms)
            st.new_samples += 1
        key = self._sample_key
        if key is not None and self.recording is not None:
            row = self._pending.pop(key[1], None) if key[0] == "inst" else self._ghost_rows.pop(key[1], None)
            if row is not None:
                self.labels[row] = idle_period_ms

    # ------------------------------------------------------------------ route
    def route(self, now_ms: float, request: RequestView, fn: FunctionView) -> RouteDecision:
        if self.recording is None:        # no labels to attribute (the default's route counts used pre-warms)
            return ExpectedWait.route(self, now_ms, request, fn)
        st = fn.policy_state
        if type(st) is not ImitationState:
            st = self.state(fn)
        idle = fn.idle
        key = None
        if idle:
            inst = idle[-1]
            if inst.invocations == 0 and st.ghosts:              # a pre-warmed successor is used
                key = ("ghost", st.ghosts[-1])
            else:
                key = ("inst", inst.id)
        elif st.ghosts:
            key = ("ghost", st.ghosts[-1])
        self._sample_key = key
        try:
            return super().route(now_ms, request, fn)
        finally:
            self._sample_key = None

    # --------------------------------------------------------------- features
    def features(self, now_ms: float, inst: InstanceView, fn: FunctionView, st: ImitationState) -> np.ndarray:
        """Fill and return the preallocated feature vector (written through a memoryview:
        a float store into it costs about half of an ndarray item assignment)."""
        x = self._xm
        s = st.idle_periods.sorted
        n = len(s)
        stats = fn.stats
        log1p = math.log1p
        static = st.static
        mem, cold = fn.memory_mb, stats.cold_start_ms
        if static is None or static[0] != mem or static[1] != cold:
            be = self.break_even_ms(fn)
            static = st.static = (mem, cold, be, log1p(be) / MS_SCALE, log1p(mem) / MS_SCALE, log1p(cold) / MS_SCALE)
        be, be_feature = static[2], static[3]
        if n:
            order = st.idle_periods.order
            x[0] = last = log1p(order[-1]) / MS_SCALE
            x[1] = log1p(order[-2]) / MS_SCALE if n > 1 else last
            x[2] = log1p(s[n // 10]) / MS_SCALE
            x[3] = log1p(s[n // 2]) / MS_SCALE
            x[4] = log1p(s[(9 * n) // 10]) / MS_SCALE
            x[6] = bisect_left(s, be) / n
        else:
            x[0] = x[1] = 0.0
            x[2] = x[3] = x[4] = be_feature
            x[6] = 0.5
        counts, nc = COUNT_FEATURE, N_COUNT_FEATURE
        x[5] = counts[n] if n < nc else log1p(n) / COUNT_SCALE
        a60, a600, a3600 = stats.arrivals_in_windows(now_ms, ARRIVAL_WINDOWS_MS)
        x[7] = counts[a60] if a60 < nc else log1p(a60) / COUNT_SCALE
        x[8] = counts[a600] if a600 < nc else log1p(a600) / COUNT_SCALE
        x[9] = counts[a3600] if a3600 < nc else log1p(a3600) / COUNT_SCALE
        x[10] = log1p(60.0 * stats.rate_for_time_of_day(now_ms)) / COUNT_SCALE
        k = len(fn.idle)
        x[11] = counts[k] if k < nc else log1p(k) / COUNT_SCALE
        k = len(fn.instances)
        x[12] = counts[k] if k < nc else log1p(k) / COUNT_SCALE
        x[13] = log1p(stats.duration.predict(0.0)) / MS_SCALE
        x[14] = static[4]
        x[15] = static[5]
        x[16] = be_feature
        x[17] = st.prewarm_used / st.prewarms if st.prewarms else 0.0
        return self._x

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """The predicted idle-period distribution over the bins."""
        e = self.unnormalised(x)
        return e / e.sum()

    def unnormalised(self, x: np.ndarray) -> np.ndarray:
        """exp(logits) up to a positive factor, into a preallocated buffer: the argmin of the
        expected cost does not depend on the softmax's normalisation. ``x`` must be the
        policy's feature buffer (``features`` fills it)."""
        h = self._x1 if x is self._x else np.append(x, 1.0)
        dot, tanh = np.dot, np.tanh
        for wb, out, z in self._hidden:            # preallocated (matrix, buffer, its first part)
            dot(h, wb, z)                          # out given positionally: no keyword parsing
            tanh(z, z)
            h = out
        z = self._logits
        dot(h, self._wb_last, z)
        p = self._probs
        if self._safe_exp:
            np.exp(z, p)
        else:
            np.subtract(z, z.max(), out=p)
            np.exp(p, out=p)
        return p

    def costs(self, fn: FunctionView, st: ImitationState) -> np.ndarray:
        mem, cold = fn.memory_mb, fn.stats.cold_start_ms
        key = st.costs_key
        if st.costs is None or key[0] != mem or key[1] != cold:
            w = self.weights
            st.costs = cost_matrix(mem / 1024.0, cold, w.gb_s_usd, w.latency_usd_per_s * self.cold_start_weight,
                                   self.edges_ms)
            st.costs_key = (mem, cold)
        return st.costs

    def refresh_static(self, fn: FunctionView, st: ImitationState) -> None:
        """The fused kernel's per-function inputs that depend only on the function's memory and
        cold-start estimate (set again when either changes): break-even time, its feature, the
        memory and cold-start features (``features``' formulas) and the cost matrix."""
        from policies.imitation_kernel import set_static

        log1p = math.log1p
        mem_mb, cold_ms = fn.memory_mb, fn.stats.cold_start_ms
        be = self.break_even_ms(fn)
        w = self.weights                # cost_matrix's prices, as ``costs`` passes them
        mem = mem_mb / 1024.0 * w.gb_s_usd / 1000.0
        cold = (w.latency_usd_per_s * self.cold_start_weight / 1000.0 + mem) * cold_ms
        set_static(st.idle_periods.fs, be, (log1p(be) / MS_SCALE, log1p(mem_mb) / MS_SCALE, log1p(cold_ms) / MS_SCALE),
                   mem, cold, cold_ms, self._cost_inputs)
        st.costs_key = (mem_mb, cold_ms)

    def choose(self, now_ms: float, inst: InstanceView, fn: FunctionView, st: ImitationState) -> int:
        """The index (into ACTIONS) with the lowest expected cost."""
        if self._fused:          # features and decision in one compiled call (policies.imitation_kernel)
            stats = fn.stats
            key = st.costs_key
            if key[0] != fn.memory_mb or key[1] != stats.cold_start_ms:
                self.refresh_static(fn, st)
            window, r = st.idle_periods, stats.recent
            a = _FUSED(self._net, window.fs, r.buf, r.appended, r.maxlen, window.appended, now_ms, len(fn.idle),
                       len(fn.instances), stats.duration.predict(0.0),
                       stats.minute_counts[int(now_ms // MS_PER_MINUTE) % MINUTES_PER_DAY],
                       math.nan if stats.first_arrival_ms is None else stats.first_arrival_ms,
                       st.prewarm_used / st.prewarms if st.prewarms else 0.0)
            if self.recording is not None:
                self.recording.append(self._x.copy())
                self.labels.append(math.nan)
                self._pending[inst.id] = len(self.labels) - 1
            return a
        x = self.features(now_ms, inst, fn, st)
        if self.recording is not None:
            self.recording.append(x.copy())
            self.labels.append(math.nan)
            self._pending[inst.id] = len(self.labels) - 1
        if not self.w:
            return -1
        if self._compiled:            # a pre-warm only replaces the last instance
            return _KERNEL(self._x1, self._wb[0], self._h1[0], self._wb_last, self._probs, self.costs(fn, st),
                           self._expected, N_KEEP if len(fn.instances) > 1 else N_ACTIONS, self._safe_exp)
        np.dot(self.unnormalised(x), self.costs(fn, st), self._expected)
        if len(fn.instances) > 1:
            return int(self._argmin_keep())
        return int(self._argmin_all())

    # ------------------------------------------------------------ keep-alive
    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        st = fn.policy_state
        if type(st) is not ImitationState:
            st = self.state(fn)
        since = instance.idle_since_ms               # idle_for, inlined (once per execution and expiry)
        if instance.state != IDLE or since is None or now_ms <= since:
            idle = 0.0
        else:
            idle = now_ms - since
        keep_ms = st.keep_ms
        iid = instance.id
        if idle <= EPS_MS:
            # settle_execution, inlined (once per execution): the ledger closes the execution,
            # its duration joins the window
            ran = st.ledger.finished(instance, now_ms)
            if ran is not None:
                st.durations.add(ran if ran > 0.0 else 0.0)
        if instance.queue:
            return INVOKE
        if instance.invocations == 0 and st.prewarm_plan is not None and iid not in keep_ms:
            return keep_until(st.prewarm_plan[1], idle)          # pre-warmed: wait for its request
        if idle <= EPS_MS:                                       # after an execution: decide
            a = self.choose(now_ms, instance, fn, st)
            last = len(fn.instances) == 1
            if (a >= 0 and self.own_prewarm and last
                    and (self.own_prewarm is True or a >= N_KEEP - 1)):
                self.keepalive_ms(fn)      # refreshes the default's pre-warm plan from the samples
                if st.prewarm_at_ms is not None:
                    a = -1                 # the function's own idle periods time a pre-warm better
            if a < 0:                                            # no network: the default's rule
                window = self.keepalive_ms(fn)
                if st.prewarm_at_ms is not None and last:
                    st.prewarm_plan = (st.prewarm_at_ms, st.prewarm_window_ms)
                    keep = keep_ms[iid] = 0.0
                else:
                    st.prewarm_plan = None
                    keep = keep_ms[iid] = window
            else:
                st.prewarm_plan, keep = self._plans[a]
                keep_ms[iid] = keep
            st.timer_starts = None
            if last and self.timers is not None:
                self.plan_timer(now_ms, instance, fn, st)
                keep = keep_ms[iid]                              # a detected period may replace it
        else:
            keep = keep_ms.get(iid, 0.0)
        answer = self._keep_answers.get(keep) if idle == 0.0 else None
        if answer is None:
            answer = keep_until(keep, idle)
        if answer is KILL:
            keep_ms.pop(iid, None)
            if instance.idle_since_ms is not None and instance.invocations > 0:
                st.ghosts.append(instance.idle_since_ms)
                if self.recording is not None:
                    row = self._pending.pop(instance.id, None)
                    if row is not None:
                        self._ghost_rows[instance.idle_since_ms] = row
        return answer

    def plan_timer(self, now_ms: float, instance: InstanceView, fn: FunctionView, st: ImitationState) -> None:
        """The timer layer, for the last live instance after its execution: a detected period
        replaces the decision (kill, and have an instance ready just before the next call) when
        that call is far enough off for a pre-warm to cost less than keeping alive through it
        (else the network's choice stands); guesses (a new function) add a chain of pre-warms
        after the keep-alive or pre-warm chosen."""
        cold = fn.stats.cold_start_ms
        plan = self.timers.plan(now_ms, fn.stats.recent, cold)
        if plan is None or not plan.starts_ms:
            return
        if plan.periodic:
            if plan.starts_ms[0] <= cold + plan.window_ms:
                return
            st.keep_ms[instance.id] = 0.0
            st.prewarm_plan = None
        chain = [] if st.prewarm_plan is None else [st.prewarm_plan]     # the network's own pre-warm first
        after = st.keep_ms.get(instance.id, 0.0) if st.prewarm_plan is None else sum(st.prewarm_plan)
        chain += [(s, plan.window_ms) for s in plan.starts_ms if s - cold >= after]   # spawned after that ends
        if chain:
            st.prewarm_plan = chain[0]
            st.timer_starts, st.timer_next = tuple(chain), 0

    def prewarm(self, now_ms: float, fn: FunctionView) -> float | None:
        st = fn.policy_state
        if type(st) is not ImitationState or st.prewarm_plan is None or not st.ghosts:
            return None
        origin = st.ghosts[-1]
        cold = fn.stats.cold_start_ms
        if origin == st.prewarmed_for:
            starts = st.timer_starts            # the last pre-warm went unused: the timer layer's next guess
            if starts is None:
                return None
            for k in range(st.timer_next, len(starts)):
                if origin + starts[k][0] - cold >= now_ms:
                    st.timer_next = k + 1
                    st.prewarms += 1
                    st.prewarm_plan = starts[k]           # its keep window for the instance it starts
                    return origin + starts[k][0] - cold - now_ms
            st.timer_next = len(starts)
            return None
        st.prewarmed_for = origin
        st.prewarms += 1
        st.timer_next = 1
        return max(0.0, origin + st.prewarm_plan[0] - cold - now_ms)

    @property
    def n_weights(self) -> int:
        """The network's size (weights and biases): what its decision's cost grows with."""
        return sum(w.size + b.size for w, b in zip(self.w, self.b))

    def describe(self) -> dict[str, Any]:
        d = {"name": self.name, "kind": KIND, "path": self.path,
             "layers": [int(w.shape[1]) for w in self.w], **self.decision()}
        if not np.array_equal(self.edges_ms, EDGES_MS):     # only when its own: as before otherwise
            d["bin_edges_ms"] = [float(e) for e in self.edges_ms[:-1]]
        for key in ("seed", "trace", "iterations", "validation_cost_usd"):
            if key in self.meta:
                d[key] = self.meta[key]
        return d

    def decision(self) -> dict[str, Any]:
        """The decision parameters an artifact's spec.json carries (its "decision" field)."""
        d: dict[str, Any] = {"own_prewarm": self.own_prewarm, "cold_start_weight": self.cold_start_weight}
        if self.timers is not None:           # only when on: artifacts without it stay as they were
            d["timers"] = self.timers.as_dict()
        return d

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path, meta: dict[str, Any] | None = None) -> Path:
        """Write the artifact (spec.json + weights.npz; see policies.learned)."""
        from policies.learned import ARTIFACT_FORMAT, SPEC_FILE, WEIGHTS_FILE, file_sha256

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        layers = []
        for k, (w, b) in enumerate(zip(self.w, self.b)):
            arrays[f"W{k}"], arrays[f"b{k}"] = w.T, b
            layers.append({"in": int(w.shape[0]), "out": int(w.shape[1]),
                           "activation": "tanh" if k < len(self.w) - 1 else "linear"})
        np.savez(folder / WEIGHTS_FILE, **arrays)
        spec = {"format": ARTIFACT_FORMAT, "format_version": 2, "kind": KIND,
                "features": list(FEATURES), "bin_edges_ms": [float(e) for e in self.edges_ms[:-1]],
                "network": {"layers": layers, "output": "logits"}, "decision": self.decision(),
                "weights_sha256": file_sha256(folder / WEIGHTS_FILE), "training": meta or self.meta}
        (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        return folder

    @classmethod
    def from_spec(cls, spec: dict[str, Any], arrays: dict[str, np.ndarray], path: str) -> ImitationPolicy:
        from policies.learned import ArtifactError

        if list(spec.get("features", [])) != list(FEATURES):
            raise ArtifactError(f"{path}: features {spec.get('features')} differ from this version's {list(FEATURES)}")
        edges = spec.get("bin_edges_ms")          # missing: the default bins (EDGES_MS)
        if edges is not None:
            try:
                check_edges(edges)
            except ValueError as e:
                raise ArtifactError(f"{path}: spec.json {e}") from None
        layers = spec["network"].get("layers", []) if isinstance(spec.get("network"), dict) else []
        weights = []
        expect = N_FEATURES
        for k, layer in enumerate(layers):
            w, b = arrays.get(f"W{k}"), arrays.get(f"b{k}")
            if w is None or b is None or w.shape != (layer["out"], expect) or b.shape != (layer["out"],):
                raise ArtifactError(f"{path}: layer {k} does not match the spec ({expect} inputs)")
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise ArtifactError(f"{path}: layer {k} has non-finite weights")
            weights.append((w, b))
            expect = layer["out"]
        if not weights or expect != N_BINS:
            raise ArtifactError(f"{path}: the network must end with {N_BINS} outputs (one per bin)")
        decision = spec.get("decision", {})
        if not isinstance(decision, dict) or set(decision) - {"own_prewarm", "cold_start_weight", "timers"}:
            raise ArtifactError(f"{path}: decision must be an object with own_prewarm, cold_start_weight "
                                f"and/or timers, got {decision!r}")
        try:
            return cls(weights, meta=spec.get("training", {}), path=path, bin_edges_ms=edges, **decision)
        except PolicySpecError as e:
            raise ArtifactError(f"{path}: spec.json decision: {e}") from None
