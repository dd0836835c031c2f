"""The README's way to make the gymnasium env works in a fresh interpreter (nothing of wlsim
imported before): gymnasium imports the module named before the colon, which registers it."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SCRIPT = """
import sys
import gymnasium as gym
assert "wlsim.rl.env" not in sys.modules
env = gym.make("wlsim.rl.env:wlsim/Routing-v0", trace="traces/azure2021/Azure2021_200.csv")
observation, info = env.reset(seed=0)
print(type(env.unwrapped).__name__, env.spec.id)
"""


def test_gym_make_with_the_module_prefix_needs_no_import() -> None:
    ran = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=100)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["RoutingEnv", "wlsim/Routing-v0"]


SUBPROC_SCRIPT = """
import sys
import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv
assert "wlsim.rl.env" not in sys.modules
vec = make_vec_env("wlsim.rl.env:wlsim/Routing-v0", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv,
                   vec_env_kwargs={"start_method": "fork"},
                   env_kwargs={"trace": "traces/azure2021/Azure2021_200.csv", "profile": "wl"})
obs = vec.reset()
masks = vec.env_method("action_masks")
obs, rewards, dones, infos = vec.step(np.array([int(np.flatnonzero(m)[0]) for m in masks]))
cold = vec.get_attr("config")[0].cold_start
vec.close()
assert "wlsim.rl.env" not in sys.modules       # registered and built in the env processes only
print(obs.shape[0], len(cold.quantiles_ms) > 0, bool(np.isfinite(rewards).all()))
"""


def test_registered_env_in_sb3_subprocesses_with_a_profile() -> None:
    """SB3's own make_vec_env runs the registered id in subprocesses (what ``wl train --envs``
    does with its own thunks), keyword arguments such as ``profile`` passed through."""
    ran = subprocess.run([sys.executable, "-c", SUBPROC_SCRIPT], capture_output=True, text=True, timeout=100)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.split() == ["2", "True", "True"]
