"""Output a script can rely on: --json on the simulator's result and trace commands is JSON alone
on stdout (progress bars go to stderr), and tables never cut a number, however narrow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wl.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TRACE = "traces/azure2019/40"
WINDOW = ["--trace", TRACE, "--start-minute", "1", "--end-minute", "10"]


def wl(*args: str, columns: int = 200) -> tuple[str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.stdout, result.stderr


def test_compare_json_is_alone_on_stdout_with_progress_on_stderr(tmp_path: Path) -> None:
    out, err = wl("sim", "compare", *WINDOW, "--policies", "fixed_ttl,default", "--progress", "--json",
                  "-o", str(tmp_path))
    doc = json.loads(out)
    assert [r["policy"] for r in doc["summary"]] == ["fixed_ttl", "default", "oracle"]
    assert all(isinstance(r["cold_starts"], int) for r in doc["summary"])
    assert "results in" in err and (tmp_path / "summary.csv").is_file()


def test_replay_json(tmp_path: Path) -> None:
    doc = json.loads(wl("sim", "replay", *WINDOW, "--policy", "fixed_ttl", "--no-progress", "--json",
                        "-o", str(tmp_path))[0])
    assert doc["policy"] == "fixed_ttl" and doc["summary"]["invocations"] > 0


@pytest.mark.parametrize("columns", [80, 50])
def test_tables_never_cut_numbers(tmp_path: Path, columns: int) -> None:
    out, _ = wl("sim", "compare", *WINDOW, "--policies", "fixed_ttl", "--no-progress", "-o", str(tmp_path),
                columns=columns)
    assert "…" not in out
    summary = json.loads((tmp_path / "summary.json").read_text())["summary"]
    assert f"{summary[0]['cold_starts']:,}" in out
    info, _ = wl("trace", "info", TRACE, "--top", "3", columns=columns)
    assert "…" not in info.split("invocations per")[0]  # the sparkline below is a chart, cropped by design
    assert "60,206" in info


def test_trace_info_json() -> None:
    doc = json.loads(wl("trace", "info", TRACE, "--top", "2", "--json")[0])
    assert doc["invocations"] == 143_189 and doc["functions"] == 40
    assert [f["invocations"] for f in doc["top_functions"]] == [60_206, 26_466]
    assert doc["duration_ms"]["p99"] > 0
