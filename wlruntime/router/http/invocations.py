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


class InvocationLog:
    def __init__(self, per_function: int = PER_FUNCTION) -> None:
        self.per_function = per_function
        self._by_function: dict[str, deque[dict[str, Any]]] = {}

    def _entries(self, function: str) -> deque[dict[str, Any]]:
        entries = self._by_function.get(function)
        if entries is None:
            entries = self._by_function[function] = deque(maxlen=self.per_function)
        return entries

    def record(self, function: str, request_id: str, result: Result) -> None:
        """An invocation that ran (or was run and failed)."""
        self._entries(function).append({
            "time": time.time(), "request_id": request_id, "instance": result.instance, "node": result.node,
            "version": result.version, "duration_ms": round(result.exec_ms, 3), "wait_ms": round(result.wait_ms, 3),
            "cold": result.cold, "error": result.error, "message": result.error_message,
            "logs": result.logs[-LOG_TAIL_BYTES:].decode("utf-8", "replace")})

    def refused(self, function: str, request_id: str, error: RouterError) -> None:
        """A request for a known function that never ran (throttled, too large, no capacity)."""
        self._entries(function).append({
            "time": time.time(), "request_id": request_id, "instance": "", "node": "", "version": None,
            "duration_ms": None, "wait_ms": None, "cold": None, "error": error.kind, "message": error.message,
            "logs": ""})

    def recent(self, function: str, limit: int) -> list[dict[str, Any]] | None:
        """The newest ``limit`` entries, oldest first; None when the function has none."""
        entries = self._by_function.get(function)
        if not entries:
            return None
        return list(entries)[-max(1, limit):]

    def forget(self, function: str) -> None:
        self._by_function.pop(function, None)
