"""What one simulation run produces: columnar per-request and per-instance tables.

The engine (wlsim.engine) fills these; wlsim.metrics summarises them; wlsim.plots draws them.
Times are in ms from the trace's start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
