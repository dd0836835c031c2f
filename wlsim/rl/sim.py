"""The engine's step-wise Simulation plus what the RL reward needs: the *accrued* added
latency (queueing wait + cold start) of every request up to now, including requests that
are still waiting. Charging wait as it accrues (rather than at completion) means a policy
that piles requests onto a busy instance pays at once, even if the episode is truncated
before they complete; summed over a run it equals the metrics' added latency.

It hooks three engine internals (arrival, execution start, reject), each called once per
request. A public ``Simulation.waiting_ms()`` in the engine would make this subclass
unnecessary.
"""

from __future__ import annotations

from typing import Any

from policies.interface import Policy
from wlsim.engine import ROUTE, Decision, Simulation


class StepSim(Simulation):
    """Simulation + ``accrued_wait_ms()`` + ``take_deltas()`` (see the module docstring)."""

    def __init__(self, trace: Any, config: Any = None, policy: Policy | None = None) -> None:
        super().__init__(trace, config, policy)
        self._w_waiting = 0          # requests arrived, not started, not rejected
        self._w_arrival_sum = 0.0    # sum of their arrival times
        self._w_started = 0.0        # sum of (start - arrival) of started requests
        self._mark_wait = 0.0
        self._mark_idle = 0.0

    # -- hooks --------------------------------------------------------------------
    def _arrive(self, row: int, now: float) -> None:
        self._w_waiting += 1
        self._w_arrival_sum += now
        super()._arrive(row, now)

    def _start(self, inst: Any, row: int, now: float) -> None:
        arrival = self._arrival[row]
        self._w_waiting -= 1
        self._w_arrival_sum -= arrival
        self._w_started += now - arrival
        super()._start(inst, row, now)

    def _reject(self, row: int) -> None:
        self._w_waiting -= 1
        self._w_arrival_sum -= self._arrival[row]
        super()._reject(row)

    # -- queries ------------------------------------------------------------------
    def accrued_wait_ms(self) -> float:
        """Wait + cold start accrued by all requests up to now (started or still waiting)."""
        return self._w_started + self._w_waiting * self.env._now - self._w_arrival_sum

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
