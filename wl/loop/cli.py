"""``wl load``, ``wl calibrate``, ``wl fidelity`` (the live loop). Heavy imports stay inside the
commands so ``wl`` starts fast."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from wlsim.cli import make_console
from wlsim.config import IN_FLIGHT, LOAD_MEASURES

TraceArg = Annotated[str, typer.Argument(help="Trace: canonical .parquet/.csv, Azure 2019 prefix "
                                              "(traces/azure2019/40), Azure 2021 CSV, or a recorded live trace.")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="router URL (default from settings: http://127.0.0.1:7701)")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="admin token (default: settings, then the token "
                                                              "file `wl up` created)", show_default=False)]
SpeedOpt = Annotated[float, typer.Option("--speed", min=0.001, help="Replay this many times faster than the trace.")]
DurScaleOpt = Annotated[float | None, typer.Option("--duration-scale", min=0.0,
                                                   help="Scale each duration by this (default 1/speed: the trace's "
                                                        "concurrency is kept).")]
MaxDurOpt = Annotated[float | None, typer.Option("--max-duration-ms", min=0.0,
                                                 help="Cap every duration (after scaling).")]
StartOpt = Annotated[int | None, typer.Option("--start-minute", min=1,
                                              help="Keep the trace from this minute (1-based).")]
EndOpt = Annotated[int | None, typer.Option("--end-minute", min=1, help="...up to this minute (inclusive).")]
FunctionsOpt = Annotated[int | None, typer.Option("--functions", min=1, help="Keep only the N busiest functions.")]
LateOpt = Annotated[float, typer.Option("--max-lateness-ms", min=0.0,
                                        help="A run whose p99 send lateness passes this is invalid.")]
ModeOpt = Annotated[str, typer.Option("--mode", help="Synthetic function: sleep (no CPU held) or busy (spins).")]
TouchOpt = Annotated[float, typer.Option("--touch-mb-cap", min=0.0,
                                         help="The synthetic function writes min(row memory, this) MB per request.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the trace loader's sampling.")]
ProfileOpt = Annotated[str, typer.Option("--profile", help="Simulator platform profile: wl, container, a file, "
                                                           "or session: calibrate on fresh platforms of this machine "
                                                           "now (~100 s, written to the output folder).")]

# What a profile's load-dependent cold start can be keyed by (wlsim.config.LoadColdStart.measure)
LoadMeasure = StrEnum("LoadMeasure", {m: m for m in LOAD_MEASURES})
DEFAULT_LOAD_MEASURE = LoadMeasure(IN_FLIGHT)


def _fail(message: str) -> typer.Exit:
    make_console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _plan(trace: str, seed: int, start_minute: int | None, end_minute: int | None, speed: float,
          duration_scale: float | None, max_duration_ms: float | None, functions: int | None, touch: float):
    from wl.loop.load import plan_load
    from wlsim.traces import read_trace

    table = read_trace(trace, seed=seed, start_minute=start_minute, end_minute=end_minute)
    return plan_load(table, speed=speed, duration_scale=duration_scale, max_duration_ms=max_duration_ms,
                     functions=functions, touch_mb_cap=touch, source=trace)


def _errors() -> tuple[type[BaseException], ...]:
    from policies.registry import PolicySpecError
    from wl.loop.load import LoadError
    from wlsim.profile import ProfileError
    from wlsim.traces import TraceError

    return (LoadError, ProfileError, TraceError, PolicySpecError)


def _where(url: str | None, token: str | None) -> tuple[str, str | None]:
    from wlruntime.cli import _client  # the same URL/token resolution as wl deploy/invoke

    client = _client(url, token)
    client.close()
    return client.base_url, client.token


def load_cmd(
    trace: TraceArg, url: UrlOpt = None, token: TokenOpt = None, speed: SpeedOpt = 1.0,
    duration_scale: DurScaleOpt = None, max_duration_ms: MaxDurOpt = None, start_minute: StartOpt = None,
    end_minute: EndOpt = None, functions: FunctionsOpt = None,
    deploy_synthetic: Annotated[bool, typer.Option("--deploy-synthetic",
                                                   help="Deploy the bundled synthetic function for every trace "
                                                        "function the platform lacks.")] = False,
    mode: ModeOpt = "sleep", touch_mb_cap: TouchOpt = 4.0, max_lateness_ms: LateOpt = 50.0, seed: SeedOpt = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o",
                                             help="Output folder (default results/load-<time>).")] = None,
) -> None:
    """Replay a trace against a running platform, open loop, at the trace's times (scaled by --speed)."""
    console = make_console()
    try:
        from wl.loop.load import run_load

        plan = _plan(trace, seed, start_minute, end_minute, speed, duration_scale, max_duration_ms, functions,
                     touch_mb_cap)
        base_url, found = _where(url, token)
        console.print(f"sending {len(plan.requests):,} requests to {len(plan.functions)} functions over "
                      f"{plan.span_s:.1f} s ({len(plan.requests) / max(plan.span_s, 1e-9):.1f}/s) at {base_url}")
        result = run_load(base_url, found, plan, mode=mode, deploy_synthetic=deploy_synthetic,
                          max_lateness_ms=max_lateness_ms)
    except _errors() as e:
        raise _fail(str(e)) from None
    folder = result.write(out or Path("results") / f"load-{time.strftime('%Y%m%d-%H%M%S')}")
    _print_summary(console, result.summary())
    metrics = result.metrics()
    if metrics is not None:   # the simulator's summary of the live run (wl.loop.live), also in metrics.json
        console.print("as the simulator summarises it: " + ", ".join(
            f"{k.replace('_', ' ')} {metrics[k]:,.3g}" for k in ("cold_start_rate", "mean_instances", "peak_instances",
                                                                 "idle_gb_s", "avoidable_cost_usd")))
    console.print(f"results in [bold]{folder}[/]")
    if not result.info["valid"]:
        raise _fail(f"the run is not valid: {result.info['invalid_because']}")


def _print_summary(console, s: dict) -> None:
    from rich.table import Table

    t = Table(show_header=False)
    for key in ("requests", "ok", "statuses", "cold_starts", "lateness_p50_ms", "lateness_p99_ms", "lateness_max_ms",
                "valid", "client_latency_p50_ms", "client_latency_p99_ms", "router_wait_p50_ms", "router_wait_p99_ms",
                "front_p50_ms", "front_p99_ms"):
        v = s.get(key)
        t.add_row(key.replace("_", " "), f"{v:,.2f}" if isinstance(v, float) else str(v))
    console.print(t)


def calibrate_cmd(
    runs: Annotated[list[Path] | None, typer.Argument(help="wl load output folders to fit from.")] = None,
    url: UrlOpt = None, token: TokenOpt = None,
    probe: Annotated[bool, typer.Option("--probe", help="Run a probe load of its own (30 s, 6 synthetic "
                                                        "functions) against the platform at --url.")] = False,
    name: Annotated[str, typer.Option("--name", help="Profile name.")] = "wl",
    out: Annotated[Path, typer.Option("--out", "-o", help="Profile file to write.")] = Path("wl-profile.json"),
    max_lateness_ms: LateOpt = 50.0,
    load_measure: Annotated[LoadMeasure, typer.Option(
        "--load-measure", help="What the load-dependent cold start (by_load) is keyed by: the requests in flight "
        "at the spawn, or the cold starts decided in the 50 ms before (a session profile's).")] = DEFAULT_LOAD_MEASURE,
) -> None:
    """Fit a platform profile for the simulator from live load runs (or a probe load)."""
    console = make_console()
    try:
        from wl.loop.calibrate import calibrate, probe_plan
        from wl.loop.load import LoadError, LoadResult, run_load

        results = [LoadResult.read(p) for p in runs or []]
        if probe:
            base_url, found = _where(url, token)
            plan = probe_plan()
            console.print(f"probe: {len(plan.requests)} requests to {len(plan.functions)} functions over "
                          f"{plan.span_s:.0f} s at {base_url}")
            results.append(run_load(base_url, found, plan, deploy_synthetic=True, max_lateness_ms=max_lateness_ms))
        if not results:
            raise LoadError("nothing to calibrate from: give wl load output folders, or --probe with --url")
        profile = calibrate(results, name=name, load_measure=load_measure.value)
    except _errors() as e:
        raise _fail(str(e)) from None
    profile.write(out)
    console.print(profile.describe())
    console.print(f"profile written to [bold]{out}[/] (use it with --profile {out})")


def fidelity_cmd(
    trace: TraceArg,
    policy: Annotated[str, typer.Option("--policy", "-p", help="Policy spec(s), comma-separated.")] = "default",
    profile: ProfileOpt = "wl", url: UrlOpt = None, token: TokenOpt = None,
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="Nodes of the platform started per policy.")] = 1,
    workers: Annotated[int, typer.Option("--workers", min=1, max=255, help="Wasm threads per node.")] = 200,
    speed: SpeedOpt = 1.0, duration_scale: DurScaleOpt = None, max_duration_ms: MaxDurOpt = None,
    start_minute: StartOpt = None, end_minute: EndOpt = None, functions: FunctionsOpt = None,
    mode: ModeOpt = "sleep", touch_mb_cap: TouchOpt = 4.0, max_lateness_ms: LateOpt = 50.0, seed: SeedOpt = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o",
                                             help="Output folder (default results/fidelity-<time>).")] = None,
    live: Annotated[list[Path] | None, typer.Option("--live", help="Compare these earlier live runs (wl load or "
                                                    "wl fidelity live-* folders, one per --policy, same order) "
                                                    "instead of running the trace live again.")] = None,
) -> None:
    """Run a trace live and in the calibrated simulator, per policy, and report the differences."""
    console = make_console()
    folder = out or Path("results") / f"fidelity-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        from policies.registry import split_specs
        from wl.loop.calibrate import SESSION, profile_for
        from wl.loop.fidelity import fidelity, write_report
        from wl.loop.load import LoadError

        specs = split_specs(policy)
        plan = _plan(trace, seed, start_minute, end_minute, speed, duration_scale, max_duration_ms, functions,
                     touch_mb_cap)
        if profile == SESSION and (live or url):
            raise LoadError("--profile session calibrates on fresh platforms of this machine, now: not for --live "
                            "runs or the platform at --url (fit one with `wl calibrate --probe --url ...` and pass "
                            "its file)")
        if profile == SESSION:
            console.print("calibrating the simulator on this machine now (--profile session)")
        prof = profile_for(profile, folder, nodes=nodes, workers=workers, max_lateness_ms=max_lateness_ms,
                           log=console.print)
        if live:
            results = _from_live(live, specs, prof)
        else:
            base_url, found = _where(url, token) if url else (None, None)
            console.print(f"{trace}: {len(plan.requests):,} requests, {len(plan.functions)} functions, "
                          f"{plan.span_s:.1f} s live per policy; profile {prof.describe()}")
            results = fidelity(plan, specs, prof, url=base_url, token=found, nodes=nodes, workers=workers,
                               max_lateness_ms=max_lateness_ms, mode=mode, log=console.print, keep=folder)
    except _errors() as e:
        raise _fail(str(e)) from None
    folder = write_report(results, folder, {"trace": trace, "profile": prof.model_dump(), "speed": speed,
                                            "requests": len(plan.requests), "functions": len(plan.functions)})
    console.print(fidelity_table(results))
    console.print(f"results in [bold]{folder}[/] (fidelity.json, fidelity.csv, fidelity.png/pdf)")
    invalid = [f.policy for f in results if not f.load.info.get("valid")]
    if invalid:
        raise _fail(f"live runs not valid (driver too late; their numbers are not the platform's): "
                    f"{', '.join(invalid)}")


def _from_live(folders: list[Path], specs: list[str], profile):
    """Re-simulate earlier live runs (e.g. with another profile) without running them again."""
    from wl.loop.fidelity import compare_run
    from wl.loop.load import LoadError, LoadResult
    from wlsim.profile import synthetic_code_bytes

    if len(folders) != len(specs):
        raise LoadError(f"--live gives {len(folders)} runs but --policy {len(specs)} policies: one policy per run, "
                        "in the same order")
    code_bytes = synthetic_code_bytes()
    return [compare_run(LoadResult.read(folder), spec, profile, code_bytes) for folder, spec in zip(folders, specs)]


def fidelity_table(results):
    from rich import box
    from rich.table import Table

    from wl.loop.fidelity import LABELS, METRICS

    t = Table(box=box.SIMPLE_HEAD, header_style="bold")
    # sim: as sent (the profile all the way); rec.: the router's recording, the profile's cold
    # starts; rec.+cold: the recording with the cold starts the platform had (wl.loop.fidelity)
    for col in ("policy", "metric", "live", "sim", "error", "rec.", "error", "rec.+cold", "error"):
        t.add_column(col, justify="left" if col in ("policy", "metric") else "right")
    for f in results:
        e_i, e_r, e_c = f.errors("intended"), f.errors("recorded"), f.errors("recorded_cold")
        for k, m in enumerate(METRICS):
            t.add_row(f.policy if k == 0 else "", LABELS[m], f"{f.live[m]:,.2f}", f"{f.intended[m]:,.2f}",
                      f"{100 * e_i[m]:+.1f}%", f"{f.recorded[m]:,.2f}", f"{100 * e_r[m]:+.1f}%",
                      f"{f.recorded_cold[m]:,.2f}", f"{100 * e_c[m]:+.1f}%")
        t.add_row("", "cold/warm match", "", f"{100 * f.cold_match:.1f}%", "", "", "", "", "")
    return t


def register(app: typer.Typer) -> None:
    app.command("load", help="Replay a trace against a running platform (open loop, --speed).")(load_cmd)
    app.command("calibrate", help="Fit a simulator platform profile from live load runs.")(calibrate_cmd)
    app.command("fidelity",
                help="Run a trace live and in the calibrated simulator; report the differences.")(fidelity_cmd)
