"""The model's records: nodes, functions and instances.

``Function`` and ``Instance`` are the policy views (``policies.interface``) plus the model's
own fields, so a policy reads the records directly in the simulator and in the router; each
driver subclasses them for its own fields (trace codes, gRPC ids, ...).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from policies.features import FunctionStats
from policies.interface import STARTING, FunctionView, InstanceView

INF = math.inf
NAN = math.nan


class Node:
    """A host of instances and its memory accounting.

    ``used_mb`` counts every live instance's memory from its spawn decision until it dies
    (starting, busy and idle alike). ``idle`` holds the node's IDLE instances in the order they
    became idle (least recently used first): the eviction candidates, kept up to date so
    memory pressure costs no scan. ``alive``: the node takes new instances.
    """

    __slots__ = ("address", "alive", "capacity_mb", "idle", "index", "instances", "name", "used_mb")

    def __init__(self, name: str, capacity_mb: float, index: int = 0, address: str | None = None,
                 alive: bool = True) -> None:
        self.name = name
        self.address = address if address is not None else name
        self.index = index
        self.capacity_mb = capacity_mb   # may be inf (unbounded)
        self.used_mb = 0.0
        self.alive = alive
        self.instances: dict[int, Instance] = {}
        self.idle: dict[int, Instance] = {}

    @property
    def free_mb(self) -> float:
        return self.capacity_mb - self.used_mb

    def __repr__(self) -> str:
        return (f"<node {self.name} {'up' if self.alive else 'down'} "
                f"used={self.used_mb:g}/{self.capacity_mb:g} MB>")


class Function(FunctionView):
    """A function: the FunctionView policies see plus the model's fields.

    ``concurrency`` (the view's field) is executions per instance; ``max_instances`` live
    instances at most (the registry's ``max_instances`` config). ``cold_start_ms``: the
    simulator's cold-start time for it, also the prior of its statistics (None live: the
    statistics' default prior until a cold start is measured). ``prewarm_handle``: the driver's handle
    of a pending pre-warm (None: none pending). ``deleted``: no longer deployed (live).
    """

    __slots__ = ("cold_start_ms", "deleted", "prewarm_handle")

    def __init__(self, name: str, app: str = "", memory_mb: float = 128.0, concurrency: int = 1,
                 max_instances: int | None = None, cold_start_ms: float | None = None,
                 stats: FunctionStats | None = None) -> None:
        if stats is None:   # the cold-start time, when known, is the statistics' prior
            stats = FunctionStats() if cold_start_ms is None else FunctionStats(cold_start_prior_ms=cold_start_ms)
        super().__init__(name, app=app, memory_mb=memory_mb, concurrency=concurrency,
                         max_instances=max_instances, stats=stats)
        self.cold_start_ms = 0.0 if cold_start_ms is None else cold_start_ms
        self.prewarm_handle: Any = None
        self.deleted = False


class Instance(InstanceView):
    """An instance (an InstanceView, so policies read it directly).

    ``queue`` holds the driver's request handles. Model fields: ready_ms (INF until the cold
    start ends), died_ms, busy_ms, idle_total_ms, busy_since_ms, prewarmed, evicted,
    node_ref (its Node), running (requests executing, in start order; kept only when
    concurrency > 1, where exec_started_ms follows the oldest one).
    """

    __slots__ = (
        "busy_ms",
        "busy_since_ms",
        "died_ms",
        "evicted",
        "idle_total_ms",
        "node_ref",
        "prewarmed",
        "ready_ms",
        "running",
    )

    def __init__(self, id: int, fn: Function, node: Node, created_ms: float, prewarmed: bool) -> None:
        # All InstanceView fields, set here directly (one call on the spawn path).
        self.id = id
        self.fn = fn
        self.node = node.name
        self.state = STARTING
        self.memory_mb = fn.memory_mb
        self.concurrency = fn.concurrency
        self.active = 0
        self.queue: deque[Any] = deque()
        self.created_ms = created_ms
        self.exec_started_ms: float | None = None
        self.idle_since_ms: float | None = None
        self.invocations = 0
        self.keepalive_until_ms: float | None = None
        self.ready_ms = INF
        self.died_ms = NAN
        self.busy_ms = 0.0
        self.idle_total_ms = 0.0
        self.busy_since_ms = 0.0
        self.prewarmed = prewarmed
        self.evicted = False
        self.node_ref = node
        self.running: list[Any] = []
