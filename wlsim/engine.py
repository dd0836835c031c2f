"""The simulator's core: a SimPy model of the router, the scheduler and function instances.

``simulate(trace, policy, config)`` replays a per-invocation trace (the canonical table:
``app, function, arrival_ms, duration_ms, memory_mb``, optional ``payload_bytes`` and numeric
feature columns) against a policy and returns a :class:`~wlsim.result.SimResult`.
``Simulation`` is the same engine driven step by step: ``next_decision()`` advances time to
the next decision point and ``apply(answer)`` answers it (the RL environment's loop).

The model (policies.interface documents the decision points):

- Nodes (``SimConfig.nodes`` x ``node_memory_mb``). A new instance goes on the node with the
  most free memory (ties: the lowest index) unless the policy's ``Spawn(node=...)`` names
  one. It holds its function's memory from the spawn decision until it dies (starting, busy,
  idle). A spawn that does not fit asks ``policy.evict`` for idle instances on that node; if
  even all idle instances there would not make room, or the policy's choice frees too
  little, nothing is evicted and the request is rejected.
- Instances: STARTING for the cold start (``ColdStartModel``), then BUSY while at least one
  execution runs, IDLE (warm, holding memory), DEAD. Up to ``concurrency`` executions run
  at once; more requests queue on the instance (FIFO). When one execution of several ends,
  the next queued request starts in the freed slot without a decision; when the last one
  ends the instance is IDLE and ``on_idle`` is asked.
- ``route`` at every arrival, after ``fn.stats.record_arrival``: ``Assign`` runs the request
  at once if the instance (IDLE or BUSY) has a free slot, else queues it there (also on a
  STARTING instance); ``SPAWN`` starts an instance for it (the request is "cold"), or
  rejects it when the function already has ``SimConfig.max_instances`` live instances (the
  live router's per-function concurrency limit, a 429 there); ``Reject`` drops it.
- ``on_idle`` when an instance becomes IDLE (its last execution ended, or a cold start with
  nothing queued finished, e.g. a pre-warm) and when its keep-alive runs out. During the
  expiry question ``instance.keepalive_until_ms`` still holds the expiry time (<= now), and
  it is None after an execution, so a TTL policy can tell the two apart. ``INVOKE`` runs the
  next queued request (an error when nothing is queued); ``KeepAlive(ms)`` asks again at
  ``now + ms`` unless a request arrives first; ``KILL`` frees the memory. Requests queued
  on an instance that is not told to INVOKE are re-routed through ``route`` (they keep
  their arrival time; the time already waited counts as wait).
- ``prewarm`` when a kill leaves a function without live instances and nothing to re-route;
  a delay schedules one spawn ahead of demand (no eviction for it: it is skipped if it does
  not fit), cancelled by the function's next arrival.

Time and events. SimPy's environment is the event kernel for completions, cold-start ends
and pre-warm timers, each a plain triggered event with one callback (no process per request).
Arrivals are not events: the sorted trace is merged with the event queue. Keep-alive
expiries are not events either: an instance's expiry sits in a small heap, at most one entry
per idle instance, and extending a keep-alive (the common case: every execution end under a
TTL) touches nothing; a stale entry is dropped or moved to the later time when it surfaces.
Expiries are still answered at exactly their time and in global time order, so results
equal an eager timer-per-keep-alive model (``eager_expiry=True`` runs that reference model;
tests compare the two) and the step-wise API never goes back in time.
At one instant the order is: keep-alive expiries, then SimPy events in scheduling order
(completions free their slot before arrivals at the same instant), then arrivals in trace
order; decisions raised at an instant are all answered before time moves on.

The run ends when every request has completed or been rejected (the horizon): instances
still alive then die at the horizon (``died_ms``), later timers are dropped.

Per-request records live in preallocated typed arrays (``array.array``) indexed by the
trace row and become the SimResult frames at the end; nothing is kept per event.
"""

from __future__ import annotations

import gc
import math
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy
from simpy.events import NORMAL, URGENT

from policies.features import FunctionStats
from policies.interface import (
    BUSY,
    DEAD,
    IDLE,
    STARTING,
    Assign,
    FunctionView,
    InstanceView,
    Invoke,
    KeepAlive,
    Kill,
    Policy,
    Reject,
    RequestView,
    Spawn,
)
from wlsim.config import SimConfig
from wlsim.result import INSTANCE_COLUMNS, REQUEST_COLUMNS, SimResult

if TYPE_CHECKING:
    import pandas as pd

INF = math.inf
NAN = math.nan

# Decision kinds and the reasons an instance is asked on_idle.
ROUTE = "route"
IDLE_DECISION = "idle"
FINISHED = "finished"    # its last running execution ended
EXPIRED = "expired"      # its keep-alive ran out
READY = "ready"          # a cold start finished with nothing queued (e.g. a pre-warm)
REROUTE = "reroute"      # a route decision for a request taken off a non-invoked instance
ARRIVAL = "arrival"

CANONICAL_COLUMNS = ("app", "function", "arrival_ms", "duration_ms", "memory_mb", "payload_bytes")
# Extra numeric trace columns reach policies as RequestView.features.
PROGRESS_EVERY = 4096     # arrivals between progress callbacks
MEMORY_SLACK_MB = 1e-6


class PolicyAnswerError(ValueError):
    """A policy (or a step-wise caller) gave an answer that is invalid at that decision point."""


# ----------------------------------------------------------------------------- records

class Function(FunctionView):
    """The engine's function record: the FunctionView policies see, plus engine fields."""

    __slots__ = ("cold_start_ms", "idx", "prewarm_event")

    def __init__(self, idx: int, name: str, app: str, memory_mb: float, concurrency: int,
                 cold_start_ms: float) -> None:
        super().__init__(name, app=app, memory_mb=memory_mb, concurrency=concurrency,
                         stats=FunctionStats(cold_start_prior_ms=cold_start_ms))
        self.idx = idx
        self.cold_start_ms = cold_start_ms
        self.prewarm_event: _Due | None = None   # the pending pre-warm timer, if any


class Instance(InstanceView):
    """The engine's instance record (an InstanceView, so policies read it directly).

    ``queue`` holds trace row numbers. Engine-only fields: ready_ms, died_ms, busy_ms,
    idle_total_ms, busy_since_ms, prewarmed, evicted, node_idx, running (rows executing, in
    start order), and the keep-alive heap bookkeeping (kseq, kat).
    """

    __slots__ = (
        "busy_ms",
        "busy_since_ms",
        "died_ms",
        "evicted",
        "idle_total_ms",
        "kat",
        "kseq",
        "node_idx",
        "prewarmed",
        "ready_ms",
        "running",
    )

    def __init__(self, id: int, fn: Function, node: str, node_idx: int, created_ms: float,
                 prewarmed: bool) -> None:
        # All InstanceView fields, set here directly (one call on the spawn path).
        self.id = id
        self.fn = fn
        self.node = node
        self.state = STARTING
        self.memory_mb = fn.memory_mb
        self.concurrency = fn.concurrency
        self.active = 0
        self.queue: deque[int] = deque()
        self.created_ms = created_ms
        self.exec_started_ms: float | None = None
        self.idle_since_ms: float | None = None
        self.invocations = 0
        self.keepalive_until_ms: float | None = None
        self.ready_ms = INF          # INF until the cold start ends (NaN in the result)
        self.died_ms = NAN
        self.busy_ms = 0.0
        self.idle_total_ms = 0.0
        self.busy_since_ms = 0.0
        self.prewarmed = prewarmed
        self.evicted = False
        self.node_idx = node_idx
        self.running: list[int] = []
        self.kseq: int | None = None  # sequence number of this instance's live heap entry
        self.kat = INF                # time of that entry


@dataclass(slots=True)
class Decision:
    """A decision point the step-wise caller must answer with ``Simulation.apply``.

    kind: "route" (answer Assign / Spawn / Reject) or "idle" (answer Invoke / KeepAlive /
    Kill); reason: "arrival" or "reroute" for routes, "finished", "expired" or "ready" for
    idle decisions; request: the RequestView (routes); instance: the Instance (idle).
    """
    kind: str
    now_ms: float
    fn: Function
    request: RequestView | None
    instance: Instance | None
    reason: str


class RowFeatures(Mapping):
    """A request's extra numeric trace columns, read lazily from the columnar arrays. An empty
    cell (NaN) is a feature this request did not carry: absent, as in the live router."""

    __slots__ = ("_columns", "_row")

    def __init__(self, columns: dict[str, Any], row: int) -> None:
        self._columns = columns
        self._row = row

    def __getitem__(self, key: str) -> float:
        value = self._columns[key][self._row]
        if math.isnan(value):
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        row = self._row
        return (name for name, column in self._columns.items() if not math.isnan(column[row]))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Due:
    """A triggered event carrying its one callback: what SimPy's ``Timeout(env, delay, value)``
    plus ``callbacks.append(cb)`` gives, as a slotted object (a simpy Event has an instance
    dict and costs half as much again to build; one is built per execution). It has what
    ``env.step()`` reads: ``callbacks``, ``_value``, ``_ok``."""

    __slots__ = ("callbacks", "_value")
    _ok = True

    def __init__(self, callback: Callable[[_Due], None], value: Any) -> None:
        self.callbacks = [callback]
        self._value = value


class _Kernel(simpy.Environment):
    """SimPy's environment, the engine's event kernel, with two additions for speed: ``at``
    schedules a callback at an absolute time (the same queue entry ``schedule`` makes, without
    a Timeout object), and the engine moves ``_now`` itself for the instants that are not
    SimPy events (arrivals and keep-alive expiries, merged in from outside the queue)."""

    def at(self, t: float, callback: Callable[[_Due], None], value: Any,
           priority: int = NORMAL) -> _Due:
        ev = _Due(callback, value)
        heappush(self._queue, (t, priority, next(self._eid), ev))
        return ev


# ------------------------------------------------------------------------- the engine

class Simulation:
    """One run of a trace through the model; see the module docstring.

    Step-wise use (``policy`` then only answers ``prewarm`` and ``evict``; None = no
    pre-warming and least-recently-used eviction)::

        sim = Simulation(trace, config, policy)
        while (d := sim.next_decision()) is not None:
            sim.apply(my_answer(d))
        result = sim.result()

    or ``sim.run(policy)`` to let a policy answer everything. Running totals for a reward:
    ``completed``, ``completed_latency_ms`` (sum of end-to-end latencies of completed
    requests), ``rejected``, ``cold_starts``, ``accrued_wait_ms()`` (wait + cold start
    accrued by all arrived requests, waiting ones included), ``idle_mb_ms()`` (idle memory
    MB-ms accrued); differences between two decision points give per-step quantities.
    """

    # Slots: the hot path reads a few dozen of these per request, and a plain instance dict
    # of this many keys loses CPython's fast attribute access.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_arrival",
        "_arrival_np",
        "_arrival_prefix",
        "_codes",
        "_done",
        "_duration",
        "_duration_np",
        "_eager_expiry",
        "_fcode",
        "_features",
        "_idle_closed",
        "_kcount",
        "_kheap",
        "_next_row",
        "_node_capacity",
        "_node_idle",
        "_node_index",
        "_node_used",
        "_on_end_cb",
        "_on_idle",
        "_on_prewarm_cb",
        "_on_ready_cb",
        "_outstanding",
        "_payload",
        "_pending",
        "_prepared",
        "_r_cold",
        "_r_cold_ms",
        "_r_end",
        "_r_inst",
        "_r_rejected",
        "_r_routed",
        "_r_start",
        "_result",
        "_route",
        "_settled",
        "_settled_at",
        "_wall_s",
        "cold_starts",
        "completed",
        "completed_latency_ms",
        "config",
        "env",
        "function_names",
        "functions",
        "horizon_ms",
        "instances",
        "n",
        "node_names",
        "policy",
        "rejected",
        "trace",
    )

    def __init__(self, trace: pd.DataFrame, config: SimConfig | None = None,
                 policy: Policy | None = None, *, eager_expiry: bool = False) -> None:
        self.config = config if config is not None else SimConfig()
        self.trace = self._load(trace)
        self.policy = policy if policy is not None else Policy()
        self.policy.prepare(self.trace)
        self._prepared = {id(self.policy)}
        self._eager_expiry = eager_expiry

        cfg = self.config
        if cfg.nodes < 1:
            raise ValueError(f"SimConfig.nodes must be >= 1, got {cfg.nodes}")
        if not cfg.node_memory_mb > 0:
            raise ValueError(f"SimConfig.node_memory_mb must be > 0, got {cfg.node_memory_mb}")
        self.node_names = [f"node{k}" for k in range(cfg.nodes)]
        self._node_index = {name: k for k, name in enumerate(self.node_names)}
        # May be inf (unbounded). The slack absorbs float drift in the running sums of
        # fractional memory sizes, so an exact fit still fits.
        self._node_capacity = float(cfg.node_memory_mb) + MEMORY_SLACK_MB
        self._node_used = [0.0] * cfg.nodes                 # MB held by live instances
        # Idle instances per node in the order they became idle (least recently used first):
        # the eviction candidates, kept up to date so memory pressure costs no scan.
        self._node_idle: list[dict[int, Instance]] = [{} for _ in range(cfg.nodes)]

        self.env = _Kernel()
        self._kheap: list[tuple[float, int, Instance]] = []
        self._kcount = 0
        self.instances: list[Instance] = []   # every instance ever spawned, by id
        self._next_row = 0
        self._pending: deque[Decision] = deque()
        self._outstanding: Decision | None = None
        self._done = False
        self._result: SimResult | None = None
        # Inline deciders (run mode); None in step mode, where decisions are queued.
        self._route: Callable[..., Any] | None = None
        self._on_idle: Callable[..., Any] | None = None

        # Running totals (cumulative) for rewards and checks.
        self.completed = 0
        self.completed_latency_ms = 0.0
        self.rejected = 0
        self.cold_starts = 0
        self._idle_closed = 0.0      # idle MB-ms of idle periods that have ended
        # Requests that started executing or were rejected ("settled"): how many, and the sum
        # of the times they did (accrued_wait_ms).
        self._settled = 0
        self._settled_at = 0.0

        self._on_end_cb = self._on_exec_end
        self._on_ready_cb = self._on_ready
        self._on_prewarm_cb = self._on_prewarm
        self._wall_s = 0.0

    # ------------------------------------------------------------------ trace loading
    def _load(self, trace: pd.DataFrame) -> pd.DataFrame:
        """Validate the trace (wlsim.traces.validate: clear errors naming row and column) and
        lay it out in typed arrays. Returns the normalised trace."""
        import pandas as pd

        from wlsim.traces.table import validate

        trace = validate(trace, "trace")
        cfg = self.config
        if cfg.concurrency < 1:
            raise ValueError(f"SimConfig.concurrency must be >= 1, got {cfg.concurrency}")
        if cfg.max_instances is not None and cfg.max_instances < 1:
            raise ValueError(f"SimConfig.max_instances must be >= 1 or None, got {cfg.max_instances}")
        n = len(trace)
        arrival = trace["arrival_ms"].to_numpy(dtype=np.float64)
        duration = trace["duration_ms"].to_numpy(dtype=np.float64)
        codes, uniques = pd.factorize(trace["function"], sort=False)   # ids in order of first arrival
        names = [str(x) for x in uniques]
        nf = len(names)
        first = np.full(nf, n, dtype=np.int64)
        np.minimum.at(first, codes, np.arange(n))
        app_col = trace["app"].to_numpy(dtype=object)
        apps = [str(app_col[i]) for i in first]
        mem = np.zeros(nf)
        np.maximum.at(mem, codes, trace["memory_mb"].to_numpy(dtype=np.float64))
        conc = np.full(nf, int(cfg.concurrency), dtype=np.int64)
        if "concurrency" in trace.columns:     # optional per-function override
            per_fn = np.zeros(nf)
            np.fmax.at(per_fn, codes, trace["concurrency"].to_numpy(dtype=np.float64))
            conc = np.where(per_fn >= 1, per_fn, conc).astype(np.int64)
        payload = (trace["payload_bytes"].to_numpy(dtype=np.float64) if "payload_bytes" in trace.columns
                   else np.zeros(n))
        feature_cols = [c for c in trace.columns if c not in CANONICAL_COLUMNS and c != "concurrency"]

        self.n = n
        self.function_names = names
        self._codes = codes.astype(np.int64)
        self._arrival_np = arrival
        self._duration_np = duration
        # Typed arrays: compact like numpy, but indexing yields plain Python floats (fast).
        self._arrival = array("d", arrival.tobytes())
        self._arrival.append(INF)   # sentinel: "no more arrivals"
        # Sums of the first k arrival times, k = 0..n (accrued_wait_ms).
        self._arrival_prefix = array("d", np.concatenate([[0.0], np.cumsum(arrival)]).tobytes())
        self._duration = array("d", duration.tobytes())
        self._fcode = array("q", self._codes.tobytes())
        self._payload = array("d", payload.tobytes())
        self._features = ({c: array("d", trace[c].to_numpy(dtype=np.float64).tobytes()) for c in feature_cols}
                          if feature_cols else None)
        # Outputs, per trace row.
        self._r_start = array("d", bytes(8 * n))
        self._r_end = array("d", np.full(n, NAN).tobytes())
        self._r_cold_ms = array("d", bytes(8 * n))
        self._r_routed = array("d", arrival.tobytes())   # when last routed (arrival or re-route)
        self._r_inst = array("q", np.full(n, -1, dtype=np.int64).tobytes())
        self._r_cold = bytearray(n)
        self._r_rejected = bytearray(n)

        model = cfg.cold_start
        self.functions: list[Function] = [
            Function(i, names[i], apps[i], float(mem[i]), int(conc[i]),
                     float(model.cold_start_ms(names[i], float(mem[i]))))
            for i in range(nf)
        ]
        for f in self.functions:
            f.max_instances = cfg.max_instances
            if not (f.cold_start_ms >= 0 and math.isfinite(f.cold_start_ms)):
                raise ValueError(f"cold-start model gave {f.cold_start_ms!r} ms for function {f.name!r}")
        return trace

    # ------------------------------------------------------------------ public API
    @property
    def now_ms(self) -> float:
        return self.env._now

    @property
    def done(self) -> bool:
        return self._done

    def function(self, name: str) -> Function:
        return self.functions[self.function_names.index(name)]

    def idle_mb_ms(self) -> float:
        """Idle memory (MB-ms) accrued by all instances from the start up to now. O(idle
        instances): ended idle periods are summed as they end, open ones here."""
        now = self.env._now
        return self._idle_closed + sum(i.memory_mb * (now - i.idle_since_ms)
                                       for d in self._node_idle for i in d.values())

    def accrued_wait_ms(self) -> float:
        """Added latency (queueing wait + cold start, ms) accrued by all requests that have
        arrived, up to now: for each one that started executing (or was rejected), start
        (reject) time - arrival; for each one still waiting, now - arrival. O(1). Summed
        over a finished run it equals the results' total ``wait_ms + cold_start_ms`` (plus
        the time re-routed requests waited before a rejection)."""
        # sum(settle time) + (still waiting) * now - sum(arrival time of every arrived request)
        arrived = self._next_row
        return (self._settled_at + (arrived - self._settled) * self.env._now
                - self._arrival_prefix[arrived])

    def next_decision(self) -> Decision | None:
        """Advance to the next decision point and return it; None when the run is over.
        The same decision is returned again until it is answered with ``apply``."""
        if self._outstanding is None:
            if not self._pending and not self._loop(True):
                return None
            self._outstanding = self._pending.popleft()
        return self._outstanding

    def apply(self, answer: Any) -> None:
        """Answer the decision returned by ``next_decision``."""
        d = self._outstanding
        if d is None:
            raise RuntimeError("no decision to answer: call next_decision() first")
        now = self.env._now
        if d.kind is ROUTE:
            self._apply_route(d.request.id, d.fn, answer, now)
        else:
            self._apply_idle(d.instance, answer, now)
        self._outstanding = None     # only once the answer was accepted

    def run(self, policy: Policy | None = None,
            progress: Callable[[int, int], None] | None = None) -> SimResult:
        """Let ``policy`` (default: the one given at construction) answer every remaining
        decision and return the result. ``progress(done_arrivals, total)`` is called every
        few thousand arrivals and once at the end."""
        if policy is not None and policy is not self.policy:
            self.policy = policy
            if id(policy) not in self._prepared:
                policy.prepare(self.trace)
                self._prepared.add(id(policy))
        policy = self.policy
        t0 = time.perf_counter()
        # Answer what is already queued (a step-wise caller may hand over mid-run).
        while self._outstanding is not None or self._pending:
            d = self.next_decision()
            if d.kind is ROUTE:
                self.apply(policy.route(d.now_ms, d.request, d.fn))
            else:
                self.apply(policy.on_idle(d.now_ms, d.instance, d.fn))
        self._route = policy.route
        self._on_idle = policy.on_idle
        # The run allocates many short-lived objects but makes no reference cycles, so the
        # cyclic garbage collector would only spend time re-scanning live records.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._loop(False, progress)
        finally:
            self._route = self._on_idle = None
            if gc_was_enabled:
                gc.enable()
        if progress is not None:
            progress(self.n, self.n)
        self._wall_s += time.perf_counter() - t0
        return self.result()

    def result(self) -> SimResult:
        """The SimResult of a finished run."""
        if not self._done:
            raise RuntimeError("the simulation has not finished: answer decisions until next_decision() is None")
        if self._result is None:
            self._result = self._build_result()
        return self._result

    # ------------------------------------------------------------------ the event loop
    def _loop(self, until_decision: bool, progress: Callable[[int, int], None] | None = None) -> bool:
        """Process expiries, SimPy events and arrivals in time order (see the module
        docstring for the order within one instant). With ``until_decision`` return True as
        soon as a decision is queued for a step-wise caller. Returns False when the run is
        over (every request completed or rejected), after closing it."""
        if self._done:
            return False
        env = self.env
        queue = env._queue
        kheap = self._kheap
        arrival = self._arrival        # ends with an INF sentinel
        pending = self._pending
        functions, fcode, payload, feats = self.functions, self._fcode, self._payload, self._features
        route, start, apply_route = self._route, self._start, self._apply_route
        n = self.n
        row = self._next_row
        t_arr = arrival[row]
        tick = row + PROGRESS_EVERY if progress is not None else n + 1
        try:
            while True:
                if row >= n and self.completed + self.rejected >= n:
                    self._finish()
                    return False
                if kheap:
                    t_k = kheap[0][0]
                    if t_k <= t_arr and (not queue or t_k <= queue[0][0]):
                        self._expire(heappop(kheap))
                        if until_decision and pending:
                            return True
                        continue
                if queue and queue[0][0] <= t_arr:
                    # env.step(), inlined: every queued event is a triggered _Due (never failed).
                    env._now, _, _, ev = heappop(queue)
                    callbacks, ev.callbacks = ev.callbacks, None
                    for callback in callbacks:
                        callback(ev)
                elif row < n:
                    # An arrival (inlined: this runs once per request).
                    env._now = now = t_arr
                    f = functions[fcode[row]]
                    f.stats.record_arrival(now)
                    if f.prewarm_event is not None:
                        f.prewarm_event = None          # it came first: cancel the pre-warm
                    rv = RequestView(row, f.name, now, payload[row],
                                     None if feats is None else RowFeatures(feats, row))
                    if route is None:
                        pending.append(Decision(ROUTE, now, f, rv, None, ARRIVAL))
                    else:
                        ans = route(now, rv, f)
                        if type(ans) is Assign and ans.instance.state is IDLE and ans.instance.fn is f:
                            start(ans.instance, row, now)     # the common warm start
                        else:
                            apply_route(row, f, ans, now)
                    row += 1
                    t_arr = arrival[row]
                    if row >= tick:
                        progress(row, n)
                        tick = row + PROGRESS_EVERY
                else:
                    raise RuntimeError(f"simulation stalled at {env._now} ms: {n - self.completed - self.rejected} "
                                       "requests unfinished and no event left (queued on an instance that "
                                       "never runs them?)")
                if until_decision and pending:
                    return True
        finally:
            self._next_row = row

    def _expire(self, entry: tuple[float, int, Instance]) -> None:
        """A keep-alive heap entry surfaced: ask on_idle if it is live and due."""
        t_k, seq, inst = entry
        if inst.kseq != seq:
            return                          # superseded by a shorter keep-alive
        inst.kseq = None
        until = inst.keepalive_until_ms
        if inst.state is not IDLE or until is None:
            return                          # used or killed since
        if until > t_k:                     # extended since: move the entry
            self._push_expiry(inst, until)
            return
        self.env._now = t_k
        self._ask_idle(inst, EXPIRED, t_k)

    def _push_expiry(self, inst: Instance, at: float) -> None:
        self._kcount += 1
        inst.kseq = self._kcount
        inst.kat = at
        heappush(self._kheap, (at, self._kcount, inst))

    # ------------------------------------------------------------------ decisions
    def _request_view(self, row: int, f: Function) -> RequestView:
        feats = self._features
        return RequestView(row, f.name, self._arrival[row], self._payload[row],
                           None if feats is None else RowFeatures(feats, row))

    def _reroute(self, rows: list[int], f: Function, now: float) -> None:
        routed = self._r_routed
        for row in rows:
            routed[row] = now
        route = self._route
        for row in rows:
            rv = self._request_view(row, f)
            if route is not None:
                self._apply_route(row, f, route(now, rv, f), now)
            else:
                self._pending.append(Decision(ROUTE, now, f, rv, None, REROUTE))

    def _ask_idle(self, inst: Instance, reason: str, now: float) -> None:
        on_idle = self._on_idle
        if on_idle is not None:
            self._apply_idle(inst, on_idle(now, inst, inst.fn), now)
        else:
            self._pending.append(Decision(IDLE_DECISION, now, inst.fn, None, inst, reason))

    def _apply_route(self, row: int, f: Function, ans: Any, now: float) -> None:
        if isinstance(ans, Assign):
            inst = ans.instance
            if getattr(inst, "fn", None) is not f:
                raise PolicyAnswerError(f"route for {f.name!r} (request {row}): Assign to {inst!r}, "
                                        "which is not an instance of this function")
            st = inst.state
            if (st is IDLE or st is BUSY) and inst.active < inst.concurrency:
                self._start(inst, row, now)
            elif st is DEAD:
                raise PolicyAnswerError(f"route for {f.name!r} (request {row}): Assign to dead {inst!r}")
            else:
                inst.queue.append(row)
        elif isinstance(ans, Spawn):
            self._spawn(f, row, ans.node, now)
        elif isinstance(ans, Reject):
            self._reject(row)
        else:
            raise PolicyAnswerError(f"route for {f.name!r} (request {row}) must return Assign, Spawn or "
                                    f"Reject, got {ans!r}")

    def _apply_idle(self, inst: Instance, ans: Any, now: float) -> None:
        if inst.state is not IDLE:
            raise RuntimeError(f"on_idle answer for {inst!r}, which is not idle")
        tp = type(ans)
        if tp is KeepAlive or isinstance(ans, KeepAlive):
            until = now + ans.ms
            if not until > now:
                raise PolicyAnswerError(f"on_idle for {inst!r} at {now} ms: {ans!r} is too short to move "
                                        "the clock (it would ask again at the same instant forever)")
            inst.keepalive_until_ms = until
            if self._eager_expiry:
                # Reference model: one SimPy event per keep-alive. URGENT so that, as with
                # the lazy heap, expiries come before other events of the same instant.
                self.env.at(until, self._on_eager_expiry, (inst, until), URGENT)
            elif inst.kseq is None or inst.kat > until:
                self._push_expiry(inst, until)
            q = inst.queue
            if q:
                rows = list(q)
                q.clear()
                self._reroute(rows, inst.fn, now)
        elif tp is Kill or isinstance(ans, Kill):
            self._kill(inst, now, False)
        elif tp is Invoke or isinstance(ans, Invoke):
            q = inst.queue
            if not q:
                raise PolicyAnswerError(f"on_idle for {inst!r}: INVOKE with nothing queued")
            self._start(inst, q.popleft(), now)
            while q and inst.active < inst.concurrency:
                self._start(inst, q.popleft(), now)
        else:
            raise PolicyAnswerError(f"on_idle for {inst!r} must return Invoke, KeepAlive or Kill, got {ans!r}")

    # ------------------------------------------------------------------ instance life
    def _become_idle(self, inst: Instance, now: float) -> None:
        inst.state = IDLE
        inst.idle_since_ms = now
        inst.keepalive_until_ms = None
        inst.fn.idle.append(inst)
        self._node_idle[inst.node_idx][inst.id] = inst

    def _leave_idle(self, inst: Instance, now: float) -> None:
        d = now - inst.idle_since_ms
        inst.idle_total_ms += d
        self._idle_closed += inst.memory_mb * d
        inst.keepalive_until_ms = None
        idle = inst.fn.idle
        if idle[-1] is inst:
            idle.pop()
        else:
            idle.remove(inst)
        del self._node_idle[inst.node_idx][inst.id]

    def _start(self, inst: Instance, row: int, now: float) -> None:
        """Start executing request ``row`` on ``inst`` (which has a free slot)."""
        st = inst.state
        if st is not BUSY:
            if st is IDLE:
                # self._leave_idle(inst, now), inlined: a warm start is the common case.
                d = now - inst.idle_since_ms
                inst.idle_total_ms += d
                self._idle_closed += inst.memory_mb * d
                inst.keepalive_until_ms = None
                idle = inst.fn.idle
                if idle[-1] is inst:
                    idle.pop()
                else:
                    idle.remove(inst)
                del self._node_idle[inst.node_idx][inst.id]
            inst.state = BUSY
            inst.busy_since_ms = now
            inst.exec_started_ms = now
        inst.active += 1
        if inst.concurrency > 1:
            inst.running.append(row)
        self._r_start[row] = now
        self._r_inst[row] = inst.id
        self._settled += 1
        self._settled_at += now
        routed = self._r_routed[row]
        if routed < inst.ready_ms:
            self._r_cold_ms[row] = inst.ready_ms - routed
        # env.at(end, on_end, (inst, row)), inlined: this runs once per request.
        env = self.env
        heappush(env._queue, (now + self._duration[row], NORMAL, next(env._eid),
                              _Due(self._on_end_cb, (inst, row))))

    def _on_exec_end(self, ev: _Due) -> None:
        inst, row = ev._value
        now = self.env._now
        self._r_end[row] = now
        self.completed += 1
        self.completed_latency_ms += now - self._arrival[row]
        f = inst.fn
        f.stats.record_completion(now, self._duration[row], self._payload[row])
        inst.invocations += 1
        inst.active -= 1
        if inst.concurrency > 1:
            running = inst.running
            running.remove(row)
            if inst.active:
                # Other executions still run: the freed slot takes the next queued request.
                inst.exec_started_ms = self._r_start[running[0]]
                if inst.queue:
                    self._start(inst, inst.queue.popleft(), now)
                return
        inst.exec_started_ms = None
        inst.busy_ms += now - inst.busy_since_ms
        # self._become_idle(inst, now), inlined: this runs once per request.
        inst.state = IDLE
        inst.idle_since_ms = now
        inst.keepalive_until_ms = None
        f.idle.append(inst)
        self._node_idle[inst.node_idx][inst.id] = inst
        on_idle = self._on_idle
        if on_idle is None:
            self._pending.append(Decision(IDLE_DECISION, now, f, None, inst, FINISHED))
            return
        ans = on_idle(now, inst, f)
        until = now + ans.ms if type(ans) is KeepAlive else now
        if until > now and not inst.queue and not self._eager_expiry:
            # The common answer, a keep-alive, inlined from _apply_idle.
            inst.keepalive_until_ms = until
            if inst.kseq is None or inst.kat > until:
                self._push_expiry(inst, until)
        else:
            self._apply_idle(inst, ans, now)

    def _spawn(self, f: Function, row: int, node: str | None, now: float) -> Instance | None:
        """A new instance for ``f``; ``row`` is the request it is spawned for (-1: a pre-warm).
        Returns None (and rejects the request) at the function's max_instances or when it does
        not fit."""
        if f.max_instances is not None and len(f.instances) >= f.max_instances:
            if row >= 0:
                self._reject(row)
            return None
        mem = f.memory_mb
        used = self._node_used
        if node is None:
            # The node with the most free memory = the least used one (equal capacities;
            # also right when capacity is unbounded). Ties: the lowest index.
            k = 0
            if len(used) > 1:
                least = used[0]
                for j in range(1, len(used)):
                    if used[j] < least:
                        least, k = used[j], j
        else:
            k = self._node_index.get(node, -1)
            if k < 0:
                raise PolicyAnswerError(f"Spawn on unknown node {node!r} (nodes: {', '.join(self.node_names)})")
        if used[k] + mem > self._node_capacity and (row < 0 or not self._make_room(k, mem, now)):
            if row >= 0:
                self._reject(row)
            return None
        used[k] += mem
        inst = Instance(len(self.instances), f, self.node_names[k], k, now, row < 0)
        self.instances.append(inst)
        f.instances[inst.id] = inst
        if row >= 0:
            inst.queue.append(row)
            self._r_cold[row] = 1
        self.env.at(now + f.cold_start_ms, self._on_ready_cb, inst)
        return inst

    def _make_room(self, k: int, mem: float, now: float) -> bool:
        """Evict idle instances on node ``k`` (the policy's choice) so ``mem`` MB fit."""
        need = self._node_used[k] + mem - self._node_capacity
        idle_here = self._node_idle[k]
        if not idle_here:
            return False
        candidates = list(idle_here.values())      # least recently used first
        chosen = list(self.policy.evict(now, need, candidates))
        seen: set[int] = set()
        freed = 0.0
        for c in chosen:
            if idle_here.get(getattr(c, "id", None)) is not c or c.id in seen:
                raise PolicyAnswerError(f"evict returned {c!r}, which is not one of the idle candidates "
                                        f"on {self.node_names[k]} (or is listed twice)")
            seen.add(c.id)
            freed += c.memory_mb
        if freed < need:
            return False
        for c in chosen:
            self._kill(c, now, True)
        return True

    def _kill(self, inst: Instance, now: float, evicted: bool) -> None:
        self._leave_idle(inst, now)
        inst.state = DEAD
        inst.died_ms = now
        inst.evicted = evicted
        self._node_used[inst.node_idx] -= inst.memory_mb
        f = inst.fn
        del f.instances[inst.id]
        q = inst.queue
        if q:
            rows = list(q)
            q.clear()
            self._reroute(rows, f, now)
        elif not f.instances:
            self._maybe_prewarm(f, now)

    def _maybe_prewarm(self, f: Function, now: float) -> None:
        delay = self.policy.prewarm(now, f)
        if delay is None:
            return
        if not (delay >= 0 and math.isfinite(delay)):
            raise PolicyAnswerError(f"prewarm for {f.name!r} must return None or a delay >= 0 ms, got {delay!r}")
        f.prewarm_event = self.env.at(now + delay, self._on_prewarm_cb, f)

    def _on_prewarm(self, ev: _Due) -> None:
        f = ev._value
        if f.prewarm_event is not ev:
            return                            # cancelled by an arrival
        f.prewarm_event = None
        if not f.instances:
            self._spawn(f, -1, None, self.env._now)

    def _on_ready(self, ev: _Due) -> None:
        inst = ev._value
        now = self.env._now
        inst.ready_ms = now
        inst.fn.stats.record_cold_start(now - inst.created_ms)
        self.cold_starts += 1
        q = inst.queue
        if q:
            self._start(inst, q.popleft(), now)
            while q and inst.active < inst.concurrency:
                self._start(inst, q.popleft(), now)
        else:
            self._become_idle(inst, now)
            self._ask_idle(inst, READY, now)

    def _on_eager_expiry(self, ev: _Due) -> None:
        inst, until = ev._value
        if inst.state is IDLE and inst.keepalive_until_ms == until:
            self._ask_idle(inst, EXPIRED, self.env._now)

    def _reject(self, row: int) -> None:
        self._r_rejected[row] = 1
        self.rejected += 1
        self._settled += 1
        self._settled_at += self.env._now    # it waited until then if a re-route rejected it

    # ------------------------------------------------------------------ the end
    def _finish(self) -> None:
        """Close every live instance at the horizon (the last request's completion)."""
        now = self.env._now
        for inst in self.instances:
            if inst.state is DEAD:
                continue
            if inst.state is IDLE:
                self._leave_idle(inst, now)
            elif inst.state is BUSY:   # cannot happen: every request has finished
                raise RuntimeError(f"{inst!r} still busy at the end of the run")
            inst.state = DEAD
            inst.died_ms = now
            self._node_used[inst.node_idx] -= inst.memory_mb
            del inst.fn.instances[inst.id]
        self.horizon_ms = now
        self._done = True

    def _build_result(self) -> SimResult:
        import pandas as pd

        n = self.n
        arrival = self._arrival_np
        start = np.frombuffer(self._r_start, dtype=np.float64)
        end = np.frombuffer(self._r_end, dtype=np.float64).copy()
        cold_ms = np.frombuffer(self._r_cold_ms, dtype=np.float64).copy()
        rejected = np.frombuffer(self._r_rejected, dtype=np.uint8).astype(bool)
        wait = np.where(rejected, NAN, start - arrival - cold_ms)
        names = np.array(self.function_names, dtype=object)
        requests = pd.DataFrame({
            "request_id": pd.Series(np.arange(n, dtype=np.int64)),
            "function": pd.Series(names[self._codes], dtype="string"),
            "arrival_ms": arrival.copy(),
            "wait_ms": wait,
            "cold": np.frombuffer(self._r_cold, dtype=np.uint8).astype(bool),
            "cold_start_ms": cold_ms,
            "exec_ms": self._duration_np.copy(),
            "end_ms": end,
            "latency_ms": end - arrival,
            "instance_id": np.frombuffer(self._r_inst, dtype=np.int64).copy(),
            "rejected": rejected,
        })
        insts = self.instances
        instances = pd.DataFrame({
            "instance_id": pd.Series([i.id for i in insts], dtype="int64"),
            "function": pd.Series([i.fn.name for i in insts], dtype="string"),
            "node": pd.Series([i.node for i in insts], dtype="string"),
            "memory_mb": pd.Series([i.memory_mb for i in insts], dtype="float64"),
            "created_ms": pd.Series([i.created_ms for i in insts], dtype="float64"),
            "ready_ms": pd.Series([i.ready_ms if i.ready_ms != INF else NAN for i in insts], dtype="float64"),
            "died_ms": pd.Series([i.died_ms for i in insts], dtype="float64"),
            "busy_ms": pd.Series([i.busy_ms for i in insts], dtype="float64"),
            "idle_ms": pd.Series([i.idle_total_ms for i in insts], dtype="float64"),
            "invocations": pd.Series([i.invocations for i in insts], dtype="int64"),
            "prewarmed": pd.Series([i.prewarmed for i in insts], dtype="bool"),
            "evicted": pd.Series([i.evicted for i in insts], dtype="bool"),
        })
        requests = requests.astype(REQUEST_COLUMNS)[list(REQUEST_COLUMNS)]
        instances = instances.astype(INSTANCE_COLUMNS)[list(INSTANCE_COLUMNS)]
        params = dict(self.policy.describe())
        params["config"] = asdict(self.config)
        return SimResult(policy=getattr(self.policy, "name", type(self.policy).__name__),
                         requests=requests, instances=instances, horizon_ms=float(self.horizon_ms),
                         wall_s=self._wall_s, params=params)


# ------------------------------------------------------------------------ entry point

def simulate(trace: pd.DataFrame, policy: Policy | str, config: SimConfig | None = None,
             progress: bool | Callable[[int, int], None] = False) -> SimResult:
    """Replay ``trace`` under ``policy`` (a Policy or a spec string for policies.load_policy).

    ``progress``: True for a tqdm bar, or a callable ``(done_arrivals, total)``.
    """
    if isinstance(policy, str):
        from policies.registry import load_policy
        policy = load_policy(policy)
    t0 = time.perf_counter()
    sim = Simulation(trace, config, policy)
    bar = None
    callback: Callable[[int, int], None] | None = None
    if progress is True:
        from tqdm.auto import tqdm
        bar = tqdm(total=sim.n, unit="req", desc=f"simulating {policy.name}")

        def callback(done: int, total: int) -> None:
            bar.update(done - bar.n)
    elif callable(progress):
        callback = progress
    try:
        result = sim.run(progress=callback)
    finally:
        if bar is not None:
            bar.close()
    result.wall_s = time.perf_counter() - t0
    return result
