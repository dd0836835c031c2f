"""Policy decisions with a time budget, off the router's event loop.

The router asks its policy synchronously on its one event loop (decisions never await, so
each sees a consistent instance table). A user's policy (``custom:``, ``learned:``,
``wasm:``) could take any time there and freeze every request, health check and admin call.
``DeadlinePolicy`` wraps such a policy: each decision runs on the policy's own worker thread
and the loop waits for it at most ``budget_ms``. On an overrun the decision is answered by the
base policy (``policies.Policy()``: warmest idle instance else a cold start; serve the queue
else kill) and counted. While the late call is still running, later decisions are answered by
the base policy at once: a policy is never called twice at the same time (policies are not
thread-safe), and the loop never waits for a policy that is already late.

After ``report_after`` overruns in a row the policy is reported (an error in the log, the
``wl_router_policy_slow`` gauge); with ``disable_after`` it is switched off (every decision
by the base policy, ``wl_router_policy_disabled`` = 1) until the next ``wl policy set``.

Built-in policies are trusted and cheap (a few µs a decision) and run unwrapped: the thread
hand-off costs more than their whole decision (``bench/bench_deadline.py``). So do ``learned:``
artifacts of up to ``INLINE_LEARNED_WEIGHTS`` weights: an artifact is data (weights and a
spec), not code, and its decision is a forward pass whose cost is bounded by the network's
size (the bundled ones: 1.3k-9.6k weights, ~10-80 µs). On a busy host the hand-off itself overran the
budget (the worker waiting for the GIL or a core), and every such decision answered by the base
policy made the live run differ from what the simulator predicts for the same policy.

Settings (environment): ``WL_ROUTER_DECISION_BUDGET_MS`` (default 5),
``WL_ROUTER_POLICY_DISABLE_AFTER`` (overruns in a row; default 0 = never disable).

The budget runs from when the worker thread starts the call: a host so busy that the thread is
not scheduled at once gets up to ``SCHEDULING_SLACK_MS`` more (the policy's cost is what is
limited, not the machine's). A Python policy that computes without releasing the GIL delays the
loop by up to Python's switch interval (5 ms) beyond the budget before the loop gets to answer.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any

from policies.interface import FunctionView, InstanceView, Policy, RequestView
from policies.registry import PolicySpecError

log = logging.getLogger("wlruntime.router.deadline")

DEFAULT_BUDGET_MS = 5.0
# The budget counts from when the worker thread starts the call; on an overloaded host the
# thread may take a while to be scheduled at all, which is not the policy's fault: that wait is
# allowed up to this much more before it counts as an overrun.
SCHEDULING_SLACK_MS = 50.0
REPORT_AFTER = 10            # overruns in a row that get the policy reported
BUDGET_ENV = "WL_ROUTER_DECISION_BUDGET_MS"
DISABLE_ENV = "WL_ROUTER_POLICY_DISABLE_AFTER"
BASE = Policy()
UNTRUSTED_KINDS = ("custom", "learned", "wasm")  # spec heads that get a deadline; built-ins do not
INLINE_LEARNED_WEIGHTS = 100_000   # learned networks up to this size decide inline (~0.1 ms at most)


class DeadlineStats:
    """Process-wide counts for /metrics (one router per process; tests with several add up)."""

    def __init__(self) -> None:
        self.overruns: Counter[str] = Counter()   # decisions answered by the base policy: too slow
        self.busy: Counter[str] = Counter()       # ... because the policy was still running a late call
        self.slow_policies: set[int] = set()      # id() of wrappers currently reported as slow
        self.disabled: set[int] = set()


STATS = DeadlineStats()


def settings_from_env(environ: dict[str, str] | None = None) -> tuple[float, int]:
    """(budget_ms, disable_after) from the environment, with clear errors for bad values."""
    env = os.environ if environ is None else environ
    raw_budget = env.get(BUDGET_ENV, "").strip()
    raw_disable = env.get(DISABLE_ENV, "").strip()
    try:
        budget = float(raw_budget) if raw_budget else DEFAULT_BUDGET_MS
    except ValueError:
        raise ValueError(f"{BUDGET_ENV} must be a number of milliseconds, got {raw_budget!r}") from None
    if not budget > 0:
        raise ValueError(f"{BUDGET_ENV} must be > 0 ms, got {raw_budget!r}")
    if raw_disable and not raw_disable.isdigit():
        raise ValueError(f"{DISABLE_ENV} must be a whole number of overruns (0 = never), got {raw_disable!r}")
    return budget, int(raw_disable or 0)


def needs_deadline(spec: str, policy: Policy | None = None) -> bool:
    """True for policies that are not built-in (user code, wasm modules, learned artifacts),
    except a loaded learned ``policy`` whose network is small (``INLINE_LEARNED_WEIGHTS``)."""
    head = spec.strip().split(":", 1)[0]
    if head == "learned" and 0 < getattr(policy, "n_weights", 0) <= INLINE_LEARNED_WEIGHTS:
        return False
    return head in UNTRUSTED_KINDS


def with_deadline(policy: Policy, spec: str) -> Policy:
    """``policy`` wrapped in a DeadlinePolicy (settings from the environment) unless built-in
    or a small learned network."""
    if not needs_deadline(spec, policy):
        return policy
    try:
        budget_ms, disable_after = settings_from_env()
    except ValueError as error:  # a clear answer (400 on a policy swap), not a crash
        raise PolicySpecError(f"cannot run policy {spec!r}: {error}") from None
    return DeadlinePolicy(policy, budget_ms=budget_ms, disable_after=disable_after, spec=spec)


class _Worker:
    """One daemon thread running one call at a time (a stuck policy cannot hold up exit)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future, Callable[..., Any], tuple] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, call, args = job
            if not future.set_running_or_notify_cancel():
                continue
            future.started_at = time.perf_counter()  # the budget runs from here
            try:
                future.set_result(call(*args))
            except BaseException as error:  # noqa: BLE001 - handed to the caller, who decides
                future.set_exception(error)

    def submit(self, call: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._jobs.put((future, call, args))
        return future

    def close(self) -> None:
        self._jobs.put(None)


class DeadlinePolicy(Policy):
    """``inner``'s decisions within ``budget_ms`` each, else the base policy's (see module doc)."""

    def __init__(self, inner: Policy, *, budget_ms: float = DEFAULT_BUDGET_MS, disable_after: int = 0,
                 report_after: int = REPORT_AFTER, spec: str | None = None) -> None:
        if not budget_ms > 0:
            raise ValueError(f"the decision budget must be > 0 ms, got {budget_ms!r}")
        self.inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)  # type: ignore[misc]
        self.needs_future = getattr(inner, "needs_future", False)  # type: ignore[misc]
        self.spec = spec or self.name
        self.budget_ms = float(budget_ms)
        self.disable_after = int(disable_after)
        self.report_after = int(report_after)
        self.in_a_row = 0
        self.overruns = 0
        self.disabled = False
        self._late: Future | None = None  # a call still running after its deadline
        self._worker = _Worker(f"wl-policy-{self.name}")
        weakref.finalize(self, self._forget, self._worker, id(self))

    @staticmethod
    def _forget(worker: _Worker, key: int) -> None:
        worker.close()
        STATS.slow_policies.discard(key)
        STATS.disabled.discard(key)

    # ---- the decisions ---------------------------------------------------------------------------
    def route(self, now_ms: float, request: RequestView, fn: FunctionView) -> Any:
        return self._decide("route", self.inner.route, BASE.route, now_ms, request, fn)

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> Any:
        return self._decide("on_idle", self.inner.on_idle, BASE.on_idle, now_ms, instance, fn)

    def prewarm(self, now_ms: float, fn: FunctionView) -> float | None:
        return self._decide("prewarm", self.inner.prewarm, BASE.prewarm, now_ms, fn)

    def evict(self, now_ms: float, need_mb: float, candidates: Sequence[InstanceView]) -> list[InstanceView]:
        return self._decide("evict", self.inner.evict, BASE.evict, now_ms, need_mb, list(candidates))

    def prepare(self, trace: Any) -> None:
        self.inner.prepare(trace)

    def describe(self) -> dict[str, Any]:
        described = dict(self.inner.describe())
        described["deadline"] = {"budget_ms": self.budget_ms, "overruns": self.overruns,
                                 "overruns_in_a_row": self.in_a_row, "disabled": self.disabled,
                                 "disable_after": self.disable_after or None}
        return described

    def __getattr__(self, name: str) -> Any:  # anything else a caller reads from the policy
        if name == "inner":  # not set yet (during __init__): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _decide(self, decision: str, call: Callable[..., Any], fallback: Callable[..., Any], *args: Any) -> Any:
        if self.disabled:
            return fallback(*args)
        late = self._late
        if late is not None:
            if not late.done():
                STATS.busy[decision] += 1
                return fallback(*args)
            self._late = None
        future = self._worker.submit(call, *args)
        try:
            answer = self._wait(future)
        except TimeoutError:
            self._late = future
            self._overran(decision)
            return fallback(*args)
        self.in_a_row = 0
        if id(self) in STATS.slow_policies:
            STATS.slow_policies.discard(id(self))
            log.warning("policy %s answers within its %g ms budget again", self.spec, self.budget_ms)
        return answer  # (an exception from the policy is re-raised: the router's own fallback handles it)

    def _wait(self, future: Future) -> Any:
        """The call's answer once it ran at most the budget since it started (raises TimeoutError
        otherwise); waiting for the worker to start it at all is allowed SCHEDULING_SLACK_MS."""
        budget = self.budget_ms / 1000.0
        submitted = time.perf_counter()
        give_up = submitted + budget + SCHEDULING_SLACK_MS / 1000.0
        until = submitted + budget
        while True:
            try:
                return future.result(timeout=max(0.0, until - time.perf_counter()))
            except TimeoutError:
                now = time.perf_counter()
                started = getattr(future, "started_at", None)
                until = min(give_up, started + budget if started is not None else now + budget / 4)
                if now >= until:
                    raise

    def _overran(self, decision: str) -> None:
        self.overruns += 1
        self.in_a_row += 1
        STATS.overruns[decision] += 1
        if self.in_a_row == self.report_after or (self.in_a_row == 1 and self.overruns == 1):
            if self.in_a_row >= self.report_after:
                STATS.slow_policies.add(id(self))
            log.error("policy %s overran its decision budget of %g ms (%s; %d in a row, %d in all): the base "
                      "policy answered instead%s", self.spec, self.budget_ms, decision, self.in_a_row,
                      self.overruns, f"; it is disabled after {self.disable_after} in a row"
                      if self.disable_after else "")
        if self.disable_after and self.in_a_row >= self.disable_after and not self.disabled:
            self.disabled = True
            STATS.disabled.add(id(self))
            log.error("policy %s disabled after %d decisions in a row over its %g ms budget: every decision is "
                      "made by the base policy until the next policy change (wl policy set)", self.spec,
                      self.in_a_row, self.budget_ms)


class DeadlineCollector:
    """/metrics: overruns and busy fallbacks by decision, policies reported slow or disabled."""

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        overruns = CounterMetricFamily("wl_router_policy_overruns", "Policy decisions that overran their time "
                                       "budget and were answered by the base policy", labels=["decision"])
        busy = CounterMetricFamily("wl_router_policy_busy_fallbacks", "Decisions answered by the base policy "
                                   "because the policy was still running an overrun call", labels=["decision"])
        for decision in ("route", "on_idle", "prewarm", "evict"):
            overruns.add_metric([decision], STATS.overruns[decision])
            busy.add_metric([decision], STATS.busy[decision])
        yield overruns
        yield busy
        yield GaugeMetricFamily("wl_router_policy_slow", "Policies overrunning their budget repeatedly "
                                "(reported in the log)", value=len(STATS.slow_policies))
        yield GaugeMetricFamily("wl_router_policy_disabled", "Policies switched off for overrunning their budget "
                                "(the base policy decides)", value=len(STATS.disabled))


__all__ = ["DEFAULT_BUDGET_MS", "DeadlineCollector", "DeadlinePolicy", "needs_deadline", "with_deadline"]
