"""Training across processes: environments in subprocesses (``wl train --envs N``), seeds x
lambda sweeps through local worker processes and as Ray tasks (``wl train ... sweep``), and
training against a platform profile (``--profile``)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Small runs: one rollout of 64 steps per env, a 2-minute validation slice.
SMALL = ["--steps", "128", "--episode-minutes", "0", "--functions-per-episode", "0", "--checkpoint-every", "0",
         "--no-progress", "--no-tensorboard"]


def two_functions(minutes: float = 6.0) -> pd.DataFrame:
    """Two functions, each called every 4 s (100 ms, 128 MB): keeping an instance alive pays."""
    n = int(minutes * 30)
    return pd.DataFrame({"app": "a", "function": np.where(np.arange(n) % 2 == 0, "f", "g"),
                         "arrival_ms": np.arange(n) * 2000.0, "duration_ms": 100.0, "memory_mb": 128.0})


@pytest.fixture
def trace_csv(tmp_path: Path) -> Path:
    path = tmp_path / "two.csv"
    two_functions().to_csv(path, index=False)
    return path


def _small_config(tmp_path: Path, **kwargs):
    from wlsim.rl.train import TrainConfig

    base = {"trace": "two", "steps": 128, "n_steps": 64, "batch_size": 64, "n_epochs": 2, "n_envs": 2,
            "episode_minutes": None, "warmup_minutes": 0, "functions_per_episode": None, "checkpoint_every": 0,
            "progress_bar": False, "tensorboard": False, "out": str(tmp_path / "run")}
    return TrainConfig(**(base | kwargs))


def test_envs_in_subprocesses_each_its_own_process_and_seed(tmp_path: Path) -> None:
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from wlsim.rl.train import make_vec_env

    vec = make_vec_env(_small_config(tmp_path, subproc=True, seed=5), two_functions())
    procs = vec.venv                      # under the MasksFromInfo wrapper
    try:
        assert isinstance(procs, SubprocVecEnv) and len(procs.processes) == 2
        pids = {p.pid for p in procs.processes}
        assert len(pids) == 2 and os.getpid() not in pids and all(p.is_alive() for p in procs.processes)
        obs = vec.reset()
        assert obs.shape[0] == 2
        masks = vec.env_method("action_masks")
        actions = np.array([int(np.flatnonzero(m)[0]) for m in masks])
        _, rewards, _, _ = vec.step(actions)
        assert rewards.shape == (2,) and np.all(np.isfinite(rewards))
    finally:
        vec.close()
    assert not any(p.is_alive() for p in procs.processes)


def test_wl_train_envs_trains_in_subprocesses_and_leaves_nothing_in_tmp(trace_csv: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from policies.learned import LearnedPolicy
    from wlsim.engine import simulate
    from wlsim.rl.cli import app

    # sb3 made its default log folder (SB3-<date>) in the temporary directory: now in one of ours
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--trace", str(trace_csv), "--envs", "2", "--out", str(out), *SMALL])
    assert result.exit_code == 0, result.output
    policy = LearnedPolicy.load(out / "artifact")
    trace = two_functions()
    assert len(simulate(trace, policy).requests) == len(trace)
    import json

    summary = json.loads((out / "train.json").read_text())
    assert summary["config"]["subproc"] is True and summary["config"]["n_envs"] == 2
    assert summary["episodes"] >= 2                      # counted from both processes' monitors
    assert not list(tmp.glob("SB3-*"))

    both = CliRunner().invoke(app, ["train", "--trace", str(trace_csv), "--envs", "2", "--n-envs", "3",
                                    "--out", str(tmp_path / "x"), *SMALL])
    assert both.exit_code == 2 and "give one of them" in both.output and not (tmp_path / "x").exists()


def test_local_sweep_2x2_table_and_best_on_validation(trace_csv: Path, tmp_path: Path) -> None:
    from wlsim.engine import simulate
    from wlsim.metrics import summarize
    from wlsim.rl.cli import app

    out = tmp_path / "sweep"
    result = CliRunner().invoke(app, ["train", "--trace", str(trace_csv), "--validation-minutes", "5,6",
                                      "--n-envs", "1", *SMALL,
                                      "sweep", "--seeds", "0,1", "--lambda", "0.01,2", "-j", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == 4
    assert set(zip(table["seed"], table["lambda"], strict=True)) == {(0, 0.01), (0, 2.0), (1, 0.01), (1, 2.0)}
    best = table[table["best"]]
    assert len(best) == 1 and best["validation_cost_usd"].iloc[0] == table["validation_cost_usd"].min()
    assert f"learned:{best['artifact'].iloc[0]}" in result.output.replace("\n", "")
    # the table's numbers are the artifacts' own on the validation slice
    validation = pd.read_csv(trace_csv)
    validation = validation[validation["arrival_ms"] >= 4 * 60_000].reset_index(drop=True)
    for row in table.to_dict("records"):
        assert Path(row["artifact"]).is_dir() and Path(row["artifact"]).is_relative_to(out.resolve())
    row = table.iloc[-1]
    s = summarize(simulate(validation, f"learned:{row['artifact']}"))
    assert row["validation_cold_starts"] == s["cold_starts"]
    assert row["validation_cost_usd"] == pytest.approx(s["weighted_cost_usd"])

    # evaluate on a profile too: wl's ms cold starts, not the default container's 314 ms
    ev = CliRunner().invoke(app, ["evaluate", best["artifact"].iloc[0], "--trace", str(trace_csv), "--baselines",
                                  "fixed_ttl", "--profile", "wl", "--jobs", "1", "--no-progress",
                                  "--out", str(tmp_path / "eval")])
    assert ev.exit_code == 0, ev.output
    fixed = pd.read_csv(tmp_path / "eval" / "summary.csv").set_index("policy").loc["fixed_ttl"]
    assert fixed["cold_starts"] > 0 and fixed["added_latency_s"] / fixed["cold_starts"] < 0.05

    no_validation = CliRunner().invoke(app, ["train", "--trace", str(trace_csv), *SMALL, "sweep", "--seeds", "0",
                                             "--out", str(tmp_path / "nv")])
    assert no_validation.exit_code == 2 and "--validation-minutes" in no_validation.output


RAY_SWEEP = """
import sys
import numpy as np, pandas as pd
from wlsim.parallel import LocalExecutor, RayExecutor
from wlsim.rl.sweep import run_train_sweep
from wlsim.rl.train import TrainConfig

n = 180
trace = pd.DataFrame({"app": "a", "function": np.where(np.arange(n) % 2 == 0, "f", "g"),
                      "arrival_ms": np.arange(n) * 2000.0, "duration_ms": 100.0, "memory_mb": 128.0})
validation = trace[trace["arrival_ms"] >= 240_000].reset_index(drop=True)
base = TrainConfig(trace="two", steps=128, n_steps=64, batch_size=64, n_epochs=2, n_envs=1, episode_minutes=None,
                   warmup_minutes=0, functions_per_episode=None, checkpoint_every=0, tensorboard=False)
out = sys.argv[1]
local = run_train_sweep(base, [0], [0.01, 2.0], out + "/local", LocalExecutor(1), tables=(trace, validation))
with RayExecutor(num_cpus=2) as ex:
    remote = run_train_sweep(base, [0], [0.01, 2.0], out + "/ray", ex, tables=(trace, validation))
cols = ["seed", "lambda", "validation_cost_usd", "validation_cold_starts", "validation_idle_gb_s", "best"]
pd.testing.assert_frame_equal(local[cols], remote[cols])
assert all(a.startswith(out + "/ray/") for a in remote["artifact"])
print(len(remote), "equal")
"""


def test_ray_sweep_equals_local(tmp_path: Path) -> None:
    # A process of its own: Ray's driver replaces wasmtime's crash-signal handlers (test_sweep.py).
    done = subprocess.run([sys.executable, "-c", RAY_SWEEP, str(tmp_path.resolve())], capture_output=True,
                          text=True, timeout=280, check=False)
    assert done.returncode == 0 and done.stdout.strip().endswith("2 equal"), done.stderr[-3000:]


def test_profile_changes_the_environments_cold_starts(tmp_path: Path) -> None:
    from wlsim.profile import load_profile
    from wlsim.rl.env import RoutingEnv
    from wlsim.rl.train import _env_kwargs

    trace = two_functions()
    default = RoutingEnv(trace, episode_minutes=None, warmup_minutes=0, functions_per_episode=None)
    wl = RoutingEnv(trace, profile="wl", episode_minutes=None, warmup_minutes=0, functions_per_episode=None)
    assert default.config.cold_start.cold_start_ms("f", 128) == pytest.approx(314.0)   # container: 250 + 0.5/MB
    measured = load_profile("wl").cold_start.by_abi["wasi-command"]
    assert wl.config.cold_start.cold_start_ms("f", 128) == pytest.approx(measured.p50_ms)
    assert set(wl.config.cold_start.quantiles_ms) == {"f", "g"}             # per-spawn draws
    # train's env arguments carry the same SimConfig
    kwargs = _env_kwargs(_small_config(tmp_path, profile="wl"), trace)
    assert kwargs["config"].cold_start == wl.config.cold_start

    # an episode that kills every idle instance: every request is cold; the cold starts are
    # draws from the measured distribution (not one constant), new draws each episode
    def cold_starts(env: RoutingEnv, seed: int) -> np.ndarray:
        names = env.encoder.actions.names
        kill, spawn = names.index("kill"), names.index("spawn")
        env.reset(seed=seed)
        done = False
        while not done:
            mask = env.action_masks()
            action = kill if mask[kill] else spawn if mask[spawn] else int(np.flatnonzero(mask)[0])
            _, _, term, trunc, _ = env.step(action)
            done = term or trunc
        req = env._sim.result().requests
        return req.loc[req["cold_start_ms"] > 0, "cold_start_ms"].to_numpy()

    first, again = cold_starts(wl, 1), cold_starts(wl, 2)
    assert len(first) > 20 and len(np.unique(first)) > 10
    assert measured.quantiles_ms[0] <= first.min() and first.max() <= measured.quantiles_ms[-1]
    assert not np.array_equal(first[:20], again[:20])
    assert np.all(cold_starts(default, 1) == pytest.approx(314.0))


def test_bad_profile_is_a_clear_cli_error(trace_csv: Path, tmp_path: Path) -> None:
    from wlsim.rl.cli import app

    runner = CliRunner()
    unknown = runner.invoke(app, ["train", "--trace", str(trace_csv), "--profile", "nope", "--out",
                                  str(tmp_path / "a"), *SMALL])
    assert unknown.exit_code == 2 and "profile 'nope'" in unknown.output and "Traceback" not in unknown.output
    assert not (tmp_path / "a").exists()
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"name": "x", "source": "y", "cold_start": {"base_ms": "fast"}}')
    shape = runner.invoke(app, ["train", "--trace", str(trace_csv), "--profile", str(wrong), "--out",
                                str(tmp_path / "b"), *SMALL])
    assert shape.exit_code == 2 and "not a platform profile" in shape.output and "cold_start.base_ms" in shape.output
    assert not (tmp_path / "b").exists()
