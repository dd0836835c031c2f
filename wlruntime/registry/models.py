"""Function names and the per-function config the registry stores (validated with pydantic)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, model_validator

# the name rules live in wlruntime.names; imported here too for the registry's users
from wlruntime.names import NAME_RE as NAME_RE
from wlruntime.names import NAME_RULE as NAME_RULE
from wlruntime.names import name_problem as name_problem

ABIS = ("wasi-command", "component")
DEFAULT_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024


class ConfigError(ValueError):
    """A function config field has a bad value; the message names the field."""


class FunctionConfig(BaseModel):
    """What a function runs with: the one function config, validated by the registry at upload
    and built by nodes from what the registry stores (``from_stored``). Validated strictly:
    ``"128"`` is not a number, and unknown fields are errors at upload (a misspelt ``memroy_mb``
    must not silently fall back to the default). Immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    memory_mb: StrictInt = Field(128, ge=1, le=16384)
    timeout_ms: StrictInt = Field(3000, ge=1, le=900_000)
    concurrency: StrictInt = Field(1, ge=1, le=1000)
    """Live instances of the function at most (a spawn beyond it is a 429), not executions per
    instance. ``max_instances`` is its unambiguous name and accepted as input; stored under
    ``concurrency`` for the readers of stored configs."""
    abi: Literal["wasi-command", "component"] | None = None
    """None at upload means: detect from the binary header (core module vs component)."""
    env: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    fuel: StrictInt | None = Field(None, ge=1)
    max_payload_bytes: StrictInt = Field(DEFAULT_MAX_PAYLOAD_BYTES, ge=1, le=1024 * 1024 * 1024)
    allow_fs: StrictBool = False
    allow_net: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _max_instances_is_concurrency(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "max_instances" in data:
            data = dict(data)
            value = data.pop("max_instances")
            if data.get("concurrency", value) != value:
                raise ValueError("max_instances and concurrency are the same limit (live instances at most): "
                                 "give one of them")
            data["concurrency"] = value
        return data

    @classmethod
    def from_stored(cls, config: Mapping[str, Any]) -> FunctionConfig:
        """The config a node runs from a stored config (the registry's JSON): null values and
        keys this version does not know are ignored (a newer registry may add some), a
        missing ABI is ``wasi-command``; a bad value raises ConfigError naming the key."""
        names = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
        known = {key: value for key, value in config.items() if key in names and value is not None}
        known.setdefault("abi", "wasi-command")
        try:
            return cls.model_validate(known)
        except ValidationError as exc:
            problems = [f"config.{'.'.join(str(part) for part in e['loc'])}: {e['msg']}, got {e['input']!r}"
                        for e in exc.errors()]
            raise ConfigError("; ".join(problems)) from None
