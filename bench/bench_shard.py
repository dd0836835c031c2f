"""Sharded replay of the bundled Azure day against one process: identical results, and the time.

    .venv/bin/python bench/bench_shard.py                          # 5 policies, 2 workers, 4 shards
    .venv/bin/python bench/bench_shard.py kpa oracle --shards 8 --workers 2

For each policy: ``simulate`` in this process, then ``wlsim.shard.sharded_simulate`` (shards
of whole applications on a local process pool, merged); prints whether every request and
instance row is identical (instance ids included), how many shards ran a second time to reach
the global horizon, and both wall times (one run each, interleaved per policy: a shared
machine makes single times noisy).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wlsim.engine import simulate
from wlsim.parallel import LocalExecutor
from wlsim.shard import sharded_simulate
from wlsim.traces import read_trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("policies", nargs="*", default=["fixed_ttl", "hybrid_histogram", "kpa", "faascache", "oracle"])
    ap.add_argument("--trace", default="traces/azure2019/40")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    trace = read_trace(args.trace, seed=0)
    print(f"{args.trace}: {len(trace):,} invocations, {trace['app'].nunique()} applications")
    for spec in args.policies:
        t = time.perf_counter()
        one = simulate(trace, spec)
        one_s = time.perf_counter() - t
        t = time.perf_counter()
        run = sharded_simulate(trace, spec, shards=args.shards, executor=LocalExecutor(args.workers))
        shard_s = time.perf_counter() - t
        same = run.result.requests.equals(one.requests) and run.result.instances.equals(one.instances) \
            and run.result.horizon_ms == one.horizon_ms
        print(f"{spec:<20} identical={same}  shards={run.shards} re-run={run.reruns}  "
              f"one process {one_s:6.1f} s, sharded {shard_s:6.1f} s", flush=True)
        if not same:
            raise SystemExit(f"{spec}: the sharded result differs")


if __name__ == "__main__":
    main()
