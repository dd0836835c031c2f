"""The one feature encoder of the learned policy: turns a decision point into a fixed-size
observation vector, an action mask and (for routes) the candidate instances an action
refers to. The gym environment (wlsim.rl) trains with it and ``policies.learned`` runs the
exported network with it, in the simulator and in the live router alike, so a policy
sees exactly the same numbers in training and in deployment. numpy only.

Action space (one for both decision kinds, so one network serves both):

  0 .. K-1      assign the request to candidate k (route)
  K             spawn (cold start) (route)
  K+1           reject (route; masked unless ``allow_reject``)
  K+2           invoke the next queued request (idle; the only valid idle action when the
                instance has a queue, and masked otherwise)
  K+3           kill (idle)
  K+4 ..        keep alive for ladder[i] ms (idle)

Route points mask out the idle actions and vice versa; candidates that do not exist are
masked, and so are busy candidates whose expected wait exceeds ``max_wait_cold_starts``
expected cold starts. When a keep-alive runs out the instance is killed without asking
the network unless ``reconsider_on_expiry`` (see EncoderSpec). All ms values enter the
observation as ``log1p(ms) / ms_log_scale`` and counts as
``log1p(n) / count_log_scale``, so typical values lie in [0, ~1.5]; the vector is then
clipped to [-obs_clip, obs_clip].
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import asdict, dataclass, field
from itertools import islice, pairwise
from typing import Any

import numpy as np

from policies.interface import (
    BUSY,
    IDLE,
    INVOKE,
    KILL,
    REJECT,
    SPAWN,
    STARTING,
    Assign,
    FunctionView,
    IdleDecision,
    InstanceView,
    KeepAlive,
    RequestView,
    RouteDecision,
)

MS_PER_DAY = 86_400_000.0
# Windows (ms) of the arrival-count features: 1 s, 10 s, 60 s (issue 3) plus 10 min and 1 h,
# which the keep-alive decisions of sparse functions (a few calls an hour) need.
TRAFFIC_WINDOWS_MS = (1_000.0, 10_000.0, 60_000.0, 600_000.0, 3_600_000.0)
GAP_HISTORY = 32           # inter-arrival gaps summarised by their median and 90th percentile
NO_ARRIVAL_MS = 3_600_000.0  # "since last arrival" when there was none: one hour

# (name, kind): kind "flag" enters as is, "ms" as log1p(ms)/ms_log_scale, "count" as
# log1p(n)/count_log_scale.
FUNCTION_FEATURES: list[tuple[str, str]] = [
    ("kind_route", "flag"), ("kind_idle", "flag"), ("payload_bytes", "count"),
    ("predicted_duration", "ms"), ("typical_duration", "ms"), ("cold_start", "ms"), ("memory_mb", "ms"),
    *[(f"arrivals_last_{int(w // 1000)}s", "count") for w in TRAFFIC_WINDOWS_MS],
    ("rate_time_of_day_per_min", "count"), ("time_of_day_sin", "flag"), ("time_of_day_cos", "flag"),
    ("since_last_arrival", "ms"), ("last_gap", "ms"), ("gap_p50", "ms"), ("gap_p90", "ms"),
    ("arrivals_seen", "count"), ("live_instances", "count"), ("idle_instances", "count"),
    # the instance an idle decision is about (zeros at route points)
    ("self_idle", "ms"), ("self_age", "ms"), ("self_invocations", "count"), ("self_queue", "count"),
    ("self_memory_mb", "ms"),
]
CANDIDATE_FEATURES: list[tuple[str, str]] = [
    ("exists", "flag"), ("is_idle", "flag"), ("is_busy", "flag"), ("is_starting", "flag"),
    ("elapsed", "ms"), ("remaining", "ms"), ("expected_wait", "ms"), ("queue", "count"),
    ("idle", "ms"), ("free_slot", "flag"),
]
N_SUBJECT_FEATURES = 5


def remaining_ms(typical_ms: float, elapsed_ms: float) -> float:
    """Expected ms left of an execution that has run ``elapsed_ms``: the typical duration
    minus the elapsed time, but at least half the elapsed time. Serverless durations are
    heavy-tailed, so an execution already past its typical length is likely a long one
    (plain ``typical - elapsed`` would call it "about to finish" and invite a long wait)."""
    left = typical_ms - elapsed_ms
    half = 0.5 * elapsed_ms
    return max(half, left)


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile of a sorted non-empty list (numpy's default method)."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class EncoderSpec:
    """Everything that defines the encoder; stored in an exported artifact's spec.json."""
    k: int = 4                                   # candidate instances shown to the policy
    keepalive_ladder_ms: tuple[float, ...] = (2_000.0, 10_000.0, 30_000.0, 60_000.0, 120_000.0,
                                              300_000.0, 600_000.0, 1_200_000.0)
    allow_reject: bool = False                   # reject is an escape hatch a reward could abuse
    # Time-of-day features (sin/cos of the simulated clock). A trace window re-based to 0 ms
    # (e.g. minutes 721-1440 of a day) shifts the clock, so a policy meant for other windows
    # may be trained without them (they are then always 0).
    time_of_day: bool = True
    # When a keep-alive runs out: False = the instance is killed (one keep-alive decision
    # per idle period, like a TTL chosen per gap; without it a chain of short keep-alives
    # makes every idle gap dozens of steps and the agent myopic); True = ask the network
    # again (kill or another rung).
    reconsider_on_expiry: bool = False
    # Guard against piling requests onto a busy instance: assigning to an instance whose
    # expected wait exceeds this many expected cold starts is masked (None = no guard).
    # Idle instances and instances with a free slot are always allowed.
    max_wait_cold_starts: float | None = 1.0
    ms_log_scale: float = 15.0                   # log1p(1 h in ms) ~ 15.1
    count_log_scale: float = 8.0                 # log1p(3000) ~ 8
    obs_clip: float = 5.0
    version: int = 1

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"encoder k must be >= 1, got {self.k}")
        if self.max_wait_cold_starts is not None and not self.max_wait_cold_starts >= 0:
            raise ValueError(f"max_wait_cold_starts must be >= 0 or None, got {self.max_wait_cold_starts!r}")
        ladder = tuple(float(x) for x in self.keepalive_ladder_ms)
        if not ladder or any(not (x > 0 and math.isfinite(x)) for x in ladder):
            raise ValueError(f"keepalive_ladder_ms must be non-empty positive finite ms, got {ladder}")
        object.__setattr__(self, "keepalive_ladder_ms", ladder)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["keepalive_ladder_ms"] = list(self.keepalive_ladder_ms)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderSpec:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"encoder spec: unknown field(s) {sorted(unknown)}")
        d = dict(d)
        if "keepalive_ladder_ms" in d:
            d["keepalive_ladder_ms"] = tuple(d["keepalive_ladder_ms"])
        return cls(**d)


@dataclass
class _ActionIndex:
    spawn: int
    reject: int
    invoke: int
    kill: int
    keep0: int
    n: int
    names: list[str] = field(default_factory=list)


class FeatureEncoder:
    """Encodes route and idle decision points; see the module docstring for the action map."""

    def __init__(self, spec: EncoderSpec | None = None, **overrides: Any) -> None:
        if spec is None:
            spec = EncoderSpec(**overrides)
        elif overrides:
            spec = EncoderSpec.from_dict({**spec.to_dict(), **overrides})
        self.spec = spec
        k = spec.k
        nl = len(spec.keepalive_ladder_ms)
        names = [f"assign_{i}" for i in range(k)] + ["spawn", "reject", "invoke", "kill"]
        names += [f"keepalive_{int(ms)}ms" for ms in spec.keepalive_ladder_ms]
        self.actions = _ActionIndex(spawn=k, reject=k + 1, invoke=k + 2, kill=k + 3, keep0=k + 4,
                                    n=k + 4 + nl, names=names)
        features = FUNCTION_FEATURES + [(f"cand{i}_{f}", kind) for i in range(k)
                                         for f, kind in CANDIDATE_FEATURES]
        self.feature_names = [f for f, _ in features]
        self.n_features = len(features)
        self.n_actions = self.actions.n
        kinds = [kind for _, kind in features]
        self._is_raw = np.array([kd == "flag" for kd in kinds])
        self._log_scale = np.array([1.0 / spec.ms_log_scale if kd == "ms" else 1.0 / spec.count_log_scale
                                    for kd in kinds])
        self._n_cand = len(CANDIDATE_FEATURES)
        self._empty_candidates = [0.0] * (self._n_cand * k)
        self._no_subject = [0.0] * N_SUBJECT_FEATURES
        # Masks are the same at every idle point without a queue: precompute.
        self._idle_mask = np.zeros(self.n_actions, dtype=bool)
        self._idle_mask[self.actions.kill:] = True
        self._invoke_mask = np.zeros(self.n_actions, dtype=bool)
        self._invoke_mask[self.actions.invoke] = True

    # ------------------------------------------------------------------ (de)serialise
    def to_json(self) -> str:
        return json.dumps(self.spec.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureEncoder:
        return cls(EncoderSpec.from_dict(d))

    # ------------------------------------------------------------------- helpers
    # The blocks below collect raw values (ms, counts, flags); _finish log-scales the
    # ms and count entries in one vectorised step, which is much cheaper than per value.
    def _function_block(self, now_ms: float, fn: FunctionView, route: bool, payload: float) -> list[float]:
        st = fn.stats
        typical = st.duration.ewma
        predicted = st.predict_duration(payload) if route else typical
        if self.spec.time_of_day:
            tod = 2.0 * math.pi * ((now_ms % MS_PER_DAY) / MS_PER_DAY)
            tod_sin, tod_cos = math.sin(tod), math.cos(tod)
        else:
            tod_sin = tod_cos = 0.0
        since_last = now_ms - st.last_arrival_ms if st.last_arrival_ms is not None else NO_ARRIVAL_MS
        recent = st.recent
        if len(recent) >= 2:
            # Pure Python: for 32 values it is several times faster than numpy.
            times = list(islice(reversed(recent), GAP_HISTORY + 1))
            gaps = [a - b for a, b in pairwise(times)]    # newest gap first, all >= 0
            last_gap = gaps[0]
            gaps.sort()
            p50, p90 = _quantile(gaps, 0.5), _quantile(gaps, 0.9)
        else:
            last_gap = p50 = p90 = NO_ARRIVAL_MS
        return [1.0 if route else 0.0, 0.0 if route else 1.0, payload if route else 0.0,
                predicted, typical, st.cold_start_ms, fn.memory_mb,
                *st.arrivals_in_windows(now_ms, TRAFFIC_WINDOWS_MS),
                st.rate_for_time_of_day(now_ms) * 60.0, tod_sin, tod_cos,
                since_last, last_gap, p50, p90, st.arrivals, len(fn.instances), len(fn.idle)]

    @staticmethod
    def _expected_wait(now_ms: float, inst: InstanceView, typical: float, cold_ms: float) -> float:
        """ms a request assigned to ``inst`` now would wait before it starts executing."""
        state = inst.state
        conc = max(1, inst.concurrency)
        if state == IDLE or (state == BUSY and inst.active < conc):
            return 0.0
        if state == STARTING:
            head = cold_ms - (now_ms - inst.created_ms)
        else:
            head = remaining_ms(typical, inst.elapsed_ms(now_ms)) / conc
        return (max(0.0, head)) + len(inst.queue) * typical / conc

    def candidates(self, now_ms: float, fn: FunctionView, exclude: InstanceView | None = None) -> list[InstanceView]:
        """Top-K instances of ``fn`` in a deterministic order: idle ones first, warmest
        (most recently freed) first; then the others by expected wait, then by id."""
        k = self.spec.k
        chosen = [i for i in islice(reversed(fn.idle), k + 1) if i is not exclude][:k]
        if len(chosen) < k and len(fn.instances) > len(fn.idle):
            typical = fn.stats.duration.ewma
            cold = fn.stats.cold_start_ms
            wait = self._expected_wait
            others = [(wait(now_ms, i, typical, cold), i.id, i)
                      for i in fn.instances.values() if i.state != IDLE and i is not exclude]
            need = k - len(chosen)
            if len(others) > need:
                others = heapq.nsmallest(need, others, key=lambda t: (t[0], t[1]))
            else:
                others.sort(key=lambda t: (t[0], t[1]))
            chosen += [t[2] for t in others]
        return chosen

    def _candidate_block(self, now_ms: float, fn: FunctionView, cands: list[InstanceView]) -> list[float]:
        typical = fn.stats.duration.ewma
        cold = fn.stats.cold_start_ms
        out: list[float] = []
        for inst in cands:
            state = inst.state
            elapsed = inst.elapsed_ms(now_ms)
            if state == STARTING:
                remaining = cold - (now_ms - inst.created_ms)
            elif state == BUSY:
                remaining = remaining_ms(typical, elapsed)
            else:
                remaining = 0.0
            out += [1.0, float(state == IDLE), float(state == BUSY), float(state == STARTING),
                    elapsed, remaining, self._expected_wait(now_ms, inst, typical, cold),
                    len(inst.queue), inst.idle_ms(now_ms), float(inst.free_slots > 0)]
        out += self._empty_candidates[: self._n_cand * (self.spec.k - len(cands))]
        return out

    def _finish(self, values: list[float]) -> np.ndarray:
        x = np.array(values, dtype=np.float64)
        logged = np.log1p(np.maximum(x, 0.0)) * self._log_scale
        obs = np.where(self._is_raw, x, logged).astype(np.float32)
        c = self.spec.obs_clip
        np.clip(obs, -c, c, out=obs)
        return obs

    # ------------------------------------------------------------------- encode
    def encode_route(self, now_ms: float, request: RequestView, fn: FunctionView
                     ) -> tuple[np.ndarray, np.ndarray, list[InstanceView]]:
        """Observation, action mask and the candidates that assign_k refers to."""
        cands = self.candidates(now_ms, fn)
        values = self._function_block(now_ms, fn, True, float(request.payload_bytes or 0))
        values += self._no_subject
        values += self._candidate_block(now_ms, fn, cands)
        mask = np.zeros(self.n_actions, dtype=bool)
        mask[:len(cands)] = True
        limit = self.spec.max_wait_cold_starts
        if limit is not None:
            max_wait = limit * fn.stats.cold_start_ms
            typical = fn.stats.duration.ewma
            cold = fn.stats.cold_start_ms
            for i, inst in enumerate(cands):
                if inst.state != IDLE and self._expected_wait(now_ms, inst, typical, cold) > max_wait:
                    mask[i] = False
        a = self.actions
        mask[a.spawn] = fn.max_instances is None or len(fn.instances) < fn.max_instances
        # Reject only when allowed, or when nothing else is possible (at the instance cap
        # with no instance to queue on), so every route point has a valid action.
        mask[a.reject] = self.spec.allow_reject or not mask[:a.reject].any()
        if not mask.any():  # at the instance cap with every instance over the wait guard
            mask[:len(cands)] = True
        return self._finish(values), mask, cands

    def forced_idle(self, now_ms: float, instance: InstanceView) -> IdleDecision | None:
        """The answer at an idle point with a single valid action, without encoding:
        INVOKE when requests are queued on the instance; KILL when its keep-alive ran out
        (unless ``reconsider_on_expiry``). None when the network has a real choice."""
        if len(instance.queue) > 0:
            return INVOKE
        if not self.spec.reconsider_on_expiry:
            until = instance.keepalive_until_ms
            if until is not None and until <= now_ms:
                return KILL
        return None

    def encode_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Observation and action mask of an on_idle point about ``instance``."""
        values = self._function_block(now_ms, fn, False, 0.0)
        values += [instance.idle_ms(now_ms), now_ms - instance.created_ms, instance.invocations,
                   len(instance.queue), instance.memory_mb]
        values += self._candidate_block(now_ms, fn, self.candidates(now_ms, fn, exclude=instance))
        forced = self.forced_idle(now_ms, instance)
        if forced is None:
            mask = self._idle_mask.copy()
        else:
            mask = np.zeros(self.n_actions, dtype=bool)
            mask[self.actions.invoke if forced is INVOKE else self.actions.kill] = True
        return self._finish(values), mask

    # ------------------------------------------------------------------- decode
    def decode(self, action: int, candidates: list[InstanceView] | None = None
               ) -> RouteDecision | IdleDecision:
        """The decision an action index stands for. ``candidates`` are the ones
        ``encode_route`` returned (needed for assign_k)."""
        a = self.actions
        action = int(action)
        if 0 <= action < a.spawn:
            if candidates is None or action >= len(candidates):
                raise ValueError(f"action {action} (assign_{action}) names no candidate instance")
            return Assign(candidates[action])
        if action == a.spawn:
            return SPAWN
        if action == a.reject:
            return REJECT
        if action == a.invoke:
            return INVOKE
        if action == a.kill:
            return KILL
        if a.keep0 <= action < a.n:
            return KeepAlive(self.spec.keepalive_ladder_ms[action - a.keep0])
        raise ValueError(f"action {action} out of range 0..{a.n - 1}")

    def is_route_action(self, action: int) -> bool:
        return 0 <= int(action) <= self.actions.reject
