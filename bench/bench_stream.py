"""Bounded-memory replay of large synthetic traces: peak RSS and invocations per CPU second, 1M vs 10M.

    .venv/bin/python bench/bench_stream.py                         # 1M (24 h) and 10M (240 h)
    .venv/bin/python bench/bench_stream.py --sizes 1e6 --policy hybrid_histogram

The traces are the SAME Azure-like workload (wlsim.traces.synthetic.azure_like_chunks: 10k
functions, seed 0) scaled in duration: 1M invocations over 24 h, 10M over 240 h, so the
functions, their rates, durations and memory sizes are identical and only the length differs
(an honest 1M vs 10M comparison). Each is generated straight to Parquet in chunks (once, kept
in --dir), then replayed with ``wlsim.traces.stream.stream_replay`` (one streamed pass of the
engine, results to Parquet parts) in a fresh process that reports its own peak RSS (getrusage
ru_maxrss) and CPU time. Invocations per CPU second are printed beside per wall second: on a
shared machine the wall figure mostly measures the other processes; the load average is
printed too. Targets (issue 14): RSS <= 1.5 GB at 10M; 10M invocations/s within 20% of 1M's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = 10_000
HOURS_PER_MILLION = 24.0

GENERATE = """
import sys
from wlsim.traces.synthetic import azure_like_chunks
from wlsim.traces.stream import write_chunks
functions, invocations, hours, path = int(sys.argv[1]), int(float(sys.argv[2])), float(sys.argv[3]), sys.argv[4]
print(write_chunks(azure_like_chunks(functions, invocations, hours, seed=0), path))
"""

REPLAY = """
import json, resource, sys, time
from wlsim.traces.stream import stream_replay
r = stream_replay(sys.argv[1], sys.argv[3], sys.argv[2], batch_rows=int(float(sys.argv[4])))
u = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"invocations": r.invocations, "functions": r.functions, "wall_s": r.wall_s,
                  "cpu_s": u.ru_utime + u.ru_stime, "max_rss_mb": u.ru_maxrss / 1024,
                  "cold": r.cold, "instances": r.instances, "parts": r.request_parts}))
"""

IN_MEMORY = """
import json, resource, sys
import pandas as pd
from wlsim.engine import simulate
r = simulate(pd.read_parquet(sys.argv[1]), sys.argv[2])
u = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"invocations": len(r.requests), "wall_s": r.wall_s, "cpu_s": u.ru_utime + u.ru_stime,
                  "max_rss_mb": u.ru_maxrss / 1024, "cold": int(r.requests.cold.sum())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e6,1e7", help="invocations, comma-separated (24 h per million)")
    ap.add_argument("--policy", default="fixed_ttl")
    ap.add_argument("--batch-rows", default="1e5", help="trace rows read at a time")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/wl-bench-stream"))
    ap.add_argument("--in-memory", action="store_true",
                    help="also replay the smallest trace in memory (simulate on the whole table) for reference")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes.split(","):
        hours = float(size) / 1e6 * HOURS_PER_MILLION
        trace = args.dir / f"azure_like-{FUNCTIONS}fn-{size}-{hours:g}h.parquet"
        if not trace.exists():
            subprocess.run([sys.executable, "-c", GENERATE, str(FUNCTIONS), size, str(hours), str(trace)],
                           check=True, cwd=ROOT)
        load_before = os.getloadavg()[0]
        out = subprocess.run([sys.executable, "-c", REPLAY, str(trace), str(args.dir / f"out-{size}"),
                              args.policy, args.batch_rows], check=True, cwd=ROOT, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["load"] = (load_before + os.getloadavg()[0]) / 2
        rows.append(r)
        print(f"{r['invocations']:>11,} invocations over {hours:g} h, {r['functions']:,} functions, {args.policy}: "
              f"peak RSS {r['max_rss_mb']:,.0f} MB, {r['invocations'] / r['cpu_s']:,.0f} inv/CPU-s, "
              f"{r['invocations'] / r['wall_s']:,.0f} inv/s wall ({r['wall_s']:.0f} s, load ~{r['load']:.1f}), "
              f"cold {r['cold']:,}, instances {r['instances']:,}, {r['parts']} request parts", flush=True)
    if args.in_memory:
        size = args.sizes.split(",")[0]
        hours = float(size) / 1e6 * HOURS_PER_MILLION
        trace = args.dir / f"azure_like-{FUNCTIONS}fn-{size}-{hours:g}h.parquet"
        out = subprocess.run([sys.executable, "-c", IN_MEMORY, str(trace), args.policy], check=True, cwd=ROOT,
                             capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['invocations']:>11,} invocations in memory (simulate): peak RSS {r['max_rss_mb']:,.0f} MB, "
              f"{r['invocations'] / r['cpu_s']:,.0f} inv/CPU-s (process CPU incl. reading), cold {r['cold']:,}")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        speed = (b["invocations"] / b["cpu_s"]) / (a["invocations"] / a["cpu_s"])
        print(f"largest / smallest: inv per CPU-s x{speed:.2f}, peak RSS x{b['max_rss_mb'] / a['max_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
