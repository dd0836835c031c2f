"""What one simulation run produces: columnar per-request and per-instance tables.

The engine (wlsim.engine) fills these; wlsim.metrics summarises them; wlsim.plots draws them.
Times are in ms from the trace's start. A streamed run (``wlsim.engine.simulate_stream``) writes
the same rows to Parquet parts instead (``ResultSink``) and keeps only a ``StreamSummary``.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Per request, one row per trace invocation (rejected ones included):
REQUEST_COLUMNS = {
    "request_id": "int64",      # row index in the trace
    "function": "string",
    "arrival_ms": "float64",
    "wait_ms": "float64",       # queued behind a busy instance (0 if none); NaN if rejected
    "cold": "bool",             # served by an instance spawned for it (paid a cold start)
    "cold_start_ms": "float64", # part of the latency spent waiting for its instance to start
    "exec_ms": "float64",       # execution time (the trace's duration_ms)
    "end_ms": "float64",        # completion time; NaN if rejected
    "latency_ms": "float64",    # end-to-end: end_ms - arrival_ms; NaN if rejected
    "instance_id": "int64",     # -1 if rejected
    "rejected": "bool",
}

# Per instance, one row per instance ever started:
INSTANCE_COLUMNS = {
    "instance_id": "int64",
    "function": "string",
    "node": "string",
    "memory_mb": "float64",
    "created_ms": "float64",    # spawn decided (memory held from here)
    "ready_ms": "float64",      # cold start finished
    "died_ms": "float64",       # killed or evicted (or the end of the run)
    "busy_ms": "float64",       # time with at least one execution running
    "idle_ms": "float64",       # time idle (warm, holding memory, doing nothing)
    "invocations": "int64",
    "prewarmed": "bool",        # spawned ahead of demand by the policy's prewarm
    "evicted": "bool",          # killed to make room under memory pressure
}


@dataclass
class SimResult:
    policy: str
    requests: pd.DataFrame
    instances: pd.DataFrame
    horizon_ms: float                      # end of the simulated period
    wall_s: float = 0.0                    # wall-clock time the run took
    params: dict[str, Any] = field(default_factory=dict)  # policy.describe() + config

    @property
    def invocations(self) -> int:
        return len(self.requests)


# ------------------------------------------------------------------ streamed results

# Latency histogram of a streamed run's summary: log-spaced bins, 100 per decade from
# 1 us to 1e9 ms (quantiles to within ~2.3%), so percentiles need no per-request memory.
_LATENCY_EDGES_MS = np.logspace(-3, 9, 1201)


@dataclass
class StreamSummary:
    """What a streamed run (``wlsim.engine.simulate_stream``) wrote and its totals, accumulated
    part by part (also written to ``out_dir/summary.json``)."""
    policy: str
    out_dir: Path
    invocations: int = 0
    completed: int = 0
    rejected: int = 0
    cold: int = 0                      # requests served by an instance spawned for them
    instances: int = 0
    evicted: int = 0
    prewarmed: int = 0
    functions: int = 0
    wait_ms_sum: float = 0.0           # queueing wait of the completed requests
    cold_start_ms_sum: float = 0.0
    latency_ms_sum: float = 0.0        # end-to-end, completed requests
    latency_ms_max: float = 0.0
    latency_p50_ms: float = math.nan   # from the histogram (within ~2.3%)
    latency_p99_ms: float = math.nan
    idle_mb_ms: float = 0.0            # idle memory held, summed over instances
    busy_mb_ms: float = 0.0
    horizon_ms: float = 0.0
    wall_s: float = 0.0
    request_parts: int = 0
    instance_parts: int = 0

    @property
    def idle_gb_s(self) -> float:
        return self.idle_mb_ms / 1024.0 / 1000.0

    @property
    def cold_start_rate(self) -> float:
        return self.cold / self.invocations if self.invocations else math.nan

    @property
    def invocations_per_s(self) -> float:
        return self.invocations / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def mean_latency_ms(self) -> float:
        return self.latency_ms_sum / self.completed if self.completed else math.nan

    @property
    def mean_wait_ms(self) -> float:
        return self.wait_ms_sum / self.completed if self.completed else math.nan

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        d["out_dir"] = str(self.out_dir)
        d.update(idle_gb_s=self.idle_gb_s, cold_start_rate=self.cold_start_rate,
                 mean_latency_ms=self.mean_latency_ms, mean_wait_ms=self.mean_wait_ms,
                 invocations_per_s=self.invocations_per_s)
        return d


class ResultSink:
    """Per-request and per-instance rows of a streamed run, written to Parquet parts as they
    come so memory holds at most ``rows_per_part`` rows of each:
    ``out_dir/requests/part-NNNNN.parquet`` (REQUEST_COLUMNS; rows of a part sorted by
    ``request_id``, which is the trace row; parts are in completion order, so read the folder
    and sort for trace order) and ``out_dir/instances/part-NNNNN.parquet`` (INSTANCE_COLUMNS,
    in order of death). ``summary`` accumulates the totals part by part. Old parts in
    ``out_dir`` are removed first. ``function_names`` is the engine's list (it grows as
    functions first arrive); requests carry codes into it.
    """

    def __init__(self, out_dir: str | Path, function_names: list[str], policy: str,
                 rows_per_part: int = 250_000) -> None:
        if rows_per_part < 1:
            raise ValueError(f"rows_per_part must be >= 1, got {rows_per_part}")
        self.out_dir = Path(out_dir)
        for sub in ("requests", "instances"):
            (self.out_dir / sub).mkdir(parents=True, exist_ok=True)
            for old in (self.out_dir / sub).glob("part-*.parquet"):
                old.unlink()
        self.function_names = function_names
        self.rows_per_part = rows_per_part
        self.summary = StreamSummary(policy=policy, out_dir=self.out_dir)
        self._latency_counts = np.zeros(len(_LATENCY_EDGES_MS) - 1, dtype=np.int64)
        self._new_request_buffers()
        self._new_instance_buffers()

    def _new_request_buffers(self) -> None:
        # Request columns as typed arrays (compact; a part becomes numpy without a copy, so
        # each part gets new arrays rather than emptying ones numpy still views).
        self._req = (array("q"), array("q"), array("d"), array("d"), array("b"), array("d"), array("d"),
                     array("d"), array("q"))
        (self._r_id, self._r_fn, self._r_arrival, self._r_start, self._r_cold, self._r_cold_ms,
         self._r_exec, self._r_end, self._r_inst) = (c.append for c in self._req)

    def _new_instance_buffers(self) -> None:
        # Numbers in typed arrays, names as references to the records' own strings.
        self._inst_names: tuple[list[str], list[str]] = ([], [])
        self._inst_nums = tuple(array(t) for t in "qddddddqbb")

    @property
    def buffered_rows(self) -> int:
        return len(self._req[0]) + len(self._inst_names[0])

    def add_request(self, row: int, fcode: int, arrival: float, start: float, cold: int, cold_ms: float,
                    exec_ms: float, end: float, instance_id: int) -> None:
        """One finished request; a rejected one has start = end = NaN and instance_id -1."""
        self._r_id(row)
        self._r_fn(fcode)
        self._r_arrival(arrival)
        self._r_start(start)
        self._r_cold(cold)
        self._r_cold_ms(cold_ms)
        self._r_exec(exec_ms)
        self._r_end(end)
        self._r_inst(instance_id)
        if len(self._req[0]) >= self.rows_per_part:
            self.flush_requests()

    def add_instance(self, inst: Any) -> None:
        """One instance that died (or was alive at the horizon): an Instance record."""
        functions, nodes = self._inst_names
        functions.append(inst.fn.name)
        nodes.append(inst.node)
        for column, value in zip(self._inst_nums, (
                inst.id, inst.memory_mb, inst.created_ms, inst.ready_ms if inst.ready_ms != math.inf else math.nan,
                inst.died_ms, inst.busy_ms, inst.idle_total_ms, inst.invocations, inst.prewarmed, inst.evicted),
                strict=True):
            column.append(value)
        if len(functions) >= self.rows_per_part:
            self.flush_instances()

    def flush_requests(self) -> None:
        import pyarrow as pa

        if not len(self._req[0]):
            return
        rid, fcode, arrival, start, cold, cold_ms, exec_ms, end, inst = (
            np.frombuffer(c, dtype=c.typecode if c.typecode != "b" else np.int8) for c in self._req)
        order = np.argsort(rid, kind="stable")
        rejected = np.isnan(end)
        wait = start - arrival - cold_ms          # NaN for a rejected request (start is NaN)
        latency = end - arrival
        s = self.summary
        s.invocations += len(rid)
        s.rejected += int(rejected.sum())
        s.completed += int((~rejected).sum())
        s.cold += int(cold.sum())
        done = ~rejected
        s.wait_ms_sum += float(wait[done].sum())
        s.cold_start_ms_sum += float(cold_ms[done].sum())
        s.latency_ms_sum += float(latency[done].sum())
        if done.any():
            s.latency_ms_max = max(s.latency_ms_max, float(latency[done].max()))
            self._latency_counts += np.histogram(np.clip(latency[done], _LATENCY_EDGES_MS[0], _LATENCY_EDGES_MS[-1]),
                                                 _LATENCY_EDGES_MS)[0]
        names = pa.array(self.function_names, pa.string())
        table = pa.table({
            "request_id": rid[order],
            "function": pa.DictionaryArray.from_arrays(pa.array(fcode[order].astype(np.int32)), names),
            "arrival_ms": arrival[order],
            "wait_ms": wait[order],
            "cold": cold[order].astype(bool),
            "cold_start_ms": cold_ms[order],
            "exec_ms": exec_ms[order],
            "end_ms": end[order],
            "latency_ms": latency[order],
            "instance_id": inst[order],
            "rejected": rejected[order],
        })
        self._write(table, "requests", s.request_parts)
        s.request_parts += 1
        self._new_request_buffers()

    def flush_instances(self) -> None:
        functions, nodes = self._inst_names
        if not functions:
            return
        nums = [np.frombuffer(c, dtype=np.int8 if c.typecode == "b" else c.typecode).copy() for c in self._inst_nums]
        columns = dict(zip(["instance_id", "memory_mb", "created_ms", "ready_ms", "died_ms", "busy_ms", "idle_ms",
                            "invocations", "prewarmed", "evicted"], nums, strict=True))
        columns.update(function=functions, node=nodes)
        table = pd.DataFrame(columns)[list(INSTANCE_COLUMNS)].astype(INSTANCE_COLUMNS)
        s = self.summary
        s.instances += len(table)
        s.evicted += int(table["evicted"].sum())
        s.prewarmed += int(table["prewarmed"].sum())
        s.idle_mb_ms += float((table["memory_mb"] * table["idle_ms"]).sum())
        s.busy_mb_ms += float((table["memory_mb"] * table["busy_ms"]).sum())
        import pyarrow as pa

        self._write(pa.Table.from_pandas(table, preserve_index=False), "instances", s.instance_parts)
        s.instance_parts += 1
        self._new_instance_buffers()

    def _write(self, table: Any, sub: str, k: int) -> None:
        import pyarrow.parquet as pq

        from wlcommon.files import atomic_output

        with atomic_output(self.out_dir / sub / f"part-{k:05d}.parquet") as tmp:
            pq.write_table(table, tmp, compression="zstd")

    def close(self, horizon_ms: float, functions: int, wall_s: float) -> StreamSummary:
        """Write what is buffered and ``summary.json``; returns the summary."""
        import json

        from wlcommon.files import atomic_write

        self.flush_requests()
        self.flush_instances()
        s = self.summary
        s.horizon_ms, s.functions, s.wall_s = horizon_ms, functions, wall_s
        if self._latency_counts.any():
            cum = np.cumsum(self._latency_counts)
            for attr, q in (("latency_p50_ms", 0.5), ("latency_p99_ms", 0.99)):
                k = int(np.searchsorted(cum, q * cum[-1]))
                setattr(s, attr, float(np.sqrt(_LATENCY_EDGES_MS[k] * _LATENCY_EDGES_MS[k + 1])))
        atomic_write(self.out_dir / "summary.json",
                     json.dumps(s.as_dict(), indent=2, default=lambda v: None if v != v else v) + "\n")
        return s


def read_streamed(out_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A streamed run's per-request and per-instance tables, whole and in id order, typed like
    SimResult's (for runs small enough to hold in memory: tests, analysis of a slice)."""
    out = Path(out_dir)
    tables = []
    for sub, columns, key in (("requests", REQUEST_COLUMNS, "request_id"),
                              ("instances", INSTANCE_COLUMNS, "instance_id")):
        parts = sorted((out / sub).glob("part-*.parquet"))
        if not parts:
            tables.append(pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()}))
            continue
        df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        df = df.astype({c: ("string" if t == "string" else t) for c, t in columns.items()})
        df = df.sort_values(key, kind="stable").reset_index(drop=True)[list(columns)]
        tables.append(df)
    return tables[0], tables[1]
