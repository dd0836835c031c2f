"""Keep-alive timing, owned by the router alone.

The model answers ``on_idle`` with ``KeepAlive(ms)``; this module is the one place that
times it: at ``until`` it asks the model again (``Platform.keepalive_expired``), which asks
the policy (EXPIRED). The node is only told to hold the instance: once an instance has stayed
idle ``LEASE_DEFER_MS`` (a busy instance never pays that RPC on its request path), it gets a
lease, ``Do(KeepAlive(until - now + LEASE_MARGIN_MS))``, so the node's own idle grace does
not free it before the router decides. The node asks ``Scheduler.OnIdle`` only when a lease
runs out without word from the router (a lost router): the answer comes from the same
record (see ``Router.on_node_idle``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policies.interface import IDLE
from wlruntime.router.clock import URGENT, Clock, Timer

LEASE_DEFER_MS = 20.0      # an instance idle this long gets its lease sent to its node
LEASE_MARGIN_MS = 1000.0   # the node holds an instance this much longer than the router's keep-alive


class KeepAliveTimers:
    """One timer per idle instance kept alive (and one for its lease)."""

    def __init__(self, clock: Clock, expired: Callable[[Any, float], None],
                 send_lease: Callable[[Any, float], None]) -> None:
        self._clock = clock
        self._expired = expired          # (instance, now) -> None: the keep-alive ran out
        self._send_lease = send_lease    # (instance, ms) -> None: tell its node to hold it ms
        self._timers: dict[Any, tuple[Timer, Timer | None]] = {}

    def __len__(self) -> int:
        return len(self._timers)

    def arm(self, inst: Any, until: float, lease: bool = True) -> None:
        """Time ``inst``'s keep-alive until ``until``; ``lease``: tell its node after the deferral
        (False when the node is told another way, e.g. in a directive)."""
        self.cancel(inst)
        now = self._clock.now_ms()
        expiry = self._clock.call_at(until, lambda: self._fire(inst, until), (URGENT, inst.id))
        lease_timer = None
        if lease and until - now > LEASE_DEFER_MS:
            lease_timer = self._clock.call_at(now + LEASE_DEFER_MS, lambda: self._lease(inst, until))
        self._timers[inst] = (expiry, lease_timer)

    def cancel(self, inst: Any) -> None:
        timers = self._timers.pop(inst, None)
        if timers is not None:
            for t in timers:
                if t is not None:
                    t.cancel()

    def _fire(self, inst: Any, until: float) -> None:
        self._timers.pop(inst, None)
        if inst.state is IDLE and inst.keepalive_until_ms == until:
            # A timer may fire a hair early (the loop's resolution): the model sees it due.
            self._expired(inst, max(self._clock.now_ms(), until))

    def _lease(self, inst: Any, until: float) -> None:
        if inst.state is IDLE and inst.keepalive_until_ms == until:
            left = until - self._clock.now_ms()
            if left > 0:
                self._send_lease(inst, left + LEASE_MARGIN_MS)
