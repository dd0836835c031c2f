"""The Lambda tail log's REPORT line: Max Memory Used is the node's measured peak when the
result carries one (in whole MB, rounded up), else the function's memory size."""

from __future__ import annotations

import base64

import pytest

from wlruntime.router.http.invoke import tail_log
from wlruntime.router.state import Result

pytestmark = pytest.mark.unit


def report(result: Result, memory_mb: float) -> str:
    return base64.b64decode(tail_log("req-1", result, memory_mb)).decode().splitlines()[-1]


def test_max_memory_used_is_the_measured_peak() -> None:
    measured = Result(exec_ms=1.2, version=3, extra={"max_memory_bytes": 17 * 65536})  # 1.06 MiB
    line = report(measured, 128)
    assert "Memory Size: 128 MB" in line and "Max Memory Used: 2 MB" in line, line
    assert "Init Duration" not in line


def test_max_memory_used_falls_back_to_the_memory_size_when_not_measured() -> None:
    line = report(Result(exec_ms=0.4, cold=True, wait_ms=3.5), 64)
    assert "Max Memory Used: 64 MB" in line and "Init Duration: 3.50 ms" in line, line
