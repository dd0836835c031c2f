"""The trace schema, once: the canonical per-invocation table and the outcome columns.

The simulator's loaders and engine (wlsim) read the canonical columns; the live router's
recorder (wlruntime.router.trace) writes them, plus the outcome columns of what happened to
each executed request, so a live recording and a simulated run are summarised by the same
code (wlsim.metrics) and a recording replays in the simulator (the outcome columns are not
features: the engine ignores them on input).
"""

from __future__ import annotations

# One row per invocation, sorted by arrival (DESIGN.md, Traces).
CANONICAL_COLUMNS: tuple[str, ...] = ("app", "function", "arrival_ms", "duration_ms", "memory_mb")
# Optional input columns with a meaning of their own (not request features).
OPTIONAL_COLUMNS: tuple[str, ...] = ("payload_bytes",)
# A per-function override of executions per instance (SimConfig.concurrency) in a trace.
CONCURRENCY_COLUMN = "concurrency"

# What happened to a request, with the same names in a simulated run's per-request table
# (wlsim.result.REQUEST_COLUMNS) and in the live recording. Times on the policy clock (ms).
OUTCOME_COLUMNS: dict[str, str] = {
    "cold": "bool",              # an instance was spawned for it (wlmodel's one definition)
    "wait_ms": "float64",        # queued before its execution started, cold start excluded
    "cold_start_ms": "float64",  # part of its latency spent waiting for its instance to start
    "exec_ms": "float64",        # execution time (the node's, live; the trace's duration, simulated)
    "start_ms": "float64",       # its execution started
    "end_ms": "float64",         # its execution ended (the response was ready)
    "node": "string",            # the node it ran on
    "status": "string",          # "ok" or the error kind (wlmodel.kinds.ErrorKind)
}

# Columns that are neither a request feature nor to be read as one.
RESERVED_COLUMNS: frozenset[str] = frozenset(
    (*CANONICAL_COLUMNS, *OPTIONAL_COLUMNS, CONCURRENCY_COLUMN, *OUTCOME_COLUMNS))


def feature_columns(columns: list[str] | tuple[str, ...]) -> list[str]:
    """The columns of a trace table that are request features (RequestView.features)."""
    return [c for c in columns if c not in RESERVED_COLUMNS]
