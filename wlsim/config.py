"""Simulation configuration with documented defaults."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise


@dataclass(frozen=True)
class ColdStartModel:
    """Cold-start latency of a function: ``base_ms + per_mb_ms * memory_mb``, unless
    ``per_function_ms`` names the function. Defaults follow published container-platform
    measurements (a few hundred ms, growing with memory: the bundled ``container`` profile);
    a wasm cold start on wl is ~3.7 ms (the bundled ``wl`` profile, measured by ``wl calibrate``).
    ``wlsim.profile.load_profile(name_or_path).cold_start_model()`` builds one from a profile;
    ``wl sim replay/compare --profile wl`` uses it. The default stays ``container`` so results
    produced before profiles existed (README, examples/learned) keep their meaning.
    """
    base_ms: float = 250.0
    per_mb_ms: float = 0.5
    per_function_ms: dict[str, float] = field(default_factory=dict)
    # Per-function measured distributions (a profile's ``by_abi`` quantiles): the cold starts at
    # equally spaced probabilities 0, 1/(k-1), ..., 1 (ascending, k >= 2). A function named here
    # takes one draw per spawn (inverse CDF, linear between neighbouring quantiles) from the
    # simulation's RNG seeded with ``SimConfig.seed``, so a run is deterministic per seed. The
    # constant above (per_function_ms or base + per_mb) stays the function's estimate: the
    # policies' cold-start prior. Empty (the default, the ``container`` profile): constant.
    quantiles_ms: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # Per-function load-dependent distributions (a profile's ``by_abi.<abi>.by_load``): each
    # spawn draws from the distribution of the platform's load at that moment (LoadColdStart),
    # instead of ``quantiles_ms``. Empty (the default): the cold start ignores load.
    by_load: dict[str, LoadColdStart] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for function, table in self.quantiles_ms.items():
            if not is_quantile_table(table):
                raise ValueError(f"ColdStartModel.quantiles_ms[{function!r}]: {QUANTILE_TABLE_RULE}, "
                                 f"got {list(table)!r}")

    def cold_start_ms(self, function: str, memory_mb: float) -> float:
        """The function's cold-start estimate (every spawn's, unless it has a distribution)."""
        v = self.per_function_ms.get(function)
        return v if v is not None else self.base_ms + self.per_mb_ms * memory_mb


# LoadColdStart's load measures: what a spawn's bucket is keyed by.
IN_FLIGHT = "in_flight"
SPAWNS_50MS = "spawns_50ms"
LOAD_MEASURES = (IN_FLIGHT, SPAWNS_50MS)
SPAWN_WINDOW_MS = 50.0


@dataclass(frozen=True)
class LoadColdStart:
    """A cold start that grows with the platform's load: one measured distribution per bucket
    of a load measure taken when the spawn is decided:

    - ``in_flight``: the requests in flight on the platform (arrived at the router and not
      finished: waiting, starting or executing, the spawning one included). Live under heavy
      load (2026-12-02, load 1-16), a burst of spawns on a loaded node made cold starts grow from
      milliseconds to seconds: spawns queue with everything else in flight for the CPU and the
      node's wasm threads;
    - ``spawns_50ms``: the cold starts decided in the 50 ms before (of requests: pre-warms are
      not counted, as a live recording has no request for them), the spawning one excluded. On a
      quiet machine at ms-scale cold starts it is the better key (2026-12-02, session 8: an
      hourly burst at x15, 270 requests/s, made cold starts 5-14 ms against ~3 ms after it;
      R2 of log(cold start) 0.52 by spawns in 50 ms, 0.05 by requests in flight, whose sleeping
      requests hold no CPU).

    Bucket ``k`` holds ``upper[k-1] <= load < upper[k]`` (the last one is open);
    ``quantiles_ms[k]`` is its distribution at equally spaced probabilities (as
    ColdStartModel.quantiles_ms). ``wl.loop.calibrate`` fits the table from live runs.
    """
    upper: tuple[float, ...]
    quantiles_ms: tuple[tuple[float, ...], ...]
    measure: str = IN_FLIGHT

    def __post_init__(self) -> None:
        if self.measure not in LOAD_MEASURES:
            raise ValueError(f"LoadColdStart.measure: expected one of {', '.join(LOAD_MEASURES)}, got {self.measure!r}")
        if len(self.quantiles_ms) != len(self.upper) + 1:
            raise ValueError(f"LoadColdStart: {len(self.upper)} bucket bounds need {len(self.upper) + 1} "
                             f"quantile tables, got {len(self.quantiles_ms)}")
        if any(not b > a for a, b in pairwise(self.upper)) or any(not 0 < v < math.inf for v in self.upper):
            raise ValueError(f"LoadColdStart.upper: expected ascending finite bounds > 0, got {list(self.upper)!r}")
        for k, table in enumerate(self.quantiles_ms):
            if not is_quantile_table(table):
                raise ValueError(f"LoadColdStart.quantiles_ms[{k}]: {QUANTILE_TABLE_RULE}, got {list(table)!r}")

    def table(self, load: float) -> tuple[float, ...]:
        """The distribution of the bucket ``load`` (the measure's value) falls in."""
        return self.quantiles_ms[bisect_right(self.upper, load)]

    def draw(self, load: float, u: float) -> float:
        return draw_quantile(self.table(load), u)


QUANTILE_TABLE_RULE = "expected at least 2 ascending finite values >= 0 (ms)"


def is_quantile_table(table: Sequence[float]) -> bool:
    """Quantiles a distribution can be drawn from (see ColdStartModel.quantiles_ms)."""
    return (len(table) >= 2 and all(0 <= v < math.inf for v in table)
            and all(a <= b for a, b in pairwise(table)))


def draw_quantile(table: tuple[float, ...], u: float) -> float:
    """The inverse CDF at ``u`` in [0, 1) of a distribution given by its quantiles at equally
    spaced probabilities (linear between neighbours)."""
    x = u * (len(table) - 1)
    k = int(x)
    return table[k] + (x - k) * (table[k + 1] - table[k])


@dataclass(frozen=True)
class SimConfig:
    """A simulated cluster: ``nodes`` nodes of ``node_memory_mb`` each.

    The default cluster has unbounded memory, so results measure the policies' keep-alive
    and routing choices alone (the bundled Azure day peaks above 1 TB held under concurrency
    1); set ``node_memory_mb`` to study eviction and rejection under memory pressure.
    """
    nodes: int = 1
    node_memory_mb: float = math.inf
    # Executions per instance at once (FunctionView.concurrency) unless the trace's
    # ``concurrency`` column says otherwise; not the cap on instances (max_instances below).
    concurrency: int = 1
    # Live instances per function at most, like a deployed function's ``max_instances`` (alias
    # ``concurrency``) config in the live router (FunctionView.max_instances): a Spawn at the
    # limit rejects the request (429 live) and a pre-warm at the limit does nothing. None: no limit.
    max_instances: int | None = None
    cold_start: ColdStartModel = field(default_factory=ColdStartModel)
    default_memory_mb: float = 256.0     # when a trace row has no memory
    seed: int = 0
