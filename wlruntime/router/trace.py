"""The router's traffic in the canonical trace table (DESIGN.md, Traces), so live traffic can be
replayed in the simulator: ``app, function, arrival_ms, duration_ms, memory_mb, payload_bytes``.

One row per executed invocation (requests refused before running have no duration and are
not recorded). ``arrival_ms`` is on the router's policy clock: ms since 00:00 UTC of the day
the router started, like the Azure traces' day-relative times. ``duration_ms`` is the time
the instance was busy with the request as the router saw it (the node's execution time plus
the call's overhead), which is what the simulator's instance should take to reproduce what
happened live. Requests that carried features (``X-WL-Feature-<name>`` headers) add one column
per feature name, empty (null) in rows without it, as the simulator reads them back: extra
numeric trace columns are the RequestView.features of the replayed requests. Rows are kept in
memory (the oldest are dropped past ``max_rows``) and written sorted by arrival.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import deque
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("wlruntime.router")

COLUMNS = ("app", "function", "arrival_ms", "duration_ms", "memory_mb", "payload_bytes")
MAX_FEATURE_COLUMNS = 256  # distinct feature names recorded; later names are left out of the trace

Row = tuple[str, str, float, float, float, int, Mapping[str, float] | None]


class TraceRecorder:
    def __init__(self, max_rows: int = 1_000_000) -> None:
        self.rows: deque[Row] = deque(maxlen=max_rows)
        self.dropped = 0
        self.feature_names: set[str] = set()
        self.unrecorded_features = 0  # feature values left out past MAX_FEATURE_COLUMNS names

    def record(self, app: str, function: str, arrival_ms: float, duration_ms: float, memory_mb: float,
               payload_bytes: int, features: Mapping[str, float] | None = None) -> None:
        if len(self.rows) == self.rows.maxlen:
            self.dropped += 1
        if features:
            features = self._admit(features)
        self.rows.append((app, function, arrival_ms, duration_ms, memory_mb, payload_bytes, features or None))

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


def encode_csv(rows: list[Row]) -> bytes:
    """Rows sorted by arrival, as canonical-trace CSV (plus a column per feature name)."""
    features = _feature_columns(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow((*COLUMNS, *features))
    for app, fn, arrival, duration, memory, payload, feats in sorted(rows, key=lambda r: r[2]):
        extra = [repr(float(feats[f])) if feats and f in feats else "" for f in features]
        writer.writerow((app, fn, f"{arrival:.3f}", f"{duration:.3f}", f"{memory:g}", payload, *extra))
    return buf.getvalue().encode()


def encode_parquet(rows: list[Row]) -> bytes:
    """Rows sorted by arrival, as canonical-trace Parquet (plus a float column per feature name)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(rows, key=lambda r: r[2])
    features = _feature_columns(rows)
    columns = {name: [r[i] for r in rows] for i, name in enumerate(COLUMNS)}
    for f in features:
        columns[f] = [float(r[6][f]) if r[6] and f in r[6] else None for r in rows]
    table = pa.table(columns, schema=pa.schema([("app", pa.string()), ("function", pa.string()),
                                                ("arrival_ms", pa.float64()), ("duration_ms", pa.float64()),
                                                ("memory_mb", pa.float64()), ("payload_bytes", pa.int64()),
                                                *((f, pa.float64()) for f in features)]))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()
