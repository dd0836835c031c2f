"""Function names and the per-function config the registry stores (validated with pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

# the name rules live in wlruntime.names; imported here too for the registry's users
from wlruntime.names import NAME_RE as NAME_RE
from wlruntime.names import NAME_RULE as NAME_RULE
from wlruntime.names import name_problem as name_problem

ABIS = ("wasi-command", "component")


class FunctionConfig(BaseModel):
    """What a function runs with. Validated strictly: ``"128"`` is not a number, and unknown
    fields are errors (a misspelt ``memroy_mb`` must not silently fall back to the default)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    memory_mb: StrictInt = Field(128, ge=1, le=16384)
    timeout_ms: StrictInt = Field(3000, ge=1, le=900_000)
    concurrency: StrictInt = Field(1, ge=1, le=1000)
    abi: Literal["wasi-command", "component"] | None = None
    """None at upload means: detect from the binary header (core module vs component)."""
    env: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    fuel: StrictInt | None = Field(None, ge=1)
    max_payload_bytes: StrictInt = Field(6 * 1024 * 1024, ge=1, le=1024 * 1024 * 1024)
    allow_fs: StrictBool = False
    allow_net: StrictBool = False
