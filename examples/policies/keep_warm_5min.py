"""An example custom policy: keep every instance warm for 5 minutes after it was last used.

Copy this file, change the decisions, and run it by path:

    wl sim replay --trace TRACE --policy custom:examples/policies/keep_warm_5min.py
    wl sim replay --trace TRACE --policy custom:examples/policies/keep_warm_5min.py:KeepWarm5Min:minutes=2

A policy is a subclass of ``policies.Policy``; the file must define exactly one (or name it
after the path, as in the second line). Keyword arguments of ``__init__`` are the spec's
``key=value`` parameters. Decisions get ``now_ms`` and must never read a clock, so the
same class behaves identically in the simulator and in the live router. Keep each
decision cheap: the simulator asks hundreds of thousands of times per second.
"""

from __future__ import annotations

from policies import INVOKE, KILL, SPAWN, Assign, KeepAlive, Policy


class KeepWarm5Min(Policy):
    name = "keep_warm_5min"

    def __init__(self, minutes: float = 5.0) -> None:
        if not minutes > 0:
            raise ValueError(f"minutes must be > 0, got {minutes!r}")
        self.keep_ms = minutes * 60_000.0

    def route(self, now_ms, request, fn):
        # fn.idle lists the idle instances, the most recently freed last: reuse the warmest.
        if fn.idle:
            return Assign(fn.idle[-1])
        return SPAWN                      # no idle instance: cold start a new one

    def on_idle(self, now_ms, instance, fn):
        # Called when an execution ends and again when a keep-alive runs out.
        if instance.queue:
            return INVOKE                 # requests are waiting on this instance: run the next
        idle_ms = now_ms - instance.idle_since_ms if instance.idle_since_ms is not None else 0.0
        remaining = self.keep_ms - idle_ms
        if remaining > 1e-3:
            return KeepAlive(remaining)   # stay warm; we are asked again when this runs out
        return KILL                       # idle for the full 5 minutes: free the memory

    def describe(self):
        return {"name": self.name, "minutes": self.keep_ms / 60_000.0}
