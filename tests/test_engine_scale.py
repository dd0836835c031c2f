"""A million invocations go through the engine and come out as million-row frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from policies.interface import INVOKE, KILL, KeepAlive, Policy
from wlsim.config import SimConfig
from wlsim.engine import simulate

pytestmark = pytest.mark.integration

N = 1_000_000


class TTL(Policy):
    name = "ttl"
    keep = KeepAlive(60_000.0)

    def on_idle(self, now_ms, instance, fn):
        if instance.queue:
            return INVOKE
        return KILL if instance.keepalive_until_ms is not None else self.keep


def test_a_million_invocations() -> None:
    rng = np.random.default_rng(0)
    functions = 200
    fn = rng.integers(0, functions, size=N)
    arrival = np.cumsum(rng.exponential(10.0, size=N))          # ~100 requests/s for ~2.8 h
    names = pd.Categorical.from_codes(fn, [f"f{i}" for i in range(functions)])
    trace = pd.DataFrame({"app": names, "function": names, "arrival_ms": arrival,
                          "duration_ms": rng.lognormal(np.log(80.0), 0.8, size=N),
                          "memory_mb": 128.0})
    r = simulate(trace, TTL(), SimConfig())
    q, i = r.requests, r.instances
    assert len(q) == N and q.request_id.is_monotonic_increasing and q.request_id.iloc[-1] == N - 1
    assert not q.rejected.any() and q.end_ms.notna().all()
    assert len(i) == int(q.cold.sum()) and int(i.invocations.sum()) == N
    assert q.instance_id.between(0, len(i) - 1).all()
    # Columnar: about 70 bytes per request row, not kilobytes.
    assert q.memory_usage(deep=True).sum() < 200 * N
    assert r.horizon_ms == q.end_ms.max()
