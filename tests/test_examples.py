"""The example functions (examples/), built from source by examples/Makefile and run directly
with wasmtime-py, the way the node runs them:

- ABI 1 (WASI command): request on stdin, metadata in env vars, response on stdout, the log on
  stderr, a non-zero exit is a function error;
- ABI 2 (component, protos/handler.wit): ``handle(request, metadata) -> result<list<u8>, string>``
  on an instance that stays alive across calls.

The session fixture runs ``make -C examples`` first (a no-op when up to date), so these tests
always exercise the current sources; a failing build fails every test with make's output.
"""

from __future__ import annotations

import functools
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import wasmtime
import wasmtime.component

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BUILD = EXAMPLES / "build"

WASI_COMMANDS = {"echo": "c", "json_transform": "c", "cpu_work": "c", "hello": "assemblyscript",
                 "reverse": "assemblyscript", "stats": "rust"}
COMPONENTS = {"counter": "python", "wordcount": "python"}
NATIVE = ("echo", "cpu_work")


@pytest.fixture(scope="session", autouse=True)
def built_examples() -> None:
    """Builds the examples (or checks they are up to date) once per test session."""
    try:
        result = subprocess.run(["make", "-C", str(EXAMPLES)], check=False, capture_output=True, text=True,
                                timeout=600)
    except FileNotFoundError:
        pytest.fail("`make` is not installed: cannot build examples/ (apt-get install make)")
    if result.returncode != 0:
        pytest.fail(f"`make -C examples` failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    missing = [str(p.relative_to(ROOT)) for p in expected_outputs() if not p.is_file()]
    if missing:
        pytest.fail(f"`make -C examples` succeeded but did not produce: {', '.join(missing)}")


def expected_outputs() -> list[Path]:
    wasm = [BUILD / f"{name}.wasm" for name in (*WASI_COMMANDS, *COMPONENTS)]
    return wasm + [BUILD / "native" / name for name in NATIVE]


def config_of(name: str) -> dict:
    language = WASI_COMMANDS.get(name) or COMPONENTS[name]
    return json.loads((EXAMPLES / language / f"{name}.json").read_text())


# -- running ABI 1 (WASI command) ------------------------------------------------------------

@functools.cache
def shared_engine() -> wasmtime.Engine:
    """One engine for the session, with wasmtime's on-disk compilation cache in the build folder:
    compiling a CPython component takes seconds, loading it from the cache a fraction of one."""
    cache_dir = BUILD / ".wasmtime-cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_config = BUILD / ".wasmtime-cache.toml"
    cache_config.write_text(f"[cache]\ndirectory = {json.dumps(str(cache_dir))}\n")
    config = wasmtime.Config()
    config.cache = str(cache_config)
    return wasmtime.Engine(config)


_modules: dict[str, wasmtime.Module] = {}


@dataclass
class Outcome:
    exit_code: int
    stdout: bytes
    stderr: bytes


def run_command(name: str, request: bytes, env: dict[str, str] | None = None, *, tmp_path: Path,
                engine: wasmtime.Engine | None = None, store: wasmtime.Store | None = None) -> Outcome:
    """Runs build/<name>.wasm as the node does: stdin/stdout/stderr are files, no filesystem,
    memory limited to the example's configured memory_mb."""
    if engine is None:
        engine = shared_engine()
        if name not in _modules:
            _modules[name] = wasmtime.Module.from_file(engine, BUILD / f"{name}.wasm")
        module = _modules[name]
    else:
        module = wasmtime.Module.from_file(engine, BUILD / f"{name}.wasm")
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = store or wasmtime.Store(engine)
    store.set_limits(memory_size=config_of(name)["memory_mb"] << 20)
    stdin, stdout, stderr = tmp_path / "stdin", tmp_path / "stdout", tmp_path / "stderr"
    stdin.write_bytes(request)
    wasi = wasmtime.WasiConfig()
    wasi.stdin_file = str(stdin)
    wasi.stdout_file = str(stdout)
    wasi.stderr_file = str(stderr)
    wasi.env = sorted((env or {}).items())
    store.set_wasi(wasi)
    exit_code = 0
    try:
        linker.instantiate(store, module).exports(store)["_start"](store)
    except wasmtime.ExitTrap as exit_trap:
        exit_code = exit_trap.code
    return Outcome(exit_code, stdout.read_bytes(), stderr.read_bytes())


def run_native(name: str, request: bytes) -> Outcome:
    result = subprocess.run([str(BUILD / "native" / name)], input=request, check=False, capture_output=True,
                            timeout=30)
    return Outcome(result.returncode, result.stdout, result.stderr)


# -- running ABI 2 (component) ----------------------------------------------------------------

_components: dict[str, wasmtime.component.Component] = {}


class ComponentInstance:
    """One instance of a handler component in its own store, like one warm instance on a node."""

    def __init__(self, name: str) -> None:
        engine = shared_engine()
        if name not in _components:
            _components[name] = wasmtime.component.Component.from_file(engine, BUILD / f"{name}.wasm")
        linker = wasmtime.component.Linker(engine)
        linker.add_wasip2()
        self.store = wasmtime.Store(engine)
        self.store.set_limits(memory_size=config_of(name)["memory_mb"] << 20)
        self.store.set_wasi(wasmtime.WasiConfig())
        instance = linker.instantiate(self.store, _components[name])
        self.handle_func = instance.get_func(self.store, "handle")
        assert self.handle_func is not None, f"{name}.wasm does not export `handle`"

    def handle(self, request: bytes, metadata: list[tuple[str, str]] | None = None) -> bytes | str:
        """Ok(body) comes back as bytes, Err(message) as str (wasmtime-py lifts an untagged
        result<list<u8>, string> to its payload)."""
        result = self.handle_func(self.store, request, metadata or [])
        self.handle_func.post_return(self.store)
        assert isinstance(result, (bytes, str)), f"unexpected result {result!r}"
        return result


# -- the build --------------------------------------------------------------------------------

def test_make_is_a_no_op_when_up_to_date() -> None:
    dry_run = subprocess.run(["make", "-C", str(EXAMPLES), "--dry-run"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    builds = [line for line in dry_run.splitlines() if " -o " in line or "npm ci" in line]
    assert builds == [], f"a second `make -C examples` would rebuild: {builds}"


@pytest.mark.parametrize("name", [*WASI_COMMANDS, *COMPONENTS])
def test_each_example_has_a_deploy_config_matching_its_binary(name: str) -> None:
    config = config_of(name)
    assert set(config) == {"abi", "memory_mb", "timeout_ms", "max_instances"}
    assert config["abi"] == ("wasi-command" if name in WASI_COMMANDS else "component")
    assert all(isinstance(config[key], int) and config[key] > 0 for key in ("memory_mb", "timeout_ms",
                                                                           "max_instances"))
    header = (BUILD / f"{name}.wasm").read_bytes()[:8]
    assert header[:4] == b"\0asm"
    # Bytes 6-7 of the header: 0x0000 for a core module, 0x0001 for a component.
    assert header[6:8] == (b"\0\0" if config["abi"] == "wasi-command" else b"\x01\0")


@pytest.mark.parametrize("name", list(WASI_COMMANDS))
def test_wasi_commands_export_start_and_import_only_wasi_preview1(name: str) -> None:
    module = wasmtime.Module.from_file(shared_engine(), BUILD / f"{name}.wasm")
    assert "_start" in {export.name for export in module.exports}
    assert {imp.module for imp in module.imports} == {"wasi_snapshot_preview1"}


# -- C: echo ----------------------------------------------------------------------------------

@pytest.mark.parametrize("request_body", [b"hello\n", b"", bytes(range(256)) * 3, b"x" * 200_000],
                         ids=["text", "empty", "binary", "larger-than-buffer"])
def test_echo_returns_the_request_unchanged(request_body: bytes, tmp_path: Path) -> None:
    outcome = run_command("echo", request_body, tmp_path=tmp_path)
    assert outcome == Outcome(0, request_body, b"")


def test_native_echo_matches_the_wasm_build(tmp_path: Path) -> None:
    body = b"same bytes \x00\xff in and out"
    assert run_native("echo", body) == run_command("echo", body, tmp_path=tmp_path) == Outcome(0, body, b"")


# -- C: json_transform ------------------------------------------------------------------------

def test_json_transform_uppercases_string_values_and_adds_metadata(tmp_path: Path) -> None:
    request = {"name": "ada lovelace", "tags": ["x", {"inner": "deep é \"q\" \n"}], "n": -1.5e3,
               "ok": True, "none": None, "empty": {}}
    outcome = run_command("json_transform", json.dumps(request).encode(),
                          {"WL_FUNCTION": "jt", "WL_REQUEST_ID": "req-1"}, tmp_path=tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stderr == b""
    assert json.loads(outcome.stdout) == {
        "name": "ADA LOVELACE", "tags": ["X", {"inner": "DEEP é \"Q\" \n"}], "n": -1500.0,
        "ok": True, "none": None, "empty": {},
        "_wl": {"function": "jt", "request_id": "req-1", "fields": 6},
    }


def test_json_transform_escapes_metadata_and_reports_missing_metadata_as_null(tmp_path: Path) -> None:
    outcome = run_command("json_transform", b' { } ', {"WL_REQUEST_ID": 'a"b\\c'}, tmp_path=tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    assert json.loads(outcome.stdout) == {"_wl": {"function": None, "request_id": 'a"b\\c', "fields": 0}}


@pytest.mark.parametrize(("request_body", "message"), [
    (b"", "empty request"),
    (b"[1, 2]", "expected a JSON object ('{'), found '['"),
    (b'{"a": }', "line 1, column 7 (byte 6): expected a JSON value, found '}'"),
    (b'{"a": 1,}', "expected a field name"),
    (b'{"a": "b"} trailing', "unexpected 't' after the JSON object"),
    (b'{"a": "b"', "expected ',' or '}' in an object, found end of input"),
    (b'{"a": "b', "unterminated string"),
    (b'{"a": 01}', "expected ',' or '}'"),
    (b'{"a": tru}', "expected a JSON value"),
    (b'{"a": "\\x"}', "bad escape '\\x'"),
    (b'{"a": "\xff"}', "invalid UTF-8 (byte 0xff)"),
    (b'{\n  "a": 1,\n  "b" 2\n}', "line 3, column 7"),
    (b'{"_wl": 1}', 'field "_wl" is reserved'),
    (b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}", "nesting deeper than 64 levels"),
], ids=lambda value: value[:20] if isinstance(value, bytes) else None)
def test_json_transform_rejects_bad_input_with_exit_1_and_a_message(request_body: bytes, message: str,
                                                                     tmp_path: Path) -> None:
    outcome = run_command("json_transform", request_body, tmp_path=tmp_path)
    assert outcome.exit_code == 1
    assert outcome.stdout == b"", "nothing half-written on a bad request"
    assert outcome.stderr.startswith(b"json_transform: invalid request at line ")
    assert message.encode() in outcome.stderr, outcome.stderr


# -- C: cpu_work ------------------------------------------------------------------------------

def test_cpu_work_output_depends_on_n_and_is_deterministic(tmp_path: Path) -> None:
    outputs = {n: run_command("cpu_work", f"{n}\n".encode(), tmp_path=tmp_path) for n in (0, 1, 2, 50)}
    for n, outcome in outputs.items():
        assert outcome.exit_code == 0, outcome.stderr
        assert outcome.stdout.startswith(f"n={n} hash=".encode())
    assert len({outcome.stdout for outcome in outputs.values()}) == 4
    assert run_command("cpu_work", b"  50 ", tmp_path=tmp_path).stdout == outputs[50].stdout


def test_cpu_work_native_build_computes_the_same_hash(tmp_path: Path) -> None:
    for n in (0, 7, 300):
        assert run_native("cpu_work", str(n).encode()) == run_command("cpu_work", str(n).encode(),
                                                                     tmp_path=tmp_path)


def test_cpu_work_cost_is_linear_in_n(tmp_path: Path) -> None:
    """Measured in fuel (instructions executed, deterministic), not wall time."""
    config = wasmtime.Config()
    config.consume_fuel = True
    engine = wasmtime.Engine(config)

    def fuel_used(n: int) -> int:
        store = wasmtime.Store(engine)
        store.set_fuel(10**12)
        outcome = run_command("cpu_work", str(n).encode(), tmp_path=tmp_path, engine=engine, store=store)
        assert outcome.exit_code == 0, outcome.stderr
        return 10**12 - store.get_fuel()

    base = fuel_used(0)
    per_round = [(fuel_used(n) - base) / n for n in (10, 100, 400)]
    assert min(per_round) > 1000, "each round is at least one instruction per step"
    assert max(per_round) / min(per_round) < 1.01, per_round


@pytest.mark.parametrize(("request_body", "message"), [
    (b"", b"empty request"),
    (b"abc", b"not a non-negative decimal integer"),
    (b"-5", b"not a non-negative decimal integer"),
    (b"1.5", b"not a non-negative decimal integer"),
    (b"100000001", b"n is too large"),
    (b"9" * 40, b"n is too large"),
    (b"1" * 100, b"request longer than 64 bytes"),
])
def test_cpu_work_rejects_bad_input(request_body: bytes, message: bytes, tmp_path: Path) -> None:
    outcome = run_command("cpu_work", request_body, tmp_path=tmp_path)
    assert (outcome.exit_code, outcome.stdout) == (1, b"")
    assert message in outcome.stderr, outcome.stderr
    assert run_native("cpu_work", request_body).exit_code == 1


# -- AssemblyScript: hello, reverse -----------------------------------------------------------

def test_assemblyscript_hello_greets_with_the_invocation_metadata(tmp_path: Path) -> None:
    outcome = run_command("hello", b"  Ada \n", {"WL_FUNCTION": "hello", "WL_REQUEST_ID": "r-42"},
                          tmp_path=tmp_path)
    assert outcome == Outcome(0, b"Hello, Ada! (function hello, request r-42)\n", b"")
    assert run_command("hello", b"", tmp_path=tmp_path).stdout == b"Hello, world! (function ?, request ?)\n"


@pytest.mark.parametrize("text", ["hello", "", "héllo wörld", "a😀b🎉c", "x" * 100_000])
def test_assemblyscript_reverse_reverses_code_points(text: str, tmp_path: Path) -> None:
    outcome = run_command("reverse", text.encode(), tmp_path=tmp_path)
    assert outcome == Outcome(0, text[::-1].encode(), b"")


@pytest.mark.parametrize("request_body", [b"ab\xffc", b"ab\xe2\x82", b"\xc0\xaf", b"\x80"],
                         ids=["invalid-byte", "truncated", "overlong", "lone-continuation"])
def test_assemblyscript_reverse_rejects_invalid_utf8(request_body: bytes, tmp_path: Path) -> None:
    outcome = run_command("reverse", request_body, tmp_path=tmp_path)
    assert outcome == Outcome(1, b"", b"request is not valid UTF-8 text\n")


# -- Rust: stats ------------------------------------------------------------------------------

def test_rust_stats_summarises_numbers(tmp_path: Path) -> None:
    outcome = run_command("stats", b"4 1, 3\n2\n\n10.5,-2e1\n", tmp_path=tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    summary = json.loads(outcome.stdout)
    values = sorted([4, 1, 3, 2, 10.5, -20])
    mean = sum(values) / 6
    assert summary == pytest.approx({
        "count": 6, "min": -20, "max": 10.5, "mean": mean, "p50": 2, "p90": 10.5, "p99": 10.5,
        "stddev": (sum((v - mean) ** 2 for v in values) / 6) ** 0.5,
    })


def test_rust_stats_percentiles_use_nearest_rank(tmp_path: Path) -> None:
    outcome = run_command("stats", " ".join(str(i) for i in range(1, 101)).encode(), tmp_path=tmp_path)
    summary = json.loads(outcome.stdout)
    assert (summary["p50"], summary["p90"], summary["p99"], summary["mean"]) == (50, 90, 99, 50.5)


@pytest.mark.parametrize(("request_body", "message"), [
    (b"", b"stats: no numbers in the request; send numbers separated by whitespace or commas"),
    (b"1 2\n3 x 4", b'stats: line 2: "x" is not a finite number'),
    (b"1e400", b'stats: line 1: "1e400" is not a finite number'),
    (b"NaN", b'stats: line 1: "NaN" is not a finite number'),
    (b"1 \xff", b"stats: request is not valid UTF-8 text (byte 2)"),
])
def test_rust_stats_rejects_bad_input(request_body: bytes, message: bytes, tmp_path: Path) -> None:
    outcome = run_command("stats", request_body, tmp_path=tmp_path)
    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (1, b"", message + b"\n")


# -- Python components: counter, wordcount ----------------------------------------------------

def test_counter_state_survives_warm_calls_and_restarts_on_a_new_instance() -> None:
    first = ComponentInstance("counter")
    assert [first.handle(b"", [("request_id", str(i))]) for i in range(3)] == [b"1", b"2", b"3"]
    second = ComponentInstance("counter")
    assert second.handle(b"anything") == b"1"
    assert first.handle(b"") == b"4", "a second instance does not share the first one's state"
    assert second.handle(b"") == b"2"


def test_wordcount_counts_words_and_keeps_instance_totals() -> None:
    instance = ComponentInstance("wordcount")
    first = json.loads(instance.handle("The cat and the hat.\nThe end, naïve café!".encode(),
                                       [("request_id", "r1"), ("function", "wordcount")]))
    assert first == {
        "words": 9, "lines": 2, "chars": 41,
        "top": [["the", 3], ["and", 1], ["café", 1], ["cat", 1], ["end", 1]],
        "instance": {"invocations": 1, "total_words": 9},
        "metadata": {"request_id": "r1", "function": "wordcount"},
    }
    second = json.loads(instance.handle(b"one two"))
    assert (second["words"], second["instance"]) == (2, {"invocations": 2, "total_words": 11})


def test_wordcount_returns_an_error_for_invalid_utf8_and_stays_usable() -> None:
    instance = ComponentInstance("wordcount")
    assert instance.handle(b"ok \xfe bad") == "request is not valid UTF-8 text: byte 3 (0xfe)"
    assert json.loads(instance.handle(b"still alive"))["instance"] == {"invocations": 1, "total_words": 2}
