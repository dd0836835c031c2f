"""Platform profiles: what the simulator assumes about the platform it models.

A profile is a small JSON file that turns into the ``SimConfig`` (its ``ColdStartModel``) the
engine takes, plus how the platform reshapes a trace before the model sees it:

- ``cold_start``: ``base_ms + per_mb_ms * memory_mb`` for a function the profile knows nothing
  about; ``by_abi`` gives a measured distribution per function ABI (p10/p50/p90, and how it grows
  with code size), used when the function's ABI and code size are known (``FunctionInfo``);
  ``per_function_ms`` pins named functions (a constant). A function whose ABI has measured
  ``quantiles_ms`` draws each spawn's cold start from that distribution (shifted like the median
  for its code size; seeded, see ``ColdStartModel.quantiles_ms``); its median stays the
  policies' estimate. Without quantiles (or without the function's ABI) a cold start is constant.
  ``by_abi.<abi>.by_load`` makes it load-dependent: one distribution per bucket of a load
  ``measure`` when the spawn is decided, the requests in flight on the platform (``in_flight``)
  or the cold starts decided in the 50 ms before (``spawns_50ms``) (``upper``: the buckets'
  bounds, ``quantiles_ms``: one table per bucket), drawn instead of ``quantiles_ms``. Live, a
  burst of spawns grows the cold start (CPU and wasm-thread queueing: from ms to seconds on a
  loaded node, 3 to 5-14 ms in an hourly burst on a quiet one); ``wl calibrate`` fits the table
  from the runs' cold requests. It is this machine's at the load it was measured under (other
  processes' CPU share changes it).
- ``request_overhead_ms``: time an instance is busy per request beyond the function's own
  duration (the router -> node call, instantiation of an ABI 1 module): added to ``duration_ms``.
- ``front``: how the HTTP front spreads a burst. A request sent at ``t`` reaches the router's
  policy at ``max(t + delay_ms, previous + per_request_ms)`` (one FIFO server: the router's
  event loop takes ``per_request_ms`` per request), so 8 requests sent within 4 ms arrive
  spread over 8 x per_request_ms.
- ``client.response_ms``: what a client sees beyond the router's own latency (the HTTP path
  back), for client-side latency predictions.

Bundled profiles (``wlsim/profiles/*.json``), chosen by name: ``container`` (250 ms + 0.5
ms/MB, published container-platform cold starts; the simulator's default), ``wl`` (this
platform, measured with ``wl calibrate``) and ``wl-load`` (``wl`` plus the ``by_load`` table
fitted from runs with bursts of spawns, on this 2-core machine at load 8-12: for live-replay-
sized runs; a trace of long requests keeps hundreds in flight and would draw every spawn from
the top bucket). Any other name is a path to a profile file.

A trace names functions but not their ABI or code size, so ``function_info`` says what each
runs as: what ``wl load`` deploys for a trace function, the bundled synthetic function
(``wasi-command``, ``examples/build/synthetic.wasm``'s size). ``wl fidelity``, ``wl sim
replay/compare --profile`` and ``wl train --profile`` all build their SimConfig through it
(``trace_sim_config``), so each spawn's cold start is drawn the same way in all of them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from wlsim.config import QUANTILE_TABLE_RULE, ColdStartModel, LoadColdStart, SimConfig, is_quantile_table

if TYPE_CHECKING:
    import pandas as pd

PROFILES_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "container"
# What ``wl load`` deploys for each function of a trace (wl.loop.load): the bundled synthetic
# function, a WASI command module.
SYNTHETIC_ABI = "wasi-command"
SYNTHETIC_WASM = Path(__file__).resolve().parents[1] / "examples" / "build" / "synthetic.wasm"


class ProfileError(Exception):
    """A profile that cannot be found or read: the message names the file and what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoadBuckets(_Strict):
    """A load-dependent cold start (``wlsim.config.LoadColdStart``): the measured distribution
    per bucket of a load ``measure`` taken when the spawn is decided, platform-wide:
    ``in_flight`` (requests arrived at the router and not finished) or ``spawns_50ms`` (cold
    starts of requests decided in the 50 ms before). Bucket k holds ``upper[k-1] <= load <
    upper[k]``, the last is open, so ``quantiles_ms`` has one table more than ``upper``."""
    measure: Literal["in_flight", "spawns_50ms"] = "in_flight"
    upper: list[float] = Field(min_length=1)
    quantiles_ms: list[list[float]]
    samples: list[int] = Field(default_factory=list)
    fit: dict[str, Any] = Field(default_factory=dict, description="how well the buckets explain the samples")

    @model_validator(mode="after")
    def _consistent(self) -> LoadBuckets:
        if any(not 0 < v < math.inf for v in self.upper) or any(b <= a for a, b in pairwise(self.upper)):
            raise ValueError(f"upper: expected ascending finite bounds > 0, got {self.upper}")
        if len(self.quantiles_ms) != len(self.upper) + 1:
            raise ValueError(f"quantiles_ms: {len(self.upper)} bounds in upper need {len(self.upper) + 1} "
                             f"tables (one per bucket), got {len(self.quantiles_ms)}")
        for k, table in enumerate(self.quantiles_ms):
            if not is_quantile_table(table):
                raise ValueError(f"quantiles_ms[{k}]: {QUANTILE_TABLE_RULE}")
        if self.samples and len(self.samples) != len(self.quantiles_ms):
            raise ValueError(f"samples: expected one count per bucket ({len(self.quantiles_ms)}), "
                             f"got {len(self.samples)}")
        return self

    def model(self, shift_ms: float = 0.0) -> LoadColdStart:
        return LoadColdStart(tuple(self.upper), tuple(tuple(q + shift_ms for q in t) for t in self.quantiles_ms),
                             self.measure)


class AbiColdStart(_Strict):
    """Measured cold starts of one function ABI (ms, at the router: arrival to execution start)."""
    p50_ms: float = Field(ge=0)
    p10_ms: float | None = Field(default=None, ge=0)
    p90_ms: float | None = Field(default=None, ge=0)
    p99_ms: float | None = Field(default=None, ge=0)
    per_code_mb_ms: float = Field(default=0.0, ge=0)
    samples: int = Field(default=0, ge=0)
    # The measured distribution at 0, 5, ..., 100 % (any equally spaced probabilities from 0
    # to 1): the simulator draws each spawn's cold start from it (ColdStartModel.quantiles_ms).
    quantiles_ms: list[float] = Field(default_factory=list)
    # The same, per bucket of the platform's load at the spawn: when present every spawn draws
    # from its bucket instead of from quantiles_ms (the median above stays the estimate).
    by_load: LoadBuckets | None = None

    @field_validator("quantiles_ms")
    @classmethod
    def _ascending(cls, table: list[float]) -> list[float]:
        if table and not is_quantile_table(table):
            raise ValueError(QUANTILE_TABLE_RULE)
        return table


class ColdStartSpec(_Strict):
    base_ms: float = Field(ge=0)
    per_mb_ms: float = Field(default=0.0, ge=0)
    by_abi: dict[str, AbiColdStart] = Field(default_factory=dict)
    per_function_ms: dict[str, float] = Field(default_factory=dict)


class FrontSpec(_Strict):
    delay_ms: float = Field(default=0.0, ge=0)
    per_request_ms: float = Field(default=0.0, ge=0)


class ClientSpec(_Strict):
    response_ms: float = Field(default=0.0, ge=0)


@dataclass(frozen=True)
class FunctionInfo:
    """What the profile may know about a deployed function."""
    abi: str
    code_bytes: int


class Profile(_Strict):
    name: str
    source: str = Field(description="where the numbers come from (a paper, a wl calibrate run)")
    measured: dict[str, Any] = Field(default_factory=dict, description="how and when it was measured")
    cold_start: ColdStartSpec
    request_overhead_ms: float = Field(default=0.0, ge=0)
    front: FrontSpec = Field(default_factory=FrontSpec)
    client: ClientSpec = Field(default_factory=ClientSpec)

    # ------------------------------------------------------------------ simulator inputs
    def function_cold_start_ms(self, function: str, memory_mb: float, info: FunctionInfo | None = None) -> float:
        cs = self.cold_start
        if function in cs.per_function_ms:
            return cs.per_function_ms[function]
        if info is not None and info.abi in cs.by_abi:
            abi = cs.by_abi[info.abi]
            return abi.p50_ms + abi.per_code_mb_ms * info.code_bytes / 1_048_576
        return cs.base_ms + cs.per_mb_ms * memory_mb

    def cold_start_model(self, functions: Mapping[str, FunctionInfo] | None = None) -> ColdStartModel:
        """The engine's model: per-function values where the ABI and code size are known, and
        per-spawn draws where that ABI's distribution was measured."""
        cs = self.cold_start
        pinned = dict(cs.per_function_ms)
        tables: dict[str, tuple[float, ...]] = {}
        by_load: dict[str, LoadColdStart] = {}
        for name, info in (functions or {}).items():
            if name not in pinned and info.abi in cs.by_abi:
                pinned[name] = self.function_cold_start_ms(name, 0.0, info)
                abi = cs.by_abi[info.abi]
                shift = abi.per_code_mb_ms * info.code_bytes / 1_048_576
                if len(abi.quantiles_ms) >= 2:
                    tables[name] = tuple(q + shift for q in abi.quantiles_ms)
                if abi.by_load is not None:
                    by_load[name] = abi.by_load.model(shift)
        return ColdStartModel(base_ms=cs.base_ms, per_mb_ms=cs.per_mb_ms, per_function_ms=pinned,
                              quantiles_ms=tables, by_load=by_load)

    def sim_config(self, functions: Mapping[str, FunctionInfo] | None = None, **kwargs: Any) -> SimConfig:
        """A SimConfig with this profile's cold starts (``kwargs``: the other SimConfig fields)."""
        return SimConfig(cold_start=self.cold_start_model(functions), **kwargs)

    def with_cold_starts_scaled(self, factor: float) -> Profile:
        """This profile with every cold-start time multiplied by ``factor`` (constants, medians,
        quantile tables, load buckets): how much a prediction depends on the cold-start level
        (``wl.loop.fidelity.conditioning``). The platform's own overheads stay as they are."""
        if not (factor > 0 and math.isfinite(factor)):
            raise ProfileError(f"cold-start scale factor must be a finite number > 0, got {factor!r}")
        cs = self.cold_start

        def times(values: list[float]) -> list[float]:
            return [v * factor for v in values]

        def abi(a: AbiColdStart) -> AbiColdStart:
            by_load = None if a.by_load is None else a.by_load.model_copy(
                update={"quantiles_ms": [times(t) for t in a.by_load.quantiles_ms]})
            return a.model_copy(update={
                "p50_ms": a.p50_ms * factor, "per_code_mb_ms": a.per_code_mb_ms * factor,
                **{k: getattr(a, k) * factor for k in ("p10_ms", "p90_ms", "p99_ms") if getattr(a, k) is not None},
                "quantiles_ms": times(a.quantiles_ms), "by_load": by_load})

        scaled = cs.model_copy(update={
            "base_ms": cs.base_ms * factor, "per_mb_ms": cs.per_mb_ms * factor,
            "by_abi": {name: abi(a) for name, a in cs.by_abi.items()},
            "per_function_ms": {name: v * factor for name, v in cs.per_function_ms.items()}})
        return self.model_copy(update={"name": f"{self.name} (cold starts x{factor:g})", "cold_start": scaled})

    @property
    def shapes_trace(self) -> bool:
        return bool(self.request_overhead_ms or self.front.delay_ms or self.front.per_request_ms)

    def shape_trace(self, table: pd.DataFrame) -> pd.DataFrame:
        """The trace as the platform's model sees it: arrivals through the front's FIFO, each
        duration plus the per-request overhead. Rows keep their order (the FIFO never reorders),
        so request ids still match the input's rows."""
        if not self.shapes_trace or len(table) == 0:
            return table
        out = table.copy()
        out["arrival_ms"] = front_arrivals(table["arrival_ms"].to_numpy(dtype=float), self.front.delay_ms,
                                           self.front.per_request_ms)
        out["duration_ms"] = table["duration_ms"].to_numpy(dtype=float) + self.request_overhead_ms
        return out

    def simulate(self, table: pd.DataFrame, policy: Any, functions: Mapping[str, FunctionInfo] | None = None,
                 **kwargs: Any) -> Any:
        """``table`` (a trace as sent) replayed under ``policy`` on this platform: through its
        front and per-request overhead (``shape_trace``) with its cold starts (``functions``:
        default, each trace function as ``wl load``'s synthetic function; ``kwargs``: the other
        SimConfig fields). How ``wl fidelity`` predicts a live run, and what ``imitate --profile``
        trains against."""
        from wlsim.engine import simulate

        if functions is None:
            functions = function_info(table["function"].unique())
        return simulate(self.shape_trace(table), policy, self.sim_config(functions, **kwargs))

    def write(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.model_dump(), indent=2) + "\n")
        return path

    def describe(self) -> str:
        cs = self.cold_start
        text = f"{self.name}: cold start {cs.base_ms:g} ms + {cs.per_mb_ms:g} ms/MB"
        for abi, a in cs.by_abi.items():
            text += f"; {abi} p50 {a.p50_ms:.2f} ms"
            if a.by_load is not None:
                what = "requests in flight" if a.by_load.measure == "in_flight" else "spawns in 50 ms"
                text += (f" (by load: p50 {a.by_load.quantiles_ms[0][len(a.by_load.quantiles_ms[0]) // 2]:.1f} ms"
                         f" below {a.by_load.upper[0]:g} {what}, "
                         f"{a.by_load.quantiles_ms[-1][len(a.by_load.quantiles_ms[-1]) // 2]:.1f} ms from "
                         f"{a.by_load.upper[-1]:g})")
        if self.shapes_trace:
            text += (f"; +{self.request_overhead_ms:.2f} ms per request; front {self.front.delay_ms:.2f} ms"
                     f" + {self.front.per_request_ms:.2f} ms/request")
        return text


def synthetic_code_bytes() -> int:
    """The synthetic function's code size (0 when it is not built: a profile without a
    per-code-MB term, like the bundled ``wl``, does not need it)."""
    return SYNTHETIC_WASM.stat().st_size if SYNTHETIC_WASM.is_file() else 0


def function_info(functions: Iterable[str], *, abi: str = SYNTHETIC_ABI,
                  code_bytes: int | None = None) -> dict[str, FunctionInfo]:
    """What a profile knows about a trace's ``functions``: each runs as the synthetic function
    ``wl load`` deploys for it (``abi``; ``code_bytes`` default: the synthetic module's size),
    since a trace carries neither ABI nor code size."""
    size = synthetic_code_bytes() if code_bytes is None else int(code_bytes)
    return {str(f): FunctionInfo(abi, size) for f in functions}


def trace_sim_config(profile: Profile | str | os.PathLike[str] | None, functions: Iterable[str],
                     **kwargs: Any) -> SimConfig:
    """The SimConfig for replaying a trace of ``functions`` on ``profile`` (a Profile, a bundled
    name or a file; None = the default): per-function cold starts and, where the profile measured
    the ABI's distribution, per-spawn draws (``kwargs``: the other SimConfig fields, e.g. seed)."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    return prof.sim_config(function_info(functions), **kwargs)


def front_arrivals(sent_ms: Any, delay_ms: float, per_request_ms: float) -> Any:
    """Arrival times at the router of requests sent at ``sent_ms`` (ascending): one FIFO server,
    ``a[i] = max(sent[i] + delay, a[i-1] + per_request)``, solved in closed form
    ``a[i] = i*s + cummax(sent[j] + delay - j*s)`` so a million rows take milliseconds."""
    import numpy as np

    sent = np.asarray(sent_ms, dtype=float)
    if sent.size and np.any(np.diff(sent) < 0):
        order = np.argsort(sent, kind="stable")
        out = np.empty_like(sent)
        out[order] = front_arrivals(sent[order], delay_ms, per_request_ms)
        return out
    steps = np.arange(sent.size, dtype=float) * per_request_ms
    return steps + np.maximum.accumulate(sent + delay_ms - steps) if sent.size else sent


def bundled_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.json"))


def load_profile(name_or_path: str | os.PathLike[str] | None = None) -> Profile:
    """A bundled profile by name (``wl``, ``container``) or a profile file by path."""
    spec = str(name_or_path) if name_or_path is not None else DEFAULT_PROFILE
    path = PROFILES_DIR / f"{spec}.json" if spec in bundled_profiles() else Path(spec)
    if not path.is_file():
        raise ProfileError(f"profile {spec!r}: no bundled profile of that name ({', '.join(bundled_profiles())}) "
                           "and no such file")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise ProfileError(f"profile {path}: cannot read it ({error})") from None
    except json.JSONDecodeError as error:
        raise ProfileError(f"profile {path}: not JSON ({error.msg} at line {error.lineno})") from None
    return parse_profile(data, str(path))


def parse_profile(data: Any, where: str = "profile") -> Profile:
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: expected a JSON object with name, source and cold_start, "
                           f"got {type(data).__name__}")
    try:
        return Profile.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '(top)'}: {e['msg']}"
                             for e in error.errors()[:5])
        raise ProfileError(f"{where}: not a platform profile: {problems}") from None


def finite(x: float) -> float:
    """``x`` or 0.0 when it is NaN/inf (a fit on too few samples)."""
    return float(x) if math.isfinite(x) else 0.0
