"""Checks that a .wasm file can run under a wl ABI, with messages that say what is wrong.

The registry calls ``validate_wasm`` at upload time; the node runs the same checks on the
compiled artifact (``check_module`` / ``check_component``) before it instantiates anything.

ABIs:
- ``wasi-command`` (ABI 1): a core WebAssembly module exporting ``_start`` and importing only
  functions the node's linker provides (WASI preview1, ``wasi_snapshot_preview1``), each by
  exact module, name and signature: the check asks the same linker the node runs with
  (``wasi_command.command_linker``), so what deploys also links.
- ``component`` (ABI 2): a component exporting ``handle`` with the signature in
  protos/handler.wit and importing only WASI preview2 interfaces (``wasi:*``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import wasmtime
    import wasmtime.component

ABI_WASI_COMMAND = "wasi-command"
ABI_COMPONENT = "component"
ABIS = (ABI_WASI_COMMAND, ABI_COMPONENT)

WASI_PREVIEW1_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")
HANDLE_EXPORT = "handle"
HANDLE_SIGNATURE = (
    "handle: func(request: list<u8>, metadata: list<tuple<string, string>>) -> result<list<u8>, string>"
)

_MAGIC = b"\0asm"
_CORE_MODULE_LAYER = b"\x00\x00"
_COMPONENT_LAYER = b"\x01\x00"


class InvalidWasm(ValueError):
    """The bytes cannot run under the requested ABI; the message says why."""


def detect_kind(data: bytes) -> str:
    """``"module"`` or ``"component"`` from the binary header; raises InvalidWasm otherwise."""
    if not data:
        raise InvalidWasm("empty file: expected a WebAssembly binary")
    if data[:4] != _MAGIC:
        if data.lstrip()[:1] == b"(":
            raise InvalidWasm("this is WebAssembly text (.wat), not a binary .wasm: compile it first")
        raise InvalidWasm(
            f"not a WebAssembly binary: the file starts with {bytes(data[:4])!r}, expected b'\\x00asm'"
        )
    if len(data) < 8:
        raise InvalidWasm(f"truncated WebAssembly binary: {len(data)} bytes, the header alone is 8")
    layer = bytes(data[6:8])
    if layer == _CORE_MODULE_LAYER:
        return "module"
    if layer == _COMPONENT_LAYER:
        return "component"
    raise InvalidWasm(f"unknown WebAssembly binary layer {layer!r} (neither a core module nor a component)")


def validate_wasm(data: bytes, abi: str, *, fuel: bool = False, parallel_compilation: bool = True) -> None:
    """Raise InvalidWasm (a ValueError) unless ``data`` is runnable under ``abi``.

    Compiles the code with the node's engine configuration, so what passes here instantiates
    on a node (``compile_checked``, which returns the artifact, is the same check: a
    ``CompiledCache`` validates what it compiles). ``fuel`` compiles for the fuel-metering
    engine (functions whose config sets ``fuel``). ``parallel_compilation=False`` compiles on
    the calling thread only, so concurrent validations do not queue behind each other on
    wasmtime's shared thread pool.
    """
    compile_checked(data, abi, fuel, parallel_compilation)


def compile_checked(data: bytes, abi: str, fuel: bool = False, parallel_compilation: bool = True):
    """Compile ``data`` for ``abi`` and check its imports/exports; returns the Module/Component."""
    import wasmtime
    import wasmtime.component

    from wlruntime.wasm.engine import get_engine

    if abi not in ABIS:
        raise InvalidWasm(f"unknown abi {abi!r}: expected one of {', '.join(ABIS)}")
    kind = detect_kind(data)
    engine = get_engine(fuel, parallel_compilation, pooled=abi == ABI_WASI_COMMAND)
    if abi == ABI_WASI_COMMAND:
        if kind != "module":
            raise InvalidWasm(
                "this is a WebAssembly component, but abi 'wasi-command' needs a core module "
                "(a WASI preview1 command); upload it with abi 'component' instead"
            )
        try:
            module = wasmtime.Module(engine, bytes(data))
        except wasmtime.WasmtimeError as e:
            raise InvalidWasm(f"invalid WebAssembly module: {_one_line(e)}") from None
        check_module(module, engine)
        return module
    if kind != "component":
        raise InvalidWasm(
            "this is a core WebAssembly module, but abi 'component' needs a component exporting "
            f"`{HANDLE_EXPORT}` (build one with componentize-py or wasm-tools); for a WASI command "
            "use abi 'wasi-command'"
        )
    try:
        component = wasmtime.component.Component(engine, bytes(data))
    except wasmtime.WasmtimeError as e:
        raise InvalidWasm(f"invalid WebAssembly component: {_one_line(e)}") from None
    check_component(component, engine)
    return component


def check_module(module: wasmtime.Module, engine: wasmtime.Engine | None = None) -> None:
    """ABI 1 rules on a compiled core module: exports ``_start``; every import is one the node's
    linker provides with the same type (checked when ``engine`` is given)."""
    import wasmtime

    exports = {e.name: e.type for e in module.exports}
    start = exports.get("_start")
    if not isinstance(start, wasmtime.FuncType):
        raise InvalidWasm(
            "not a WASI command: no exported `_start` function (is it a reactor/library? "
            "build it as a command, e.g. clang --target=wasm32-wasi with a main())"
        )
    if start.params or start.results:
        raise InvalidWasm("`_start` must take no parameters and return nothing")
    foreign = [f"{i.module}.{i.name}" for i in module.imports if i.module not in WASI_PREVIEW1_MODULES]
    if foreign:
        raise InvalidWasm(
            f"imports the node does not provide: {', '.join(foreign[:10])}"
            f"{' ...' if len(foreign) > 10 else ''} (only {WASI_PREVIEW1_MODULES[0]} is available)"
        )
    if engine is not None:
        problems = unlinkable_imports(module, engine)
        if problems:
            raise InvalidWasm(
                f"imports the node does not provide: {'; '.join(problems[:10])}{' ...' if len(problems) > 10 else ''}"
                f" (the node provides WASI preview1, module {WASI_PREVIEW1_MODULES[0]!r}, with wasmtime's signatures)")


def unlinkable_imports(module: wasmtime.Module, engine: wasmtime.Engine) -> list[str]:
    """Imports of ``module`` the node's WASI linker lacks or provides with another type, each
    described (``wasi_snapshot_preview1.fd_write: the module wants (i32) -> (), the node
    provides (i32, i32, i32, i32) -> (i32)``)."""
    import wasmtime

    from wlruntime.wasm.wasi_command import command_linker

    linker = command_linker(engine)
    store = wasmtime.Store(engine)
    problems = []
    for imp in module.imports:
        where = f"{imp.module}.{imp.name}"
        try:
            provided = linker.get(store, imp.module, imp.name)
        except wasmtime.WasmtimeError:
            problems.append(f"{where} ({_describe_extern(imp.type)}): unknown to the node")
            continue
        have = provided.type(store)
        if (not isinstance(imp.type, wasmtime.FuncType) or not isinstance(have, wasmtime.FuncType)
                or _signature(imp.type) != _signature(have)):
            problems.append(f"{where}: the module wants {_describe_extern(imp.type)}, the node provides "
                            f"{_describe_extern(have)}")
    return problems


def _signature(func_type: wasmtime.FuncType) -> tuple[list[str], list[str]]:
    return [str(p) for p in func_type.params], [str(r) for r in func_type.results]


def _describe_extern(extern_type: object) -> str:
    import wasmtime

    if isinstance(extern_type, wasmtime.FuncType):
        params, results = _signature(extern_type)
        return f"func ({', '.join(params)}) -> ({', '.join(results)})"
    return type(extern_type).__name__.removesuffix("Type").lower()


def check_component(component: wasmtime.component.Component, engine: wasmtime.Engine) -> None:
    """ABI 2 rules on a compiled component: the ``handle`` export per handler.wit, WASI imports."""
    from wasmtime.component import FuncType

    component_type = component.type
    exports = component_type.exports(engine)
    handle = exports.get(HANDLE_EXPORT)
    if handle is None:
        names = ", ".join(sorted(exports)) or "none"
        raise InvalidWasm(
            f"component does not export `{HANDLE_EXPORT}` (its exports: {names}); it must implement "
            f"the wl:handler world of protos/handler.wit: {HANDLE_SIGNATURE}"
        )
    handle_type = handle.ty
    if not isinstance(handle_type, FuncType):
        raise InvalidWasm(f"component export `{HANDLE_EXPORT}` is not a function")
    params = [describe_type(t) for _, t in handle_type.params]
    result = describe_type(handle_type.result) if handle_type.result is not None else None
    expected_params = ["list<u8>", "list<tuple<string, string>>"]
    expected_result = "result<list<u8>, string>"
    if params != expected_params or result != expected_result:
        got = f"func({', '.join(params)})" + (f" -> {result}" if result else "")
        raise InvalidWasm(f"component export `{HANDLE_EXPORT}` has type {got}; expected {HANDLE_SIGNATURE}")
    foreign = [name for name in component_type.imports(engine) if not name.startswith("wasi:")]
    if foreign:
        raise InvalidWasm(
            f"component imports interfaces the node does not provide: {', '.join(sorted(foreign))} "
            "(only WASI preview2 `wasi:*` interfaces are available)"
        )


def describe_type(valtype) -> str:
    """Render a component value type in WIT syntax (enough for error messages and checks)."""
    from wasmtime import component as c

    simple = {
        c.Bool: "bool", c.S8: "s8", c.S16: "s16", c.S32: "s32", c.S64: "s64", c.U8: "u8",
        c.U16: "u16", c.U32: "u32", c.U64: "u64", c.F32: "f32", c.F64: "f64", c.Char: "char",
        c.String: "string",
    }
    for cls, name in simple.items():
        if isinstance(valtype, cls):
            return name
    if isinstance(valtype, c.ListType):
        return f"list<{describe_type(valtype.element)}>"
    if isinstance(valtype, c.TupleType):
        return f"tuple<{', '.join(describe_type(t) for t in valtype.elements)}>"
    if isinstance(valtype, c.OptionType):
        return f"option<{describe_type(valtype.payload)}>"
    if isinstance(valtype, c.ResultType):
        ok = describe_type(valtype.ok) if valtype.ok is not None else "_"
        err = describe_type(valtype.err) if valtype.err is not None else "_"
        return f"result<{ok}, {err}>"
    return type(valtype).__name__


def _one_line(error: Exception) -> str:
    """wasmtime errors are "summary\n\nCaused by:\n    detail": join them into one line."""
    lines = [line.strip() for line in str(error).splitlines()]
    parts = [line for line in lines if line and line != "Caused by:"]
    return ": ".join(parts) or type(error).__name__
