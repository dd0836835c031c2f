"""What a decision deadline costs (wlruntime/router/deadline.py): a policy decision called
directly against the same decision through DeadlinePolicy (handed to the policy's worker
thread, waited for with a budget), interleaved in the same run.

    .venv/bin/python bench/bench_deadline.py            # ~10 s
    .venv/bin/python bench/bench_deadline.py --rounds 30 --calls 2000

Prints the median µs per decision of each, over ``--rounds`` interleaved rounds of ``--calls``
decisions, and the added cost. The decision is route() of the example custom policy
(examples/policies/keep_warm_5min.py) on a function with one idle instance, and of the
built-in fixed_ttl: both cost a few µs, so the difference is the hand-off.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies.interface import RequestView
from policies.registry import load_policy
from wlruntime.router.deadline import DeadlinePolicy

logging.getLogger("wlruntime.router.deadline").setLevel(logging.CRITICAL)  # counted in the table instead


class _Instance:
    def __init__(self) -> None:
        self.queue: list = []
        self.idle_since_ms = 0.0
        self.memory_mb = 16.0


class _Function:
    def __init__(self) -> None:
        self.name = "f"
        self.idle = [_Instance()]


def per_call_us(policy, calls: int) -> float:
    fn, request = _Function(), RequestView(1, "f", 0.0, 0)
    route = policy.route
    t = time.perf_counter()
    for _ in range(calls):
        route(0.0, request, fn)
    return (time.perf_counter() - t) / calls * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--budget-ms", type=float, default=5.0)
    args = parser.parse_args(argv)
    specs = [f"custom:{ROOT / 'examples/policies/keep_warm_5min.py'}", "fixed_ttl"]
    print(f"route() decisions, median of {args.rounds} interleaved rounds x {args.calls} calls (µs per decision)")
    print(f"{'policy':<20} {'direct':>8} {'deadline':>9} {'added':>8} {'ratio':>7} {'overruns':>8}")
    for spec in specs:
        inner = load_policy(spec)
        wrapped = DeadlinePolicy(load_policy(spec), budget_ms=args.budget_ms)
        direct, deadline = [], []
        for _ in range(args.rounds):
            direct.append(per_call_us(inner, args.calls))
            deadline.append(per_call_us(wrapped, args.calls))
        d, w = statistics.median(direct), statistics.median(deadline)
        # Overruns here are the machine's scheduling delays (nothing in these decisions is slow).
        print(f"{inner.name:<20} {d:8.2f} {w:9.2f} {w - d:8.2f} {w / d:6.0f}x {wrapped.overruns:8d}")


if __name__ == "__main__":
    main()
