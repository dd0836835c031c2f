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
