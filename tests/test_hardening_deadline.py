"""Policy decisions with a deadline (wlruntime/router/deadline.py): a slow user policy is
answered for by the base policy, never called twice at once, reported and optionally disabled;
built-in policies run unwrapped (issue 12, failure 2)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from policies.interface import KILL, SPAWN, Assign, KeepAlive, Policy, RequestView
from policies.registry import PolicySpecError
from wlruntime.router import deadline
from wlruntime.router.core import load_live_policy
from wlruntime.router.deadline import STATS, DeadlineCollector, DeadlinePolicy, settings_from_env

pytestmark = pytest.mark.unit


class _Fn:
    """The least a FunctionView offers the base policy."""

    def __init__(self, idle: list | None = None) -> None:
        self.idle = idle or []
        self.name = "f"


class Blocking(Policy):
    """route() blocks until released; counts calls and how many run at once."""

    name = "blocking"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls = 0
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def route(self, now_ms, request, fn):
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.entered.set()
        self.release.wait(30)
        with self._lock:
            self.running -= 1
        return Assign("from-the-policy")

    def on_idle(self, now_ms, instance, fn):
        return KeepAlive(1234)


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "policies" / "keep_warm_5min.py"
IDLE_INSTANCE = type("Idle", (), {"queue": []})()  # what the base on_idle reads


def request() -> RequestView:
    return RequestView(1, "f", 0.0, 0)


def test_an_overrun_is_answered_by_the_base_policy_and_the_policy_is_not_called_again_meanwhile() -> None:
    inner = Blocking()
    policy = DeadlinePolicy(inner, budget_ms=5)
    before = STATS.overruns["route"], STATS.busy["route"]
    # The policy blocks: the base policy answers (no idle instance: a cold start).
    assert policy.route(0.0, request(), _Fn()) == SPAWN
    assert inner.entered.is_set() and inner.running == 1
    # Still running: the next decisions do not reach it (not thread-safe), the base answers.
    for _ in range(3):
        assert policy.route(0.0, request(), _Fn()) == SPAWN
    assert inner.calls == 1
    assert STATS.overruns["route"] - before[0] == 1 and STATS.busy["route"] - before[1] == 3
    # Other decisions wait for it too.
    assert policy.on_idle(0.0, IDLE_INSTANCE, _Fn()) == KILL
    inner.release.set()
    policy._late.result(5)  # the late call ends (its answer was not used)
    # Once it finished, decisions go to it again.
    assert policy.route(0.0, request(), _Fn()) == Assign("from-the-policy")
    assert policy.on_idle(0.0, IDLE_INSTANCE, _Fn()) == KeepAlive(1234)
    assert inner.most_at_once == 1
    assert policy.describe()["deadline"]["overruns"] == 1


def test_a_policy_exception_reaches_the_router_which_has_its_own_fallback() -> None:
    class Broken(Policy):
        def route(self, now_ms, request, fn):
            raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        DeadlinePolicy(Broken(), budget_ms=1000).route(0.0, request(), _Fn())


def test_repeated_overruns_are_reported_and_optionally_disable_the_policy(caplog: pytest.LogCaptureFixture) -> None:
    class AlwaysSlow(Policy):
        name = "always_slow"

        def __init__(self) -> None:
            self.calls = 0

        def on_idle(self, now_ms, instance, fn):
            self.calls += 1
            threading.Event().wait(0.05)
            return KeepAlive(1)

    inner = AlwaysSlow()
    policy = DeadlinePolicy(inner, budget_ms=1, disable_after=3, report_after=2, spec="custom:slow.py")
    overruns = 0
    for _ in range(200):
        if policy.disabled:
            break
        if policy._late is not None and not policy._late.done():
            policy._late.result(5)  # let the late call end, so the next decision reaches the policy
        before = policy.overruns
        assert policy.on_idle(0.0, IDLE_INSTANCE, _Fn()) == KILL
        overruns += policy.overruns - before
    assert policy.disabled and overruns == 3
    assert "disabled after 3 decisions in a row" in caplog.text and "custom:slow.py" in caplog.text
    calls = inner.calls
    assert policy.on_idle(0.0, IDLE_INSTANCE, _Fn()) == KILL
    assert inner.calls == calls  # disabled: not asked any more
    scraped = {m.name: m for m in DeadlineCollector().collect()}
    assert scraped["wl_router_policy_disabled"].samples[0].value >= 1
    assert any(s.labels == {"decision": "on_idle"} and s.value >= 3
               for s in scraped["wl_router_policy_overruns"].samples)


def test_builtins_run_unwrapped_and_user_policies_get_a_deadline(tmp_path, monkeypatch) -> None:
    assert not isinstance(load_live_policy("fixed_ttl:ttl_ms=1000"), DeadlinePolicy)
    path = tmp_path / "mine.py"
    path.write_text("from policies import Policy\nclass Mine(Policy):\n    name = 'mine'\n")
    monkeypatch.setenv(deadline.BUDGET_ENV, "7.5")
    policy = load_live_policy(f"custom:{path}")
    assert isinstance(policy, DeadlinePolicy) and policy.budget_ms == 7.5 and policy.name == "mine"
    assert policy.describe()["name"] == "mine"


def test_small_learned_networks_decide_inline_large_ones_get_a_deadline(monkeypatch) -> None:
    """A learned artifact is data: a network of bounded size decides on the loop like a
    built-in (no hand-off to overrun on a busy host); past INLINE_LEARNED_WEIGHTS it gets the
    deadline like user code."""
    for spec, weights in (("learned:examples/learned/azure40", 1301), ("learned:examples/learned/azure40-ppo", 9552)):
        policy = load_live_policy(spec)
        assert not isinstance(policy, DeadlinePolicy) and policy.n_weights == weights
    monkeypatch.setattr(deadline, "INLINE_LEARNED_WEIGHTS", 5_000)
    assert not isinstance(load_live_policy("learned:examples/learned/azure40"), DeadlinePolicy)
    wrapped = load_live_policy("learned:examples/learned/azure40-ppo")
    assert isinstance(wrapped, DeadlinePolicy) and wrapped.name == "learned"


@pytest.mark.parametrize(("env", "message"), [
    ({deadline.BUDGET_ENV: "fast"}, "must be a number of milliseconds"),
    ({deadline.BUDGET_ENV: "0"}, "must be > 0 ms"),
    ({deadline.DISABLE_ENV: "-1"}, "whole number of overruns"),
])
def test_bad_deadline_settings_are_clear_errors(env: dict[str, str], message: str, monkeypatch) -> None:
    with pytest.raises(ValueError, match=message):
        settings_from_env(env)
    assert settings_from_env({}) == (deadline.DEFAULT_BUDGET_MS, 0)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(PolicySpecError, match=message):  # the router answers it as a bad spec (400)
        load_live_policy(f"custom:{EXAMPLE}")
