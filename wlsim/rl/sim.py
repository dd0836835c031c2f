"""The engine's step-wise Simulation plus what the RL reward needs: the *accrued* added
latency (queueing wait + cold start) of every request up to now, including requests that
are still waiting. Charging wait as it accrues (rather than at completion) means a policy
that piles requests onto a busy instance pays at once, even if the episode is truncated
before they complete; summed over a run it equals the metrics' added latency.

It hooks two engine internals (execution start and reject, each called once per request)
and reads the engine's next-arrival row. A public ``Simulation.accrued_wait_ms()`` in the
engine would make this subclass unnecessary.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.interface import Policy
from wlsim.engine import ROUTE, Decision, Simulation


class StepSim(Simulation):
    """Simulation + ``accrued_wait_ms()`` + ``take_deltas()`` (see the module docstring)."""

    def __init__(self, trace: Any, config: Any = None, policy: Policy | None = None) -> None:
        super().__init__(trace, config, policy)
        # Prefix sums of arrival times: the arrived requests are trace rows [0, _next_row).
        self._cum_arrival = np.concatenate([[0.0], np.cumsum(self._arrival_np)]).tolist()
        self._w_done = 0              # requests started or rejected
        self._w_done_arrival = 0.0    # sum of their arrival times
        self._w_started = 0.0         # sum of (start - arrival) of started requests
        self._mark_wait = 0.0
        self._mark_idle = 0.0

    # -- hooks --------------------------------------------------------------------
    def _start(self, inst: Any, row: int, now: float) -> None:
        arrival = self._arrival[row]
        self._w_done += 1
        self._w_done_arrival += arrival
        self._w_started += now - arrival
        super()._start(inst, row, now)

    def _reject(self, row: int) -> None:
        self._w_done += 1
        self._w_done_arrival += self._arrival[row]
        super()._reject(row)

    # -- queries ------------------------------------------------------------------
    def accrued_wait_ms(self) -> float:
        """Wait + cold start accrued by all requests up to now (started or still waiting)."""
        arrived = self._next_row
        waiting = arrived - self._w_done
        waiting_arrival = self._cum_arrival[arrived] - self._w_done_arrival
        return self._w_started + waiting * self.env._now - waiting_arrival
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
