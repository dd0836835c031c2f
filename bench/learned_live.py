"""Issue 10's last step: a keep-alive policy trained in the simulator calibrated to wl, run live
on the fidelity slice next to ``default`` and the best fixed TTL, its live gain beside the gain
the simulator predicted.

The live slice is ``bench/fidelity.py``'s: minutes 1081-1090 of the bundled Azure day, its 20
busiest functions, replayed at ``--speed 15`` (arrival gaps and durations / 15, durations
capped at 1 s; cold starts are the platform's own 1.5-4 ms, not scaled). A policy reads idle
periods, arrival counts per window and the cold start in live milliseconds, and the cost it is
judged by weighs idle GB-s (which shrink 15x with the time axis) against cold-start seconds
(which do not), so a policy trained on the day's real time scale would be tuned for a world
where a cold start is 15x cheaper relative to idle memory than the live run is. Training and
the fixed TTL's choice therefore see the training minutes of the same 20 functions compressed
exactly as the live run is (``wl.loop.load.plan_load`` with the same speed and cap, each
function at the memory it is deployed with), simulated with a profile of the machine the live
runs use (a session calibration, ``bench/fidelity.py``'s ``profile-session.json``). At this
time scale the cheapest keep-alive is tens of milliseconds, below the imitation policy's
default first bin edge (500 ms), so training uses its own bins (``--bins-ms 2,120000``: 20
log-spaced edges from 2 ms to 2 min, kept in the artifact):

    .venv/bin/python bench/learned_live.py prepare          # runs/learned-live/train-x15.parquet
    .venv/bin/python bench/learned_live.py ttl --profile P  # fixed TTL grid on (compressed) minutes 1-720
    .venv/bin/python bench/learned_live.py train --seed 0 --profile P --bins-ms 2,120000
    .venv/bin/python bench/learned_live.py select           # lowest validation cost -> examples/learned/azure40-wl
    .venv/bin/python bench/learned_live.py live \\
        --policies default,fixed_ttl:ttl_ms=25,learned:examples/learned/azure40-wl

with P = examples/learned/azure40-wl/profile-session-0949.json (the calibration the shipped
artifact was trained against; without ``--profile`` the bundled ``wl``).

Real minutes 1-600 (training) and 601-720 (validation) are compressed minutes 1-40 and 41-48.
``live`` runs ``wl.loop.fidelity.fidelity`` (a fresh platform per policy) and writes
``live-gain-HHMM.json`` (UTC start): per policy the weighted cost (and its memory and latency
parts), cold starts, idle GB-s and router-side added latency p50/p99, each live
(``wlsim.metrics.summarize`` of ``wl.loop.live.live_result``) and simulated (``predicted``: the
schedule before the run, reshaped by the profile's HTTP front; ``as_sent``: the driver's actual
send times; ``recorded``: the router's own trace; ``recorded_cold``: that trace with the cold
starts the platform had at each moment), and each learned policy's gain against each baseline
in every column. On a shared machine the platform's cold starts grow with the load (seconds in
a burst of spawns), so run it on a quiet machine, more than once, in rotated policy orders.

``live --profile`` (default ``session``) is the profile of the simulated columns: ``session``
calibrates the simulator on this machine just before the policies run
(``wl.loop.calibrate.session_profile``, ~100 s; the profile is kept in the JSON and written next
to the runs in runs/learned-live/), so the predicted gain is set against the live gain with the
same moment's cold starts; ``wl`` (the bundled profile) or any bundled name or file as before.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

TRACE = "traces/azure2019/40"
TEST_START, TEST_MINUTES, FUNCTIONS = 1081, 10, 20        # bench/fidelity.py's slice
SPEED, MAX_DURATION_MS = 15.0, 1000.0
TRAIN_REAL = (1, 720)                                      # real minutes: training 1-600, validation 601-720
WORK = Path("runs/learned-live")
TRAIN_FILE = WORK / "train-x15.parquet"
ARTIFACT_DIR = Path("examples/learned/azure40-wl")
TTL_GRID_MS = (1, 10, 25, 50, 100, 250, 500, 1000, 2000, 4000, 8000, 15000, 30000, 60000)
# weighted cost = memory_usd (GB-s held) + request fees + latency_usd (wait + cold start) + rejections
METRICS = ("weighted_cost_usd", "memory_usd", "latency_usd", "avoidable_cost_usd", "cold_starts", "idle_gb_s",
           "mean_instances", "router_added_p50_ms", "router_added_p99_ms")
SIM_COLUMNS = ("predicted", "as_sent", "recorded", "recorded_cold")


def compressed_minutes(real: tuple[int, int], speed: float = SPEED) -> tuple[int, int]:
    """Real minutes [a, b] (1-based, inclusive) as minutes of the compressed trace; exact when
    the slice's bounds are multiples of ``speed`` minutes (0, 600, 720 at speed 15)."""
    first = int((real[0] - 1) / speed) + 1
    last = int(real[1] / speed)
    if (real[0] - 1) % speed or real[1] % speed:
        raise ValueError(f"minutes {real[0]}-{real[1]} do not fall on whole compressed minutes at speed {speed:g}")
    return first, last


def test_plan(trace: str = TRACE) -> Any:
    """The live slice's load plan, exactly as bench/fidelity.py builds it."""
    from wl.loop.load import plan_load
    from wlsim.traces import read_trace

    table = read_trace(trace, seed=0, start_minute=TEST_START, end_minute=TEST_START + TEST_MINUTES - 1)
    return plan_load(table, speed=SPEED, max_duration_ms=MAX_DURATION_MS, functions=FUNCTIONS, source=trace)


def compressed_training_trace(trace: str = TRACE) -> pd.DataFrame:
    """Real minutes ``TRAIN_REAL`` of the live slice's functions, compressed like the live run
    (``plan_load``: arrivals and durations / speed, durations capped), each function at the
    memory the live run deploys it with; canonical columns."""
    from wl.loop.load import plan_load
    from wlsim.traces import read_trace

    plan = test_plan(trace)
    memory = plan.functions.set_index("function")["memory_mb"]
    table = read_trace(trace, seed=0, start_minute=TRAIN_REAL[0], end_minute=TRAIN_REAL[1])
    table = table[table["function"].astype(str).isin(memory.index)].copy()
    for column in ("app", "function"):
        table[column] = table[column].astype(str)
    table["memory_mb"] = table["function"].map(memory).astype(float)
    train = plan_load(table, speed=SPEED, max_duration_ms=MAX_DURATION_MS, source=trace).canonical()
    # plan_load measures from the first arrival; measure from the slice's start instead, so the
    # compressed minutes are the real ones / speed
    offset = float(table["arrival_ms"].min()) / SPEED
    return train.assign(arrival_ms=train["arrival_ms"] + offset)


def simulate_wl(trace: pd.DataFrame, policy: Any, profile: Any = "wl", seed: int = 0) -> Any:
    """``trace`` under ``policy`` as wl.loop.fidelity's prediction simulates it: the profile's
    (a Profile, a bundled name or a file) cold starts (per-spawn draws for the synthetic
    function) and its HTTP front reshaping."""
    from wlsim.profile import Profile, load_profile

    return (profile if isinstance(profile, Profile) else load_profile(profile)).simulate(trace, policy, seed=seed)


def summary(result: Any) -> dict[str, float]:
    """The METRICS of a run, from wlsim.metrics.summarize (cost, cold starts, idle GB-s,
    instances) and the router-side added latency (wait + cold start) of served requests."""
    import numpy as np

    from wlsim.metrics import summarize

    s = summarize(result)
    req = result.requests
    served = ~req["rejected"].to_numpy(bool)
    added = (req["wait_ms"].fillna(0.0) + req["cold_start_ms"].fillna(0.0)).to_numpy(float)[served]
    out = {k: float(s[k]) for k in METRICS if k in s}
    out["router_added_p50_ms"] = float(np.percentile(added, 50)) if added.size else float("nan")
    out["router_added_p99_ms"] = float(np.percentile(added, 99)) if added.size else float("nan")
    return out


def gain(policy_cost: float, baseline_cost: float) -> float:
    """Percent of the baseline's weighted cost the policy saves (negative: it costs more)."""
    return 100.0 * (baseline_cost - policy_cost) / baseline_cost


# ----------------------------------------------------------------------------- steps

def cmd_prepare(args: argparse.Namespace) -> None:
    train = compressed_training_trace(args.trace)
    WORK.mkdir(parents=True, exist_ok=True)
    train.to_parquet(TRAIN_FILE, index=False)
    span = float(train["arrival_ms"].max()) / 60_000.0
    print(f"{TRAIN_FILE}: {len(train):,} invocations, {train['function'].nunique()} functions, "
          f"{span:.1f} compressed minutes (real minutes {TRAIN_REAL[0]}-{TRAIN_REAL[1]} / {SPEED:g})")


def cmd_ttl(args: argparse.Namespace) -> None:
    from wlsim.traces import read_trace

    first, last = compressed_minutes(TRAIN_REAL)
    table = read_trace(str(TRAIN_FILE), start_minute=first, end_minute=last)
    rows = []
    for ttl in TTL_GRID_MS:
        spec = f"fixed_ttl:ttl_ms={ttl}"
        row = {"policy": spec, "ttl_ms": ttl, **summary(simulate_wl(table, spec, args.profile))}
        rows.append(row)
        print(f"  TTL {ttl:>6} ms: cost {row['weighted_cost_usd']:.5f} USD, {row['cold_starts']:,.0f} cold starts, "
              f"{row['idle_gb_s']:,.0f} idle GB-s", flush=True)
    row = {"policy": "default", "ttl_ms": None, **summary(simulate_wl(table, "default", args.profile))}
    rows.append(row)
    best = min((r for r in rows if r["ttl_ms"] is not None), key=lambda r: r["weighted_cost_usd"])
    print(f"  default: cost {row['weighted_cost_usd']:.5f} USD; best fixed TTL {best['ttl_ms']} ms")
    ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
    doc = {"what": f"fixed TTL grid on the training slice, compressed like the live run, profile {args.profile}",
           "trace": f"{args.trace} real minutes {TRAIN_REAL[0]}-{TRAIN_REAL[1]}, the live slice's {FUNCTIONS} "
                    f"functions, / {SPEED:g} (compressed minutes {first}-{last})",
           "profile": args.profile, "best_ttl_ms": best["ttl_ms"], "rows": rows}
    (ARTIFACT_DIR / "fixed-ttl.json").write_text(json.dumps(doc, indent=2) + "\n")


def cmd_train(args: argparse.Namespace) -> None:
    from wlsim.rl.imitate import ImitationConfig, train

    tm = compressed_minutes((TRAIN_REAL[0], 600))
    vm = compressed_minutes((601, TRAIN_REAL[1]))
    cfg = ImitationConfig(trace=str(TRAIN_FILE), train_minutes=tm, validation_minutes=vm, seed=args.seed,
                          iterations=args.iterations, epochs=args.epochs, eval_every=args.eval_every,
                          out=str(WORK / f"imitation-{args.seed}"), tensorboard=False, profile=args.profile,
                          bins_ms=args.bins_ms)
    artifact = train(cfg, log=lambda m: print(m, flush=True))
    print(f"artifact: {artifact}")


def cmd_select(args: argparse.Namespace) -> None:
    """Ship the seed with the lowest validation cost: its artifact and train.json (plus every
    seed's validation cost) into ARTIFACT_DIR."""
    import shutil

    runs = sorted(WORK.glob("imitation-*/train.json"))
    if not runs:
        raise SystemExit(f"no training in {WORK}: run `train --seed S` first")
    docs = {json.loads(p.read_text())["meta"]["seed"]: (p.parent, json.loads(p.read_text())) for p in runs}
    costs = {seed: doc["meta"]["validation_cost_usd"] for seed, (_, doc) in docs.items()}
    best = min(costs, key=costs.__getitem__)
    folder, doc = docs[best]
    ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("spec.json", "weights.npz"):
        shutil.copy(folder / "artifact" / name, ARTIFACT_DIR / name)
    doc["seeds_validation_cost_usd"] = {str(s): c for s, c in sorted(costs.items())}
    (ARTIFACT_DIR / "train.json").write_text(json.dumps(doc, indent=2) + "\n")
    for seed, cost in sorted(costs.items()):
        print(f"  seed {seed}: validation cost {cost:.5f} USD{'  <- shipped' if seed == best else ''}")


def cmd_live(args: argparse.Namespace) -> None:
    from policies.registry import split_specs
    from wl.loop.calibrate import cold_start_summary, profile_for
    from wl.loop.fidelity import fidelity
    from wl.loop.load import LoadError
    from wlsim.profile import ProfileError

    plan = test_plan(args.trace)
    policies = split_specs(args.policies)
    out = Path(args.out)
    try:
        # the session profile is written next to the runs (runs/, not committed) and kept in the JSON
        profile = profile_for(args.profile, WORK / out.stem, max_lateness_ms=args.max_lateness_ms,
                              log=lambda m: print(m, flush=True))
    except (LoadError, ProfileError) as error:
        raise SystemExit(f"error: --profile {args.profile}: {error}") from None
    print(f"{len(plan.requests):,} requests, {len(plan.functions)} functions, {plan.span_s:.1f} s live per policy; "
          f"{profile.describe()}", flush=True)
    predicted = {p: summary(simulate_wl(plan.canonical(), p, profile)) for p in policies}
    load_before = os.getloadavg()
    results = fidelity(plan, policies, profile, max_lateness_ms=args.max_lateness_ms,
                       log=lambda m: print(m, flush=True))
    load_after = os.getloadavg()
    rows = []
    for f in results:
        # the run itself (requests, router trace, instance polls) for a later look; not committed
        f.load.write(WORK / f"{out.stem}-{re.sub(r'[^A-Za-z0-9_.=-]+', '_', f.policy)}")
        live_run = f.live_run()
        rows.append({"policy": f.policy, "valid": bool(f.load.info.get("valid")),
                     "invalid_because": f.load.info.get("invalid_because", ""),
                     "load": {k: f.load.summary().get(k) for k in ("lateness_p99_ms", "statuses", "policy_fallbacks",
                                                                   "front_p99_ms", "peak_starting_busy")},
                     "live": summary(live_run) if live_run is not None else None,
                     "predicted": predicted[f.policy], "as_sent": summary(f.sims["intended"]),
                     "recorded": summary(f.sims["recorded"]) if "recorded" in f.sims else None,
                     "recorded_cold": summary(f.sims["recorded_cold"]) if "recorded_cold" in f.sims else None})
    doc = {"what": "learned keep-alive policy trained against the wl profile, live against default and the best "
                   "fixed TTL (chosen on the training slice) on the fidelity slice",
           "trace": args.trace, "start_minute": TEST_START, "minutes": TEST_MINUTES, "functions": FUNCTIONS,
           "speed": SPEED, "max_duration_ms": MAX_DURATION_MS, "profile": args.profile,
           "profile_cold_start_ms": cold_start_summary(profile), "profile_fitted": profile.model_dump(),
           "requests": len(plan.requests),
           "command": " ".join(sys.argv), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "load_average_before_after": [load_before[0], load_after[0]], "policies": rows,
           "gains_percent": gains(rows)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    for r in rows:
        live = r["live"] or {}
        state = "valid" if r["valid"] else "INVALID: " + r["invalid_because"]
        print(f"{r['policy']:<45} live cost {live.get('weighted_cost_usd', float('nan')):.6f}  predicted "
              f"{r['predicted']['weighted_cost_usd']:.6f}  {state}")
    for g in doc["gains_percent"]:
        print(f"{g['policy']} vs {g['baseline']}: live {g['live']:+.2f}%, predicted {g['predicted']:+.2f}%, "
              f"as sent {g['as_sent']:+.2f}%")
    print(f"written {out}")


def gains(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each learned policy's weighted-cost gain (%) against every other policy, per column."""
    out = []
    for r in rows:
        if not r["policy"].startswith("learned:"):
            continue
        for b in rows:
            if b is r or b["policy"].startswith("learned:"):
                continue
            entry = {"policy": r["policy"], "baseline": b["policy"]}
            for col in ("live", *SIM_COLUMNS):
                mine, base = r.get(col), b.get(col)
                entry[col] = gain(mine["weighted_cost_usd"], base["weighted_cost_usd"]) if mine and base else None
            out.append(entry)
    return out


def _bins_ms(text: str) -> tuple[float, float]:
    from wlsim.rl.imitate import parse_bins_ms

    try:
        return parse_bins_ms(text)
    except ValueError as e:           # argparse prints this message (a plain ValueError: only the type's name)
        raise argparse.ArgumentTypeError(str(e)) from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default=TRACE)
    sub = ap.add_subparsers(dest="step", required=True)
    sub.add_parser("prepare", help="write the compressed training trace")
    ttl = sub.add_parser("ttl", help="choose the fixed TTL on the training slice")
    t = sub.add_parser("train", help="train the imitation policy against the wl profile")
    for step in (ttl, t):
        # the profile training and the TTL grid simulate with: a bundled name or a file, e.g. a
        # session calibration of the machine the live runs will use (live --profile session)
        step.add_argument("--profile", default="wl", help="platform profile to train / choose the TTL against")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--iterations", type=int, default=3)
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--eval-every", type=int, default=20)
    t.add_argument("--bins-ms", type=_bins_ms, default=None, metavar="LO,HI",
                   help="idle-period bins log-spaced from LO to HI ms (default 500,7200000: too coarse for live "
                        "keep-alives of 10-25 ms), e.g. 2,120000")
    sub.add_parser("select", help="ship the seed with the lowest validation cost to " + str(ARTIFACT_DIR))
    live = sub.add_parser("live", help="run the live slice and write live-gain.json")
    live.add_argument("--policies", required=True)
    live.add_argument("--max-lateness-ms", type=float, default=50.0)
    live.add_argument("--profile", default="session", help="profile of the simulated columns: session (calibrate "
                      "on this machine now, ~100 s), wl (the bundled one training used), another name or a file")
    live.add_argument("--out", default=str(ARTIFACT_DIR / f"live-gain-{time.strftime('%H%M', time.gmtime())}.json"))
    args = ap.parse_args()
    {"prepare": cmd_prepare, "ttl": cmd_ttl, "train": cmd_train, "select": cmd_select,
     "live": cmd_live}[args.step](args)


if __name__ == "__main__":
    main()
