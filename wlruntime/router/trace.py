"""The router's traffic in the canonical trace table (DESIGN.md, Traces), so live traffic can be
replayed in the simulator: ``app, function, arrival_ms, duration_ms, memory_mb, payload_bytes``.

One row per executed invocation (requests refused before running have no duration and are
not recorded). ``arrival_ms`` is on the router's policy clock: ms since 00:00 UTC of the day
the router started, like the Azure traces' day-relative times. ``duration_ms`` is the time
the instance was busy with the request as the router saw it (the node's execution time plus
the call's overhead), which is what the simulator's instance should take to reproduce what
happened live. Rows are kept in memory (the oldest are dropped past ``max_rows``) and
written sorted by arrival.
"""

from __future__ import annotations

import csv
import io
from collections import deque
from pathlib import Path

COLUMNS = ("app", "function", "arrival_ms", "duration_ms", "memory_mb", "payload_bytes")


class TraceRecorder:
    def __init__(self, max_rows: int = 1_000_000) -> None:
        self.rows: deque[tuple[str, str, float, float, float, int]] = deque(maxlen=max_rows)
        self.dropped = 0

    def record(self, app: str, function: str, arrival_ms: float, duration_ms: float, memory_mb: float,
               payload_bytes: int) -> None:
        if len(self.rows) == self.rows.maxlen:
            self.dropped += 1
        self.rows.append((app, function, arrival_ms, duration_ms, memory_mb, payload_bytes))

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


Row = tuple[str, str, float, float, float, int]


def encode_csv(rows: list[Row]) -> bytes:
    """Rows sorted by arrival, as canonical-trace CSV."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for app, fn, arrival, duration, memory, payload in sorted(rows, key=lambda r: r[2]):
        writer.writerow((app, fn, f"{arrival:.3f}", f"{duration:.3f}", f"{memory:g}", payload))
    return buf.getvalue().encode()


def encode_parquet(rows: list[Row]) -> bytes:
    """Rows sorted by arrival, as canonical-trace Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(rows, key=lambda r: r[2])
    table = pa.table({name: [r[i] for r in rows] for i, name in enumerate(COLUMNS)},
                     schema=pa.schema([("app", pa.string()), ("function", pa.string()),
                                       ("arrival_ms", pa.float64()), ("duration_ms", pa.float64()),
                                       ("memory_mb", pa.float64()), ("payload_bytes", pa.int64())]))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()
