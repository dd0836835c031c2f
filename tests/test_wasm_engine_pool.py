"""The pooling allocator behind ABI 1 (core module) engines: instances reuse reserved slots,
the pool's bound gives a clear error, artifacts compiled elsewhere still load, and a machine that
cannot reserve the address space gets the on-demand allocator instead of a crash."""

from __future__ import annotations

import logging

import pytest
import wasmtime
from conftest import wat

import wlruntime.wasm.engine as engine_module
from wlruntime.wasm.engine import POOL_SLOTS, get_engine
from wlruntime.wasm.runners import CompiledFunction, FunctionConfig, Invocation
from wlruntime.wasm.validate import ABI_WASI_COMMAND, compile_checked

pytestmark = pytest.mark.unit

ECHO = wat("echo")


def test_abi1_functions_run_on_the_pooled_engine_and_components_do_not() -> None:
    module = compile_checked(ECHO, ABI_WASI_COMMAND)
    function = CompiledFunction("echo", 1, FunctionConfig.from_stored({"memory_mb": 16}), module)
    assert function.engine is get_engine(False, pooled=True)
    assert get_engine(False, pooled=True) is not get_engine(False)
    instance = function.new_instance("i-1")
    for i in range(3 * POOL_SLOTS):  # slots are handed back after every call
        outcome = instance.invoke(Invocation(payload=b"%d" % i, request_id=str(i)))
        assert outcome.output == b"%d" % i, outcome
    counter = wat("counter.component")
    component = CompiledFunction("counter", 1, FunctionConfig.from_stored({"abi": "component"}),
                                 compile_checked(counter, "component"))
    assert component.engine is get_engine(False)


def test_the_pool_bounds_live_instances_with_a_clear_error() -> None:
    engine = get_engine(False, pooled=True)
    module = wasmtime.Module(engine, ECHO)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    stores = []
    with pytest.raises(wasmtime.WasmtimeError, match=f"maximum concurrent limit of {POOL_SLOTS}"):
        for _ in range(POOL_SLOTS + 1):
            store = wasmtime.Store(engine)
            store.set_wasi(wasmtime.WasiConfig())
            store.set_epoch_deadline(1000)
            linker.instantiate(store, module)
            stores.append(store)
    assert len(stores) == POOL_SLOTS
    stores.clear()  # the slots come back: instantiating works again
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    linker.instantiate(store, module)


def test_artifacts_from_an_on_demand_engine_load_into_the_pooled_one() -> None:
    blob = wasmtime.Module(get_engine(False), ECHO).serialize()
    module = wasmtime.Module.deserialize(get_engine(False, pooled=True), blob)
    function = CompiledFunction("echo", 1, FunctionConfig.from_stored({}), module)
    assert function.new_instance("i").invoke(Invocation(payload=b"cached")).output == b"cached"


def test_without_the_address_space_the_engine_allocates_on_demand(monkeypatch, caplog) -> None:
    monkeypatch.setattr(engine_module, "POOL_SLOTS", 10**7)  # ~40 EiB: no machine reserves that
    with caplog.at_level(logging.WARNING, logger="wlruntime.wasm"):
        engine = engine_module._new_engine(False, True, True)
    assert "allocating instances on demand" in caplog.text
    module = wasmtime.Module(engine, ECHO)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    stores = [wasmtime.Store(engine) for _ in range(POOL_SLOTS + 1)]
    for store in stores:  # no pool bound on this engine
        store.set_wasi(wasmtime.WasiConfig())
        store.set_epoch_deadline(1000)
        linker.instantiate(store, module)


def test_a_node_refuses_more_workers_than_the_pool_has_slots() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "wlruntime.node", "--registry", "http://127.0.0.1:9",
                             "--workers", str(POOL_SLOTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"--workers must be below {POOL_SLOTS}" in result.stderr
