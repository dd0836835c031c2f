"""Live cold starts under a burst of spawns (issue 10): `default` on minutes 1081-1083 of the
bundled Azure day at --speed 15 (20 functions, durations / 15 capped at 1 s: ~250 requests/s and
~110 spawns/s in its first seconds), each run on a fresh 1-node platform (wl.loop.fidelity's
run_policy_live: code warmed, statistics fresh). Prints per run the router-measured cold starts
(the router trace's cold_start_ms: the instance ready minus the request's routing) p50/p90/p99
over the run, in its first 4 s and after 8 s, the number of cold starts, the CPU (cores) the
router and the node used in the first 4 s, the load average and whether the driver kept to
its schedule (valid).

    .venv/bin/python bench/bench_cold_burst.py --runs 3
    .venv/bin/python bench/bench_cold_burst.py --runs 3 --tree /tmp/wl-before --tree .   # alternating

``--tree DIR`` runs the platform from another checkout (e.g. `git archive` of an earlier commit
plus examples/build): each run is a subprocess with that folder as its working directory and
PYTHONPATH, the trees taking turns.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _cpu_seconds(pid: str) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sample_cpu(folder: str, samples: list[dict], stop: threading.Event) -> None:
    """Every 250 ms: the CPU seconds of this run's router and node (found by their data folder)."""
    roles: dict[str, str] = {}
    while not stop.is_set():
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if pid not in roles:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if folder in cmd and ("wlruntime.router" in cmd or "wlruntime.node" in cmd):
                    roles[pid] = "router" if "wlruntime.router" in cmd else "node"
        row = {"t": time.time()}
        for pid, role in roles.items():
            try:
                row[role] = _cpu_seconds(pid)
            except OSError:
                pass
        samples.append(row)
        stop.wait(0.25)


def one_run() -> dict:
    import numpy as np

    import wl.loop.fidelity as fidelity
    from wl.loop.load import plan_load
    from wlsim.traces import read_trace

    table = read_trace("traces/azure2019/40", seed=0, start_minute=1081, end_minute=1083)
    plan = plan_load(table, speed=15, max_duration_ms=1000.0, functions=20, source="traces/azure2019/40")
    folder = tempfile.mkdtemp(prefix="wl-cold-burst-")
    samples: list[dict] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_cpu, args=(folder, samples, stop), daemon=True)
    load_before = os.getloadavg()[0]
    sampler.start()
    result = fidelity.run_policy_live(plan, "default", data_dir=folder, log=lambda *_: None)
    stop.set()
    rec = result.recorded
    cold = rec[rec["cold"].fillna(False).astype(bool)]

    def pct(rows) -> list[float] | None:
        x = rows["cold_start_ms"].to_numpy(float)
        return [round(float(v), 1) for v in np.percentile(x, [50, 90, 99])] if len(x) else None

    t0 = result.info["t0_epoch_s"]

    def at(t: float, role: str) -> float:
        return min(samples, key=lambda row: abs(row["t"] - t)).get(role, 0.0)

    cpu = {role: round((at(t0 + 4, role) - at(t0, role)) / 4, 2) for role in ("router", "node")}
    return {"tree": os.getcwd(), "cold_starts": len(cold), "cold_start_ms_p50_p90_p99": pct(cold),
            "first_4s": pct(cold[cold["arrival_ms"] < 4000]), "after_8s": pct(cold[cold["arrival_ms"] >= 8000]),
            "cpu_cores_first_4s": cpu, "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "valid": bool(result.info.get("valid"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per tree")
    ap.add_argument("--tree", action="append", default=[], help="checkout to run the platform from (repeat: "
                                                               "alternating runs); default: this one")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a single run, JSON on stdout
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run()), flush=True)
        return
    trees = [str(Path(t).resolve()) for t in args.tree] or [str(Path(__file__).resolve().parents[1])]
    for _ in range(args.runs):
        for tree in trees:
            env = {**os.environ, "PYTHONPATH": tree}
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one"], cwd=tree, env=env,
                                  capture_output=True, text=True)
            lines = done.stdout.strip().splitlines()
            print(lines[-1] if done.returncode == 0 and lines else f"{tree}: failed: {done.stderr[-2000:]}",
                  flush=True)


if __name__ == "__main__":
    main()
