"""One ABI 1 (WASI preview1 command) invocation with little Python around it.

Every invocation of a WASI command gets a fresh Store (a command runs once, like a CGI process),
so the per-call setup is the cost of a warm invocation. wasmtime-py's object layer (a Python
wrapper and finalizer per Store, WasiConfig, Instance; an export table built by enumerating
every export; a FuncType per call) and its stdout/stderr callbacks are most of it: a custom
WASI output stream in wasmtime's C API runs on a tokio worker thread and calls Python from
there, two thread hand-offs per write plus one per stream at teardown. So here:

- the Store, WASI context and call go through the C API directly (``wlcommon.wasmtime_capi``), with
  the argv array and the fixed environment encoded once per function;
- stdout and stderr are captured by our own ``wasi_snapshot_preview1.fd_write``, defined in the
  function's linker over WASI's: it runs on the calling thread, copies the guest's iovecs out
  of linear memory and hands them to bounded sinks. That is only done for functions without a
  filesystem (no preopened dirs, so fds 1 and 2 are the only writable fds there are); functions
  with ``allow_fs`` keep wasmtime's custom output streams and its fd_write;
- trivial C calls (getters, setters) are made through a ``ctypes.PyDLL`` view of the same
  library, which keeps the GIL: releasing and re-taking it around a call of a microsecond
  invites another thread to take the GIL in between and makes this thread wait for it back.
  Calls that run guest code (instantiate, ``_start``) or may call back into Python (deleting
  a Store with custom streams) still release it.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Mapping
from ctypes import POINTER, byref, c_char, c_char_p, c_uint32, c_void_p, cast
from dataclasses import dataclass
from typing import Any

import wasmtime

from wlcommon.wasmtime_capi import error_from_ptr, ffi, gil_kept, trap_from_ptr
from wlruntime.wasm.engine import wasm_running

WASI_MODULE = b"wasi_snapshot_preview1"
START = b"_start"
MEMORY = b"memory"

# WASI preview1 errno values.
ERRNO_SUCCESS = 0
ERRNO_BADF = 8
ERRNO_FAULT = 21
ERRNO_INVAL = 28
ERRNO_IO = 29
IOV_MAX = 1024  # as in wasi-libc

# The trivial C functions, called without releasing the GIL (see the module docstring).
_store_new = gil_kept("wasmtime_store_new")
_store_context = gil_kept("wasmtime_store_context")
_store_limiter = gil_kept("wasmtime_store_limiter")
_set_epoch_deadline = gil_kept("wasmtime_context_set_epoch_deadline")
_set_fuel = gil_kept("wasmtime_context_set_fuel")
_config_new = gil_kept("wasi_config_new")
_config_set_argv = gil_kept("wasi_config_set_argv")
_config_set_env = gil_kept("wasi_config_set_env")
_config_set_stdin_bytes = gil_kept("wasi_config_set_stdin_bytes")
_byte_vec_new = gil_kept("wasm_byte_vec_new")
_context_set_wasi = gil_kept("wasmtime_context_set_wasi")
_instance_export_get = gil_kept("wasmtime_instance_export_get")
_memory_data = gil_kept("wasmtime_memory_data", restype=c_void_p)
_memory_data_size = gil_kept("wasmtime_memory_data_size")
_caller_context = gil_kept("wasmtime_caller_context")
_caller_export_get = gil_kept("wasmtime_caller_export_get")
_NO_FINALIZER = cast(0, ctypes.CFUNCTYPE(None, c_void_p))
_CHAR_PP = POINTER(POINTER(c_char))
_EXTERN_MEMORY = ffi.WASMTIME_EXTERN_MEMORY.value

_TRAP_POINTER = POINTER(ffi.wasm_trap_t)

# The sinks of the invocation running on this thread: (None, stdout, stderr), indexed by fd.
_current = threading.local()


class _Lookups(threading.local):
    """The out-parameter of a run's two export lookups (``_start``, then ``memory`` once it
    returned) and its addresses, made once per thread: building a ctypes struct and taking a
    field's address cost about 1 µs a run. A thread runs one command at a time, and the
    capturing fd_write (called while ``_start`` runs) uses its own."""

    def __init__(self) -> None:
        self.item = ffi.wasmtime_extern_t()
        self.ref = byref(self.item)
        self.func = byref(self.item.of.func)
        self.memory = byref(self.item.of.memory)


_lookups = _Lookups()


class Sink:
    """A bounded byte sink for an output stream: keeps the first ``limit`` bytes, notes overflow.

    Everything is reported to the guest as written so it carries on (and finishes) normally."""

    __slots__ = ("chunks", "limit", "overflowed", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflowed = False

    def write(self, data: bytes) -> None:
        room = self.limit - self.size
        if len(data) > room:
            self.overflowed = True
            data = data[:max(room, 0)]
        if data:
            self.chunks.append(data)
            self.size += len(data)

    def room(self) -> int:
        return max(self.limit - self.size, 0)

    def value(self) -> bytes:
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)


@ffi.wasmtime_func_unchecked_callback_t
def _fd_write(env: Any, caller: Any, args: Any, nargs: int) -> int:
    """``fd_write(fd, iovs, iovs_len, nwritten) -> errno`` for fds 1 and 2 into the current sinks."""
    try:
        args[0].i32 = _write_iovecs(caller, args[0].i32, args[1].i32 & 0xFFFFFFFF, args[2].i32 & 0xFFFFFFFF,
                                    args[3].i32 & 0xFFFFFFFF)
    except BaseException:  # noqa: BLE001 (an exception must never unwind into wasmtime)
        args[0].i32 = ERRNO_IO
    return 0


def _write_iovecs(caller: Any, fd: int, iovs: int, count: int, nwritten_at: int) -> int:
    sinks = getattr(_current, "sinks", None)
    if sinks is None or fd not in (1, 2):
        return ERRNO_BADF  # no other fd is open for writing in a function without a filesystem
    sink = sinks[fd]
    item = ffi.wasmtime_extern_t()
    if not _caller_export_get(caller, MEMORY, len(MEMORY), byref(item)) or item.kind != _EXTERN_MEMORY:
        return ERRNO_FAULT
    context = _caller_context(caller)
    base = _memory_data(context, byref(item.of.memory))
    size = _memory_data_size(context, byref(item.of.memory))
    if count > IOV_MAX:  # bounds the Python work per call: the epoch deadline cannot stop a host call
        return ERRNO_INVAL
    if iovs + 8 * count > size or nwritten_at + 4 > size:
        return ERRNO_FAULT
    vector = (c_uint32 * (2 * count)).from_address(base + iovs)
    total = 0
    for i in range(count):
        start, length = vector[2 * i], vector[2 * i + 1]
        if start + length > size:
            return ERRNO_FAULT
        if length:
            # Copy only what the sink keeps: a guest writing past its limit costs no copying.
            sink.write(ctypes.string_at(base + start, min(length, sink.room() + 1)))
            total += length
    c_uint32.from_address(base + nwritten_at).value = total & 0xFFFFFFFF
    return ERRNO_SUCCESS


def define_captured_stdio(linker: wasmtime.Linker) -> None:
    """Shadow WASI's fd_write in ``linker`` (after ``define_wasi``) with the capturing one."""
    i32 = wasmtime.ValType.i32()
    functype = wasmtime.FuncType([i32, i32, i32, i32], [i32])
    linker.allow_shadowing = True
    name = b"fd_write"
    error = ffi.wasmtime_linker_define_func_unchecked(linker.ptr(), WASI_MODULE, len(WASI_MODULE), name, len(name),
                                                      functype.ptr(), _fd_write, None, _NO_FINALIZER)
    if error:
        raise error_from_ptr(error)


def _char_array(items: list[bytes]) -> Any:
    return (c_char_p * len(items))(*items)


@dataclass
class RunResult:
    """What one run of a command did: at most one of exit_code / trap / error is set."""

    stdout: Sink
    stderr: Sink
    exit_code: int = 0
    trap: wasmtime.Trap | None = None
    error: wasmtime.WasmtimeError | None = None
    memory_near_limit: bool = False
    # Size of the instance's "memory" export when _start ended: its peak, since linear memory
    # only grows (0: never instantiated, or no memory export).
    memory_bytes: int = 0


def command_linker(engine: wasmtime.Engine, capture_stdio: bool = True) -> wasmtime.Linker:
    """The linker a WASI command runs against on a node: WASI preview1 (wasmtime's), with
    fd_write shadowed by the capturing one. Deploy-time validation checks imports against it."""
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    if capture_stdio:
        define_captured_stdio(linker)
    return linker


class CommandRunner:
    """Runs one compiled WASI command: a fresh Store per ``run``, thread-safe (nothing shared is
    mutated), many runs may go on at once on different threads."""

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module, argv0: str, env: Mapping[str, str],
                 memory_bytes: int, fuel: int | None, capture_stdio: bool = True) -> None:
        self.engine = engine
        self.memory_bytes = memory_bytes
        self.fuel = fuel
        self.capture_stdio = capture_stdio
        linker = command_linker(engine, capture_stdio)
        # Import resolution happens once here, not per invocation.
        self.instance_pre = linker.instantiate_pre(module)
        self.argv0 = argv0
        self._argv = _char_array([argv0.encode()])
        self._fixed_env = [(k.encode(), v.encode()) for k, v in env.items()]

    def run(self, stdin: bytes, env: list[tuple[bytes, bytes]], deadline_ticks: int, stdout_limit: int,
            stderr_limit: int, scratch_dir: str | None = None) -> RunResult:
        """Run ``_start`` once with ``stdin``, the fixed environment plus ``env``, and
        ``scratch_dir`` (if any) preopened as /tmp (functions with ``capture_stdio=False`` only)."""
        result = RunResult(Sink(stdout_limit), Sink(stderr_limit))
        store = _store_new(self.engine.ptr(), None, _NO_FINALIZER)
        try:
            context = _store_context(store)
            _store_limiter(store, self.memory_bytes, -1, -1, -1, -1)
            self._set_wasi(context, stdin, env, result, scratch_dir)
            _set_epoch_deadline(context, deadline_ticks)
            if self.fuel is not None:
                error = _set_fuel(context, self.fuel)
                if error:
                    raise error_from_ptr(error)
            if self.capture_stdio:
                _current.sinks = (None, result.stdout, result.stderr)
            try:
                with wasm_running:
                    self._instantiate_and_start(context, result)
            finally:
                if self.capture_stdio:
                    _current.sinks = None
        finally:
            ffi.wasmtime_store_delete(store)  # releases the GIL: custom streams call back when dropped
        return result

    def _set_wasi(self, context: Any, stdin: bytes, env: list[tuple[bytes, bytes]], result: RunResult,
                  scratch_dir: str | None) -> None:
        if scratch_dir is not None and self.capture_stdio:
            raise ValueError("a preopened directory needs capture_stdio=False (fd_write must reach its files)")
        if not self.capture_stdio:
            # The general path, through wasmtime-py's WasiConfig (files, custom output streams).
            config = wasmtime.WasiConfig()
            config.argv = [self.argv0]
            config.env = [(k.decode(), v.decode()) for k, v in self._fixed_env + env]
            if not self.capture_stdio:
                config.stdout_custom = _writer(result.stdout)
                config.stderr_custom = _writer(result.stderr)
            if scratch_dir is not None:
                config.preopen_dir(scratch_dir, "/tmp")
            pointer = config._consume()
        else:
            pointer = _config_new()
            _config_set_argv(pointer, 1, cast(self._argv, _CHAR_PP))
            pairs = self._fixed_env + env
            names = _char_array([k for k, _ in pairs])
            values = _char_array([v for _, v in pairs])
            _config_set_env(pointer, len(pairs), cast(names, _CHAR_PP), cast(values, _CHAR_PP))
        if stdin:  # empty by default; set_stdin_bytes takes ownership of the vector
            vector = ffi.wasm_byte_vec_t()
            _byte_vec_new(byref(vector), len(stdin), (ffi.wasm_byte_t * len(stdin)).from_buffer_copy(stdin))
            _config_set_stdin_bytes(pointer, byref(vector))
        error = _context_set_wasi(context, pointer)
        if error:
            raise error_from_ptr(error)

    def _instantiate_and_start(self, context: Any, result: RunResult) -> None:
        instance = ffi.wasmtime_instance_t()
        instance_ref = byref(instance)
        trap = _TRAP_POINTER()
        trap_ref = byref(trap)
        error = ffi.wasmtime_instance_pre_instantiate(self.instance_pre.ptr(), context, instance_ref, trap_ref)
        instantiated = not error and not trap
        if instantiated:
            lookups = _lookups
            if not _instance_export_get(context, instance_ref, START, len(START), lookups.ref):
                raise wasmtime.WasmtimeError("the module has no `_start` export")  # validated before: a node bug
            error = ffi.wasmtime_func_call(context, lookups.func, None, 0, None, 0, trap_ref)
            result.memory_bytes = self._memory_size(context, instance_ref)
        if error:
            failure = error_from_ptr(error)
            if isinstance(failure, wasmtime.ExitTrap):
                result.exit_code = failure.code
            else:
                result.error = failure
        elif trap:
            result.trap = trap_from_ptr(trap)
            # Linear memory ended within 10% (at least 1 MiB) of the limit: memory.grow was most
            # likely refused just before the trap, i.e. the guest ran out of memory.
            size = result.memory_bytes
            result.memory_near_limit = size > 0 and self.memory_bytes - size <= max(1024 * 1024,
                                                                                     self.memory_bytes // 10)

    @staticmethod
    def _memory_size(context: Any, instance_ref: Any) -> int:
        """Bytes of the instance's "memory" export (0 when it exports none); ``instance_ref``:
        ``byref`` of the wasmtime_instance_t."""
        lookups = _lookups
        if not _instance_export_get(context, instance_ref, MEMORY, len(MEMORY), lookups.ref):
            return 0
        if lookups.item.kind != _EXTERN_MEMORY:
            return 0
        return int(_memory_data_size(context, lookups.memory))


def _writer(sink: Sink) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        sink.write(data)

    return write
