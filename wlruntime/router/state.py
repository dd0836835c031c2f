"""The router's records: functions, instances and pending requests as the policies see them.

``Function`` and ``Instance`` are the platform model's records (``wlmodel.records``, which
subclass the policy views) plus what the router needs to talk to nodes, so a policy reads
the live records exactly as it reads the simulator's. ``Pending`` is a request the router
owes an answer (the model's request handle live); ``Result`` what it ended with.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from policies.interface import RequestView
from wlmodel.kinds import FUNCTION_ERROR_KINDS, ErrorKind
from wlmodel.records import Function as ModelFunction
from wlmodel.records import Instance as ModelInstance
from wlmodel.records import Node
from wlruntime.registry.models import DEFAULT_MAX_INSTANCES

# Error kinds of an invocation result (wlmodel.kinds.ErrorKind; str values, "none" is success).
OK = ErrorKind.NONE
FUNCTION_ERROR = ErrorKind.FUNCTION_ERROR
TIMEOUT = ErrorKind.TIMEOUT
NODE_ERROR = ErrorKind.NODE_ERROR   # the node failed or vanished mid-request (not the function's fault)
__all__ = ["FUNCTION_ERROR_KINDS", "NODE_ERROR", "OK", "TIMEOUT", "Function", "Instance", "Pending", "Result"]

DEFAULT_MEMORY_MB = 128
DEFAULT_TIMEOUT_MS = 3000
DEFAULT_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024


def max_instances_of(config: dict[str, Any]) -> int:
    """The registry config's cap on live instances: ``max_instances``, or its old name
    ``concurrency`` (accepted as an alias; it never meant executions per instance)."""
    value = config.get("max_instances", config.get("concurrency", DEFAULT_MAX_INSTANCES))
    return int(value)


class Function(ModelFunction):
    """A deployed function: the model's record plus its registry config. ``concurrency`` (the
    view's field) is executions per instance (1 live: a node runs one request per instance at
    a time); ``max_instances`` the registry config's cap on live instances."""

    __slots__ = ("abi", "config", "logs", "max_payload_bytes", "metric_children", "timeout_ms", "version")

    def __init__(self, name: str, version: int, config: dict[str, Any]) -> None:
        super().__init__(name, name, memory_mb=float(config.get("memory_mb", DEFAULT_MEMORY_MB)), concurrency=1,
                         max_instances=max_instances_of(config))
        self.version = version
        self.config = config
        self.timeout_ms = int(config.get("timeout_ms", DEFAULT_TIMEOUT_MS))
        self.max_payload_bytes = int(config.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES))
        self.abi = str(config.get("abi", ""))
        # Recent invocation logs (stderr) and errors, newest last, for `wl logs`.
        self.logs: deque[dict[str, Any]] = deque(maxlen=200)
        self.metric_children: dict[str, Any] = {}

    def update(self, version: int, config: dict[str, Any]) -> None:
        """A new version was deployed: new instances get its config."""
        self.version = version
        self.config = config
        self.memory_mb = float(config.get("memory_mb", DEFAULT_MEMORY_MB))
        self.max_instances = max_instances_of(config)
        self.timeout_ms = int(config.get("timeout_ms", DEFAULT_TIMEOUT_MS))
        self.max_payload_bytes = int(config.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES))
        self.abi = str(config.get("abi", ""))
        self.deleted = False


class Instance(ModelInstance):
    """One instance on a node. ``node`` (the view's field) is the node's name; ``node_ref``
    the router's record of it; ``instance_id`` the id the node knows it by."""

    __slots__ = ("cold_start_ms", "instance_id", "spawn_reply", "version")

    def __init__(self, id: int, fn: Function, node_ref: Node, instance_id: str, created_ms: float,
                 prewarmed: bool = False) -> None:
        super().__init__(id, fn, node_ref, created_ms, prewarmed)
        self.instance_id = instance_id
        self.version = fn.version
        self.cold_start_ms: float | None = None
        self.spawn_reply: Any = None


@dataclass(slots=True, eq=False)
class Pending:
    """A request the router accepted and owes an answer (the model's request handle)."""

    view: RequestView
    payload: bytes
    metadata: dict[str, str]
    future: asyncio.Future | None = None   # set when the request waits (queued or cold)
    cold: bool = False                      # an instance was spawned for it (wlmodel's definition)
    attempts: int = 0                       # placements so far (re-routes after failures)
    routed_ms: float = 0.0                  # when it was last routed (arrival or re-route)
    started_ms: float | None = None         # execution start on the policy clock
    cold_start_ms: float = 0.0              # part of its wait spent on its instance's cold start
    done: bool = False                      # answered (or its caller gave up)
    owner: Any = None                       # the instance it is queued on or runs on, if any
    # Sent to the node inside the Spawn of the instance it is queued on (first in its queue,
    # so policies see it there as the simulator shows it); that spawn's outcome decides its fate.
    riding: bool = False
    ran_in_spawn: Any = None                # the InvokeResult of a request that ran inside its Spawn
    rejection: Any = None                   # the RouterError the model's reject effect chose
    run_now: bool = False                   # started at once by its own route: the caller runs it


@dataclass(slots=True)
class Result:
    """What an accepted request ended with."""

    output: bytes = b""
    error: str = OK
    error_message: str = ""
    logs: bytes = b""
    exec_ms: float = 0.0
    wait_ms: float = 0.0
    cold: bool = False
    version: int = 0
    instance: str = ""
    node: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error == OK


class RouterError(Exception):
    """A request the router refuses before running it; ``status`` is the HTTP status."""

    status = 500
    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(RouterError):
    status = 400
    kind = "bad_request"


class FunctionNotFound(RouterError):
    status = 404
    kind = "not_found"


class PayloadTooLarge(RouterError):
    status = 413
    kind = "payload_too_large"

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class Throttled(RouterError):
    status = 429
    kind = "throttled"

    def __init__(self, message: str, retry_after_ms: float, reason: str = "policy") -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms
        self.reason = reason


class NoCapacity(RouterError):
    """No live node can host an instance (all down, or too little memory even after eviction)."""
    status = 503
    kind = "no_capacity"


class Unavailable(RouterError):
    """The registry could not be asked about the function."""
    status = 503
    kind = "unavailable"


class WaitTimeout(RouterError):
    status = 504
    kind = "timeout"
