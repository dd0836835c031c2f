"""Invocation traces: the canonical table, the Azure loaders and synthetic generators.

Everything that replays traffic (the simulator, the RL environment) calls ``read_trace``
and relies on ``CANONICAL_COLUMNS``.

Exports are resolved lazily (PEP 562) because ``wl`` imports ``wlsim.traces.cli`` at start-up
and must not pay for pandas there.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "TraceError": "wlsim.traces.table",
    "CANONICAL_COLUMNS": "wlsim.traces.table",
    "validate": "wlsim.traces.table",
    "read_trace": "wlsim.traces.formats",
    "write_trace": "wlsim.traces.table",
    "load_azure2019": "wlsim.traces.azure",
    "load_azure2021": "wlsim.traces.azure",
    "poisson": "wlsim.traces.synthetic",
    "diurnal": "wlsim.traces.synthetic",
    "mmpp": "wlsim.traces.synthetic",
    "payload_driven": "wlsim.traces.synthetic",
}

__all__ = [
    "CANONICAL_COLUMNS",
    "TraceError",
    "diurnal",
    "load_azure2019",
    "load_azure2021",
    "mmpp",
    "payload_driven",
    "poisson",
    "read_trace",
    "validate",
    "write_trace",
]

if TYPE_CHECKING:
    from wlsim.traces.azure import load_azure2019, load_azure2021
    from wlsim.traces.formats import read_trace
    from wlsim.traces.synthetic import diurnal, mmpp, payload_driven, poisson
    from wlsim.traces.table import CANONICAL_COLUMNS, TraceError, validate, write_trace


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wlsim.traces' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
