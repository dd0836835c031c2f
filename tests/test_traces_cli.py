"""``wl trace info / convert / synth`` through typer's CliRunner on the real files."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from wl.cli import app
from wlsim.traces import read_trace

pytestmark = pytest.mark.integration  # the wl trace commands end to end

TRACES = Path(__file__).resolve().parents[1] / "traces"
runner = CliRunner()


def wl(*args: str):
    return runner.invoke(app, ["trace", *map(str, args)])


def test_info_azure2019_day():
    r = wl("info", TRACES / "azure2019" / "40", "--top", "5")
    assert r.exit_code == 0, r.output
    out = r.output
    for text in ("143,189", "40 / 40", "23h59m", "inter-arrival, all", "inter-arrival, per fn",
                 "top 5 of 40 functions", "083a6af6", "60,206", "invocations per hour (24 bins"):
        assert text in out, text
    # the busiest function's sparkline row shows its morning burst (peak 9,347 in hour 8)
    row = next(line for line in out.splitlines() if line.strip().startswith("083a6af6") and "▁" in line)
    assert "9,347" in row and "█" in row


def test_info_azure2021_and_plot(tmp_path):
    png = tmp_path / "plots" / "rate.png"
    r = wl("info", TRACES / "azure2021" / "Azure2021_200.csv", "--plot", png)
    assert r.exit_code == 0, r.output
    assert "199" in r.output and "31 / 13" in r.output and "invocations per minute" in r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["rate.png"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_convert_azure2019_with_window(tmp_path, suffix):
    out = tmp_path / f"second_half{suffix}"
    r = wl("convert", TRACES / "azure2019" / "10", out, "--seed", "4", "--start-minute", "721",
           "--end-minute", "1440")
    assert r.exit_code == 0, r.output
    df = read_trace(out)
    expected = read_trace(TRACES / "azure2019" / "10", seed=4, start_minute=721, end_minute=1440)
    assert df.equals(expected)
    assert f"wrote {len(df):,} invocations of" in r.output


def test_convert_with_name_mapping(tmp_path):
    import pandas as pd

    r = wl("convert", TRACES / "azure2021" / "Azure2021_200.csv", tmp_path / "t.parquet",
           "--names", tmp_path / "names.csv")
    assert r.exit_code == 0, r.output
    names = pd.read_csv(tmp_path / "names.csv")
    assert len(names) == 31 and {"function", "func", "HashApp"} <= set(names.columns)
    assert len(read_trace(tmp_path / "t.parquet")) == 199


@pytest.mark.parametrize("kind", ["poisson", "diurnal", "mmpp", "bursty", "payload"])
def test_synth_every_kind(tmp_path, kind):
    out = tmp_path / f"{kind}.parquet"
    r = wl("synth", kind, out, "--functions", "3", "--hours", "0.5", "--seed", "2")
    assert r.exit_code == 0, r.output
    df = read_trace(out)
    assert df["function"].nunique() <= 3 and len(df) > 0
    assert ("payload_bytes" in df.columns) == (kind == "payload")
    assert wl("info", out).exit_code == 0


AZ19_40 = TRACES / "azure2019" / "40"


@pytest.mark.parametrize("args, words", [
    (lambda tmp: ["info", tmp / "no" / "such.parquet"], "no such file"),
    (lambda tmp: ["info", TRACES / "azure2019"], "several Azure 2019 traces"),
    (lambda tmp: ["info", TRACES / "README.md"], "unsupported trace format"),
    (lambda tmp: ["info", AZ19_40, "--start-minute", "0"], "minute range"),
    (lambda tmp: ["convert", AZ19_40, tmp / "out.txt"], "unsupported output format"),
    (lambda tmp: ["convert", AZ19_40, tmp / "x.parquet", "--names", tmp / "n.csv", "--start-minute", "9999"],
     "minute range"),
    (lambda tmp: ["synth", "poisson", tmp / "x.parquet", "--rate", "0"], "no invocations generated"),
])
def test_bad_input_is_one_red_line_and_exit_2(tmp_path, args, words):
    r = wl(*args(tmp_path))
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], r.output
    assert "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []  # nothing written, not even half


def test_bad_csv_error_names_row_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("app,function,arrival_ms,duration_ms,memory_mb\na,f,0,1,128\na,f,2,-4,128\n")
    r = wl("info", path)
    assert r.exit_code == 2
    assert f"error: {path}, row 2 (line 3), column 'duration_ms': negative duration_ms -4.0" in r.output
