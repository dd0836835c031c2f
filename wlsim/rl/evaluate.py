"""Evaluate learned artifacts against the built-in policies on a trace (wlsim.compare), and
state plainly whether each meets the goal of issue 3: no more idle memory than hybrid
histogram and fewer cold starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

REFERENCE = "hybrid_histogram"


def evaluate(artifacts: Sequence[str], trace: str, *, start_minute: int | None = None,
             end_minute: int | None = None, baselines: str = "fixed_ttl,hybrid_histogram,faascache,default",
             out: Path | None = None, jobs: int = 0, seed: int = 0, progress: bool = True,
             profile: str | None = None) -> tuple[Any, Path]:
    """Run ``wl sim compare`` over ``trace`` with ``baselines`` + ``learned:A`` for each artifact
    (the oracle is added) on the platform ``profile`` (None: the simulator's default); returns
    (summary table, output folder)."""
    from policies.learned import LearnedPolicy
    from policies.registry import split_specs
    from wlsim.cli import load_trace, make_config, make_weights, run_comparison

    for a in artifacts:
        LearnedPolicy.load(a)  # a clear error before any simulation runs
    specs = split_specs(baselines) + [f"learned:{a}" for a in artifacts]
    table = load_trace(trace, seed, start_minute, end_minute)
    name = trace if start_minute is None and end_minute is None else f"{trace}[{start_minute}..{end_minute}]"
    config = make_config(1, None, None, seed, 1, profile=profile, functions=table["function"].unique())
    out_dir = run_comparison(table, specs, config, make_weights(None, None, None), out=out, trace_name=name,
                             jobs=jobs, include_oracle=True, progress=progress)
    import pandas as pd

    summary = pd.read_csv(out_dir / "summary.csv")
    return summary, out_dir


def verdict_lines(summary: Any) -> list[str]:
    """One line per learned row: its idle memory and cold starts against hybrid histogram's."""
    rows = summary.to_dict("records")
    ref = next((r for r in rows if str(r["policy"]).split(":", 1)[0] == REFERENCE), None)
    lines = []
    for r in rows:
        if not str(r["policy"]).startswith("learned:"):
            continue
        if ref is None:
            lines.append(f"{r['policy']}: no {REFERENCE} row to compare with")
            continue
        idle_ok = r["idle_gb_s"] <= ref["idle_gb_s"]
        cold_ok = r["cold_starts"] < ref["cold_starts"]
        ok = "MEETS" if idle_ok and cold_ok else "misses"
        lines.append(
            f"{r['policy']}: {ok} the goal vs {REFERENCE}: idle {r['idle_gb_s']:,.0f} vs {ref['idle_gb_s']:,.0f} GB-s "
            f"({'<=' if idle_ok else '>'}), cold starts {int(r['cold_starts']):,} vs {int(ref['cold_starts']):,} "
            f"({'<' if cold_ok else '>='}), p99 {r['latency_p99_ms']:,.0f} vs {ref['latency_p99_ms']:,.0f} ms")
    return lines
