"""`wl sim replay --profile`: the platform profile's cold-start distribution through the CLI. An
integration test (a CLI pipeline that writes Parquet and renders plots), kept out of the unit
layer of tests/test_loop_profile.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wlsim.profile import load_profile

pytestmark = pytest.mark.integration


def test_sim_replay_profile_wl_draws_each_spawns_cold_start(tmp_path) -> None:
    """`wl sim replay --profile wl`: every trace function draws its cold starts from the measured
    wasi-command distribution, as wl fidelity's simulations do (not one constant)."""
    from typer.testing import CliRunner

    from wl.cli import app

    n = 200   # every 2 s; a 1 ms keep-alive makes every request a cold start
    trace = pd.DataFrame({"app": "a", "function": np.where(np.arange(n) % 2 == 0, "f", "g"),
                          "arrival_ms": np.arange(n) * 2000.0, "duration_ms": 10.0, "memory_mb": 64.0})
    path = tmp_path / "t.csv"
    trace.to_csv(path, index=False)
    result = CliRunner().invoke(app, ["sim", "replay", "--policy", "fixed_ttl:ttl_ms=1", "--trace", str(path),
                                      "--profile", "wl", "--no-progress", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    cold = pd.read_parquet(tmp_path / "out" / "requests.parquet").query("cold_start_ms > 0")["cold_start_ms"]
    measured = load_profile("wl").cold_start.by_abi["wasi-command"].quantiles_ms
    assert len(cold) == n and cold.nunique() > n // 2
    assert measured[0] <= cold.min() and cold.max() <= measured[-1]

    bad = CliRunner().invoke(app, ["sim", "replay", "--policy", "kpa", "--trace", str(path), "--profile", "nope"])
    assert bad.exit_code == 2 and "profile 'nope'" in bad.output and "Traceback" not in bad.output
