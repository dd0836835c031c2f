"""The process-wide wasmtime engines and the epoch ticker that enforces timeouts.

One Engine per configuration per process: compiling is per engine, so sharing it lets every
instance of a function reuse one compiled module. Two configurations exist, without and with
fuel metering, because fuel costs time on every call and most functions do not ask for it.
Each also exists with parallel compilation off, for the registry: wasmtime compiles a module's
functions on rayon's process-wide thread pool, so while a big component compiles there, a small
one's compilation waits behind it. Compiled without that pool, each compilation runs on its own
calling thread. (Artifacts are the same either way: serialized ones load in both.)

Timeouts use epoch interruption: a single daemon thread increments every engine's epoch each
``EPOCH_TICK_MS``; a call sets its store's deadline to ``ticks_for(timeout_ms)`` ticks, so the
timeout is enforced to within about one tick without a timer per call. Code that runs wasm
does so inside ``with wasm_running:``; when nothing has run for ``IDLE_TICKS`` ticks the ticker
sleeps until something does (an idle node otherwise spends ~2% of a core on 500 wake-ups a
second). Stopping the clock while nothing runs changes no deadline: each counts ticks from
when it was set, and the clock runs whenever wasm does.
"""

from __future__ import annotations

import threading
import time
from functools import cache
from importlib.metadata import version

import wasmtime

EPOCH_TICK_MS = 2
IDLE_TICKS = 500  # one second without wasm running: the ticker sleeps

_lock = threading.Lock()
_engines: dict[tuple[bool, bool], wasmtime.Engine] = {}


@cache
def wasmtime_version() -> str:
    return version("wasmtime")


def engine_fingerprint(fuel: bool) -> str:
    """What a compiled artifact depends on besides the code: part of the compile cache key."""
    return f"wasmtime-{wasmtime_version()}-epoch-fuel{int(fuel)}"


def get_engine(fuel: bool = False, parallel_compilation: bool = True) -> wasmtime.Engine:
    """The shared engine; ``fuel=True`` returns the separate fuel-metering engine, and
    ``parallel_compilation=False`` one that compiles on the calling thread only."""
    key = (fuel, parallel_compilation)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            config = wasmtime.Config()
            config.epoch_interruption = True
            config.consume_fuel = fuel
            config.wasm_component_model = True
            config.parallel_compilation = parallel_compilation
            engine = wasmtime.Engine(config)
            if not _engines:
                threading.Thread(target=_tick_forever, name="wasm-epoch-ticker", daemon=True).start()
            _engines[key] = engine
        return engine


def ticks_for(timeout_ms: float) -> int:
    """Epoch ticks that cover ``timeout_ms``: rounded up, plus one for the tick in progress."""
    return max(1, -(-int(timeout_ms) // EPOCH_TICK_MS) + 1)


class _WasmRunning:
    """``with wasm_running:`` around code that runs wasm under an epoch deadline: keeps the
    ticker going. Cheap (a lock, and an Event only to wake a sleeping ticker)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self.wake = threading.Event()
        self.wake.set()

    def __enter__(self) -> None:
        with self._lock:
            self.count += 1
        if not self.wake.is_set():
            self.wake.set()

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.count -= 1


wasm_running = _WasmRunning()


def _tick_forever() -> None:
    period = EPOCH_TICK_MS / 1000.0
    idle = 0
    while True:
        time.sleep(period)
        for engine in list(_engines.values()):
            engine.increment_epoch()
        idle = idle + 1 if wasm_running.count == 0 else 0
        if idle >= IDLE_TICKS:
            wasm_running.wake.clear()
            if wasm_running.count == 0:  # an __enter__ after the clear() sets it again: no lost wake-up
                wasm_running.wake.wait()
            idle = 0
