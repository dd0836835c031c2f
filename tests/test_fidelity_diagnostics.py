"""wl fidelity's diagnostics: the recorded-cold-start replay takes each function's own live cold
starts, and the load driver keeps its garbage collections out of the send schedule."""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
import pytest

from wl.loop.fidelity import simulate_cold_starts_at
from wl.loop.load import quiet_gc
from wlsim.profile import load_profile

pytestmark = pytest.mark.unit


def _two_functions() -> pd.DataFrame:
    # f and g each get one request at a time, far apart, so every request is a cold start under
    # a 1 ms keep-alive
    rows = [("f", t) for t in (0.0, 5_000.0)] + [("g", t) for t in (10.0, 5_010.0)]
    rows.sort(key=lambda r: r[1])
    return pd.DataFrame({"app": [r[0] for r in rows], "function": [r[0] for r in rows],
                         "arrival_ms": [r[1] for r in rows], "duration_ms": 20.0, "memory_mb": 128.0})


def test_each_spawn_takes_its_own_functions_nearest_cold_start() -> None:
    table = _two_functions()
    # live: f's cold starts 2 and 3 ms, g's 40 and 50 ms, each g one 10 ms after an f
    at = np.array([0.0, 10.0, 5_000.0, 5_010.0])
    cold = np.array([2.0, 40.0, 3.0, 50.0])
    names = np.array(["f", "g", "f", "g"])
    result = simulate_cold_starts_at(table, "fixed_ttl:ttl_ms=1", load_profile("wl").sim_config(), at, cold, names)
    req = result.requests.sort_values("arrival_ms")
    assert req["cold"].all()
    assert req["cold_start_ms"].tolist() == pytest.approx([2.0, 40.0, 3.0, 50.0])


def test_without_function_names_the_nearest_of_any_function_is_taken() -> None:
    table = _two_functions()
    # only g had cold starts recorded, at f's times: without names f takes them too
    at, cold = np.array([0.0, 5_000.0]), np.array([40.0, 50.0])
    result = simulate_cold_starts_at(table, "fixed_ttl:ttl_ms=1", load_profile("wl").sim_config(), at, cold)
    req = result.requests.sort_values("arrival_ms")
    assert req["cold_start_ms"].tolist() == pytest.approx([40.0, 40.0, 50.0, 50.0])


def test_a_function_without_live_cold_starts_takes_any_functions() -> None:
    table = _two_functions()
    at, cold, names = np.array([0.0, 5_000.0]), np.array([2.0, 3.0]), np.array(["f", "f"])
    result = simulate_cold_starts_at(table, "fixed_ttl:ttl_ms=1", load_profile("wl").sim_config(), at, cold, names)
    g = result.requests[result.requests["function"] == "g"].sort_values("arrival_ms")
    assert g["cold_start_ms"].tolist() == pytest.approx([2.0, 3.0])


def test_the_driver_freezes_what_is_alive_and_counts_its_collections() -> None:
    before = gc.get_freeze_count()
    with quiet_gc() as stats:
        assert gc.get_freeze_count() > before      # the caller's objects: not walked by a collection now
        gc.collect()
        gc.collect()
    assert gc.get_freeze_count() == 0
    assert stats["collections"] == 2
    assert stats["max_ms"] >= 0.0 and stats["total_ms"] >= stats["max_ms"]
    assert all(cb.__name__ != "timed" for cb in gc.callbacks)
