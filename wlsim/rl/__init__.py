"""Learned routing: a gymnasium environment over the simulator, training with
stable-baselines3, export to the numpy artifact ``policies.learned`` runs.

Modules: ``env`` (the environment; ``profile=`` picks the platform it models), ``sim`` (the
engine's step API plus reward deltas), ``train`` (sb3 training: environments in this process or
one subprocess each, validation-selected export, ``wl train``), ``sweep`` (seeds x lambda as
local processes or Ray tasks, ranked on a validation slice, ``wl rl train ... sweep``),
``evaluate`` (against the built-ins), ``export`` (sb3 -> numpy artifact), ``imitate`` (the
imitation-learned keep-alive policy), ``cli``.

Kept import-free so ``wl`` starts fast; ``import wlsim.rl.env`` registers the environment
``wlsim/Routing-v0`` with gymnasium (or ``gym.make("wlsim.rl.env:wlsim/Routing-v0", ...)``).
"""

ENV_ID = "wlsim/Routing-v0"
