"""The policy interface shared by the simulator and the live router (see policies.interface)."""

from policies.features import DurationPredictor, FunctionStats
from policies.interface import (
    BUSY,
    DEAD,
    IDLE,
    INVOKE,
    KILL,
    REJECT,
    SPAWN,
    STARTING,
    Assign,
    CostWeights,
    FunctionView,
    IdleDecision,
    InstanceView,
    Invoke,
    KeepAlive,
    Kill,
    Policy,
    Reject,
    RequestView,
    RouteDecision,
    Spawn,
    warm_instance_with_slot,
)
from policies.registry import BUILTINS, PolicySpecError, load_custom, load_policy, split_specs

__all__ = [
    "BUSY", "DEAD", "IDLE", "STARTING", "INVOKE", "KILL", "REJECT", "SPAWN",
    "Assign", "CostWeights", "DurationPredictor", "FunctionStats", "FunctionView", "IdleDecision",
    "InstanceView", "Invoke", "KeepAlive", "Kill", "Policy", "Reject", "RequestView", "RouteDecision",
    "Spawn", "warm_instance_with_slot", "BUILTINS", "PolicySpecError", "load_custom", "load_policy",
    "split_specs",
]
