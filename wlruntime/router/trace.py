"""The router's traffic in the canonical trace table (``wlmodel.schema``, DESIGN.md Traces),
with what happened to each request, so live traffic replays in the simulator and a live
recording is summarised like a simulated run.

One row per executed invocation (requests refused before running have no duration and are
not recorded). Canonical columns: ``app, function, arrival_ms, duration_ms, memory_mb,
payload_bytes``. ``arrival_ms`` is on the router's policy clock: ms since 00:00 UTC of the day
the router started, like the Azure traces' day-relative times. ``duration_ms`` is the time
the instance was busy with the request as the router saw it (the node's execution time plus
the call's overhead), which is what the simulator's instance should take to reproduce what
happened live. Outcome columns (``wlmodel.schema.OUTCOME_COLUMNS``, the simulator's
per-request names): ``cold`` (an instance was spawned for it), ``wait_ms`` (queued before its
start, cold start excluded), ``cold_start_ms``, ``exec_ms`` (the node's execution time),
``start_ms``, ``end_ms`` (policy clock), ``node``, ``status`` ("ok" or the error kind); the
simulator ignores them when it replays a recording. Requests that carried features
(``X-WL-Feature-<name>`` headers) add one column per feature name, empty (null) in rows
without it: extra numeric trace columns are the RequestView.features of the replayed
requests. Rows are kept in memory (the oldest are dropped past ``max_rows``) and written
sorted by arrival.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from wlmodel.schema import CANONICAL_COLUMNS, OPTIONAL_COLUMNS, OUTCOME_COLUMNS

log = logging.getLogger("wlruntime.router")

INPUT_COLUMNS = (*CANONICAL_COLUMNS, *OPTIONAL_COLUMNS)
COLUMNS = (*INPUT_COLUMNS, *OUTCOME_COLUMNS)
MAX_FEATURE_COLUMNS = 256  # distinct feature names recorded; later names are left out of the trace


class Outcome(NamedTuple):
    """What happened to one executed request (the outcome columns, in order): a row's fields
    after the features, read as one through ``outcome(row)``. A row is one flat plain tuple: a
    tuple of numbers and strings is one the garbage collector stops tracking at its first
    collection, a NamedTuple (a tuple subclass) or a tuple holding one never is, and the recorder
    keeps up to a million rows, which every full collection would walk (and each tracked
    allocation brings the next young collection nearer)."""
    cold: bool | None = None
    wait_ms: float | None = None
    cold_start_ms: float | None = None
    exec_ms: float | None = None
    start_ms: float | None = None
    end_ms: float | None = None
    node: str | None = None
    status: str | None = None


NO_OUTCOME = (None,) * len(Outcome._fields)
# app, function, arrival_ms, duration_ms, memory_mb, payload_bytes, features, then Outcome's fields
Row = tuple[Any, ...]
OUTCOME_AT = 7   # a row's index of its first outcome field


def outcome(row: Row) -> Outcome:
    """The outcome columns of a recorded row."""
    return Outcome._make(row[OUTCOME_AT:])


class TraceRecorder:
    def __init__(self, max_rows: int = 1_000_000) -> None:
        self.rows: deque[Row] = deque(maxlen=max_rows)
        self.dropped = 0
        self.feature_names: set[str] = set()
        self.unrecorded_features = 0  # feature values left out past MAX_FEATURE_COLUMNS names

    def record(self, app: str, function: str, arrival_ms: float, duration_ms: float, memory_mb: float,
               payload_bytes: int, features: Mapping[str, float] | None = None, *, cold: bool | None = None,
               wait_ms: float | None = None, cold_start_ms: float | None = None, exec_ms: float | None = None,
               start_ms: float | None = None, end_ms: float | None = None, node: str | None = None,
               status: str | None = None) -> None:
        """One row; the outcome columns (keywords) are all None in a row without an outcome."""
        self.add(app, function, arrival_ms, duration_ms, memory_mb, payload_bytes, features, cold, wait_ms,
                 cold_start_ms, exec_ms, start_ms, end_ms, node, status)

    def add(self, app: str, function: str, arrival_ms: float, duration_ms: float, memory_mb: float,
            payload_bytes: int, features: Mapping[str, float] | None, cold: bool | None, wait_ms: float | None,
            cold_start_ms: float | None, exec_ms: float | None, start_ms: float | None, end_ms: float | None,
            node: str | None, status: str | None) -> None:
        """``record`` with every column positional: the router's call for each executed request
        (its eight keyword arguments would cost ~0.4 µs more per call)."""
        rows = self.rows
        if len(rows) == rows.maxlen:
            self.dropped += 1
        if features:
            features = self._admit(features)
        if cold is None:
            rows.append((app, function, arrival_ms, duration_ms, memory_mb, payload_bytes, features or None,
                         *NO_OUTCOME))
        else:
            rows.append((app, function, arrival_ms, duration_ms, memory_mb, payload_bytes, features or None,
                         cold, wait_ms, cold_start_ms, exec_ms, start_ms, end_ms, node, status))

    def _admit(self, features: Mapping[str, float]) -> Mapping[str, float]:
        names = self.feature_names
        if names.issuperset(features):
            return features
        kept = {}
        for name, value in features.items():
            if name in names or len(names) < MAX_FEATURE_COLUMNS:
                names.add(name)
                kept[name] = value
            else:
                if not self.unrecorded_features:
                    log.warning("the traffic trace keeps at most %d feature columns: feature %r and later "
                                "new names are not recorded", MAX_FEATURE_COLUMNS, name)
                self.unrecorded_features += 1
        return kept

    def __len__(self) -> int:
        return len(self.rows)

    def to_csv(self) -> bytes:
        return encode_csv(list(self.rows))

    def to_parquet(self) -> bytes:
        return encode_parquet(list(self.rows))

    def write(self, path: str | Path) -> Path:
        """Write to ``path`` (.parquet or .csv), atomically."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            data = self.to_parquet()
        elif suffix == ".csv":
            data = self.to_csv()
        else:
            raise ValueError(f"trace file {path}: use a .parquet or .csv name")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return path


def _feature_columns(rows: list[Row]) -> list[str]:
    return sorted({name for row in rows if row[6] for name in row[6]})


def _outcome_cells(values: list) -> list[str]:
    o = Outcome._make(values)
    if o.cold is None:
        return [""] * len(OUTCOME_COLUMNS)
    return ["1" if o.cold else "0",
            *(f"{v:.3f}" for v in (o.wait_ms, o.cold_start_ms, o.exec_ms, o.start_ms, o.end_ms)),
            o.node or "", o.status or ""]


def encode_csv(rows: list[Row]) -> bytes:
    """Rows sorted by arrival, as canonical-trace CSV (plus a column per feature name)."""
    features = _feature_columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow((*COLUMNS, *features))
    for app, fn, arrival, duration, memory, payload, feats, *values in sorted(rows, key=lambda r: r[2]):
        extra = [repr(float(feats[f])) if feats and f in feats else "" for f in features]
        writer.writerow((app, fn, f"{arrival:.3f}", f"{duration:.3f}", f"{memory:g}", payload,
                         *_outcome_cells(values), *extra))
    return buf.getvalue().encode()


def encode_parquet(rows: list[Row]) -> bytes:
    """Rows sorted by arrival, as canonical-trace Parquet (plus a float column per feature name)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(rows, key=lambda r: r[2])
    features = _feature_columns(rows)
    columns = {name: [r[i] for r in rows] for i, name in enumerate(INPUT_COLUMNS)}
    for k, name in enumerate(OUTCOME_COLUMNS):
        columns[name] = [r[OUTCOME_AT + k] for r in rows]
    for f in features:
        columns[f] = [float(r[6][f]) if r[6] and f in r[6] else None for r in rows]
    arrow = {"bool": pa.bool_(), "float64": pa.float64(), "string": pa.string()}
    table = pa.table(columns, schema=pa.schema([("app", pa.string()), ("function", pa.string()),
                                                ("arrival_ms", pa.float64()), ("duration_ms", pa.float64()),
                                                ("memory_mb", pa.float64()), ("payload_bytes", pa.int64()),
                                                *((name, arrow[t]) for name, t in OUTCOME_COLUMNS.items()),
                                                *((f, pa.float64()) for f in features)]))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()
