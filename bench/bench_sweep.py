"""Cells per second of a policy sweep (wlsim.sweep) with 1 worker and with 2, same grid.

    .venv/bin/python bench/bench_sweep.py                   # local processes, 3 alternating rounds
    .venv/bin/python bench/bench_sweep.py --ray --rounds 2  # Ray tasks (num_cpus 1 vs 2) too
    .venv/bin/python bench/bench_sweep.py --slice-minutes 120 --seeds 0,1,2

The grid is ``SPECS`` (9 policy specs + the oracle) x slices of the bundled Azure day
(traces/azure2019/40, 24 h cut into --slice-minutes pieces) x seeds: 120 cells by default
(10 specs x 6 four-hour slices x 2 seeds). A timed run is one ``run_sweep`` call after
it has read the traces (worker start-up, every simulation, gathering the rows).
One worker runs the cells in this process (no pool); 2 workers are a fork pool (or Ray
tasks). The rounds alternate 1 and 2 workers, so background load on a shared machine hits
both alike; the ratio is median(2 workers cells/s) / median(1 worker cells/s). The two
tables are checked equal (the same cells give the same numbers whoever runs them).
Target (issue 14): >= 1.8x with 2 workers.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wlsim.parallel import LocalExecutor, RayExecutor
from wlsim.sweep import Grid, parse_int_list, run_sweep

SPECS = ["fixed_ttl:ttl_ms=30000|60000|120000|300000|600000|1200000", "kpa", "hybrid_histogram",
         "default"]
SAME = ["policy", "trace", "slice", "seed", "cold_starts", "idle_gb_s", "latency_p99_ms"]


def grid(slice_minutes: int, seeds: list[int]) -> Grid:
    slices = [(lo, lo + slice_minutes - 1) for lo in range(1, 1441, slice_minutes)]
    return Grid(specs=SPECS, traces=["traces/azure2019/40"], slices=slices, seeds=seeds)


def cpu_s() -> float:
    """CPU seconds of this process and its reaped children (the local pool's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(g: Grid, executor) -> tuple[float, object]:
    """run_sweep's own clock: from after reading the traces to the last row gathered."""
    table = run_sweep(g, executor, progress=False)
    return table.attrs["elapsed_s"], table


def bench(label: str, g: Grid, make, rounds: int) -> dict[int, list[float]]:
    n = len(g.cells())
    rates: dict[int, list[float]] = {1: [], 2: []}
    tables = {}
    for r in range(rounds):
        for workers in (1, 2) if r % 2 == 0 else (2, 1):
            with make(workers) as ex:
                cpu0 = cpu_s()
                wall, tables[workers] = timed(g, ex)
                cpu = cpu_s() - cpu0   # Ray's workers are not our children: not counted
            rates[workers].append(n / wall)
            print(f"  {label} round {r + 1}: {workers} worker(s) {n} cells in {wall:6.2f} s "
                  f"= {n / wall:6.2f} cells/s; {cpu:6.1f} CPU-s here, load avg {os.getloadavg()[0]:.1f}",
                  flush=True)
    a, b = (tables[w][SAME].reset_index(drop=True) for w in (1, 2))
    if not a.equals(b):
        raise SystemExit(f"{label}: 1 and 2 workers gave different tables")
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"{label}: median 1 worker {one:.2f} cells/s, 2 workers {two:.2f} cells/s, "
          f"ratio {two / one:.2f}x ({rounds} rounds)")
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slice-minutes", type=int, default=240)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ray", action="store_true", help="also Ray tasks (a local Ray with 1 vs 2 CPUs)")
    ap.add_argument("--no-local", action="store_true", help="skip the local-process runs")
    args = ap.parse_args()
    g = grid(args.slice_minutes, parse_int_list(args.seeds, "seeds"))
    cells = g.cells()
    print(f"{len(cells)} cells: {len(g.all_specs())} specs x {len(g.slices)} slices x {len(g.seeds)} seeds")
    if not args.no_local:
        bench("local", g, LocalExecutor, args.rounds)
    if args.ray:
        bench("ray", g, lambda w: RayExecutor(num_cpus=w), args.rounds)


if __name__ == "__main__":
    main()
