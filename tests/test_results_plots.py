"""wlsim.plots writes real PNGs; the Pareto front is the right set of points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import two_function_result

from wlsim.compare import summary_table
from wlsim.plots import PLOT_FILES, pareto_front, write_plots

pytestmark = pytest.mark.integration  # renders every plot (matplotlib)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pareto_front_minimises_both():
    x = np.array([1.0, 2.0, 3.0, 0.5, 2.0, 4.0])
    y = np.array([5.0, 3.0, 4.0, 9.0, 3.5, 1.0])
    # (0.5,9) (1,5) (2,3) (4,1) are efficient; (3,4) is beaten by (2,3); (2,3.5) by (2,3)
    assert pareto_front(x, y).tolist() == [3, 0, 1, 5]
    # equal points: only one of them is kept
    assert pareto_front(np.array([1.0, 1.0]), np.array([2.0, 2.0])).tolist() == [0]


def test_write_plots_makes_nonempty_pngs(tmp_path):
    a = two_function_result()
    b = two_function_result()
    b.policy = "other"
    b.instances.loc[0, "idle_ms"] = 1000.0           # less idle memory...
    b.requests.loc[1, ["cold", "cold_start_ms"]] = (True, 300.0)  # ...one more cold start
    results = {"hand": a, "oracle": b}
    summary = summary_table(results)
    assert summary["cost_vs_oracle"].iloc[1] == 1.0
    paths = write_plots(results, summary, tmp_path / "plots")
    assert set(paths) == set(PLOT_FILES)
    for kind, path in paths.items():
        assert path == tmp_path / "plots" / PLOT_FILES[kind]
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5_000, kind


def test_plots_survive_a_policy_with_no_served_requests(tmp_path):
    r = two_function_result()
    r.requests["rejected"] = True
    r.requests["latency_ms"] = np.nan
    summary = pd.DataFrame([{"policy": "p", "idle_gb_s": 1.0, "cold_start_rate": np.nan}])
    paths = write_plots({"p": r}, summary, tmp_path)
    assert all(p.stat().st_size > 0 for p in paths.values())


def test_plots_are_also_written_as_pdf_with_short_labels(tmp_path):
    from wlsim.plots import short_label

    r = two_function_result()
    results = {"fixed_ttl:ttl_ms=60000": r, "learned:examples/learned/azure40": r, "oracle": r}
    summary = summary_table(results)
    paths = write_plots(results, summary, tmp_path, clock_offset_ms=12 * 3_600_000)
    for path in paths.values():
        assert path.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    assert short_label("fixed_ttl:ttl_ms=60000") == "TTL 1min"
    assert short_label("fixed_ttl:ttl_ms=20000") == "TTL 20s"
    assert short_label("learned:examples/learned/azure40") == "learned azure40"
    assert short_label("custom:examples/policies/keep_warm_5min.py:KeepWarm") == "custom keep_warm_5min"
    assert short_label("hybrid_histogram") == "hybrid hist."


def test_added_latency_is_wait_plus_cold_start():
    from wlsim.plots import added_latency_ms

    # served: cold 300 -> 300; warm 0; queued 50; cold 500 (the rejected one is left out)
    assert sorted(added_latency_ms(two_function_result()).tolist()) == [0.0, 50.0, 300.0, 500.0]
