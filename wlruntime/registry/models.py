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
# Live instances of one function at most when its config does not say. Lambda sets no
# per-function limit (only an account-wide 1000 concurrent executions by default), so a
# function deployed with defaults is limited by node memory, like Lambda's by the account, and
# a trace replay against defaults does not get 429s when requests overlap. Also the maximum
# a config may give.
DEFAULT_MAX_INSTANCES = 1000
OLD_KEYS = {"concurrency": "max_instances"}   # earlier names, accepted on input and in stored configs


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
    max_instances: StrictInt = Field(DEFAULT_MAX_INSTANCES, ge=1, le=DEFAULT_MAX_INSTANCES)
    """Live instances of the function at most (a spawn beyond it is a 429; default
    ``DEFAULT_MAX_INSTANCES``). Its earlier name ``concurrency`` (which never meant executions
    per instance) is accepted on input and read from configs stored under it."""
    abi: Literal["wasi-command", "component"] | None = None
    """None at upload means: detect from the binary header (core module vs component)."""
    env: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    fuel: StrictInt | None = Field(None, ge=1)
    max_payload_bytes: StrictInt = Field(DEFAULT_MAX_PAYLOAD_BYTES, ge=1, le=1024 * 1024 * 1024)
    allow_fs: StrictBool = False
    allow_net: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and any(old in data for old in OLD_KEYS):
            data = dict(data)
            for old, new in OLD_KEYS.items():
                if old in data:
                    value = data.pop(old)
                    if data.get(new, value) != value:
                        raise ValueError(f"{new} and {old} (its earlier name) are the same setting: give one of them")
                    data[new] = value
        return data

    @property
    def concurrency(self) -> int:
        """The earlier name of ``max_instances`` (for readers not yet renamed)."""
        return self.max_instances

    @classmethod
    def from_stored(cls, config: Mapping[str, Any]) -> FunctionConfig:
        """The config a node runs from a stored config (the registry's JSON): null values and
        keys this version does not know are ignored (a newer registry may add some), a
        missing ABI is ``wasi-command``; a bad value raises ConfigError naming the key."""
        names = set(cls.model_fields) | set(OLD_KEYS) | {f.alias for f in cls.model_fields.values() if f.alias}
        known = {key: value for key, value in config.items() if key in names and value is not None}
        known.setdefault("abi", "wasi-command")
        try:
            return cls.model_validate(known)
        except ValidationError as exc:
            problems = [f"config.{'.'.join(str(part) for part in e['loc'])}: {e['msg']}, got {e['input']!r}"
                        for e in exc.errors()]
            raise ConfigError("; ".join(problems)) from None
