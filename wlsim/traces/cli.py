"""``wl trace ...`` commands: info, convert, synth.

Only typer and rich are imported at module level so ``wl`` starts fast; pandas and the
trace modules are imported inside the commands.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False)

TRACE_HELP = ("a canonical .parquet/.csv trace, an Azure 2019 prefix (traces/azure2019/40) "
              "or an Azure 2021 CSV")
SeedOpt = Annotated[int, typer.Option(help="seed for the sampling an Azure 2019 trace needs")]
StartOpt = Annotated[int | None, typer.Option(help="first minute to keep (1-based, inclusive)")]
EndOpt = Annotated[int | None, typer.Option(help="last minute to keep (1-based, inclusive)")]


def _fail(message: str) -> NoReturn:
    """One red line on stderr and exit code 2, no traceback."""
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True, highlight=False).print(
        f"[bold red]error:[/bold red] [red]{escape(' '.join(str(message).split()))}[/red]")
    raise typer.Exit(2)


def _read(trace: str, seed: int, start_minute: int | None, end_minute: int | None):
    from wlsim.traces.formats import read_trace
    from wlsim.traces.table import TraceError

    try:
        return read_trace(trace, seed=seed, start_minute=start_minute, end_minute=end_minute)
    except TraceError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{trace}: {e}")


def _write(df, out: Path) -> None:
    from wlsim.traces.table import TraceError, write_trace

    try:
        write_trace(df, out)
    except TraceError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{out}: cannot write ({e})")


def _duration(ms: float) -> str:
    """A human-readable time span."""
    if math.isnan(ms):
        return "-"
    if ms < 10:
        return f"{ms:.2g}ms"
    if ms < 1000:
        return f"{ms:.3g}ms"
    s = ms / 1000
    if s < 120:
        return f"{s:.3g}s"
    m, s = divmod(round(s), 60)
    if m < 120:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def _num(x: float, digits: int = 3) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"


@app.command()
def info(
    trace: Annotated[str, typer.Argument(help=TRACE_HELP)],
    seed: SeedOpt = 0,
    start_minute: StartOpt = None,
    end_minute: EndOpt = None,
    top: Annotated[int, typer.Option(help="how many of the busiest functions to list")] = 10,
    plot: Annotated[Path | None, typer.Option(help="also write a rate-over-time PNG here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the statistics as JSON (no tables)")] = False,
) -> None:
    """Functions, invocations, rates over time, inter-arrival and duration statistics."""
    from rich import box
    from rich.table import Table

    from wlsim.traces.formats import trace_kind
    from wlsim.traces.stats import counts_over_time, per_function, rate_bin_ms, sparkline, summarize

    df = _read(trace, seed, start_minute, end_minute)
    kind, _ = trace_kind(trace)
    s = summarize(df)
    if as_json:
        _print_info_json(trace, kind, s, per_function(df).head(max(top, 0)))
        return
    out = Console(highlight=False)

    out.print(f"[bold]trace[/bold] {trace} ({kind})")
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    head.add_row("invocations", f"{s.invocations:,}")
    head.add_row("functions / apps", f"{s.functions:,} / {s.apps:,}")
    head.add_row("time span", f"{_duration(s.span_ms)} (first arrival {_duration(s.first_ms)}, "
                              f"last {_duration(s.last_ms)})")
    head.add_row("rate", f"{_num(s.rate_per_s)} /s = {_num(s.rate_per_s * 60)} /min overall; "
                         f"{_num(s.rate_per_s * 60 / s.functions)} /min per function on average")
    for label, sp in (("inter-arrival, all", s.iat_all_ms), ("inter-arrival, per fn", s.iat_function_ms)):
        head.add_row(label, f"mean {_duration(sp.mean)}  median {_duration(sp.median)}  "
                            f"CV {_num(sp.cv)}  p99 {_duration(sp.p99)}")
    d = s.duration_ms
    head.add_row("duration", f"mean {_duration(d.mean)}  median {_duration(d.median)}  "
                             f"p99 {_duration(d.p99)}  max {_duration(d.max)}")
    m = s.memory_mb
    head.add_row("memory", f"mean {_num(m.mean)} MB  median {_num(m.median)} MB  max {_num(m.max)} MB")
    extra = (["payload_bytes"] if s.has_payload else []) + s.feature_columns
    if extra:
        head.add_row("extra columns", ", ".join(extra))

    out.print(head)

    table = per_function(df)
    shown = table.head(max(top, 0))
    show_app = bool((table["app"] != table.index).any())
    out.print(f"\n[bold]top {len(shown)} of {len(table)} functions by invocations[/bold] "
              "(IAT: inter-arrival time; dur: duration)")
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    headers = ["function",
        "invoc.", "share", "/min", "IAT\nmean", "IAT\np50", "IAT\nCV", "dur\np50", "dur\np99", "MB"]
    for col in headers:
        # Names wrap; numbers keep their width (never cut to "13,1…").
        if col == "function":
            t.add_column(col, overflow="fold")
        else:
            t.add_column(col, justify="right", no_wrap=True)
    rows = [[str(name), f"{r['invocations']:,}", f"{r['share']:.1%}",
             _num(r["rate_per_min"]), _duration(r["iat_mean_ms"]), _duration(r["iat_median_ms"]),
             "-" if math.isnan(r["iat_cv"]) else f"{r['iat_cv']:.2f}",
             _duration(r["duration_p50_ms"]), _duration(r["duration_p99_ms"]), _num(r["memory_mb"], 4)]
            for name, r in shown.iterrows()]
    for row in rows:
        t.add_row(*row)
    widths = [max([len(part) for part in h.split("\n")] + [len(row[i]) for row in rows])
              for i, h in enumerate(headers)]
    needed = min(widths[0], 12) + sum(widths[1:]) + len(headers)  # a name may wrap; numbers may not
    if needed <= out.width:
        out.print(t)
    else:  # too narrow for the numbers: one line per function rather than cut cells
        for row in rows:
            out.print(f"[bold]{row[0]}[/bold]: " + " · ".join(f"{h.replace(chr(10), ' ')} {v}"
                                                            for h, v in zip(headers[1:], row[1:], strict=True)))

    # Rate over time: the whole trace, then each listed function, each scaled to its own peak.
    bin_ms, unit = rate_bin_ms(s.span_ms)
    arrival = df["arrival_ms"].to_numpy()
    end = float(arrival[-1])
    counts = counts_over_time(arrival, bin_ms, end_ms=end)
    out.print(f"\n[bold]invocations per {unit}[/bold] ({len(counts)} bins, each row scaled to its own peak)")
    spark = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    spark.add_column("function", no_wrap=True)
    if show_app:  # the Azure 2019 samples have one app per function; the app column is then noise
        spark.add_column("app", no_wrap=True)
    spark.add_column(f"peak/{unit}", justify="right", no_wrap=True)
    spark.add_column("over time", no_wrap=True, overflow="crop")
    spark.add_row("(all)", *([""] if show_app else []), f"{counts.max():,}", sparkline(counts))
    codes = df["function"].cat.codes.to_numpy()
    position = {str(c): i for i, c in enumerate(df["function"].cat.categories)}
    for name in shown.index:
        mine = counts_over_time(arrival[codes == position[name]], bin_ms, end_ms=end)
        spark.add_row(name, *([shown.at[name, "app"]] if show_app else []), f"{mine.max():,}",
                      sparkline(mine))
    out.print(spark)

    if plot is not None:
        try:
            _plot_rate(df, table.index[:5], plot, title=f"{trace}")
        except OSError as e:
            _fail(f"{plot}: cannot write ({e})")
        out.print(f"wrote {plot}")


def _print_info_json(trace: str, kind: str, summary, top) -> None:
    """`wl trace info --json`: the summary and the busiest functions, NaN as null."""
    import dataclasses
    import json
    import sys

    def clean(value):
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value.item() if hasattr(value, "item") else value

    functions = [{"function": str(name), **{k: clean(v) for k, v in row.items()}} for name, row in top.iterrows()]
    doc = {"trace": trace, "kind": kind, **clean(dataclasses.asdict(summary)), "top_functions": functions}
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def _plot_rate(df, top_functions, path: Path, title: str) -> None:
    """Invocations per minute over time: the total, and the busiest functions (log scale)."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wlcommon.files import atomic_output
    from wlsim.traces.stats import counts_over_time

    arrival = df["arrival_ms"].to_numpy()
    end = float(arrival[-1])
    total = counts_over_time(arrival, 60_000.0, end_ms=end)
    hours = np.arange(len(total)) / 60.0
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    ax1.plot(hours, total, lw=0.8, color="black")
    ax1.set_ylabel("invocations / min (all)")
    ax1.set_title(title)
    # Per function, 10-minute bins (per-minute counts of sparse functions are mostly 0 or 1).
    smooth_min = 10 if len(total) >= 180 else 1
    for name in top_functions:
        mine = arrival[(df["function"] == name).to_numpy()]
        counts = counts_over_time(mine, smooth_min * 60_000.0, end_ms=end) / smooth_min
        ax2.step(np.arange(len(counts)) * smooth_min / 60.0, counts, where="post", lw=0.8, label=str(name))
    ax2.set_yscale("symlog", linthresh=1)
    ax2.set_ylabel(f"invocations / min\n({smooth_min}-min mean)" if smooth_min > 1 else "invocations / min")
    ax2.set_xlabel("hours from trace start")
    ax2.legend(fontsize=7, loc="upper right", title="busiest functions", title_fontsize=7)
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)


@app.command()
def convert(
    input: Annotated[str, typer.Argument(help=TRACE_HELP)],
    output: Annotated[Path, typer.Argument(help="the canonical trace to write (.parquet or .csv)")],
    seed: SeedOpt = 0,
    start_minute: StartOpt = None,
    end_minute: EndOpt = None,
    names: Annotated[Path | None, typer.Option(
        help="also write the short-name -> full-hash mapping of an Azure trace to this CSV")] = None,
) -> None:
    """Turn any supported trace into the canonical table (Parquet or CSV, by extension)."""
    from wlsim.traces import azure
    from wlsim.traces.formats import trace_kind
    from wlsim.traces.table import TraceError, select_minutes

    if names is None:
        df = _read(input, seed, start_minute, end_minute)
    else:
        try:
            kind, path = trace_kind(input)
            if kind == "azure2019":
                df, mapping = azure.load_azure2019(path, seed=seed, start_minute=start_minute,
                                                   end_minute=end_minute, return_names=True)
            elif kind == "azure2021":
                df, mapping = azure.load_azure2021(path, return_names=True)
                df = select_minutes(df, start_minute, end_minute, str(path))
            else:
                _fail(f"{input}: --names applies to Azure traces only (this is a canonical {kind} trace)")
        except TraceError as e:
            _fail(str(e))
        except OSError as e:
            _fail(f"{input}: {e}")
    _write(df, output)
    if names is not None:
        from wlcommon.files import atomic_output

        try:
            with atomic_output(names) as tmp:
                mapping.to_csv(tmp, index=False)
        except OSError as e:
            _fail(f"{names}: cannot write ({e})")
    Console(highlight=False, soft_wrap=True).print(
        f"wrote {len(df):,} invocations of {df['function'].nunique():,} functions to {output}"
        + (f" and the name mapping to {names}" if names is not None else ""))


class Kind(StrEnum):
    poisson = "poisson"
    diurnal = "diurnal"
    mmpp = "mmpp"
    bursty = "bursty"      # alias of mmpp
    payload = "payload"


@app.command()
def synth(
    kind: Annotated[Kind, typer.Argument(help="arrival process; bursty = mmpp, payload = payload-driven")],
    output: Annotated[Path, typer.Argument(help="the trace to write (.parquet or .csv)")],
    functions: Annotated[int, typer.Option(help="number of functions")] = 10,
    hours: Annotated[float | None, typer.Option(help="horizon (default 24 for diurnal, else 1)")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    rate: Annotated[float | None, typer.Option(
        help="invocations/s per function (poisson, diurnal mean, payload); default: log-uniform "
             "0.001..1 per function")] = None,
    amplitude: Annotated[float, typer.Option(help="diurnal: relative swing 0..1")] = 0.8,
    peak_hour: Annotated[float, typer.Option(help="diurnal: busiest hour")] = 14.0,
    on_rate: Annotated[float, typer.Option(help="mmpp: rate in the on state, /s")] = 2.0,
    off_rate: Annotated[float, typer.Option(help="mmpp: rate in the off state, /s")] = 0.01,
    mean_on_s: Annotated[float, typer.Option(help="mmpp: mean on (burst) duration, s")] = 60.0,
    mean_off_s: Annotated[float, typer.Option(help="mmpp: mean off duration, s")] = 600.0,
    payload_median_bytes: Annotated[float, typer.Option(help="payload: median payload")] = 65536.0,
    base_ms: Annotated[float, typer.Option(help="payload: duration intercept, ms")] = 20.0,
    ms_per_kb: Annotated[float, typer.Option(help="payload: duration slope, ms per KiB")] = 0.5,
    noise_ms: Annotated[float, typer.Option(help="payload: duration noise sd, ms")] = 5.0,
) -> None:
    """Generate a seeded synthetic trace (Poisson, diurnal, bursty MMPP or payload-driven)."""
    from wlsim.traces import synthetic
    from wlsim.traces.table import TraceError

    try:
        if kind is Kind.poisson:
            df = synthetic.poisson(functions, hours or 1.0, rate_per_s=rate, seed=seed)
        elif kind is Kind.diurnal:
            df = synthetic.diurnal(functions, hours or 24.0, rate_per_s=rate, amplitude=amplitude,
                                   peak_hour=peak_hour, seed=seed)
        elif kind in (Kind.mmpp, Kind.bursty):
            if mean_on_s <= 0 or mean_off_s <= 0:
                _fail("--mean-on-s and --mean-off-s must be > 0")
            df = synthetic.mmpp(functions, hours or 1.0, on_rate_per_s=on_rate, off_rate_per_s=off_rate,
                                on_to_off_per_s=1.0 / mean_on_s, off_to_on_per_s=1.0 / mean_off_s, seed=seed)
        else:
            df = synthetic.payload_driven(functions, hours or 1.0, rate_per_s=rate,
                                          payload_median_bytes=payload_median_bytes, base_ms=base_ms,
                                          ms_per_kb=ms_per_kb, noise_ms=noise_ms, seed=seed)
    except TraceError as e:
        _fail(str(e))
    _write(df, output)
    Console(highlight=False, soft_wrap=True).print(
        f"wrote {len(df):,} invocations of {df['function'].nunique():,} functions ({kind.value}) to {output}")
