"""The synthetic function (examples/c/synthetic.c) that `wl load` deploys: it lasts the requested
duration (sleeping via WASI poll_oneoff, or spinning), writes the requested memory, and names
bad input. Run in-process with wasmtime's own WASI, as a WASI command."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
import wasmtime

from wl.loop.load import SYNTHETIC_WASM

pytestmark = pytest.mark.unit


@functools.cache
def _module() -> tuple[wasmtime.Engine, wasmtime.Module]:
    engine = wasmtime.Engine()  # compiled once for the module's tests
    return engine, wasmtime.Module.from_file(engine, str(SYNTHETIC_WASM))


def run(request: bytes, tmp_path: Path, memory_mb: int = 64) -> tuple[int, bytes, bytes, float]:
    engine, module = _module()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=memory_mb * 1024 * 1024)
    wasi = wasmtime.WasiConfig()
    (tmp_path / "in").write_bytes(request)
    wasi.stdin_file, wasi.stdout_file, wasi.stderr_file = (str(tmp_path / n) for n in ("in", "out", "err"))
    store.set_wasi(wasi)
    instance = linker.instantiate(store, module)
    started = time.perf_counter()
    code = 0
    try:
        instance.exports(store)["_start"](store)
    except wasmtime.ExitTrap as exit_:
        code = exit_.code
    elapsed = (time.perf_counter() - started) * 1000.0
    return code, (tmp_path / "out").read_bytes(), (tmp_path / "err").read_bytes(), elapsed


@pytest.mark.parametrize("mode", ["sleep", "busy"])
def test_lasts_the_duration_and_touches_memory(tmp_path: Path, mode: str) -> None:
    code, out, err, elapsed = run(f"40 8 {mode}".encode(), tmp_path)
    assert code == 0, err
    assert out == f"ok 40 8 {mode}\n".encode()
    assert elapsed >= 40.0                       # never shorter than asked (the clock is monotonic)


def test_memory_beyond_the_limit_is_an_error(tmp_path: Path) -> None:
    code, _, err, _ = run(b"0 32 sleep", tmp_path, memory_mb=16)
    assert code == 1 and b"cannot allocate touch_mb" in err


@pytest.mark.parametrize("request_body, message", [
    (b"", b"three fields needed"), (b"12 abc", b"three fields needed"), (b"5 1 nap", b"mode must be sleep or busy"),
    (b"-1 0 sleep", b"duration_ms out of range"), (b"1 -2 busy", b"touch_mb out of range"),
])
def test_bad_requests_are_named(tmp_path: Path, request_body: bytes, message: str) -> None:
    code, _, err, _ = run(request_body, tmp_path)
    assert code == 1 and message in err
