"""How close to the oracle can an online policy get? (issue 11; examples/learned/README.md,
"How close an online policy can get")

The oracle (policies/builtin/oracle.py) knows every future arrival. An online policy does not
know, in particular, how long a function's *first* idle period will be: the time between its
first firing and its second. This script replays a trace under the oracle with only that
period blinded (``FirstGapOracle``; everything else keeps the oracle's knowledge, so every
figure is a lower bound for the policies described, not a policy):

  (a) ttl     the first gap handled by "keep the instance T after its execution, then kill it,
              no pre-warm", one T for all functions, the best T chosen with hindsight over a grid
              that contains every breakpoint of the cost in T (0 and each instance's first gap,
              + 1 ms), so no rule of that form does better on this trace;
  (b) keep-or-cold  each instance kept through the first gap iff that costs less than a cold
              start at the second firing (the oracle's rule with pre-warming off there): the
              cheapest any policy can do in that gap without a pre-warm it has no reason for;
  (c) chain   the last instance killed and pre-warmed at a chain of guessed periods after the
              first firing (default 1, 2, 3, 5, 10 min: the periods this sample's timers have,
              i.e. a perfect cron prior), ready ``slack`` before each guess and kept to
              ``slack`` after it, next guess when unused; other instances as in (b); per
              function the cheaper of (b) and the chain (hindsight again).

It also decomposes the gap from the oracle to ``azure40`` (and to ``azure40`` with the timer
layer's cron prior, ``decision.timers.prior=true``) per cause and per function.

    .venv/bin/python examples/learned/online_bound.py                      # Azure 2021 sample
    .venv/bin/python examples/learned/online_bound.py --trace traces/azure2019/40 \\
        --start-minute 721 --end-minute 1440 --bounds ttl                    # (a), ~5 min

Default cost weights and simulator config, as every table of the README.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from policies.builtin.oracle import Oracle  # noqa: E402
from policies.imitation import ImitationPolicy  # noqa: E402
from policies.interface import INVOKE, KILL, FunctionView, IdleDecision, InstanceView, KeepAlive  # noqa: E402
from policies.registry import load_policy  # noqa: E402
from policies.timers import TimerConfig  # noqa: E402
from wlsim.compare import BUILTIN_POLICIES  # noqa: E402
from wlsim.engine import simulate  # noqa: E402
from wlsim.metrics import summarize  # noqa: E402
from wlsim.result import SimResult  # noqa: E402
from wlsim.traces import read_trace  # noqa: E402

# Calls this close to a firing's first call are that firing (the timer layer's burst_ms).
BURST_MS = TimerConfig().burst_ms
CHAIN_MINUTES = (1, 2, 3, 5, 10)
FIRST_GAP_MODES = ("ttl", "keep_or_cold", "chain")
# A keep-alive this short would not move the engine's clock: float rounding of "until T".
EPS_MS = 1e-3


def firing_index(arrivals: np.ndarray) -> np.ndarray:
    """Firing number of each of a function's arrivals (ascending): a firing starts at the first
    call more than BURST_MS after the previous firing's first call."""
    out = np.empty(len(arrivals), dtype=np.int64)
    anchor, k = -math.inf, -1
    for i, a in enumerate(arrivals):
        if a - anchor > BURST_MS:
            anchor, k = a, k + 1
        out[i] = k
    return out


@dataclass(frozen=True)
class FirstGap:
    first_ms: float      # the first firing's first call
    second_idx: int      # index (in the function's arrivals) of the second firing's first call


class FirstGapOracle(Oracle):
    """The oracle, except in each function's first gap (decisions taken while the next call
    not yet routed is the second firing's first), which it handles blind (``first_gap``):
    ``ttl`` (keep ``ttl_ms`` after the execution, then kill; no pre-warm), ``keep_or_cold``
    (the oracle's own rule with pre-warming off) or ``chain`` (the last instance: pre-warms at
    ``chain_ms`` after the first firing, each ready ``slack_ms`` before and kept ``slack_ms``
    after; the others as ``keep_or_cold``)."""

    name = "oracle-first-gap"

    def __init__(self, first_gap: str = "ttl", ttl_ms: float = 0.0,
                 chain_ms: Sequence[float] = tuple(m * 60_000.0 for m in CHAIN_MINUTES),
                 slack_ms: float = 1_000.0, **oracle_params: Any) -> None:
        super().__init__(**oracle_params)
        if first_gap not in FIRST_GAP_MODES:
            raise ValueError(f"{self.name}: first_gap must be one of {FIRST_GAP_MODES}, got {first_gap!r}")
        if not (ttl_ms >= 0 and math.isfinite(ttl_ms)):
            raise ValueError(f"{self.name}: ttl_ms must be a finite number >= 0, got {ttl_ms!r}")
        self.first_gap = first_gap
        self.ttl_ms = float(ttl_ms)
        self.chain_ms = tuple(sorted(float(p) for p in chain_ms))
        self.chain_slack_ms = float(slack_ms)
        self._gaps: dict[str, FirstGap] = {}

    def prepare(self, trace: Any) -> None:
        super().prepare(trace)
        assert self._futures is not None
        self._gaps = {}
        for name, fut in self._futures.items():
            arrivals = fut.arrivals
            # a function fired once: its "first gap" runs to the end (a policy cannot know that)
            self._gaps[name] = FirstGap(arrivals[0], bisect_right(arrivals, arrivals[0] + BURST_MS))

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        st = self.state(fn)
        gap = self._gaps.get(fn.name)
        if gap is None or st.future is None or st.future.first_unrouted(now_ms) != gap.second_idx:
            return super().on_idle(now_ms, instance, fn)
        last = len(fn.instances) <= 1
        if self.first_gap == "keep_or_cold" or (self.first_gap == "chain" and not last):
            self.use_prewarm = False
            try:
                return super().on_idle(now_ms, instance, fn)
            finally:
                self.use_prewarm = True
        decision = super().on_idle(now_ms, instance, fn)     # keeps the oracle's work ledger
        if decision is INVOKE:
            return decision
        st.prewarm_at_ms = None                              # the oracle's pre-warm knew the gap
        if self.first_gap == "ttl":
            left = self.ttl_ms - (now_ms - instance.idle_since_ms)
            return KeepAlive(left) if left > EPS_MS else KILL
        # chain: inside a guess's window keep to its end; else kill and pre-warm for the next guess
        s = self.chain_slack_ms
        cold = fn.stats.cold_start_ms
        for p in self.chain_ms:
            due = gap.first_ms + p
            if due - s <= now_ms < due + s - EPS_MS:
                return KeepAlive(due + s - now_ms)
            if due - s - cold >= now_ms:
                st.prewarm_at_ms = now_ms
                st.prewarm_delay_ms = due - s - cold - now_ms
                return KILL
        return KILL

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "name": self.name, "first_gap": self.first_gap,
                "ttl_ms": self.ttl_ms, "chain_ms": list(self.chain_ms), "chain_slack_ms": self.chain_slack_ms}


# ---------------------------------------------------------------------------- accounting

CAUSES = ("unavoidable", "first call", "burst (same firing)", "overlap (long executions)",
          "first gap", "later gaps", "after last call", "unused pre-warms", "queueing")


def by_function(result: SimResult) -> pd.DataFrame:
    """summarize() of each function's own requests and instances (functions do not interact
    in the default unbounded cluster, so these add up to the whole run's summary)."""
    rows = []
    for name in result.requests["function"].unique():
        part = SimResult(result.policy, result.requests[result.requests["function"] == name],
                         result.instances[result.instances["function"] == name], result.horizon_ms)
        rows.append({"function": str(name), **summarize(part)})
    return pd.DataFrame(rows).set_index("function")


class Decomposition(NamedTuple):
    usd: pd.DataFrame            # function x cause
    cold_starts: pd.DataFrame    # function x cause (cold starts only)


def decompose(result: SimResult) -> Decomposition:
    """USD of the weighted cost, and cold starts, per (function, cause), CAUSES: every request's cold start (its
    latency and its instance's start memory) by why it happened, idle memory by the gap it lies
    in (before the firing it serves; "after last call" past the function's last firing),
    pre-warmed instances never used, waits behind busy instances, and what every policy pays
    (execution memory, request fees). Instances run one request at a time (the default)."""
    from policies.interface import CostWeights

    w = CostWeights()
    req = result.requests.sort_values(["function", "arrival_ms", "request_id"]).copy()
    req["firing"] = 0
    req["overlap"] = False
    for _, idx in req.groupby("function", observed=True).groups.items():
        part = req.loc[idx]
        arr = part["arrival_ms"].to_numpy(float)
        req.loc[idx, "firing"] = firing_index(arr)
        trace_end = np.maximum.accumulate(arr + part["exec_ms"].to_numpy(float))
        req.loc[idx, "overlap"] = np.r_[False, arr[1:] < trace_end[:-1]]
    last_firing = req.groupby("function", observed=True)["firing"].transform("max")
    req["rank"] = req.groupby(["function", "firing"], observed=True).cumcount()
    inst = result.instances.set_index("instance_id")
    gb_usd = inst["memory_mb"] / 1024.0 * w.gb_s_usd / 1000.0          # USD per ms held
    out: dict[tuple[str, str], float] = {}
    colds: dict[tuple[str, str], int] = {}

    def add(fn: str, cause: str, usd: float) -> None:
        out[(fn, cause)] = out.get((fn, cause), 0.0) + usd

    def gap_cause(firing: int) -> str:
        return "first call" if firing == 0 else "first gap" if firing == 1 else "later gaps"

    for r in req.itertuples():
        fn = str(r.function)
        add(fn, "unavoidable", w.request_usd + r.exec_ms * gb_usd[r.instance_id])
        add(fn, "queueing", w.latency_usd_per_s * r.wait_ms / 1000.0)
        if r.cold:
            cause = ("first call" if r.firing == 0 and r.rank == 0 else "burst (same firing)" if r.rank > 0
                     else "overlap (long executions)" if r.overlap else gap_cause(r.firing))
        else:
            cause = gap_cause(r.firing)          # waited for a pre-warm still starting, if at all
        add(fn, cause, w.latency_usd_per_s * r.cold_start_ms / 1000.0)
        if r.cold:                                # the start memory of the instance spawned for it
            i = inst.loc[r.instance_id]
            add(fn, cause, (i.ready_ms - i.created_ms) * gb_usd[r.instance_id])
            colds[(fn, cause)] = colds.get((fn, cause), 0) + 1
    horizon = result.horizon_ms
    served = req.assign(start=req["end_ms"] - req["exec_ms"]).sort_values("start").groupby("instance_id")
    for iid, i in inst.iterrows():
        fn = str(i.function)
        died = horizon if math.isnan(i.died_ms) else i.died_ms
        if iid not in served.groups:              # a pre-warm never used
            add(fn, "unused pre-warms", (died - i.created_ms) * gb_usd[iid])
            continue
        mine = served.get_group(iid)
        if i.prewarmed:                           # its start memory and its wait for the first call
            add(fn, gap_cause(int(mine["firing"].iloc[0])),
                (mine["start"].iloc[0] - i.created_ms) * gb_usd[iid])
        starts, ends = mine["start"].to_numpy(float), mine["end_ms"].to_numpy(float)
        for k in range(1, len(mine)):
            add(fn, gap_cause(int(mine["firing"].iloc[k])), max(0.0, starts[k] - ends[k - 1]) * gb_usd[iid])
        f = int(mine["firing"].iloc[-1])
        trailing = max(0.0, died - ends[-1]) * gb_usd[iid]
        add(fn, "after last call" if f == last_firing[mine.index[-1]] else gap_cause(f + 1), trailing)
    table = pd.Series(out).unstack(fill_value=0.0).reindex(columns=list(CAUSES), fill_value=0.0)
    cold_table = (pd.Series(colds, dtype="int64").unstack(fill_value=0)
                  .reindex(index=table.index, columns=list(CAUSES), fill_value=0))
    total = float(table.to_numpy().sum())
    expected = summarize(result)["weighted_cost_usd"]
    if not math.isclose(total, expected, rel_tol=1e-6):
        raise AssertionError(f"decompose: causes add up to {total:.8f} USD, the run costs {expected:.8f}")
    return Decomposition(table, cold_table)


# ---------------------------------------------------------------------------- runs

def learned(prior: bool) -> ImitationPolicy:
    """The shipped azure40, optionally with the timer layer's cron prior (policies/timers.py)."""
    base = load_policy(f"learned:{ROOT / 'examples/learned/azure40'}")
    timers = replace(base.timers, prior=prior) if base.timers is not None else None
    return ImitationPolicy([(w.T, b) for w, b in zip(base.w, base.b)], own_prewarm=base.own_prewarm,
                           cold_start_weight=base.cold_start_weight, timers=timers)


def online_variants() -> dict[str, Any]:
    """Online policies to set against the bounds (``--online``): the built-ins but the oracle, a
    few fixed TTLs, and azure40's network or default's rule (``ImitationPolicy`` without a
    network) with the timer layer at 1-3 equal gaps, with and without its cron prior."""
    base = learned(prior=False)
    layers = [(w.T, b) for w, b in zip(base.w, base.b)]
    timers = base.timers or TimerConfig()
    out: dict[str, Any] = {p: p for p in BUILTIN_POLICIES if p != "oracle"}
    out |= {f"fixed_ttl:ttl_ms={ms}": f"fixed_ttl:ttl_ms={ms}" for ms in (100, 500, 1_000, 5_000, 60_000)}
    for name, net in (("azure40", layers), ("default's rule", None)):
        for gaps, prior in itertools.product((1, 2, 3), (False, True)):
            out[f"{name}, timers {gaps} gaps{', prior' if prior else ''}"] = ImitationPolicy(
                net, timers=replace(timers, min_gaps=gaps, prior=prior))
    return out


def ttl_breakpoints(oracle_run: SimResult, trace: pd.DataFrame) -> list[float]:
    """Every T at which "keep T, then kill" changes its outcome in some first gap: each first-firing
    execution's end (in the oracle's replay) to its function's second firing, + 1 ms."""
    points = []
    req = oracle_run.requests
    for name, part in trace.groupby("function", observed=True):
        arr = np.sort(part["arrival_ms"].to_numpy(float))
        idx = bisect_right(arr.tolist(), arr[0] + BURST_MS)
        if idx < len(arr):
            mine = req[(req["function"] == name) & (req["arrival_ms"] < arr[idx])]
            points += [float(arr[idx] - e + 1.0) for e in mine["end_ms"] if e < arr[idx]]
    return points


def row(label: str, s: dict[str, Any] | pd.Series, oracle_cost: float) -> dict[str, Any]:
    return {"bound / policy": label, "cold starts": int(s["cold_starts"]), "idle GB-s": s["idle_gb_s"],
            "cost USD": s["weighted_cost_usd"], "/ oracle": s["weighted_cost_usd"] / oracle_cost}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default=str(ROOT / "traces/azure2021/Azure2021_200.csv"))
    ap.add_argument("--start-minute", type=int)
    ap.add_argument("--end-minute", type=int)
    ap.add_argument("--bounds", default="ttl,keep_or_cold,chain",
                    help="which first-gap bounds to compute (comma-separated: ttl, keep_or_cold, chain)")
    ap.add_argument("--ttl-grid-s", default="0,1,5,10,15,30,60,90,120,180,300,600",
                    help="T values (s) for (a), besides the breakpoints (only those when --breakpoints)")
    ap.add_argument("--no-breakpoints", action="store_true",
                    help="(a) over --ttl-grid-s only (a long trace has too many breakpoints to replay each)")
    ap.add_argument("--chain-minutes", default=",".join(map(str, CHAIN_MINUTES)))
    ap.add_argument("--slack-ms", type=float, default=1_000.0, help="the chain's pre-warm window, each side")
    ap.add_argument("--decompose", action=argparse.BooleanOptionalAction, default=None,
                    help="per-cause and per-function tables (default: on for traces of <= 10,000 calls)")
    ap.add_argument("--online", action="store_true",
                    help="also replay online_variants() and the cheapest of them per function, with hindsight")
    args = ap.parse_args()
    bounds = [b for b in args.bounds.split(",") if b]
    unknown = sorted(set(bounds) - set(FIRST_GAP_MODES))
    if unknown:
        ap.error(f"--bounds: unknown {', '.join(unknown)} (known: {', '.join(FIRST_GAP_MODES)})")
    kw = {k: v for k, v in (("start_minute", args.start_minute), ("end_minute", args.end_minute)) if v is not None}
    trace = read_trace(args.trace, **kw)
    decompose_on = len(trace) <= 10_000 if args.decompose is None else args.decompose
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 200)

    runs: dict[str, SimResult] = {"oracle": simulate(trace, Oracle())}
    oracle_cost = summarize(runs["oracle"])["weighted_cost_usd"]
    rows = [row("oracle", summarize(runs["oracle"]), oracle_cost)]
    print(f"{args.trace} {kw or ''}: {len(trace)} calls, {trace['function'].nunique()} functions")

    if "ttl" in bounds:
        grid = sorted({float(s) * 1000.0 for s in args.ttl_grid_s.split(",") if s} |
                      (set() if args.no_breakpoints else set(ttl_breakpoints(runs["oracle"], trace))))
        costs = {}
        for t in grid:
            res = simulate(trace, FirstGapOracle("ttl", ttl_ms=t))
            costs[t] = (summarize(res), res)
        best = min(costs, key=lambda t: costs[t][0]["weighted_cost_usd"])
        runs["ttl"] = costs[best][1]
        rows.append(row(f"(a) blind first gap, best T = {best / 1000:.3f} s ({len(grid)} T)",
                        costs[best][0], oracle_cost))
        for t in (0.0, *[t for t in grid if t >= 60_000.0][:1]):
            if t in costs and t != best:
                rows.append(row(f"    (a) at T = {t / 1000:.3f} s", costs[t][0], oracle_cost))
    if "keep_or_cold" in bounds or "chain" in bounds:
        runs["keep_or_cold"] = simulate(trace, FirstGapOracle("keep_or_cold"))
        rows.append(row("(b) blind first gap, hindsight keep-or-cold", summarize(runs["keep_or_cold"]), oracle_cost))
    if "chain" in bounds:
        chain = [float(m) * 60_000.0 for m in args.chain_minutes.split(",") if m]
        runs["chain"] = simulate(trace, FirstGapOracle("chain", chain_ms=chain, slack_ms=args.slack_ms))
        rows.append(row(f"    chain alone ({args.chain_minutes} min, +-{args.slack_ms / 1000:g} s)",
                        summarize(runs["chain"]), oracle_cost))
        per = {k: by_function(runs[k]) for k in ("keep_or_cold", "chain")}
        pick = per["chain"]["weighted_cost_usd"] < per["keep_or_cold"]["weighted_cost_usd"]
        combined = per["keep_or_cold"].where(~pick, per["chain"])
        rows.append(row(f"(c) (b) or the cron chain, per function ({int(pick.sum())} chain)",
                        combined[["cold_starts", "idle_gb_s", "weighted_cost_usd"]].sum(), oracle_cost))
    if decompose_on:
        runs["azure40"] = simulate(trace, learned(prior=False))
        runs["azure40 + prior"] = simulate(trace, learned(prior=True))
        for k in ("azure40", "azure40 + prior"):
            rows.append(row(k, summarize(runs[k]), oracle_cost))
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"1.10x the oracle = {1.1 * oracle_cost:.4f} USD")
    if args.online:
        costs, per_fn = {}, []
        for label, policy in online_variants().items():
            res = simulate(trace, policy)
            costs[label] = summarize(res)["weighted_cost_usd"]
            per_fn.append(by_function(res)["weighted_cost_usd"])
        best = pd.concat(per_fn, axis=1).min(axis=1)
        oracle_fn = by_function(runs["oracle"])["weighted_cost_usd"]
        print("\nonline policies, cost USD and / oracle")
        for label, c in sorted(costs.items(), key=lambda kv: kv[1]):
            print(f"  {label:40s} {c:.4f} {c / oracle_cost:.3f}x")
        print(f"the cheapest of these {len(costs)} per function, with hindsight: {best.sum():.4f} USD = "
              f"{best.sum() / oracle_cost:.3f}x; functions where one beats the oracle: "
              f"{(best - oracle_fn)[best < oracle_fn].round(5).to_dict() or 'none'}")
    if not decompose_on:
        return

    decomposed = {k: decompose(r) for k, r in runs.items()}
    parts = {k: d.usd for k, d in decomposed.items()}
    causes = pd.DataFrame({k: p.sum() for k, p in parts.items()})
    causes.loc["total"] = causes.sum()
    colds = pd.DataFrame({k: d.cold_starts.sum() for k, d in decomposed.items()})
    colds.loc["total"] = colds.sum()
    print("\nUSD per cause (cold starts: latency + start memory; gaps: idle memory, cold starts at the "
          "firing that ends them, pre-warm start memory)")
    print(causes.to_string(float_format=lambda x: f"{x:.4f}"))
    print("\ncold starts per cause")
    print(colds.to_string())
    print("\ndifference to the oracle per cause, USD")
    print(causes.sub(causes["oracle"], axis=0).drop(columns="oracle").to_string(float_format=lambda x: f"{x:+.4f}"))
    arr = trace.sort_values("arrival_ms").groupby("function", observed=True)["arrival_ms"]
    info = pd.DataFrame({
        "calls": arr.size(),
        "firings": arr.apply(lambda a: int(firing_index(a.to_numpy(float))[-1]) + 1),
        "1st gap s": arr.apply(lambda a: next((b - a.iloc[0] for b in a if b - a.iloc[0] > BURST_MS), math.nan)
                               / 1000.0)})
    info.index = info.index.astype(str)
    per_fn = pd.DataFrame({k: p.sum(axis=1) for k, p in parts.items()})
    table = info.join(per_fn)
    table = table.loc[(table["azure40"] - table["oracle"]).sort_values(ascending=False).index]
    print("\nUSD per function (sorted by azure40 - oracle; 1st gap: first to second firing's first call)")
    print(table.to_string(float_format=lambda x: f"{x:.4f}"))


if __name__ == "__main__":
    main()
