"""Function names and code digests, as the registry, the nodes and the router all check them."""

from __future__ import annotations

import re

NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,62}"  # without anchors, to build other patterns from
NAME_RE = re.compile(rf"^{NAME_PATTERN}$")
NAME_RULE = "1-63 characters: lowercase letters, digits, '_' and '-', starting with a letter or digit"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")  # a code blob's name: its sha256, lowercase hex


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid function name, or None when it is."""
    if NAME_RE.match(name):
        return None
    shown = name if len(name) <= 80 else name[:77] + "..."
    return f"invalid function name {shown!r}: {NAME_RULE}"
