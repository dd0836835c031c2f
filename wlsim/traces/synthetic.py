"""Seeded synthetic traces in the canonical table.

Each generator makes ``n_functions`` functions (``fn-00``, ``fn-01``, ... in apps ``app-00``,
...) over ``hours`` hours. Arrival processes:

* ``poisson``: homogeneous Poisson arrivals, one rate per function;
* ``diurnal``: Poisson with a sinusoidal 24-hour rate, drawn by thinning;
* ``mmpp``: bursty, a 2-state Markov-modulated Poisson process (on/off rates and switching rates);
* ``azure_like`` / ``azure_like_chunks``: any size (e.g. 10k functions, tens of millions of
  invocations), shaped like Azure Functions 2019, generated a minute at a time so it can be
  streamed to Parquet (``wlsim.traces.stream.write_chunks``; ``wl trace synth azure``);
* ``payload_driven``: Poisson arrivals whose ``payload_bytes`` (lognormal) drive the duration,
  ``duration = base_ms + ms_per_kb * payload_kb + noise``, so a payload-aware duration
  predictor has something to learn.

``rate_per_s`` is one rate for every function or one per function; by default rates are drawn
log-uniformly between 0.001/s and 1/s (a skewed mix, like real platforms). Except in
``payload_driven``, durations are lognormal around a per-function median drawn log-uniformly
in [10 ms, 2 s], and memory per function is one of 128/256/512/1024 MB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from wlsim.traces.table import TraceError, validate

MS_PER_HOUR = 3_600_000.0
DEFAULT_RATE_RANGE_PER_S = (0.001, 1.0)
DURATION_MEDIAN_RANGE_MS = (10.0, 2000.0)
DURATION_SIGMA = 0.6
MEMORY_CHOICES_MB = (128.0, 256.0, 512.0, 1024.0)

Rates = float | Sequence[float] | np.ndarray | None


def _names(n: int, stem: str) -> list[str]:
    width = max(2, len(str(n - 1)))
    return [f"{stem}-{i:0{width}d}" for i in range(n)]


def _check(n_functions: int, hours: float, source: str) -> None:
    if int(n_functions) < 1:
        raise TraceError(source, f"n_functions must be >= 1, got {n_functions}")
    if not hours > 0:
        raise TraceError(source, f"hours must be > 0, got {hours}")


def _rates(rng: np.random.Generator, rate_per_s: Rates, n: int, source: str) -> np.ndarray:
    if rate_per_s is None:
        lo, hi = DEFAULT_RATE_RANGE_PER_S
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    rates = np.asarray(rate_per_s, dtype=np.float64)
    if rates.ndim == 0:
        rates = np.full(n, float(rates))
    if rates.shape != (n,):
        raise TraceError(source, f"rate_per_s has {rates.size} values for {n} functions")
    if not (np.isfinite(rates) & (rates >= 0)).all():
        raise TraceError(source, "rates must be finite and >= 0")
    return rates


def _profiles(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per function: median duration (ms) and memory (MB)."""
    lo, hi = DURATION_MEDIAN_RANGE_MS
    median_ms = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    memory_mb = rng.choice(np.asarray(MEMORY_CHOICES_MB), n)
    return median_ms, memory_mb


def _table(func_idx: np.ndarray, arrival_ms: np.ndarray, duration_ms: np.ndarray,
           memory_mb: np.ndarray, n: int, source: str, **extra: np.ndarray) -> pd.DataFrame:
    """Sort by arrival and build the canonical table."""
    if len(arrival_ms) == 0:
        raise TraceError(source, "no invocations generated; raise the rates or the horizon")
    order = np.argsort(arrival_ms, kind="stable")
    func_idx = func_idx[order]
    df = pd.DataFrame({
        "app": pd.Categorical.from_codes(func_idx, _names(n, "app")),
        "function": pd.Categorical.from_codes(func_idx, _names(n, "fn")),
        "arrival_ms": arrival_ms[order],
        "duration_ms": duration_ms[order],
        "memory_mb": memory_mb[func_idx],
        **{k: v[order] for k, v in extra.items()},
    })
    return validate(df, source)


def _durations(rng: np.random.Generator, median_ms: np.ndarray, func_idx: np.ndarray) -> np.ndarray:
    return median_ms[func_idx] * np.exp(DURATION_SIGMA * rng.standard_normal(len(func_idx)))


def _poisson_arrivals(rng: np.random.Generator, rates: np.ndarray,
                      horizon_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Homogeneous Poisson arrivals per function: a Poisson count, then uniform instants."""
    counts = rng.poisson(rates * horizon_ms / 1000.0)
    func_idx = np.repeat(np.arange(len(rates)), counts)
    return func_idx, rng.uniform(0.0, horizon_ms, len(func_idx))


def poisson(n_functions: int = 10, hours: float = 1.0, *, rate_per_s: Rates = None,
            seed: int = 0) -> pd.DataFrame:
    """Homogeneous Poisson arrivals, ``rate_per_s`` per function."""
    source = "synthetic:poisson"
    _check(n_functions, hours, source)
    rng = np.random.default_rng(seed)
    rates = _rates(rng, rate_per_s, n_functions, source)
    median_ms, memory_mb = _profiles(rng, n_functions)
    func_idx, arrival = _poisson_arrivals(rng, rates, hours * MS_PER_HOUR)
    return _table(func_idx, arrival, _durations(rng, median_ms, func_idx), memory_mb, n_functions, source)


def diurnal_rate(t_ms: np.ndarray, mean_rate: np.ndarray | float, amplitude: float,
                 peak_hour: float) -> np.ndarray:
    """Rate at time ``t_ms``: ``mean * (1 + amplitude * cos(2 pi (t_h - peak_hour) / 24))``."""
    hours = np.asarray(t_ms) / MS_PER_HOUR
    return mean_rate * (1.0 + amplitude * np.cos(2.0 * np.pi * (hours - peak_hour) / 24.0))


def diurnal(n_functions: int = 10, hours: float = 24.0, *, rate_per_s: Rates = None,
            amplitude: float = 0.8, peak_hour: float = 14.0, seed: int = 0) -> pd.DataFrame:
    """Poisson arrivals with a sinusoidal daily rate: ``rate_per_s`` is each function's mean
    over a whole day, ``amplitude`` (0..1) the relative swing, ``peak_hour`` the busiest hour
    (hour 0 = trace start). Drawn by thinning a Poisson process at the peak rate."""
    source = "synthetic:diurnal"
    _check(n_functions, hours, source)
    if not 0.0 <= amplitude <= 1.0:
        raise TraceError(source, f"amplitude must be in [0, 1], got {amplitude}")
    rng = np.random.default_rng(seed)
    rates = _rates(rng, rate_per_s, n_functions, source)
    median_ms, memory_mb = _profiles(rng, n_functions)
    func_idx, arrival = _poisson_arrivals(rng, rates * (1.0 + amplitude), hours * MS_PER_HOUR)
    keep_p = diurnal_rate(arrival, 1.0, amplitude, peak_hour) / (1.0 + amplitude)
    keep = rng.random(len(arrival)) < keep_p
    func_idx, arrival = func_idx[keep], arrival[keep]
    return _table(func_idx, arrival, _durations(rng, median_ms, func_idx), memory_mb, n_functions, source)


def mmpp(n_functions: int = 10, hours: float = 1.0, *, on_rate_per_s: float = 2.0,
         off_rate_per_s: float = 0.01, on_to_off_per_s: float = 1 / 60, off_to_on_per_s: float = 1 / 600,
         seed: int = 0) -> pd.DataFrame:
    """Bursty arrivals: each function alternates between an "on" state (Poisson at
    ``on_rate_per_s``) and an "off" state (``off_rate_per_s``), leaving them at rates
    ``on_to_off_per_s`` and ``off_to_on_per_s`` (mean sojourns are their inverses; defaults:
    1-minute bursts every ~10 minutes). Each function starts in a state drawn from the
    stationary distribution, so the long-run mean rate is
    ``(off_to_on * on_rate + on_to_off * off_rate) / (on_to_off + off_to_on)``."""
    source = "synthetic:mmpp"
    _check(n_functions, hours, source)
    for name, v in (("on_rate_per_s", on_rate_per_s), ("off_rate_per_s", off_rate_per_s)):
        if not (np.isfinite(v) and v >= 0):
            raise TraceError(source, f"{name} must be >= 0, got {v}")
    for name, v in (("on_to_off_per_s", on_to_off_per_s), ("off_to_on_per_s", off_to_on_per_s)):
        if not (np.isfinite(v) and v > 0):
            raise TraceError(source, f"{name} must be > 0, got {v}")
    rng = np.random.default_rng(seed)
    median_ms, memory_mb = _profiles(rng, n_functions)
    horizon_s = hours * 3600.0
    p_on = off_to_on_per_s / (on_to_off_per_s + off_to_on_per_s)
    leave_rate = np.array([off_to_on_per_s, on_to_off_per_s])   # index by state: 0 off, 1 on
    arrival_rate = np.array([off_rate_per_s, on_rate_per_s])

    funcs, arrivals = [], []
    for f in range(n_functions):
        state = int(rng.random() < p_on)
        # Enough alternating sojourns to cover the horizon, extended if they fall short.
        expected = horizon_s * (on_to_off_per_s + off_to_on_per_s) / 2.0
        states = np.empty(0, dtype=np.int64)
        lengths = np.empty(0)
        while lengths.sum() < horizon_s:
            k = int(expected * 1.5) + 16
            seq = (state + len(states) + np.arange(k)) % 2
            states = np.concatenate([states, seq])
            lengths = np.concatenate([lengths, rng.exponential(1.0 / leave_rate[seq])])
        starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
        inside = starts < horizon_s
        starts, states = starts[inside], states[inside]
        lengths = np.minimum(lengths[inside], horizon_s - starts)
        counts = rng.poisson(arrival_rate[states] * lengths)
        t = np.repeat(starts, counts) + rng.random(counts.sum()) * np.repeat(lengths, counts)
        arrivals.append(t * 1000.0)
        funcs.append(np.full(len(t), f, dtype=np.int64))
    func_idx = np.concatenate(funcs)
    arrival = np.concatenate(arrivals)
    return _table(func_idx, arrival, _durations(rng, median_ms, func_idx), memory_mb, n_functions, source)


def payload_driven(n_functions: int = 10, hours: float = 1.0, *, rate_per_s: Rates = None,
                   payload_median_bytes: float = 64 * 1024, payload_sigma: float = 1.0,
                   base_ms: float = 20.0, ms_per_kb: float = 0.5, noise_ms: float = 5.0,
                   seed: int = 0) -> pd.DataFrame:
    """Poisson arrivals with a ``payload_bytes`` column that drives the duration.

    Each function's median payload is ``payload_median_bytes`` times a log-uniform factor in
    [1/4, 4]; each request's payload is lognormal around it with ``payload_sigma``. Duration is
    ``base_ms + ms_per_kb * payload_bytes / 1024 + N(0, noise_ms)``, clipped at 0 (with the
    defaults duration and payload correlate at about 0.99)."""
    source = "synthetic:payload_driven"
    _check(n_functions, hours, source)
    if not (payload_median_bytes > 0 and payload_sigma >= 0 and noise_ms >= 0):
        raise TraceError(source, "payload_median_bytes must be > 0, payload_sigma and noise_ms >= 0")
    rng = np.random.default_rng(seed)
    rates = _rates(rng, rate_per_s, n_functions, source)
    _, memory_mb = _profiles(rng, n_functions)
    func_median = payload_median_bytes * np.exp(rng.uniform(np.log(0.25), np.log(4.0), n_functions))
    func_idx, arrival = _poisson_arrivals(rng, rates, hours * MS_PER_HOUR)
    payload = np.maximum(1, np.rint(func_median[func_idx]
                                    * np.exp(payload_sigma * rng.standard_normal(len(func_idx)))))
    duration = base_ms + ms_per_kb * payload / 1024.0 + noise_ms * rng.standard_normal(len(func_idx))
    return _table(func_idx, arrival, np.maximum(duration, 0.0), memory_mb, n_functions, source,
                  payload_bytes=payload.astype(np.int64))


# ------------------------------------------------------------------ Azure-like, at scale
AZURE_RATE_SIGMA = 2.5           # lognormal spread of per-function rates (orders of magnitude apart)
AZURE_MEAN_FUNCTIONS_PER_APP = 2.5
AZURE_DURATION_MEDIAN_RANGE_MS = (5.0, 10_000.0)
AZURE_DIURNAL_AMPLITUDE = 0.5
AZURE_MEMORY_CHOICES_MB = (128.0, 256.0, 512.0, 1024.0, 2048.0)
AZURE_CHUNK_MS = 600_000.0       # one chunk (a Parquet row group) per 10 simulated minutes


def azure_like_chunks(n_functions: int = 10_000, invocations: int = 10_000_000, hours: float = 24.0, *,
                      seed: int = 0, chunk_ms: float = AZURE_CHUNK_MS):
    """An Azure-like trace of any size as canonical tables, one per ``chunk_ms`` of time, in
    arrival order (concatenated they are one valid trace); memory is one chunk at a time.

    Shaped like the Azure Functions 2019 trace (Shahrad et al., ATC'20): functions grouped
    into applications (geometric sizes, mean 2.5 functions; memory per application), rates
    lognormal across functions (sigma 2.5: a few functions take most invocations, most are
    rare), a 24-hour sinusoidal load (amplitude 0.5, peak at 14:00), lognormal durations
    around a per-function median in [5 ms, 10 s]. The expected total is ``invocations``;
    per chunk each function's count is Poisson (rate at the chunk's middle), its instants
    uniform within the chunk.
    """
    source = "synthetic:azure_like"
    _check(n_functions, hours, source)
    if int(invocations) < 1:
        raise TraceError(source, f"invocations must be >= 1, got {invocations}")
    rng = np.random.default_rng(seed)
    n = int(n_functions)
    weights = np.exp(AZURE_RATE_SIGMA * rng.standard_normal(n))
    horizon_ms = hours * MS_PER_HOUR
    rate_per_ms = weights / weights.sum() * (float(invocations) / horizon_ms)
    app_sizes = rng.geometric(1.0 / AZURE_MEAN_FUNCTIONS_PER_APP, n)     # at most n apps
    app_of_fn = np.repeat(np.arange(n), app_sizes)[:n]
    n_apps = int(app_of_fn[-1]) + 1
    lo, hi = AZURE_DURATION_MEDIAN_RANGE_MS
    median_ms = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    memory_mb = rng.choice(np.asarray(AZURE_MEMORY_CHOICES_MB), n_apps)[app_of_fn]
    apps = pd.Categorical.from_codes(np.arange(n_apps), _names(n_apps, "app")).categories
    functions = pd.Categorical.from_codes(np.arange(n), _names(n, "fn")).categories
    edges = np.append(np.arange(0.0, horizon_ms, chunk_ms), horizon_ms)
    load = np.diff(edges) * diurnal_rate((edges[:-1] + edges[1:]) / 2.0, 1.0, AZURE_DIURNAL_AMPLITUDE, 14.0)
    load *= horizon_ms / load.sum()          # the time of day shapes the load, not its total
    for start, end, scale in zip(edges[:-1], edges[1:], load, strict=True):
        mean = rate_per_ms * scale
        counts = rng.poisson(mean)
        fn = np.repeat(np.arange(n), counts)
        arrival = rng.uniform(start, end, len(fn))
        order = np.argsort(arrival, kind="stable")
        fn, arrival = fn[order], arrival[order]
        if len(fn):
            yield pd.DataFrame({
                "app": pd.Categorical.from_codes(app_of_fn[fn], categories=apps),
                "function": pd.Categorical.from_codes(fn, categories=functions),
                "arrival_ms": arrival,
                "duration_ms": median_ms[fn] * np.exp(DURATION_SIGMA * rng.standard_normal(len(fn))),
                "memory_mb": memory_mb[fn],
            })


def azure_like(n_functions: int = 100, invocations: int = 100_000, hours: float = 24.0, *,
               seed: int = 0) -> pd.DataFrame:
    """``azure_like_chunks`` in one table (for traces that fit in memory)."""
    parts = list(azure_like_chunks(n_functions, invocations, hours, seed=seed))
    if not parts:
        raise TraceError("synthetic:azure_like", "no invocations generated; raise invocations or hours")
    return validate(pd.concat(parts, ignore_index=True), "synthetic:azure_like")
