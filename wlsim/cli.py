"""``wl sim ...`` commands: replay one policy over a trace, or compare several.

Only typer and rich are imported at module level (``wl`` must start fast); the simulator,
pandas and matplotlib are imported inside the commands.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from wlcommon.files import atomic_output

if TYPE_CHECKING:
    import pandas as pd

    from policies.interface import CostWeights
    from wlsim.config import SimConfig

app = typer.Typer(no_args_is_help=True, add_completion=False)

DEFAULT_TRACE = "traces/azure2019/40"
DEFAULT_COMPARE = "fixed_ttl,hybrid_histogram,faascache,kpa,default"
RESULTS_ROOT = Path("results")



def make_console(stderr: bool = False) -> Console:
    """A rich console; when output is not a terminal (piped, captured) and COLUMNS is unset,
    120 columns instead of rich's 80, so the comparison table is never squeezed."""
    c = Console(stderr=stderr)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c = Console(stderr=stderr, width=120)
    return c


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


# ---------------------------------------------------------------------------- helpers

def trace_stem(trace: str | os.PathLike) -> str:
    """A short name for a trace path: ``traces/azure2019/40`` -> ``azure2019-40``,
    ``x/Azure2021_200.csv`` -> ``Azure2021_200``, ``t.csv.gz`` -> ``t``."""
    p = Path(trace)
    name = p.name
    for suffix in (".csv.gz", ".parquet", ".csv", ".pq"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    if p.parent.name and p.suffix == "":
        return f"{p.parent.name}-{name}"
    return p.stem or "trace"


def default_out_dir(trace: str | os.PathLike, root: Path = RESULTS_ROOT) -> Path:
    """results/<trace-stem>-<YYYYmmdd-HHMMSS>/, with a counter if that already exists."""
    base = root / f"{trace_stem(trace)}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def make_config(nodes: int, node_memory_mb: float | None, cold_start_ms: float | None,
                seed: int, concurrency: int, max_instances: int | None = None,
                profile: str | None = None, functions: Sequence[str] = ()) -> SimConfig:
    """``functions``: the trace's, which run as the synthetic function ``wl load`` deploys
    (wlsim.profile.function_info), so a profile's measured per-ABI cold starts apply to them."""
    from wlsim.config import ColdStartModel, SimConfig

    kwargs: dict[str, Any] = {"nodes": nodes, "seed": seed, "concurrency": concurrency,
                              "max_instances": max_instances}
    if profile is not None:  # a platform profile's cold starts (wlsim.profile); --cold-start-ms wins
        from wlsim.profile import function_info, load_profile
        kwargs["cold_start"] = load_profile(profile).cold_start_model(function_info(functions))
    if node_memory_mb is not None:
        kwargs["node_memory_mb"] = node_memory_mb
    if cold_start_ms is not None:  # one fixed cold start for every function
        kwargs["cold_start"] = ColdStartModel(base_ms=cold_start_ms, per_mb_ms=0.0)
    return SimConfig(**kwargs)


def make_weights(gb_s_usd: float | None, request_usd: float | None,
                 latency_usd_per_s: float | None) -> CostWeights:
    from policies.interface import CostWeights

    given = {"gb_s_usd": gb_s_usd, "request_usd": request_usd, "latency_usd_per_s": latency_usd_per_s}
    return CostWeights(**{k: v for k, v in given.items() if v is not None})


def load_trace(trace: str, seed: int, start_minute: int | None = None,
               end_minute: int | None = None) -> pd.DataFrame:
    from wlsim.traces import read_trace

    return read_trace(trace, seed=seed, start_minute=start_minute, end_minute=end_minute)


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, so the JSON is standard."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _write_atomic(path: Path, write: Any) -> Path:
    """Write through a temporary file renamed into place, so no file is left half-written."""
    with atomic_output(path) as tmp:
        write(tmp)
    return path


def write_json(path: Path, data: Any) -> Path:
    return _write_atomic(path, lambda p: p.write_text(json.dumps(_json_safe(data), indent=2) + "\n"))


def write_csv(path: Path, table: pd.DataFrame) -> Path:
    return _write_atomic(path, lambda p: table.to_csv(p, index=False))


def write_parquet(path: Path, table: pd.DataFrame) -> Path:
    return _write_atomic(path, lambda p: table.to_parquet(p, index=False))


# ---------------------------------------------------------------------------- tables

def _num(v: Any, fmt: str) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "-" if math.isnan(f) else format(f, fmt)


def usd(v: Any) -> str:
    f = float(v)
    if math.isnan(f):
        return "-"
    return f"${f:,.2f}" if abs(f) >= 10 else f"${f:.4g}"


# Two-line headers keep the table narrow (about 100 columns for the demo's numbers).
# Waits (queued behind a busy instance) rather than end-to-end latency percentiles, which the
# executions dominate; avoidable cost is what a policy can change (wlsim.metrics).
COMPARE_HEADERS = ("policy", "cold\nstarts", "cold-\nstart %", "wait\np99.9 ms", "wait\nmax ms",
                   "waits >\ncold", "idle\nGB-s", "cost\nUSD", "cost ÷\noracle", "avoid. ÷\noracle",
                   "rejects")


def _ms(v: Any) -> str:
    """Latency: one decimal below 100 ms, whole ms above."""
    f = float(v)
    return _num(f, ",.1f") if abs(f) < 100 else _num(f, ",.0f")


def comparison_table(summary: pd.DataFrame, title: str | None = None) -> Table:
    """The compare table: one row per policy."""
    t = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for col in COMPARE_HEADERS:
        t.add_column(col, justify="left" if col == "policy" else "right", no_wrap=True)
    has_ratio = "cost_vs_oracle" in summary
    for row in summary.to_dict("records"):
        t.add_row(
            str(row["policy"]), f"{int(row['cold_starts']):,}", _num(100 * row["cold_start_rate"], ".2f"),
            _ms(row["wait_p999_ms"]), _ms(row["wait_max_ms"]), f"{int(row['waits_over_cold_start']):,}",
            _num(row["idle_gb_s"], ",.0f"), usd(row["weighted_cost_usd"]),
            _num(row["cost_vs_oracle"], ".3f") if has_ratio else "-",
            _num(row.get("avoidable_vs_oracle", float("nan")), ".3f") if has_ratio else "-",
            f"{int(row['rejected']):,}",
        )
    return t


def print_comparison(console: Console, summary: pd.DataFrame, title: str | None = None) -> None:
    """The compare table, or, when the terminal is too narrow for its numbers, one block per
    policy: numbers are never cut."""
    t = comparison_table(summary, title)
    cells = [[str(c) for c in col.cells] for col in t.columns]
    widths = [max([len(p) for p in h.split("\n")] + [len(c) for c in col])
              for h, col in zip(COMPARE_HEADERS, cells, strict=True)]
    if sum(widths) + len(widths) <= console.width:
        console.print(t)
        return
    if title:
        console.print(f"[bold]{title}[/]")
    labels = [h.replace("-\n", "-").replace("\n", " ") for h in COMPARE_HEADERS[1:]]
    for row in range(len(summary)):
        values = " · ".join(f"{label} {col[row]}" for label, col in zip(labels, cells[1:], strict=True))
        console.print(f"[bold]{cells[0][row]}[/]: {values}", highlight=False)


_REPLAY_ROWS = [
    ("invocations", "invocations", ",d"), ("served", "served", ",d"), ("rejected", "rejected", ",d"),
    ("cold starts", "cold_starts", ",d"), ("cold-start rate %", "cold_start_rate", "%"),
    ("latency p50 ms", "latency_p50_ms", ",.2f"), ("latency p95 ms", "latency_p95_ms", ",.2f"),
    ("latency p99 ms", "latency_p99_ms", ",.2f"), ("latency max ms", "latency_max_ms", ",.2f"),
    ("mean wait ms", "mean_wait_ms", ",.3f"), ("added latency s", "added_latency_s", ",.2f"),
    ("idle memory GB-s", "idle_gb_s", ",.1f"), ("total memory GB-s", "total_gb_s", ",.1f"),
    ("peak instances", "peak_instances", ",d"), ("mean instances", "mean_instances", ",.2f"),
    ("memory cost", "memory_usd", "$"), ("request cost", "request_usd", "$"),
    ("latency cost", "latency_usd", "$"), ("weighted cost", "weighted_cost_usd", "$"),
    ("avoidable cost", "avoidable_cost_usd", "$"), ("wait p99 ms", "wait_p99_ms", ",.2f"),
    ("wait p99.9 ms", "wait_p999_ms", ",.2f"), ("wait max ms", "wait_max_ms", ",.2f"),
    ("waits longer than a cold start", "waits_over_cold_start", ",d"),
    ("wall time s", "wall_s", ",.2f"), ("simulated invocations/s", "sim_invocations_per_s", ",.0f"),
]


def replay_table(summary: Mapping[str, Any], title: str | None = None) -> Table:
    """One run's summary as a two-column table."""
    t = Table(title=title, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for label, key, fmt in _REPLAY_ROWS:
        v = summary[key]
        if fmt == "$":
            text = usd(v)
        elif fmt == "%":
            text = _num(100 * v, ".2f")
        elif fmt == ",d":
            text = f"{int(v):,}"
        else:
            text = _num(v, fmt)
        t.add_row(label, text)
    return t


# -------------------------------------------------------------------------- commands

def _fail(message: str) -> typer.Exit:
    make_console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _user_errors() -> tuple[type[BaseException], ...]:
    from policies.learned import ArtifactError  # a bad learned:PATH artifact
    from policies.registry import PolicySpecError
    from wlsim.parallel import ExecutorError
    from wlsim.profile import ProfileError
    from wlsim.sweep import SweepError
    from wlsim.traces import TraceError

    return (CliError, PolicySpecError, TraceError, ArtifactError, ExecutorError, SweepError, ProfileError)


TraceOpt = typer.Option(DEFAULT_TRACE, "--trace", "-t",
                        help="Trace: canonical .parquet/.csv, Azure 2019 prefix (traces/azure2019/40) "
                             "or Azure 2021 CSV.")
OutOpt = typer.Option(None, "--out", "-o", help="Output folder (default results/<trace>-<time>/).")
NodesOpt = typer.Option(1, "--nodes", min=1, help="Simulated nodes.")
NodeMemOpt = typer.Option(None, "--node-memory-mb", min=1.0,
                          help="Memory per node in MB (default: large enough never to bind).")
ColdOpt = typer.Option(None, "--cold-start-ms", min=0.0,
                       help="One fixed cold start for every function (default: 250 ms + 0.5 ms/MB).")
ProfileOpt = typer.Option(None, "--profile",
                          help="Platform profile for cold starts: container (the default: 250 ms + 0.5 ms/MB), "
                               "wl (measured on this platform by wl calibrate, a few ms) or a profile file. "
                               "Every trace function counts as what wl load deploys for it (the synthetic "
                               "function: ABI wasi-command, its code size), so where the profile measured "
                               "that ABI's distribution each spawn draws its cold start from it.")
SeedOpt = typer.Option(0, "--seed", help="Seed for trace sampling and the simulator.")
ConcOpt = typer.Option(1, "--concurrency", min=1, help="Per-instance concurrency.")
MaxInstOpt = typer.Option(None, "--max-instances", min=1,
                          help="Live instances per function at most, like a deployed function's "
                               "concurrency limit live: a spawn beyond it is rejected (default: no limit).")
StartOpt = typer.Option(None, "--start-minute", min=1, help="Keep the trace from this minute (1-based).")
EndOpt = typer.Option(None, "--end-minute", min=1, help="Keep the trace up to this minute (inclusive).")
GbsOpt = typer.Option(None, "--gb-s-usd", min=0.0, help="Price of one GB-s of memory held.")
ReqOpt = typer.Option(None, "--request-usd", min=0.0, help="Price of one served request.")
LatOpt = typer.Option(None, "--latency-usd-per-s", min=0.0, help="Value of one second of added latency.")
ProgressOpt = typer.Option(True, "--progress/--no-progress", help="Show progress bars (on stderr).")
JsonOpt = typer.Option(False, "--json", help="Print the summary as JSON on stdout instead of the table "
                                             "(the results folder is still written).")
RayOpt = typer.Option(False, "--ray", help="Run the simulations as Ray tasks on a Ray started here "
                                           "(-j CPUs, default all cores).")
RayAddressOpt = typer.Option(None, "--ray-address", metavar="ADDRESS",
                             help="Run the simulations as tasks of this Ray cluster (auto, "
                                  "ray://HOST:10001); implies --ray.")


StreamOpt = typer.Option(False, "--stream",
                         help="Replay a .parquet trace in one bounded-memory pass (traces larger than memory): "
                              "per-request and per-instance rows go to Parquet parts in the output folder "
                              "(requests/, instances/) with summary.json; no plots or costs.")


def replay_streamed(policy: str, trace: str, out: Path | None, nodes: int, node_memory_mb: float | None,
                    cold_start_ms: float | None, profile: str | None, seed: int, concurrency: int,
                    max_instances: int | None, progress: bool, as_json: bool) -> None:
    """``wl sim replay --stream``: wlsim.traces.stream.stream_replay with a progress bar."""
    from wlsim.traces.stream import iter_trace, stream_replay

    if not trace.endswith(".parquet"):
        raise _fail(f"--stream reads a canonical .parquet trace, got {trace!r} (convert it with wl trace or "
                    "write one with wlsim.traces.stream.write_chunks)")
    out_dir = Path(out) if out is not None else default_out_dir(trace)
    bar = None
    try:
        functions: list[str] = []
        if profile is not None:     # the profile's cold starts need the function names up front
            for batch in iter_trace(trace, columns=["function"]):
                functions.extend(str(f) for f in batch["function"].unique())
        config = make_config(nodes, node_memory_mb, cold_start_ms, seed, concurrency, max_instances, profile,
                             sorted(set(functions)))
        callback = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(unit="req", unit_scale=True, desc=f"streaming {policy}", file=sys.stderr)

            def callback(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)
        summary = stream_replay(trace, policy, out_dir, config, progress=callback)
    except (*_user_errors(), ValueError) as e:
        raise _fail(str(e)) from None
    finally:
        if bar is not None:
            bar.close()
    row = summary.as_dict()
    if as_json:
        sys.stdout.write(json.dumps(_json_safe({"trace": trace, "policy": policy, "summary": row}), indent=2) + "\n")
    else:
        t = Table(title=f"{policy} on {trace}, streamed", header_style="bold")
        t.add_column("metric")
        t.add_column("value", justify="right")
        for label, value in [
                ("invocations", f"{summary.invocations:,}"), ("served", f"{summary.completed:,}"),
                ("rejected", f"{summary.rejected:,}"), ("cold starts", f"{summary.cold:,}"),
                ("cold-start rate %", _num(100 * summary.cold_start_rate, ".2f")),
                ("mean latency ms", _num(summary.mean_latency_ms, ",.2f")),
                ("mean wait ms", _num(summary.mean_wait_ms, ",.3f")),
                ("latency p50 ms (~2%)", _num(summary.latency_p50_ms, ",.2f")),
                ("latency p99 ms (~2%)", _num(summary.latency_p99_ms, ",.2f")),
                ("latency max ms", _num(summary.latency_ms_max, ",.2f")),
                ("idle memory GB-s", _num(summary.idle_gb_s, ",.1f")), ("instances", f"{summary.instances:,}"),
                ("evicted", f"{summary.evicted:,}"), ("wall time s", _num(summary.wall_s, ",.1f")),
                ("simulated invocations/s", _num(summary.invocations_per_s, ",.0f"))]:
            t.add_row(label, value)
        make_console().print(t)
    make_console(stderr=as_json).print(f"results in [bold]{out_dir}[/] (requests/, instances/, summary.json)")


def ray_target(ray: bool, ray_address: str | None) -> str | None:
    """What wlsim.parallel.make_executor takes: None (local processes), "local" or an address."""
    if ray_address:
        return ray_address
    return "local" if ray else None


@app.command()
def replay(
    policy: str = typer.Option(..., "--policy", "-p", help="Policy spec, e.g. fixed_ttl:ttl_ms=60000."),
    trace: str = TraceOpt, out: Path | None = OutOpt, nodes: int = NodesOpt,
    node_memory_mb: float | None = NodeMemOpt, cold_start_ms: float | None = ColdOpt,
    profile: str | None = ProfileOpt,
    seed: int = SeedOpt, concurrency: int = ConcOpt, max_instances: int | None = MaxInstOpt,
    start_minute: int | None = StartOpt,
    end_minute: int | None = EndOpt, gb_s_usd: float | None = GbsOpt, request_usd: float | None = ReqOpt,
    latency_usd_per_s: float | None = LatOpt, progress: bool = ProgressOpt, as_json: bool = JsonOpt,
    stream: bool = StreamOpt,
) -> None:
    """Replay a trace through one policy: summary table, requests.parquet, summary.json/.csv, plots."""
    if stream:
        if start_minute is not None or end_minute is not None or any(
                v is not None for v in (gb_s_usd, request_usd, latency_usd_per_s)):
            raise _fail("--stream replays the whole file and reports no costs: drop --start-minute/--end-minute "
                        "and the price options (or replay without --stream)")
        return replay_streamed(policy, trace, out, nodes, node_memory_mb, cold_start_ms, profile, seed,
                               concurrency, max_instances, progress, as_json)
    try:
        from wlsim.compare import compare

        table = load_trace(trace, seed, start_minute, end_minute)
        config = make_config(nodes, node_memory_mb, cold_start_ms, seed, concurrency, max_instances, profile,
                             table["function"].unique())
        weights = make_weights(gb_s_usd, request_usd, latency_usd_per_s)
        summary, results = compare(table, [policy], config, weights, jobs=1, progress=progress,
                                   include_oracle=False)
    except _user_errors() as e:
        raise _fail(str(e)) from None
    result = results[policy.strip()]
    row = summary.iloc[0].to_dict()
    if as_json:
        sys.stdout.write(json.dumps(_json_safe({"trace": trace, "policy": policy, "summary": row}), indent=2) + "\n")
    else:
        out_console = make_console()
        out_console.print(f"[bold]{policy}[/] on {trace} ({len(table):,} invocations)")
        out_console.print(replay_table(row))

    import pandas as pd

    from wlsim import plots

    out_dir = Path(out) if out is not None else default_out_dir(trace)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(out_dir / "requests.parquet", result.requests)
    write_parquet(out_dir / "instances.parquet", result.instances)
    write_csv(out_dir / "summary.csv", pd.DataFrame([row]))
    write_json(out_dir / "summary.json", {"trace": trace, "policy": policy, "summary": row,
                                          "params": result.params, "config": _config_dict(config)})
    plots.latency_cdf(results, out_dir / plots.PLOT_FILES["latency_cdf"])
    plots.instances_plot(results, out_dir / plots.PLOT_FILES["instances"],
                         clock_offset_ms=(start_minute - 1) * 60_000.0 if start_minute else 0.0)
    make_console(stderr=as_json).print(f"results in [bold]{out_dir}[/]")


@app.command("compare")
def compare_cmd(
    policies: str = typer.Option(DEFAULT_COMPARE, "--policies", "-p",
                                 help="Comma-separated policy specs (built-in names, custom:PATH, "
                                      "learned:PATH); the oracle is added as the reference."),
    trace: str = TraceOpt, out: Path | None = OutOpt,
    jobs: int = typer.Option(0, "--jobs", "-j", min=0, help="Worker processes (0 = one per core)."),
    ray: bool = RayOpt, ray_address: str | None = RayAddressOpt,
    oracle: bool = typer.Option(True, "--oracle/--no-oracle", help="Add the offline oracle as reference."),
    save_requests: bool = typer.Option(False, "--save-requests",
                                       help="Also write each policy's requests as Parquet."),
    nodes: int = NodesOpt, node_memory_mb: float | None = NodeMemOpt,
    cold_start_ms: float | None = ColdOpt, profile: str | None = ProfileOpt,
    seed: int = SeedOpt, concurrency: int = ConcOpt,
    max_instances: int | None = MaxInstOpt,
    start_minute: int | None = StartOpt, end_minute: int | None = EndOpt,
    gb_s_usd: float | None = GbsOpt, request_usd: float | None = ReqOpt,
    latency_usd_per_s: float | None = LatOpt, progress: bool = ProgressOpt, as_json: bool = JsonOpt,
) -> None:
    """Replay a trace through several policies: comparison table, summary.csv and three plots (PNG + PDF)."""
    try:
        from policies.registry import split_specs

        specs = split_specs(policies)
        table = load_trace(trace, seed, start_minute, end_minute)
        config = make_config(nodes, node_memory_mb, cold_start_ms, seed, concurrency, max_instances, profile,
                             table["function"].unique())
        weights = make_weights(gb_s_usd, request_usd, latency_usd_per_s)
        if start_minute:   # plots show the trace's own clock, not 0 at the window's start
            table.attrs["clock_offset_ms"] = (start_minute - 1) * 60_000.0
        executor = None
        if ray_target(ray, ray_address) is not None:
            from wlsim.parallel import make_executor
            executor = make_executor(jobs, ray_target(ray, ray_address))
        try:
            out_dir = run_comparison(table, specs, config, weights, out=out, trace_name=trace, jobs=jobs,
                                     include_oracle=oracle, progress=progress,
                                     save_requests=save_requests, executor=executor, as_json=as_json)
        finally:
            if executor is not None:
                executor.close()
    except _user_errors() as e:
        raise _fail(str(e)) from None
    make_console(stderr=as_json).print(f"results in [bold]{out_dir}[/]")


def run_comparison(table: pd.DataFrame, specs: Sequence[str], config: SimConfig,
                   weights: CostWeights, *, out: Path | None, trace_name: str, jobs: int = 0,
                   include_oracle: bool = True, progress: bool = True,
                   save_requests: bool = False, executor: Any = None, as_json: bool = False) -> Path:
    """compare() + print the table + write summary.csv/json and the plots; returns the folder.
    Shared by ``wl sim compare`` and ``make demo``."""
    from wlsim import plots
    from wlsim.compare import compare

    started = time.perf_counter()
    summary, results = compare(table, specs, config, weights, jobs=jobs, progress=progress,
                               include_oracle=include_oracle, executor=executor)
    elapsed = time.perf_counter() - started
    title = f"{trace_name}: {len(table):,} invocations, {table['function'].nunique()} functions"
    if as_json:
        sys.stdout.write(json.dumps(_json_safe({"trace": trace_name, "summary": summary.to_dict("records")}),
                                    indent=2) + "\n")
    else:
        print_comparison(make_console(), summary, title)
    out_dir = Path(out) if out is not None else default_out_dir(trace_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "summary.csv", summary)
    write_json(out_dir / "summary.json", {
        "trace": trace_name, "policies": list(results), "config": _config_dict(config),
        "weights": {k: getattr(weights, k) for k in ("gb_s_usd", "request_usd", "latency_usd_per_s")},
        "elapsed_s": elapsed, "params": {s: r.params for s, r in results.items()},
        "summary": summary.to_dict("records")})
    plots.write_plots(results, summary, out_dir, clock_offset_ms=float(table.attrs.get("clock_offset_ms", 0.0)))
    if save_requests:
        for i, (spec, r) in enumerate(results.items()):
            safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec)
            write_parquet(out_dir / f"requests-{i}-{safe}.parquet", r.requests)
    return out_dir


def _config_dict(config: SimConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(config)


@app.command()
def sweep(
    grid_file: Path | None = typer.Option(None, "--grid", "-g",
                                          help="YAML grid (see wlsim/sweep.py); the options below override "
                                               "its axes."),
    policies: str | None = typer.Option(None, "--policies", "-p",
                                        help="Comma-separated specs; '|' separates the values of a "
                                             "parameter: fixed_ttl:ttl_ms=60000|600000,kpa"),
    traces: str | None = typer.Option(None, "--traces", "-t", help="Comma-separated traces "
                                      f"(default {DEFAULT_TRACE})."),
    slices: str | None = typer.Option(None, "--slices",
                                      help="Comma-separated minute ranges, e.g. 1-240,241-480 (default: whole trace)."),
    seeds: str | None = typer.Option(None, "--seeds", help="Seeds: 0,1,2 or 0-4 (default 0)."),
    oracle: bool | None = typer.Option(None, "--oracle/--no-oracle",
                                       help="One oracle cell per trace x slice x seed (default on)."),
    jobs: int = typer.Option(0, "--jobs", "-j", min=0, help="Worker processes or Ray CPUs (0 = all cores)."),
    ray: bool = RayOpt, ray_address: str | None = RayAddressOpt, out: Path | None = OutOpt,
    nodes: int | None = typer.Option(None, "--nodes", min=1, help="Simulated nodes."),
    node_memory_mb: float | None = NodeMemOpt, cold_start_ms: float | None = ColdOpt,
    concurrency: int | None = typer.Option(None, "--concurrency", min=1, help="Per-instance concurrency."),
    max_instances: int | None = MaxInstOpt, profile: str | None = ProfileOpt, progress: bool = ProgressOpt,
) -> None:
    """A grid of policy specs x parameter values x traces/slices x seeds, one simulation per cell:
    summary.csv/.parquet (a row per cell), front.csv and pareto.png across the grid."""
    from wlsim import sweep as sw

    try:
        grid = sw.load_grid(grid_file) if grid_file is not None else sw.Grid(specs=[], traces=[DEFAULT_TRACE])
        if policies is not None:
            from policies.registry import split_specs
            grid.specs = split_specs(policies)
        if not grid.specs:
            raise CliError("no policies: give --policies or a --grid file")
        if traces is not None:
            grid.traces = [t.strip() for t in traces.split(",") if t.strip()]
        if slices is not None:
            grid.slices = [sw.parse_slice(s) for s in slices.split(",")]
        if seeds is not None:
            grid.seeds = sw.parse_int_list(seeds, "seeds")
        if oracle is not None:
            grid.oracle = oracle
        given = {"nodes": nodes, "node_memory_mb": node_memory_mb, "cold_start_ms": cold_start_ms,
                 "concurrency": concurrency, "max_instances": max_instances, "profile": profile}
        grid.config |= {k: v for k, v in given.items() if v is not None}
        from wlsim.parallel import make_executor

        with make_executor(jobs, ray_target(ray, ray_address)) as executor:
            table = sw.run_sweep(grid, executor, progress=progress)
    except _user_errors() as e:
        raise _fail(str(e)) from None
    out_dir = Path(out) if out is not None else default_out_dir(f"sweep-{trace_stem(grid.traces[0])}")
    sw.write_sweep(table, out_dir, grid)
    elapsed = table.attrs["elapsed_s"]
    console = make_console()
    console.print(sweep_table(sw.front(table), title=f"{len(table)} cells in {elapsed:.1f} s "
                                                      f"({len(table) / elapsed:.1f} cells/s, {executor.name})"))
    console.print(f"results in [bold]{out_dir}[/]")


def sweep_table(front: pd.DataFrame, title: str | None = None) -> Table:
    """The sweep's specs, each averaged over its cells; Pareto-efficient ones marked."""
    t = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for col in ("policy", "cells", "cold-\nstart %", "idle\nGB-s", "p99\nms", "cost ÷\noracle", "Pareto"):
        # Long policy specs wrap; numbers are never cut.
        if col == "policy":
            t.add_column(col, overflow="fold")
        else:
            t.add_column(col, justify="right", no_wrap=True)
    for row in front.to_dict("records"):
        t.add_row(str(row["policy"]), str(row["cells"]), _num(100 * row["cold_start_rate"], ".2f"),
                  _num(row["idle_gb_s"], ",.0f"), _ms(row["latency_p99_ms"]),
                  _num(row["cost_vs_oracle"], ".3f"), "*" if row["pareto"] else "")
    return t
