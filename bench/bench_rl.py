"""Benchmark of the learned-routing pieces, all measured in the same run:

1. RoutingEnv steps per second under a random masked policy (median of several runs);
2. the learned policy's decision time with numpy: the network forward alone and a whole
   decision (encode the view + forward + decode), median microseconds over real decision
   points of the trace;
3. the same network's forward pass in torch (built from the artifact's weights, no_grad,
   one observation, as a router would call it), median microseconds, and the ratio.

    .venv/bin/python bench/bench_rl.py [--artifact examples/learned/azure40-ppo] [--steps 5000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies.interface import Policy
from policies.learned import LearnedPolicy
from wlsim.rl.env import RoutingEnv
from wlsim.rl.sim import StepSim
from wlsim.traces import read_trace


def env_steps_per_s(trace, steps: int, repeats: int) -> list[float]:
    rates = []
    for r in range(repeats):
        env = RoutingEnv(trace, episode_minutes=60, warmup_minutes=30)
        env.reset(seed=r)
        rng = np.random.default_rng(r)
        t0 = time.perf_counter()
        for _ in range(steps):
            _, _, term, trunc, _ = env.step(rng.choice(np.flatnonzero(env.action_masks())))
            if term or trunc:
                env.reset()
        rates.append(steps / (time.perf_counter() - t0))
    return rates


def decision_points(trace, policy: LearnedPolicy, limit: int) -> list:
    """(kind, now, request/instance, fn) snapshots are not stable across time, so time the
    decisions in place: step the engine and time each learned decision as it happens."""
    sim = StepSim(trace)
    fallback = Policy()
    route_ns, idle_ns, obs_masks = [], [], []
    enc = policy.encoder
    while len(route_ns) + len(idle_ns) < limit:
        d = sim.peek()
        if d is None:
            break
        if d.kind == "route":
            t0 = time.perf_counter_ns()
            ans = policy.route(d.now_ms, d.request, d.fn)
            route_ns.append(time.perf_counter_ns() - t0)
            obs, mask, _ = enc.encode_route(d.now_ms, d.request, d.fn)
        elif d.instance.queue:
            sim.answer_with(fallback)
            continue
        else:
            t0 = time.perf_counter_ns()
            ans = policy.on_idle(d.now_ms, d.instance, d.fn)
            idle_ns.append(time.perf_counter_ns() - t0)
            obs, mask = enc.encode_idle(d.now_ms, d.instance, d.fn)
        obs_masks.append((obs, mask))
        sim.apply(ans)
    return [route_ns, idle_ns, obs_masks]


def torch_mlp(policy: LearnedPolicy):
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    for (wt, b), act in zip(policy.layers, policy.activation_names):
        lin = nn.Linear(wt.shape[0], wt.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(wt.T, dtype=torch.float32))
            lin.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        layers.append(lin)
        if act == "tanh":
            layers.append(nn.Tanh())
        elif act == "relu":
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", default=str(ROOT / "examples/learned/azure40-ppo"))
    ap.add_argument("--trace", default=str(ROOT / "traces/azure2019/40"))
    ap.add_argument("--steps", type=int, default=5000, help="env steps per run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--decisions", type=int, default=20000)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    trace = read_trace(args.trace, start_minute=1, end_minute=720)
    rates = env_steps_per_s(trace, args.steps, args.repeats)
    print(f"env steps/s (random masked policy, {args.repeats} x {args.steps} steps): "
          f"median {statistics.median(rates):,.0f}  (runs: {', '.join(f'{r:,.0f}' for r in rates)})")

    policy = LearnedPolicy.load(args.artifact)
    route_ns, idle_ns, obs_masks = decision_points(trace, policy, args.decisions)
    obs = np.array([o for o, _ in obs_masks])
    masks = np.array([m for _, m in obs_masks])

    def per_call_us(fn, n_rounds: int = 3) -> float:
        meds = []
        for _ in range(n_rounds):
            ts = []
            for i in range(len(obs)):
                t0 = time.perf_counter_ns()
                fn(i)
                ts.append(time.perf_counter_ns() - t0)
            meds.append(statistics.median(ts) / 1000)
        return min(meds)

    np_fwd = per_call_us(lambda i: policy.act(obs[i], masks[i]))
    net = torch_mlp(policy)
    t_obs = torch.as_tensor(obs)
    t_masks = torch.as_tensor(masks)

    def torch_act(i: int) -> int:
        with torch.no_grad():
            logits = net(t_obs[i:i + 1])[0]
            return int(torch.argmax(torch.where(t_masks[i], logits, torch.tensor(-float("inf")))))

    th_fwd = per_call_us(torch_act)
    agree = np.mean([policy.act(obs[i], masks[i]) == torch_act(i) for i in range(min(len(obs), 2000))])
    print(f"decision points timed: {len(route_ns):,} routes, {len(idle_ns):,} idles "
          f"(artifact {args.artifact})")
    print(f"learned decision, numpy, whole (encode + forward + decode): route median "
          f"{statistics.median(route_ns) / 1000:.1f} us, idle median {statistics.median(idle_ns) / 1000:.1f} us")
    print(f"network forward + masked argmax, one observation: numpy median {np_fwd:.1f} us, "
          f"torch median {th_fwd:.1f} us, torch/numpy = {th_fwd / np_fwd:.2f}x "
          f"(same action on {agree:.1%} of 2,000)")


if __name__ == "__main__":
    main()
