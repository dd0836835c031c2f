"""wasmtime's C API where wasmtime-py has no wrapper, or one too slow for a per-call path: the one
place that reaches into wasmtime-py's private modules (``_ffi``, ``_bindings``) and the private
handles of its objects. ``policies.wasm`` (wasm policies) and ``wlruntime.wasm`` (functions on
nodes) both go through it.

These internals change between wasmtime-py releases, so the dependency is pinned to the major
version this adapter was written against (pyproject.toml); importing it under another major
version fails at once with that message instead of misbehaving later.

Imports wasmtime: import this module only where wasm runs.
"""

from __future__ import annotations

import ctypes
from importlib.metadata import version
from typing import Any

import wasmtime
from wasmtime import _bindings as bindings  # ctypes declarations of every C function
from wasmtime import _ffi as ffi  # the C types, constants and functions (they release the GIL)

WASMTIME_MAJOR = 50  # keep in step with the wasmtime pin in pyproject.toml

_installed = version("wasmtime")
if int(_installed.split(".")[0]) != WASMTIME_MAJOR:
    raise ImportError(f"wl's wasmtime adapter (wlcommon/wasmtime_capi.py) is written for wasmtime "
                      f"{WASMTIME_MAJOR}.x, found {_installed}: install the version pyproject.toml pins")

# The same C library seen through ctypes.PyDLL: calls that keep the GIL. ctypes releases and
# re-takes the GIL around every foreign call, which costs more than a trivial C function
# (a getter, a memcpy) itself; only for calls that never block or run guest code.
_GIL_KEPT_DLL = ctypes.PyDLL(ffi.dll._name, handle=ffi.dll._handle)

__all__ = [
    "WASMTIME_MAJOR", "bindings", "enable_pooling_allocator", "error_from_ptr", "ffi", "func_handle",
    "gil_kept", "memory_handle", "store_context", "trap_from_ptr",
]


def gil_kept(name: str, argtypes: list[Any] | None = None, restype: Any = None) -> Any:
    """C function ``name`` called without releasing the GIL; argument and result types from
    wasmtime-py's declaration unless given."""
    function = _GIL_KEPT_DLL[name]  # a new function object: its types are this caller's own
    template = getattr(bindings, f"_{name}", None)
    function.argtypes = argtypes if argtypes is not None else template.argtypes
    function.restype = restype if restype is not None else (template.restype if template else None)
    return function


def error_from_ptr(pointer: Any) -> wasmtime.WasmtimeError:
    """The WasmtimeError for a ``wasmtime_error_t*`` a C call returned (takes ownership)."""
    return wasmtime.WasmtimeError._from_ptr(pointer)


def trap_from_ptr(pointer: Any) -> wasmtime.Trap:
    """The Trap for a ``wasm_trap_t*`` a C call filled in (takes ownership)."""
    return wasmtime.Trap._from_ptr(pointer)


def store_context(store: wasmtime.Store) -> Any:
    """The ``wasmtime_context_t*`` of ``store``."""
    return store._context()


def func_handle(func: Any) -> Any:
    """The C handle (``wasmtime_func_t`` or ``wasmtime_component_func_t``) of a core or
    component function; pass it by reference (``ctypes.byref``)."""
    return func._func


def memory_handle(memory: wasmtime.Memory) -> Any:
    """The ``wasmtime_memory_t`` of ``memory``; pass it by reference (``ctypes.byref``)."""
    return memory._memory


def enable_pooling_allocator(config: wasmtime.Config, *, slots: int, max_memory_size: int,
                             table_elements: int, memory_keep_resident: int = 0) -> None:
    """Make engines built from ``config`` allocate instances from a pool of ``slots``
    pre-reserved slots (core instances, memories and tables), each memory at most
    ``max_memory_size`` bytes; wasmtime-py has no wrapper for this. The caller checks first
    that the address space can be reserved: wasmtime aborts the process when it cannot.
    ``memory_keep_resident``: bytes of each memory slot that a freed instance leaves resident
    (zeroed with memset rather than returned to the kernel, so the next instance in the slot
    does not page-fault them in again)."""
    pool = ffi.wasmtime_pooling_allocation_config_new()
    try:
        if memory_keep_resident:
            ffi.wasmtime_pooling_allocation_config_linear_memory_keep_resident_set(pool, memory_keep_resident)
        ffi.wasmtime_pooling_allocation_config_total_core_instances_set(pool, slots)
        ffi.wasmtime_pooling_allocation_config_total_memories_set(pool, slots)
        ffi.wasmtime_pooling_allocation_config_total_tables_set(pool, slots)
        ffi.wasmtime_pooling_allocation_config_max_memory_size_set(pool, max_memory_size)
        ffi.wasmtime_pooling_allocation_config_table_elements_set(pool, table_elements)
        ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(pool)
