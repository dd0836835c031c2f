"""Seeds x lambda sweeps of ``wl train``: every (seed, lambda) pair is one training, run as a
task on wlsim.parallel's executors (local worker processes, or Ray tasks with ``--ray``), and
the trainings are ranked on the validation slice.

Each training writes its own run folder (``OUT/seed<S>-lam<L>``, the layout of wlsim.rl.train)
and exports the checkpoint chosen on validation when ``eval_every`` is set (else the last
network). The exported artifact is then simulated on the validation slice with the training's
platform (its profile), and the rows (seed, lambda, validation cost / cold starts / idle GB-s /
p99.9 wait, the artifact's path) form one table; the best is the lowest validation cost.

The trace and the validation slice are read once here and sent to each worker once (the
executor's shared objects), not once per training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wlsim.rl.train import TrainConfig

if TYPE_CHECKING:
    import pandas as pd

    from wlsim.parallel import Executor

COLUMNS = ("seed", "lambda", "validation_cost_usd", "validation_cold_starts", "validation_idle_gb_s",
           "validation_wait_p999_ms", "train_wall_s", "artifact")
TABLES = "tables"   # the executor's key of the shared (trace, validation slice) pair


def sweep_configs(base: TrainConfig, seeds: Sequence[int], lams: Sequence[float], out: Path) -> list[TrainConfig]:
    """One TrainConfig per (seed, lambda), each with its own absolute run folder (a Ray worker
    may not share this process's working directory) and no progress bar."""
    if not seeds or not lams:
        raise ValueError("a sweep needs at least one seed and one lambda")
    if any(lam < 0 for lam in lams):
        raise ValueError(f"lambda must be >= 0, got {', '.join(f'{x:g}' for x in lams if x < 0)}")
    root = Path(out).resolve()
    return [replace(base, seed=seed, lam=lam, out=str(root / f"seed{seed}-lam{lam:g}"), progress_bar=False)
            for seed in dict.fromkeys(seeds) for lam in dict.fromkeys(lams)]


def train_cell(tables: tuple[Any, Any], cfg: TrainConfig) -> dict[str, Any]:
    """One training in a worker, then its artifact on the validation slice: the table's row."""
    from wlsim.rl.train import sim_config, train, validation_metrics

    trace, validation = tables
    result = train(cfg, trace_table=trace, validation_table=validation)
    m = validation_metrics(result.artifact, validation, sim_config(cfg, validation))
    return {"seed": cfg.seed, "lambda": cfg.lam, "validation_cost_usd": m["weighted_cost_usd"],
            "validation_cold_starts": int(m["cold_starts"]), "validation_idle_gb_s": m["idle_gb_s"],
            "validation_wait_p999_ms": m["wait_p999_ms"], "train_wall_s": result.wall_s,
            "artifact": str(result.artifact)}


def run_train_sweep(base: TrainConfig, seeds: Sequence[int], lams: Sequence[float], out: Path,
                    executor: Executor, tables: tuple[Any, Any] | None = None,
                    on_row: Callable[[dict[str, Any]], None] | None = None) -> pd.DataFrame:
    """Train every (seed, lambda) on ``executor``; the table sorted by validation cost with a
    ``best`` column (the lowest). ``tables``: (trace, validation slice), default read from
    ``base`` (its trace and ``validation_minutes``, which a sweep needs)."""
    import pandas as pd

    from wlsim.rl.train import load_training_trace, load_validation

    configs = sweep_configs(base, seeds, lams, out)
    if tables is None:
        if base.validation_minutes is None:
            raise ValueError("a sweep ranks its trainings on a validation slice: give validation_minutes "
                             "(--validation-minutes FIRST,LAST)")
        tables = (load_training_trace(base), load_validation(base))
    if tables[1] is None or len(tables[1]) == 0:
        raise ValueError("a sweep ranks its trainings on a validation slice, and it has no invocations")
    rows: list[dict[str, Any]] = []
    for _, row in executor.run(train_cell, [(TABLES, cfg) for cfg in configs], {TABLES: tables}):
        rows.append(row)
        if on_row is not None:
            on_row(row)
    table = pd.DataFrame(rows, columns=list(COLUMNS)).sort_values(
        ["validation_cost_usd", "seed", "lambda"], kind="stable").reset_index(drop=True)
    table["best"] = table.index == 0
    return table
