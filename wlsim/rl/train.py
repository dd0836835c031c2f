"""Train a routing / keep-alive policy with stable-baselines3 and export it.

``train(...)`` builds ``n_envs`` RoutingEnv copies (seeded ``seed + i``, so each samples its
own episodes), stepped in this process (DummyVecEnv) or, with ``subproc``, each in a process
of its own (SubprocVecEnv: the environment is pure Python, so processes are what use more
than one core); trains MaskablePPO (sb3-contrib, uses the action masks), PPO or DQN (both
ignore masks: an invalid action falls back to the safe default and is penalised, see
wlsim.rl.env), logs to TensorBoard, saves checkpoints, and at the end writes the
framework-free artifact (policies.learned) to ``out/artifact``.

``profile`` (a bundled name such as ``wl`` or a profile file, wlsim.profile) is the platform
the environment models: its cold starts, per function and per spawn
(``wlsim.profile.trace_sim_config``, the same SimConfig ``wl sim replay --profile`` uses);
None = the simulator's default (``container``). The validation slice is simulated on it too.

Output folder layout:
  out/train.json        the arguments, timings and episode statistics
  out/tensorboard/      TensorBoard logs (``tensorboard --logdir out/tensorboard``); without
                        TensorBoard nothing is logged to disk (sb3 would otherwise make
                        a ``SB3-<date>`` folder in the temporary directory)
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
    subproc: bool = False           # each of the n_envs environments in a process of its own
    profile: str | None = None      # platform profile (wlsim.profile): bundled name or file

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {', '.join(ALGOS)}, got {self.algo!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.lam >= 0:
            raise ValueError(f"lambda must be >= 0, got {self.lam}")
        if self.n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {self.n_envs}")
        if self.profile is not None:
            from wlsim.profile import load_profile

            load_profile(self.profile)   # an unknown name or a bad file: ProfileError before any work


@dataclass
class TrainResult:
    out: Path
    artifact: Path
    model_path: Path
    wall_s: float
    steps: int
    episodes: int
    mean_episode_reward: float | None


def sim_config(cfg: TrainConfig, trace_table: Any) -> Any:
    """The SimConfig the environment (and the validation) runs: the profile's, for the trace's
    functions (None without a profile: the simulator's default)."""
    if cfg.profile is None:
        return None
    from wlsim.profile import trace_sim_config

    return trace_sim_config(cfg.profile, trace_table["function"].unique(), seed=cfg.seed)


def _env_kwargs(cfg: TrainConfig, trace_table: Any = None) -> dict[str, Any]:
    from policies.encoder import EncoderSpec

    return {"lam": cfg.lam, "encoder": EncoderSpec(**cfg.encoder) if cfg.encoder else None,
            "config": sim_config(cfg, trace_table),
            "episode_minutes": cfg.episode_minutes, "warmup_minutes": cfg.warmup_minutes,
            "functions_per_episode": cfg.functions_per_episode, "max_episode_steps": cfg.max_episode_steps}


def make_encoder(cfg: TrainConfig) -> Any:
    """The environments' feature encoder (built here too: with subprocesses the environments
    are out of reach, and the export needs only its spec and sizes)."""
    from policies.encoder import EncoderSpec, FeatureEncoder

    return FeatureEncoder(EncoderSpec(**cfg.encoder) if cfg.encoder else None)


def make_vec_env(cfg: TrainConfig, trace_table: Any) -> Any:
    """``n_envs`` seeded, Monitor-wrapped RoutingEnvs: in this process (DummyVecEnv) or, with
    ``cfg.subproc``, one process each (SubprocVecEnv). The processes fork when that is safe
    (wlsim.compare's rule: no other thread here), so they start at once with the trace and the
    libraries already loaded; else forkserver, where each imports stable-baselines3 and torch
    (seconds each) and gets the trace pickled."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from wlsim.rl.vec import MasksFromInfo

    kwargs = _env_kwargs(cfg, trace_table)
    thunks = [_EnvThunk(trace_table, kwargs, cfg.seed * 1000 + i) for i in range(cfg.n_envs)]
    if cfg.subproc:
        from wlsim.compare import _mp_context

        vec = SubprocVecEnv(thunks, start_method=_mp_context().get_start_method())
    else:
        vec = DummyVecEnv(thunks)
    vec.seed(cfg.seed)
    return MasksFromInfo(vec)


class _EnvThunk:
    """Builds one environment (a picklable object rather than a closure, so a subprocess gets
    the trace table and the arguments, not this module's state)."""

    def __init__(self, trace_table: Any, kwargs: dict[str, Any], seed: int) -> None:
        self.trace_table, self.kwargs, self.seed = trace_table, kwargs, seed

    def __call__(self) -> Any:
        from stable_baselines3.common.monitor import Monitor

        from wlsim.rl.env import RoutingEnv

        env = Monitor(RoutingEnv(self.trace_table, **self.kwargs))
        env.reset(seed=self.seed)
        return env


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


VALIDATION_KEYS = ("cold_starts", "idle_gb_s", "weighted_cost_usd", "avoidable_cost_usd", "wait_p999_ms")


def validation_metrics(artifact: Path, table: Any, config: Any = None) -> dict[str, float]:
    """The artifact's metrics on a validation slice (``config``: the training's SimConfig)."""
    from policies.learned import LearnedPolicy
    from wlsim.engine import simulate
    from wlsim.metrics import summarize

    s = summarize(simulate(table, LearnedPolicy.load(artifact), config))
    return {k: float(s[k]) for k in VALIDATION_KEYS}


def make_validation_callback(encoder: Any, table: Any, every: int, out: Path, config: Any = None) -> Any:
    """An sb3 callback: every ``every`` environment steps, export the network, simulate
    ``table`` with it (on ``config``), log the metrics and keep the best export in ``out/best``."""
    import shutil

    from stable_baselines3.common.callbacks import BaseCallback

    from wlsim.rl.export import export_model

    keys = VALIDATION_KEYS

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
            row = {"steps": float(self.num_timesteps), **validation_metrics(latest, table, config)}
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


def load_training_trace(cfg: TrainConfig) -> Any:
    """The trace (its ``start_minute..end_minute``) the environments sample episodes from."""
    from wlsim.rl.env import load_trace

    return load_trace(cfg.trace, seed=cfg.trace_seed, start_minute=cfg.start_minute, end_minute=cfg.end_minute)


def load_validation(cfg: TrainConfig) -> Any:
    """The validation slice of the trace (None without ``validation_minutes``)."""
    from wlsim.rl.env import load_trace

    if cfg.validation_minutes is None:
        return None
    return load_trace(cfg.trace, seed=cfg.trace_seed, start_minute=cfg.validation_minutes[0],
                      end_minute=cfg.validation_minutes[1])


def _logger(cfg: TrainConfig, tb_dir: str | None) -> Any:
    """TensorBoard under ``tb_dir`` (``<algo>_<n>``, as sb3 names runs), else a logger that
    writes nothing: sb3's own default would make a ``SB3-<date>`` folder in /tmp."""
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.utils import configure_logger

    if tb_dir is None:
        return Logger(folder=None, output_formats=[])
    return configure_logger(0, tb_dir, cfg.algo)


def train(cfg: TrainConfig, trace_table: Any | None = None, validation_table: Any | None = None) -> TrainResult:
    """Train, checkpoint and export; see the module docstring for the output folder."""
    import torch
    from stable_baselines3.common.callbacks import CheckpointCallback

    from wlsim.rl.export import ENCODER_FILE, export_model

    torch.set_num_threads(max(1, cfg.threads))
    if trace_table is None:
        trace_table = load_training_trace(cfg)
    if validation_table is None and cfg.eval_every > 0:
        validation_table = load_validation(cfg)
    if cfg.eval_every > 0 and validation_table is None:
        raise ValueError("eval_every needs a validation slice (validation_minutes)")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = make_encoder(cfg)
    # The encoder spec beside the checkpoints, so any checkpoint can be exported later.
    (out / ENCODER_FILE).write_text(json.dumps(encoder.spec.to_dict(), indent=2) + "\n")
    env = make_vec_env(cfg, trace_table)
    try:   # SubprocVecEnv's processes end with close(), also on an error or Ctrl-C
        tb_dir = str(out / "tensorboard") if cfg.tensorboard else None
        model = build_model(cfg, env, tb_dir)
        model.set_logger(_logger(cfg, tb_dir))
        callbacks = []
        if cfg.checkpoint_every > 0:
            callbacks.append(CheckpointCallback(save_freq=max(1, cfg.checkpoint_every // cfg.n_envs),
                                                save_path=str(out / "checkpoints"), name_prefix=cfg.algo))
        validation = None
        if cfg.eval_every > 0:
            validation = make_validation_callback(encoder, validation_table, cfg.eval_every, out / "validation",
                                                  sim_config(cfg, validation_table))
            callbacks.append(validation)
        started = time.perf_counter()
        model.learn(total_timesteps=cfg.steps, callback=callbacks or None, progress_bar=cfg.progress_bar,
                    tb_log_name=cfg.algo)
        wall_s = time.perf_counter() - started
        model_path = out / "model.zip"
        model.save(model_path)

        rewards = [ep["r"] for ep in model.ep_info_buffer] if model.ep_info_buffer else []
        episodes = sum(len(r) for r in env.env_method("get_episode_rewards"))   # each env's Monitor
    finally:
        env.close()
    meta = {
        "algo": cfg.algo, "steps": cfg.steps, "lambda_gb_s": cfg.lam, "seed": cfg.seed, "profile": cfg.profile,
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
    return TrainResult(out=out, artifact=artifact, model_path=model_path, wall_s=wall_s, steps=cfg.steps,
                       episodes=episodes, mean_episode_reward=summary["mean_recent_episode_reward"])

