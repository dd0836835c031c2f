"""The engine's step-wise Simulation plus what the RL reward needs: the *accrued* added
latency (queueing wait + cold start) of every request up to now, including requests that
are still waiting. Charging wait as it accrues (rather than at completion) means a policy
that piles requests onto a busy instance pays at once, even if the episode is truncated
before they complete; summed over a run it equals the metrics' added latency.

The engine's public ``Simulation.accrued_wait_ms()`` gives that figure; this subclass adds
per-step deltas for the reward.
"""

from __future__ import annotations

from typing import Any

from policies.interface import Policy
from wlsim.engine import ROUTE, Decision, Simulation


class StepSim(Simulation):
    """Simulation + ``accrued_wait_ms()`` + ``take_deltas()`` (see the module docstring)."""

    def __init__(self, trace: Any, config: Any = None, policy: Policy | None = None) -> None:
        super().__init__(trace, config, policy)
        self._mark_wait = 0.0
        self._mark_idle = 0.0

    # -- queries ------------------------------------------------------------------
    def peek(self) -> Decision | None:
        return self.next_decision()

    def answer_with(self, policy: Policy) -> None:
        """Let ``policy`` answer the pending decision."""
        d = self.next_decision()
        if d is None:
            return
        if d.kind is ROUTE:
            self.apply(policy.route(d.now_ms, d.request, d.fn))
        else:
            self.apply(policy.on_idle(d.now_ms, d.instance, d.fn))

    def mark(self) -> None:
        """Start counting deltas from now."""
        self._mark_wait = self.accrued_wait_ms()
        self._mark_idle = self.idle_mb_ms()

    def take_deltas(self) -> tuple[float, float]:
        """(accrued wait + cold start ms, idle MB-ms) since the last mark/take_deltas; re-marks."""
        wait, idle = self.accrued_wait_ms(), self.idle_mb_ms()
        out = (wait - self._mark_wait, idle - self._mark_idle)
        self._mark_wait, self._mark_idle = wait, idle
        return out
