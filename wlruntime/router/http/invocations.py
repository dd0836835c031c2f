"""Recent invocations per function, as the router answered them, for ``wl logs``
(``GET /admin/logs/{name}``): time, request id, instance, node, version, duration, wait, cold
start, error and the tail of what the function wrote to stderr. Every invocation is kept
(successful ones too), the last ``PER_FUNCTION`` per function, each log cut to its last
``LOG_TAIL_BYTES``, so the memory it takes is bounded per deployed function.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from wlruntime.router.state import Result, RouterError

PER_FUNCTION = 200
LOG_TAIL_BYTES = 4096


# The fields of an entry, as ``recent`` returns them.
FIELDS = ("time", "request_id", "instance", "node", "version", "duration_ms", "wait_ms", "cold", "error",
          "message", "logs")


class InvocationLog:
    """Entries are kept as tuples of the raw values and made into dicts only when read: every
    request is recorded, ``wl logs`` reads a few (the request path pays a tuple, not a dict,
    two roundings and a decode)."""

    def __init__(self, per_function: int = PER_FUNCTION) -> None:
        self.per_function = per_function
        self._by_function: dict[str, deque[tuple]] = {}

    def _entries(self, function: str) -> deque[tuple]:
        entries = self._by_function.get(function)
        if entries is None:
            entries = self._by_function[function] = deque(maxlen=self.per_function)
        return entries

    def record(self, function: str, request_id: str, result: Result) -> None:
        """An invocation that ran (or was run and failed)."""
        entries = self._by_function.get(function) or self._entries(function)
        entries.append((time.time(), request_id, result.instance, result.node, result.version, result.exec_ms,
                        result.wait_ms, result.cold, result.error, result.error_message,
                        result.logs[-LOG_TAIL_BYTES:] if result.logs else b""))

    def refused(self, function: str, request_id: str, error: RouterError) -> None:
        """A request for a known function that never ran (throttled, too large, no capacity)."""
        self._entries(function).append((time.time(), request_id, "", "", None, None, None, None, error.kind,
                                        error.message, b""))

    def recent(self, function: str, limit: int) -> list[dict[str, Any]] | None:
        """The newest ``limit`` entries, oldest first; None when the function has none."""
        entries = self._by_function.get(function)
        if not entries:
            return None
        return [_as_dict(entry) for entry in list(entries)[-max(1, limit):]]

    def forget(self, function: str) -> None:
        self._by_function.pop(function, None)


def _as_dict(entry: tuple) -> dict[str, Any]:
    out = dict(zip(FIELDS, entry, strict=True))
    for key in ("duration_ms", "wait_ms"):
        if out[key] is not None:
            out[key] = round(out[key], 3)
    out["logs"] = out["logs"].decode("utf-8", "replace")
    return out
