"""Simulation configuration with documented defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


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

    def cold_start_ms(self, function: str, memory_mb: float) -> float:
        v = self.per_function_ms.get(function)
        return v if v is not None else self.base_ms + self.per_mb_ms * memory_mb


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
