"""Learned routing: a gymnasium environment over the simulator, training with
stable-baselines3, export to the numpy artifact ``policies.learned`` runs.

Kept import-free so ``wl`` starts fast; ``import wlsim.rl.env`` registers the environment
``wlsim/Routing-v0`` with gymnasium (or ``gym.make("wlsim.rl.env:wlsim/Routing-v0", ...)``).
"""

ENV_ID = "wlsim/Routing-v0"
