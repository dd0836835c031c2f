"""wlcommon.files: atomic writes (all or nothing, the permissions asked for) and token files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from wlcommon.files import atomic_output, atomic_write, read_or_create_token_file, read_token_file
from wlruntime.registry.models import ConfigError, FunctionConfig

pytestmark = pytest.mark.unit


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "data.json"  # missing folders are made
    atomic_write(target, "first")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["data.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert mode(target) == 0o666 & ~umask  # a normal new file, not mkstemp's 0600
    atomic_write(target, b"private", mode=0o600)
    assert mode(target) == 0o600


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    atomic_write(target, "old")
    with pytest.raises(RuntimeError, match="half-way"), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("failed half-way")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["table.csv"]


def test_a_token_file_is_created_once_private_and_then_read(tmp_path: Path) -> None:
    path = tmp_path / "registry" / "registry.token"
    assert read_token_file(path) is None
    token = read_or_create_token_file(path)
    assert len(token) >= 32 and mode(path) == 0o600
    assert read_or_create_token_file(path) == token == read_token_file(path)
    path.write_text("\n")
    assert read_token_file(path) is None
    with pytest.raises(RuntimeError, match="is empty; delete it"):
        read_or_create_token_file(path)


def test_a_node_builds_the_registry_function_config_from_what_it_stored() -> None:
    stored = {"memory_mb": 64, "abi": None, "fuel": None, "from_a_newer_registry": 1}
    config = FunctionConfig.from_stored(stored)
    assert (config.memory_mb, config.abi, config.fuel, config.timeout_ms) == (64, "wasi-command", None, 3000)
    with pytest.raises(ConfigError, match=r"config\.timeout_ms"):
        FunctionConfig.from_stored({"timeout_ms": "3000"})  # strict: a string is not a number
    with pytest.raises(ValueError, match="frozen"):
        config.memory_mb = 128
