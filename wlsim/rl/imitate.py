"""Train the imitation-learned keep-alive policy (``policies.imitation``) in minutes on a CPU.

Labels are the oracle's: for every keep-alive decision (an instance just finished and has
nothing queued), the idle period that followed in hindsight (until the instance, or the
killed instance's successor, served its next request). The network learns to predict it as a
distribution over bins (cross-entropy); the policy acts on the expected cost.

DAgger: iteration 0 rolls the training slice out under the default policy's decisions and
records (features, label); each next iteration rolls it out under the best network so far,
adds what it saw to the data set and retrains, so the network learns on the states its own
decisions lead to. After every ``eval_every`` epochs the network is simulated on the
validation slice (a later part of the training window); the checkpoint with the lowest
weighted cost there is kept. Cold starts, idle GB-s, weighted and avoidable cost, p99.9
wait and the losses go to TensorBoard (``out/tensorboard``), every checkpoint to
``out/train.json``, and the selected network to ``out/artifact`` (numpy only).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policies.imitation import EDGES_MS, N_BINS, N_FEATURES, ImitationPolicy, bin_edges


@dataclass
class ImitationConfig:
    trace: str = "traces/azure2019/40"
    train_minutes: tuple[int, int] = (1, 600)
    validation_minutes: tuple[int, int] = (601, 720)
    seed: int = 0
    hidden: int = 32
    iterations: int = 3               # DAgger rounds (the first one under the default's decisions)
    epochs: int = 60                  # per round
    eval_every: int = 20
    batch_size: int = 2048
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    out: str = "runs/imitation"
    trace_seed: int = 0
    tensorboard: bool = True
    # Synthetic timer-triggered functions added to the training rollouts (not to validation):
    # the bundled day's 40 functions include no periodic timer, so without them the network
    # never sees the tight idle periods a timer has and never learns to pre-warm one.
    synthetic_timers: int = 0
    # Fresh-start windows added to the training rollouts (not to validation): copies of
    # ``fresh_window_minutes``-long windows cut at random minutes of the training slice, each with a
    # random subset of its functions renamed so they start with no instance and no history (an
    # empty platform for them), at their original time of day. The bundled day has one fresh start
    # (its first minute); a sample such as Azure 2021 is nothing but first calls.
    fresh_windows: int = 0
    fresh_window_minutes: int = 20
    # The platform simulated (wlsim.profile: a bundled name such as ``wl`` or a file; its front,
    # overhead and cold starts, as ``wl fidelity`` predicts a live run); None: the simulator's default.
    profile: str | None = None
    # The idle-period bins' log-spaced range (ms: the lowest and highest finite edge above 0;
    # policies.imitation.bin_edges): labels are binned with them and the artifact carries them.
    # None: the default 500 ms .. 2 h, too coarse where the cost-optimal keep-alive is ~20 ms
    # (a platform with ~1.5 ms cold starts).
    bins_ms: tuple[float, float] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def edges_ms(self) -> np.ndarray:
        """The bins' edges (0, log-spaced ``bins_ms``, inf); ValueError for a bad range."""
        return EDGES_MS if self.bins_ms is None else bin_edges(*self.bins_ms)


def parse_bins_ms(text: str) -> tuple[float, float]:
    """``--bins-ms LO,HI`` (ms): the bins' log-spaced range, checked; ValueError naming what is wrong."""
    parts = [x.strip() for x in text.split(",")]
    try:
        lo, hi = (float(x) for x in parts)
    except ValueError:
        raise ValueError(f"--bins-ms takes LO,HI: the lowest and highest finite bin edge above 0 in ms "
                         f"(e.g. 2,120000), got {text!r}") from None
    try:
        bin_edges(lo, hi)
    except ValueError as e:
        raise ValueError(f"--bins-ms {text}: {e}") from None
    return lo, hi


class MLP:
    """x -> tanh(x W0 + b0) -> logits; Adam on softmax cross-entropy (numpy)."""

    def __init__(self, n_in: int, hidden: int, n_out: int, rng: np.random.Generator) -> None:
        self.params = [rng.normal(0, 1 / np.sqrt(n_in), (n_in, hidden)), np.zeros(hidden),
                       rng.normal(0, 1 / np.sqrt(hidden), (hidden, n_out)), np.zeros(n_out)]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def logits(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w0, b0, w1, b1 = self.params
        h = np.tanh(x @ w0 + b0)
        return h, h @ w1 + b1

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        _, z = self.logits(x)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())

    def step(self, x: np.ndarray, y: np.ndarray, lr: float, wd: float) -> None:
        w0, _b0, w1, _b1 = self.params
        h, z = self.logits(x)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(y)), y] -= 1.0
        g = p / len(y)
        gw1 = h.T @ g + wd * w1
        gb1 = g.sum(axis=0)
        gh = (g @ w1.T) * (1 - h * h)
        gw0 = x.T @ gh + wd * w0
        gb0 = gh.sum(axis=0)
        self.t += 1
        for i, grad in enumerate((gw0, gb0, gw1, gb1)):
            self.m[i] = 0.9 * self.m[i] + 0.1 * grad
            self.v[i] = 0.999 * self.v[i] + 0.001 * grad * grad
            mhat = self.m[i] / (1 - 0.9 ** self.t)
            vhat = self.v[i] / (1 - 0.999 ** self.t)
            self.params[i] -= lr * mhat / (np.sqrt(vhat) + 1e-8)

    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(W (out, in), b)] as policies.imitation expects."""
        w0, b0, w1, b1 = self.params
        return [(w0.T.copy(), b0.copy()), (w1.T.copy(), b1.copy())]


TIMER_PERIODS_S = (15, 30, 60, 60, 60, 120, 300, 300, 600, 900, 1800)   # cron-like, most often 1 min


def synthetic_timers(n: int, span_ms: float, seed: int) -> Any:
    """``n`` timer-triggered functions over [0, span_ms): each fires every period (drawn from
    ``TIMER_PERIODS_S``) from a random phase, with a small jitter (0.1-2% of the period), a
    lognormal execution time (median 50 ms-3 s) and 128-1024 MB."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        period = float(rng.choice(TIMER_PERIODS_S)) * 1000.0
        ticks = np.arange(rng.uniform(0, period), span_ms, period)
        if ticks.size == 0:
            continue
        arrivals = np.clip(ticks + rng.normal(0.0, period * rng.uniform(0.001, 0.02), ticks.size), 0.0, None)
        median = rng.uniform(50.0, 3000.0)
        name = f"synthetic-timer-{k:03d}"
        frames.append(pd.DataFrame({"app": name, "function": name, "arrival_ms": np.sort(arrivals),
                                    "duration_ms": median * rng.lognormal(0.0, 0.5, ticks.size),
                                    "memory_mb": float(rng.choice((128, 256, 512, 1024)))}))
    return pd.concat(frames, ignore_index=True) if frames else None


def with_synthetic_timers(trace: Any, n: int, seed: int) -> Any:
    """``trace`` plus ``synthetic_timers`` over its span, in arrival order (only the canonical
    columns are kept: the timers have no others)."""
    import pandas as pd

    timers = synthetic_timers(n, float(trace["arrival_ms"].max()), seed)
    if timers is None:
        return trace
    base = trace[["app", "function", "arrival_ms", "duration_ms", "memory_mb"]].astype({"app": str, "function": str})
    both = pd.concat([base, timers], ignore_index=True)
    return both.sort_values("arrival_ms", kind="stable").reset_index(drop=True)


FRESH_TAG = "@fresh"


def fresh_windows(trace: Any, n: int, minutes: int, seed: int) -> Any:
    """``n`` fresh-start windows cut from ``trace``: each starts at a random whole minute and lasts
    ``minutes``, keeps each function with a probability drawn in [0.3, 1] (at least one), and
    renames its functions and apps ``<name>@fresh<k>`` so they are new to the platform; arrivals
    keep their time in ``trace``. Returns None for ``n == 0``."""
    import pandas as pd

    if n < 0:
        raise ValueError(f"fresh windows: the number of windows must be >= 0, got {n}")
    if minutes < 1:
        raise ValueError(f"fresh windows: a window lasts at least 1 minute, got {minutes}")
    span = int(np.ceil((float(trace["arrival_ms"].max()) + 1.0) / 60_000.0))
    if minutes > span:
        raise ValueError(f"fresh windows: a {minutes}-minute window does not fit in the "
                         f"{span}-minute training slice")
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    arrival = trace["arrival_ms"].to_numpy()
    function = trace["function"].astype(str).to_numpy()
    names = np.unique(function)
    frames = []
    for k in range(n):
        start = int(rng.integers(0, span - minutes + 1)) * 60_000.0
        chosen = names[rng.random(names.size) < rng.uniform(0.3, 1.0)]
        if chosen.size == 0:
            chosen = names[rng.integers(names.size)][None]
        rows = trace.loc[(arrival >= start) & (arrival < start + minutes * 60_000.0) & np.isin(function, chosen)]
        if rows.empty:
            continue
        tag = f"{FRESH_TAG}{k:03d}"
        frames.append(rows.assign(app=rows["app"].astype(str) + tag, function=rows["function"].astype(str) + tag))
    return pd.concat(frames, ignore_index=True) if frames else None


def with_fresh_windows(trace: Any, n: int, minutes: int, seed: int) -> Any:
    """``trace`` plus its ``fresh_windows``, in arrival order."""
    import pandas as pd

    windows = fresh_windows(trace, n, minutes, seed)
    if windows is None:
        return trace
    base = trace.astype({"app": str, "function": str})
    both = pd.concat([base, windows], ignore_index=True)
    return both.sort_values("arrival_ms", kind="stable").reset_index(drop=True)


def bin_of(gaps_ms: np.ndarray, edges_ms: np.ndarray = EDGES_MS) -> np.ndarray:
    """The bin (of these edges) each idle period falls in: the training labels."""
    return np.clip(np.searchsorted(edges_ms, gaps_ms, side="right") - 1, 0, N_BINS - 1)


def _simulate(trace: Any, policy: Any, profile: str | None) -> Any:
    if profile is None:
        from wlsim.engine import simulate

        return simulate(trace, policy)
    from wlsim.profile import load_profile

    return load_profile(profile).simulate(trace, policy)


def _policy(layers: list[tuple[np.ndarray, np.ndarray]] | None, edges_ms: np.ndarray) -> ImitationPolicy:
    """The policy with these bins (the artifact's spec.json form: the finite edges)."""
    return ImitationPolicy(layers, bin_edges_ms=[float(e) for e in edges_ms[:-1]])


def rollout(trace: Any, policy: ImitationPolicy, profile: str | None = None) -> tuple[np.ndarray, np.ndarray, Any]:
    """Simulate ``trace`` under ``policy`` recording (features, hindsight idle period)."""
    policy.record()
    result = _simulate(trace, policy, profile)
    x, y = policy.dataset()
    policy.recording = None
    return x, y, result


def evaluate(trace: Any, layers: list[tuple[np.ndarray, np.ndarray]] | None,
             profile: str | None = None, edges_ms: np.ndarray = EDGES_MS) -> dict[str, float]:
    from wlsim.metrics import summarize

    s = summarize(_simulate(trace, _policy(layers, edges_ms), profile))
    return {k: float(s[k]) for k in ("cold_starts", "idle_gb_s", "weighted_cost_usd", "avoidable_cost_usd",
                                     "wait_p999_ms")}


def train(cfg: ImitationConfig, log: Any = print) -> Path:
    """Train, select on the validation slice, write ``cfg.out``; returns the artifact folder."""
    from wlsim.traces import read_trace

    started = time.perf_counter()
    if cfg.profile is not None:
        from wlsim.profile import load_profile

        load_profile(cfg.profile)     # an unknown name or a bad file: ProfileError before any work
    edges = cfg.edges_ms()            # a bad range: ValueError before any work
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train_trace = read_trace(cfg.trace, seed=cfg.trace_seed, start_minute=cfg.train_minutes[0],
                             end_minute=cfg.train_minutes[1])
    if cfg.synthetic_timers:
        train_trace = with_synthetic_timers(train_trace, cfg.synthetic_timers, cfg.seed)
    if cfg.fresh_windows:
        train_trace = with_fresh_windows(train_trace, cfg.fresh_windows, cfg.fresh_window_minutes, cfg.seed)
        log(f"training rollouts: {cfg.fresh_windows} fresh-start windows of {cfg.fresh_window_minutes} minutes "
            f"added ({len(train_trace):,} invocations in all)")
    val_trace = read_trace(cfg.trace, seed=cfg.trace_seed, start_minute=cfg.validation_minutes[0],
                           end_minute=cfg.validation_minutes[1])
    writer = None
    if cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # only for the logs
        writer = SummaryWriter(str(out / "tensorboard"))
    rng = np.random.default_rng(cfg.seed)
    net = MLP(N_FEATURES, cfg.hidden, N_BINS, rng)
    baseline = evaluate(val_trace, None, cfg.profile, edges)    # the default's decisions
    log(f"validation, default's decisions: {baseline}")
    best = {"weighted_cost_usd": baseline["weighted_cost_usd"], "layers": None, "where": "default"}
    xs, ys = [], []
    step = 0
    for it in range(cfg.iterations):
        x, y, _ = rollout(train_trace, _policy(best["layers"], edges), cfg.profile)
        xs.append(x)
        ys.append(bin_of(y, edges))
        data_x, data_y = np.concatenate(xs), np.concatenate(ys)
        log(f"iteration {it}: {len(x):,} new labelled decisions, {len(data_x):,} in all")
        for epoch in range(1, cfg.epochs + 1):
            order = rng.permutation(len(data_x))
            for k in range(0, len(order), cfg.batch_size):
                idx = order[k:k + cfg.batch_size]
                net.step(data_x[idx], data_y[idx], cfg.learning_rate, cfg.weight_decay)
            step += 1
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                loss = net.loss(data_x, data_y)
                metrics = evaluate(val_trace, net.layers(), cfg.profile, edges)
                row = {"iteration": it, "epoch": epoch, "step": step, "train_loss": loss, **metrics}
                cfg.history.append(row)
                log(f"  epoch {epoch}: loss {loss:.4f}, validation {metrics}")
                if writer is not None:
                    writer.add_scalar("train/cross_entropy", loss, step)
                    for key, value in metrics.items():
                        writer.add_scalar(f"validation/{key}", value, step)
                if metrics["weighted_cost_usd"] < best["weighted_cost_usd"]:
                    best = {"weighted_cost_usd": metrics["weighted_cost_usd"], "layers": net.layers(),
                            "where": f"iteration {it} epoch {epoch}"}
    if writer is not None:
        writer.close()
    if best["layers"] is None:
        best["layers"] = net.layers()         # nothing beat the default: ship the last one, say so
        best["where"] = "last (no checkpoint beat the default's decisions on validation)"
    wall = time.perf_counter() - started
    meta = {"kind": "keepalive-imitation", "seed": cfg.seed, "trace": cfg.trace,
            "train_minutes": list(cfg.train_minutes), "validation_minutes": list(cfg.validation_minutes),
            "iterations": cfg.iterations, "epochs": cfg.epochs, "hidden": cfg.hidden,
            "synthetic_timers": cfg.synthetic_timers, "fresh_windows": cfg.fresh_windows,
            "fresh_window_minutes": cfg.fresh_window_minutes, "profile": cfg.profile,
            "bins_ms": None if cfg.bins_ms is None else list(cfg.bins_ms),
            "selected": best["where"], "validation_cost_usd": best["weighted_cost_usd"],
            "validation_default_cost_usd": baseline["weighted_cost_usd"], "wall_s": round(wall, 1)}
    artifact = _policy(best["layers"], edges).save(out / "artifact", meta)
    (out / "train.json").write_text(json.dumps({"config": asdict(cfg) | {"history": None}, "meta": meta,
                                                "history": cfg.history}, indent=2, default=str) + "\n")
    log(f"selected {best['where']} (validation cost {best['weighted_cost_usd']:.4f} USD; "
        f"default's decisions {baseline['weighted_cost_usd']:.4f}); {wall:.0f} s")
    return artifact
