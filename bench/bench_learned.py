"""Benchmark of the imitation-learned keep-alive policy (policies.imitation), in one run:

1. whole-replay speed of the bundled Azure day (or a part of it) under fixed TTL, default and
   the learned policy, repetitions interleaved so background load hits them alike: median
   simulated invocations per wall second and per CPU second, and the ratio to fixed TTL;
2. the learned decision time: median (and p90) microseconds of the on_idle decisions that run
   the network (features + forward + expected-cost argmin), and of route decisions, timed in
   place during a replay.

    .venv/bin/python bench/bench_learned.py [--artifact examples/learned/azure40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies.imitation import ImitationPolicy
from policies.registry import load_policy
from wlsim.engine import simulate
from wlsim.traces import read_trace


class TimedImitation(ImitationPolicy):
    """Records the time of every network decision (choose) and every route."""

    def __init__(self, base: ImitationPolicy) -> None:
        # the same network and decision parameters (own_prewarm, cold_start_weight)
        super().__init__([(w.T, b) for w, b in zip(base.w, base.b)], **base.decision())
        self.choose_ns: list[int] = []
        self.route_ns: list[int] = []

    def choose(self, now_ms, inst, fn, st):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter_ns()
        a = super().choose(now_ms, inst, fn, st)
        self.choose_ns.append(time.perf_counter_ns() - t0)
        return a

    def route(self, now_ms, request, fn):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter_ns()
        d = super().route(now_ms, request, fn)
        self.route_ns.append(time.perf_counter_ns() - t0)
        return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", default=str(ROOT / "examples/learned/azure40"))
    ap.add_argument("--trace", default=str(ROOT / "traces/azure2019/40"))
    ap.add_argument("--start-minute", type=int, default=None)
    ap.add_argument("--end-minute", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    trace = read_trace(args.trace, start_minute=args.start_minute, end_minute=args.end_minute)
    specs = ["fixed_ttl", "default", f"learned:{args.artifact}"]
    load_policy(specs[-1])
    wall: dict[str, list[float]] = {s: [] for s in specs}
    cpu: dict[str, list[float]] = {s: [] for s in specs}
    for _ in range(args.repeats):
        for spec in specs:                                   # interleaved
            policy = load_policy(spec)
            w0, c0 = time.perf_counter(), time.process_time()
            simulate(trace, policy)
            wall[spec].append(len(trace) / (time.perf_counter() - w0))
            cpu[spec].append(len(trace) / (time.process_time() - c0))
    # On a shared machine the wall numbers are mostly waiting for a CPU: compare per CPU second.
    base = statistics.median(cpu["fixed_ttl"])
    print(f"replay of {len(trace):,} invocations, median of {args.repeats} interleaved runs")
    print(f"{'policy':<40} {'inv/s (wall)':>14} {'inv/s (CPU)':>13} {'÷ fixed TTL (CPU)':>18}")
    for spec in specs:
        c = statistics.median(cpu[spec])
        print(f"{spec:<40} {statistics.median(wall[spec]):>14,.0f} {c:>13,.0f} {c / base:>18.2f}")
    learned = load_policy(specs[-1])
    if not isinstance(learned, ImitationPolicy):
        print("(not an imitation artifact: no per-decision timing)")
        return
    timed = TimedImitation(learned)
    simulate(trace, timed)
    for name, ns in (("network decision (on_idle: features + forward + argmin)", timed.choose_ns),
                     ("route decision", timed.route_ns)):
        us = sorted(n / 1000 for n in ns)
        print(f"{name}: median {statistics.median(us):.2f} µs, p90 {us[int(0.9 * len(us))]:.2f} µs "
              f"over {len(us):,} decisions")


if __name__ == "__main__":
    main()
