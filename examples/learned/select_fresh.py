"""Decide whether a network trained with fresh-start windows (``imitate --fresh-windows``)
replaces the bundled ``azure40`` (examples/learned/README.md, "Fresh-start windows in
training"), on minutes 601-720 of the bundled Azure 2019 day only, by the rule fixed before
any test run:

    each candidate decides with the reference's spec.json "decision" fields (the timer layer);
    it is eligible iff its weighted cost is <= the reference's on the validation slice
    (minutes 601-720) AND its summed cost over six fresh-start 20-minute windows (601-620,
    621-640, ..., 701-720, each replayed from an empty platform; the training windows lie in
    1-600) is <= the reference's sum; the eligible one with the lowest validation + windows
    cost is selected; none eligible: the reference stays.

    .venv/bin/python examples/learned/select_fresh.py runs/imitation-fresh-{0,1,2}/artifact [--jobs 2]

Prints every candidate's costs, their difference to the reference and the selection.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from policies.registry import load_policy  # noqa: E402
from wlsim.engine import simulate  # noqa: E402
from wlsim.metrics import summarize  # noqa: E402
from wlsim.traces import read_trace  # noqa: E402

TRACE = str(ROOT / "traces/azure2019/40")
VALIDATION = (601, 720)
WINDOWS = [(s, s + 19) for s in range(601, 720, 20)]


def with_decision(artifact: Path, decision: dict, folder: Path) -> Path:
    """A copy of ``artifact`` deciding with ``decision`` (the reference's spec.json field)."""
    shutil.copytree(artifact, folder)
    spec = json.loads((folder / "spec.json").read_text())
    spec["decision"] = decision
    (folder / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    return folder


def cost(job: tuple[str, tuple[int, int]]) -> float:
    artifact, (first, last) = job
    trace = read_trace(TRACE, start_minute=first, end_minute=last)
    return float(summarize(simulate(trace, load_policy(f"learned:{artifact}")))["weighted_cost_usd"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="+", type=Path)
    ap.add_argument("--reference", type=Path, default=ROOT / "examples/learned/azure40")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    decision = json.loads((args.reference / "spec.json").read_text())["decision"]
    slices = [VALIDATION, *WINDOWS]
    with tempfile.TemporaryDirectory() as tmp:
        names = {"reference": str(args.reference)}
        for k, c in enumerate(args.candidates):
            names[str(c)] = str(with_decision(c, decision, Path(tmp) / f"candidate-{k}"))
        jobs = [(folder, sl) for folder in names.values() for sl in slices]
        with ProcessPoolExecutor(args.jobs) as ex:
            costs = list(ex.map(cost, jobs))
    per = {name: costs[k * len(slices):(k + 1) * len(slices)] for k, name in enumerate(names)}
    val = {n: c[0] for n, c in per.items()}
    win = {n: sum(c[1:]) for n, c in per.items()}
    eligible = [n for n in names if n != "reference" and val[n] <= val["reference"] and win[n] <= win["reference"]]
    for n in names:
        print(f"{n:45s} validation {val[n]:.4f} ({val[n] - val['reference']:+.4f})  windows {win[n]:.4f} "
              f"({win[n] - win['reference']:+.4f})  per window {' '.join(f'{c:.4f}' for c in per[n][1:])}"
              f"{'  eligible' if n in eligible else ''}")
    print("selected:", min(eligible, key=lambda n: val[n] + win[n]) if eligible else
          "none (no candidate is eligible: the reference stays)")


if __name__ == "__main__":
    main()
