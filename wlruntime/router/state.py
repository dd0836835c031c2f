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
from wlruntime.registry.models import ConfigError, FunctionConfig

# Error kinds of an invocation result (wlmodel.kinds.ErrorKind; str values, "none" is success).
OK = ErrorKind.NONE
FUNCTION_ERROR = ErrorKind.FUNCTION_ERROR
TIMEOUT = ErrorKind.TIMEOUT
NODE_ERROR = ErrorKind.NODE_ERROR   # the node failed or vanished mid-request (not the function's fault)
__all__ = ["FUNCTION_ERROR_KINDS", "NODE_ERROR", "OK", "TIMEOUT", "ConfigError", "Function", "Instance", "Pending",
           "Result"]


class Function(ModelFunction):
    """A deployed function: the model's record plus its registry config, built as the registry's
    ``FunctionConfig`` (``from_stored``: the one function config, defaults and the old key
    ``concurrency`` included; a bad stored value raises ``ConfigError`` naming the key).
    ``concurrency`` (the view's field) is executions per instance (1 live: a node runs one
    request per instance at a time); ``max_instances`` the config's cap on live instances."""

    __slots__ = ("abi", "config", "logs", "max_payload_bytes", "metric_children", "settings", "timeout_ms",
                 "version")

    def __init__(self, name: str, version: int, config: dict[str, Any]) -> None:
        settings = FunctionConfig.from_stored(config)
        super().__init__(name, name, memory_mb=float(settings.memory_mb), concurrency=1,
                         max_instances=settings.max_instances)
        self.version = version
        self._configure(config, settings)
        # Recent invocation logs (stderr) and errors, newest last, for `wl logs`.
        self.logs: deque[dict[str, Any]] = deque(maxlen=200)
        self.metric_children: dict[str, Any] = {}

    def _configure(self, config: dict[str, Any], settings: FunctionConfig) -> None:
        self.config = config          # as stored (compared on refresh)
        self.settings = settings
        self.memory_mb = float(settings.memory_mb)
        self.max_instances = settings.max_instances
        self.timeout_ms = settings.timeout_ms
        self.max_payload_bytes = settings.max_payload_bytes
        self.abi = settings.abi or ""

    def update(self, version: int, config: dict[str, Any]) -> None:
        """A new version was deployed: new instances get its config."""
        settings = FunctionConfig.from_stored(config)   # first: a bad config changes nothing
        self.version = version
        self._configure(config, settings)
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
