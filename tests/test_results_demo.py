"""wl.demo (what ``make demo`` runs), on the small Azure 2021 sample so it stays quick."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from wl import demo
from wlsim.compare import spec_name

pytestmark = pytest.mark.integration  # runs the whole demo pipeline


def test_demo_writes_the_comparison_and_plots(tmp_path):
    out = tmp_path / "demo"
    ran = CliRunner().invoke(demo.app, ["--trace", "traces/azure2021/Azure2021_200.csv", "--out", str(out),
                                        "--only", "simulator"])
    assert ran.exit_code == 0, ran.output
    printed = ran.stdout
    summary = pd.read_csv(out / "sim" / "summary.csv")
    expected = list(demo.DEMO_POLICIES)
    if (demo.LEARNED_ARTIFACT / "spec.json").is_file():
        expected.append(f"learned:{demo.LEARNED_ARTIFACT}")
    assert summary["policy"].tolist() == expected
    assert (summary["invocations"] == 199).all()
    for png in ("latency_cdf.png", "pareto.png", "instances_over_time.png"):
        assert (out / "sim" / png).stat().st_size > 5_000
    assert "demo finished in" in printed and str(out) in printed.replace("\n", "")
    for policy in expected:
        assert spec_name(policy) in printed


def test_demo_names_its_sections_when_given_an_unknown_one():
    ran = CliRunner().invoke(demo.app, ["--only", "nothing"])
    assert ran.exit_code == 2 and "platform" in ran.output and "simulator" in ran.output
