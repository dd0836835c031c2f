"""A policy study as a grid: policy specs x parameter values x traces (or slices) x seeds.

Every cell is one simulation, run as one task of a wlsim.parallel executor (local processes
or Ray); the workers send back one summary row each (not the per-request tables), so a grid
of thousands of cells gathers into one small table.

A grid comes from the command line (``wl sim sweep``) or a YAML file::

    traces: [traces/azure2019/40]
    slices: ["1-240", "241-480"]          # minute ranges (1-based, inclusive); omit = whole trace
    seeds: [0, 1]
    policies:
      - fixed_ttl:ttl_ms=60000|300000|600000    # '|' separates the values of one parameter
      - name: hybrid_histogram                  # or a name with a grid of parameters
        params: {range_minutes: [120, 240]}
      - kpa
    oracle: true                          # one oracle cell per trace x slice x seed (the reference)
    config: {nodes: 1, node_memory_mb: null, cold_start_ms: null, concurrency: 1, max_instances: null,
             profile: null}   # profile: container (default), wl or a wl calibrate file
    weights: {gb_s_usd: 0.0000166667}

The result table has one row per cell (its spec, the spec's parameters as ``param_<name>``
columns, trace, slice, seed and every wlsim.metrics.summarize field) plus
``cost_vs_oracle`` against the oracle of the same trace, slice and seed. ``front`` averages
each spec over traces, slices and seeds and marks the Pareto-efficient specs (cold starts
against idle memory), which ``write_sweep`` plots with wlsim.plots.pareto.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policies.interface import CostWeights
from wlsim.compare import ORACLE, spec_name
from wlsim.metrics import DEFAULT_WEIGHTS

if TYPE_CHECKING:
    import pandas as pd

    from wlsim.config import SimConfig
    from wlsim.parallel import Executor

ALTERNATIVES = "|"
SLICE_RE = re.compile(r"^\s*(\d+)?\s*-\s*(\d+)?\s*$")
CONFIG_KEYS = ("nodes", "node_memory_mb", "cold_start_ms", "concurrency", "max_instances", "profile")
WEIGHT_KEYS = ("gb_s_usd", "request_usd", "latency_usd_per_s")


class SweepError(ValueError):
    """A grid that cannot run: the message names the file, key or value that is wrong."""


Slice = tuple[int | None, int | None]   # (start_minute, end_minute), None = open end


@dataclass(frozen=True)
class Cell:
    """One simulation of the grid."""
    spec: str
    trace: str
    slice: Slice
    seed: int

    @property
    def trace_key(self) -> str:
        """Names the trace table this cell replays (the same for every spec)."""
        return f"{self.trace}|{slice_label(self.slice)}|{self.seed}"


@dataclass
class Grid:
    """The axes of a sweep; ``cells()`` is their product."""
    specs: list[str]
    traces: list[str]
    slices: list[Slice] = field(default_factory=lambda: [(None, None)])
    seeds: list[int] = field(default_factory=lambda: [0])
    oracle: bool = True
    config: dict[str, Any] = field(default_factory=dict)     # make_config keyword arguments
    weights: dict[str, float] = field(default_factory=dict)  # CostWeights fields

    def all_specs(self) -> list[str]:
        """Every expanded spec (each once, in order), plus the oracle when asked."""
        out: list[str] = []
        for s in self.specs:
            for e in expand_spec(s):
                if e not in out:
                    out.append(e)
        if self.oracle and not any(spec_name(s) == ORACLE for s in out):
            out.append(ORACLE)
        if not out:
            raise SweepError("the grid has no policies")
        return out

    def cells(self) -> list[Cell]:
        return [Cell(spec, trace, sl, seed) for trace, sl, seed, spec in
                itertools.product(self.traces, self.slices, self.seeds, self.all_specs())]

    def cost_weights(self) -> CostWeights:
        return CostWeights(**self.weights) if self.weights else DEFAULT_WEIGHTS


# -------------------------------------------------------------------------- parsing

def expand_spec(spec: str) -> list[str]:
    """``fixed_ttl:ttl_ms=1|2:x=a|b`` -> the four specs of the product, in order.
    A spec without ``|`` is itself."""
    spec = spec.strip()
    parts = spec.split(":")
    choices: list[list[str]] = []
    for part in parts:
        if "=" in part and ALTERNATIVES in part:
            key, values = part.split("=", 1)
            vals = [v.strip() for v in values.split(ALTERNATIVES)]
            if any(v == "" for v in vals):
                raise SweepError(f"policy spec {spec!r}: empty value in {part!r}")
            choices.append([f"{key}={v}" for v in vals])
        else:
            choices.append([part])
    return [":".join(p) for p in itertools.product(*choices)]


def spec_params(spec: str) -> dict[str, str]:
    """The ``key=value`` parameters of a spec (values as written)."""
    return dict(p.split("=", 1) for p in spec.split(":")[1:] if "=" in p)


def parse_slice(text: str | Sequence[Any] | None) -> Slice:
    """``"1-240"``, ``"721-"``, ``"-60"``, ``[1, 240]`` or None (whole trace)."""
    if text is None or text == "" or text == "all":
        return (None, None)
    if isinstance(text, (list, tuple)) and len(text) == 2:
        lo, hi = text
    else:
        m = SLICE_RE.match(str(text))
        if not m:
            raise SweepError(f"bad slice {text!r}: expected START-END minutes such as 1-240 (1-based, inclusive)")
        lo, hi = m.groups()
    try:
        lo = None if lo is None else int(lo)
        hi = None if hi is None else int(hi)
    except (TypeError, ValueError):
        raise SweepError(f"bad slice {text!r}: minutes must be whole numbers") from None
    if (lo is not None and lo < 1) or (lo is not None and hi is not None and hi < lo):
        raise SweepError(f"bad slice {text!r}: minutes are 1-based and START <= END")
    return (lo, hi)


def slice_label(sl: Slice) -> str:
    lo, hi = sl
    return "all" if lo is None and hi is None else f"{lo or 1}-{hi or ''}"


def parse_int_list(text: str, what: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) -> a list of ints."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        try:
            out.extend(range(int(m[1]), int(m[2]) + 1) if m else [int(part)])
        except ValueError:
            raise SweepError(f"bad {what} {part!r}: expected whole numbers such as 0,1,2 or 0-4") from None
    if not out:
        raise SweepError(f"no {what} given")
    return out


def _policy_entries(entries: Any, source: str) -> list[str]:
    if not isinstance(entries, list) or not entries:
        raise SweepError(f"{source}: 'policies' must be a non-empty list")
    specs: list[str] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            specs.append(entry)
            continue
        if not isinstance(entry, dict) or "name" not in entry:
            raise SweepError(f"{source}: policies[{i}] must be a spec string or a mapping with 'name'")
        unknown = set(entry) - {"name", "params"}
        if unknown:
            raise SweepError(f"{source}: policies[{i}]: unknown key(s) {sorted(unknown)} (name, params)")
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise SweepError(f"{source}: policies[{i}].params must be a mapping of name: value or [values]")
        parts = [str(entry["name"])]
        for k, v in params.items():
            values = v if isinstance(v, list) else [v]
            if not values:
                raise SweepError(f"{source}: policies[{i}].params.{k} is an empty list")
            parts.append(f"{k}=" + ALTERNATIVES.join(str(x) for x in values))
        specs.append(":".join(parts))
    return specs


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def load_grid(path: str | Path) -> Grid:
    """A Grid from a YAML file (see the module docstring); SweepError names what is wrong."""
    import yaml

    path = Path(path)
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"{source}: no such file") from None
    except yaml.YAMLError as e:
        raise SweepError(f"{source}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SweepError(f"{source}: expected a mapping with 'policies' and 'traces'")
    known = {"traces", "trace", "slices", "seeds", "policies", "oracle", "config", "weights"}
    unknown = set(data) - known
    if unknown:
        raise SweepError(f"{source}: unknown key(s) {sorted(unknown)}; expected some of {sorted(known)}")
    traces = [str(t) for t in _as_list(data.get("traces", data.get("trace")))]
    if not traces or traces == ["None"]:
        raise SweepError(f"{source}: 'traces' must name at least one trace")
    slices = [parse_slice(s) for s in _as_list(data.get("slices"))]
    try:
        seeds = [int(s) for s in _as_list(data.get("seeds", 0))]
    except (TypeError, ValueError):
        raise SweepError(f"{source}: 'seeds' must be whole numbers") from None
    config = data.get("config") or {}
    weights = data.get("weights") or {}
    for name, given, allowed in (("config", config, CONFIG_KEYS), ("weights", weights, WEIGHT_KEYS)):
        if not isinstance(given, dict) or set(given) - set(allowed):
            raise SweepError(f"{source}: '{name}' accepts only {', '.join(allowed)}")
    return Grid(specs=_policy_entries(data.get("policies"), source), traces=traces,
                slices=slices, seeds=seeds, oracle=bool(data.get("oracle", True)),
                config={k: v for k, v in config.items() if v is not None},
                weights={k: float(v) for k, v in weights.items() if v is not None})


# -------------------------------------------------------------------------- running

def _sim_config(config: dict[str, Any], seed: int, functions: Sequence[str] = ()) -> SimConfig:
    """``functions``: the cell's trace's, for a profile's per-function cold starts (as replay)."""
    from wlsim.cli import make_config

    c = {"nodes": 1, "node_memory_mb": None, "cold_start_ms": None, "concurrency": 1,
         "max_instances": None, "profile": None} | config
    return make_config(c["nodes"], c["node_memory_mb"], c["cold_start_ms"], seed, c["concurrency"],
                       c["max_instances"], c["profile"], functions)


def run_cell(trace: pd.DataFrame, task: tuple[str, SimConfig, CostWeights]) -> dict[str, Any]:
    """One cell in a worker: simulate, summarise; only the summary row travels back."""
    from wlsim.compare import _simulate
    from wlsim.metrics import summarize

    spec, config, weights = task
    return summarize(_simulate(trace, spec, config, None), weights)


def load_traces(cells: Iterable[Cell]) -> dict[str, pd.DataFrame]:
    """Each distinct trace x slice x seed, read once."""
    from wlsim.traces import read_trace

    tables: dict[str, pd.DataFrame] = {}
    for c in cells:
        if c.trace_key not in tables:
            tables[c.trace_key] = read_trace(c.trace, seed=c.seed, start_minute=c.slice[0],
                                             end_minute=c.slice[1])
    return tables


def run_sweep(grid: Grid, executor: Executor, progress: bool = True) -> pd.DataFrame:
    """Every cell of ``grid`` on ``executor``; one row per cell, in grid order."""
    import pandas as pd

    from policies.registry import load_policy, with_absolute_path

    cells = grid.cells()
    for spec in grid.all_specs():
        load_policy(spec)   # a bad spec fails before any simulation (PolicySpecError names it)
    tables = load_traces(cells)
    weights = grid.cost_weights()
    # The oracle cells first: usually the slowest, they should not finish last alone.
    order = sorted(range(len(cells)), key=lambda i: spec_name(cells[i].spec) != ORACLE)
    functions = {key: sorted(table["function"].unique()) for key, table in tables.items()}
    tasks = [(cells[i].trace_key,
              (with_absolute_path(cells[i].spec),
               _sim_config(grid.config, cells[i].seed, functions[cells[i].trace_key]), weights))
             for i in order]
    rows: list[dict[str, Any] | None] = [None] * len(cells)
    started = time.perf_counter()
    with _bar(len(cells), executor.name, progress) as advance:
        for k, row in executor.run(run_cell, tasks, tables):
            cell = cells[order[k]]
            row["policy"] = cell.spec
            rows[order[k]] = _cell_columns(cell) | row
            advance()
    table = pd.DataFrame(rows)
    table.attrs["elapsed_s"] = time.perf_counter() - started
    return with_oracle_ratio(table)


def _cell_columns(cell: Cell) -> dict[str, Any]:
    params = {f"param_{k}": v for k, v in spec_params(cell.spec).items()}
    return {"policy": cell.spec, "policy_name": spec_name(cell.spec), "trace": cell.trace,
            "slice": slice_label(cell.slice), "seed": cell.seed} | params


def with_oracle_ratio(table: pd.DataFrame) -> pd.DataFrame:
    """``cost_vs_oracle`` = each cell's weighted cost / the oracle's on the same trace, slice
    and seed (NaN without one)."""
    import numpy as np

    keys = ["trace", "slice", "seed"]
    oracle = table[table["policy_name"] == ORACLE].groupby(keys)["weighted_cost_usd"].first()
    ref = table.set_index(keys).index.map(lambda k: oracle.get(k, np.nan))
    ref = np.asarray(ref, dtype=np.float64)
    table["cost_vs_oracle"] = np.where(ref > 0, table["weighted_cost_usd"].to_numpy() / ref, np.nan)
    return table


def front(table: pd.DataFrame) -> pd.DataFrame:
    """Each spec averaged over traces, slices and seeds, with ``pareto`` True for the specs no
    other spec beats on both cold-start rate and idle memory."""
    import numpy as np

    from wlsim.plots import pareto_front

    metrics = ["cold_start_rate", "idle_gb_s", "latency_p99_ms", "weighted_cost_usd", "cost_vs_oracle"]
    agg = (table.groupby("policy", sort=False)[metrics].mean()
           .join(table.groupby("policy", sort=False).size().rename("cells")).reset_index())
    eff = pareto_front(agg["idle_gb_s"].to_numpy(), agg["cold_start_rate"].to_numpy())
    agg["pareto"] = np.isin(np.arange(len(agg)), eff)
    return agg


def write_sweep(table: pd.DataFrame, out_dir: Path, grid: Grid) -> dict[str, Path]:
    """summary.csv + summary.parquet (one row per cell), front.csv, sweep.json and
    pareto.png (the grid's specs, averaged, against each other)."""
    from wlsim import plots
    from wlsim.cli import write_csv, write_json, write_parquet

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = front(table)
    files = {
        "summary.csv": write_csv(out_dir / "summary.csv", table),
        "summary.parquet": write_parquet(out_dir / "summary.parquet", table),
        "front.csv": write_csv(out_dir / "front.csv", summary),
        "pareto.png": plots.pareto(summary, out_dir / plots.PLOT_FILES["pareto"]),
    }
    files["sweep.json"] = write_json(out_dir / "sweep.json", {
        "specs": grid.all_specs(), "traces": grid.traces,
        "slices": [slice_label(s) for s in grid.slices], "seeds": grid.seeds,
        "config": grid.config, "weights": grid.weights, "cells": len(table),
        "elapsed_s": table.attrs.get("elapsed_s", math.nan)})
    return files


class _bar:
    """A rich progress bar over cells (or nothing)."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total, self.label, self.enabled = total, label, enabled

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True))  # results go to stdout
        task = self.progress.add_task(f"cells ({self.label})", total=self.total)
        self.progress.start()
        return lambda: self.progress.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()


__all__ = ["Cell", "Grid", "SweepError", "expand_spec", "front", "load_grid",
           "parse_int_list", "parse_slice", "run_sweep", "write_sweep"]
