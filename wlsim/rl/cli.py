"""``wl train`` (and ``python -m wlsim.rl.cli train|evaluate|export``): train a learned
routing / keep-alive policy, export checkpoints, evaluate against the built-ins.

``wl rl train [TRAIN OPTIONS] sweep --seeds 0,1 --lambda 0.5,1`` trains every (seed, lambda)
with the other options as given (wlsim.rl.sweep), as local processes or Ray tasks, and ranks
them on the validation slice. ``train_app`` is that group (``train`` + its ``sweep``);
``train_cmd`` is the plain command.

Only typer and rich are imported at module level; torch, stable-baselines3 and the
simulator are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Learned routing: train with stable-baselines3, evaluate against the built-ins.")
console = Console()
err_console = Console(stderr=True)

DEFAULT_TRACE = "traces/azure2019/40"


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _user_errors() -> tuple[type[BaseException], ...]:
    from policies.learned import ArtifactError
    from policies.registry import PolicySpecError
    from wlsim.parallel import ExecutorError
    from wlsim.profile import ProfileError
    from wlsim.traces import TraceError

    return (PolicySpecError, TraceError, ArtifactError, ProfileError, ExecutorError, ValueError)


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not out or any(x < 1 for x in out):
        raise typer.BadParameter(f"{what}: expected positive integers, got {text!r}")
    return out


def _minutes_pair(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    pair = _ints(text, "--validation-minutes")
    if len(pair) != 2 or pair[0] > pair[1]:
        raise typer.BadParameter(f"--validation-minutes: expected FIRST,LAST, got {text!r}")
    return pair[0], pair[1]


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not out or any(not x >= 0 for x in out):
        raise typer.BadParameter(f"{what}: expected numbers >= 0, got {text!r}")
    return out


def _seeds(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not out:
        raise typer.BadParameter("--seeds: expected at least one seed")
    return out


def train_cmd(
    ctx: typer.Context,
    trace: str = typer.Option(DEFAULT_TRACE, "--trace", "-t",
                              help="Training trace: .parquet/.csv, Azure 2019 prefix or Azure 2021 CSV."),
    start_minute: int | None = typer.Option(None, "--start-minute", min=1,
                                            help="Train on the trace from this minute (1-based)."),
    end_minute: int | None = typer.Option(None, "--end-minute", min=1,
                                          help="...up to this minute (inclusive), e.g. 720 for the first half day."),
    algo: str = typer.Option("maskable_ppo", "--algo", help="maskable_ppo (uses action masks), ppo or dqn "
                             "(no masks: invalid actions fall back to a safe default and are penalised)."),
    steps: int = typer.Option(200_000, "--steps", min=1, help="Environment steps (decisions) to train for."),
    lam: float = typer.Option(0.0166667, "--lambda", min=0.0,
                              help="Idle-memory price in seconds of latency per GB-s (0.0167 = the default "
                                   "cost weights; higher = less idle memory, more cold starts; 0.001-0.0015 lands "
                                   "near hybrid histogram's idle memory on the Azure 2019 day)."),
    seed: int = typer.Option(0, "--seed", help="Seed for episodes, network init and training."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Output folder (default runs/<algo>-lam<L>-seed<S>)."),
    episode_minutes: float = typer.Option(60.0, "--episode-minutes", min=0.0,
                                          help="Episode = a random window of this many minutes (0 = whole trace)."),
    functions_per_episode: int = typer.Option(1, "--functions-per-episode", min=0,
                                              help="Functions simulated per episode (0 = all)."),
    n_envs: int | None = typer.Option(None, "--n-envs", min=1,
                                      help="Environments stepped together in this process (default 4)."),
    envs: int = typer.Option(1, "--envs", min=1,
                             help="Environments in subprocesses (SB3 SubprocVecEnv), one process and one seed "
                                  "each: N > 1 uses N processes (more cores); 1 = the --n-envs environments "
                                  "in this process."),
    profile: str | None = typer.Option(None, "--profile",
                                       help="Platform profile the environment models: container (the default: "
                                            "250 ms + 0.5 ms/MB), wl (measured by wl calibrate) or a profile "
                                            "file; trace functions count as the synthetic function wl load "
                                            "deploys (wasi-command), as in wl sim replay --profile."),
    net_arch: str = typer.Option("64,64", "--net-arch", help="Hidden layer sizes."),
    k: int = typer.Option(4, "--candidates", min=1, help="Candidate instances the policy sees (K)."),
    time_of_day: bool = typer.Option(True, "--time-of-day/--no-time-of-day",
                                     help="Include time-of-day features (off for policies meant for other "
                                          "times than the training window)."),
    learning_rate: float = typer.Option(3e-4, "--learning-rate", min=0.0),
    ent_coef: float = typer.Option(0.01, "--ent-coef", min=0.0, help="Entropy bonus ((Maskable)PPO)."),
    gamma: float = typer.Option(0.99, "--gamma", min=0.0, max=1.0),
    checkpoint_every: int = typer.Option(50_000, "--checkpoint-every", min=0,
                                         help="Steps between checkpoints (0 = none)."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads."),
    trace_seed: int = typer.Option(0, "--trace-seed", help="Seed of the trace loader's sampling."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    tensorboard: bool = typer.Option(True, "--tensorboard/--no-tensorboard", help="Write TensorBoard logs."),
    validation_minutes: str | None = typer.Option(None, "--validation-minutes",
                                                  help="FIRST,LAST minute of a validation slice: the exported "
                                                       "artifact is the checkpoint with the lowest cost there."),
    eval_every: int = typer.Option(0, "--eval-every", min=0,
                                   help="Steps between validation simulations (logged to TensorBoard)."),
) -> None:
    """Train a learned routing / keep-alive policy and export it (numpy artifact).
    `train [OPTIONS] sweep --seeds ... --lambda ...` trains a grid of seeds and lambdas instead."""
    try:
        from wlsim.rl.train import ALGOS, TrainConfig, train

        if algo not in ALGOS:
            raise typer.BadParameter(f"--algo must be one of {', '.join(ALGOS)}, got {algo!r}")
        if envs > 1 and n_envs is not None and n_envs != envs:
            raise typer.BadParameter(f"--envs {envs} runs {envs} environments, one per process; "
                                     f"--n-envs {n_envs} says otherwise: give one of them")
        out_dir = out if out is not None else Path("runs") / f"{algo}-lam{lam:g}-seed{seed}"
        cfg = TrainConfig(
            trace=trace, algo=algo, steps=steps, lam=lam, seed=seed, out=str(out_dir),
            start_minute=start_minute, end_minute=end_minute, trace_seed=trace_seed,
            episode_minutes=episode_minutes or None, functions_per_episode=functions_per_episode or None,
            n_envs=envs if envs > 1 else (n_envs or 4), subproc=envs > 1, profile=profile,
            net_arch=_ints(net_arch, "--net-arch"), learning_rate=learning_rate,
            ent_coef=ent_coef, gamma=gamma, encoder={"k": k, "time_of_day": time_of_day},
            checkpoint_every=checkpoint_every, progress_bar=progress, tensorboard=tensorboard, threads=threads,
            validation_minutes=_minutes_pair(validation_minutes), eval_every=eval_every)
        if eval_every and cfg.validation_minutes is None:
            raise typer.BadParameter("--eval-every needs --validation-minutes FIRST,LAST")
        if ctx.invoked_subcommand is not None:   # `train ... sweep`: these options are the sweep's base
            ctx.obj = {"config": cfg, "out_given": out is not None}
            return
        console.print(f"training {algo} on {trace} for {steps:,} steps (lambda={lam:g}, seed={seed}) -> {out_dir}")
        result = train(cfg)
    except _user_errors() as e:
        raise _fail(str(e)) from None
    console.print(f"done in {result.wall_s:.0f} s ({result.episodes} episodes); artifact: [bold]{result.artifact}[/]")
    console.print(f"compare: wl sim compare --trace {trace} --policies "
                  f"fixed_ttl,hybrid_histogram,faascache,default,learned:{result.artifact}"
                  + (f" --profile {profile}" if profile else ""))


def evaluate_cmd(
    artifact: list[str] = typer.Argument(..., help="Learned-policy artifact folder(s)."),
    trace: str = typer.Option(DEFAULT_TRACE, "--trace", "-t", help="Evaluation trace."),
    start_minute: int | None = typer.Option(None, "--start-minute", min=1),
    end_minute: int | None = typer.Option(None, "--end-minute", min=1),
    baselines: str = typer.Option("fixed_ttl,hybrid_histogram,faascache,default", "--baselines",
                                  help="Built-in policies to compare with (the oracle is added)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default results/...)."),
    jobs: int = typer.Option(0, "--jobs", "-j", min=0, help="Worker processes (0 = one per core)."),
    seed: int = typer.Option(0, "--seed", help="Trace sampling seed."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    profile: str | None = typer.Option(None, "--profile",
                                       help="Platform profile to simulate (as wl sim compare --profile; "
                                            "default: container)."),
) -> None:
    """Compare learned artifacts with the built-ins on one trace: table, CSV, plots and the
    verdict against hybrid histogram (no more idle memory, fewer cold starts)."""
    try:
        from wlsim.rl.evaluate import evaluate, verdict_lines

        summary, out_dir = evaluate(artifact, trace, start_minute=start_minute, end_minute=end_minute,
                                    baselines=baselines, out=out, jobs=jobs, seed=seed, progress=progress,
                                    profile=profile)
    except _user_errors() as e:
        raise _fail(str(e)) from None
    for line in verdict_lines(summary):
        console.print(line)
    console.print(f"results in [bold]{out_dir}[/]")


def export_cmd(
    model: Path = typer.Argument(..., help="An sb3 model or checkpoint (.zip) written by wl train."),
    out: Path = typer.Argument(..., help="Artifact folder to write (spec.json + weights.npz)."),
    encoder: Path | None = typer.Option(None, "--encoder",
                                        help="Encoder spec JSON (default: the run's encoder.json)."),
) -> None:
    """Export a trained model or checkpoint to the numpy artifact (learned:OUT)."""
    try:
        from wlsim.rl.export import export_checkpoint

        path = export_checkpoint(model, out, encoder)
    except _user_errors() as e:
        raise _fail(str(e)) from None
    console.print(f"artifact: [bold]{path}[/] (use learned:{path})")


def imitate_cmd(
    trace: str = typer.Option(DEFAULT_TRACE, "--trace", "-t", help="Training trace."),
    train_minutes: str = typer.Option("1,600", "--train-minutes", help="First,last minute rolled out for labels."),
    validation_minutes: str = typer.Option("601,720", "--validation-minutes",
                                           help="First,last minute of the validation slice (checkpoint selection)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the network init and minibatches."),
    iterations: int = typer.Option(3, "--iterations", min=1,
                                   help="DAgger rounds (the first under default's decisions)."),
    epochs: int = typer.Option(40, "--epochs", min=1, help="Epochs per round."),
    eval_every: int = typer.Option(20, "--eval-every", min=1, help="Epochs between validation simulations."),
    hidden: int = typer.Option(32, "--hidden", min=1, help="Hidden units."),
    out: Path = typer.Option(Path("runs/imitation"), "--out", "-o", help="Output folder."),
    tensorboard: bool = typer.Option(True, "--tensorboard/--no-tensorboard", help="Write TensorBoard logs."),
    synthetic_timers: int = typer.Option(0, "--synthetic-timers", min=0,
                                         help="Synthetic timer-triggered functions added to the training rollouts."),
    fresh_windows: int = typer.Option(0, "--fresh-windows",
                                      help="Fresh-start windows added to the training rollouts: windows cut at "
                                           "random minutes of the training slice, a random subset of their "
                                           "functions renamed so each starts with no instance and no history."),
    fresh_window_minutes: int = typer.Option(20, "--fresh-window-minutes",
                                             help="Length of each fresh-start window in minutes."),
    profile: str | None = typer.Option(None, "--profile",
                                       help="Platform profile simulated in the rollouts and validation: container "
                                            "(the default), wl (measured by wl calibrate) or a profile file; with "
                                            "its front and per-request overhead, as wl fidelity predicts a live run."),
    bins_ms: str | None = typer.Option(None, "--bins-ms", metavar="LO,HI",
                                       help="The idle-period bins: 0, then 20 edges log-spaced from LO to HI ms, "
                                            "then inf (default 500,7200000); labels are binned with them and the "
                                            "artifact carries them. Shorter where cold starts take milliseconds, "
                                            "e.g. 2,120000."),
) -> None:
    """Train the imitation-learned keep-alive policy (labels: the oracle's hindsight idle periods;
    DAgger; checkpoint chosen on the validation slice). Minutes on a CPU."""
    try:
        from wlsim.rl.imitate import ImitationConfig, parse_bins_ms, train

        tm, vm = _ints(train_minutes, "--train-minutes"), _ints(validation_minutes, "--validation-minutes")
        if len(tm) != 2 or len(vm) != 2:
            raise typer.BadParameter("--train-minutes and --validation-minutes take FIRST,LAST")
        cfg = ImitationConfig(trace=trace, train_minutes=(tm[0], tm[1]), validation_minutes=(vm[0], vm[1]),
                              seed=seed, iterations=iterations, epochs=epochs, eval_every=eval_every,
                              hidden=hidden, out=str(out), tensorboard=tensorboard, synthetic_timers=synthetic_timers,
                              fresh_windows=fresh_windows, fresh_window_minutes=fresh_window_minutes, profile=profile,
                              bins_ms=None if bins_ms is None else parse_bins_ms(bins_ms))
        artifact = train(cfg, log=lambda m: err_console.print(m, markup=False, highlight=False))
    except _user_errors() as e:
        raise _fail(str(e)) from None
    console.print(f"artifact: [bold]{artifact}[/] (use learned:{artifact})")


def sweep_cmd(
    ctx: typer.Context,
    seeds: str = typer.Option("0,1,2", "--seeds", help="Training seeds, e.g. 0,1,2."),
    lams: str = typer.Option("0.0166667", "--lambda", "--lam",
                             help="Idle-memory prices (see train's --lambda), e.g. 0.005,0.0167,0.05."),
    jobs: int = typer.Option(0, "--jobs", "-j", min=0,
                             help="Trainings at once: local worker processes (0 = one per core); with --ray "
                                  "the CPUs of the Ray started here."),
    ray: bool = typer.Option(False, "--ray", help="Run the trainings as Ray tasks on a Ray started here."),
    ray_address: str | None = typer.Option(None, "--ray-address", metavar="ADDRESS",
                                           help="Run the trainings as tasks of this Ray cluster (auto, "
                                                "ray://HOST:10001); implies --ray."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Sweep folder: one run folder per cell (seed<S>-lam<L>) and sweep.csv "
                                         "(default: train's --out, else runs/sweep-<algo>-<time>)."),
) -> None:
    """Train every (seed, lambda) with the train options given before `sweep` (local processes
    or Ray tasks), simulate each exported policy on the validation slice (--validation-minutes,
    required) and print the table, best (lowest validation cost) first."""
    import time

    from rich.table import Table

    parent = ctx.obj or {}
    base = parent.get("config")
    if base is None:   # cannot happen through `train ... sweep`; a clear line if called otherwise
        raise _fail("sweep runs as `wl train [TRAIN OPTIONS] sweep ...`")
    try:
        from wlsim.cli import ray_target
        from wlsim.parallel import make_executor
        from wlsim.rl.sweep import run_train_sweep

        seed_list, lam_list = _seeds(seeds), _floats(lams, "--lambda")
        if base.validation_minutes is None:
            raise typer.BadParameter("a sweep ranks its trainings on a validation slice: give "
                                     "--validation-minutes FIRST,LAST before `sweep`")
        folder = out or (Path(base.out) if parent.get("out_given") else
                         Path("runs") / f"sweep-{base.algo}-{time.strftime('%Y%m%d-%H%M%S')}")
        cells = len(set(seed_list)) * len(set(lam_list))
        with make_executor(jobs, ray_target(ray, ray_address)) as executor:
            console.print(f"{cells} trainings of {base.steps:,} steps on {executor.name} -> {folder}")
            table = run_train_sweep(base, seed_list, lam_list, folder, executor, on_row=lambda r: console.print(
                f"  seed {r['seed']} lambda {r['lambda']:g}: validation cost {r['validation_cost_usd']:.4g} USD "
                f"({r['train_wall_s']:.0f} s)", highlight=False))
    except _user_errors() as e:
        raise _fail(str(e)) from None
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "sweep.csv", index=False)
    t = Table(title=f"validation: {base.trace} minutes {base.validation_minutes[0]}-{base.validation_minutes[1]}",
              header_style="bold")
    for col in ("seed", "lambda", "cost USD", "cold starts", "idle GB-s", "wait p99.9 ms", "train s"):
        t.add_column(col, justify="right")
    t.add_column("run", overflow="fold")   # the run folder in the sweep's; its artifact/ is the policy
    for r in table.to_dict("records"):
        style = "bold green" if r["best"] else None
        t.add_row(str(r["seed"]), f"{r['lambda']:g}", f"{r['validation_cost_usd']:.4g}",
                  f"{r['validation_cold_starts']:,}", f"{r['validation_idle_gb_s']:,.1f}",
                  f"{r['validation_wait_p999_ms']:,.1f}", f"{r['train_wall_s']:.0f}",
                  Path(r["artifact"]).parent.name, style=style)
    console.print(t)
    best = table.iloc[0]
    console.print(f"best on validation: seed {best['seed']}, lambda {best['lambda']:g} -> "
                  f"[bold]learned:{best['artifact']}[/]; table in {folder / 'sweep.csv'}")


# `train` with a `sweep` sub-command: the callback is the plain training when no sub-command follows.
train_app = typer.Typer(add_completion=False, help="Train a learned routing policy (or a sweep of them).")
train_app.callback(invoke_without_command=True)(train_cmd)
train_app.command("sweep")(sweep_cmd)

app.add_typer(train_app, name="train")
app.command("imitate")(imitate_cmd)
app.command("evaluate")(evaluate_cmd)
app.command("export")(export_cmd)

if __name__ == "__main__":
    app()
