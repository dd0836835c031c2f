"""Traces larger than memory: written and read in chunks, replayed by shards of applications.

- ``write_chunks(chunks, path)``: canonical tables (e.g. ``synthetic.azure_like_chunks``)
  appended to one Parquet file, one row group each (pyarrow ParquetWriter), so a trace of
  tens of millions of invocations is generated with one chunk in memory.
- ``iter_trace(path)``: the trace back as pandas tables of about ``batch_rows`` rows
  (pyarrow ``iter_batches``), in arrival order; ``scan(path)`` counts rows, functions and
  invocations per application, and the end of the last execution, in one such pass.
- ``read_apps(path, apps)``: only the rows of some applications, filtered batch by batch.
- ``stream_replay(path, spec, out_dir)``: a bounded-memory replay in ONE pass over the file:
  the engine's streamed mode (``wlsim.engine.simulate_stream``) takes the batches of
  ``iter_trace`` as arrivals and writes per-request and per-instance rows to ``out_dir`` as
  Parquet parts as requests finish and instances die. Memory holds the per-function state, one
  batch, the requests in flight and one part of result rows, whatever the trace's length; any
  configuration replays this way (memory bounds, several nodes, the ``default`` policy, drawn
  cold starts), except a policy that needs the future (the oracle).

Which path for a large trace: one process streams (``stream_replay``, ``wl sim replay
--stream``). Shards (``wlsim.shard.sharded_simulate``) are only for using several cores on a
trace whose shards fit in memory, and only where applications are independent (no memory bound,
one node, a shardable policy); they used to be how ``stream_replay`` bounded memory, at the cost
of reading the file once per shard and re-running shards whose horizon guess was wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wlsim.traces.table import CANONICAL_COLUMNS, TraceError

if TYPE_CHECKING:
    import pandas as pd

    from wlsim.config import SimConfig
    from wlsim.result import StreamSummary

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
    """The trace in pandas tables of about ``batch_rows`` rows (at most that, or one row group
    if larger), in file (arrival) order. Small row groups (the generator writes one per 10
    simulated minutes) are gathered into one table: converting each to pandas on its own
    costs more than the replay of its rows."""
    import pyarrow as pa

    f = _parquet(path)
    gathered, rows = [], 0
    for batch in f.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None):
        if gathered and rows + batch.num_rows > batch_rows:
            yield pa.Table.from_batches(gathered).to_pandas()
            gathered, rows = [], 0
        gathered.append(batch)
        rows += batch.num_rows
    if gathered:
        yield pa.Table.from_batches(gathered).to_pandas()


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


def stream_replay(path: str | Path, spec: str, out_dir: str | Path, config: SimConfig | None = None, *,
                  batch_rows: int = 100_000, rows_per_part: int = 250_000,
                  progress: Callable[[int, int], None] | None = None) -> StreamSummary:
    """Replay a Parquet trace in one streamed pass (see the module docstring) into ``out_dir``:
    ``requests/part-NNNNN.parquet`` (``request_id`` = row in the trace; rows sorted within a
    part, parts in completion order), ``instances/part-NNNNN.parquet`` (in order of death) and
    ``summary.json``. ``batch_rows``: trace rows read at a time (memory holds about this many
    requests); ``rows_per_part``: result rows per Parquet part. ``progress(done, total)``: total is
    the file's row count (from its metadata)."""
    from wlsim.engine import simulate_stream

    f = _parquet(path)
    total = f.metadata.num_rows
    callback = None if progress is None else (lambda done, _loaded: progress(done, total))
    return simulate_stream(iter_trace(path, batch_rows=batch_rows), spec, out_dir, config,
                           rows_per_part=rows_per_part, progress=callback)
