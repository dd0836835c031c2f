"""Run several policies over one trace and tabulate them against the oracle.

``compare(trace, ["fixed_ttl", "hybrid_histogram", ...])`` simulates each policy (in parallel
worker processes when ``jobs > 1``), summarises every run with wlsim.metrics and returns
the summary table plus the raw results. The offline oracle is added as the reference unless
asked not to, and every row carries ``cost_vs_oracle`` = its weighted cost / the oracle's and
``avoidable_vs_oracle`` = its avoidable cost (weighted cost minus the execution and request
cost every policy pays, see wlsim.metrics) / the oracle's.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_mod
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Self

from policies.interface import CostWeights
from policies.registry import PolicySpecError, load_policy
from wlsim.metrics import DEFAULT_WEIGHTS

if TYPE_CHECKING:
    import pandas as pd

    from wlsim.config import SimConfig
    from wlsim.parallel import Executor
    from wlsim.result import SimResult

ORACLE = "oracle"
BUILTIN_POLICIES = ("fixed_ttl", "hybrid_histogram", "faascache", "kpa", "default", "oracle")


class PolicyRunError(RuntimeError):
    """A policy raised while being simulated; the message names the policy."""


def spec_name(spec: str) -> str:
    """The registry name a spec starts with (``fixed_ttl:ttl_ms=1`` -> ``fixed_ttl``)."""
    return spec.strip().split(":", 1)[0]


def with_oracle(specs: Sequence[str], include_oracle: bool = True) -> list[str]:
    """The specs, stripped and de-duplicated in order, plus ``oracle`` at the end when asked
    and not already there."""
    out: list[str] = []
    for s in specs:
        s = s.strip()
        if s and s not in out:
            out.append(s)
    if not out and not include_oracle:
        raise PolicySpecError("no policies given")
    if include_oracle and not any(spec_name(s) == ORACLE for s in out):
        out.append(ORACLE)
    return out


# ---------------------------------------------------------------------------- workers
# A worker process receives the trace once (initializer), then simulates one spec per task.
_worker_trace: Any = None
_worker_queue: Any = None


def _init_worker(trace: Any, progress_queue: Any) -> None:
    global _worker_trace, _worker_queue
    _worker_trace = trace
    _worker_queue = progress_queue


def _progress_callback(spec: str, emit: Callable[[str, int, int], None]) -> Callable[..., None]:
    """The engine's progress hook: forwards (spec, done, total) at most ~200 times per run."""
    last = [-1]

    def report(done: int, total: int) -> None:
        step = max(1, total // 200)
        if done >= total or done - last[0] >= step:
            last[0] = done
            emit(spec, int(done), int(total))

    return report


def _simulate(trace: Any, spec: str, config: SimConfig | None,
              emit: Callable[[str, int, int], None] | None) -> SimResult:
    from wlsim.engine import simulate  # simpy only where simulating

    policy = load_policy(spec)
    progress: Any = _progress_callback(spec, emit) if emit is not None else False
    try:
        result = simulate(trace, policy, config, progress=progress)
    except Exception as e:
        raise PolicyRunError(f"policy {spec!r} failed: {type(e).__name__}: {e}") from e
    result.policy = spec
    return result


def _worker_run(spec: str, config: SimConfig | None) -> SimResult:
    q = _worker_queue
    emit = (lambda s, d, t: q.put((s, d, t))) if q is not None else None
    return _simulate(_worker_trace, spec, config, emit)


# --------------------------------------------------------------------------- progress

class _Progress:
    """A rich progress display: one bar per policy (simulated requests) and one overall."""

    def __init__(self, specs: Sequence[str], total_requests: int, enabled: bool) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
        self.progress = Progress(
            TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), transient=False, console=Console(stderr=True))  # results go to stdout
        self.overall = self.progress.add_task("policies", total=len(specs))
        self.tasks = {s: self.progress.add_task(f"  {s[:26]}", total=total_requests) for s in specs}
        self.done: set[str] = set()

    def __enter__(self) -> Self:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def update(self, spec: str, done: int, total: int) -> None:
        if self.enabled and spec not in self.done:  # a late worker message must not rewind a bar
            self.progress.update(self.tasks[spec], completed=done, total=total)

    def finished(self, spec: str, requests: int) -> None:
        if self.enabled:
            self.done.add(spec)
            self.progress.update(self.tasks[spec], completed=requests, total=requests)
            self.progress.advance(self.overall)


# ------------------------------------------------------------------------------ public

def summary_table(results: dict[str, SimResult], weights: CostWeights = DEFAULT_WEIGHTS) -> pd.DataFrame:
    """One summarize() row per result, plus ``cost_vs_oracle`` and ``avoidable_vs_oracle``
    (NaN without an oracle run)."""
    import pandas as pd

    from wlsim.metrics import summarize

    rows = [summarize(r, weights) | {"policy": spec} for spec, r in results.items()]
    table = pd.DataFrame(rows)
    oracle = [s for s in results if spec_name(s) == ORACLE]
    ref = float(table.loc[table["policy"] == oracle[0], "weighted_cost_usd"].iloc[0]) if oracle else float("nan")
    table["cost_vs_oracle"] = table["weighted_cost_usd"] / ref if ref > 0 else float("nan")
    ref_avoid = (float(table.loc[table["policy"] == oracle[0], "avoidable_cost_usd"].iloc[0])
                 if oracle else float("nan"))
    table["avoidable_vs_oracle"] = table["avoidable_cost_usd"] / ref_avoid if ref_avoid > 0 else float("nan")
    return table


def compare(trace: pd.DataFrame, specs: Sequence[str], config: SimConfig | None = None,
            weights: CostWeights = DEFAULT_WEIGHTS, jobs: int = 1, progress: bool = True,
            include_oracle: bool = True,
            executor: Executor | None = None) -> tuple[pd.DataFrame, dict[str, SimResult]]:
    """Simulate every spec over ``trace``; return (summary table, {spec: SimResult}).

    ``jobs`` > 1 runs that many worker processes (0 = one per CPU core); every spec is
    checked (loaded once) before any simulation starts, so a bad spec fails fast.
    ``executor`` (wlsim.parallel, e.g. Ray) runs each spec as one of its tasks instead of
    ``jobs``; progress then advances per finished policy.
    """
    specs = with_oracle(specs, include_oracle)
    for s in specs:
        load_policy(s)  # raises PolicySpecError naming the spec
    if jobs <= 0:
        jobs = os.cpu_count() or 1
    jobs = min(jobs, len(specs))
    results: dict[str, SimResult] = {}
    display = _Progress(specs, len(trace), progress)
    if executor is not None:
        results = _run_on_executor(executor, trace, specs, config, display)
    elif jobs == 1:
        with display:
            for s in specs:
                results[s] = _simulate(trace, s, config, display.update if progress else None)
                display.finished(s, len(trace))
    else:
        results = _run_parallel(trace, specs, config, jobs, display, progress)
    ordered = {s: results[s] for s in specs}
    return summary_table(ordered, weights), ordered


def _executor_task(trace: Any, task: tuple[str, str, SimConfig | None]) -> SimResult:
    spec, label, config = task
    result = _simulate(trace, spec, config, None)
    result.policy = label
    return result


def _run_on_executor(executor: Executor, trace: pd.DataFrame, specs: list[str],
                     config: SimConfig | None, display: _Progress) -> dict[str, SimResult]:
    from policies.registry import with_absolute_path  # workers may run in another folder

    first = sorted(specs, key=lambda s: spec_name(s) != ORACLE)  # the slowest run first
    tasks = [("trace", (with_absolute_path(s), s, config)) for s in first]
    results: dict[str, SimResult] = {}
    with display:
        for i, result in executor.run(_executor_task, tasks, {"trace": trace}):
            results[first[i]] = result
            display.finished(first[i], len(trace))
    return results


def _mp_context() -> multiprocessing.context.BaseContext:
    """fork when this process has no other thread: workers start at once with the trace and
    the imported simulator already in memory, and scripts need no ``if __name__ ==
    "__main__"`` guard. With other threads running (forking those is unsafe) or without
    fork, forkserver/spawn, which re-import the caller's main module in each worker.
    The pool forks its workers at the first submit, before the progress display starts
    its refresh thread."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["pandas", "wlsim.engine", "policies"])
        return ctx
    return multiprocessing.get_context("spawn")


def _run_parallel(trace: pd.DataFrame, specs: list[str], config: SimConfig | None, jobs: int,
                  display: _Progress, progress: bool) -> dict[str, SimResult]:
    ctx = _mp_context()
    progress_queue = ctx.Queue() if progress else None
    results: dict[str, SimResult] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(trace, progress_queue)) as pool:
        # The oracle is usually the slowest run: start it first so it does not finish last alone.
        first = sorted(specs, key=lambda s: spec_name(s) != ORACLE)
        pending: dict[Future, str] = {pool.submit(_worker_run, s, config): s for s in first}
        with display:
            try:
                while pending:
                    done, _ = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                    _drain(progress_queue, display)
                    for fut in done:
                        spec = pending.pop(fut)
                        results[spec] = fut.result()
                        display.finished(spec, len(trace))
            except BaseException:
                # A failed policy or Ctrl-C: drop the queued runs instead of waiting for them.
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    return results


def _drain(q: Any, display: _Progress) -> None:
    if q is None:
        return
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline:
        try:
            spec, done, total = q.get_nowait()
        except queue_mod.Empty:
            return
        display.update(spec, done, total)
