"""Compiled-artifact cache: in memory, then on disk, then compile.

Compiling is the expensive part of a cold start (milliseconds for a small C module, seconds for
a componentize-py component); loading a serialized artifact is a file map. Artifacts are keyed
by the code's sha256, the ABI and the engine fingerprint (wasmtime version + engine config),
because ``deserialize`` only accepts bytes made by the same wasmtime with the same config.

The disk cache trusts its folder (deserializing runs no validation): keep it private to the node.
Entries are memory-mapped by ``deserialize_file``, so they are only ever replaced atomically
(write a temp file, rename), never rewritten in place: truncating a mapped file would crash
(SIGBUS) every process using it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime
import wasmtime.component

from wlcommon.files import atomic_write
from wlruntime.names import SHA256_RE
from wlruntime.wasm.engine import engine_fingerprint, get_engine
from wlruntime.wasm.validate import ABI_WASI_COMMAND, check_component, check_module, compile_checked

log = logging.getLogger(__name__)

MEMORY = "memory"
DISK = "disk"
COMPILED = "compiled"


@dataclass(frozen=True)
class CacheResult:
    artifact: Any  # wasmtime.Module or wasmtime.component.Component
    source: str  # MEMORY, DISK or COMPILED
    compile_ms: float  # time to get the artifact (compile, or load from disk)


class CompiledCache:
    """Thread-safe; ``get`` compiles a given sha256 at most once at a time."""

    def __init__(self, cache_dir: str | os.PathLike[str] | None, max_in_memory: int = 256,
                 parallel_compilation: bool = True) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.parallel_compilation = parallel_compilation
        self.max_in_memory = max_in_memory
        self._memory: OrderedDict[tuple[str, str, bool], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str, bool], threading.Lock] = {}

    def disk_path(self, sha256: str, abi: str, fuel: bool) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{sha256}.{abi}.{engine_fingerprint(fuel)}.cwasm"

    def get(self, sha256: str, abi: str, fuel: bool, load_code: Callable[[], bytes]) -> CacheResult:
        """The compiled artifact for ``sha256``; ``load_code`` is called only on a full miss."""
        if not SHA256_RE.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        key = (sha256, abi, fuel)
        with self._lock:
            artifact = self._memory.get(key)
            if artifact is not None:
                self._memory.move_to_end(key)
                return CacheResult(artifact, MEMORY, 0.0)
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # concurrent spawns of the same new code compile it once
            with self._lock:
                artifact = self._memory.get(key)
            if artifact is not None:
                return CacheResult(artifact, MEMORY, 0.0)
            started = time.perf_counter()
            artifact = self._load_from_disk(sha256, abi, fuel)
            source = DISK
            if artifact is None:
                artifact = compile_checked(load_code(), abi, fuel, self.parallel_compilation)
                source = COMPILED
                self._save_to_disk(sha256, abi, fuel, artifact)
            elapsed = (time.perf_counter() - started) * 1000.0
            self._remember(key, artifact)
            return CacheResult(artifact, source, elapsed)

    def _remember(self, key: tuple[str, str, bool], artifact: Any) -> None:
        with self._lock:
            self._memory[key] = artifact
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_in_memory:
                self._memory.popitem(last=False)

    def _load_from_disk(self, sha256: str, abi: str, fuel: bool) -> Any | None:
        path = self.disk_path(sha256, abi, fuel)
        if path is None or not path.is_file():
            return None
        engine = get_engine(fuel, self.parallel_compilation, pooled=abi == ABI_WASI_COMMAND)
        try:
            if abi == ABI_WASI_COMMAND:
                module = wasmtime.Module.deserialize_file(engine, str(path))
                check_module(module, engine)
                return module
            component = wasmtime.component.Component.deserialize_file(engine, str(path))
            check_component(component, engine)
            return component
        except (wasmtime.WasmtimeError, ValueError) as error:
            log.warning("discarding unusable compiled cache entry %s: %s", path, error)
            path.unlink(missing_ok=True)
            return None

    def _save_to_disk(self, sha256: str, abi: str, fuel: bool, artifact: Any) -> None:
        path = self.disk_path(sha256, abi, fuel)
        if path is None:
            return
        try:
            # atomic: other node processes never see half a file (and mapped files are never rewritten)
            atomic_write(path, artifact.serialize(), mode=0o600)
        except OSError as error:  # a full or read-only disk costs speed, not correctness
            log.warning("cannot write compiled cache entry %s: %s", path, error)
