"""ImitationPolicy binds the default's route on the instance while it is not recording (no
wrapper call per request); recording, pickling and subclasses that override route must still
get the right route."""

import pickle
from pathlib import Path

import pytest

from policies.builtin.default import ExpectedWait
from policies.imitation import ImitationPolicy
from policies.registry import load_policy
from wlsim.engine import simulate
from wlsim.traces import read_trace

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
ARTIFACT = f"learned:{ROOT / 'examples/learned/azure40'}"


def _learned() -> ImitationPolicy:
    policy = load_policy(ARTIFACT)
    assert isinstance(policy, ImitationPolicy)
    return policy


def test_route_is_the_defaults_until_recording() -> None:
    policy = _learned()
    assert policy.route.__func__ is ExpectedWait.route
    policy.record()                                   # labels are attributed by the wrapper again
    assert policy.route.__func__ is ImitationPolicy.route


def test_a_subclass_keeps_its_own_route() -> None:
    class Counting(ImitationPolicy):
        def route(self, now_ms, request, fn):  # type: ignore[no-untyped-def]
            self.routes = getattr(self, "routes", 0) + 1
            return super().route(now_ms, request, fn)

    base = _learned()
    policy = Counting([(w.T, b) for w, b in zip(base.w, base.b)], **base.decision())
    assert policy.route.__func__ is Counting.route


def test_pickled_policy_binds_again_and_decides_the_same() -> None:
    trace = read_trace(ROOT / "traces/azure2019/40", start_minute=1, end_minute=20)
    policy = _learned()
    copy = pickle.loads(pickle.dumps(policy))
    assert copy.route.__func__ is ExpectedWait.route and copy.route.__self__ is copy
    a, b = simulate(trace, policy), simulate(trace, copy)
    assert a.requests.equals(b.requests) and a.instances.equals(b.instances)
    assert len(trace) > 100 and len(a.requests) == len(trace)
