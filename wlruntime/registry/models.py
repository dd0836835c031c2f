"""Function names and the per-function config the registry stores (validated with pydantic)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
NAME_RULE = "1-63 characters: lowercase letters, digits, '_' and '-', starting with a letter or digit"

ABIS = ("wasi-command", "component")


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid function name, or None when it is."""
    if NAME_RE.match(name):
        return None
    shown = name if len(name) <= 80 else name[:77] + "..."
    return f"invalid function name {shown!r}: {NAME_RULE}"


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
