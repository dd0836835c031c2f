"""The node's instance table and lifecycle, independent of gRPC (server.py maps RPCs onto it).

Instance lifecycle::

    Spawn ──> IDLE ──Invoke──> BUSY ──done──> IDLE ──KeepAlive(ms)──> KEPT_ALIVE ──timer──> ask
               │                                │                        │                  │
               └── no word for idle_grace_ms ───┴──────── Kill ──────────┴──> DEAD <── kill ┘

"ask" = Scheduler.OnIdle(reason KEEPALIVE_EXPIRED) when a scheduler is configured (else kill);
the directive is obeyed: keep alive again, kill, or run the request it carries and ask again
(reason FINISHED, with the result). An instance left IDLE after a spawn or a request with no
instruction for ``idle_grace_ms`` is treated as expired too, so a lost router cannot leak memory.

Each instance runs one request at a time (like a Lambda execution environment; a wasmtime
Store must not be entered concurrently). Concurrency comes from many instances; the function
config's ``concurrency`` is the router's cap on instances, reported back in SpawnReply.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from wlcommon.files import atomic_write
from wlruntime.names import SHA256_RE
from wlruntime.wasm.cache import MEMORY, CompiledCache
from wlruntime.wasm.runners import (
    INTERNAL,
    CompiledFunction,
    ConfigError,
    FunctionConfig,
    Invocation,
    Outcome,
)
from wlruntime.wasm.validate import ABI_WASI_COMMAND, InvalidWasm

log = logging.getLogger("wlruntime.node")

# Instance states: the names of node.proto's InstanceState.
STARTING = "STARTING"
IDLE = "IDLE"
BUSY = "BUSY"
KEPT_ALIVE = "KEPT_ALIVE"
DEAD = "DEAD"

# Inline attempts (NodeRuntime.try_run_inline): interrupted after 2 epoch ticks (2-4 ms), and
# only tried for functions whose recent runs (an exponentially weighted mean of exec_ms, weight
# INLINE_EWMA_WEIGHT for the newest) took less than INLINE_MAX_RECENT_MS.
INLINE_BUDGET_TICKS = 2
INLINE_MAX_RECENT_MS = 1.0
INLINE_EWMA_WEIGHT = 0.2

# Idle reasons (node.proto IdleReason).
FINISHED = "FINISHED"
KEEPALIVE_EXPIRED = "KEEPALIVE_EXPIRED"


class NodeError(Exception):
    """A request the node refuses; ``code`` is a grpc.StatusCode name (e.g. "NOT_FOUND")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class SpawnResult:
    instance_id: str
    function: str
    version: int
    sha256: str
    config: FunctionConfig
    cold_start_ms: float
    fetch_ms: float
    compile_ms: float
    instantiate_ms: float
    code_cached: bool
    compile_source: str

    @property
    def compile_cached(self) -> bool:
        return self.compile_source != "compiled"


@dataclass
class Directive:
    """What the scheduler answered: exactly one of keep_alive_ms / kill / invocation."""

    keep_alive_ms: int | None = None
    invocation: Invocation | None = None

    @property
    def kill(self) -> bool:
        return self.keep_alive_ms is None and self.invocation is None


# scheduler(event) -> Directive; raises on failure (the node then kills the instance).
SchedulerCall = Callable[["IdleEventInfo"], Directive]


@dataclass
class IdleEventInfo:
    instance_id: str
    function: str
    version: int
    reason: str
    idle_since_unix_ms: int
    result: Outcome | None = None
    request_id: str = ""


@dataclass
class Instance:
    instance_id: str
    function: CompiledFunction
    runner: Any
    memory_mb: int
    state: str = IDLE
    invocations: int = 0
    busy_since: float = 0.0  # time.monotonic()
    idle_since: float = field(default_factory=time.monotonic)
    idle_since_unix_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    keep_alive_deadline: float = 0.0
    # Bumped on every state change: a timer or scheduler answer for an older epoch is stale.
    epoch: int = 0
    kill_requested: bool = False
    # When an IDLE instance left without instructions counts as expired (0: no grace running),
    # and whether a grace timer entry is queued. One entry serves many requests: when it fires
    # early (the instance ran requests meanwhile) it is queued again for the current grace_due.
    grace_due: float = 0.0
    grace_queued: bool = False

    def set_idle(self, now: float) -> None:
        self.state = IDLE
        self.idle_since = now
        self.idle_since_unix_ms = int(time.time() * 1000)
        self.epoch += 1


# The epoch of a timer entry that is an idle-grace timer rather than a keep-alive timer.
GRACE = -1


class _Timers:
    """One thread for every instance's keep-alive timer (a heap of deadlines, lazily cancelled)."""

    def __init__(self, fire: Callable[[str, int], None]) -> None:
        self._fire = fire
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="node-keepalive-timers", daemon=True)
        self._thread.start()

    def schedule(self, deadline: float, instance_id: str, epoch: int) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._seq), instance_id, epoch))
            # The thread sleeps until the earliest deadline: wake it only if that changed.
            if self._heap[0][0] == deadline:
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, instance_id, epoch = heapq.heappop(self._heap)
            self._fire(instance_id, epoch)


class NodeRuntime:
    """Hosts instances; thread-safe. ``registry`` is a RegistryClient-like object with
    ``get(name, version) -> dict`` and ``fetch(sha256) -> FetchedCode``."""

    def __init__(
        self,
        node_id: str,
        registry: Any,
        memory_mb: int,
        cache_dir: str | Path | None,
        workers: int = 4,
        idle_grace_ms: int = 30_000,
        scheduler: SchedulerCall | None = None,
        metrics: Any = None,
    ) -> None:
        self.node_id = node_id
        self.registry = registry
        self.memory_capacity_mb = memory_mb
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.compiled_cache = CompiledCache(self.cache_dir / "compiled" if self.cache_dir else None)
        self.workers = workers
        self.idle_grace_ms = idle_grace_ms
        self.scheduler = scheduler
        self.metrics = metrics
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._instances: dict[str, Instance] = {}
        self._reserved_mb = 0
        self._starting: set[str] = set()  # ids of spawns in progress (memory reserved)
        self._killed: OrderedDict[str, str] = OrderedDict()  # recent tombstones: id -> why
        self._metadata: dict[tuple[str, int], dict] = {}  # immutable versions only
        self._registry_id: str | None = None  # set by refresh_registry_identity()
        self._identity_asked = False
        self._functions: dict[tuple[str, int, str], CompiledFunction] = {}
        # wasm runs here, never on the gRPC server's event loop, so Status/Health/KeepAlive always answer.
        self.wasm_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wasm")
        # scheduler conversations (they may wait on OnIdle and on the wasm pool)
        self._control_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="node-control")
        self._timers = _Timers(self._on_timer)

    # ---- spawn ---------------------------------------------------------------------------

    def spawn_is_quick(self, function: str, version: str) -> bool:
        """Whether ``spawn(function, version)`` would do no I/O and run no guest code (a WASI
        command whose metadata and compiled code this node holds): then the server's event loop
        runs it itself instead of handing it to a thread (tens of microseconds)."""
        if not version.isdigit():
            return False  # "latest" is asked of the registry
        meta = self._metadata.get((function, int(version)))
        if meta is None:
            return False
        compiled = self._functions.get((function, int(version), meta["sha256"]))
        return compiled is not None and compiled.config.abi == ABI_WASI_COMMAND and not compiled.config.allow_fs

    def spawn(self, function: str, version: str = "", instance_id: str = "") -> SpawnResult:
        started = time.perf_counter()
        meta = self._function_metadata(function, version or "latest")
        resolved_version = int(meta["version"])
        try:
            config = FunctionConfig.from_stored(meta.get("config") or {})
        except ConfigError as error:
            raise NodeError("FAILED_PRECONDITION", f"{function}@{resolved_version}: {error}") from None
        instance_id = instance_id or f"{function}-{uuid.uuid4().hex[:12]}"
        self._reserve(instance_id, config.memory_mb)
        try:
            fetch_ms = (time.perf_counter() - started) * 1000.0  # metadata lookup so far
            compiled, code_cached, code_fetch_ms, compile_ms, source = self._compiled_function(
                function, resolved_version, meta["sha256"], config)
            fetch_ms += code_fetch_ms
            t_inst = time.perf_counter()
            try:
                runner = compiled.new_instance(instance_id)
            except Exception as error:  # noqa: BLE001 (instantiation runs guest code: any failure is its own)
                raise NodeError("FAILED_PRECONDITION",
                                f"{function}@{resolved_version} failed to instantiate: {error}") from None
            instantiate_ms = (time.perf_counter() - t_inst) * 1000.0
        except BaseException:
            self._release(instance_id, config.memory_mb)
            raise
        instance = Instance(instance_id, compiled, runner, config.memory_mb)
        with self._lock:
            self._starting.discard(instance_id)
            self._instances[instance_id] = instance
            self._arm_grace(instance, instance.idle_since)
        result = SpawnResult(
            instance_id=instance_id, function=function, version=resolved_version, sha256=meta["sha256"],
            config=config, cold_start_ms=(time.perf_counter() - started) * 1000.0, fetch_ms=fetch_ms,
            compile_ms=compile_ms, instantiate_ms=instantiate_ms, code_cached=code_cached, compile_source=source,
        )
        if self.metrics:
            self.metrics.cold_start(result)
        log.info("spawned %s (%s@%d) in %.1f ms [code %s, compile %s]", instance_id, function,
                 resolved_version, result.cold_start_ms, "cached" if code_cached else "fetched", source)
        return result

    def _function_metadata(self, function: str, version: str) -> dict:
        from wlruntime.registry.client import RegistryError

        if version != "latest" and not version.isdigit():
            raise NodeError("INVALID_ARGUMENT", f"version must be a number or 'latest', got {version!r}")
        if version != "latest":
            # name@version never changes in a registry: remembered in memory, and on disk for the
            # next node process (a fresh node then spawns from its caches without a request).
            key = (function, int(version))
            cached = self._metadata.get(key) or self._read_metadata_file(function, int(version))
            if cached is not None:
                self._metadata[key] = cached
                return cached
        try:
            meta = self.registry.get(function, version)
        except RegistryError as error:
            raise _registry_error(error, f"{function}@{version}") from None
        self._metadata[(function, int(meta["version"]))] = meta
        self._write_metadata_file(function, meta)
        return meta

    # ---- metadata cache on disk ------------------------------------------------------------
    # <cache dir>/meta/<registry id>/<name>@<version>.json, keyed by the registry's id: a
    # registry made anew at the same address numbers versions from 1 again.

    def refresh_registry_identity(self) -> None:
        """Learn the registry's id (one request), remembered on disk per registry address; when
        the registry cannot be reached, the last id seen at that address is used."""
        remembered = self._identity_file()
        identity = None
        asker = getattr(self.registry, "identity", None)
        if asker is not None:
            try:
                identity = asker()
            except Exception as error:  # noqa: BLE001 (unreachable registry: fall back to what we knew)
                log.info("registry identity unknown (%s): using the last one seen", error)
        if identity is not None and _REGISTRY_ID.match(identity):
            if remembered is not None:
                atomic_write(remembered, identity, mode=0o600)
        elif remembered is not None and remembered.is_file():
            identity = remembered.read_text().strip()
            identity = identity if _REGISTRY_ID.match(identity) else None
        else:
            identity = None
        self._registry_id = identity

    def _identity_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        address = str(getattr(self.registry, "base_url", ""))
        return self.cache_dir / "meta" / f"registry-{hashlib.sha256(address.encode()).hexdigest()[:16]}.id"

    def _metadata_file(self, function: str, version: int) -> Path | None:
        if self.cache_dir is None or self._registry_id is None:
            return None
        return self.cache_dir / "meta" / self._registry_id / f"{quote(function, safe='')}@{version}.json"

    def _read_metadata_file(self, function: str, version: int) -> dict | None:
        path = self._metadata_file(function, version)
        if path is None:
            return None
        try:
            meta = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning("ignoring unreadable metadata cache entry %s: %s", path, error)
            return None
        valid = (isinstance(meta, dict) and meta.get("name") == function and meta.get("version") == version
                 and isinstance(meta.get("sha256"), str) and SHA256_RE.match(meta["sha256"])
                 and isinstance(meta.get("config"), dict))
        if not valid:
            log.warning("ignoring malformed metadata cache entry %s", path)
            return None
        return meta

    def _write_metadata_file(self, function: str, meta: dict) -> None:
        if self._registry_id is None and self.cache_dir is not None and not self._identity_asked:
            self._identity_asked = True  # a node that started while the registry was down: learn it now
            self._control_pool.submit(self.refresh_registry_identity)
        path = self._metadata_file(function, int(meta["version"]))
        if path is None or meta.get("name") != function:
            return
        try:
            atomic_write(path, json.dumps(meta), mode=0o600)
        except OSError as error:  # a full or read-only disk costs a request next time, nothing else
            log.warning("cannot write metadata cache entry %s: %s", path, error)

    def _compiled_function(self, name: str, version: int, sha256: str, config: FunctionConfig):
        """(CompiledFunction, code_cached, code_fetch_ms, compile_ms, compile_source)."""
        from wlruntime.registry.client import RegistryError

        key = (name, version, sha256)
        compiled = self._functions.get(key)
        if compiled is not None:
            return compiled, True, 0.0, 0.0, MEMORY
        fetch = {"ms": 0.0, "cached": True}

        def load_code() -> bytes:
            t = time.perf_counter()
            try:
                fetched = self.registry.fetch(sha256)
            except RegistryError as error:
                raise _registry_error(error, f"code {sha256[:12]} of {name}@{version}") from None
            fetch["ms"] = (time.perf_counter() - t) * 1000.0
            fetch["cached"] = fetched.from_cache
            return fetched.data

        try:
            cached = self.compiled_cache.get(sha256, config.abi, config.fuel is not None, load_code)
        except InvalidWasm as error:
            raise NodeError("FAILED_PRECONDITION", f"{name}@{version} cannot run: {error}") from None
        compiled = CompiledFunction(name, version, config, cached.artifact)
        self._functions[key] = compiled
        return compiled, fetch["cached"], fetch["ms"], max(cached.compile_ms - fetch["ms"], 0.0), cached.source

    def _reserve(self, instance_id: str, memory_mb: int) -> None:
        with self._lock:
            if instance_id in self._instances or instance_id in self._starting:
                raise NodeError("ALREADY_EXISTS", f"instance {instance_id!r} already exists on node {self.node_id}")
            free = self.memory_capacity_mb - self._reserved_mb
            if memory_mb > free:
                raise NodeError("RESOURCE_EXHAUSTED", f"node {self.node_id} has {free} MB free, the function "
                                f"needs {memory_mb} MB (capacity {self.memory_capacity_mb} MB)")
            self._reserved_mb += memory_mb
            self._starting.add(instance_id)
            self._killed.pop(instance_id, None)

    def _release(self, instance_id: str, memory_mb: int) -> None:
        """Undo ``_reserve`` for a spawn that failed."""
        with self._lock:
            self._reserved_mb -= memory_mb
            self._starting.discard(instance_id)

    # ---- Do ------------------------------------------------------------------------------

    def invoke(self, instance_id: str, invocation: Invocation) -> tuple[Outcome, str]:
        """Run a request on an idle instance; returns (outcome, state afterwards). Blocks until the
        request is done; the server's async path is ``begin_invoke`` + ``run_invocation``."""
        instance = self.begin_invoke(instance_id, invocation)
        return self.wasm_pool.submit(self.run_invocation, instance, invocation).result()

    def begin_invoke(self, instance_id: str, invocation: Invocation) -> Instance:
        """Claim an idle instance for ``invocation`` (it becomes BUSY); ``run_invocation`` must follow."""
        with self._lock:
            instance = self._get(instance_id)
            if instance.state == BUSY:
                raise NodeError("FAILED_PRECONDITION", f"instance {instance_id} is busy with another request "
                                "(an instance runs one request at a time)")
            limit = instance.function.config.max_payload_bytes
            if len(invocation.payload) > limit:
                raise NodeError("INVALID_ARGUMENT", f"payload of {len(invocation.payload)} bytes exceeds "
                                f"{instance.function.name}'s max_payload_bytes ({limit})")
            instance.state = BUSY
            instance.busy_since = time.monotonic()
            instance.grace_due = 0.0
            instance.epoch += 1
        return instance

    def try_run_inline(self, instance: Instance, invocation: Invocation) -> tuple[Outcome, str] | None:
        """Run a claimed instance's request on the calling thread if it finishes within
        ``INLINE_BUDGET_TICKS`` epoch ticks (2-4 ms); ``None`` when it cannot (then
        ``run_invocation`` must follow, on the pool).

        For the node's event loop: handing a request to a pool thread and the answer back costs
        more than a trivial function's whole run. Only invocations that can be interrupted and
        run again without a trace (ABI 1 without a filesystem) are tried, and only for functions
        whose recent runs were short (``INLINE_MAX_RECENT_MS``): a slow function goes to the pool
        after its first interrupted attempt, while an attempt interrupted only because the
        thread was descheduled (a busy machine) leaves a fast function inline. Functions that can
        sleep in a host call (``CompiledFunction.may_block``) never run inline: the budget cannot
        interrupt a sleep, which blocked the node's event loop (every spawn and request on the
        node waited) for as long as the function slept, before running it again on the pool."""
        function = instance.function
        if not instance.runner.can_retry or function.may_block or function.recent_exec_ms > INLINE_MAX_RECENT_MS:
            return None
        try:
            outcome = instance.runner.try_invoke(invocation, INLINE_BUDGET_TICKS)
        except Exception:  # a node bug: let the pool run (and report) it
            log.exception("inline invocation on %s failed inside the node", instance.instance_id)
            return None
        if outcome is None:  # the pool run that follows records how long it really takes
            if self.metrics:
                self.metrics.inline_retry(function.name)
            return None
        return self._finish_invocation(instance, outcome)

    def run_invocation(self, instance: Instance, invocation: Invocation) -> tuple[Outcome, str]:
        """Run a claimed instance's request (on a ``wasm_pool`` thread) and make the instance idle
        again (or free it, if it was killed meanwhile); returns (outcome, state afterwards).

        Everything after the claim happens here, so the instance is released even when the
        caller stopped waiting (a cancelled RPC)."""
        try:
            outcome = instance.runner.invoke(invocation)
        except Exception as error:  # a node bug, not the function's fault: answer anyway
            log.exception("invocation on %s failed inside the node", instance.instance_id)
            outcome = Outcome(error=INTERNAL, error_message=f"node error: {error}")
        return self._finish_invocation(instance, outcome)

    def _finish_invocation(self, instance: Instance, outcome: Outcome) -> tuple[Outcome, str]:
        function = instance.function
        function.recent_exec_ms += INLINE_EWMA_WEIGHT * (outcome.exec_ms - function.recent_exec_ms)
        with self._lock:
            instance.invocations += 1
            if instance.kill_requested:
                self._free(instance, "killed")
            else:
                now = time.monotonic()
                instance.set_idle(now)
                self._arm_grace(instance, now)
            state = instance.state
            if self.metrics:   # under the lock: the per-invocation tallies have none of their own
                self.metrics.invocation(instance.function.name, outcome)
        return outcome, state

    def keep_alive(self, instance_id: str, ms: int, expected_epoch: int | None = None) -> str:
        with self._lock:
            instance = self._get(instance_id)
            if expected_epoch is not None and instance.epoch != expected_epoch:
                return instance.state  # stale scheduler answer: something newer happened
            if instance.state == BUSY:
                raise NodeError("FAILED_PRECONDITION", f"instance {instance_id} is busy; keep-alive applies "
                                "to idle instances (send it after the request finishes)")
            instance.state = KEPT_ALIVE
            instance.epoch += 1
            instance.grace_due = 0.0
            instance.keep_alive_deadline = time.monotonic() + ms / 1000.0
            self._timers.schedule(instance.keep_alive_deadline, instance_id, instance.epoch)
            return instance.state

    def kill(self, instance_id: str, reason: str = "killed", expected_epoch: int | None = None) -> str:
        with self._lock:
            instance = self._get(instance_id)
            if expected_epoch is not None and instance.epoch != expected_epoch:
                return instance.state
            if instance.state == BUSY:
                instance.kill_requested = True  # freed when its request finishes
                self._killed[instance_id] = reason
                return DEAD
            self._free(instance, reason)
            return DEAD

    def _get(self, instance_id: str) -> Instance:
        instance = self._instances.get(instance_id)
        if instance is None or instance.kill_requested:
            why = self._killed.get(instance_id)
            if why:
                raise NodeError("NOT_FOUND", f"instance {instance_id} is dead ({why}) on node {self.node_id}")
            raise NodeError("NOT_FOUND", f"no instance {instance_id!r} on node {self.node_id}")
        return instance

    def _free(self, instance: Instance, reason: str) -> None:
        """Remove a (non-busy) instance; caller holds the lock."""
        instance.state = DEAD
        instance.epoch += 1
        self._instances.pop(instance.instance_id, None)
        self._reserved_mb -= instance.memory_mb
        self._killed[instance.instance_id] = reason
        while len(self._killed) > 10_000:
            self._killed.popitem(last=False)
        instance.runner.close()
        log.info("instance %s freed (%s)", instance.instance_id, reason)

    # ---- idle timers and the scheduler ---------------------------------------------------

    def _arm_grace(self, instance: Instance, now: float) -> None:
        """Start the idle grace period of an instance that just became IDLE (caller holds the lock)."""
        instance.grace_due = now + self.idle_grace_ms / 1000.0
        if not instance.grace_queued:
            instance.grace_queued = True
            self._timers.schedule(instance.grace_due, instance.instance_id, GRACE)

    def _on_timer(self, instance_id: str, epoch: int) -> None:
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                return
            if epoch == GRACE:
                instance.grace_queued = False
                if instance.state != IDLE or not instance.grace_due:
                    return  # busy, kept alive, being asked about or dead: no grace running
                if instance.grace_due > time.monotonic():  # it ran requests since: wait for the new due
                    instance.grace_queued = True
                    self._timers.schedule(instance.grace_due, instance_id, GRACE)
                    return
            elif instance.epoch != epoch or instance.state != KEPT_ALIVE:
                return  # cancelled: the instance moved on since the timer was set
            epoch = self._begin_asking(instance)
        self._control_pool.submit(self._ask_scheduler, instance, epoch, KEEPALIVE_EXPIRED, None, "")

    def _begin_asking(self, instance: Instance) -> int:
        """Mark an idle instance as waiting for the scheduler's answer (caller holds the lock).

        Bumping the epoch cancels pending timers; an answer is applied only if nothing else
        (a Do from the router) happened to the instance meanwhile.
        """
        instance.state = IDLE
        instance.grace_due = 0.0
        instance.epoch += 1
        return instance.epoch

    def _ask_scheduler(self, instance: Instance, epoch: int, reason: str, result: Outcome | None,
                       request_id: str) -> None:
        """The seed's loop: ask what next, obey, and ask again after running a request."""
        if self.scheduler is None:
            self._kill_quietly(instance.instance_id, "keep-alive expired, no scheduler", epoch)
            return
        while True:
            event = IdleEventInfo(instance.instance_id, instance.function.name, instance.function.version,
                                  reason, instance.idle_since_unix_ms, result, request_id)
            try:
                directive = self.scheduler(event)
            except Exception as error:  # noqa: BLE001 (whatever the scheduler call raised, the answer is: kill)
                log.warning("scheduler OnIdle failed for %s (%s): killing it", instance.instance_id, error)
                self._kill_quietly(instance.instance_id, f"scheduler unreachable: {error}", epoch)
                return
            if directive.invocation is None:
                try:
                    if directive.keep_alive_ms is not None:
                        self.keep_alive(instance.instance_id, directive.keep_alive_ms, expected_epoch=epoch)
                    else:
                        self.kill(instance.instance_id, "scheduler said kill", expected_epoch=epoch)
                except NodeError:
                    pass  # killed meanwhile
                return
            request_id = directive.invocation.request_id
            try:
                result, _ = self.invoke(instance.instance_id, directive.invocation)
            except NodeError as error:  # killed or busy meanwhile: the caller still gets an answer
                result = Outcome(error=INTERNAL, error_message=error.message)
            reason = FINISHED
            with self._lock:
                still_idle = instance.instance_id in self._instances and instance.state == IDLE
                if still_idle:
                    epoch = self._begin_asking(instance)
            if not still_idle:
                self._report_only(IdleEventInfo(instance.instance_id, instance.function.name,
                                                instance.function.version, reason, instance.idle_since_unix_ms,
                                                result, request_id))
                return

    def _report_only(self, event: IdleEventInfo) -> None:
        """Deliver a result whose instance is gone or taken; the answer no longer applies."""
        try:
            self.scheduler(event)
        except Exception as error:  # noqa: BLE001 (a lost report is logged, never fatal)
            log.warning("could not report request %s to the scheduler: %s", event.request_id, error)

    def _kill_quietly(self, instance_id: str, reason: str, epoch: int) -> None:
        try:
            self.kill(instance_id, reason, expected_epoch=epoch)
        except NodeError:
            pass

    # ---- status --------------------------------------------------------------------------

    def status(self) -> dict:
        now = time.monotonic()
        with self._lock:
            instances = []
            for inst in self._instances.values():
                idle = inst.state in (IDLE, KEPT_ALIVE)
                instances.append({
                    "instance_id": inst.instance_id,
                    "function": inst.function.name,
                    "version": inst.function.version,
                    "abi": inst.function.config.abi,
                    "state": inst.state,
                    "memory_mb": inst.memory_mb,
                    "invocations": inst.invocations,
                    "busy_ms": (now - inst.busy_since) * 1000.0 if inst.state == BUSY else 0.0,
                    "idle_ms": (now - inst.idle_since) * 1000.0 if idle else 0.0,
                    "keep_alive_remaining_ms": max(0.0, (inst.keep_alive_deadline - now) * 1000.0)
                    if inst.state == KEPT_ALIVE else 0.0,
                })
            return {
                "node_id": self.node_id,
                "memory_capacity_mb": self.memory_capacity_mb,
                "memory_used_mb": self._reserved_mb,
                "instances": instances,
                "uptime_s": now - self.started,
                "workers": self.workers,
            }

    def instance_counts(self) -> dict[str, int]:
        counts = {IDLE: 0, BUSY: 0, KEPT_ALIVE: 0}
        with self._lock:
            for inst in self._instances.values():
                counts[inst.state] = counts.get(inst.state, 0) + 1
            counts["memory_used_mb"] = self._reserved_mb
        return counts

    def close(self) -> None:
        self._timers.stop()
        with self._lock:
            for instance in list(self._instances.values()):
                if instance.state != BUSY:
                    self._free(instance, "node shutting down")
        self._control_pool.shutdown(wait=False, cancel_futures=True)
        self.wasm_pool.shutdown(wait=False, cancel_futures=True)


_REGISTRY_ID = re.compile(r"^[0-9a-f]{8,64}$")




def _registry_error(error: Any, what: str) -> NodeError:
    status = getattr(error, "status", None)
    message = getattr(error, "message", str(error))
    if status == 404:
        return NodeError("NOT_FOUND", f"{what}: {message}")
    if status in (400, 422):
        return NodeError("INVALID_ARGUMENT", f"{what}: {message}")
    if status in (401, 403):
        return NodeError("PERMISSION_DENIED", f"registry refused {what}: {message}")
    return NodeError("UNAVAILABLE", f"registry: {what}: {message}")
