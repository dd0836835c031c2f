"""``wl sim replay`` and ``wl sim compare`` end to end through typer's CliRunner, on a small
synthetic canonical CSV written by the test, with the real engine and policies."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from policies.interface import CostWeights
from wlsim.cli import app, default_out_dir, trace_stem
from wlsim.metrics import summarize

pytestmark = pytest.mark.integration  # the wl sim commands end to end

runner = CliRunner()
ENV = {"COLUMNS": "200"}  # wide enough that rich never truncates a column
PNGS = ("latency_cdf.png", "pareto.png", "instances_over_time.png")


@pytest.fixture(scope="module")
def trace_csv(tmp_path_factory) -> str:
    """Two functions over ten minutes: a busy one and a sparse one with long gaps."""
    rng = np.random.default_rng(3)
    rows = []
    for fn, app_name, n, mem, dur in (("busy", "a1", 300, 256.0, 80.0), ("sparse", "a2", 30, 1024.0, 400.0)):
        arrivals = np.sort(rng.uniform(0, 600_000, n))
        for t in arrivals:
            rows.append((app_name, fn, round(float(t), 3), round(float(rng.exponential(dur)) + 1, 3), mem))
    df = pd.DataFrame(rows, columns=["app", "function", "arrival_ms", "duration_ms", "memory_mb"])
    path = tmp_path_factory.mktemp("trace") / "small.csv"
    df.sort_values("arrival_ms", kind="stable").to_csv(path, index=False)
    return str(path)


def invoke(*args: str):
    return runner.invoke(app, list(args), env=ENV)


def test_replay_writes_requests_summary_and_plots(trace_csv, tmp_path):
    out = tmp_path / "replay"
    r = invoke("replay", "--trace", trace_csv, "--policy", "fixed_ttl:ttl_ms=60000", "--out", str(out),
               "--no-progress", "--cold-start-ms", "300")
    assert r.exit_code == 0, r.output
    assert "cold starts" in r.stdout and str(out) in r.stdout.replace("\n", "")
    requests = pd.read_parquet(out / "requests.parquet")
    assert len(requests) == 330
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == "fixed_ttl:ttl_ms=60000"
    assert summary["summary"]["invocations"] == 330
    assert summary["config"]["cold_start"]["base_ms"] == 300.0
    csv = pd.read_csv(out / "summary.csv")
    assert csv["cold_starts"].iloc[0] == requests["cold"].sum() == summary["summary"]["cold_starts"]
    # every cold start cost exactly the configured 300 ms
    cold_start_ms = requests.loc[requests["cold"], "cold_start_ms"].tolist()
    assert cold_start_ms == pytest.approx([300.0] * int(requests["cold"].sum()))
    for png in ("latency_cdf.png", "instances_over_time.png"):
        assert (out / png).stat().st_size > 5_000


def test_replay_matches_the_library(trace_csv, tmp_path):
    from wlsim.config import SimConfig
    from wlsim.engine import simulate
    from wlsim.traces import read_trace

    out = tmp_path / "replay"
    r = invoke("replay", "--trace", trace_csv, "--policy", "default", "--out", str(out), "--no-progress")
    assert r.exit_code == 0, r.output
    direct = summarize(simulate(read_trace(trace_csv), "default", SimConfig()), CostWeights())
    got = json.loads((out / "summary.json").read_text())["summary"]
    for key in ("cold_starts", "latency_p99_ms", "idle_gb_s", "total_gb_s", "weighted_cost_usd"):
        assert got[key] == pytest.approx(direct[key]), key


def test_compare_table_csv_plots_and_oracle_ratio(trace_csv, tmp_path):
    out = tmp_path / "cmp"
    r = invoke("compare", "--trace", trace_csv, "--policies", "fixed_ttl,default", "--out", str(out),
               "--jobs", "2", "--progress")
    assert r.exit_code == 0, r.output
    from wlsim.cli import COMPARE_HEADERS
    header_lines = r.stdout.splitlines()
    for header in COMPARE_HEADERS:  # two-line headers: each part on its own line
        for part in header.split("\n"):
            assert any(part in line for line in header_lines), part
    assert "rejects" in r.stdout and "cold-" in r.stdout and "oracle" in r.stdout
    assert f"results in {out}" in r.stdout.replace("\n", "")
    summary = pd.read_csv(out / "summary.csv")
    assert summary["policy"].tolist() == ["fixed_ttl", "default", "oracle"]
    assert (summary["invocations"] == 330).all()
    assert summary.loc[2, "cost_vs_oracle"] == 1.0
    # the terminal table shows the same numbers as the CSV
    for _, row in summary.iterrows():
        line = next(ln for ln in header_lines if ln.startswith(row["policy"] + " ") and "━" not in ln)
        cells = line.split()
        assert cells[1] == f"{row['cold_starts']:,}" and cells[-1] == f"{row['rejected']:,}"
        assert cells[-3] == f"{row['cost_vs_oracle']:.3f}"
        assert cells[-2] == f"{row['avoidable_vs_oracle']:.3f}"
        assert cells[-6] == f"{row['waits_over_cold_start']:,}"
    assert summary["cost_vs_oracle"].tolist() == pytest.approx(
        (summary["weighted_cost_usd"] / summary.loc[2, "weighted_cost_usd"]).tolist())
    for png in PNGS:
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_compare_parallel_equals_sequential(trace_csv, tmp_path):
    from wlsim.compare import compare
    from wlsim.traces import read_trace

    trace = read_trace(trace_csv)
    seq, _ = compare(trace, ["fixed_ttl", "kpa"], jobs=1, progress=False)
    par, results = compare(trace, ["fixed_ttl", "kpa"], jobs=2, progress=False)
    assert list(results) == ["fixed_ttl", "kpa", "oracle"]
    timing = ["wall_s", "sim_invocations_per_s"]
    pd.testing.assert_frame_equal(seq.drop(columns=timing), par.drop(columns=timing))


def test_compare_accepts_a_custom_policy_file(trace_csv, tmp_path):
    policy_file = tmp_path / "short_ttl.py"
    policy_file.write_text(textwrap.dedent("""
        from policies.interface import INVOKE, KeepAlive, KILL, Policy

        class ShortTTL(Policy):
            name = "short_ttl"

            def on_idle(self, now_ms, instance, fn):
                if instance.queue:
                    return INVOKE
                if instance.idle_ms(now_ms) >= 1000:
                    return KILL
                return KeepAlive(1000)
    """))
    out = tmp_path / "cmp"
    r = invoke("compare", "--trace", trace_csv, "--policies", f"custom:{policy_file},fixed_ttl",
               "--out", str(out), "--jobs", "2", "--no-progress")
    assert r.exit_code == 0, r.output
    summary = pd.read_csv(out / "summary.csv").set_index("policy")
    short, ttl = summary.loc[f"custom:{policy_file}"], summary.loc["fixed_ttl"]
    # a 1 s keep-alive holds less idle memory and pays more cold starts than 10 minutes
    assert short["idle_gb_s"] < ttl["idle_gb_s"]
    assert short["cold_starts"] > ttl["cold_starts"]


def test_default_out_dir_is_under_results(trace_csv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("compare", "--trace", trace_csv, "--policies", "fixed_ttl", "--no-oracle", "--no-progress",
               "--jobs", "1")
    assert r.exit_code == 0, r.output
    made = list((tmp_path / "results").iterdir())
    assert len(made) == 1 and made[0].name.startswith("small-")
    assert pd.read_csv(made[0] / "summary.csv")["policy"].tolist() == ["fixed_ttl"]


def test_trace_stem_and_out_dir(tmp_path):
    assert trace_stem("traces/azure2019/40") == "azure2019-40"
    assert trace_stem("traces/azure2021/Azure2021_200.csv") == "Azure2021_200"
    assert trace_stem("x/t.csv.gz") == "t"
    first = default_out_dir("t.csv", root=tmp_path)
    first.mkdir()
    assert default_out_dir("t.csv", root=tmp_path) != first


# ------------------------------------------------------------------------ bad inputs

def _one_line_error(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert err.startswith("error:") and "\n" not in err, err
    for n in needles:
        assert n in err, err


def test_missing_trace_exits_2(tmp_path):
    missing = tmp_path / "nope.csv"
    r = invoke("replay", "--trace", str(missing), "--policy", "fixed_ttl", "--out", str(tmp_path / "o"))
    _one_line_error(r, str(missing), "no such file")
    assert not (tmp_path / "o").exists()  # nothing written


def test_unknown_policy_exits_2(trace_csv, tmp_path):
    r = invoke("compare", "--trace", trace_csv, "--policies", "fixed_ttl,nope", "--out", str(tmp_path / "o"))
    _one_line_error(r, "unknown policy 'nope'")
    assert not (tmp_path / "o").exists()
    r = invoke("replay", "--trace", trace_csv, "--policy", "fixed_ttl:bogus=1", "--out", str(tmp_path / "o"))
    _one_line_error(r, "fixed_ttl:bogus=1")


def test_missing_custom_policy_file_exits_2(trace_csv, tmp_path):
    r = invoke("compare", "--trace", trace_csv, "--policies", f"custom:{tmp_path}/absent.py")
    _one_line_error(r, "custom policy file not found", "absent.py")


def test_bad_trace_row_exits_2_naming_row_and_column(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("app,function,arrival_ms,duration_ms,memory_mb\n"
                   "a,f,0,10,128\n"
                   "a,f,5,-3,128\n")
    r = invoke("replay", "--trace", str(bad), "--policy", "fixed_ttl")
    _one_line_error(r, str(bad), "row 2", "duration_ms")


def _write_learned_artifact(folder) -> None:
    """A framework-free learned-policy artifact written with numpy alone: one linear layer
    whose weights favour keeping instances alive (the format policies.learned documents)."""
    import hashlib

    from policies.encoder import FeatureEncoder

    enc = FeatureEncoder()
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (enc.n_actions, enc.n_features))
    b = np.zeros(enc.n_actions)
    folder.mkdir(parents=True)
    np.savez(folder / "weights.npz", W0=w, b0=b)
    spec = {"format": "wl-learned-policy", "format_version": 1, "encoder": enc.spec.to_dict(),
            "actions": enc.actions.names,
            "network": {"layers": [{"in": enc.n_features, "out": enc.n_actions, "activation": "linear"}],
                        "output": "logits"},
            "weights_sha256": hashlib.sha256((folder / "weights.npz").read_bytes()).hexdigest()}
    (folder / "spec.json").write_text(json.dumps(spec))


def test_compare_accepts_a_learned_artifact(trace_csv, tmp_path):
    artifact = tmp_path / "artifact"
    _write_learned_artifact(artifact)
    out = tmp_path / "cmp"
    r = invoke("compare", "--trace", trace_csv, "--policies", f"fixed_ttl,learned:{artifact}",
               "--out", str(out), "--jobs", "2", "--no-progress")
    assert r.exit_code == 0, r.output
    summary = pd.read_csv(out / "summary.csv")
    assert summary["policy"].tolist() == ["fixed_ttl", f"learned:{artifact}", "oracle"]
    learned = summary.iloc[1]
    assert learned["served"] + learned["rejected"] == 330
    assert learned["cost_vs_oracle"] >= 1.0 - 1e-9


def test_bad_learned_artifact_exits_2(trace_csv, tmp_path):
    r = invoke("compare", "--trace", trace_csv, "--policies", f"learned:{tmp_path}/none")
    _one_line_error(r, "learned policy artifact not found", "none")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "spec.json").write_text("{not json")
    (broken / "weights.npz").write_bytes(b"")
    r = invoke("compare", "--trace", trace_csv, "--policies", f"learned:{broken}")
    _one_line_error(r, "spec.json", "not valid JSON")


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_crashing_policy_is_named(trace_csv, tmp_path, jobs):
    from wlsim.compare import PolicyRunError, compare
    from wlsim.traces import read_trace

    broken = tmp_path / "broken.py"
    broken.write_text(textwrap.dedent("""
        from policies.interface import Policy

        class Broken(Policy):
            def route(self, now_ms, request, fn):
                raise ZeroDivisionError("boom at " + str(request.id))
    """))
    with pytest.raises(PolicyRunError, match=r"policy 'custom:.*broken.py' failed: ZeroDivisionError: boom at 0"):
        compare(read_trace(trace_csv), ["fixed_ttl", f"custom:{broken}"], jobs=jobs, progress=False)


def test_replay_max_instances_limits_each_function_like_the_live_router(trace_csv, tmp_path):
    out = tmp_path / "capped"
    r = invoke("replay", "--trace", trace_csv, "--policy", "fixed_ttl:ttl_ms=60000", "--out", str(out),
               "--no-progress", "--max-instances", "1")
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["max_instances"] == 1
    instances = pd.read_parquet(out / "instances.parquet")
    requests = pd.read_parquet(out / "requests.parquet")
    # fixed TTL always spawns when nothing is idle: overlapping requests of "busy" are rejected
    assert summary["summary"]["rejected"] == int(requests["rejected"].sum()) > 0
    alive = [((instances["function"] == f) & (instances["created_ms"] <= t) & (t < instances["died_ms"])).sum()
             for f in ("busy", "sparse") for t in instances["created_ms"]]
    assert max(alive) == 1
