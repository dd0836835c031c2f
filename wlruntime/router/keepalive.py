"""Keep-alive timing, owned by the router alone.

The model answers ``on_idle`` with ``KeepAlive(ms)``; this module is the one place that
times it: at ``until`` it asks the model again (``Platform.keepalive_expired``), which asks
the policy (EXPIRED). The node is only told to hold the instance: once an instance has stayed
idle ``LEASE_DEFER_MS`` (a busy instance never pays that RPC on its request path), it gets a
lease, ``Do(KeepAlive(until - now + LEASE_MARGIN_MS))``, so the node's own idle grace does
not free it before the router decides. The node asks ``Scheduler.OnIdle`` only when a lease
runs out without word from the router (a lost router): the answer comes from the same
record (see ``Router.on_node_idle``).

Every execution ends in a keep-alive, so arming one is on the request path: a deque append, not
a loop timer. A keep-alive first waits ``LEASE_DEFER_MS`` in a FIFO (every entry is due that
long after it was armed; under load most are replaced by the instance's next execution before
then); one that lasts that long gets its lease and joins a heap of keep-alive ends ordered like
the simulator's expiries (time, then instance). One clock timer stands for the FIFO's oldest
entry and one for the earliest end. A keep-alive replaced or cancelled leaves its entries
behind, recognised by their arm number and dropped when they reach the front (or when the heap
is rebuilt, once stale entries outnumber live ones). Keep-alives shorter than the deferral (plus
its batching, ``LEASE_BATCH_MS``) go to the heap at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import Any

from policies.interface import IDLE
from wlruntime.router.clock import URGENT, Clock, Timer

# An instance idle this long gets its lease sent to its node (far below the node's idle grace,
# 30 s by default). d16f7dd checked every 20 ms for instances idle 20 ms, i.e. sent leases after
# 20-40 ms; an exact 20 ms sent ~4x as many under a 20 ms request pace (0.49 vs 0.12 KeepAlive
# calls per request, 16 connections each pacing 20 ms; 40 ms: 0.06), each a DoStream message
# that router and node both pay for.
LEASE_DEFER_MS = 40.0
LEASE_MARGIN_MS = 1000.0   # the node holds an instance this much longer than the router's keep-alive
# The deferral timer fires at most once per LEASE_BATCH_MS and takes every entry due by then, so a
# lease goes out after 40-60 ms idle. Timing each entry to the ms re-armed the timer ~0.3 times per
# request under load (16 connections): most of the loop's extra callbacks against d16f7dd.
LEASE_BATCH_MS = 20.0


class KeepAliveTimers:
    """The keep-alive ends (and leases) of idle instances, on two clock timers in all."""

    def __init__(self, clock: Clock, expired: Callable[[Any, float], None],
                 send_lease: Callable[[Any, float], None]) -> None:
        self._clock = clock
        self._expired = expired          # (instance, now) -> None: the keep-alive ran out
        self._send_lease = send_lease    # (instance, ms) -> None: tell its node to hold it ms
        self._armed: dict[Any, int] = {}  # instance -> arm number of its current keep-alive
        self._arms = 0
        self._ends: list[tuple[float, int, int, Any]] = []            # heap of (until, instance id, arm, inst)
        self._end_timer: Timer | None = None
        self._end_timed: tuple[float, int] | None = None              # (until, instance id) the timer is for
        # keep-alives not yet LEASE_DEFER_MS old, in due order: due, arm, inst, until, lease per
        # entry, flat (an entry as a tuple would outlive ~40 ms of requests: under load an object per
        # request for the garbage collector's young generation to walk; the deque is walked as one)
        self._deferred: deque[Any] = deque()
        self._deferred_timer: Timer | None = None

    def __len__(self) -> int:
        return len(self._armed)

    def arm(self, inst: Any, until: float, lease: bool = True) -> None:
        """Time ``inst``'s keep-alive until ``until`` (replacing the one it had); ``lease``: tell
        its node after the deferral (False when the node is told another way, e.g. in a directive)."""
        self._arms += 1
        arm = self._armed[inst] = self._arms
        now = self._clock.now_ms()
        if until - now > LEASE_DEFER_MS + LEASE_BATCH_MS:
            # Most keep-alives end here, replaced by the next execution within milliseconds:
            # one joins the heap only once it has lasted the deferral (its end is later, even
            # when the batched timer takes it up to LEASE_BATCH_MS after its due time).
            due = now + LEASE_DEFER_MS
            self._deferred.extend((due, arm, inst, until, lease))
            if self._deferred_timer is None:
                self._deferred_timer = self._clock.call_at(due, self._deferred_due)
        else:
            self._time_end(inst, until, arm)

    def cancel(self, inst: Any) -> None:
        self._armed.pop(inst, None)

    def _time_end(self, inst: Any, until: float, arm: int) -> None:
        ends = self._ends
        heappush(ends, (until, inst.id, arm, inst))
        if len(ends) > 2 * len(self._armed) + 256:
            self._compact()
        if self._end_timed is None or (until, inst.id) < self._end_timed:
            self._time_first_end()

    def _compact(self) -> None:
        armed = self._armed
        self._ends = [entry for entry in self._ends if armed.get(entry[3]) == entry[2]]
        heapify(self._ends)

    def _time_first_end(self) -> None:
        """(Re)arm the clock timer for the earliest live keep-alive end."""
        ends, armed = self._ends, self._armed
        while ends and armed.get(ends[0][3]) != ends[0][2]:
            heappop(ends)    # replaced or cancelled
        if self._end_timer is not None:
            self._end_timer.cancel()
            self._end_timer = self._end_timed = None
        if ends:
            until, iid = ends[0][0], ends[0][1]
            self._end_timed = (until, iid)
            # at one instant, expiries go in instance order (the model's; see Clock.call_at)
            self._end_timer = self._clock.call_at(until, self._end_due, (URGENT, iid))

    def _end_due(self) -> None:
        timed = self._end_timed
        self._end_timer = self._end_timed = None
        ends, armed = self._ends, self._armed
        while ends and armed.get(ends[0][3]) != ends[0][2]:
            heappop(ends)
        if not ends:
            return
        now = self._clock.now_ms()
        until, _, _, inst = ends[0]
        # A timer may fire a hair early (the loop's resolution): the one it was set for is due.
        if timed is None or until > max(now, timed[0]):
            self._time_first_end()        # the timed one was replaced; a later one is first now
            return
        heappop(ends)
        del armed[inst]
        self._time_first_end()            # before the model runs: it may arm others
        if inst.state is IDLE and inst.keepalive_until_ms == until:
            self._expired(inst, max(now, until))

    def _deferred_due(self) -> None:
        """Keep-alives that lasted the deferral: their ends join the heap, their leases go out."""
        self._deferred_timer = None
        deferred, armed = self._deferred, self._armed
        now = self._clock.now_ms()
        # A timer may fire a hair early (the loop's resolution): the entry it was set for is due.
        due_by = max(now, deferred[0]) if deferred else now
        pop = deferred.popleft
        while deferred and deferred[0] <= due_by:
            pop()
            arm, inst, until, lease = pop(), pop(), pop(), pop()
            if armed.get(inst) != arm:
                continue                  # replaced or cancelled meanwhile
            self._time_end(inst, until, arm)
            if lease and inst.state is IDLE and inst.keepalive_until_ms == until:
                left = until - now
                if left > 0:
                    self._send_lease(inst, left + LEASE_MARGIN_MS)
        if deferred:   # batched: not before LEASE_BATCH_MS from now (see LEASE_BATCH_MS)
            self._deferred_timer = self._clock.call_at(max(deferred[0], now + LEASE_BATCH_MS),
                                                       self._deferred_due)
