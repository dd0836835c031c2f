"""Select the imitation policy's timer layer (policies.timers) on minutes 1-720 of the bundled
Azure 2019 day only (examples/learned/README.md, "The timer layer"): replay the validation slice
(minutes 601-720) and six fresh-start 20-minute windows inside 1-720 under each candidate
configuration and apply the rule fixed before any test run:

    a candidate is eligible iff its weighted cost is <= the layer-off cost on the validation
    slice AND its summed cost over the windows is <= the layer-off sum; the eligible one with
    the lowest validation + windows cost is selected; none eligible: the layer stays off.

    .venv/bin/python examples/learned/select_timers.py examples/learned/azure40 [--jobs 2]

Prints every candidate's costs (and their difference to off) and the selection. About 1-2 CPU
minutes per artifact.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from policies.imitation import ImitationPolicy  # noqa: E402
from policies.registry import load_policy  # noqa: E402
from wlsim.engine import simulate  # noqa: E402
from wlsim.metrics import summarize  # noqa: E402
from wlsim.traces import read_trace  # noqa: E402

TRACE = str(ROOT / "traces/azure2019/40")
VALIDATION = (601, 720)
WINDOWS = [(s, s + 19) for s in (1, 121, 241, 361, 481, 601)]


def candidates() -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {"off": None}
    for gaps, tol, tol_ms, prior in itertools.product((2, 3), (0.01, 0.05), (250.0, 50.0), (True, False)):
        out[f"gaps={gaps} tol={tol:g} tol_ms={tol_ms:g} prior={prior}"] = {
            "min_gaps": gaps, "tolerance": tol, "tolerance_ms": tol_ms, "prior": prior}
    return out


def cost(job: tuple[str, dict[str, Any] | None, tuple[int, int]]) -> float:
    artifact, timers, (first, last) = job
    base = load_policy(f"learned:{artifact}")
    policy = ImitationPolicy([(w.T, b) for w, b in zip(base.w, base.b)], own_prewarm=base.own_prewarm,
                             cold_start_weight=base.cold_start_weight, timers=timers)
    trace = read_trace(TRACE, start_minute=first, end_minute=last)
    return float(summarize(simulate(trace, policy))["weighted_cost_usd"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    cands = candidates()
    slices = [VALIDATION, *WINDOWS]
    jobs = [(args.artifact, timers, sl) for timers in cands.values() for sl in slices]
    with ProcessPoolExecutor(args.jobs) as ex:
        costs = list(ex.map(cost, jobs))
    per = {name: costs[k * len(slices):(k + 1) * len(slices)] for k, name in enumerate(cands)}
    val = {name: c[0] for name, c in per.items()}
    win = {name: sum(c[1:]) for name, c in per.items()}
    eligible = [n for n in cands if n != "off" and val[n] <= val["off"] and win[n] <= win["off"]]
    for n in sorted(cands, key=lambda n: val[n] + win[n]):
        print(f"{n:45s} validation {val[n]:.4f} ({val[n] - val['off']:+.4f})  windows {win[n]:.4f} "
              f"({win[n] - win['off']:+.4f}){'  eligible' if n in eligible else ''}")
    print("selected:", min(eligible, key=lambda n: val[n] + win[n]) if eligible else "off (no eligible candidate)")


if __name__ == "__main__":
    main()
