"""Traces larger than memory: written and read in chunks, replayed by shards of applications.

- ``write_chunks(chunks, path)``: canonical tables (e.g. ``synthetic.azure_like_chunks``)
  appended to one Parquet file, one row group each (pyarrow ParquetWriter), so a trace of
  tens of millions of invocations is generated with one chunk in memory.
- ``iter_trace(path)``: the trace back as pandas tables of about ``batch_rows`` rows
  (pyarrow ``iter_batches``), in arrival order; ``scan(path)`` counts rows, functions and
  invocations per application, and the end of the last execution, in one such pass.
- ``read_apps(path, apps)``: only the rows of some applications, filtered batch by batch.
- ``stream_replay(path, spec, out_dir)``: a bounded-memory replay. Applications are packed into
  shards of at most ``max_rows`` invocations (wlsim.shard's rule: applications are
  independent when memory is unbounded); each shard is read, simulated to the global horizon
  and its per-request and per-instance results written to ``out_dir`` as Parquet parts before
  the next one is read. Memory then grows with the largest shard, not with the trace. The
  simulator still holds a whole shard's requests (the engine has no streaming output yet).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wlsim.traces.table import CANONICAL_COLUMNS, TraceError

if TYPE_CHECKING:
    import pandas as pd

    from wlsim.config import SimConfig

DEFAULT_BATCH_ROWS = 1_000_000


def write_chunks(chunks: Iterable[pd.DataFrame], path: str | Path) -> int:
    """Append every chunk to one Parquet file (a row group each); returns the rows written.
    The chunks must come in arrival order, like the generator's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from wlsim.traces.table import atomic_output

    rows = 0
    last_arrival = -math.inf
    with atomic_output(path) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            for chunk in chunks:
                arrival = chunk["arrival_ms"].to_numpy()
                if len(arrival) and arrival[0] < last_arrival:
                    raise TraceError(path, "chunks are not in arrival order")
                table = pa.Table.from_pandas(chunk, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
                rows += len(chunk)
                if len(arrival):
                    last_arrival = float(arrival[-1])
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise TraceError(path, "no invocations to write")
    return rows


def _parquet(path: str | Path) -> Any:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise TraceError(path, "no such file")
    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 (pyarrow raises several kinds for a bad file)
        raise TraceError(path, f"not a readable Parquet file ({e})") from None
    missing = [c for c in CANONICAL_COLUMNS if c != "payload_bytes" and c not in f.schema_arrow.names]
    if missing:
        raise TraceError(path, f"missing column(s) {', '.join(missing)}; a trace needs "
                               f"{', '.join(CANONICAL_COLUMNS)}")
    return f


def iter_trace(path: str | Path, *, batch_rows: int = DEFAULT_BATCH_ROWS,
               columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
    """The trace in pandas tables of at most ``batch_rows`` rows, in file (arrival) order."""
    f = _parquet(path)
    for batch in f.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None):
        yield batch.to_pandas()


@dataclass
class TraceScan:
    rows: int
    functions: int
    app_rows: dict[str, int]         # invocations per application
    max_end_ms: float                # the latest arrival + duration
    last_arrival_ms: float


def scan(path: str | Path, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> TraceScan:
    """One streamed pass over the trace (app, function, arrival and duration columns only)."""
    import pandas as pd

    rows, app_rows, functions = 0, pd.Series(dtype="int64"), set()
    max_end = last = -math.inf
    for chunk in iter_trace(path, batch_rows=batch_rows,
                            columns=["app", "function", "arrival_ms", "duration_ms"]):
        arrival = chunk["arrival_ms"].to_numpy(np.float64)
        if len(arrival) and (arrival[0] < last or (np.diff(arrival) < 0).any()):
            raise TraceError(path, f"arrivals not sorted near row {rows}; sort the trace by arrival_ms")
        rows += len(chunk)
        app_rows = app_rows.add(chunk["app"].astype(str).value_counts(), fill_value=0)
        functions.update(chunk["function"].astype(str).unique())
        if len(arrival):
            last = float(arrival[-1])
            max_end = max(max_end, float((arrival + chunk["duration_ms"].to_numpy(np.float64)).max()))
    if rows == 0:
        raise TraceError(path, "empty trace: no invocations")
    return TraceScan(rows, len(functions), {str(k): int(v) for k, v in app_rows.items()}, max_end, last)


def read_apps(path: str | Path, apps: Iterable[str], *,
              batch_rows: int = DEFAULT_BATCH_ROWS) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of ``apps`` (in file order) and their row numbers in the whole file."""
    import pandas as pd

    wanted = set(apps)
    parts, rows, offset = [], [], 0
    for chunk in iter_trace(path, batch_rows=batch_rows):
        keep = chunk["app"].astype(str).isin(wanted).to_numpy()
        if keep.any():
            parts.append(chunk.loc[keep])
            rows.append(offset + np.flatnonzero(keep))
        offset += len(chunk)
    if not parts:
        raise TraceError(path, "none of the requested applications occur in the trace")
    table = pd.concat(parts, ignore_index=True)
    for c in ("app", "function"):   # names of other shards are not this shard's functions
        if isinstance(table[c].dtype, pd.CategoricalDtype):
            table[c] = table[c].cat.remove_unused_categories()
        else:                       # batches with different dictionaries concatenate as objects
            table[c] = table[c].astype("category")
    return table, np.concatenate(rows)


def pack_apps(app_rows: dict[str, int], max_rows: int) -> list[list[str]]:
    """Applications in shards of at most ``max_rows`` invocations (first fit, largest first);
    an application larger than ``max_rows`` is a shard of its own (it cannot be split)."""
    shards: list[list[str]] = []
    load: list[int] = []
    for app, n in sorted(app_rows.items(), key=lambda kv: -kv[1]):
        for k, used in enumerate(load):
            if used + n <= max_rows:
                shards[k].append(app)
                load[k] += n
                break
        else:
            shards.append([app])
            load.append(n)
    return shards


@dataclass
class StreamedRun:
    """What ``stream_replay`` wrote and measured."""
    out_dir: Path
    invocations: int
    shards: int
    reruns: int
    horizon_ms: float
    cold_starts: int
    rejected: int
    idle_gb_s: float
    wall_s: float

    @property
    def invocations_per_s(self) -> float:
        return self.invocations / self.wall_s if self.wall_s > 0 else math.nan


def stream_replay(path: str | Path, spec: str, out_dir: str | Path, config: SimConfig | None = None, *,
                  max_rows: int = 2_000_000, batch_rows: int = DEFAULT_BATCH_ROWS) -> StreamedRun:
    """Replay a Parquet trace shard by shard (see the module docstring) into ``out_dir``:
    ``requests/part-NNNNN.parquet`` (``request_id`` = row in the trace) and
    ``instances/part-NNNNN.parquet`` (ids unique across parts: shard k's ids + an offset).
    Raises wlsim.shard.ShardError when the run cannot be split (a memory bound...)."""
    import pandas as pd

    from wlsim.config import SimConfig
    from wlsim.shard import SENTINEL, check_shardable, run_shard

    config = config if config is not None else SimConfig()
    check_shardable(config, spec)
    started = time.perf_counter()
    info = scan(path, batch_rows=batch_rows)
    shards = pack_apps(info.app_rows, max_rows)
    out = Path(out_dir)
    for sub in ("requests", "instances"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for old in (out / sub).glob("part-*.parquet"):
            old.unlink()

    def run(k: int, until_ms: float) -> tuple[float, float, dict[str, float]]:
        table, rows = read_apps(path, shards[k], batch_rows=batch_rows)
        result = run_shard(table, (None, spec, config, until_ms))
        del table
        req = result.requests.loc[(result.requests["function"] != SENTINEL).to_numpy()]
        inst = result.instances.loc[(result.instances["function"] != SENTINEL).to_numpy()]
        req = req.assign(request_id=rows[req["request_id"].to_numpy()],
                         instance_id=np.where(req["instance_id"].to_numpy() >= 0,
                                              req["instance_id"].to_numpy() + (k << 32), -1))
        inst = inst.assign(instance_id=inst["instance_id"].to_numpy() + (k << 32))
        req.to_parquet(out / "requests" / f"part-{k:05d}.parquet", index=False)
        inst.to_parquet(out / "instances" / f"part-{k:05d}.parquet", index=False)
        ends = req["end_ms"].to_numpy(np.float64)
        real_end = float(np.nanmax(np.where(np.isnan(ends), req["arrival_ms"].to_numpy(np.float64), ends)))
        stats = {"cold": float(req["cold"].sum()), "rejected": float(req["rejected"].sum()),
                 "idle_gb_s": float((inst["memory_mb"] * inst["idle_ms"]).sum()) / 1024.0 / 1000.0}
        horizon_ms = result.horizon_ms
        del result, req, inst
        gc.collect()      # free this shard's tables before the next one is read
        return horizon_ms, real_end, stats

    first = [run(k, info.max_end_ms) for k in range(len(shards))]
    horizon = max(real for _, real, _ in first)
    late = [k for k, (h, _, _) in enumerate(first) if h != horizon]
    for k in late:      # stopped at the guess while the whole trace went on: run to the horizon
        first[k] = run(k, horizon)
    stats = pd.DataFrame([s for _, _, s in first]).sum()
    return StreamedRun(out, info.rows, len(shards), len(late), horizon, int(stats["cold"]),
                       int(stats["rejected"]), float(stats["idle_gb_s"]), time.perf_counter() - started)
