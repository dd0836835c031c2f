"""The RL environment passes gymnasium's and Stable-Baselines3's env checkers. An integration
test: SB3's checker imports the training stack (stable_baselines3, torch), seconds of import that
the fast unit layer (tests/test_rl_env.py: determinism, masks, rewards) does not need."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pandas as pd
import pytest

import wlsim.rl.env  # noqa: F401  (registers wlsim/Routing-v0)
from policies.encoder import FeatureEncoder
from wlsim.rl import ENV_ID
from wlsim.traces import poisson

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trace() -> pd.DataFrame:
    # tests/test_rl_env.py's trace: 4 functions, 20 minutes, rates from sparse to busy
    return poisson(n_functions=4, hours=20 / 60, rate_per_s=[0.05, 0.3, 2.0, 6.0], seed=3)


def test_gymnasium_and_sb3_env_checkers_pass(trace: pd.DataFrame) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(ENV_ID, trace=trace, episode_minutes=5, warmup_minutes=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)
    assert env.unwrapped.observation_space.shape == (FeatureEncoder().n_features,)
