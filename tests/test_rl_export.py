"""The exported artifact: numpy and torch pick the same action, it loads through the
policy registry and runs in the simulator, and a broken artifact gives a clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from policies.learned import ArtifactError, LearnedPolicy
from policies.registry import load_policy
from wlsim.rl.env import RoutingEnv
from wlsim.rl.export import export_model
from wlsim.traces import poisson

pytestmark = pytest.mark.integration  # trains a model (SB3) to export


@pytest.fixture(scope="module")
def trace() -> pd.DataFrame:
    return poisson(n_functions=3, hours=15 / 60, rate_per_s=[0.1, 0.5, 3.0], seed=11)


@pytest.fixture(scope="module")
def samples(trace: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """1,000 (observation, mask) pairs from random masked rollouts: real decision points."""
    env = RoutingEnv(trace, episode_minutes=5, warmup_minutes=1)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    observations, masks = [], []
    while len(observations) < 1000:
        mask = env.action_masks()
        observations.append(obs)
        masks.append(mask)
        obs, _, term, trunc, _ = env.step(rng.choice(np.flatnonzero(mask)))
        if term or trunc:
            obs, _ = env.reset()
    return np.array(observations), np.array(masks)


@pytest.fixture(scope="module")
def maskable_artifact(trace: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    import torch
    from sb3_contrib import MaskablePPO

    torch.set_num_threads(1)  # a 64x64 MLP: threads only add overhead on a small machine
    env = RoutingEnv(trace, episode_minutes=5, warmup_minutes=1)
    model = MaskablePPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=2, seed=0, device="cpu")
    model.learn(512)  # trained a little, so the weights are not just the initialisation
    out = tmp_path_factory.mktemp("artifact") / "maskable"
    export_model(model, env.encoder, out, training={"algo": "maskable_ppo", "steps": 512})
    return model, out


def test_numpy_and_torch_pick_the_same_action_maskable_ppo(maskable_artifact, samples) -> None:
    model, path = maskable_artifact
    obs, masks = samples
    policy = LearnedPolicy.load(path)
    torch_actions, _ = model.predict(obs, action_masks=masks, deterministic=True)
    numpy_actions = np.array([policy.act(o, m) for o, m in zip(obs, masks)])
    assert len(obs) == 1000
    assert np.array_equal(torch_actions, numpy_actions)
    assert all(masks[i, a] for i, a in enumerate(numpy_actions))
    # The logits themselves agree to float32 precision.
    import torch

    with torch.no_grad():
        t_obs = torch.as_tensor(obs)
        latent = model.policy.mlp_extractor.forward_actor(model.policy.extract_features(t_obs))
        t_logits = model.policy.action_net(latent).numpy()
    np.testing.assert_allclose(policy.logits(obs), t_logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_numpy_and_torch_pick_the_same_action_ppo_dqn(algo, trace, samples, tmp_path) -> None:
    from stable_baselines3 import DQN, PPO

    env = RoutingEnv(trace, episode_minutes=5, warmup_minutes=1)
    model = (PPO if algo == "ppo" else DQN)("MlpPolicy", env, seed=1, device="cpu")
    export_model(model, env.encoder, tmp_path / algo)
    policy = LearnedPolicy.load(tmp_path / algo)
    obs, _ = samples
    torch_actions, _ = model.predict(obs, deterministic=True)
    all_valid = np.ones(env.encoder.n_actions, dtype=bool)
    numpy_actions = np.array([policy.act(o, all_valid) for o in obs])
    assert np.array_equal(torch_actions, numpy_actions)
    spec = json.loads((tmp_path / algo / "spec.json").read_text())
    assert spec["network"]["output"] == ("q_values" if algo == "dqn" else "logits")
    assert [layer["activation"] for layer in spec["network"]["layers"]] == (
        ["relu", "relu", "linear"] if algo == "dqn" else ["tanh", "tanh", "linear"])


def test_learned_policy_runs_in_the_simulator(maskable_artifact, trace) -> None:
    from wlsim.engine import simulate
    from wlsim.metrics import summarize

    _, path = maskable_artifact
    policy = load_policy(f"learned:{path}")
    assert isinstance(policy, LearnedPolicy)
    result = simulate(trace, policy)
    m = summarize(result)
    assert m["served"] == len(trace) and m["rejected"] == 0
    assert policy._decisions > len(trace)  # it decided routes and idles (not only forced points)
    assert result.params["name"] == "learned" and result.params["steps"] == 512
    # The registry spec string works the same and is deterministic.
    again = summarize(simulate(trace, f"learned:{path}"))
    assert again["cold_starts"] == m["cold_starts"] and again["idle_gb_s"] == m["idle_gb_s"]


def test_learned_policy_needs_no_torch(maskable_artifact) -> None:
    import subprocess
    import sys

    _, path = maskable_artifact
    code = ("import sys; from policies.learned import LearnedPolicy; "
            f"p = LearnedPolicy.load({str(path)!r}); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(p.encoder.n_actions)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == 16


def _broken(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_broken_artifacts_give_clear_errors(maskable_artifact, tmp_path) -> None:
    _, good = maskable_artifact
    with pytest.raises(ArtifactError, match="not found"):
        LearnedPolicy.load(tmp_path / "nope")
    missing = _broken(good, tmp_path / "missing")
    (missing / "weights.npz").unlink()
    with pytest.raises(ArtifactError, match=r"missing weights\.npz"):
        LearnedPolicy.load(missing)
    bad_json = _broken(good, tmp_path / "badjson")
    (bad_json / "spec.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"spec\.json: not valid JSON"):
        LearnedPolicy.load(bad_json)
    corrupt = _broken(good, tmp_path / "corrupt")
    data = bytearray((corrupt / "weights.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / "weights.npz").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 does not match"):
        LearnedPolicy.load(corrupt)
    wrong_shape = _broken(good, tmp_path / "shape")
    spec = json.loads((wrong_shape / "spec.json").read_text())
    spec["encoder"]["k"] = 2  # the network was built for K=4 inputs
    spec["actions"] = [a for a in spec["actions"] if a not in ("assign_2", "assign_3")]
    (wrong_shape / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ArtifactError, match="layer 0"):
        LearnedPolicy.load(wrong_shape)
    not_ours = _broken(good, tmp_path / "format")
    spec = json.loads((not_ours / "spec.json").read_text())
    spec["format"] = "something-else"
    (not_ours / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ArtifactError, match="format"):
        LearnedPolicy.load(not_ours)
    from policies.registry import PolicySpecError

    with pytest.raises(PolicySpecError, match="takes no parameters"):   # the registry's spec error
        load_policy(f"learned:{good}:temperature=2")


def test_bundled_example_artifact_loads_and_runs() -> None:
    """examples/learned/azure40-ppo (committed) still matches the encoder and runs in the simulator."""
    from wlsim.engine import simulate
    from wlsim.metrics import summarize
    from wlsim.traces import read_trace

    root = Path(__file__).resolve().parent.parent
    policy = load_policy(f"learned:{root / 'examples/learned/azure40-ppo'}")
    assert policy.describe()["algo"] == "maskable_ppo"
    trace = read_trace(root / "traces/azure2021/Azure2021_200.csv")
    m = summarize(simulate(trace, policy))
    assert m["served"] == len(trace) == 199
    assert 0 < m["cold_starts"] < len(trace)
