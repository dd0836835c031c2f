"""The process-wide wasmtime engines and the epoch ticker that enforces timeouts.

One Engine per configuration per process: compiling is per engine, so sharing it lets every
instance of a function reuse one compiled module. Two configurations exist, without and with
fuel metering, because fuel costs time on every call and most functions do not ask for it.
Each also exists with parallel compilation off, for the registry: wasmtime compiles a module's
functions on rayon's process-wide thread pool, so while a big component compiles there, a small
one's compilation waits behind it. Compiled without that pool, each compilation runs on its own
calling thread. (Artifacts are the same either way: serialized ones load in both.)

Core modules (ABI 1, a fresh instance per request) run on engines with wasmtime's pooling
allocator: instance, memory and table slots are reserved once (virtual address space, ~1 TB for
``POOL_SLOTS`` 4 GiB wasm32 memories) and reused, instead of an mmap/munmap of a memory per
request; that roughly halves the cost of a trivial function's call (bench/README.md), and up to
``POOL_KEEP_RESIDENT`` bytes of a slot's memory stay resident between instances. The pool
bounds how many core instances run at once per process (a node runs at most its workers + 1);
components keep the on-demand allocator (their many instances, memories and big tables per
component would need much larger slots). Where the reservation fails (a tight ``ulimit -v``),
the engine uses the on-demand allocator instead.

Timeouts use epoch interruption: a single daemon thread increments every engine's epoch each
``EPOCH_TICK_MS``; a call sets its store's deadline to ``ticks_for(timeout_ms)`` ticks, so the
timeout is enforced to within about one tick without a timer per call. Code that runs wasm
does so inside ``with wasm_running:``; when nothing has run for ``IDLE_TICKS`` ticks the ticker
sleeps until something does (an idle node otherwise spends ~2% of a core on 500 wake-ups a
second). Stopping the clock while nothing runs changes no deadline: each counts ticks from
when it was set, and the clock runs whenever wasm does.
"""

from __future__ import annotations

import logging
import mmap
import threading
import time
from functools import cache
from importlib.metadata import version

import wasmtime

EPOCH_TICK_MS = 2
IDLE_TICKS = 500  # one second without wasm running: the ticker sleeps

POOL_SLOTS = 256
POOL_TABLE_ELEMENTS = 200_000  # a module's function table (big C/Rust programs have tens of thousands)
WASM32_MAX_MEMORY = 4 << 30
# Bytes of each pool memory slot kept resident when its instance is freed: zeroed with memset,
# where returning the pages to the kernel made the next instance page-fault them in again. An
# ABI 1 function gets a fresh instance per request, so a request touching 4 MB cost ~3.4 ms of
# CPU that way against ~1 ms kept resident (wl load's synthetic function; bench/README.md, issue
# 10): a burst of requests saturated the node's CPU and every cold start queued behind it.
# At most POOL_SLOTS x this stays resident (2 GiB, reached only by slots in use at once).
POOL_KEEP_RESIDENT = 8 << 20

log = logging.getLogger("wlruntime.wasm")
_lock = threading.Lock()
_engines: dict[tuple[bool, bool, bool], wasmtime.Engine] = {}


@cache
def wasmtime_version() -> str:
    return version("wasmtime")


def engine_fingerprint(fuel: bool) -> str:
    """What a compiled artifact depends on besides the code: part of the compile cache key."""
    return f"wasmtime-{wasmtime_version()}-epoch-fuel{int(fuel)}"


def get_engine(fuel: bool = False, parallel_compilation: bool = True, pooled: bool = False) -> wasmtime.Engine:
    """The shared engine; ``fuel=True`` returns the separate fuel-metering engine,
    ``parallel_compilation=False`` one that compiles on the calling thread only, and
    ``pooled=True`` one with the pooling allocator (for core modules; see above)."""
    key = (fuel, parallel_compilation, pooled)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _new_engine(fuel, parallel_compilation, pooled)
            if not _engines:
                threading.Thread(target=_tick_forever, name="wasm-epoch-ticker", daemon=True).start()
            _engines[key] = engine
        return engine


def _config(fuel: bool, parallel_compilation: bool) -> wasmtime.Config:
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.consume_fuel = fuel
    config.wasm_component_model = True
    config.parallel_compilation = parallel_compilation
    return config


def _new_engine(fuel: bool, parallel_compilation: bool, pooled: bool) -> wasmtime.Engine:
    if not pooled:
        return wasmtime.Engine(_config(fuel, parallel_compilation))
    from wlcommon.wasmtime_capi import enable_pooling_allocator  # no wrapper in wasmtime-py yet

    # wasmtime aborts the process (a Rust panic in the C API) when the pool's address space
    # cannot be reserved, so try the reservation here first.
    reserve = POOL_SLOTS * (WASM32_MAX_MEMORY + (64 << 20)) + (1 << 30)
    if not _can_reserve(reserve):
        log.warning("cannot reserve %d GiB of address space for wasmtime's pooling allocator (ulimit -v?): "
                    "allocating instances on demand", reserve >> 30)
        return wasmtime.Engine(_config(fuel, parallel_compilation))
    config = _config(fuel, parallel_compilation)
    enable_pooling_allocator(config, slots=POOL_SLOTS, max_memory_size=WASM32_MAX_MEMORY,
                             table_elements=POOL_TABLE_ELEMENTS, memory_keep_resident=POOL_KEEP_RESIDENT)
    return wasmtime.Engine(config)


def _can_reserve(nbytes: int) -> bool:
    """Whether ``nbytes`` of address space can be reserved (inaccessible, nothing committed)."""
    try:
        # prot=0 is PROT_NONE (Python's mmap module has no name for it): nothing committed
        region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=0)
    except (OSError, OverflowError, ValueError):
        return False
    region.close()
    return True


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
