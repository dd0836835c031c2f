"""Output a script can rely on: --json on the simulator's result and trace commands is JSON alone
on stdout (progress bars go to stderr), and tables never cut a number, however narrow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wl.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BIG = 12_345  # invocations of the busiest function: a number a cut table would show as "12,3…"


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small canonical trace: one busy function and one rare one over ten minutes."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    rows = [("app-a", "busy-function-with-a-long-name", t, 20.0, 128) for t in np.sort(rng.uniform(0, 600_000, BIG))]
    rows += [("app-b", "rare", t, 150.0, 256) for t in np.sort(rng.uniform(0, 600_000, 40))]
    frame = pd.DataFrame(rows, columns=["app", "function", "arrival_ms", "duration_ms", "memory_mb"])
    path = tmp_path_factory.mktemp("trace") / "small.csv"
    frame.sort_values("arrival_ms").to_csv(path, index=False)
    return str(path)


def wl(*args: str, columns: int = 200) -> tuple[str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.stdout, result.stderr


def test_compare_json_is_alone_on_stdout_with_progress_on_stderr(trace: str, tmp_path: Path) -> None:
    out, err = wl("sim", "compare", "--trace", trace, "--policies", "fixed_ttl,default", "-j", "1", "--no-oracle",
                  "--progress", "--json",
                  "-o", str(tmp_path))
    doc = json.loads(out)
    assert [r["policy"] for r in doc["summary"]] == ["fixed_ttl", "default"]
    assert all(isinstance(r["cold_starts"], int) for r in doc["summary"])
    assert "results in" in err and (tmp_path / "summary.csv").is_file()


def test_replay_json(trace: str, tmp_path: Path) -> None:
    doc = json.loads(wl("sim", "replay", "--trace", trace, "--policy", "fixed_ttl", "--no-progress", "--json",
                        "-o", str(tmp_path))[0])
    assert doc["policy"] == "fixed_ttl" and doc["summary"]["invocations"] == BIG + 40


@pytest.mark.parametrize("columns", [80, 50])
def test_tables_never_cut_numbers(trace: str, tmp_path: Path, columns: int) -> None:
    out, _ = wl("sim", "compare", "--trace", trace, "--policies", "fixed_ttl", "-j", "1", "--no-oracle",
                "--no-progress",
                "-o", str(tmp_path),
                columns=columns)
    assert "…" not in out
    summary = json.loads((tmp_path / "summary.json").read_text())["summary"]
    assert f"{summary[0]['cold_starts']:,}" in out
    info, _ = wl("trace", "info", trace, "--top", "3", columns=columns)
    assert "…" not in info.split("invocations per")[0]  # the sparkline below is a chart, cropped by design
    assert f"{BIG:,}" in info


def test_trace_info_json(trace: str) -> None:
    doc = json.loads(wl("trace", "info", trace, "--top", "2", "--json")[0])
    assert doc["invocations"] == BIG + 40 and doc["functions"] == 2
    assert [f["invocations"] for f in doc["top_functions"]] == [BIG, 40]
    assert doc["duration_ms"]["max"] == 150.0
