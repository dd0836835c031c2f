"""Custom policies as sandboxed WebAssembly modules: the ``wasm:PATH.wasm[:key=value...]`` spec.

The same module decides in the simulator (``wl sim replay --policy wasm:...``) and in the live
router (``wl policy set wasm:/abs/path.wasm``, ``wl up --policy wasm:...``). It can be written in
any language that compiles to a core WebAssembly module (C with clang, Rust, AssemblyScript,
Zig...); see ``examples/policies/wasm/keep_warm.c``.

ABI "wl-policy v1" (versioned by the export names; numbers only, so a module needs no parser)
=============================================================================================

A core module (not a component) exporting:

- ``memory``;
- ``wl_policy_v1_buffer(n: i32) -> i32``: a pointer into ``memory`` (non-zero: 0 means the
  module could not provide one) to a module-owned buffer of at least ``n`` f64 values. The
  host calls it once per decision with the size it needs (the module may keep and grow one
  static buffer);
- ``wl_route(n: i32) -> i32`` and ``wl_on_idle(n: i32) -> i32``: the host has written ``n`` f64
  (little endian) at the buffer; the module writes its answer into the first two f64 of the
  same buffer, ``[action, argument]``, and returns 0 (anything else reports an error);
- optionally ``wl_prewarm(n: i32) -> i32``: asked when the last instance of a function was
  killed, with the same input (no request: payload 0, subject -1); the answer is
  ``[ms until a pre-warm spawn]``, or ``[-1]`` for none. Without this export there is no
  pre-warming.

A reactor's ``_initialize`` export (C with ``-mexec-model=reactor``) is called once after
instantiation. Imports: only WASI preview1 (``wasi_snapshot_preview1``), with an empty
configuration (no arguments, environment, files; stdout and stderr discarded).

Input (all f64): a 14-value header, then one 8-value record per live instance of the function
(creation order; on_idle's subject is always among them), so ``n = 14 + 8 * header[13]``.

====  ===================================================  ====  ==============================================
 idx   header                                               idx   instance record (at 14 + 8 * i)
====  ===================================================  ====  ==============================================
  0    now_ms                                                 0    instance id
  1    payload bytes of the request (route; else 0)           1    state: 0 starting, 1 busy, 2 idle
  2    subject instance id (on_idle; else -1)                 2    active executions
  3    function memory_mb                                     3    requests queued on it
  4    function concurrency (executions per instance)         4    ms in the current state: busy = since the
  5    function max_instances (-1 = no limit)                      running execution started, idle = idle ms,
  6    cold-start estimate, ms                                     starting = since it was created
  7    duration estimate for this payload, ms                 5    memory_mb
  8    arrivals in the last 1 s (including this request)      6    completed invocations
  9    arrivals in the last 60 s                              7    age, ms since it was created
 10    arrivals in the last 600 s
 11    ms since the previous arrival (-1 = none)
 12    arrivals so far
 13    number of instance records that follow
====  ===================================================  ====  ==============================================

The estimates are the function's ``FunctionStats`` (``cold_start_ms``,
``predict_duration(payload_bytes)``, ``arrivals_in_last``), identical in the simulator and the
router. Request features (``RequestView.features``) are not passed in v1. ``evict`` (memory
pressure) is not part of the ABI: the base policy's least-recently-used choice applies.

Answers: route: ``0`` assign to the instance whose id is ``argument`` (an idle one runs the
request now, a busy one queues it), ``1`` spawn (cold start), ``2`` reject with retry after
``argument`` ms. on_idle: ``3`` invoke the next queued request (only when one is queued),
``4`` keep alive ``argument`` ms (then on_idle is asked again), ``5`` kill. Anything else (an
unknown action, an id that is not a live instance of the function, NaN, a keep-alive that is
not positive and finite) is an error.

Sandbox and limits
------------------

Each policy object owns one wasmtime Engine, Store and Instance for its life, so state kept in
the module's memory persists across decisions (like a Python policy's attributes; a trap
resets it, see below). Parameters:

- ``memory_mb`` (default 64): the module's linear memory cap (growing past it fails);
- ``fuel`` (default 10,000,000, about as many wasm instructions): the budget of one decision,
  re-armed before each, so a runaway policy traps instead of hanging the router.

A trap (including running out of fuel), a non-zero return or a nonsense answer raises
``WasmPolicyError`` naming the module and what happened: the live router counts it in
``wl_router_policy_errors_total`` and falls back to the base policy for that decision; the
simulator stops and reports it. After a trap the module is instantiated afresh (its memory
may be left inconsistent mid-update), so its state starts over. Loading problems (missing
file, not WebAssembly, a component, missing exports, other imports, unknown parameters) are
``PolicySpecError``. WASI clocks and random numbers are reachable: a policy that reads them is
no longer deterministic, so don't.

Building a C policy (Debian's clang and wasi-libc, as ``examples/Makefile`` does)::

    clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -Wl,--stack-first -s \\
        -o keep_warm.wasm keep_warm.c

with ``__attribute__((export_name("wl_route")))`` on each exported function.

Cost: one decision builds the input in Python, writes it straight into the module's memory
(one ``struct.pack_into``) and crosses into wasm twice (buffer, decision) through the C API's
unchecked call. ``examples/policies/wasm/bench_decision.py`` measures it against the Python
twin of the example in the same run: 13-21 µs per decision with 5 instances on the project's
shared 2-core machine (depending on its load), 5-6x the twin's route (2.4-4.2 µs).
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import struct
from bisect import bisect_left
from pathlib import Path
from typing import Any

from policies.interface import (
    BUSY,
    IDLE,
    INVOKE,
    KILL,
    SPAWN,
    STARTING,
    Assign,
    FunctionView,
    IdleDecision,
    InstanceView,
    KeepAlive,
    Policy,
    PolicySpecError,
    Reject,
    RequestView,
    RouteDecision,
)

HEADER = 14
RECORD = 8
STATE_CODES = {STARTING: 0.0, BUSY: 1.0, IDLE: 2.0}
ROUTE_ASSIGN, ROUTE_SPAWN, ROUTE_REJECT = 0.0, 1.0, 2.0
IDLE_INVOKE, IDLE_KEEP_ALIVE, IDLE_KILL = 3.0, 4.0, 5.0

BUFFER_EXPORT = "wl_policy_v1_buffer"
ROUTE_EXPORT = "wl_route"
ON_IDLE_EXPORT = "wl_on_idle"
PREWARM_EXPORT = "wl_prewarm"
REQUIRED_FUNCS = (BUFFER_EXPORT, ROUTE_EXPORT, ON_IDLE_EXPORT)
WASI_MODULE = "wasi_snapshot_preview1"

DEFAULT_MEMORY_MB = 64
DEFAULT_FUEL = 10_000_000

_WASM_MAGIC = b"\0asm"
_CORE_VERSION = b"\x01\x00\x00\x00"
_ANSWER = struct.Struct("<2d")
_packers: dict[int, struct.Struct] = {}


def _packer(count: int) -> struct.Struct:
    s = _packers.get(count)
    if s is None:
        s = _packers[count] = struct.Struct(f"<{count}d")
    return s


_func_call_unchecked: Any = None
_set_fuel: Any = None
_memory_data_size: Any = None
_memory_data: Any = None


def _bind_c_api(bindings: Any) -> None:
    """The wasmtime C API's ctypes functions used per decision (bound once, on first use)."""
    global _func_call_unchecked, _set_fuel, _memory_data_size, _memory_data
    _func_call_unchecked = bindings._wasmtime_func_call_unchecked
    _set_fuel = bindings._wasmtime_context_set_fuel
    _memory_data_size = bindings._wasmtime_memory_data_size
    _memory_data = bindings._wasmtime_memory_data


def _cause(message: str) -> str:
    """The one line that says why, from wasmtime's multi-line message (backtrace, "Caused by:")."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if "Caused by:" in lines:
        i = len(lines) - 1 - lines[::-1].index("Caused by:")
        if i + 1 < len(lines):
            return lines[i + 1]
    return lines[0] if lines else "(no message)"


class WasmPolicyError(RuntimeError):
    """A wasm policy failed one decision (trap, out of fuel, error return, nonsense answer)."""


class WasmPolicy(Policy):
    """A policy decided by a WebAssembly module (ABI wl-policy v1, see the module docstring)."""

    name = "wasm"

    def __init__(self, path: str | Path, memory_mb: float = DEFAULT_MEMORY_MB,
                 fuel: int = DEFAULT_FUEL, *, wasm_bytes: bytes | None = None) -> None:
        self.path = str(path)
        for pname, value in (("memory_mb", memory_mb), ("fuel", fuel)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise PolicySpecError(f"wasm policy {self.path}: {pname} must be a positive number, got {value!r}")
        if fuel != int(fuel):
            raise PolicySpecError(f"wasm policy {self.path}: fuel must be a whole number, got {fuel!r}")
        self.memory_mb = memory_mb
        self.fuel = int(fuel)
        if wasm_bytes is None:
            p = Path(path)
            if not p.is_file():
                raise PolicySpecError(f"wasm policy file not found: {p}")
            wasm_bytes = p.read_bytes()
        self.wasm_bytes = wasm_bytes
        self.sha256 = hashlib.sha256(wasm_bytes).hexdigest()
        self._compile()
        self._instantiate(at_load=True)

    @classmethod
    def load(cls, path: str | Path, **params: Any) -> WasmPolicy:
        """Build from a spec's path and ``key=value`` parameters (unknown ones are an error)."""
        unknown = sorted(set(params) - {"memory_mb", "fuel"})
        if unknown:
            raise PolicySpecError(f"wasm policy {path}: unknown parameter(s) {', '.join(unknown)} "
                                  "(known: memory_mb, fuel)")
        return cls(path, **params)

    # ------------------------------------------------------------------ loading
    def _fail_load(self, problem: str) -> PolicySpecError:
        return PolicySpecError(f"wasm policy {self.path}: {problem}")

    def _compile(self) -> None:
        import wasmtime  # heavy: only wasm policies need it

        data = self.wasm_bytes
        if data[:4] == _WASM_MAGIC:
            if data[4:8] != _CORE_VERSION:
                if data[6:8] == b"\x01\x00":
                    raise self._fail_load("is a WebAssembly component; a wasm policy must be a core module "
                                          "exporting the wl-policy v1 functions")
                raise self._fail_load(f"unsupported WebAssembly version bytes {data[4:8].hex()}")
        elif data.lstrip()[:1] != b"(":   # wasmtime also accepts the text format (WAT)
            raise self._fail_load("is not a WebAssembly module (no \\0asm header)")
        config = wasmtime.Config()
        config.consume_fuel = True
        # No compilation thread pool: a process that forks after loading a policy (wl sim
        # compare's workers) would otherwise hang compiling, waiting for the parent's threads.
        config.parallel_compilation = False
        # Linear memory stays where it is when it grows (wasm32 memories fit the default 4 GiB
        # reservation), so a view of it stays valid and only needs extending after growth.
        config.memory_may_move = False
        self._engine = wasmtime.Engine(config)
        try:
            self._module = wasmtime.Module(self._engine, data)
        except wasmtime.WasmtimeError as e:
            raise self._fail_load(f"does not compile: {e}") from None

        exports = {e.name: e.type for e in self._module.exports}
        missing = [n for n in ("memory", *REQUIRED_FUNCS) if n not in exports]
        if missing:
            raise self._fail_load(f"missing export(s) {', '.join(missing)} (wl-policy v1 needs memory, "
                                  f"{', '.join(REQUIRED_FUNCS)})")
        if not isinstance(exports["memory"], wasmtime.MemoryType):
            raise self._fail_load("export 'memory' is not a memory")
        i32 = wasmtime.ValType.i32()
        for fname in (*REQUIRED_FUNCS, PREWARM_EXPORT):
            ty = exports.get(fname)
            if fname not in exports:
                continue
            if not (isinstance(ty, wasmtime.FuncType) and ty.params == [i32] and ty.results == [i32]):
                raise self._fail_load(f"export {fname!r} must be a function (i32) -> i32, got {ty}")
        self.has_prewarm = PREWARM_EXPORT in exports
        init = exports.get("_initialize")
        self._has_initialize = isinstance(init, wasmtime.FuncType) and not init.params and not init.results
        other = sorted({f"{i.module}.{i.name}" for i in self._module.imports if i.module != WASI_MODULE})
        if other:
            raise self._fail_load(f"imports {', '.join(other)}; a wasm policy may import only WASI "
                                  f"({WASI_MODULE})")
        self._uses_wasi = any(i.module == WASI_MODULE for i in self._module.imports)

    def _instantiate(self, at_load: bool = False) -> None:
        """A fresh Store and Instance (at load, and after a trap)."""
        import wasmtime

        from wlcommon.wasmtime_capi import bindings, func_handle, memory_handle, store_context

        _bind_c_api(bindings)
        store = wasmtime.Store(self._engine)
        store.set_limits(memory_size=int(self.memory_mb * 1024 * 1024))
        linker = wasmtime.Linker(self._engine)
        if self._uses_wasi:
            linker.define_wasi()
            store.set_wasi(wasmtime.WasiConfig())   # nothing granted; stdout/stderr discarded
        store.set_fuel(self.fuel)
        try:
            instance = linker.instantiate(store, self._module)
            if self._has_initialize:
                instance.exports(store)["_initialize"](store)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as e:
            if at_load:
                raise self._fail_load(f"instantiation failed: {e}") from None
            raise WasmPolicyError(f"wasm policy {self.path}: re-instantiation failed: {e}") from None
        exports = instance.exports(store)
        self._store = store
        self._context = store_context(store)
        self._memory = exports["memory"]
        self._memory_ref = ctypes.byref(memory_handle(self._memory))
        names = {e.name for e in self._module.exports}
        self._funcs = {n: ctypes.byref(func_handle(exports[n])) for n in (*REQUIRED_FUNCS, PREWARM_EXPORT)
                       if n in names}
        self._args = (bindings.wasmtime_val_raw_t * 1)()
        self._trap = ctypes.POINTER(bindings.wasm_trap_t)()
        self._trap_ref = ctypes.byref(self._trap)
        self._view_size = -1      # the memory's size when _view_buffer was made (-1: not yet)
        self._view_buffer: Any = None

    # ------------------------------------------------------------------ calls
    # The per-decision path calls the C API's ctypes functions directly: wasmtime's
    # ``Func.__call__`` re-derives the function's type on every call (several times this cost)
    # and the types were checked at load.
    def _call(self, export: str, n: int) -> int:
        """``export(n)`` through wasmtime's unchecked call (argument and result share ``_args``)."""
        args = self._args
        args[0].i32 = n
        error = _func_call_unchecked(self._context, self._funcs[export], args, 1, self._trap_ref)
        if error or self._trap:
            self._trap_happened(export, error)
        return args[0].i32

    def _trap_happened(self, export: str, error: Any) -> None:
        import wasmtime

        from wlcommon.wasmtime_capi import error_from_ptr, trap_from_ptr

        if error:
            what = f"failed: {_cause(str(error_from_ptr(error)))}"
        else:
            t = trap_from_ptr(self._trap)   # takes ownership of the trap
            if t.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
                what = f"ran out of fuel (more than fuel={self.fuel} instructions in one decision)"
            else:
                what = f"trapped: {_cause(t.message)}"
        self._instantiate()   # the trap may have left the module's memory half-updated
        raise WasmPolicyError(f"wasm policy {self.path}: {export} {what}")

    def _extend_view(self) -> None:
        """(Re)make the writable view of the module's linear memory after it grew (memory
        never moves, see _compile, and never shrinks, so the old view was a valid prefix)."""
        size = _memory_data_size(self._context, self._memory_ref)
        if size != self._view_size:
            base = ctypes.addressof(_memory_data(self._context, self._memory_ref).contents)
            self._view_buffer = (ctypes.c_ubyte * size).from_address(base)
            self._view_size = size

    def _decide(self, export: str, values: list[float]) -> tuple[float, float]:
        n = len(values)
        if _set_fuel(self._context, self.fuel):   # cannot fail with consume_fuel on; never run unmetered
            raise WasmPolicyError(f"wasm policy {self.path}: cannot set fuel")
        ptr = self._call(BUFFER_EXPORT, n) & 0xFFFFFFFF
        if ptr + 8 * n > self._view_size:
            self._extend_view()
        if ptr == 0 or ptr + 8 * n > self._view_size:
            raise WasmPolicyError(f"wasm policy {self.path}: {BUFFER_EXPORT}({n}) returned {ptr}, "
                                  f"not a buffer of {n} f64 inside its {self._view_size}-byte memory")
        _packer(n).pack_into(self._view_buffer, ptr, *values)
        status = self._call(export, n)
        if status != 0:
            raise WasmPolicyError(f"wasm policy {self.path}: {export} returned error code {status}")
        return _ANSWER.unpack_from(self._view_buffer, ptr)

    # ------------------------------------------------------------------ input
    def _input(self, now_ms: float, fn: FunctionView, payload_bytes: float, subject: InstanceView | None,
               duration_ms: float) -> list[float]:
        """The n values of the ABI table (header, then one record per instance)."""
        stats = fn.stats
        recent = stats.recent
        previous = -1.0
        if recent:   # the arrival before now (route runs after its own arrival was recorded)
            if recent[-1] < now_ms:
                previous = now_ms - recent[-1]
            elif len(recent) > 1 and recent[-2] < now_ms:
                previous = now_ms - recent[-2]
            else:
                i = bisect_left(recent, now_ms)
                if i > 0:
                    previous = now_ms - recent[i - 1]
        instances = fn.instances
        records = list(instances.values())
        if subject is not None and instances.get(subject.id) is not subject:
            records.append(subject)
        max_instances = fn.max_instances
        arrivals_in_last = stats.arrivals_in_last
        # ints go in as they are: struct's "d" format converts them
        values = [now_ms, payload_bytes, -1.0 if subject is None else subject.id,
                  fn.memory_mb, fn.concurrency, -1.0 if max_instances is None else max_instances,
                  stats.cold_start_ms, duration_ms, arrivals_in_last(now_ms, 1_000.0),
                  arrivals_in_last(now_ms, 60_000.0), arrivals_in_last(now_ms, 600_000.0), previous,
                  stats.arrivals, len(records)]
        codes = STATE_CODES
        for inst in records:
            state = inst.state
            if state == BUSY:
                since = inst.exec_started_ms
            elif state == IDLE:
                since = inst.idle_since_ms
            else:
                since = inst.created_ms
            values += (inst.id, codes.get(state, -1.0), inst.active, len(inst.queue),
                       now_ms - since if since is not None else 0.0, inst.memory_mb,
                       inst.invocations, now_ms - inst.created_ms)
        return values

    # ------------------------------------------------------------------ decisions
    def route(self, now_ms: float, request: RequestView, fn: FunctionView) -> RouteDecision:
        predicted = fn.stats.duration.predict(request.payload_bytes)
        action, arg = self._decide(ROUTE_EXPORT, self._input(now_ms, fn, request.payload_bytes, None, predicted))
        if action == ROUTE_ASSIGN:
            inst = fn.instances.get(int(arg)) if math.isfinite(arg) and arg == int(arg) else None
            if inst is None:
                raise WasmPolicyError(f"wasm policy {self.path}: route assigned to {arg!r}, which is not the id "
                                      f"of a live instance of {fn.name}")
            return Assign(inst)
        if action == ROUTE_SPAWN:
            return SPAWN
        if action == ROUTE_REJECT:
            if not (0.0 <= arg < math.inf):
                raise WasmPolicyError(f"wasm policy {self.path}: route rejected with retry_after_ms={arg!r} "
                                      "(must be >= 0 and finite)")
            return Reject(retry_after_ms=arg)
        raise WasmPolicyError(f"wasm policy {self.path}: route answered action {action!r} "
                              "(expected 0 assign, 1 spawn or 2 reject)")

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        action, arg = self._decide(ON_IDLE_EXPORT, self._input(now_ms, fn, 0.0, instance,
                                                                 fn.stats.duration.predict(0.0)))
        if action == IDLE_INVOKE:
            if not instance.queue:
                raise WasmPolicyError(f"wasm policy {self.path}: on_idle answered invoke for instance "
                                      f"{instance.id}, which has nothing queued")
            return INVOKE
        if action == IDLE_KEEP_ALIVE:
            if not (0.0 < arg < math.inf):
                raise WasmPolicyError(f"wasm policy {self.path}: on_idle answered keep alive {arg!r} ms "
                                      "(must be > 0 and finite)")
            return KeepAlive(arg)
        if action == IDLE_KILL:
            return KILL
        raise WasmPolicyError(f"wasm policy {self.path}: on_idle answered action {action!r} "
                              "(expected 3 invoke, 4 keep alive or 5 kill)")

    def prewarm(self, now_ms: float, fn: FunctionView) -> float | None:
        if not self.has_prewarm:
            return None
        delay, _ = self._decide(PREWARM_EXPORT, self._input(now_ms, fn, 0.0, None, fn.stats.duration.predict(0.0)))
        if delay == -1.0:
            return None
        if not (0.0 <= delay < math.inf):
            raise WasmPolicyError(f"wasm policy {self.path}: prewarm answered {delay!r} "
                                  "(expected a delay >= 0 ms, or -1 for none)")
        return delay

    # ------------------------------------------------------------------ the rest
    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "sha256": self.sha256[:12],
                "memory_mb": self.memory_mb, "fuel": self.fuel, "prewarm": self.has_prewarm}

    def __getstate__(self) -> dict[str, Any]:
        # the module's bytes travel with the policy (a worker need not see the file); its
        # memory does not: an unpickled policy starts from a fresh instance
        return {"path": self.path, "wasm_bytes": self.wasm_bytes, "memory_mb": self.memory_mb, "fuel": self.fuel}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["memory_mb"], state["fuel"], wasm_bytes=state["wasm_bytes"])

    def __repr__(self) -> str:
        return f"<WasmPolicy {self.path} sha256={self.sha256[:12]}>"
