"""The one mapping between node.proto's enums and wl's vocabularies (``wlmodel.kinds``).

``error_kind(pb_value)``: an InvokeResult's ``ErrorKind`` as a ``wlmodel.kinds.ErrorKind``;
``pb_error_kind(kind)`` the other way (kinds the protocol lacks map to INTERNAL).
``instance_state(pb_value)``: a node's InstanceState as the policies' ``InstanceState``
(KEPT_ALIVE is IDLE: kept alive is idle with a deadline; UNSPECIFIED is None).
"""

from __future__ import annotations

from wlmodel.kinds import ErrorKind, InstanceState
from wlruntime.proto import node_pb2 as pb

_FROM_PB = {number: (ErrorKind.NONE if name == "ERROR_KIND_NONE" else ErrorKind(name.lower()))
            for name, number in pb.ErrorKind.items()}
_TO_PB = {kind: number for number, kind in _FROM_PB.items()}
_STATE_FROM_PB = {pb.InstanceState.Value("STARTING"): InstanceState.STARTING,
                  pb.InstanceState.Value("IDLE"): InstanceState.IDLE,
                  pb.InstanceState.Value("KEPT_ALIVE"): InstanceState.IDLE,
                  pb.InstanceState.Value("BUSY"): InstanceState.BUSY,
                  pb.InstanceState.Value("DEAD"): InstanceState.DEAD}


def error_kind(value: int) -> ErrorKind:
    return _FROM_PB.get(value, ErrorKind.INTERNAL)


def pb_error_kind(kind: ErrorKind | str) -> int:
    return _TO_PB.get(ErrorKind(kind), _TO_PB[ErrorKind.INTERNAL])


def instance_state(value: int) -> InstanceState | None:
    return _STATE_FROM_PB.get(value)
