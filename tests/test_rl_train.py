"""A short seeded training run learns what is clearly best on a tiny trace, and the
payload-aware duration predictor beats a payload-blind EWMA where payload drives duration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from policies.features import DurationPredictor
from wlsim.rl.env import RoutingEnv

pytestmark = pytest.mark.integration


def every_two_seconds(minutes: float = 10.0) -> pd.DataFrame:
    """One function, an arrival every 2 s, 100 ms executions, 128 MB: keeping an idle
    instance alive for >= 1.9 s makes every request but the first warm, at a tiny memory
    cost; killing it, or spawning while one is idle, costs a ~314 ms cold start."""
    n = int(minutes * 30)
    return pd.DataFrame({"app": "a", "function": "f", "arrival_ms": np.arange(n) * 2000.0,
                         "duration_ms": 100.0, "memory_mb": 128.0})


def _episode_return(env: RoutingEnv, choose, seed: int) -> tuple[float, int]:
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, r, term, trunc, _ = env.step(choose(obs, env.action_masks()))
        total += r
        done = term or trunc
    return total, env._sim.cold_starts


def test_short_training_beats_random_by_a_clear_margin(tmp_path: Path) -> None:
    import torch

    from wlsim.rl.train import TrainConfig, train

    torch.set_num_threads(1)
    trace = every_two_seconds()
    cfg = TrainConfig(trace="every-2s", steps=6_000, lam=0.01, seed=0, out=str(tmp_path / "run"),
                      episode_minutes=None, warmup_minutes=0, functions_per_episode=None, n_envs=2,
                      n_steps=256, batch_size=128, n_epochs=4, learning_rate=1e-3,
                      checkpoint_every=0, progress_bar=False, tensorboard=False)
    result = train(cfg, trace_table=trace)

    from policies.learned import LearnedPolicy

    policy = LearnedPolicy.load(result.artifact)
    env = RoutingEnv(trace, lam=0.01, episode_minutes=None, warmup_minutes=0, functions_per_episode=None)
    rng = np.random.default_rng(0)
    random_return, random_colds = _episode_return(env, lambda o, m: rng.choice(np.flatnonzero(m)), seed=0)
    learned_return, learned_colds = _episode_return(env, policy.act, seed=0)
    # Random pays a cold start at about half the routes and a third of the idles;
    # the learned policy should be nearly always warm.
    assert random_colds > 60
    assert learned_colds <= random_colds / 4, (learned_colds, random_colds)
    assert learned_return > 0.3 * random_return, (learned_return, random_return)  # both negative
    assert (result.out / "model.zip").is_file() and (result.out / "train.json").is_file()


def test_payload_aware_predictor_beats_payload_blind_ewma() -> None:
    from wlsim.traces import payload_driven

    trace = payload_driven(n_functions=5, hours=0.5, rate_per_s=2.0, seed=4)
    assert "payload_bytes" in trace
    aware_err, blind_err = [], []
    for _, rows in trace.groupby("function", observed=True):
        aware = DurationPredictor()
        blind = DurationPredictor()  # fed payload 0: never fits a slope, i.e. its EWMA
        for payload, duration in zip(rows["payload_bytes"].to_numpy(float), rows["duration_ms"].to_numpy(float)):
            aware_err.append(abs(aware.predict(payload) - duration))
            blind_err.append(abs(blind.predict(0.0) - duration))
            aware.update(duration, payload)
            blind.update(duration, 0.0)
    aware_mae, blind_mae = float(np.mean(aware_err)), float(np.mean(blind_err))
    assert len(aware_err) > 10_000
    assert aware_mae < 0.5 * blind_mae, (aware_mae, blind_mae)


def test_wl_train_and_evaluate_commands(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from wlsim.rl.cli import app

    trace_path = tmp_path / "every2s.csv"
    every_two_seconds(minutes=4).to_csv(trace_path, index=False)
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, [
        "train", "--trace", str(trace_path), "--algo", "maskable_ppo", "--steps", "256", "--lambda", "0.01",
        "--seed", "3", "--out", str(out), "--n-envs", "1", "--episode-minutes", "0",
        "--functions-per-episode", "0", "--checkpoint-every", "128", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (out / "artifact" / "spec.json").is_file() and (out / "artifact" / "weights.npz").is_file()
    assert list((out / "checkpoints").glob("maskable_ppo_*_steps.zip"))
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert "learned:" in result.output

    exported = runner.invoke(app, ["export", str(next((out / "checkpoints").glob("*.zip"))), str(tmp_path / "ck")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "ck" / "weights.npz").is_file()
    no_model = runner.invoke(app, ["export", str(tmp_path / "none.zip"), str(tmp_path / "ck2")])
    assert no_model.exit_code == 2 and "model file not found" in no_model.output

    bad = runner.invoke(app, ["train", "--trace", str(trace_path), "--algo", "a2c", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--algo must be one of" in bad.output
    assert not (tmp_path / "x").exists()
    missing = runner.invoke(app, ["train", "--trace", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "y")])
    assert missing.exit_code == 2 and "nope.csv" in missing.output

    ev = runner.invoke(app, ["evaluate", str(out / "artifact"), "--trace", str(trace_path), "--baselines",
                             "fixed_ttl,hybrid_histogram", "--out", str(tmp_path / "eval"), "--jobs", "1",
                             "--no-progress"])
    assert ev.exit_code == 0, ev.output
    assert "the goal vs hybrid_histogram" in ev.output
    assert (tmp_path / "eval" / "summary.csv").is_file() and (tmp_path / "eval" / "pareto.png").is_file()


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_unmasked_algorithms_train_and_export(algo: str, tmp_path: Path) -> None:
    """PPO and DQN ignore masks: they still train (invalid actions fall back and are
    penalised) and export an artifact the simulator runs."""
    import torch

    from policies.learned import LearnedPolicy
    from wlsim.engine import simulate
    from wlsim.rl.train import TrainConfig, train

    torch.set_num_threads(1)
    trace = every_two_seconds(minutes=4)
    result = train(TrainConfig(trace="every-2s", algo=algo, steps=600, out=str(tmp_path / algo), n_envs=1,
                               n_steps=256, episode_minutes=None, warmup_minutes=0, functions_per_episode=None,
                               checkpoint_every=0, progress_bar=False, tensorboard=False), trace_table=trace)
    policy = LearnedPolicy.load(result.artifact)
    assert policy.describe()["algo"] == algo
    assert len(simulate(trace, policy).requests) == len(trace)
    # the saved model exports again, its algorithm told from the model itself
    from wlsim.rl.export import export_checkpoint

    again = LearnedPolicy.load(export_checkpoint(result.model_path, tmp_path / "again"))
    assert again.describe()["algo"] == algo


def test_validation_callback_logs_metrics_and_selects_the_best_checkpoint(tmp_path: Path) -> None:
    import json

    import torch

    from wlsim.rl.train import TrainConfig, train

    torch.set_num_threads(1)
    trace = every_two_seconds(6.0)
    cfg = TrainConfig(trace="every-2s", steps=1_024, lam=0.01, seed=0, out=str(tmp_path / "run"),
                      episode_minutes=None, warmup_minutes=0, functions_per_episode=None, n_envs=2,
                      n_steps=128, batch_size=128, n_epochs=2, checkpoint_every=0, progress_bar=False,
                      tensorboard=True, eval_every=256)
    result = train(cfg, trace_table=trace, validation_table=every_two_seconds(3.0))
    summary = json.loads((tmp_path / "run" / "train.json").read_text())
    history = summary["validation"]
    assert len(history) >= 3
    assert {"cold_starts", "idle_gb_s", "weighted_cost_usd"} <= set(history[0])
    best = min(h["weighted_cost_usd"] for h in history)
    # the exported artifact is the best validation checkpoint, not the last network
    from wlsim.engine import simulate
    from wlsim.metrics import summarize

    cost = summarize(simulate(every_two_seconds(3.0), f"learned:{result.artifact}"))["weighted_cost_usd"]
    assert cost == pytest.approx(best)
    assert any((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
