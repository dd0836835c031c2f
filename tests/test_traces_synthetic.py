"""Seeded synthetic generators: rates, shapes, burstiness, payload-driven durations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wlsim.traces import CANONICAL_COLUMNS, TraceError, diurnal, mmpp, payload_driven, poisson
from wlsim.traces.stats import within_function_gaps
from wlsim.traces.synthetic import MS_PER_HOUR, diurnal_rate

pytestmark = pytest.mark.unit

GENERATORS = [poisson, diurnal, mmpp, payload_driven]


@pytest.mark.parametrize("gen", GENERATORS)
def test_canonical_deterministic_and_seed_dependent(gen):
    a, b, c = gen(5, 2.0, seed=11), gen(5, 2.0, seed=11), gen(5, 2.0, seed=12)
    assert list(a.columns[:5]) == list(CANONICAL_COLUMNS)
    assert a["arrival_ms"].is_monotonic_increasing and (a["duration_ms"] >= 0).all()
    assert a["arrival_ms"].max() < 2.0 * MS_PER_HOUR
    assert set(a["function"].astype(str)) <= {f"fn-{i:02d}" for i in range(5)}
    assert a.equals(b)
    assert not a.equals(c)


def test_poisson_rate_and_exponential_gaps():
    df = poisson(10, 2.0, rate_per_s=0.5, seed=1)
    expected = 0.5 * 7200  # per function
    counts = df["function"].value_counts()
    assert len(counts) == 10
    assert (abs(counts - expected) < 5 * np.sqrt(expected)).all()
    assert abs(len(df) / (10 * expected) - 1) < 0.02
    _, gaps = within_function_gaps(df)
    assert abs(gaps.mean() - 2000) < 60            # 1/rate = 2 s
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05  # exponential: CV 1


def test_poisson_per_function_rates():
    rates = [0.05, 0.5, 2.0]
    df = poisson(3, 1.0, rate_per_s=rates, seed=2)
    counts = df["function"].value_counts()
    for i, r in enumerate(rates):
        assert abs(counts[f"fn-{i:02d}"] - r * 3600) < 5 * np.sqrt(r * 3600)
    with pytest.raises(TraceError, match="2 values for 3 functions"):
        poisson(3, 1.0, rate_per_s=[1.0, 2.0])


def test_default_rates_are_skewed():
    counts = poisson(50, 1.0, seed=3)["function"].value_counts()
    assert counts.max() / counts.min() > 20


def test_diurnal_follows_the_sinusoid():
    n, rate = 20, 0.2
    df = diurnal(n, 24.0, rate_per_s=rate, amplitude=0.8, peak_hour=14.0, seed=4)
    assert abs(len(df) / (n * rate * 86_400) - 1) < 0.01  # the daily mean is the given rate
    per_hour = np.bincount((df["arrival_ms"] // MS_PER_HOUR).astype(int), minlength=24)
    # expected per hour: the integral of the rate over that hour (fine Riemann sum)
    t = np.linspace(0, 24 * MS_PER_HOUR, 24 * 600, endpoint=False) + MS_PER_HOUR / 1200
    expected = diurnal_rate(t, n * rate, 0.8, 14.0).reshape(24, 600).mean(axis=1) * 3600
    assert np.all(np.abs(per_hour - expected) < 5 * np.sqrt(expected))
    assert per_hour.argmax() in (13, 14) and per_hour.argmin() in (1, 2)
    assert per_hour.max() / per_hour.min() > 5  # (1 + 0.8) / (1 - 0.8) = 9 at the extremes


def test_mmpp_mean_rate_and_burstiness():
    on, off, a, b = 2.0, 0.01, 1 / 60, 1 / 600
    df = mmpp(20, 24.0, on_rate_per_s=on, off_rate_per_s=off, on_to_off_per_s=a, off_to_on_per_s=b, seed=5)
    mean_rate = (b * on + a * off) / (a + b)
    assert abs(len(df) / (20 * 86_400 * mean_rate) - 1) < 0.05
    _, gaps = within_function_gaps(df)
    assert gaps.std() / gaps.mean() > 3  # Poisson would be 1
    # inside bursts gaps are ~1/on_rate: the median gap is far below the mean gap
    assert np.median(gaps) < 1000 and gaps.mean() > 4000


def test_mmpp_rejects_bad_switching_rates():
    with pytest.raises(TraceError, match="on_to_off_per_s must be > 0"):
        mmpp(2, 1.0, on_to_off_per_s=0.0)


def test_payload_drives_duration():
    df = payload_driven(8, 2.0, rate_per_s=0.5, base_ms=20.0, ms_per_kb=0.5, noise_ms=5.0, seed=6)
    assert df["payload_bytes"].dtype == np.int64 and (df["payload_bytes"] >= 1).all()
    x, y = df["payload_bytes"].to_numpy(float), df["duration_ms"].to_numpy()
    assert np.corrcoef(x, y)[0, 1] > 0.95
    slope, intercept = np.polyfit(x / 1024, y, 1)
    assert abs(slope - 0.5) < 0.01 and abs(intercept - 20.0) < 1.0
    residual = y - (intercept + slope * x / 1024)
    assert abs(residual.std() - 5.0) < 0.3  # most durations are far from the 0 clip


@pytest.mark.parametrize("kwargs, words", [
    ({"n_functions": 0}, "n_functions must be >= 1"),
    ({"hours": 0}, "hours must be > 0"),
    ({"rate_per_s": -1.0}, "rates must be finite and >= 0"),
    ({"rate_per_s": 0.0}, "no invocations generated"),
])
def test_bad_parameters(kwargs, words):
    with pytest.raises(TraceError, match=words):
        poisson(**{"n_functions": 2, "hours": 1.0, **kwargs})


def test_diurnal_amplitude_range():
    with pytest.raises(TraceError, match="amplitude"):
        diurnal(2, 1.0, amplitude=1.5)
    flat = diurnal(4, 24.0, rate_per_s=0.1, amplitude=0.0, seed=1)
    per_hour = np.bincount((flat["arrival_ms"] // MS_PER_HOUR).astype(int), minlength=24)
    assert np.all(np.abs(per_hour - 1440) < 5 * np.sqrt(1440))


def test_synthetic_memory_and_names():
    df = poisson(12, 1.0, rate_per_s=0.1, seed=9)
    per_fn = df.groupby("function", observed=True)["memory_mb"].nunique()
    assert (per_fn == 1).all()
    assert set(df["memory_mb"].unique()) <= {128.0, 256.0, 512.0, 1024.0}
    assert isinstance(df["function"].dtype, pd.CategoricalDtype)
    assert (df["app"].astype(str).str[4:] == df["function"].astype(str).str[3:]).all()
