"""The router's policy clock and timers, behind one small interface so the router's logic can
run on a virtual clock in tests (tests/test_parity.py) exactly as on real time.

The policy clock is ms since 00:00 UTC of the day the router started, advancing with the
monotonic clock (like the Azure traces' day-relative times, so a recording replays at its
time of day).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

URGENT, NORMAL = 0, 1   # timer priorities at one instant
LATER = (NORMAL,)       # the order key of an ordinary timer


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now_ms(self) -> float: ...

    def call_at(self, at_ms: float, callback: Callable[[], Any], order: tuple = LATER) -> Timer:
        """Run ``callback()`` on the event loop at policy time ``at_ms`` (at once if past).
        ``order``: at one instant, timers with a smaller key come first; keep-alive expiries
        are ``(URGENT, instance id)``, the model's order (wlsim.engine). A virtual clock
        keeps it; on real time exact ties do not happen."""
        ...


class RealClock:
    """Real time on the running asyncio loop."""

    def __init__(self) -> None:
        self._mono0 = time.monotonic()
        self._day_ms0 = (time.time() % 86400.0) * 1000.0

    def now_ms(self) -> float:
        return (time.monotonic() - self._mono0) * 1000.0 + self._day_ms0

    def call_at(self, at_ms: float, callback: Callable[[], Any], order: tuple = (1,)) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, at_ms - self.now_ms()) / 1000.0, callback)
