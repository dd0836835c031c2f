"""``make demo``: what wl does, end to end, in well under a minute.

Sections run in order and share one results folder (results/demo-<time>/). Today:
  simulator  replay the bundled 40-function Azure Functions day through every built-in
             policy, print the comparison table, write the plots.
Later sections (e.g. the live platform, issue 5) are added to SECTIONS; each is a function
taking the DemoContext and printing what it shows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

TRACE = "traces/azure2019/40"
SEED = 0


@dataclass
class DemoContext:
    out_dir: Path                                   # results/demo-<time>/
    console: Console
    trace: str = TRACE
    seed: int = SEED
    timings: dict[str, float] = field(default_factory=dict)


def simulator_section(ctx: DemoContext) -> None:
    from wlsim.cli import load_trace, make_config, make_weights, run_comparison
    from wlsim.compare import BUILTIN_POLICIES

    what = " (one Azure Functions day, 40 functions)" if ctx.trace == TRACE else ""
    ctx.console.print(f"Replaying [bold]{ctx.trace}[/]{what} with seed {ctx.seed} through every built-in "
                      f"policy; the offline oracle is the lower bound.")
    table = load_trace(ctx.trace, seed=ctx.seed)
    out = run_comparison(table, list(BUILTIN_POLICIES), make_config(1, None, None, ctx.seed, 1),
                         make_weights(None, None, None), out=ctx.out_dir / "sim", trace_name=ctx.trace,
                         jobs=0, progress=True)
    ctx.console.print("cost = memory held (GB-s x Lambda's price) + requests + added latency "
                      "(wait + cold start) x 0.001 USD/s; cost ÷ oracle >= 1 means worse than the oracle.")
    ctx.console.print(f"plots and summary.csv in [bold]{out}[/]: "
                      + ", ".join(p.name for p in sorted(out.glob("*.png"))))


# (name, function); add the live-platform section here (before or after "simulator").
SECTIONS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("simulator", simulator_section),
]


def main(argv: list[str] | None = None) -> int:
    import argparse

    from wlsim.cli import default_out_dir, make_console

    parser = argparse.ArgumentParser(prog="python -m wl.demo", description="The wl demo (make demo).")
    parser.add_argument("--trace", default=TRACE, help=f"trace to replay (default {TRACE})")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default results/demo-<time>/)")
    args = parser.parse_args(argv)
    console = make_console()
    ctx = DemoContext(out_dir=args.out or default_out_dir("demo"), console=console, trace=args.trace,
                      seed=args.seed)
    started = time.perf_counter()
    for name, section in SECTIONS:
        console.print(Rule(f"wl demo: {name}"))
        t0 = time.perf_counter()
        section(ctx)
        ctx.timings[name] = time.perf_counter() - t0
    total = time.perf_counter() - started
    console.print(Rule())
    console.print(f"demo finished in {total:.1f} s ("
                  + ", ".join(f"{k} {v:.1f} s" for k, v in ctx.timings.items())
                  + f"); everything it wrote is in [bold]{ctx.out_dir}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
