"""``wl train`` (and ``python -m wlsim.rl.cli train|evaluate|export``): train a learned
routing / keep-alive policy, export checkpoints, evaluate against the built-ins.

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
    from wlsim.traces import TraceError

    return (PolicySpecError, TraceError, ArtifactError, ValueError)


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


def train_cmd(
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
    n_envs: int = typer.Option(4, "--n-envs", min=1, help="Environments stepped in parallel (one process)."),
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
    """Train a learned routing / keep-alive policy and export it (numpy artifact)."""
    try:
        from wlsim.rl.train import ALGOS, TrainConfig, train

        if algo not in ALGOS:
            raise typer.BadParameter(f"--algo must be one of {', '.join(ALGOS)}, got {algo!r}")
        out_dir = out if out is not None else Path("runs") / f"{algo}-lam{lam:g}-seed{seed}"
        cfg = TrainConfig(
            trace=trace, algo=algo, steps=steps, lam=lam, seed=seed, out=str(out_dir),
            start_minute=start_minute, end_minute=end_minute, trace_seed=trace_seed,
            episode_minutes=episode_minutes or None, functions_per_episode=functions_per_episode or None,
            n_envs=n_envs, net_arch=_ints(net_arch, "--net-arch"), learning_rate=learning_rate,
            ent_coef=ent_coef, gamma=gamma, encoder={"k": k, "time_of_day": time_of_day},
            checkpoint_every=checkpoint_every, progress_bar=progress, tensorboard=tensorboard, threads=threads,
            validation_minutes=_minutes_pair(validation_minutes), eval_every=eval_every)
        if eval_every and cfg.validation_minutes is None:
            raise typer.BadParameter("--eval-every needs --validation-minutes FIRST,LAST")
        console.print(f"training {algo} on {trace} for {steps:,} steps (lambda={lam:g}, seed={seed}) -> {out_dir}")
        result = train(cfg)
    except _user_errors() as e:
        raise _fail(str(e)) from None
    console.print(f"done in {result.wall_s:.0f} s ({result.episodes} episodes); artifact: [bold]{result.artifact}[/]")
    console.print(f"compare: wl sim compare --trace {trace} --policies "
                  f"fixed_ttl,hybrid_histogram,faascache,default,learned:{result.artifact}")


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
) -> None:
    """Compare learned artifacts with the built-ins on one trace: table, CSV, plots and the
    verdict against hybrid histogram (no more idle memory, fewer cold starts)."""
    try:
        from wlsim.rl.evaluate import evaluate, verdict_lines

        summary, out_dir = evaluate(artifact, trace, start_minute=start_minute, end_minute=end_minute,
                                    baselines=baselines, out=out, jobs=jobs, seed=seed, progress=progress)
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
) -> None:
    """Train the imitation-learned keep-alive policy (labels: the oracle's hindsight idle periods;
    DAgger; checkpoint chosen on the validation slice). Minutes on a CPU."""
    try:
        from wlsim.rl.imitate import ImitationConfig, train

        tm, vm = _ints(train_minutes, "--train-minutes"), _ints(validation_minutes, "--validation-minutes")
        if len(tm) != 2 or len(vm) != 2:
            raise typer.BadParameter("--train-minutes and --validation-minutes take FIRST,LAST")
        cfg = ImitationConfig(trace=trace, train_minutes=(tm[0], tm[1]), validation_minutes=(vm[0], vm[1]),
                              seed=seed, iterations=iterations, epochs=epochs, eval_every=eval_every,
                              hidden=hidden, out=str(out), tensorboard=tensorboard)
        artifact = train(cfg, log=lambda m: err_console.print(m, markup=False, highlight=False))
    except _user_errors() as e:
        raise _fail(str(e)) from None
    console.print(f"artifact: [bold]{artifact}[/] (use learned:{artifact})")


app.command("train")(train_cmd)
app.command("imitate")(imitate_cmd)
app.command("evaluate")(evaluate_cmd)
app.command("export")(export_cmd)

if __name__ == "__main__":
    app()
