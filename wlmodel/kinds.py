"""The vocabularies shared by the model, the simulator, the router and the node protocol.

Instance states are ``policies.interface.InstanceState`` (what a policy sees). The outcome
of an executed request is an :class:`ErrorKind`. The protobuf's enums (node.proto) map to
these in one place, ``wlruntime.proto.kinds``.
"""

from __future__ import annotations

from enum import StrEnum

from policies.interface import InstanceState

__all__ = ["ErrorKind", "InstanceState", "RejectReason"]


class ErrorKind(StrEnum):
    """How an executed (or accepted) request ended. ``NONE`` is success. The first group is the
    node's (node.proto ErrorKind, lower case); the rest are the router's own."""

    NONE = "none"
    FUNCTION_ERROR = "function_error"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    TRAP = "trap"
    OUT_OF_FUEL = "out_of_fuel"
    RESPONSE_TOO_LARGE = "response_too_large"
    INTERNAL = "internal"
    NODE_ERROR = "node_error"            # the node failed or vanished mid-request (not the function's fault)
    INIT_ERROR = "init_error"            # the function's instance could not start
    INVALID_REQUEST = "invalid_request"  # the node refused the request itself (e.g. over a limit)

    status: str   # the trace's ``status`` column: "ok" or the kind (set below)


# A plain attribute of each member, not a property: the router reads it for every request
# (a property is a Python call, ~4x the lookup).
for _kind in ErrorKind:
    _kind.status = "ok" if _kind is ErrorKind.NONE else _kind.value
del _kind


# The function's own failures (as opposed to the platform's).
FUNCTION_ERROR_KINDS = frozenset({ErrorKind.FUNCTION_ERROR, ErrorKind.TRAP, ErrorKind.OUT_OF_MEMORY,
                                  ErrorKind.OUT_OF_FUEL, ErrorKind.RESPONSE_TOO_LARGE})


class RejectReason(StrEnum):
    """Why the model rejected a request (a 429 live, unless NO_NODE: 503)."""

    POLICY = "policy"                # the policy answered Reject
    MAX_INSTANCES = "concurrency"    # a spawn at the function's max_instances
    CAPACITY = "capacity"            # no room on the node, even after eviction
    NO_NODE = "no_node"              # no live node at all
