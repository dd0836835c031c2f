"""wl's platform model: the one I/O-free state machine the simulator and the router drive.

    traces ──> wlmodel (Platform: records, transitions, effects) <── policies
                  ^                                   ^
        wlsim.engine (SimPy-free event kernel)    wlruntime.router (gRPC to nodes)

It imports ``policies`` only (never wlsim, wlruntime, simpy or grpc). See
``wlmodel.platform`` for the rules (what a cold start is, node choice, eviction, invalid
answers), ``wlmodel.schema`` for the trace table's columns and ``wlmodel.kinds`` for the
shared vocabularies.
"""

from wlmodel.kinds import ErrorKind, InstanceState, RejectReason
from wlmodel.platform import (
    ARRIVAL,
    BASE_POLICY,
    EXPIRED,
    FINISHED,
    READY,
    REROUTE,
    Platform,
    PolicyAnswerError,
)
from wlmodel.records import Function, Instance, Node

__all__ = [
    "ARRIVAL", "BASE_POLICY", "EXPIRED", "FINISHED", "READY", "REROUTE",
    "ErrorKind", "Function", "Instance", "InstanceState", "Node", "Platform", "PolicyAnswerError",
    "RejectReason",
]
