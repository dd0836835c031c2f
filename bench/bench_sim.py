"""Simulated invocations per second of wlsim.engine, per policy, on the 40-function Azure day.

    .venv/bin/python bench/bench_sim.py                 # every built-in, the bundled learned policy, the baseline
    .venv/bin/python bench/bench_sim.py fixed_ttl oracle -n 7
    .venv/bin/python bench/bench_sim.py --trace traces/azure2019/40 --reps 3

Each repetition runs every policy once (interleaved, so background load hits all policies
alike) with a fresh policy object; a run is one ``simulate()`` call (trace validation, the
policy's ``prepare`` and building the result frames included). Prints the median over the
repetitions of invocations per wall-clock second (and per CPU second, which other processes
on a busy machine disturb less) and each policy's ratio to the in-file baseline measured in
the same run. Targets: >= 100,000 invocations/s for fixed_ttl on one core (issue 2); >= 50,000
for the bundled learned policy (``learned:examples/learned/azure40``, issue 11).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies.interface import INVOKE, KILL, SPAWN, Assign, KeepAlive, Policy
from policies.registry import BUILTINS, load_policy

BASELINE = "baseline"
LEARNED = f"learned:{ROOT / 'examples' / 'learned' / 'azure40'}"     # the bundled learned policy


class Baseline(Policy):
    """The cheapest sensible policy: warmest idle instance else a cold start, a 10-minute
    keep-alive after each execution (one shared KeepAlive: decisions are immutable). Its
    speed is about the engine's own floor."""
    name = BASELINE
    keep = KeepAlive(600_000.0)

    def route(self, now_ms, request, fn):
        return Assign(fn.idle[-1]) if fn.idle else SPAWN

    def on_idle(self, now_ms, instance, fn):
        if instance.queue:
            return INVOKE
        return KILL if instance.keepalive_until_ms is not None else self.keep


def label(spec: str) -> str:
    return spec.replace(f"{ROOT}/", "")


def make_policy(spec: str) -> Policy:
    return Baseline() if spec == BASELINE else load_policy(spec)


def importable_builtins() -> list[str]:
    names = []
    for name in BUILTINS:
        try:
            load_policy(name)
        except Exception as e:  # noqa: BLE001 (a built-in that does not import: say so, bench the rest)
            print(f"skipping {name}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policies", nargs="*",
                    help="policy specs (default: every built-in that imports and the bundled learned policy)")
    ap.add_argument("-n", "--reps", type=int, default=5, help="repetitions per policy (default 5)")
    ap.add_argument("--trace", default=str(ROOT / "traces" / "azure2019" / "40"),
                    help="trace to replay (default: the bundled 40-function Azure 2019 day)")
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error("--reps must be >= 1")

    from wlsim.engine import simulate
    from wlsim.traces import read_trace

    trace = read_trace(args.trace)
    specs = [BASELINE] + [s for s in (args.policies or importable_builtins() + [LEARNED]) if s != BASELINE]
    for s in specs:
        make_policy(s)            # fail early on a bad spec
    n = len(trace)
    print(f"trace {args.trace}: {n:,} invocations, {trace['function'].nunique()} functions; "
          f"{args.reps} repetitions; python {sys.version.split()[0]}")

    width = max(len(label(s)) for s in specs)
    wall: dict[str, list[float]] = {s: [] for s in specs}
    cpu: dict[str, list[float]] = {s: [] for s in specs}
    for rep in range(args.reps):
        for s in specs:
            policy = make_policy(s)
            c0, t0 = time.process_time(), time.perf_counter()
            result = simulate(trace, policy)
            wall[s].append(time.perf_counter() - t0)
            cpu[s].append(time.process_time() - c0)
            if rep == 0:
                q = result.requests
                print(f"  {label(s):<{width}} cold starts {int(q.cold.sum()):>7,}  "
                      f"rejected {int(q.rejected.sum()):>6,}  instances {len(result.instances):>6,}")

    base_wall = n / statistics.median(wall[BASELINE])
    base_cpu = n / statistics.median(cpu[BASELINE])
    print()
    print(f"{'policy':<{width}} {'median inv/s (wall)':>20} {'vs baseline':>12} {'median inv/s (cpu)':>19} "
          f"{'vs baseline':>12} {'min..max inv/s (wall)':>24}")
    for s in specs:
        w = n / statistics.median(wall[s])
        c = n / statistics.median(cpu[s])
        lo, hi = n / max(wall[s]), n / min(wall[s])
        print(f"{label(s):<{width}} {w:>20,.0f} {w / base_wall:>12.2f} {c:>19,.0f} {c / base_cpu:>12.2f} "
              f"{f'{lo:,.0f}..{hi:,.0f}':>24}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
