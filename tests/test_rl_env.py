"""The RL environment: seeded determinism, masks that never allow an invalid action, and the
encoder's action map (the gymnasium/SB3 env checkers: tests/test_rl_env_checkers.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import wlsim.rl.env  # noqa: F401  (registers wlsim/Routing-v0)
from policies.encoder import EncoderSpec, FeatureEncoder
from policies.interface import (
    BUSY,
    IDLE,
    INVOKE,
    KILL,
    SPAWN,
    STARTING,
    Assign,
    FunctionView,
    InstanceView,
    KeepAlive,
    RequestView,
)
from wlsim.rl.env import RoutingEnv
from wlsim.rl.sim import StepSim
from wlsim.traces import poisson

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def trace() -> pd.DataFrame:
    # 4 functions, 20 minutes, rates from sparse to busy: routes with busy candidates,
    # keep-alive expiries and queues all happen.
    return poisson(n_functions=4, hours=20 / 60, rate_per_s=[0.05, 0.3, 2.0, 6.0], seed=3)


def _rollout(env: RoutingEnv, seed: int, actions_seed: int, steps: int) -> tuple[list, list, list]:
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(actions_seed)
    observations, rewards, infos = [obs], [], [info]
    for _ in range(steps):
        a = rng.choice(np.flatnonzero(env.action_masks()))
        obs, r, term, trunc, info = env.step(a)
        observations.append(obs)
        rewards.append(r)
        infos.append(info)
        if term or trunc:
            obs, info = env.reset()
            observations.append(obs)
            infos.append(info)
    return observations, rewards, infos


def test_seeded_reset_is_deterministic(trace: pd.DataFrame) -> None:
    a = _rollout(RoutingEnv(trace, episode_minutes=5, warmup_minutes=2), seed=7, actions_seed=1, steps=400)
    b = _rollout(RoutingEnv(trace, episode_minutes=5, warmup_minutes=2), seed=7, actions_seed=1, steps=400)
    assert len(a[0]) == len(b[0])
    assert all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))
    assert a[1] == b[1]
    assert [i["window_start_ms"] for i in a[2]] == [i["window_start_ms"] for i in b[2]]
    # A different seed gives a different episode.
    env = RoutingEnv(trace, episode_minutes=5, warmup_minutes=2)
    starts = {env.reset(seed=s)[1]["window_start_ms"] for s in range(8)}
    functions = {tuple(env.reset(seed=s)[1]["functions"]) for s in range(8)}
    assert len(starts) > 1 and len(functions) > 1


@pytest.mark.parametrize("spec", [EncoderSpec(), EncoderSpec(reconsider_on_expiry=True, max_wait_cold_starts=None)])
def test_masks_never_allow_an_invalid_action(trace: pd.DataFrame, spec: EncoderSpec) -> None:
    """A random masked rollout over every function at once: each decoded decision is valid
    for the engine (which raises PolicyAnswerError otherwise) and means what the mask says."""
    env = RoutingEnv(trace, episode_minutes=None, functions_per_episode=None, warmup_minutes=0,
                     max_episode_steps=100_000, encoder=spec)
    enc = env.encoder
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    kinds = {"route": 0, "idle": 0}
    decided = set()
    expiries = 0
    for _ in range(4000):
        mask = env.action_masks()
        point = env._point
        assert mask.any()
        assert obs.shape == env.observation_space.shape and env.observation_space.contains(obs)
        a = int(rng.choice(np.flatnonzero(mask)))
        decision = enc.decode(a, env._cands)
        decided.add(type(decision).__name__)
        kinds[point.kind] += 1
        if point.kind == "route":
            assert not mask[enc.actions.invoke:].any()
            assert isinstance(decision, (Assign, type(SPAWN)))
            if isinstance(decision, Assign):
                assert decision.instance.fn is point.fn and decision.instance.state in (IDLE, BUSY, STARTING)
                if spec.max_wait_cold_starts is not None and decision.instance.state != IDLE:
                    wait = enc._expected_wait(point.now_ms, decision.instance, point.fn.stats.duration.ewma,
                                              point.fn.stats.cold_start_ms)
                    assert wait <= spec.max_wait_cold_starts * point.fn.stats.cold_start_ms
        else:
            assert not mask[:enc.actions.invoke].any()
            assert not point.instance.queue  # queued instances are answered INVOKE without a step
            until = point.instance.keepalive_until_ms
            expired = until is not None and until <= point.now_ms
            expiries += expired
            assert spec.reconsider_on_expiry or not expired  # else killed without a step
            assert decision is KILL or isinstance(decision, KeepAlive)
        obs, _, term, trunc, info = env.step(a)
        assert not info["invalid_action"]
        if term or trunc:
            break
    assert kinds["route"] > 100 and kinds["idle"] > 100
    assert (expiries > 0) == spec.reconsider_on_expiry
    assert {"Assign", "Spawn", "Kill", "KeepAlive"} <= decided


def test_invalid_action_falls_back_and_is_penalised(trace: pd.DataFrame) -> None:
    env = RoutingEnv(trace, episode_minutes=5, warmup_minutes=2, invalid_action_penalty=3.0)
    env.reset(seed=1)
    steps = 0
    while env._point.kind != "idle":
        env.step(int(np.flatnonzero(env.action_masks())[0]))
        steps += 1
        assert steps < 10_000
    invalid = int(np.flatnonzero(~env.action_masks())[0])  # a route action at an idle point
    _, reward, _, _, info = env.step(invalid)
    assert info["invalid_action"] and reward <= -3.0


def test_reward_totals_equal_the_run_metrics(trace: pd.DataFrame) -> None:
    """Summed over a whole-trace episode the reward is exactly -(added latency s) - lam * idle GB-s."""
    from wlsim.metrics import summarize

    lam = 0.05
    short = trace[trace["arrival_ms"] < 5 * 60_000].reset_index(drop=True)
    env = RoutingEnv(short, lam=lam, episode_minutes=None, functions_per_episode=None, warmup_minutes=0,
                     max_episode_steps=1_000_000)
    env.reset(seed=0)
    rng = np.random.default_rng(5)
    total, done = 0.0, False
    while not done:
        _, r, term, trunc, _ = env.step(rng.choice(np.flatnonzero(env.action_masks())))
        total += r
        done = term or trunc
    m = summarize(env._sim.result())
    assert total == pytest.approx(-m["added_latency_s"] - lam * m["idle_gb_s"], rel=1e-9)


def test_step_sim_accrued_wait_matches_metrics(trace: pd.DataFrame) -> None:
    from policies.interface import Policy
    from wlsim.metrics import summarize

    sim = StepSim(trace)
    policy = Policy()
    while sim.peek() is not None:
        sim.answer_with(policy)
    m = summarize(sim.result())
    assert sim.accrued_wait_ms() / 1000 == pytest.approx(m["added_latency_s"], rel=1e-9)


# ------------------------------------------------------------------------ encoder

def _function_with_instances() -> tuple[FunctionView, list[InstanceView]]:
    fn = FunctionView("f", memory_mb=256)
    for t in range(0, 60_000, 2_000):
        fn.stats.record_arrival(float(t))
        fn.stats.record_completion(t + 100.0, 100.0, 1000)
    insts = []
    for i, (state, queue) in enumerate([(BUSY, 2), (IDLE, 0), (STARTING, 0), (BUSY, 0), (IDLE, 0), (BUSY, 5)]):
        # The starting one has 300 ms of its 500 ms (prior) cold start to go.
        inst = InstanceView(i, fn, "node0", 256, 1, created_ms=59_800.0 if state == STARTING else 50_000.0 + i)
        inst.state = state
        inst.queue = [0] * queue
        if state == IDLE:
            inst.idle_since_ms = 55_000.0 + i
            fn.idle.append(inst)
        if state == BUSY:
            inst.active = 1
            inst.exec_started_ms = 59_950.0
        fn.instances[i] = inst
        insts.append(inst)
    return fn, insts


def test_encoder_candidates_order_and_masks() -> None:
    enc = FeatureEncoder(k=4)
    fn, insts = _function_with_instances()
    obs, mask, cands = enc.encode_route(60_000.0, RequestView(0, "f", 60_000.0, 2048), fn)
    # Idle first, warmest (most recently freed) first; then the others by expected wait:
    # busy 3 (~50 ms left), busy 0 (50 ms + 2 queued x 100 ms), starting 2 (300 ms to go);
    # busy 5 (5 queued) does not make the top 4.
    assert [c.id for c in cands] == [4, 1, 3, 0]
    assert mask.tolist() == [True] * 4 + [True, False, False, False] + [False] * len(enc.spec.keepalive_ladder_ms)
    assert obs.dtype == np.float32 and obs.shape == (enc.n_features,)
    assert isinstance(enc.decode(0, cands), Assign) and enc.decode(0, cands).instance is insts[4]
    assert enc.decode(enc.actions.spawn) is SPAWN
    # Idle point: no queue -> kill and every rung; a queue -> only invoke.
    _, m_idle = enc.encode_idle(60_000.0, insts[1], fn)
    assert not m_idle[:enc.actions.kill].any() and m_idle[enc.actions.kill:].all()
    _, m_q = enc.encode_idle(60_000.0, insts[0], fn)
    assert np.flatnonzero(m_q).tolist() == [enc.actions.invoke]
    assert enc.decode(enc.actions.invoke) is INVOKE
    assert enc.decode(enc.actions.keep0 + 1) == KeepAlive(enc.spec.keepalive_ladder_ms[1])
    # The wait guard: with at most 1 cold start (500 ms prior) of expected wait, busy 5
    # (50 ms + 5 queued x 100 ms) is masked; idle ones never are.
    guarded = FeatureEncoder(k=6, max_wait_cold_starts=1.0)
    _, mask6, cands6 = guarded.encode_route(60_000.0, RequestView(0, "f", 60_000.0, 2048), fn)
    assert [c.id for c in cands6] == [4, 1, 3, 0, 2, 5]
    assert mask6[:6].tolist() == [True, True, True, True, True, False]
    # Fewer instances than K: the missing candidates are masked and encoded as zeros.
    lone = FunctionView("g")
    obs, mask, cands = enc.encode_route(0.0, RequestView(1, "g", 0.0), lone)
    assert cands == [] and np.flatnonzero(mask).tolist() == [enc.actions.spawn]
    with pytest.raises(ValueError, match="names no candidate"):
        enc.decode(0, [])
    with pytest.raises(ValueError, match="out of range"):
        enc.decode(enc.n_actions)


def test_encoder_spec_round_trips_and_rejects_bad_fields() -> None:
    spec = EncoderSpec(k=3, keepalive_ladder_ms=(1000, 5000), time_of_day=False)
    again = EncoderSpec.from_dict(spec.to_dict())
    assert again == spec
    assert FeatureEncoder(again).n_actions == 3 + 4 + 2
    with pytest.raises(ValueError, match="unknown field"):
        EncoderSpec.from_dict({"k": 2, "colour": "red"})
    with pytest.raises(ValueError, match="keepalive_ladder_ms"):
        EncoderSpec(keepalive_ladder_ms=(1000, -1))
    with pytest.raises(ValueError, match="k must be"):
        EncoderSpec(k=0)


def test_masks_from_infos_equal_the_environments_own(trace: pd.DataFrame) -> None:
    """MasksFromInfo answers MaskablePPO's mask query from the step/reset infos (one round
    trip per step in subprocesses): the same masks the environments give when asked, also
    right after an episode ended and was reset in the same step."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from wlsim.rl.vec import MasksFromInfo

    def make(i: int):
        return lambda: RoutingEnv(trace, episode_minutes=2, warmup_minutes=1, max_episode_steps=60 + 25 * i)

    vec = MasksFromInfo(DummyVecEnv([make(0), make(1)]))
    vec.seed(5)
    vec.reset()
    rng = np.random.default_rng(2)
    ended = 0
    for _ in range(300):
        masks = vec.env_method("action_masks")
        own = vec.venv.env_method("action_masks")
        assert len(masks) == 2 and all(np.array_equal(m, o) for m, o in zip(masks, own))
        assert [np.array_equal(m, o) for m, o in zip(vec.env_method("action_masks", indices=[1]), own[1:])] == [True]
        _, _, dones, _ = vec.step(np.array([rng.choice(np.flatnonzero(m)) for m in masks]))
        ended += int(dones.sum())
    assert ended >= 4          # resets inside steps were exercised
