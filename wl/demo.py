"""``make demo``: what wl does, end to end.

Sections run in order and share one results folder (results/demo-<time>/):
  platform   start registry + router + 2 wasmtime nodes on loopback, deploy the example
             functions, invoke them cold then warm, show the difference and the metrics.
  simulator  replay the bundled 40-function Azure Functions day through every built-in
             policy (and the bundled learned policy), print the comparison, write the plots.
Each section is a function taking the DemoContext and printing what it shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.rule import Rule

TRACE = "traces/azure2019/40"
SEED = 0
# FaasCache is a cache: it keeps every instance until memory runs out, so it is compared
# under a memory cap (150 GB, well below the day's unconstrained idle peak).
DEMO_POLICIES = ("fixed_ttl", "hybrid_histogram", "faascache:memory_cap_mb=150000", "kpa", "default", "oracle")
LEARNED_ARTIFACT = Path("examples/learned/azure40")


@dataclass
class DemoContext:
    out_dir: Path                                   # results/demo-<time>/
    console: Console
    trace: str = TRACE
    seed: int = SEED
    timings: dict[str, float] = field(default_factory=dict)


def simulator_section(ctx: DemoContext) -> None:
    from wlsim.cli import load_trace, make_config, make_weights, run_comparison

    what = " (one Azure Functions day, 40 functions)" if ctx.trace == TRACE else ""
    ctx.console.print(f"Replaying [bold]{ctx.trace}[/]{what} with seed {ctx.seed} through every built-in "
                      f"policy; the offline oracle is the lower bound.")
    table = load_trace(ctx.trace, seed=ctx.seed)
    policies = list(DEMO_POLICIES)
    if (LEARNED_ARTIFACT / "spec.json").is_file():
        policies.append(f"learned:{LEARNED_ARTIFACT}")
    out = run_comparison(table, policies, make_config(1, None, None, ctx.seed, 1),
                         make_weights(None, None, None), out=ctx.out_dir / "sim", trace_name=ctx.trace,
                         jobs=0, progress=True)
    ctx.console.print("cost = memory held (GB-s x Lambda's price) + requests + added latency "
                      "(wait + cold start) x 0.001 USD/s; cost ÷ oracle >= 1 means worse than the oracle.")
    ctx.console.print(f"plots and summary.csv in [bold]{out}[/]: "
                      + ", ".join(p.name for p in sorted(out.glob("*.png"))))


def platform_section(ctx: DemoContext) -> None:
    from wl.demo_platform import run_platform_demo

    run_platform_demo(ctx.console, nodes=2)


SECTIONS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("platform", platform_section),
    ("simulator", simulator_section),
]


Section = Enum("Section", {name: name for name, _ in SECTIONS}, type=str)  # --only's choices

app = typer.Typer(add_completion=False, help="The wl demo (make demo): the platform, then the simulator.")


@app.command()
def demo(
    trace: Annotated[str, typer.Option(help="trace to replay")] = TRACE,
    seed: Annotated[int, typer.Option(help="simulation seed")] = SEED,
    out: Annotated[Path | None, typer.Option(help="results folder (default results/demo-<time>/)")] = None,
    only: Annotated[list[Section] | None,
                    typer.Option(help="run only this section (repeatable; default: all)")] = None,
) -> None:
    """Run the demo's sections in order; everything they write goes to one results folder."""
    from wlsim.cli import default_out_dir, make_console

    console = make_console()
    ctx = DemoContext(out_dir=out or default_out_dir("demo"), console=console, trace=trace, seed=seed)
    chosen = {s.value for s in only or []}
    started = time.perf_counter()
    for name, section in SECTIONS:
        if chosen and name not in chosen:
            continue
        console.print(Rule(f"wl demo: {name}"))
        t0 = time.perf_counter()
        section(ctx)
        ctx.timings[name] = time.perf_counter() - t0
    total = time.perf_counter() - started
    console.print(Rule())
    console.print(f"demo finished in {total:.1f} s ("
                  + ", ".join(f"{k} {v:.1f} s" for k, v in ctx.timings.items())
                  + f"); everything it wrote is in [bold]{ctx.out_dir}[/]")


def main() -> None:
    app(prog_name="python -m wl.demo")


if __name__ == "__main__":
    main()
