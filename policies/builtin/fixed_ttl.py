"""Fixed keep-alive TTL, the way AWS Lambda (10 min) and Azure Functions (20 min) keep
instances warm."""

from __future__ import annotations

from typing import Any

from policies.builtin._common import idle_for, keep_until, number, warm_slot
from policies.interface import (
    INVOKE,
    SPAWN,
    Assign,
    FunctionView,
    IdleDecision,
    InstanceView,
    KeepAlive,
    Policy,
    RequestView,
    RouteDecision,
)


class FixedTTL(Policy):
    """Route to the warmest idle instance, else cold start one. After an execution, keep the
    instance alive for ``ttl_ms`` of idleness, then kill it.

    The decision is made from how long the instance has been idle (``now - idle_since``):
    0 right after an execution gives ``KeepAlive(ttl_ms)``; when the engine asks again at
    the end of the keep-alive the idle time has reached ``ttl_ms`` and the answer is KILL.
    Any earlier re-ask gets the remainder, so the total idle time is always ``ttl_ms``.

    Parameters:
      ttl_ms: keep-alive after the last execution, ms (default 600000 = 10 minutes, Lambda's).
    """

    name = "fixed_ttl"

    def __init__(self, ttl_ms: float = 600_000.0) -> None:
        self.ttl_ms = number(self.name, "ttl_ms", ttl_ms)
        self._full = KeepAlive(self.ttl_ms)     # the common answer, built once (it is immutable)

    def route(self, now_ms: float, request: RequestView, fn: FunctionView) -> RouteDecision:
        if fn.idle:
            return Assign(fn.idle[-1])
        inst = warm_slot(fn)
        return Assign(inst) if inst is not None else SPAWN

    def on_idle(self, now_ms: float, instance: InstanceView, fn: FunctionView) -> IdleDecision:
        if instance.queue:
            return INVOKE
        since = instance.idle_since_ms
        if since == now_ms:                     # an execution just ended
            return self._full
        return keep_until(self.ttl_ms, idle_for(now_ms, instance))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "ttl_ms": self.ttl_ms}
