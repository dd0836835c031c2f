"""A policy's own CPU per request and per decision, in process (the simulator replaying a
trace), and hashes of its decisions and results, alternating this tree and another.

    .venv/bin/python bench/bench_policy.py                                   # default, the bundled day
    .venv/bin/python bench/bench_policy.py default learned:examples/learned/azure40 \\
        --trace traces/azure2019/40 --trace traces/azure2021/Azure2021_200.csv \\
        --baseline /tmp/wl-before --reps 3

Each child process (``PYTHONPATH`` on its tree) replays every trace under every policy
``--reps`` times with ``route``/``on_idle``/``prewarm``/``evict`` wrapped in a
``perf_counter_ns`` pair (the wrapper's own cost, measured on a no-op, is subtracted), then
once more recording every decision into a hash (``now``, the method, the answer; an
instance is named by its id). Printed per tree: the median over repetitions of the policy's
ns per request (all its calls / requests) and per call of each method, and the decision and
result hashes (per-request and per-instance frames) with cold starts, instances and idle
GB-s: identical hashes in both trees mean identical decisions. Also printed: the whole
replay's process CPU time per request (wrappers included, the same in both trees): on a
loaded machine the steadier measure of a policy change, since everything else is the same.
Trees alternate (this, baseline, this, baseline) so background load hits both alike; on a
shared machine compare medians of the same run only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("route", "on_idle", "prewarm", "evict")
DEFAULT_TRACES = ("traces/azure2019/40",)


def _timed(method: Callable[..., Any], acc: list[int], i: int) -> Callable[..., Any]:
    clock = time.perf_counter_ns

    def wrapper(*args: Any) -> Any:
        t = clock()
        answer = method(*args)
        acc[i] += clock() - t
        acc[i + 1] += 1
        return answer
    return wrapper


def _wrapper_overhead_ns() -> float:
    """ns a wrapped call costs more than the call itself (the clock reads, the counters)."""
    acc = [0, 0]
    noop = _timed(lambda a, b, c: None, acc, 0)
    for _ in range(200_000):
        noop(1, 2, 3)
    return acc[0] / acc[1]


def _name(x: Any) -> str:
    """An answer, or an instance, as text that does not depend on object identity."""
    inst = getattr(x, "instance", None)
    if inst is not None:
        return f"{type(x).__name__}({inst.id})"
    if isinstance(x, (list, tuple)):
        return "[" + ",".join(_name(v) for v in x) + "]"
    if hasattr(x, "id") and hasattr(x, "fn"):
        return f"inst{x.id}"
    return repr(x)


def _recorded(method: Callable[..., Any], name: str, h: Any) -> Callable[..., Any]:
    def wrapper(now_ms: float, *args: Any) -> Any:
        answer = method(now_ms, *args)
        h.update(f"{now_ms!r} {name} {_name(answer)}\n".encode())
        return answer
    return wrapper


def _frame_hash(df: Any) -> str:
    import pandas as pd

    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).values.tobytes()).hexdigest()[:16]


def child(specs: list[str], traces: list[str], reps: int) -> dict[str, Any]:
    """One tree's measurements (printed as JSON by ``--child``)."""
    from policies.registry import load_policy
    from wlsim.engine import simulate
    from wlsim.traces import read_trace

    overhead = _wrapper_overhead_ns()
    out: dict[str, Any] = {}
    for trace_path in traces:
        trace = read_trace(str(ROOT / trace_path) if not os.path.isabs(trace_path) else trace_path)
        for spec in specs:
            runs, cpus = [], []
            for _ in range(reps):
                policy = load_policy(spec)
                acc = [0] * (2 * len(METHODS))
                for k, m in enumerate(METHODS):
                    if hasattr(policy, m):
                        setattr(policy, m, _timed(getattr(policy, m), acc, 2 * k))
                cpu = time.process_time()
                simulate(trace, policy)
                cpus.append((time.process_time() - cpu) / len(trace) * 1e9)
                runs.append([acc[2 * k] - overhead * acc[2 * k + 1] for k in range(len(METHODS))]
                            + [acc[2 * k + 1] for k in range(len(METHODS))])
            policy = load_policy(spec)
            h = hashlib.sha256()
            for m in METHODS:
                if hasattr(policy, m):
                    setattr(policy, m, _recorded(getattr(policy, m), m, h))
            result = simulate(trace, policy)
            q, inst = result.requests, result.instances
            n = len(q)
            per_call = {}
            for k, m in enumerate(METHODS):
                calls = runs[0][len(METHODS) + k]
                if calls:
                    per_call[m] = [statistics.median(r[k] / calls for r in runs), calls]
            out[f"{spec} @ {trace_path}"] = {
                "ns_per_request": statistics.median(sum(r[:len(METHODS)]) / n for r in runs),
                "replay_cpu_ns": statistics.median(cpus),
                "per_call": per_call,
                "decisions": h.hexdigest()[:16],
                "requests": _frame_hash(q), "instances": _frame_hash(inst),
                "cold": int(q["cold"].sum()), "n_instances": len(inst),
                "idle_gb_s": float((inst["idle_ms"] * inst["memory_mb"]).sum() / 1024.0 / 1000.0)
                if "memory_mb" in inst else float(inst["idle_ms"].sum()),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policies", nargs="*", default=["default"], help="policy specs (default: default)")
    ap.add_argument("--trace", action="append", help=f"trace(s) to replay (default: {DEFAULT_TRACES[0]})")
    ap.add_argument("--baseline", type=Path, help="another tree to alternate with (e.g. a git archive)")
    ap.add_argument("-n", "--reps", type=int, default=3, help="timed replays per policy and trace (default 3)")
    ap.add_argument("--rounds", type=int, default=2, help="child processes per tree, alternating (default 2)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    specs, traces = args.policies, args.trace or list(DEFAULT_TRACES)
    if args.reps < 1 or args.rounds < 1:
        ap.error("--reps and --rounds must be >= 1")
    if args.child:
        print(json.dumps(child(specs, traces, args.reps)))
        return 0
    if args.baseline is not None and not (args.baseline / "policies").is_dir():
        ap.error(f"--baseline {args.baseline}: not a wl tree (no policies/ folder)")
    trees = [("this tree", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    got: dict[str, list[dict[str, Any]]] = {}
    for label, tree in trees * args.rounds:
        env = dict(os.environ, PYTHONPATH=str(tree))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--reps", str(args.reps), *specs]
        for t in traces:
            cmd += ["--trace", t]
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            return run.returncode
        got.setdefault(label, []).append(json.loads(run.stdout.strip().splitlines()[-1]))
    print(f"median of {args.reps} replays x {args.rounds} child processes per tree; load average "
          f"{os.getloadavg()[0]:.1f}. Replay CPU: the whole simulation's process time per request (the policy is "
          f"the only difference between trees); policy: wall time inside its calls (preemption included):")
    for key in got[trees[0][0]][0]:
        print(f"\n{key}")
        for label, _tree in trees:
            rows = [r[key] for r in got[label]]
            per_req = statistics.median(r["ns_per_request"] for r in rows)
            replay = statistics.median(r["replay_cpu_ns"] for r in rows)
            calls = "  ".join(f"{m} {statistics.median(r['per_call'][m][0] for r in rows) / 1000:.2f} µs "
                              f"x{rows[0]['per_call'][m][1]:,}" for m in rows[0]["per_call"])
            last = rows[-1]
            print(f"  {label:10} replay CPU {replay / 1000:6.2f} µs per request; policy {per_req / 1000:6.2f} µs "
                  f"per request ({calls})")
            print(f"  {'':10} decisions {last['decisions']} requests {last['requests']} "
                  f"instances {last['instances']}  cold {last['cold']:,} instances {last['n_instances']:,} "
                  f"idle {last['idle_gb_s']:,.1f}")
        if len(trees) > 1:
            a, b = (got[label][-1][key] for label, _ in trees)
            same = all(a[k] == b[k] for k in ("decisions", "requests", "instances"))
            print(f"  identical decisions and results: {'yes' if same else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
