"""Train a routing / keep-alive policy with stable-baselines3 and export it.

``train(...)`` builds ``n_envs`` RoutingEnv copies (seeded), trains MaskablePPO (sb3-contrib,
uses the action masks), PPO or DQN (both ignore masks: an invalid action falls back to the
safe default and is penalised, see wlsim.rl.env), logs to TensorBoard, saves checkpoints,
and at the end writes the framework-free artifact (policies.learned) to ``out/artifact``.

Output folder layout:
  out/train.json        the arguments, timings and episode statistics
  out/tensorboard/      TensorBoard logs (``tensorboard --logdir out/tensorboard``)
  out/checkpoints/      sb3 checkpoints every ``checkpoint_every`` steps
  out/model.zip         the final sb3 model
  out/encoder.json      the encoder spec (export any checkpoint: ``wl-rl export``)
  out/artifact/         spec.json + weights.npz, load with ``learned:out/artifact``

With ``eval_every`` > 0 and a validation slice (``validation_minutes`` of the trace, or a
``validation_table``), an evaluation callback exports the current network every
``eval_every`` steps, simulates the validation slice with it and logs its cold starts, idle
GB-s, weighted and avoidable cost and p99.9 wait to TensorBoard (``validation/...``) and to
``train.json``; ``out/artifact`` is then the checkpoint with the lowest validation cost (PPO's
successive checkpoints swing widely along the cold-start / idle-memory curve), not the last.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ALGOS = ("maskable_ppo", "ppo", "dqn")


@dataclass
class TrainConfig:
    trace: str
    algo: str = "maskable_ppo"
    steps: int = 200_000
    lam: float = 0.0166667
    seed: int = 0
    out: str = "runs/learned"
    start_minute: int | None = None
    end_minute: int | None = None
    trace_seed: int = 0
    episode_minutes: float | None = 60.0
    warmup_minutes: float = 30.0
    functions_per_episode: int | None = 1
    max_episode_steps: int = 2048
    n_envs: int = 4
    net_arch: tuple[int, ...] = (64, 64)
    learning_rate: float = 3e-4
    n_steps: int = 512              # (Maskable)PPO rollout length per env
    batch_size: int = 256
    n_epochs: int = 5
    gamma: float = 0.99
    ent_coef: float = 0.01
    encoder: dict[str, Any] = field(default_factory=dict)   # EncoderSpec overrides
    checkpoint_every: int = 50_000
    progress_bar: bool = True
    tensorboard: bool = True
    threads: int = 1                # torch threads; 1 is fastest for a 64x64 MLP
    validation_minutes: tuple[int, int] | None = None   # e.g. (601, 720): select checkpoints there
    eval_every: int = 0             # steps between validation evaluations (0 = none)

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {', '.join(ALGOS)}, got {self.algo!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.lam >= 0:
            raise ValueError(f"lambda must be >= 0, got {self.lam}")
        if self.n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {self.n_envs}")


@dataclass
class TrainResult:
    out: Path
    artifact: Path
    model_path: Path
    wall_s: float
    steps: int
    episodes: int
    mean_episode_reward: float | None


def _env_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    from policies.encoder import EncoderSpec

    return {"lam": cfg.lam, "encoder": EncoderSpec(**cfg.encoder) if cfg.encoder else None,
            "episode_minutes": cfg.episode_minutes, "warmup_minutes": cfg.warmup_minutes,
            "functions_per_episode": cfg.functions_per_episode, "max_episode_steps": cfg.max_episode_steps}


def make_vec_env(cfg: TrainConfig, trace_table: Any) -> Any:
    """``n_envs`` seeded, Monitor-wrapped RoutingEnvs in one process (the env is pure Python
    and the machine small, so subprocesses buy little)."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from wlsim.rl.env import RoutingEnv

    kwargs = _env_kwargs(cfg)

    def make(i: int) -> Any:
        def thunk() -> Any:
            env = Monitor(RoutingEnv(trace_table, **kwargs))
            env.reset(seed=cfg.seed * 1000 + i)
            return env
        return thunk

    vec = DummyVecEnv([make(i) for i in range(cfg.n_envs)])
    vec.seed(cfg.seed)
    return vec


def build_model(cfg: TrainConfig, env: Any, tb_dir: str | None) -> Any:
    import torch

    policy_kwargs: dict[str, Any] = {"net_arch": list(cfg.net_arch)}
    common: dict[str, Any] = {"learning_rate": cfg.learning_rate, "gamma": cfg.gamma, "seed": cfg.seed,
                              "verbose": 0, "tensorboard_log": tb_dir, "device": "cpu"}
    if cfg.algo == "maskable_ppo":
        from sb3_contrib import MaskablePPO

        policy_kwargs["activation_fn"] = torch.nn.Tanh
        return MaskablePPO("MlpPolicy", env, n_steps=cfg.n_steps, batch_size=cfg.batch_size,
                           n_epochs=cfg.n_epochs, ent_coef=cfg.ent_coef, policy_kwargs=policy_kwargs, **common)
    if cfg.algo == "ppo":
        from stable_baselines3 import PPO

        policy_kwargs["activation_fn"] = torch.nn.Tanh
        return PPO("MlpPolicy", env, n_steps=cfg.n_steps, batch_size=cfg.batch_size,
                   n_epochs=cfg.n_epochs, ent_coef=cfg.ent_coef, policy_kwargs=policy_kwargs, **common)
    from stable_baselines3 import DQN

    return DQN("MlpPolicy", env, batch_size=cfg.batch_size, buffer_size=min(200_000, max(10_000, cfg.steps)),
               learning_starts=min(5_000, cfg.steps // 10), exploration_fraction=0.3,
               train_freq=4, target_update_interval=2_000, policy_kwargs=policy_kwargs, **common)


def make_validation_callback(encoder: Any, table: Any, every: int, out: Path) -> Any:
    """An sb3 callback: every ``every`` environment steps, export the network, simulate
    ``table`` with it, log the metrics and keep the best export in ``out/best``."""
    import shutil

    from stable_baselines3.common.callbacks import BaseCallback

    from policies.learned import LearnedPolicy
    from wlsim.engine import simulate
    from wlsim.metrics import summarize
    from wlsim.rl.export import export_model

    keys = ("cold_starts", "idle_gb_s", "weighted_cost_usd", "avoidable_cost_usd", "wait_p999_ms")

    class _Validation(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.history: list[dict[str, float]] = []
            self.best_cost = float("inf")
            self.best: Path | None = None
            self._next = every

        def _on_step(self) -> bool:
            if self.num_timesteps < self._next:
                return True
            self._next += every
            latest = export_model(self.model, encoder, out / "latest", training={"steps": self.num_timesteps})
            s = summarize(simulate(table, LearnedPolicy.load(latest)))
            row = {"steps": float(self.num_timesteps), **{k: float(s[k]) for k in keys}}
            self.history.append(row)
            for k in keys:
                self.logger.record(f"validation/{k}", row[k])
            self.logger.dump(self.num_timesteps)
            if row["weighted_cost_usd"] < self.best_cost:
                self.best_cost = row["weighted_cost_usd"]
                if (out / "best").exists():
                    shutil.rmtree(out / "best")
                shutil.copytree(latest, out / "best")
                self.best = out / "best"
            return True

    return _Validation()


def train(cfg: TrainConfig, trace_table: Any | None = None, validation_table: Any | None = None) -> TrainResult:
    """Train, checkpoint and export; see the module docstring for the output folder."""
    import torch
    from stable_baselines3.common.callbacks import CheckpointCallback

    from wlsim.rl.env import load_trace
    from wlsim.rl.export import export_model

    torch.set_num_threads(max(1, cfg.threads))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if trace_table is None:
        trace_table = load_trace(cfg.trace, seed=cfg.trace_seed, start_minute=cfg.start_minute,
                                 end_minute=cfg.end_minute)
    env = make_vec_env(cfg, trace_table)
    from wlsim.rl.export import ENCODER_FILE

    # The encoder spec beside the checkpoints, so any checkpoint can be exported later.
    (out / ENCODER_FILE).write_text(json.dumps(env.envs[0].unwrapped.encoder.spec.to_dict(), indent=2) + "\n")
    tb_dir = str(out / "tensorboard") if cfg.tensorboard else None
    model = build_model(cfg, env, tb_dir)
    callbacks = []
    if cfg.checkpoint_every > 0:
        callbacks.append(CheckpointCallback(save_freq=max(1, cfg.checkpoint_every // cfg.n_envs),
                                            save_path=str(out / "checkpoints"), name_prefix=cfg.algo))
    validation = None
    if cfg.eval_every > 0:
        if validation_table is None and cfg.validation_minutes is not None:
            validation_table = load_trace(cfg.trace, seed=cfg.trace_seed, start_minute=cfg.validation_minutes[0],
                                          end_minute=cfg.validation_minutes[1])
        if validation_table is None:
            raise ValueError("eval_every needs a validation slice (validation_minutes)")
        validation = make_validation_callback(env.envs[0].unwrapped.encoder, validation_table, cfg.eval_every,
                                              out / "validation")
        callbacks.append(validation)
    started = time.perf_counter()
    model.learn(total_timesteps=cfg.steps, callback=callbacks or None, progress_bar=cfg.progress_bar,
                tb_log_name=cfg.algo)
    wall_s = time.perf_counter() - started
    model_path = out / "model.zip"
    model.save(model_path)

    rewards = [ep["r"] for ep in model.ep_info_buffer] if model.ep_info_buffer else []
    episodes = sum(len(m.get_episode_rewards()) for m in _monitors(env))
    encoder = env.envs[0].unwrapped.encoder
    meta = {
        "algo": cfg.algo, "steps": cfg.steps, "lambda_gb_s": cfg.lam, "seed": cfg.seed,
        "trace": str(cfg.trace), "start_minute": cfg.start_minute, "end_minute": cfg.end_minute,
        "episode_minutes": cfg.episode_minutes, "functions_per_episode": cfg.functions_per_episode,
        "net_arch": list(cfg.net_arch), "wall_s": round(wall_s, 1), "episodes": episodes,
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    artifact = export_model(model, encoder, out / "artifact", training=meta)
    if validation is not None and validation.best is not None:
        import shutil

        shutil.rmtree(artifact)
        shutil.copytree(validation.best, artifact)        # the checkpoint chosen on validation
        meta["selected_on_validation"] = {"cost_usd": validation.best_cost}
    summary = {"config": asdict(cfg), "wall_s": wall_s, "episodes": episodes,
               "validation": validation.history if validation is not None else None,
               "mean_recent_episode_reward": (sum(rewards) / len(rewards)) if rewards else None,
               "steps_per_s": cfg.steps / wall_s if wall_s > 0 else None}
    (out / "train.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    env.close()
    return TrainResult(out=out, artifact=artifact, model_path=model_path, wall_s=wall_s, steps=cfg.steps,
                       episodes=episodes, mean_episode_reward=summary["mean_recent_episode_reward"])


def _monitors(vec: Any) -> list[Any]:
    from stable_baselines3.common.monitor import Monitor

    out = []
    for e in vec.envs:
        while not isinstance(e, Monitor) and hasattr(e, "env"):
            e = e.env
        if isinstance(e, Monitor):
            out.append(e)
    return out

