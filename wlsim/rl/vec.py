"""The vectorised environments' wrapper for MaskablePPO (imports stable-baselines3: load it only
where training runs)."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper


class MasksFromInfo(VecEnvWrapper):
    """Answers MaskablePPO's per-step ``env_method("action_masks")`` with the masks the
    environments put in their step and reset infos (``RoutingEnv._info``): with SubprocVecEnv
    that is one round trip per step to each process instead of two. Any other method goes to
    the environments."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self._masks: list[Any] | None = None

    def reset(self) -> Any:
        obs = self.venv.reset()
        self._masks = [info["action_mask"] for info in self.venv.reset_infos]
        return obs

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        # An episode that ended was reset at once: its next mask is in the reset info.
        self._masks = [self.venv.reset_infos[i]["action_mask"] if done else info["action_mask"]
                       for i, (done, info) in enumerate(zip(dones, infos))]
        return obs, rewards, dones, infos

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        if method_name == "action_masks" and not method_args and not method_kwargs and self._masks is not None:
            return [self._masks[i] for i in self._get_indices(indices)]
        return self.venv.env_method(method_name, *method_args, indices=indices, **method_kwargs)
