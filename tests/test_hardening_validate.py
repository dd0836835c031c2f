"""Deploy-time validation against the node's real WASI linker (issue 12, failure 5): every
import of a WASI command must be provided by the linker the node runs it with, by exact module,
name and signature; every bundled example still passes."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from wlruntime.wasm.validate import ABI_WASI_COMMAND, InvalidWasm, detect_kind, validate_wasm

pytestmark = pytest.mark.unit

BUILD = Path(__file__).resolve().parent.parent / "examples" / "build"
START = '(memory (export "memory") 1) (func (export "_start"))'


def module(imports: str) -> bytes:
    return wasmtime.wat2wasm(f"(module {imports} {START})")


@pytest.mark.parametrize("path", sorted(p for p in BUILD.glob("*.wasm") if detect_kind(p.read_bytes()) == "module"),
                         ids=lambda p: p.name)
def test_every_bundled_wasi_command_links(path: Path) -> None:
    validate_wasm(path.read_bytes(), ABI_WASI_COMMAND)


@pytest.mark.parametrize(("imports", "message"), [
    ('(import "wasi_snapshot_preview1" "sock_frobnicate" (func (param i32) (result i32)))',
     "wasi_snapshot_preview1.sock_frobnicate (func (i32) -> (i32)): unknown to the node"),
    ('(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32)))',
     "fd_write: the module wants func (i32, i32, i32, i32) -> (), the node provides "
     "func (i32, i32, i32, i32) -> (i32)"),
    ('(import "wasi_snapshot_preview1" "args_get" (func (param i64 i32) (result i32)))',
     "args_get: the module wants func (i64, i32) -> (i32)"),
    # The older WASI module name: the node's linker does not define it.
    ('(import "wasi_unstable" "fd_write" (func (param i32 i32 i32 i32) (result i32)))',
     "wasi_unstable.fd_write (func (i32, i32, i32, i32) -> (i32)): unknown to the node"),
    ('(import "wasi_snapshot_preview1" "memory" (memory 1))', "wasi_snapshot_preview1.memory (memory): unknown"),
    ('(import "env" "abort" (func))', "imports the node does not provide: env.abort"),
])
def test_an_import_the_node_lacks_is_refused_naming_it(imports: str, message: str) -> None:
    with pytest.raises(InvalidWasm) as caught:
        validate_wasm(module(imports), ABI_WASI_COMMAND)
    assert message in str(caught.value)


def test_exact_wasi_imports_pass() -> None:
    validate_wasm(module('(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))'
                         '(import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))'), ABI_WASI_COMMAND)
