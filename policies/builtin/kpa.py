"""A Knative-Pod-Autoscaler-like concurrency autoscaler with stable and panic windows."""

from __future__ import annotations

import math
from typing import Any

from policies.builtin._common import number, warm_slot
from policies.interface import (
    BUSY,
    INVOKE,
    KILL,
    SPAWN,
    STARTING,
    Assign,
    FunctionView,
    IdleDecision,
    InstanceView,
    KeepAlive,
    Policy,
    PolicySpecError,
    RequestView,
    RouteDecision,
)


class KPAState:
    __slots__ = ("panic_until_ms",)

    def __init__(self) -> None:
        self.panic_until_ms = -math.inf


class KPA(Policy):
    """Concurrency autoscaling after Knative's KPA.

    Desired instances = ceil(observed concurrency / target concurrency per instance), from
    two windows: the stable window (60 s) and the panic window (6 s). The autoscaler enters
    panic mode when the panic window's desired count is at least ``panic_threshold`` (2x)
    the current instance count (taken as at least 1), and stays in it for a stable window
    after the last time that held; in panic the desired count is the larger of the two
    windows' and instances are never scaled down. Out of panic the stable window decides.

    Routing: an instance with a free slot (idle, or busy below its concurrency); else a
    new instance when fewer are live (starting included) than desired; else queue on the
    least-loaded busy or starting instance if its queue is shorter than ``queue_limit``;
    else a new instance anyway (a request is never left without a place). Knative's
    activator buffers requests until some instance has room; wl has no shared buffer, and
    queueing on one busy instance can mean waiting out an execution of minutes (on the
    bundled 40-function Azure day ``queue_limit=1`` added 200,000 s of waiting), so the
    default ``queue_limit`` is 0: no free slot means scale up now.

    Scaling down: an instance that becomes idle, or whose keep-alive ran out, is killed
    when more instances are live than desired (one at a time, as they become idle), else
    kept until the stable window, losing its oldest arrivals, would ask for fewer
    instances than are live (at least ``tick_ms`` later; Knative re-evaluates every 2 s),
    or until the panic ends.

    Simplifications (documented, deliberate): observed concurrency is estimated by
    Little's law, arrivals in the window / window length x the predicted duration, rather
    than by sampling in-flight requests every second; the panic window's estimate is
    raised to the number of requests in flight right now (arrived, not completed), which
    a burst's samples would show at once; there is no scale-to-zero grace
    period, activator, or min/max scale (``fn.max_instances`` is left to the engine); the
    target defaults to ``target_utilization`` (70%) of the instance's concurrency, as for
    Knative with a container-concurrency limit.

    Parameters:
      target: target concurrency per instance (default: target_utilization x concurrency).
      target_utilization: used when target is not given (default 0.7).
      stable_window_ms (60000), panic_window_ms (6000), panic_threshold (2.0),
      queue_limit: requests allowed to wait on one instance before spawning (default 0),
      tick_ms: shortest re-evaluation delay for an idle instance (default 2000).
    """

    name = "kpa"

    def __init__(self, target: float | None = None, target_utilization: float = 0.7,
                 stable_window_ms: float = 60_000.0, panic_window_ms: float = 6_000.0,
                 panic_threshold: float = 2.0, queue_limit: int = 0, tick_ms: float = 2_000.0) -> None:
        n = self.name
        self.target = number(n, "target", target, allow_none=True)
        self.target_utilization = number(n, "target_utilization", target_utilization)
        self.stable_window_ms = number(n, "stable_window_ms", stable_window_ms)
        self.panic_window_ms = number(n, "panic_window_ms", panic_window_ms)
        if self.panic_window_ms > self.stable_window_ms:
            raise PolicySpecError(f"{n}: panic_window_ms ({panic_window_ms}) must not exceed "
                                  f"stable_window_ms ({stable_window_ms})")
        self.panic_threshold = number(n, "panic_threshold", panic_threshold)
        self.queue_limit = int(number(n, "queue_limit", queue_limit, strict=False))
        self.tick_ms = number(n, "tick_ms", tick_ms)

    @staticmethod
    def state(fn: FunctionView) -> KPAState:
        st = fn.policy_state
        if type(st) is not KPAState:     # unset, or another policy's (a hot swap)
            st = fn.policy_state = KPAState()
        return st

    def desired(self, now_ms: float, fn: FunctionView) -> tuple[int, bool]:
        """(desired instance count, in panic mode) at ``now_ms``; updates the panic state."""
        desired, panicking, _, _ = self._desired(now_ms, fn)
        return desired, panicking

    def _desired(self, now_ms: float, fn: FunctionView) -> tuple[int, bool, float, int]:
        """``desired`` plus what it read that on_idle needs again: the predicted duration
        (ms) and the arrivals in the stable window. (``max`` of two or three numbers is
        written out as comparisons, which pick the same element: this runs at every
        decision.)"""
        stats = fn.stats
        target = self.target if self.target is not None else self.target_utilization * fn.concurrency
        duration_ms = stats.duration.predict()                 # stats.predict_duration()
        duration_s = duration_ms / 1000.0
        n_stable = stats.arrivals_in_last(now_ms, self.stable_window_ms)
        stable_conc = n_stable / (self.stable_window_ms / 1000.0) * duration_s
        # the panic window also sees the requests in flight right now (running or queued, the
        # one being routed included), as Knative's per-second samples would
        in_flight = stats.arrivals - stats.completions
        if in_flight < 0:
            in_flight = 0
        panic_conc = stats.arrivals_in_last(now_ms, self.panic_window_ms) \
            / (self.panic_window_ms / 1000.0) * duration_s
        if not panic_conc > in_flight:
            panic_conc = in_flight
        # a tiny epsilon keeps float noise (e.g. 2.0000000001) from asking for one more
        stable = math.ceil(stable_conc / target - 1e-9)
        panic = math.ceil(panic_conc / target - 1e-9)
        st = fn.policy_state
        if type(st) is not KPAState:
            st = self.state(fn)
        live = len(fn.instances)                               # fn.live_count
        if panic >= self.panic_threshold * (live if live > 1 else 1):
            st.panic_until_ms = now_ms + self.stable_window_ms
        if now_ms < st.panic_until_ms:
            most = stable
            if panic > most:
                most = panic
            if live > most:
                most = live
            return most, True, duration_ms, n_stable
        return stable, False, duration_ms, n_stable

    def route(self, now_ms: float, request: RequestView, fn: FunctionView) -> RouteDecision:
        inst = warm_slot(fn)
        if inst is not None:
            return Assign(inst)
        desired = self._desired(now_ms, fn)[0]
        if fn.live_count < desired:
            return SPAWN
        if self.queue_limit > 0:
            least, least_load = None, math.inf
            for i in fn.instances.values():
                if i.state == BUSY or i.state == STARTING:
                    load = i.queue_len + i.active
                    if load < least_load:
                        least, least_load = i, load
            if least is not None and least.queue_len < self.queue_limit:
                return Assign(least)
        return SPAWN

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        if instance.queue:
            return INVOKE
        desired, panicking, duration_ms, n_stable = self._desired(now_ms, fn)
        if panicking:
            return KeepAlive(max(self.tick_ms, fn.policy_state.panic_until_ms - now_ms))
        live = len(fn.instances)                               # fn.live_count
        if live > desired:
            return KILL
        return KeepAlive(self._until_fewer_needed(now_ms, fn, live, duration_ms, n_stable))

    def _until_fewer_needed(self, now_ms: float, fn: FunctionView, live: int,
                            duration_ms: float | None = None, n_stable: int | None = None) -> float:
        """Delay until the stable window, losing its oldest arrivals, asks for fewer than
        ``live`` instances if nothing else arrives (at least tick_ms). One re-ask then,
        rather than one per tick. ``duration_ms`` and ``n_stable`` (the predicted duration
        and the arrivals in the stable window now) are read from ``fn`` when not given."""
        stats = fn.stats
        target = self.target if self.target is not None else self.target_utilization * fn.concurrency
        if duration_ms is None:
            duration_ms = stats.predict_duration()
        per_arrival = duration_ms / (self.stable_window_ms * target)
        if per_arrival <= 0:
            return self.tick_ms
        # the most arrivals the window may hold while asking for at most live - 1 instances
        allowed = math.floor((live - 1 + 1e-9) / per_arrival)
        recent = stats.recent
        n_in = stats.arrivals_in_last(now_ms, self.stable_window_ms) if n_stable is None else n_stable
        if allowed >= n_in or allowed >= len(recent):
            return self.tick_ms
        leaves_at = recent[len(recent) - allowed - 1] + self.stable_window_ms
        return max(self.tick_ms, leaves_at - now_ms)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "target_utilization": self.target_utilization,
                "stable_window_ms": self.stable_window_ms, "panic_window_ms": self.panic_window_ms,
                "panic_threshold": self.panic_threshold, "queue_limit": self.queue_limit,
                "tick_ms": self.tick_ms}
