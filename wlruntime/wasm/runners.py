"""Running functions: ABI 1 (WASI preview1 command) and ABI 2 (component) instances.

A ``CompiledFunction`` is one function version compiled for the process engine; it makes
instances. An instance runs one invocation at a time (the node enforces that; a wasmtime
Store must not be entered from two threads).

ABI 1, ``wasi-command`` (WAGI-like): every invocation gets a fresh Store instantiated from a
pre-linked ``InstancePre`` (tens of microseconds), the payload on stdin, metadata in env vars,
stdout is the response and stderr the log. Nothing survives between invocations, as with CGI.

ABI 2, ``component``: the Store and component instance live as long as the instance, so state
(a loaded model, a cache, a counter) survives warm invocations. After a fault (timeout, trap)
wasmtime refuses to re-enter the instance, so it is rebuilt from the compiled component before
the next invocation and the faulted invocation reports ``recycled=True`` (the state is lost,
as when Lambda resets a crashed environment).

Limits, per function config: wall-clock timeout by epoch deadline, linear memory by store
limits, optional fuel; no filesystem (unless ``allow_fs``: a private scratch dir at /tmp),
no network (unless ``allow_net``, components only; WASI preview1 has no sockets), no host env.
"""

from __future__ import annotations

import functools
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import wasmtime
import wasmtime.component

from wlcommon.wasmtime_capi import ffi
from wlmodel.kinds import ErrorKind

# the registry's config is the one function config (ConfigError: a bad value, naming the key)
from wlruntime.registry.models import ConfigError as ConfigError
from wlruntime.registry.models import FunctionConfig as FunctionConfig
from wlruntime.wasm.engine import get_engine, ticks_for, wasm_running
from wlruntime.wasm.handle_call import HandleCaller
from wlruntime.wasm.validate import ABI_COMPONENT, ABI_WASI_COMMAND, ABIS, HANDLE_EXPORT
from wlruntime.wasm.wasi_command import CommandRunner

MIB = 1024 * 1024
LOG_LIMIT_BYTES = 64 * 1024

# Error kinds a call can end with: the model's one vocabulary (mapped to node.proto in
# wlruntime.proto.kinds), named here for the runners' own code.
NONE = ErrorKind.NONE
FUNCTION_ERROR = ErrorKind.FUNCTION_ERROR
TIMEOUT = ErrorKind.TIMEOUT
OUT_OF_MEMORY = ErrorKind.OUT_OF_MEMORY
TRAP = ErrorKind.TRAP
OUT_OF_FUEL = ErrorKind.OUT_OF_FUEL
RESPONSE_TOO_LARGE = ErrorKind.RESPONSE_TOO_LARGE
INTERNAL = ErrorKind.INTERNAL


@dataclass(frozen=True)
class Invocation:
    payload: bytes
    request_id: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Overrides the configured timeout when > 0 and smaller.
    timeout_ms: int = 0


@dataclass
class Outcome:
    output: bytes = b""
    error: str = NONE
    error_message: str = ""
    logs: bytes = b""
    exec_ms: float = 0.0
    # The instance faulted and was reset: its state is gone (ABI 2).
    recycled: bool = False
    # Peak linear memory after the call, bytes (WASI commands; 0 when not measured).
    max_memory_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.error == NONE


class CompiledFunction:
    """One function version compiled for this process, ready to make instances."""

    def __init__(self, name: str, version: int, config: FunctionConfig, artifact: Any) -> None:
        if config.abi not in ABIS:  # None in an upload means "detect"; a node runs a stored config
            raise ConfigError(f"config.abi must be one of {', '.join(ABIS)}, got {config.abi!r}")
        self.name = name
        self.version = version
        self.config = config
        self.artifact = artifact  # wasmtime.Module (ABI 1) or wasmtime.component.Component
        # Recent execution time (an exponentially weighted mean kept by the node runtime, which
        # runs short functions inline).
        self.recent_exec_ms = 0.0
        # Whether a call can block in a host function (WASI poll_oneoff: sleep()): the epoch
        # deadline interrupts guest code only, so a short inline attempt (try_invoke) could
        # block its thread for the whole sleep and then have to run again.
        self.may_block = config.abi == ABI_WASI_COMMAND and any(
            item.module == "wasi_snapshot_preview1" and item.name == "poll_oneoff" for item in artifact.imports)
        self.engine = get_engine(config.fuel is not None, pooled=config.abi == ABI_WASI_COMMAND)
        if config.abi == ABI_WASI_COMMAND:
            self.command = CommandRunner(
                self.engine, artifact, name,
                # WL_* entries of the config env may clash with per-call ones: added per call.
                {**{k: v for k, v in config.env.items() if not k.startswith("WL_")},
                 "WL_FUNCTION": name, "WL_VERSION": str(version)},
                config.memory_mb * MIB, config.fuel,
                # With a filesystem, fds other than 1 and 2 are writable: keep WASI's own fd_write.
                capture_stdio=not config.allow_fs,
            )
        else:
            self.linker = wasmtime.component.Linker(self.engine)
            self.linker.add_wasip2()

    def new_instance(self, instance_id: str) -> WasiCommandInstance | ComponentInstance:
        if self.config.abi == ABI_WASI_COMMAND:
            return WasiCommandInstance(self, instance_id)
        return ComponentInstance(self, instance_id)


class _Capture:
    """A bounded byte sink for a WASI output stream."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflowed = False

    def write(self, data: bytes) -> int:
        room = self.limit - self.size
        if len(data) > room:
            self.overflowed = True
            data = data[:max(room, 0)]
        if data:
            self.chunks.append(data)
            self.size += len(data)
        return None  # report everything as written so the guest carries on

    def value(self) -> bytes:
        return b"".join(self.chunks)


class _InstanceBase:
    can_retry = False  # see WasiCommandInstance.can_retry

    def __init__(self, function: CompiledFunction, instance_id: str) -> None:
        self.function = function
        self.instance_id = instance_id
        self.config = function.config
        self.scratch_dir = tempfile.mkdtemp(prefix=f"wl-{instance_id}-") if self.config.allow_fs else None

    def _new_store(self, wasi: wasmtime.WasiConfig) -> wasmtime.Store:
        store = wasmtime.Store(self.function.engine)
        store.set_limits(memory_size=self.config.memory_mb * MIB)
        if self.scratch_dir is not None:
            wasi.preopen_dir(self.scratch_dir, "/tmp")
        store.set_wasi(wasi)
        return store

    def _arm(self, store: wasmtime.Store, invocation: Invocation) -> int:
        """Set the per-call deadline (and fuel); returns the effective timeout in ms."""
        timeout = self.config.timeout_ms
        if 0 < invocation.timeout_ms < timeout:
            timeout = invocation.timeout_ms
        store.set_epoch_deadline(ticks_for(timeout))
        if self.config.fuel is not None:
            store.set_fuel(self.config.fuel)
        return timeout

    def close(self) -> None:
        if self.scratch_dir is not None:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)
            self.scratch_dir = None


class WasiCommandInstance(_InstanceBase):
    """ABI 1: a fresh Store per invocation, stdin in, stdout out."""

    abi = ABI_WASI_COMMAND

    def __init__(self, function: CompiledFunction, instance_id: str) -> None:
        super().__init__(function, instance_id)
        self._instance_env = (b"WL_INSTANCE_ID", instance_id.encode())
        # Config env entries named WL_*; the platform's variables win over them.
        self._config_wl_env = [(k.encode(), v.encode()) for k, v in self.config.env.items()
                               if k.startswith("WL_") and k not in ("WL_FUNCTION", "WL_VERSION")]

    @property
    def can_retry(self) -> bool:
        """An invocation that was interrupted can run again from scratch with nothing to show for
        the first attempt: a fresh Store per call and no filesystem, so no state survives it."""
        return self.scratch_dir is None

    def try_invoke(self, invocation: Invocation, budget_ticks: int) -> Outcome | None:
        """Run ``invocation`` if it finishes within ``budget_ticks`` epoch ticks; ``None`` if it was
        interrupted first (nothing of the attempt is kept: run it again with ``invoke``).

        Lets a caller run short invocations where a thread hand-off would cost more than the
        function (the node's event loop), and move the long ones elsewhere."""
        if not self.can_retry:
            raise RuntimeError("try_invoke needs a function without a filesystem")
        timeout = self._timeout(invocation)
        if budget_ticks >= ticks_for(timeout):
            return self.invoke(invocation)  # the budget is the timeout: an interrupt is final
        outcome = self.invoke(invocation, budget_ticks)
        if outcome.error == TIMEOUT:
            return None
        return outcome

    def _timeout(self, invocation: Invocation) -> int:
        timeout = self.config.timeout_ms
        if 0 < invocation.timeout_ms < timeout:
            timeout = invocation.timeout_ms
        return timeout

    def invoke(self, invocation: Invocation, deadline_ticks: int | None = None) -> Outcome:
        started = time.perf_counter()
        timeout = self._timeout(invocation)
        outcome = Outcome()
        try:
            run = self.function.command.run(invocation.payload, self._env(invocation),
                                            deadline_ticks or ticks_for(timeout), self.config.max_payload_bytes,
                                            LOG_LIMIT_BYTES, self.scratch_dir)
        except wasmtime.WasmtimeError as error:  # setting up the store (e.g. fuel) failed
            outcome.error, outcome.error_message = _classify_error(str(error), timeout, self.config.memory_mb)
            outcome.exec_ms = (time.perf_counter() - started) * 1000.0
            return outcome
        outcome.output = run.stdout.value()
        outcome.logs = run.stderr.value()
        outcome.max_memory_bytes = run.memory_bytes
        if run.exit_code != 0:
            outcome.error = FUNCTION_ERROR
            outcome.error_message = _with_last_log_line(f"exited with status {run.exit_code}", outcome.logs)
        elif run.trap is not None:
            outcome.error, outcome.error_message = _classify_trap(run.trap.trap_code, str(run.trap.message), timeout)
            if outcome.error == TRAP and run.memory_near_limit:
                outcome.error = OUT_OF_MEMORY
                outcome.error_message = (f"ran out of memory (limit {self.config.memory_mb} MB): "
                                         + outcome.error_message)
        elif run.error is not None:
            outcome.error, outcome.error_message = _classify_error(str(run.error), timeout, self.config.memory_mb)
        if run.stdout.overflowed and outcome.ok:
            outcome.error = RESPONSE_TOO_LARGE
            outcome.error_message = f"response exceeds max_payload_bytes ({self.config.max_payload_bytes})"
        outcome.exec_ms = (time.perf_counter() - started) * 1000.0
        return outcome

    def _env(self, invocation: Invocation) -> list[tuple[bytes, bytes]]:
        """The per-call environment (the config's env, WL_FUNCTION and WL_VERSION are set once
        per function by its CommandRunner)."""
        env = dict((self._instance_env, (b"WL_REQUEST_ID", invocation.request_id.encode()),
                    (b"WL_PAYLOAD_BYTES", str(len(invocation.payload)).encode())))
        for key, value in invocation.metadata.items():
            env[_meta_env_name(key)] = value.encode()
        if self._config_wl_env:  # rare: one entry per name, the platform's
            return [(k, v) for k, v in self._config_wl_env if k not in env] + list(env.items())
        return list(env.items())


@functools.lru_cache(maxsize=4096)
def _meta_env_name(key: str) -> bytes:
    """``content-type`` -> ``WL_META_CONTENT_TYPE``."""
    return ("WL_META_" + "".join(c if c.isalnum() else "_" for c in key).upper()).encode()


class ComponentInstance(_InstanceBase):
    """ABI 2: one Store for the instance's life; handle() is called per invocation."""

    abi = ABI_COMPONENT

    def __init__(self, function: CompiledFunction, instance_id: str) -> None:
        super().__init__(function, instance_id)
        self.store: wasmtime.Store | None = None
        self.handle: Any = None
        self._logs = _Capture(LOG_LIMIT_BYTES)
        self.instantiate()

    def instantiate(self) -> None:
        """(Re)create the Store and the component instance: fresh state."""
        wasi = wasmtime.WasiConfig()
        wasi.argv = [self.function.name]
        wasi.env = list(self.config.env.items())
        # Both streams go to the invocation's log (print() in Python handlers writes stdout).
        wasi.stdout_custom = lambda data: self._logs.write(data)
        wasi.stderr_custom = lambda data: self._logs.write(data)
        if self.config.allow_net:
            ffi.wasi_config_inherit_network(wasi.ptr())
            ffi.wasi_config_allow_ip_name_lookup(wasi.ptr(), True)
        store = self._new_store(wasi)
        store.set_epoch_deadline(ticks_for(self.config.timeout_ms))  # instantiation runs init code
        if self.config.fuel is not None:
            store.set_fuel(self.config.fuel)
        with wasm_running:
            instance = self.function.linker.instantiate(store, self.function.artifact)
        handle = instance.get_func(store, HANDLE_EXPORT)
        if handle is None:  # validated at upload; a node-side check all the same
            raise RuntimeError(f"component has no `{HANDLE_EXPORT}` export")
        self.handle = HandleCaller(store, handle)
        self.store = store

    def invoke(self, invocation: Invocation) -> Outcome:
        started = time.perf_counter()
        outcome = Outcome()
        if self.store is None:  # recycled after a fault
            try:
                self.instantiate()
            except wasmtime.WasmtimeError as error:
                outcome.error, outcome.error_message = _classify_error(str(error), self.config.timeout_ms,
                                                                       self.config.memory_mb)
                outcome.exec_ms = (time.perf_counter() - started) * 1000.0
                return outcome
        self._logs = _Capture(LOG_LIMIT_BYTES)
        store = self.store
        timeout = self._arm(store, invocation)
        metadata = [("request_id", invocation.request_id), ("function", self.function.name),
                    ("version", str(self.function.version))]
        metadata += [(str(k), str(v)) for k, v in invocation.metadata.items()]
        try:
            with wasm_running:
                result = self.handle(store, bytes(invocation.payload), metadata)
        except wasmtime.WasmtimeError as error:
            outcome.error, outcome.error_message = _classify_error(str(error), timeout, self.config.memory_mb)
            if outcome.error == TRAP:
                outcome.error_message += _exception_hint(self._logs.value())
            # wasmtime will not re-enter a component instance after a trap: rebuild it next time.
            self.store = None
            self.handle = None
            outcome.recycled = True
        else:
            if isinstance(result, str):
                outcome.error, outcome.error_message = FUNCTION_ERROR, result
            elif len(result) > self.config.max_payload_bytes:
                outcome.error = RESPONSE_TOO_LARGE
                outcome.error_message = f"response exceeds max_payload_bytes ({self.config.max_payload_bytes})"
            else:
                outcome.output = bytes(result)
        outcome.exec_ms = (time.perf_counter() - started) * 1000.0
        outcome.logs = self._logs.value()
        return outcome

    def close(self) -> None:
        self.store = None
        self.handle = None
        super().close()


# ---- helpers ----------------------------------------------------------------------------------

def _cause(message: str) -> str:
    """The 'Caused by' part of a wasmtime error (drops the wasm backtrace)."""
    lines = [line.strip() for line in message.strip().splitlines()]
    if "Caused by:" in lines:
        lines = lines[lines.index("Caused by:") + 1:]
    lines = [line for line in lines if line]
    return "; ".join(lines) or "unknown error"


def _classify_trap(code: wasmtime.TrapCode | None, message: str, timeout_ms: int) -> tuple[str, str]:
    if code == wasmtime.TrapCode.INTERRUPT:
        return TIMEOUT, f"timed out after {timeout_ms} ms"
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return OUT_OF_FUEL, "ran out of fuel"
    return TRAP, _cause(message)


def _classify_error(message: str, timeout_ms: int, memory_mb: int) -> tuple[str, str]:
    """Classify an error that carries no trap code (components, instantiation)."""
    cause = _cause(message)
    if "wasm trap: interrupt" in cause:
        return TIMEOUT, f"timed out after {timeout_ms} ms"
    if "all fuel consumed" in cause:
        return OUT_OF_FUEL, "ran out of fuel"
    if "hostcall" in cause and "too much data" in cause:
        # wasmtime caps what one call may copy from guest to host at 128 MiB of host values;
        # the C API holds a list<u8> as one 48-byte value per byte: about 2.79 MB of response.
        return RESPONSE_TOO_LARGE, ("component response too large: wasmtime limits a list<u8> result to "
                                    "about 2.79 MB (use abi wasi-command for bigger responses)")
    if "memory" in cause and ("limit" in cause or "exceeds" in cause) and "wasm trap" not in cause:
        return OUT_OF_MEMORY, f"needs more memory than its limit of {memory_mb} MB: {cause}"
    if "wasm trap" in cause:
        return TRAP, cause
    return INTERNAL, cause


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(:.*)?$")


def _exception_hint(log: bytes) -> str:
    """' (ValueError: ...)' from the last exception line in a log, e.g. the traceback an
    uncaught Python exception leaves before componentize-py turns it into a trap."""
    for line in reversed(log.decode("utf-8", "replace").splitlines()):
        if _EXCEPTION_LINE.match(line.strip()):
            return f" ({line.strip()[:500]})"
    return ""


def _with_last_log_line(message: str, log: bytes) -> str:
    lines = [line.strip() for line in log.decode("utf-8", "replace").splitlines() if line.strip()]
    return f"{message}: {lines[-1][:500]}" if lines else message
