"""Smoke test of bench/bench_runtime.py: a tiny real run (registry, nodes, fork/exec) prints every row.

Not a timing assertion: only that each measurement ran, was checked and was reported. The
componentize-py component is left out (--no-python): compiling it costs ~16 CPU-s twice.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "bench_runtime.py"

# (measurement, function, expected sample count) for --cold 2 --warm 5 --no-python.
EXPECTED_ROWS = [
    ("cold start: uncached: fetch + compile", "echo (C)", 2),
    ("cold start: compiled artifact on disk, fresh node", "echo (C)", 2),
    ("cold start: compiled artifact in memory", "echo (C)", 2),
    ("cold start: uncached: fetch + compile", "counter (WAT)", 2),
    ("cold start: compiled artifact on disk, fresh node", "counter (WAT)", 2),
    ("cold start: compiled artifact in memory", "counter (WAT)", 2),
    ("warm invoke: round trip", "echo (C)", 5),
    ("warm invoke: exec in node", "echo (C)", 5),
    ("warm invoke: round trip", "counter (WAT)", 5),
    ("warm invoke: exec in node", "counter (WAT)", 5),
    ("per-request process: fork/exec (subprocess)", "native echo", 5),
    ("per-request process: posix_spawn", "native echo", 5),
    ("per-request process: python + wasmtime-py process", "echo.wasm", 2),
    ("node: process start to gRPC serving", "node", 2),
]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out_json = tmp_path_factory.mktemp("bench") / "runtime.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-python", "--cold", "2", "--warm", "5",
         "--json", str(out_json)],
        capture_output=True, text=True, timeout=170, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done, out_json


@pytest.mark.timeout(180)
def test_quick_run_prints_every_row(quick_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    done, out_json = quick_run
    lines = done.stdout.splitlines()
    for measurement, function, n in EXPECTED_ROWS:
        matching = [line for line in lines if f" {measurement} " in line and f" {function} " in line]
        assert len(matching) == 1, f"row {measurement!r} / {function!r} not printed once:\n{done.stdout}"
        cells = [cell.strip() for cell in matching[0].split("│")]
        assert cells[4] == str(n), matching[0]
        assert float(cells[5]) > 0, matching[0]
        assert cells[7].endswith("×"), matching[0]
    assert "echo (C), ABI 1: cold start (artifact on disk) / fork-exec = " in done.stdout
    assert "counter (WAT), ABI 2: cold start (artifact on disk) / fork-exec = " in done.stdout
    assert "counter (Python)" not in done.stdout

    report = json.loads(out_json.read_text())
    assert len(report["rows"]) == len(EXPECTED_ROWS)
    baseline = next(row for row in report["rows"] if row["case"] == "fork/exec (subprocess)")
    assert baseline["ratio_to_fork_exec"] == 1.0
    for row in report["rows"]:
        assert row["samples"] and all(value > 0 for value in row["samples"]), row
        assert row["p99_ms"] >= row["median_ms"] > 0, row
    cold_parts = [row["parts"] for row in report["rows"] if row["group"] == "cold start"]
    assert all({"fetch", "compile", "inst", "node"} <= set(parts) for parts in cold_parts)


def test_bad_payload_size_is_named() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--payload-bytes", "0"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert done.returncode == 2
    assert "--payload-bytes must be between 1 and 65536, got 0" in done.stderr


@pytest.mark.timeout(180)
def test_markdown_table_has_every_row(quick_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    import bench_runtime

    report = json.loads(quick_run[1].read_text())
    fields = [f.name for f in dataclasses.fields(bench_runtime.Row)]
    rows = {(row["group"], row["case"], row["key"]): bench_runtime.Row(**{f: row[f] for f in fields})
            for row in report["rows"]}
    table = bench_runtime.markdown_table(rows).splitlines()
    assert len(table) == 2 + len(EXPECTED_ROWS)
    for (measurement, function, n), line in zip(EXPECTED_ROWS, table[2:], strict=True):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[:2] == [measurement, function] and cells[3] == str(n), line
