"""ABI 1 and ABI 2 execution on real wasmtime: I/O, env isolation, limits, faults, state."""

import os
import threading
from pathlib import Path

import pytest
from conftest import wait_until
from conftest import wat as wasm

from wlruntime.wasm.runners import CompiledFunction, ConfigError, FunctionConfig, Invocation
from wlruntime.wasm.validate import compile_checked

pytestmark = pytest.mark.unit


_opened: list = []   # instances made by the test running now (closed after it)


def instance(name: str, **config):
    cfg = FunctionConfig.from_stored(config)
    artifact = compile_checked(wasm(name), cfg.abi, cfg.fuel is not None)
    made = CompiledFunction(name, 1, cfg, artifact).new_instance(f"i-{name}")
    _opened.append(made)
    return made


@pytest.fixture(autouse=True)
def _close_instances():
    """Close every instance a test made, so one granted a filesystem (``allow_fs``) removes its
    scratch folder (``/tmp/wl-i-<name>-*``) even when the test does not close it."""
    yield
    while _opened:
        _opened.pop().close()


def test_echo_stdin_to_stdout_and_stderr_to_logs() -> None:
    echo = instance("echo")
    out = echo.invoke(Invocation(b"hello wl"))
    assert (out.error, out.output, out.logs) == ("none", b"hello wl", b"echo: done\n")
    big = os.urandom(1_000_000)
    assert echo.invoke(Invocation(big)).output == big
    assert echo.invoke(Invocation(b"")).output == b""


def test_env_has_metadata_and_config_but_not_the_host_env() -> None:
    env_fn = instance("env", env={"GREETING": "hi"})
    out = env_fn.invoke(Invocation(b"abc", request_id="req-7", metadata={"content-type": "text/plain"}))
    env = dict(item.split("=", 1) for item in out.output.decode().split("\0") if item)
    assert env["WL_REQUEST_ID"] == "req-7"
    assert env["WL_FUNCTION"] == "env" and env["WL_VERSION"] == "1"
    assert env["WL_META_CONTENT_TYPE"] == "text/plain"
    assert env["WL_PAYLOAD_BYTES"] == "3"
    assert env["GREETING"] == "hi"
    assert "PATH" not in env and "HOME" not in env


def test_infinite_loop_times_out_and_other_work_continues_meanwhile() -> None:
    looping = instance("loop", timeout_ms=300)
    echo = instance("echo")
    results = {}
    worker = threading.Thread(target=lambda: results.update(loop=looping.invoke(Invocation(b""))))
    worker.start()
    from wlruntime.wasm.engine import wasm_running

    wait_until(lambda: wasm_running.count > 0, timeout=5)  # the loop is running
    # wasm runs with the GIL released: other invocations proceed while the loop spins.
    assert echo.invoke(Invocation(b"still here")).output == b"still here"
    assert worker.is_alive()
    worker.join(5)
    out = results["loop"]
    assert out.error == "timeout" and "300 ms" in out.error_message
    assert 250 <= out.exec_ms < 3000
    # a per-call timeout smaller than the configured one wins
    assert looping.invoke(Invocation(b"", timeout_ms=50)).exec_ms < 1000


def test_fuel_limit() -> None:
    out = instance("loop", fuel=1_000_000, timeout_ms=10_000).invoke(Invocation(b""))
    assert out.error == "out_of_fuel"


def test_memory_bomb_is_stopped_as_out_of_memory() -> None:
    out = instance("membomb", memory_mb=16).invoke(Invocation(b""))
    assert out.error == "out_of_memory" and "16 MB" in out.error_message


def test_trap_and_nonzero_exit_are_reported_with_their_logs() -> None:
    trapped = instance("trap").invoke(Invocation(b""))
    assert trapped.error == "trap" and "unreachable" in trapped.error_message
    assert trapped.logs == b"about to trap\n"
    exited = instance("exit3").invoke(Invocation(b""))
    assert exited.error == "function_error"
    assert exited.error_message == "exited with status 3: bad input"


def test_response_larger_than_the_limit() -> None:
    out = instance("echo", max_payload_bytes=10).invoke(Invocation(b"x" * 100))
    assert out.error == "response_too_large" and len(out.output) == 10


def test_component_keeps_state_across_invocations_and_reports_err() -> None:
    counter = instance("counter.component", abi="component")
    assert counter.invoke(Invocation(b"a")).output == b"a #1"
    assert counter.invoke(Invocation(b"b")).output == b"b #2"
    err = counter.invoke(Invocation(b"!no"))
    assert err.error == "function_error" and err.error_message == "rejected: request starts with '!'"
    assert counter.invoke(Invocation(b"c")).output == b"c #4"


def test_component_timeout_recycles_the_instance() -> None:
    counter = instance("counter.component", abi="component", timeout_ms=100)
    assert counter.invoke(Invocation(b"a")).output == b"a #1"
    out = counter.invoke(Invocation(b"~spin"))
    assert out.error == "timeout" and out.recycled
    # rebuilt from the compiled component: usable again, with fresh state
    assert counter.invoke(Invocation(b"b")).output == b"b #1"


def test_component_memory_limit() -> None:
    counter = instance("counter.component", abi="component", memory_mb=8)
    out = counter.invoke(Invocation(b"+grow"))
    assert out.error == "trap" and out.recycled
    assert counter.invoke(Invocation(b"ok")).output == b"ok #1"


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"config\.memory_mb"):
        FunctionConfig.from_stored({"memory_mb": -1})
    with pytest.raises(ConfigError, match=r"config\.abi"):
        FunctionConfig.from_stored({"abi": "docker"})
    with pytest.raises(ConfigError, match=r"config\.env"):
        FunctionConfig.from_stored({"env": {"A": 1}})


def test_component_moves_megabytes_in_and_out() -> None:
    # the node's own list<u8> lowering/lifting (handle_call.py), checked byte for byte
    counter = instance("counter.component", abi="component", memory_mb=64)
    payload = os.urandom(2 * 1024 * 1024) + b"\x00\xff"
    out = counter.invoke(Invocation(b"A" + payload, metadata={"a": "b"}))
    assert out.error == "none" and out.output == b"A" + payload + b" #1"
    assert counter.invoke(Invocation(b"")).output == b" #2"
    # wasmtime's hostcall limit caps list<u8> results near 2.79 MB: reported, not a node failure
    too_big = counter.invoke(Invocation(b"A" * 3_000_000))
    assert too_big.error == "response_too_large" and "2.79 MB" in too_big.error_message


def test_exception_hint_from_a_python_traceback() -> None:
    from wlruntime.wasm.runners import _exception_hint

    log = (b"Traceback (most recent call last):\n  File \"/0/app.py\", line 9, in handle\n"
           b"RuntimeError: boom\n\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\n")
    assert _exception_hint(log) == " (RuntimeError: boom)"
    assert _exception_hint(b"nothing to see\n") == ""


def test_no_filesystem_unless_granted() -> None:
    assert instance("fs_probe").invoke(Invocation(b"")).output == b"8"  # EBADF: nothing preopened
    granted = instance("fs_probe", allow_fs=True)
    assert granted.invoke(Invocation(b"")).output == b"0/tmp"
    scratch = Path(granted.scratch_dir)
    assert scratch.is_dir()
    granted.close()
    assert not scratch.exists()


def test_stdout_and_stderr_capture_gathers_iovecs_and_refuses_bad_pointers() -> None:
    # ABI 1 output goes through the node's own fd_write (wasi_command.py): several iovecs in one
    # call, an iovec past the end of memory (EFAULT, 21), a write to a closed fd (EBADF, 8), more
    # iovecs than IOV_MAX (EINVAL, 28).
    out = instance("stdio_probe").invoke(Invocation(b""))
    assert (out.error, out.output, out.logs) == ("none", b"abcd21 08 28", b"log")


def test_component_receives_the_metadata() -> None:
    meta = instance("meta.component", abi="component")
    out = meta.invoke(Invocation(b"req", request_id="r-1", metadata={"content_type": "text/plain", "k": "é"}))
    assert out.error == "none"
    assert out.output == ("req|request_id=r-1;function=meta.component;version=1;"
                          "content_type=text/plain;k=é;").encode()
    assert meta.invoke(Invocation(b"")).output == b"|request_id=;function=meta.component;version=1;"


def test_try_invoke_finishes_short_calls_and_gives_back_long_ones() -> None:
    echo = instance("echo")
    assert echo.can_retry
    assert echo.try_invoke(Invocation(b"quick"), budget_ticks=2).output == b"quick"
    slow = instance("slow_echo", timeout_ms=10_000)
    assert slow.try_invoke(Invocation(b""), budget_ticks=2) is None  # interrupted: nothing kept
    assert slow.invoke(Invocation(b"")).output == b"done"             # the real run, from scratch
    # a budget as long as the timeout is the timeout: its interrupt is the final answer
    assert instance("loop", timeout_ms=20).try_invoke(Invocation(b""), budget_ticks=100).error == "timeout"
    # with a filesystem an attempt could leave files behind: never retried
    assert not instance("echo", allow_fs=True).can_retry
    assert not instance("counter.component", abi="component").can_retry


def test_the_epoch_clock_sleeps_while_no_wasm_runs_and_timeouts_still_hold() -> None:
    from wlruntime.wasm.engine import wasm_running

    def wait_until_parked() -> None:  # after a second without wasm running
        wait_until(lambda: not wasm_running.wake.is_set(), interval=0.05,
                   message="the epoch ticker never went to sleep")

    looping = instance("loop", timeout_ms=100)
    counter = instance("counter.component", abi="component", timeout_ms=100)
    wait_until_parked()
    assert looping.invoke(Invocation(b"")).error == "timeout"  # woken: deadlines hold as usual
    wait_until_parked()
    assert counter.invoke(Invocation(b"~spin")).error == "timeout"


def test_peak_linear_memory_is_measured_after_each_call() -> None:
    from conftest import wat2wasm

    from wlruntime.node.server import outcome_to_pb

    grows = wat2wasm("""(module (memory (export "memory") 1)
        (func (export "_start") (drop (memory.grow (i32.const 16)))))""")  # 1 + 16 pages of 64 KiB
    cfg = FunctionConfig.from_stored({"memory_mb": 16})
    runner = CompiledFunction("grows", 1, cfg, compile_checked(grows, cfg.abi, False)).new_instance("i-grows")
    out = runner.invoke(Invocation(b""))
    assert out.ok and out.max_memory_bytes == 17 * 65536
    assert runner.invoke(Invocation(b"")).max_memory_bytes == 17 * 65536, "a fresh store per call: no carry-over"
    assert outcome_to_pb(out, "r-1").max_memory_bytes == 17 * 65536  # what the node sends the router
    bomb = instance("membomb", memory_mb=16).invoke(Invocation(b""))
    assert bomb.error == "out_of_memory" and 15 * 2**20 <= bomb.max_memory_bytes <= 16 * 2**20
