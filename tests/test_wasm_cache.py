"""Compiled-artifact cache: memory hit, disk hit in a fresh cache (another process), recompile
when the disk entry is unusable, and no code load unless compiling."""

import hashlib
from pathlib import Path

import pytest
from conftest import wat

from wlruntime.wasm.cache import COMPILED, DISK, MEMORY, CompiledCache
from wlruntime.wasm.runners import CompiledFunction, FunctionConfig, Invocation

pytestmark = pytest.mark.unit



def test_memory_then_disk_then_recompile(tmp_path: Path) -> None:
    code = wat("echo")
    sha = hashlib.sha256(code).hexdigest()
    loads = []

    def load() -> bytes:
        loads.append(1)
        return code

    cache = CompiledCache(tmp_path)
    first = cache.get(sha, "wasi-command", False, load)
    assert first.source == COMPILED and len(loads) == 1
    path = cache.disk_path(sha, "wasi-command", False)
    assert path is not None and path.is_file() and sha in path.name and "wasmtime-" in path.name
    assert cache.get(sha, "wasi-command", False, load).source == MEMORY

    fresh = CompiledCache(tmp_path)  # what a restarted node sees
    from_disk = fresh.get(sha, "wasi-command", False, load)
    assert from_disk.source == DISK and len(loads) == 1
    run = CompiledFunction("echo", 1, FunctionConfig(abi="wasi-command"), from_disk.artifact).new_instance("i")
    assert run.invoke(Invocation(b"from disk")).output == b"from disk"

    # Replace, never rewrite in place: the live artifact above maps the old file.
    corrupt = path.with_suffix(".tmp")
    corrupt.write_bytes(b"corrupted")
    corrupt.replace(path)
    again = CompiledCache(tmp_path).get(sha, "wasi-command", False, load)
    assert again.source == COMPILED and len(loads) == 2


def test_fuel_engine_has_its_own_entries(tmp_path: Path) -> None:
    code = wat("echo")
    sha = hashlib.sha256(code).hexdigest()
    cache = CompiledCache(tmp_path)
    cache.get(sha, "wasi-command", False, lambda: code)
    assert cache.get(sha, "wasi-command", True, lambda: code).source == COMPILED
    assert cache.disk_path(sha, "wasi-command", True) != cache.disk_path(sha, "wasi-command", False)


def test_the_cache_validates_what_it_compiles_and_keeps_only_valid_code(tmp_path: Path) -> None:
    """The registry validates uploads through the nodes' compiled cache (--compiled-cache-dir):
    the compiled artifact is left for nodes, bad code raises the validation error."""
    from wlruntime.wasm.validate import InvalidWasm

    code = wat("counter.component")
    sha = hashlib.sha256(code).hexdigest()
    assert CompiledCache(tmp_path, max_in_memory=0).get(sha, "component", False, lambda: code).source == COMPILED
    hit = CompiledCache(tmp_path).get(sha, "component", False, lambda: b"never loaded")
    assert hit.source == DISK
    junk_sha = hashlib.sha256(b"junk").hexdigest()
    with pytest.raises(InvalidWasm, match="not a WebAssembly binary"):
        CompiledCache(tmp_path).get(junk_sha, "component", False, lambda: b"junk")
    assert sorted(p.name.split(".")[0] for p in tmp_path.glob("*.cwasm")) == [sha]
