"""The one policy interface shared by the simulator (wlsim) and the live router (wlruntime).

A policy answers three questions (DESIGN.md, "Decision points"):

1. ``route(now_ms, request, fn)`` when a request for ``fn`` arrives:
   ``Assign(instance)`` (an idle warm instance, or queue behind a busy one),
   ``SPAWN`` (cold start a new instance and run the request there; ``Spawn(evict=[...])`` kills
   the named idle instances first) or ``Reject(retry_after_ms)``.
2. ``on_idle(now_ms, instance, fn)`` when an instance finished an execution or its
   keep-alive ran out: ``INVOKE`` (run the next request queued on it; only valid when
   ``instance.queue_len > 0``), ``KeepAlive(ms)`` (ask again after ``ms``) or ``KILL``.
   If the answer is not INVOKE while requests are queued on the instance, the engine
   re-routes those requests through ``route``.
3. ``prewarm(now_ms, fn)`` when the last live instance of ``fn`` was killed: ``None``, or a
   delay in ms after which the engine spawns one instance ahead of demand (cancelled if a
   request for ``fn`` arrives first). The pre-warmed instance, once started, is idle and
   the engine asks ``on_idle`` about it.

Plus ``evict(now_ms, need_mb, candidates)`` under memory pressure: which idle instances
(from ``candidates``, all idle, on the node chosen for a spawn) to kill to make room.

Policies are given ``now_ms`` and never read a clock, so they behave the same under
simulated and real time. They import neither wlsim nor wlruntime; numpy is fine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from policies.features import FunctionStats

# ----------------------------------------------------------------------------- states

class InstanceState(StrEnum):
    """An instance's state: the one vocabulary of the model, the simulator, the router and the
    node protocol (mapped to node.proto's enum in wlruntime.proto.kinds). A str: it compares
    and hashes equal to its value ("idle"), so policies may use either."""
    STARTING = "starting"   # cold-starting (memory held from the spawn decision)
    BUSY = "busy"           # at least one execution running
    IDLE = "idle"           # warm, holding memory, running nothing
    DEAD = "dead"

    def __repr__(self) -> str:
        return repr(self.value)   # reads like the plain string it replaces (logs, user policies)


STARTING = InstanceState.STARTING
BUSY = InstanceState.BUSY
IDLE = InstanceState.IDLE
DEAD = InstanceState.DEAD
STATES = (STARTING, BUSY, IDLE, DEAD)


class InstanceView:
    """What a policy sees of one instance. The simulator's and the router's instance
    records subclass this, so there is no per-decision copying.

    Attributes (kept up to date by the engine that owns the instance):
      id: unique within a run; fn: the FunctionView it belongs to; node: node name;
      state: one of STARTING, BUSY, IDLE, DEAD; memory_mb; concurrency (max parallel
      executions); active (executions running now); queue (requests waiting on this
      instance; contents are engine-specific, only ``len`` matters to policies);
      created_ms; exec_started_ms (start of the oldest running execution, or None);
      idle_since_ms (when it last became idle, or None; an engine sets it to ``now`` before
      asking on_idle after an execution, and the built-ins rely on that); invocations
      (completed count);
      keepalive_until_ms (when the current keep-alive runs out, or None).
    """

    __slots__ = (
        "id", "fn", "node", "state", "memory_mb", "concurrency", "active", "queue",
        "created_ms", "exec_started_ms", "idle_since_ms", "invocations", "keepalive_until_ms",
        "__weakref__",
    )

    def __init__(self, id: int, fn: FunctionView, node: str, memory_mb: float,
                 concurrency: int, created_ms: float, queue: Any = None) -> None:
        self.id = id
        self.fn = fn
        self.node = node
        self.state = STARTING
        self.memory_mb = memory_mb
        self.concurrency = concurrency
        self.active = 0
        self.queue = queue if queue is not None else []
        self.created_ms = created_ms
        self.exec_started_ms: float | None = None
        self.idle_since_ms: float | None = None
        self.invocations = 0
        self.keepalive_until_ms: float | None = None

    @property
    def queue_len(self) -> int:
        return len(self.queue)

    @property
    def free_slots(self) -> int:
        return self.concurrency - self.active if self.state in (IDLE, BUSY) else 0

    def elapsed_ms(self, now_ms: float) -> float:
        """ms since the current (oldest running) execution started; 0 when not executing."""
        return now_ms - self.exec_started_ms if self.exec_started_ms is not None else 0.0

    def idle_ms(self, now_ms: float) -> float:
        """ms this instance has been idle; 0 when not idle."""
        return now_ms - self.idle_since_ms if self.state == IDLE and self.idle_since_ms is not None else 0.0

    def __repr__(self) -> str:
        return f"<instance {self.id} of {self.fn.name} {self.state} active={self.active} q={len(self.queue)}>"


class FunctionView:
    """What a policy sees of one function: its config, live instances and online statistics.

    ``concurrency``: executions one instance runs at once; ``max_instances``: live instances
    at most (None: no cap; the registry config's ``max_instances``, alias ``concurrency``).

    ``instances`` maps instance id -> InstanceView for every live (non-dead) instance, in
    creation order. ``idle`` lists the IDLE ones, the most recently freed last (so
    ``idle[-1]`` is the warmest). The engine keeps both up to date.
    """

    __slots__ = ("name", "app", "memory_mb", "concurrency", "max_instances", "stats",
                 "instances", "idle", "policy_state")

    def __init__(self, name: str, app: str = "", memory_mb: float = 128.0, concurrency: int = 1,
                 max_instances: int | None = None, stats: FunctionStats | None = None) -> None:
        self.name = name
        self.app = app or name
        self.memory_mb = memory_mb
        self.concurrency = concurrency
        self.max_instances = max_instances
        self.stats = stats if stats is not None else FunctionStats()
        self.instances: dict[int, InstanceView] = {}
        self.idle: list[InstanceView] = []
        # Free slot for a policy's per-function state (e.g. a histogram); engines never touch it.
        self.policy_state: Any = None

    @property
    def live_count(self) -> int:
        return len(self.instances)

    def __repr__(self) -> str:
        return f"<function {self.name} live={len(self.instances)} idle={len(self.idle)}>"


@dataclass(slots=True)
class RequestView:
    """The request a route decision is about."""
    id: int
    function: str
    arrival_ms: float
    payload_bytes: int = 0
    features: Mapping[str, float] | None = None


# -------------------------------------------------------------------------- decisions

class Assign:
    """Run the request on ``instance`` now if it has a free slot, else queue it there.

    Assign and KeepAlive are built on every decision, so they are plain slotted classes
    (a frozen dataclass costs ~4x more to construct); treat them as immutable."""
    __slots__ = ("instance",)

    def __init__(self, instance: InstanceView) -> None:
        self.instance = instance

    def __eq__(self, other: object) -> bool:
        return type(other) is Assign and other.instance is self.instance

    def __hash__(self) -> int:
        return hash((Assign, id(self.instance)))

    def __repr__(self) -> str:
        return f"Assign(instance={self.instance!r})"


@dataclass(frozen=True, slots=True)
class Spawn:
    """Cold-start a new instance for the request (optionally on a given node).

    ``evict``: idle instances (of any function) to kill first, e.g. to stay under a memory cap
    of the policy's own; the platform checks that each is a live idle instance (else the answer
    is invalid) and kills them all before it places the new one."""
    node: str | None = None
    evict: tuple[InstanceView, ...] = ()

    def __post_init__(self) -> None:
        if type(self.evict) is not tuple:    # a list reads naturally; keep the answer hashable
            object.__setattr__(self, "evict", tuple(self.evict))


@dataclass(frozen=True, slots=True)
class Reject:
    """Throttle the request (HTTP 429 live)."""
    retry_after_ms: float = 1000.0


@dataclass(frozen=True, slots=True)
class Invoke:
    """Run the next request queued on this instance."""


class KeepAlive:
    """Stay idle (holding memory) for ``ms``, then ask on_idle again."""
    __slots__ = ("ms",)

    def __init__(self, ms: float) -> None:
        if not (ms > 0 and ms < math.inf):  # also rejects NaN
            raise ValueError(f"KeepAlive ms must be positive and finite, got {ms!r}")
        self.ms = ms

    def __eq__(self, other: object) -> bool:
        return type(other) is KeepAlive and other.ms == self.ms

    def __hash__(self) -> int:
        return hash((KeepAlive, self.ms))

    def __repr__(self) -> str:
        return f"KeepAlive(ms={self.ms!r})"


@dataclass(frozen=True, slots=True)
class Kill:
    """Free the instance now."""


SPAWN = Spawn()
REJECT = Reject()
INVOKE = Invoke()
KILL = Kill()

RouteDecision = Assign | Spawn | Reject
IdleDecision = Invoke | KeepAlive | Kill


# ------------------------------------------------------------------------- cost model

@dataclass(frozen=True, slots=True)
class CostWeights:
    """Prices that turn a run into one cost figure, shared by results and the oracle.

    Defaults: AWS Lambda's x86 prices (per GB-s of memory held, per request) and a value
    of user latency (USD per second of added wait + cold start across all requests), so
    that one 500 ms cold start is worth about 30 GB-s of idle memory. A rejected request is
    priced like one second of added latency, so that rejecting never looks cheaper than serving.
    """
    gb_s_usd: float = 0.0000166667
    request_usd: float = 0.0000002
    latency_usd_per_s: float = 0.001
    reject_usd: float = 0.001


# ----------------------------------------------------------------------------- policy

class PolicySpecError(ValueError):
    """A policy spec that names nothing loadable, or parameters a policy refuses; the message
    says what is wrong. Raised by the registry and by policy constructors."""


class Policy:
    """Base class. Subclasses override what they decide differently.

    Class attributes:
      name: the registry name.
      needs_future: True for offline policies (the oracle) that need ``prepare(trace)``
        with the whole trace; the live router refuses them.
    """

    name: ClassVar[str] = "base"
    needs_future: ClassVar[bool] = False

    def prepare(self, trace: Any) -> None:
        """Called once before a simulation with the whole trace table (a pandas DataFrame
        with the canonical columns). Only offline policies should use it."""

    def route(self, now_ms: float, request: RequestView, fn: FunctionView) -> RouteDecision:
        """Default: the warmest idle instance, else a cold start."""
        if fn.idle:
            return Assign(fn.idle[-1])
        return SPAWN

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        """Default: serve what is queued, else die."""
        return INVOKE if instance.queue else KILL

    def prewarm(self, now_ms: float, fn: FunctionView) -> float | None:
        """Default: no pre-warming."""
        return None

    def evict(self, now_ms: float, need_mb: float,
              candidates: Sequence[InstanceView]) -> list[InstanceView]:
        """Default: least recently used idle instances first until ``need_mb`` is freed.
        Returning too little means the spawn is rejected."""
        chosen: list[InstanceView] = []
        freed = 0.0
        for inst in sorted(candidates, key=lambda i: i.idle_since_ms or 0.0):
            if freed >= need_mb:
                break
            chosen.append(inst)
            freed += inst.memory_mb
        return chosen

    def describe(self) -> dict[str, Any]:
        """Parameters for reports; subclasses add theirs."""
        return {"name": self.name}


def warm_instance_with_slot(fn: FunctionView) -> InstanceView | None:
    """The warmest idle instance, else a busy one that still has a free slot (concurrency > 1)."""
    if fn.idle:
        return fn.idle[-1]
    for inst in fn.instances.values():
        if inst.state == BUSY and inst.active < inst.concurrency:
            return inst
    return None


def iter_busy(fn: FunctionView) -> Iterable[InstanceView]:
    return (i for i in fn.instances.values() if i.state == BUSY)
