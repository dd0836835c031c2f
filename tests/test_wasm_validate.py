"""Upload-time validation: every bad input gets an InvalidWasm (a ValueError) saying what is wrong."""

import pytest
from conftest import wat as wasm
from conftest import wat2wasm

from wlruntime.wasm.validate import InvalidWasm, detect_kind, validate_wasm

pytestmark = pytest.mark.unit


def test_valid_code_passes() -> None:
    validate_wasm(wasm("echo"), "wasi-command")
    validate_wasm(wasm("counter.component"), "component")
    assert detect_kind(wasm("echo")) == "module"
    assert detect_kind(wasm("counter.component")) == "component"


@pytest.mark.parametrize(
    ("data", "abi", "message"),
    [
        (b"", "wasi-command", "empty file"),
        (b"GIF89a garbage", "wasi-command", "not a WebAssembly binary"),
        (b"(module)", "component", "WebAssembly text"),
        (b"\0asm\x01\x00\x00\x00\x07\x05junk", "wasi-command", "invalid WebAssembly module: .*end-of-file"),
        (b"\0asm\x01", "wasi-command", "truncated"),
    ],
)
def test_garbage_is_rejected(data: bytes, abi: str, message: str) -> None:
    with pytest.raises(InvalidWasm, match=message):
        validate_wasm(data, abi)


def test_wrong_abi_and_wrong_shape() -> None:
    with pytest.raises(InvalidWasm, match="no exported `_start`"):
        validate_wasm(wasm("reactor"), "wasi-command")
    with pytest.raises(InvalidWasm, match=r"is a WebAssembly component.*abi 'component'"):
        validate_wasm(wasm("counter.component"), "wasi-command")
    with pytest.raises(InvalidWasm, match=r"is a core WebAssembly module.*`handle`"):
        validate_wasm(wasm("echo"), "component")
    with pytest.raises(InvalidWasm, match=r"has type func\(u32\) -> u32; expected handle: func"):
        validate_wasm(wasm("wrongsig.component"), "component")
    with pytest.raises(InvalidWasm, match="does not export `handle`"):
        validate_wasm(wat2wasm("(component)"), "component")
    with pytest.raises(InvalidWasm, match="unknown abi 'docker'"):
        validate_wasm(wasm("echo"), "docker")


def test_imports_the_node_does_not_provide() -> None:
    data = wat2wasm('(module (import "env" "secret" (func)) (func (export "_start")))')
    with pytest.raises(InvalidWasm, match=r"env\.secret"):
        validate_wasm(data, "wasi-command")


def test_invalid_wasm_is_a_value_error() -> None:
    assert issubclass(InvalidWasm, ValueError)
