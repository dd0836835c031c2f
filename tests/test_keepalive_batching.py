"""The router's keep-alive timers: the lease deferral is batched (one wake-up per LEASE_BATCH_MS,
not one per keep-alive) without making any keep-alive end late."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from policies.interface import IDLE
from wlruntime.router.keepalive import LEASE_BATCH_MS, LEASE_DEFER_MS, LEASE_MARGIN_MS, KeepAliveTimers
from wlruntime.router.virtual import VirtualClock

pytestmark = pytest.mark.unit


@dataclass(eq=False)
class Idle:
    id: int
    keepalive_until_ms: float = 0.0
    state: str = IDLE


class Recorder:
    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.leases: list[tuple[float, int, float]] = []     # (now, instance id, ms)
        self.expired: list[tuple[float, int]] = []           # (now, instance id)
        self.deferral_wakeups = 0
        self.timers = KeepAliveTimers(clock, self.on_expired, self.on_lease)
        wrapped = self.timers._deferred_due

        def counted() -> None:
            self.deferral_wakeups += 1
            wrapped()
        self.timers._deferred_due = counted  # type: ignore[method-assign]

    def on_expired(self, inst: Idle, now: float) -> None:
        self.expired.append((now, inst.id))

    def on_lease(self, inst: Idle, ms: float) -> None:
        self.leases.append((self.clock.now, inst.id, ms))

    def arm(self, inst: Idle, until: float) -> None:
        inst.keepalive_until_ms = until
        self.timers.arm(inst, until)

    def run_until(self, t: float) -> None:
        while self.clock.next_time() <= t:
            self.clock.fire_next()
        self.clock.now = max(self.clock.now, t)


def test_many_keep_alives_share_few_deferral_wakeups_and_each_gets_one_lease_after_40_to_60_ms() -> None:
    clock = VirtualClock()
    r = Recorder(clock)
    armed_at = {}
    for i in range(100):                       # one keep-alive every 0.5 ms for 50 ms
        r.run_until(i * 0.5)
        armed_at[i] = clock.now
        r.arm(Idle(i), clock.now + 1000.0)
    r.run_until(200.0)
    assert sorted(iid for _, iid, _ in r.leases) == list(range(100))
    for now, iid, ms in r.leases:
        idle = now - armed_at[iid]
        assert LEASE_DEFER_MS <= idle <= LEASE_DEFER_MS + LEASE_BATCH_MS
        assert ms == pytest.approx(armed_at[iid] + 1000.0 - now + LEASE_MARGIN_MS)
    # 50 ms of arming: a wake-up per LEASE_BATCH_MS (and the first), not one per keep-alive
    assert r.deferral_wakeups <= 50.0 / LEASE_BATCH_MS + 2
    r.run_until(2000.0)
    assert r.expired == [(armed_at[i] + 1000.0, i) for i in range(100)]   # each at its end, in order


def test_a_keep_alive_ending_within_the_batch_window_ends_on_time() -> None:
    clock = VirtualClock()
    r = Recorder(clock)
    r.arm(Idle(1), 1000.0)                     # starts the deferral timer
    r.run_until(30.0)
    short = LEASE_DEFER_MS + LEASE_BATCH_MS / 2   # longer than the deferral, shorter than its batching
    r.arm(Idle(2), 30.0 + short)
    r.run_until(2000.0)
    assert r.expired == [(30.0 + short, 2), (1000.0, 1)]
    assert [iid for _, iid, _ in r.leases] == [1]   # too short for a lease, as before


def test_a_replaced_keep_alive_gets_no_lease_and_no_expiry() -> None:
    clock = VirtualClock()
    r = Recorder(clock)
    inst = Idle(7)
    r.arm(inst, 1000.0)
    r.run_until(10.0)
    r.arm(inst, 10.0 + 1000.0)                 # the next execution's keep-alive replaces it
    r.run_until(3000.0)
    assert [(iid) for _, iid, _ in r.leases] == [7]
    assert r.leases[0][0] >= 10.0 + LEASE_DEFER_MS
    assert r.expired == [(1010.0, 7)]
