"""The router's records: functions, instances and pending requests as the policies see them.

``Function`` and ``Instance`` subclass the policy views (``policies.interface``), so a policy
reads the live records directly, exactly as it reads the simulator's (wlsim.engine builds the
same views). Engine-only fields are added in ``__slots__``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from policies.features import FunctionStats
from policies.interface import FunctionView, InstanceView, RequestView

# Error kinds of an invocation result: the node's (node.proto ErrorKind, lower case) plus the
# router's own. "none" is success.
OK = "none"
FUNCTION_ERROR = "function_error"
TIMEOUT = "timeout"
NODE_ERROR = "node_error"        # the node failed or vanished mid-request (not the function's fault)
FUNCTION_ERROR_KINDS = ("function_error", "trap", "out_of_memory", "out_of_fuel", "response_too_large")


class Function(FunctionView):
    """A deployed function: the FunctionView policies see plus its registry config."""

    __slots__ = (
        "abi",
        "config",
        "deleted",
        "logs",
        "max_payload_bytes",
        "metric_children",
        "prewarm_handle",
        "timeout_ms",
        "version",
    )

    def __init__(self, name: str, version: int, config: dict[str, Any]) -> None:
        super().__init__(name, name, memory_mb=float(config.get("memory_mb", 128)), concurrency=1,
                         max_instances=int(config.get("concurrency", 1)), stats=FunctionStats())
        self.version = version
        self.config = config
        self.timeout_ms = int(config.get("timeout_ms", 3000))
        self.max_payload_bytes = int(config.get("max_payload_bytes", 6 * 1024 * 1024))
        self.abi = str(config.get("abi", ""))
        self.prewarm_handle: asyncio.TimerHandle | None = None
        # Recent invocation logs (stderr) and errors, newest last, for `wl logs`.
        self.logs: deque[dict[str, Any]] = deque(maxlen=200)
        self.metric_children: dict[str, Any] = {}
        self.deleted = False

    def update(self, version: int, config: dict[str, Any]) -> None:
        """A new version was deployed: new instances get its config."""
        self.version = version
        self.config = config
        self.memory_mb = float(config.get("memory_mb", 128))
        self.max_instances = int(config.get("concurrency", 1))
        self.timeout_ms = int(config.get("timeout_ms", 3000))
        self.max_payload_bytes = int(config.get("max_payload_bytes", 6 * 1024 * 1024))
        self.abi = str(config.get("abi", ""))
        self.deleted = False


class Instance(InstanceView):
    """One instance on a node. ``node`` (the view's field) is the node's name; ``node_ref``
    the router's record of it; ``instance_id`` the id the node knows it by."""

    __slots__ = ("cold_start_ms", "instance_id", "node_ref", "ready_ms", "spawn_reply", "version")

    def __init__(self, id: int, fn: Function, node_ref: Any, instance_id: str, created_ms: float) -> None:
        super().__init__(id, fn, node_ref.name, fn.memory_mb, 1, created_ms, queue=deque())
        self.node_ref = node_ref
        self.instance_id = instance_id
        self.version = fn.version
        self.ready_ms: float | None = None
        self.cold_start_ms: float | None = None
        self.spawn_reply: Any = None


@dataclass(slots=True)
class Pending:
    """A request the router accepted and owes an answer."""

    view: RequestView
    payload: bytes
    metadata: dict[str, str]
    future: asyncio.Future | None = None   # set when the request waits (queued or cold)
    cold: bool = False                      # it waited for a cold start
    attempts: int = 0                       # placements so far (re-routes after failures)
    started_ms: float | None = None         # execution start on the router's clock
    done: bool = False                      # answered (or its caller gave up)
    owner: Any = None                       # the instance it is queued on, if any
    # Sent to the node inside the Spawn of the instance it is queued on (first in its queue,
    # so policies see it there as the simulator shows it); that spawn's outcome decides its fate.
    riding: bool = False


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
