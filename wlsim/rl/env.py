"""``wlsim/Routing-v0``: the routing / keep-alive decisions of the simulator as a gymnasium
environment. Importing this module registers it:

    import gymnasium as gym
    import wlsim.rl.env  # noqa: F401  (registers wlsim/Routing-v0)
    env = gym.make("wlsim/Routing-v0", trace="traces/azure2019/40", end_minute=720, lam=0.01)

One step is one decision point of the engine (wlsim.engine's step API) that has a real
choice: a route at an arrival with at least one instance to queue on, or an on_idle
about an instance with nothing queued. Points with a single valid action (spawn when
the function has no instance to use; invoke when requests are queued on the freed
instance; kill when a keep-alive ran out, see EncoderSpec.reconsider_on_expiry) are
answered by the environment without a step. Observations, masks and the action map
come from ``policies.encoder.FeatureEncoder``, the same encoder the exported
``LearnedPolicy`` uses in the simulator and the live router.

Reward of a step: minus the added latency (queueing wait + cold start, in seconds, times
``latency_weight``) accrued since the previous step by all requests (those still waiting
included, so piling requests onto a busy instance costs at once), minus ``lam``
times the idle memory GB-s accrued since the previous step (GB = 1024 MB). ``lam`` is in
latency-seconds per GB-s: the project's cost weights (CostWeights) price 1 GB-s at
0.0167 s of latency, so ``lam=0.0167`` optimises their weighted cost; a sweep of ``lam``
draws the cold-start / idle-memory Pareto front.

Episodes: a window of ``episode_minutes`` starting at a seeded random minute of the
trace, restricted to ``functions_per_episode`` seeded random functions (None = all).
Functions do not interact unless memory is scarce, so one function per episode gives the
agent its own decisions' consequences within a few steps instead of interleaved with
39 other functions'. The ``warmup_minutes`` before the window are simulated under
``warmup_policy`` (a policy spec; default a 10-minute keep-alive; not steps) so the online
statistics the features read are warm.
An episode ends when the window's trace is exhausted (terminated) or after
``max_episode_steps`` steps (truncated).

The platform: ``config`` (a SimConfig) or ``profile`` (a platform profile, wlsim.profile: a
bundled name such as ``wl`` or a file; its cold starts for the trace's functions, as ``wl sim
replay --profile`` uses them). Where the profile measured a cold-start distribution, each
episode draws its spawns' cold starts with a seed of its own (from the episode's seed).

Actions the mask forbids (possible with plain PPO or DQN, which ignore masks) are
replaced by the safe fallback (route: the warmest idle instance, else the instance with
the shortest expected wait, else spawn; idle: invoke if queued, else kill) and cost
``invalid_action_penalty`` of reward, so those algorithms learn the masks from the reward.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from policies.encoder import EncoderSpec, FeatureEncoder
from policies.interface import INVOKE, KILL, SPAWN, Assign, KeepAlive, Policy
from policies.registry import load_policy
from wlsim.config import SimConfig
from wlsim.rl import ENV_ID
from wlsim.rl.sim import StepSim

MB_PER_GB = 1024.0
WARMUP_TTL_MS = 600_000.0
# CostWeights' price of 1 GB-s in seconds of latency: 0.0000166667 / 0.001.
COST_PARITY_LAMBDA = 0.0166667


class _WarmupTTL(Policy):
    """The warm-up's default decider: the warmest idle instance, else spawn; keep alive
    10 minutes (Lambda-like). Self-contained so the environment does not depend on the
    built-in policy modules."""

    name = "warmup_ttl"

    def on_idle(self, now_ms: float, instance: Any, fn: Any) -> Any:
        if instance.queue:
            return INVOKE
        if instance.keepalive_until_ms is not None and instance.keepalive_until_ms <= now_ms:
            return KILL
        return KeepAlive(WARMUP_TTL_MS)


def load_trace(trace: pd.DataFrame | str | os.PathLike, *, seed: int = 0, start_minute: int | None = None,
               end_minute: int | None = None) -> pd.DataFrame:
    """A trace table from a DataFrame or anything ``wlsim.traces.read_trace`` reads."""
    if isinstance(trace, pd.DataFrame):
        if start_minute is not None or end_minute is not None:
            raise ValueError("start_minute/end_minute apply to a trace path, not a DataFrame")
        return trace
    from wlsim.traces import read_trace

    return read_trace(trace, seed=seed, start_minute=start_minute, end_minute=end_minute)


class RoutingEnv(gym.Env):
    """See the module docstring."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, trace: pd.DataFrame | str | os.PathLike, *, lam: float = COST_PARITY_LAMBDA,
                 config: SimConfig | None = None, encoder: EncoderSpec | dict[str, Any] | None = None,
                 episode_minutes: float | None = 60.0, warmup_minutes: float = 30.0,
                 functions_per_episode: int | None = 1, max_episode_steps: int = 4096,
                 latency_weight: float = 1.0, invalid_action_penalty: float = 1.0,
                 warmup_policy: str | None = None, trace_seed: int = 0,
                 start_minute: int | None = None, end_minute: int | None = None,
                 profile: str | os.PathLike | None = None) -> None:
        super().__init__()
        if not (lam >= 0 and np.isfinite(lam)):
            raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
        if episode_minutes is not None and not episode_minutes > 0:
            raise ValueError(f"episode_minutes must be > 0 (or None for the whole trace), got {episode_minutes!r}")
        if functions_per_episode is not None and functions_per_episode < 1:
            raise ValueError(f"functions_per_episode must be >= 1 or None, got {functions_per_episode!r}")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps!r}")
        self.trace = load_trace(trace, seed=trace_seed, start_minute=start_minute, end_minute=end_minute)
        if len(self.trace) == 0:
            raise ValueError("trace has no invocations")
        self.lam = float(lam)
        if profile is not None:
            if config is not None:
                raise ValueError("give config or profile, not both")
            from wlsim.profile import trace_sim_config

            config = trace_sim_config(profile, self.trace["function"].unique())
        self.config = config or SimConfig()
        # Per-spawn cold-start draws: a fresh draw seed per episode, else every episode of a
        # function would see the same sequence of cold starts.
        self._draws = bool(self.config.cold_start.quantiles_ms)
        if isinstance(encoder, dict):
            encoder = EncoderSpec.from_dict(encoder)
        self.encoder = FeatureEncoder(encoder)
        self.episode_ms = None if episode_minutes is None else float(episode_minutes) * 60_000.0
        self.warmup_ms = max(0.0, float(warmup_minutes)) * 60_000.0
        self.functions_per_episode = functions_per_episode
        self.max_episode_steps = int(max_episode_steps)
        self.latency_weight = float(latency_weight)
        self.invalid_action_penalty = float(invalid_action_penalty)
        self.warmup_policy_spec = warmup_policy

        clip = self.encoder.spec.obs_clip
        self.observation_space = spaces.Box(-clip, clip, shape=(self.encoder.n_features,), dtype=np.float32)
        self.action_space = spaces.Discrete(self.encoder.n_actions)

        # Per-function row indices (arrival order) for cheap episode slicing.
        arrival = self.trace["arrival_ms"].to_numpy(dtype=np.float64)
        self._arrival = arrival
        codes, names = pd.factorize(self.trace["function"], sort=True)
        self._functions = list(names)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        self._rows = [order[bounds[i]:bounds[i + 1]] for i in range(len(names))]
        # Windows start on whole minutes (per-minute traces line up with them).
        self._t0 = float(np.floor(arrival.min() / 60_000.0) * 60_000.0)
        self._t1 = float(arrival.max())

        self._sim: StepSim | None = None
        self._obs = np.zeros(self.encoder.n_features, dtype=np.float32)
        self._mask = self.encoder._idle_mask.copy()
        self._cands: list = []
        self._point: Any = None
        self._steps = 0
        self._episode: dict[str, Any] = {}
        self._fallback = Policy()

    # ------------------------------------------------------------------ episodes
    def _pick_episode(self) -> tuple[pd.DataFrame, float, float, list[str]]:
        """The sub-trace of one episode: (rows, window start, window end, functions)."""
        rng = self.np_random
        n_fn = len(self._functions)
        for _ in range(50):
            if self.functions_per_episode is None or self.functions_per_episode >= n_fn:
                fidx = np.arange(n_fn)
            else:
                fidx = np.sort(rng.choice(n_fn, size=self.functions_per_episode, replace=False))
            rows = np.sort(np.concatenate([self._rows[i] for i in fidx]))
            if self.episode_ms is None or self._t1 - self._t0 <= self.episode_ms:
                start, end = self._t0, self._t1 + 1.0
            else:
                # Minute-aligned start, so windows line up with per-minute traces.
                n_starts = int((self._t1 - self._t0 - self.episode_ms) // 60_000.0) + 1
                start = self._t0 + 60_000.0 * float(rng.integers(0, n_starts))
                end = start + self.episode_ms
            a = self._arrival[rows]
            in_window = rows[(a >= start) & (a < end)]
            if len(in_window) >= 2:
                with_warmup = rows[(a >= start - self.warmup_ms) & (a < end)]
                sub = self.trace.iloc[with_warmup].reset_index(drop=True)
                return sub, start, end, [self._functions[i] for i in fidx]
        # Rare: sparse functions and short windows. Fall back to the whole trace window.
        sub = self.trace
        return sub, self._t0, self._t1 + 1.0, list(self._functions)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        sub, start, end, functions = self._pick_episode()
        config = self.config
        if self._draws:
            config = dataclasses.replace(config, seed=int(self.np_random.integers(2**31)))
        self._sim = StepSim(sub, config)
        self._steps = 0
        self._episode = {"window_start_ms": start, "window_end_ms": end, "functions": functions,
                         "invocations": int(((sub["arrival_ms"] >= start) & (sub["arrival_ms"] < end)).sum())}
        # Warm-up: the fallback policy decides until the window starts.
        warm = load_policy(self.warmup_policy_spec) if self.warmup_policy_spec else _WarmupTTL()
        sim = self._sim
        while True:
            p = sim.peek()
            if p is None or p.now_ms >= start:
                break
            sim.answer_with(warm)
        sim.mark()
        self._point = None
        done = self._advance()
        if done:  # nothing to decide in this window (can only happen with forced-only traffic)
            self._obs = np.zeros(self.encoder.n_features, dtype=np.float32)
        return self._obs.copy(), self._info()

    # ------------------------------------------------------------------ stepping
    def _advance(self) -> bool:
        """Run forced decisions until a real choice (sets obs/mask/cands); True at the end."""
        sim = self._sim
        enc = self.encoder
        while True:
            p = sim.peek()
            if p is None:
                self._point = None
                return True
            if p.kind == "route":
                obs, mask, cands = enc.encode_route(p.now_ms, p.request, p.fn)
                if mask.sum() > 1:
                    self._obs, self._mask, self._cands, self._point = obs, mask, cands, p
                    return False
                sim.apply(enc.decode(int(np.argmax(mask)), cands))
            elif p.kind == "idle":
                forced = enc.forced_idle(p.now_ms, p.instance)
                if forced is not None:
                    sim.apply(forced)
                    continue
                self._obs, self._mask = enc.encode_idle(p.now_ms, p.instance, p.fn)
                self._cands, self._point = [], p
                return False
            else:  # any other point (pre-warm, eviction): the base policy's answer
                sim.answer_with(self._fallback)

    def _fallback_decision(self) -> Any:
        p = self._point
        if p.kind == "route":
            if self._cands:
                return Assign(self._cands[0])  # idle warmest first, else the shortest expected wait
            return SPAWN
        return INVOKE if p.instance.queue else KILL

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._sim is None or self._point is None:
            raise RuntimeError("step() called before reset() or after the episode ended")
        a = int(action)
        penalty = 0.0
        if 0 <= a < len(self._mask) and self._mask[a]:
            decision = self.encoder.decode(a, self._cands)
        else:
            decision = self._fallback_decision()
            penalty = self.invalid_action_penalty
        self._sim.apply(decision)
        self._steps += 1
        terminated = self._advance()
        added_latency_ms, idle_mb_ms = self._sim.take_deltas()
        reward = (-self.latency_weight * added_latency_ms / 1000.0
                  - self.lam * idle_mb_ms / MB_PER_GB / 1000.0 - penalty)
        truncated = (not terminated) and self._steps >= self.max_episode_steps
        info = self._info()
        info.update(added_latency_s=added_latency_ms / 1000.0, idle_gb_s=idle_mb_ms / MB_PER_GB / 1000.0,
                    invalid_action=penalty > 0)
        return self._obs.copy(), float(reward), terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """Valid actions at the current point (sb3-contrib MaskablePPO reads this)."""
        return self._mask.copy()

    def _info(self) -> dict[str, Any]:
        p = self._point
        # The mask rides in the info too: in a subprocess that saves MaskablePPO a second
        # round trip per step (wlsim.rl.train.MasksFromInfo).
        return {"kind": None if p is None else p.kind, "now_ms": None if p is None else p.now_ms,
                "steps": self._steps, "action_mask": self._mask.copy(), **self._episode}


gym.register(id=ENV_ID, entry_point="wlsim.rl.env:RoutingEnv")
