"""Calling a component's ``handle`` with bytes in and out, without per-byte Python work.

wasmtime-py's generic component ``Func.__call__`` converts a ``list<u8>`` one element at a time
in Python (about 2 us per byte: a 1 MB request took ~2 s each way). The C API represents a
list<u8> as an array of 32-byte ``wasmtime_component_val_t`` (a kind tag plus a union), so we
fill and read that array with two strided slice copies, done in C by memoryview, instead.

Everything else about the call is as in ``wasmtime.component.Func.__call__`` (wasmtime-py 50):
lower the params, ``wasmtime_component_func_call``, lift the result, delete the values. The
metadata list is lowered here too: wasmtime-py's converter rebuilds the element types for
every element (a third of a warm call's Python time for four pairs).
"""

from __future__ import annotations

import ctypes
from ctypes import byref
from typing import Any

import wasmtime

from wlcommon.wasmtime_capi import error_from_ptr, ffi, func_handle, gil_kept, store_context

_VAL = ffi.wasmtime_component_val_t
_VAL_SIZE = ctypes.sizeof(_VAL)
_KIND_OFFSET = _VAL.kind.offset
_U8_OFFSET = _VAL.of.offset + ffi.wasmtime_component_valunion.u8.offset
_U8 = ffi.WASMTIME_COMPONENT_U8.value
_LIST = ffi.WASMTIME_COMPONENT_LIST.value
_RESULT = ffi.WASMTIME_COMPONENT_RESULT.value
_STRING = ffi.WASMTIME_COMPONENT_STRING.value
_TUPLE = ffi.WASMTIME_COMPONENT_TUPLE.value

# wasm_byte_vec_new taking the bytes object itself, without releasing the GIL (a memcpy).
_byte_vec_new = gil_kept("wasm_byte_vec_new", [ctypes.POINTER(ffi.wasm_byte_vec_t), ctypes.c_size_t, ctypes.c_char_p])


class HandleCaller:
    """Calls ``handle(request: list<u8>, metadata: list<tuple<string, string>>)
    -> result<list<u8>, string>`` on one instance; returns bytes (ok) or str (err)."""

    def __init__(self, store: wasmtime.Store, func: Any) -> None:
        self.func = func

    def __call__(self, store: wasmtime.Store, request: bytes, metadata: list[tuple[str, str]]) -> bytes | str:
        params = (_VAL * 2)()
        lowered = 0
        try:
            _lower_bytes(request, params[0])
            lowered = 1
            _lower_metadata(metadata, params[1])
            lowered = 2
            result = _VAL()
            error = ffi.wasmtime_component_func_call(byref(func_handle(self.func)), store_context(store), params, 2,
                                                     byref(result), 1)
            if error:
                raise error_from_ptr(error)
            try:
                return _lift_result(result)
            finally:
                ffi.wasmtime_component_val_delete(byref(result))
        finally:
            for i in range(lowered):
                ffi.wasmtime_component_val_delete(byref(params[i]))


def _lower_bytes(data: bytes, val: Any) -> None:
    n = len(data)
    items = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(byref(items), n)
    if n:
        view = _array_view(items.data, n)
        view[_KIND_OFFSET::_VAL_SIZE] = bytes([_U8]) * n
        view[_U8_OFFSET::_VAL_SIZE] = data
    val.kind = _LIST
    val.of.list = items


def _lower_metadata(pairs: list[tuple[str, str]], val: Any) -> None:
    """Fill ``val`` with a list<tuple<string, string>>; on failure nothing is left allocated."""
    items = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(byref(items), len(pairs))
    data = items.data
    try:
        for i, (key, value) in enumerate(pairs):
            # A valid placeholder first, so a failure below can delete the list as it stands.
            data[i].kind = _LIST
            data[i].of.list = ffi.wasmtime_component_vallist_t()
            texts = (key.encode(), value.encode())  # may raise (lone surrogates): before allocating
            pair = ffi.wasmtime_component_valtuple_t()
            ffi.wasmtime_component_valtuple_new_uninit(byref(pair), 2)
            for j, encoded in enumerate(texts):
                element = pair.data[j]
                element.kind = _STRING
                _byte_vec_new(byref(element.of.string), len(encoded), encoded)
            data[i].kind = _TUPLE
            data[i].of.tuple = pair
    except BaseException:
        for j in range(i + 1, len(pairs)):
            data[j].kind = _LIST
            data[j].of.list = ffi.wasmtime_component_vallist_t()
        holder = _VAL()
        holder.kind = _LIST
        holder.of.list = items
        ffi.wasmtime_component_val_delete(byref(holder))
        raise
    val.kind = _LIST
    val.of.list = items


def _lift_bytes(val: Any) -> bytes:
    if val.kind != _LIST:
        raise TypeError(f"expected a list<u8> value, got kind {val.kind}")
    n = val.of.list.size
    if n == 0:
        return b""
    return bytes(_array_view(val.of.list.data, n)[_U8_OFFSET::_VAL_SIZE])


def _lift_result(val: Any) -> bytes | str:
    if val.kind != _RESULT:
        raise TypeError(f"expected a result value, got kind {val.kind}")
    payload = val.of.result.val
    if val.of.result.is_ok:
        return _lift_bytes(payload.contents) if payload else b""
    if not payload:
        return ""
    inner = payload.contents
    if inner.kind != _STRING:
        raise TypeError(f"expected a string error, got kind {inner.kind}")
    return ctypes.string_at(inner.of.string.data, inner.of.string.size).decode("utf-8", "replace")


def _array_view(data_pointer: Any, count: int) -> memoryview:
    """A writable byte view over ``count`` consecutive wasmtime_component_val_t."""
    address = ctypes.addressof(data_pointer.contents)
    return memoryview((ctypes.c_ubyte * (count * _VAL_SIZE)).from_address(address)).cast("B")
