"""The simulator: the platform model (wlmodel) driven on simulated time.

``simulate(trace, policy, config)`` replays a per-invocation trace (the canonical table,
``wlmodel.schema``: ``app, function, arrival_ms, duration_ms, memory_mb``, optional
``payload_bytes`` and numeric feature columns) against a policy and returns a
:class:`~wlsim.result.SimResult`. ``Simulation`` is the same run driven step by step:
``next_decision()`` advances time to the next decision point and ``apply(answer)`` answers it
(the RL environment's loop).

The rules (routing, what a cold start is, node choice, eviction, keep-alive, pre-warm,
invalid answers) are the model's, ``wlmodel.platform``, shared with the live router;
``Simulation`` subclasses ``wlmodel.Platform`` and carries out its effects on simulated time:

- an execution ends ``duration_ms`` (the trace's) after it starts;
- a cold start takes ``SimConfig.cold_start`` ms (``ColdStartModel``) from the spawn decision:
  the function's constant, or, for a function with a measured distribution
  (``ColdStartModel.quantiles_ms``), one draw per spawn from a ``random.Random(SimConfig.seed)``
  (the same seed gives the same run); with a load-dependent one (``ColdStartModel.by_load``),
  the draw is from the distribution of the load at the spawn (requests in flight, or the
  cold starts decided in the 50 ms before: ``LoadColdStart.measure``);
- nodes are ``SimConfig.nodes`` x ``node_memory_mb`` (may be unbounded);
- answers are checked in "raise" mode: an invalid answer raises ``PolicyAnswerError``.

Time and events. A small event kernel of its own (a heapq of ``(time, priority, seq,
callback, a, b)``; no SimPy) holds completions, cold-start ends and pre-warm timers.
Arrivals are not events: the sorted trace is merged with the event queue. Keep-alive
expiries are not events either: an instance's expiry sits in a small heap, at most one entry
per idle instance, and extending a keep-alive (the common case: every execution end under a
TTL) touches nothing; a stale entry is dropped or moved to the later time when it surfaces.
Expiries are still answered at exactly their time and in global time order, so results
equal an eager timer-per-keep-alive model (``eager_expiry=True`` runs that reference model;
tests compare the two) and the step-wise API never goes back in time.
At one instant the order is: keep-alive expiries (in instance order), then events in scheduling order
(completions free their slot before arrivals at the same instant), then arrivals in trace
order; decisions raised at an instant are all answered before time moves on.

The run ends when every request has completed or been rejected (the horizon): instances
still alive then die at the horizon (``died_ms``), later timers are dropped.

Per-request records live in preallocated typed arrays (``array.array``) indexed by the
trace row and become the SimResult frames at the end; nothing is kept per event.

Streamed mode (``StreamingSimulation``, ``simulate_stream``): for traces larger than memory,
arrivals come as an iterator of batches in time order and the result rows go to Parquet parts
as requests finish and instances die (``wlsim.result.ResultSink``), with the totals accumulated
as a ``StreamSummary``; memory holds the per-function state, one batch and the requests in
flight, not the trace. Same event loop and effects (the loop loads the next batch when the
loaded rows are used up; per-request state is kept in dicts holding only unfinished rows), so
the same results as the in-memory run (tests/test_engine_stream.py). The in-memory path does
not pay for it: its per-request code is unchanged.
"""

from __future__ import annotations

import gc
import math
import random
import time
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from heapq import heappop, heappush
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policies.interface import (
    BUSY,
    DEAD,
    IDLE,
    SPAWN,
    Assign,
    KeepAlive,
    Policy,
    RequestView,
)
from wlmodel.kinds import RejectReason
from wlmodel.platform import (
    ARRIVAL,
    EXPIRED,
    FINISHED,
    READY,
    REROUTE,
    Platform,
    PolicyAnswerError,
)
from wlmodel.records import Function, Instance, Node
from wlmodel.schema import CANONICAL_COLUMNS, CONCURRENCY_COLUMN, feature_columns
from wlsim.config import IN_FLIGHT, SPAWN_WINDOW_MS, SPAWNS_50MS, SimConfig, draw_quantile
from wlsim.result import INSTANCE_COLUMNS, REQUEST_COLUMNS, ResultSink, SimResult, StreamSummary

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ARRIVAL", "CANONICAL_COLUMNS", "EXPIRED", "FINISHED", "IDLE_DECISION", "READY", "REROUTE", "ROUTE",
    "Decision", "Function", "Instance", "PolicyAnswerError", "Simulation", "StreamingSimulation", "simulate",
    "simulate_stream",
]

INF = math.inf
NAN = math.nan

# Decision kinds (Decision.kind); the reasons are the model's (ARRIVAL, REROUTE, FINISHED, ...).
ROUTE = "route"
IDLE_DECISION = "idle"

PROGRESS_EVERY = 4096     # arrivals between progress callbacks
URGENT, NORMAL = 0, 1     # event priorities at one instant (eager expiries come first)
NEVER = 1 << 62           # a row number no trace reaches


class SimInstance(Instance):
    """The model's instance plus the simulator's keep-alive heap bookkeeping: the sequence
    number of its live heap entry (None: none) and that entry's time."""

    __slots__ = ("kat", "kseq")

    def __init__(self, id: int, fn: Function, node: Node, created_ms: float, prewarmed: bool) -> None:
        super().__init__(id, fn, node, created_ms, prewarmed)
        self.kseq: int | None = None
        self.kat = INF


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


# ------------------------------------------------------------------------- the engine


def _spawn_log(cfg: SimConfig) -> array | None:
    """Where a simulation keeps its cold starts' times, when a load-dependent cold start is keyed
    by them (LoadColdStart ``spawns_50ms``); None otherwise (nothing to keep)."""
    return array("d") if any(t.measure == SPAWNS_50MS for t in cfg.cold_start.by_load.values()) else None


class Simulation(Platform):
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
        "_arrival",
        "_arrival_np",
        "_arrival_prefix",
        "_chunks",
        "_codes",
        "_cold_draws",
        "_cold_rng",
        "_done",
        "_duration",
        "_duration_np",
        "_eager_expiry",
        "_events",
        "_fcode",
        "_features",
        "_kcount",
        "_kheap",
        "_next_row",
        "_now",
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
        "_seq",
        "_settled",
        "_settled_at",
        "_spawn_times",
        "_wall_s",
        "completed",
        "completed_latency_ms",
        "config",
        "function_names",
        "functions",
        "horizon_ms",
        "instances",
        "n",
        "node_names",
        "rejected",
        "trace",
    )

    def __init__(self, trace: pd.DataFrame, config: SimConfig | None = None,
                 policy: Policy | None = None, *, eager_expiry: bool = False) -> None:
        super().__init__(policy, on_bad_answer="raise")
        self.config = config if config is not None else SimConfig()
        self._chunks: Iterator[pd.DataFrame] | None = None   # streamed arrivals still to load
        self.trace = self._load(trace)
        self.policy.prepare(self.trace)
        self._prepared = {id(self.policy)}
        self._eager_expiry = eager_expiry

        cfg = self.config
        if cfg.nodes < 1:
            raise ValueError(f"SimConfig.nodes must be >= 1, got {cfg.nodes}")
        if not cfg.node_memory_mb > 0:
            raise ValueError(f"SimConfig.node_memory_mb must be > 0, got {cfg.node_memory_mb}")
        for k in range(cfg.nodes):
            self.add_node(Node(f"node{k}", float(cfg.node_memory_mb)))
        self.node_names = [n.name for n in self.nodes]

        # The event kernel: (time, priority, seq, callback, a, b), callback(a, b).
        self._events: list[tuple[float, int, int, Callable[[Any, Any], None], Any, Any]] = []
        self._seq = count()
        self._now = 0.0
        self._kheap: list[tuple[float, int, int, SimInstance]] = []   # (at, instance id, seq, instance)
        self._kcount = 0
        self.instances: list[SimInstance] = []   # every instance ever spawned, by id
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
        cfg = self._checked_config()
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
        if CONCURRENCY_COLUMN in trace.columns:     # optional per-function override
            per_fn = np.zeros(nf)
            np.fmax.at(per_fn, codes, trace[CONCURRENCY_COLUMN].to_numpy(dtype=np.float64))
            conc = np.where(per_fn >= 1, per_fn, conc).astype(np.int64)
        payload = (trace["payload_bytes"].to_numpy(dtype=np.float64) if "payload_bytes" in trace.columns
                   else np.zeros(n))
        feature_cols = feature_columns(list(trace.columns))

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
        self._r_start = array("d", np.full(n, NAN).tobytes())
        self._r_end = array("d", np.full(n, NAN).tobytes())
        self._r_cold_ms = array("d", bytes(8 * n))
        self._r_routed = array("d", arrival.tobytes())   # when last routed (arrival or re-route)
        self._r_inst = array("q", np.full(n, -1, dtype=np.int64).tobytes())
        self._r_cold = bytearray(n)
        self._r_rejected = bytearray(n)

        self._cold_draws: dict[Function, Any] = {}
        self.functions: list[Function] = [
            self._new_function(names[i], apps[i], float(mem[i]), int(conc[i])) for i in range(nf)]
        self._cold_rng = random.Random(cfg.seed)
        self._spawn_times = _spawn_log(cfg)
        return trace

    def _checked_config(self) -> SimConfig:
        cfg = self.config
        if cfg.concurrency < 1:
            raise ValueError(f"SimConfig.concurrency must be >= 1, got {cfg.concurrency}")
        if cfg.max_instances is not None and cfg.max_instances < 1:
            raise ValueError(f"SimConfig.max_instances must be >= 1 or None, got {cfg.max_instances}")
        return cfg

    def _new_function(self, name: str, app: str, memory_mb: float, concurrency: int) -> Function:
        """The record of a function first seen in the trace (its cold start from the config)."""
        cfg = self.config
        model = cfg.cold_start
        f = Function(name, app, memory_mb, concurrency, cfg.max_instances,
                     float(model.cold_start_ms(name, memory_mb)))
        if not (f.cold_start_ms >= 0 and math.isfinite(f.cold_start_ms)):
            raise ValueError(f"cold-start model gave {f.cold_start_ms!r} ms for function {f.name!r}")
        if name in model.by_load:         # every spawn draws from its load's bucket (LoadColdStart)
            self._cold_draws[f] = model.by_load[name]
        elif name in model.quantiles_ms:  # every spawn draws its cold start (f.cold_start_ms: the estimate)
            self._cold_draws[f] = model.quantiles_ms[name]
        return f

    # ------------------------------------------------------------------ public API
    @property
    def now_ms(self) -> float:
        return self._now

    @property
    def done(self) -> bool:
        return self._done

    def function(self, name: str) -> Function:
        return self.functions[self.function_names.index(name)]

    def idle_mb_ms(self) -> float:
        """Idle memory (MB-ms) accrued by all instances from the start up to now. O(idle
        instances): ended idle periods are summed as they end, open ones here."""
        now = self._now
        return self.idle_closed_mb_ms + sum(i.memory_mb * (now - i.idle_since_ms)
                                            for node in self.nodes for i in node.idle.values())

    def accrued_wait_ms(self) -> float:
        """Added latency (queueing wait + cold start, ms) accrued by all requests that have
        arrived, up to now: for each one that started executing (or was rejected), start
        (reject) time - arrival; for each one still waiting, now - arrival. O(1). Summed
        over a finished run it equals the results' total ``wait_ms + cold_start_ms`` (plus
        the time re-routed requests waited before a rejection)."""
        # sum(settle time) + (still waiting) * now - sum(arrival time of every arrived request)
        arrived = self._next_row
        return (self._settled_at + (arrived - self._settled) * self._now
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
        now = self._now
        if d.kind is ROUTE:
            self.apply_route(d.request.id, d.fn, answer, now)
        else:
            self.apply_idle(d.instance, answer, now)
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
    def _at(self, t: float, callback: Callable[[Any, Any], None], a: Any, b: Any = None,
            priority: int = NORMAL) -> int:
        """Schedule ``callback(a, b)`` at time ``t``; returns the event's sequence number."""
        seq = next(self._seq)
        heappush(self._events, (t, priority, seq, callback, a, b))
        return seq

    def _loop(self, until_decision: bool, progress: Callable[[int, int], None] | None = None) -> bool:
        """Process expiries, events and arrivals in time order (see the module docstring for
        the order within one instant). With ``until_decision`` return True as soon as a
        decision is queued for a step-wise caller. Returns False when the run is over (every
        request completed or rejected), after closing it."""
        if self._done:
            return False
        queue = self._events
        kheap = self._kheap
        arrival = self._arrival        # ends with an INF sentinel
        pending = self._pending
        functions, fcode, payload, feats = self.functions, self._fcode, self._payload, self._features
        route, start, apply_route, spawn = self._route, self.start_execution, self.apply_route, self.spawn
        n = self.n
        row = self._next_row
        t_arr = arrival[row]
        # Two things happen every so many arrivals, checked with one comparison per arrival
        # (``tick``): a progress callback, and (streamed arrivals only) loading the next batch
        # when the loaded rows are used up (``refill_at``; never for an in-memory trace).
        next_progress = row + PROGRESS_EVERY if progress is not None else NEVER
        refill_at = n if self._chunks is not None else n + 1
        tick = min(next_progress, refill_at)
        try:
            while True:
                if row >= n and self.completed + self.rejected >= n:
                    self._finish()
                    return False
                if kheap:
                    t_k = kheap[0][0]
                    if t_k <= t_arr and (not queue or t_k <= queue[0][0]):
                        entry = heappop(kheap)
                        if entry[3].kseq == entry[2]:     # else superseded by a shorter keep-alive
                            self._expire(entry)
                            if until_decision and pending:
                                return True
                        continue
                if queue and queue[0][0] <= t_arr:
                    self._now, _, _, callback, a, b = heappop(queue)
                    callback(a, b)
                elif row < n:
                    # An arrival: the model's ``arrive``, inlined (this runs once per request).
                    self._now = now = t_arr
                    f = functions[fcode[row]]
                    f.stats.record_arrival(now)
                    if f.prewarm_handle is not None:
                        f.prewarm_handle = None          # it came first: cancel the pre-warm
                    rv = RequestView(row, f.name, now, payload[row],
                                     None if feats is None else RowFeatures(feats, row))
                    if route is None:
                        pending.append(Decision(ROUTE, now, f, rv, None, ARRIVAL))
                    else:
                        ans = route(now, rv, f)
                        if type(ans) is Assign and ans.instance.state is IDLE and ans.instance.fn is f:
                            start(ans.instance, row, now)     # the common warm start
                        elif ans is SPAWN:
                            spawn(f, row, None, now)          # apply_route's plain Spawn, without its checks
                        else:
                            apply_route(row, f, ans, now)
                    row += 1
                    t_arr = arrival[row]
                    if row >= tick:
                        if row >= refill_at:
                            n = self._load_more()
                            t_arr = arrival[row]
                            refill_at = n if self._chunks is not None else n + 1
                        if row >= next_progress:
                            progress(row, n)
                            next_progress = row + PROGRESS_EVERY
                        tick = min(next_progress, refill_at)
                else:
                    raise RuntimeError(f"simulation stalled at {self._now} ms: {n - self.completed - self.rejected} "
                                       "requests unfinished and no event left (queued on an instance that "
                                       "never runs them?)")
                if until_decision and pending:
                    return True
        finally:
            self._next_row = row

    def _expire(self, entry: tuple[float, int, int, SimInstance]) -> None:
        """A keep-alive heap entry surfaced: ask on_idle if it is live and due."""
        t_k, _, seq, inst = entry
        if inst.kseq != seq:
            return                          # superseded by a shorter keep-alive
        inst.kseq = None
        until = inst.keepalive_until_ms
        if inst.state is not IDLE or until is None:
            return                          # used or killed since
        if until > t_k:                     # extended since: move the entry
            self._push_expiry(inst, until)
            return
        self._now = t_k
        self.keepalive_expired(inst, t_k)

    def _push_expiry(self, inst: SimInstance, at: float) -> None:
        self._kcount += 1
        inst.kseq = self._kcount
        inst.kat = at
        heappush(self._kheap, (at, inst.id, self._kcount, inst))

    # ------------------------------------------------------------------ decision points
    def request_view(self, row: int, f: Function) -> RequestView:
        feats = self._features
        return RequestView(row, f.name, self._arrival[row], self._payload[row],
                           None if feats is None else RowFeatures(feats, row))

    def ask_route(self, row: int, f: Function, now: float, reason: str) -> None:
        route = self._route
        if route is not None:
            self.apply_route(row, f, route(now, self.request_view(row, f), f), now)
        else:
            self._pending.append(Decision(ROUTE, now, f, self.request_view(row, f), None, reason))

    def reroute(self, rows: list[int], f: Function, now: float) -> None:
        routed = self._r_routed
        for row in rows:
            routed[row] = now      # the time already waited counts as wait
        super().reroute(rows, f, now)

    def ask_idle(self, inst: Instance, now: float, reason: str) -> None:
        on_idle = self._on_idle
        if on_idle is not None:
            ans = on_idle(now, inst, inst.fn)
            if type(ans) is KeepAlive and inst.state is IDLE and not inst.queue and now + ans.ms > now:
                # apply_idle's valid KeepAlive with nothing queued, inlined (the usual answer after
                # every execution)
                until = now + ans.ms
                inst.keepalive_until_ms = until
                self.emit_keep_alive(inst, until)
            else:
                self.apply_idle(inst, ans, now)
        else:
            self._pending.append(Decision(IDLE_DECISION, now, inst.fn, None, inst, reason))

    # ------------------------------------------------------------------ effects
    def new_instance(self, f: Function, node: Node, now: float, prewarmed: bool) -> SimInstance:
        inst = SimInstance(len(self.instances), f, node, now, prewarmed)
        self.instances.append(inst)
        return inst

    def emit_execute(self, inst: Instance, row: int, now: float) -> None:
        self._r_start[row] = now
        self._r_inst[row] = inst.id
        self._settled += 1
        self._settled_at += now
        routed = self._r_routed[row]
        if routed < inst.ready_ms:
            self._r_cold_ms[row] = inst.ready_ms - routed
        heappush(self._events, (now + self._duration[row], NORMAL, next(self._seq), self._on_end_cb, inst, row))

    def _on_exec_end(self, inst: Instance, row: int) -> None:
        now = self._now
        self._r_end[row] = now
        self.completed += 1
        self.completed_latency_ms += now - self._arrival[row]
        self.end_execution(inst, row, now, self._duration[row], self._payload[row])

    def emit_spawn(self, inst: Instance, row: int | None, now: float) -> None:
        f = inst.fn
        table = self._cold_draws.get(f) if self._cold_draws else None
        if table is None:
            cold_ms = f.cold_start_ms
        elif type(table) is tuple:
            cold_ms = draw_quantile(table, self._cold_rng.random())
        else:                             # LoadColdStart: the bucket of the load right now
            load = self._in_flight(now) if table.measure == IN_FLIGHT else self._recent_spawns(now)
            cold_ms = table.draw(load, self._cold_rng.random())
        if row is not None:
            self._r_cold[row] = 1
            if self._spawn_times is not None:
                self._spawn_times.append(now)
        self._at(now + cold_ms, self._on_ready_cb, inst)

    def _in_flight(self, now: float) -> int:
        """Requests arrived by ``now`` and not finished (LoadColdStart's ``in_flight``)."""
        return bisect_right(self._arrival, now) - self.completed - self.rejected

    def _recent_spawns(self, now: float) -> int:
        """Cold starts of requests decided in the SPAWN_WINDOW_MS before ``now``, this one
        excluded (LoadColdStart's ``spawns_50ms``; the times are appended in time order)."""
        times = self._spawn_times
        return len(times) - bisect_left(times, now - SPAWN_WINDOW_MS)

    def _on_ready(self, inst: Instance, _: Any) -> None:
        self.instance_ready(inst, self._now)

    def emit_keep_alive(self, inst: SimInstance, until: float) -> None:
        if self._eager_expiry:
            # Reference model: one event per keep-alive. URGENT so that, as with the lazy
            # heap, expiries come before other events of the same instant, in instance order.
            heappush(self._events, (until, URGENT, (inst.id << 40) + next(self._seq), self._on_eager_expiry,
                                    inst, until))
        elif inst.kseq is None or inst.kat > until:
            self._push_expiry(inst, until)

    def _on_eager_expiry(self, inst: Instance, until: float) -> None:
        if inst.state is IDLE and inst.keepalive_until_ms == until:
            self.keepalive_expired(inst, self._now)

    def emit_reject(self, row: int, now: float, reason: RejectReason, retry_after_ms: float) -> None:
        self._r_rejected[row] = 1
        self.rejected += 1
        self._settled += 1
        self._settled_at += now    # it waited until then if a re-route rejected it

    def emit_prewarm_timer(self, f: Function, at: float) -> None:
        seq = next(self._seq)
        heappush(self._events, (at, NORMAL, seq, self._on_prewarm_cb, f, seq))
        f.prewarm_handle = seq

    def _on_prewarm(self, f: Function, seq: int) -> None:
        if f.prewarm_handle != seq:
            return                            # cancelled by an arrival, or replaced by a later one
        f.prewarm_handle = None
        self.prewarm_due(f, self._now)

    # ------------------------------------------------------------------ the end
    def _load_more(self) -> int:
        """Streamed arrivals only (StreamingSimulation): load the next batch; the rows loaded."""
        raise NotImplementedError

    def _finish(self) -> None:
        """Close every live instance at the horizon (the last request's completion)."""
        self._close_at_horizon(self.instances)

    def _close_at_horizon(self, instances: list[SimInstance]) -> None:
        now = self._now
        for inst in instances:
            if inst.state is DEAD:
                continue
            if inst.state is IDLE:
                self._leave_idle(inst, now)
            elif inst.state is BUSY:   # cannot happen: every request has finished
                raise RuntimeError(f"{inst!r} still busy at the end of the run")
            inst.state = DEAD
            inst.died_ms = now
            inst.node_ref.used_mb -= inst.memory_mb
            inst.node_ref.instances.pop(inst.id, None)
            del inst.fn.instances[inst.id]
        self.horizon_ms = now
        self._done = True

    def _build_result(self) -> SimResult:
        import pandas as pd

        n = self.n
        arrival = self._arrival_np
        start = np.frombuffer(self._r_start, dtype=np.float64).copy()
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


# ------------------------------------------------------------------ streamed arrivals and results

class StreamingSimulation(Simulation):
    """A run whose arrivals come in batches and whose results go to Parquet parts as they
    happen (``wlsim.result.ResultSink``), so memory holds the per-function state, the rows
    loaded but not finished (one batch plus the requests in flight) and at most a part of
    result rows, whatever the trace's length; ``run()`` returns a
    :class:`~wlsim.result.StreamSummary` accumulated as the parts are written.

    ``batches``: canonical tables in arrival order (e.g. ``wlsim.traces.stream.iter_trace``),
    numbered on: request ids are rows of the whole stream. Decisions and results are the same
    as ``Simulation`` on the concatenated trace (tests/test_engine_stream.py), given what a
    stream cannot know ahead: a function's ``memory_mb`` (and concurrency column) must be the
    same in every row (``Simulation`` takes the largest over the whole trace; a batch that
    disagrees is an error), and a policy that needs the future (``needs_future``: the oracle)
    is refused. The policy's ``prepare`` gets the first batch.

    How: per-request state lives in dicts keyed by trace row instead of arrays over the whole
    trace (the effects' code is Simulation's: it only indexes them by row); a request's entries
    go when it completes or is rejected, as its row goes to the sink. An instance's row goes to
    the sink when it dies (and at the horizon for the ones still alive), so ``instances``
    stays empty and ids are counted.
    """

    __slots__ = ("_batch_arrival", "_instance_count", "_last_arrival", "_prefix_base", "_sink", "_summary")

    def __init__(self, batches: Iterable[pd.DataFrame], out_dir: str | Path, config: SimConfig | None = None,
                 policy: Policy | None = None, *, rows_per_part: int = 250_000,
                 eager_expiry: bool = False) -> None:
        if getattr(policy, "needs_future", False):
            raise ValueError(f"policy {getattr(policy, 'name', policy)!r} needs the whole trace ahead "
                             "(needs_future), which a streamed replay does not hold; replay it in memory")
        self._instance_count = 0
        super().__init__(batches, config, policy, eager_expiry=eager_expiry)
        self._sink = ResultSink(out_dir, self.function_names, getattr(self.policy, "name", type(self.policy).__name__),
                                rows_per_part)
        self._summary: StreamSummary | None = None

    # ------------------------------------------------------------------ batches in
    def _load(self, batches: Iterable[pd.DataFrame]) -> pd.DataFrame:
        from wlsim.traces.table import TraceError

        self._checked_config()
        self._chunks = iter(batches)
        self.n = 0
        self.function_names = []
        self.functions = []
        self._codes = {}                    # function name -> code
        self._cold_draws = {}
        self._cold_rng = random.Random(self.config.seed)
        self._spawn_times = _spawn_log(self.config)
        self._features = None
        self._last_arrival = -INF
        self._arrival_prefix = array("d", [0.0])
        self._prefix_base = 0
        self._batch_arrival = array("d")
        # Per request, by trace row; only rows loaded and not finished.
        self._arrival, self._duration, self._fcode, self._payload = {0: INF}, {}, {}, {}
        self._r_routed, self._r_start, self._r_inst, self._r_cold_ms = {}, {}, {}, {}
        self._r_cold, self._r_rejected = {}, {}
        first = self._next_batch()
        if first is None:
            raise TraceError("trace", "empty trace: no invocations")
        return first

    def _load_more(self) -> int:
        self._next_batch()
        return self.n

    def _next_batch(self) -> pd.DataFrame | None:
        """Load the next non-empty batch (None, and no more batches, at the end)."""
        from wlsim.traces.table import TraceError, validate

        # run() turns the cyclic garbage collector off (the engine makes no cycles), but a
        # pandas table and a written part leave some: collect them once per batch, or a long
        # stream would keep every batch's. The young generations only: they hold what was
        # made since the last batch; a full collection would scan every function's state.
        gc.collect(1)
        for batch in self._chunks:
            if len(batch) == 0:
                continue
            base = self.n
            source = f"trace batch from row {base}"
            table = validate(batch, source)
            m = len(table)
            arrival = table["arrival_ms"].to_numpy(dtype=np.float64)
            if arrival[0] < self._last_arrival:
                raise TraceError(source, f"arrivals not sorted: the batch starts at {arrival[0]} ms, before the "
                                         f"previous batch's last arrival ({self._last_arrival} ms)")
            self._last_arrival = float(arrival[-1])
            codes = self._function_codes(table, source)
            rows = range(base, base + m)
            self._arrival.update(zip(rows, arrival.tolist(), strict=True))
            self._arrival[base + m] = INF          # sentinel: "no more arrivals loaded"
            self._r_routed.update(zip(rows, arrival.tolist(), strict=True))
            self._duration.update(zip(rows, table["duration_ms"].to_numpy(dtype=np.float64).tolist(), strict=True))
            self._fcode.update(zip(rows, codes.tolist(), strict=True))
            payload = (table["payload_bytes"].to_numpy(dtype=np.float64).tolist() if "payload_bytes" in table.columns
                       else [0.0] * m)
            self._payload.update(zip(rows, payload, strict=True))
            names = feature_columns(list(table.columns))
            if base == 0:
                self._features = {c: {} for c in names} if names else None
            elif sorted(names) != sorted(self._features or ()):
                raise TraceError(source, f"feature columns {names} differ from the first batch's "
                                         f"{list(self._features or ())}")
            for c in names:
                self._features[c].update(zip(rows, table[c].to_numpy(dtype=np.float64).tolist(), strict=True))
            # Sums of arrival times up to each row of this batch (accrued_wait_ms), continuing the
            # running sum in the same order as Simulation's one cumsum over the whole trace.
            running = np.cumsum(np.concatenate([[self._arrival_prefix[-1]], arrival]))
            self._arrival_prefix = array("d", running.tobytes())
            self._prefix_base = base
            self._batch_arrival = array("d", arrival.tobytes())   # _in_flight's
            self.n = base + m
            return table
        self._chunks = None
        return None

    def _in_flight(self, now: float) -> int:
        # A batch loads once every earlier row has arrived: arrivals before it are its base.
        return self._prefix_base + bisect_right(self._batch_arrival, now) - self.completed - self.rejected

    def _function_codes(self, table: pd.DataFrame, source: str) -> np.ndarray:
        """The batch's function codes; functions seen for the first time are added (codes in
        order of first arrival, as Simulation numbers them); one memory size (and concurrency)
        per function across the whole stream."""
        import pandas as pd

        from wlsim.traces.table import TraceError

        local, uniques = pd.factorize(table["function"], sort=False)
        k, m = len(uniques), len(table)
        memory = table["memory_mb"].to_numpy(dtype=np.float64)
        hi, lo = np.zeros(k), np.full(k, INF)
        np.maximum.at(hi, local, memory)
        np.minimum.at(lo, local, memory)
        conc = np.full(k, int(self.config.concurrency), dtype=np.int64)
        if CONCURRENCY_COLUMN in table.columns:
            per_fn = np.zeros(k)
            np.fmax.at(per_fn, local, table[CONCURRENCY_COLUMN].to_numpy(dtype=np.float64))
            conc = np.where(per_fn >= 1, per_fn, conc).astype(np.int64)
        first = np.full(k, m, dtype=np.int64)
        np.minimum.at(first, local, np.arange(m))
        app_col = table["app"].to_numpy(dtype=object)
        known = self._codes
        code_of = np.empty(k, dtype=np.int64)
        for j, name in enumerate(uniques):
            name = str(name)
            if lo[j] != hi[j]:
                raise TraceError(source, f"function {name!r} has memory_mb {lo[j]:g} and {hi[j]:g}: a streamed "
                                         "replay needs one memory size per function")
            code = known.get(name)
            if code is None:
                code = known[name] = len(self.functions)
                self.function_names.append(name)
                self.functions.append(self._new_function(name, str(app_col[first[j]]), float(hi[j]), int(conc[j])))
            else:
                f = self.functions[code]
                if f.memory_mb != hi[j] or f.concurrency != conc[j]:
                    raise TraceError(source, f"function {name!r} changes from memory_mb {f.memory_mb:g}, concurrency "
                                             f"{f.concurrency} to {hi[j]:g}, {conc[j]}: a streamed replay needs one "
                                             "of each per function")
            code_of[j] = code
        return code_of[local]

    @property
    def held_requests(self) -> int:
        """Requests whose inputs are in memory: loaded and not yet finished (what bounds this
        run's memory besides the per-function state)."""
        return len(self._duration)

    @property
    def buffered_rows(self) -> int:
        """Result rows waiting for the next Parquet part (at most ``rows_per_part``)."""
        return self._sink.buffered_rows

    def accrued_wait_ms(self) -> float:
        arrived = self._next_row
        return (self._settled_at + (arrived - self._settled) * self._now
                - self._arrival_prefix[arrived - self._prefix_base])

    # ------------------------------------------------------------------ results out
    def _forget(self, row: int) -> tuple[float, float, int, float]:
        """Drop a finished request's inputs; returns its arrival, duration, function code, payload."""
        feats = self._features
        if feats is not None:
            for column in feats.values():
                del column[row]
        del self._r_routed[row]
        return self._arrival.pop(row), self._duration.pop(row), self._fcode.pop(row), self._payload.pop(row)

    def _on_exec_end(self, inst: Instance, row: int) -> None:
        now = self._now
        arrival, duration, fcode, payload = self._forget(row)
        del self._r_inst[row]
        self.completed += 1
        self.completed_latency_ms += now - arrival
        self._sink.add_request(row, fcode, arrival, self._r_start.pop(row), self._r_cold.pop(row, 0),
                               self._r_cold_ms.pop(row, 0.0), duration, now, inst.id)
        self.end_execution(inst, row, now, duration, payload)

    def emit_reject(self, row: int, now: float, reason: RejectReason, retry_after_ms: float) -> None:
        super().emit_reject(row, now, reason, retry_after_ms)
        del self._r_rejected[row]
        arrival, duration, fcode, _ = self._forget(row)
        self._sink.add_request(row, fcode, arrival, NAN, self._r_cold.pop(row, 0), self._r_cold_ms.pop(row, 0.0),
                               duration, NAN, -1)

    def new_instance(self, f: Function, node: Node, now: float, prewarmed: bool) -> SimInstance:
        inst = SimInstance(self._instance_count, f, node, now, prewarmed)
        self._instance_count += 1
        return inst

    def emit_kill(self, inst: Instance, now: float) -> None:
        self._sink.add_instance(inst)

    def _finish(self) -> None:
        live = sorted((i for node in self.nodes for i in node.instances.values()), key=lambda i: i.id)
        self._close_at_horizon(live)
        for inst in live:
            self._sink.add_instance(inst)

    def result(self) -> StreamSummary:  # type: ignore[override]
        """The summary of a finished run (its parts and summary.json written)."""
        if not self._done:
            raise RuntimeError("the simulation has not finished: answer decisions until next_decision() is None")
        if self._summary is None:
            self._summary = self._sink.close(self.horizon_ms, len(self.functions), self._wall_s)
        return self._summary


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


def simulate_stream(batches: Iterable[pd.DataFrame], policy: Policy | str, out_dir: str | Path,
                    config: SimConfig | None = None, *, rows_per_part: int = 250_000,
                    progress: Callable[[int, int], None] | None = None) -> StreamSummary:
    """Replay a trace given as batches in arrival order (e.g. ``wlsim.traces.stream.iter_trace``)
    under ``policy`` in one pass with bounded memory (``StreamingSimulation``): per-request and
    per-instance rows go to Parquet parts of at most ``rows_per_part`` rows in ``out_dir``
    (``requests/``, ``instances/``; ``wlsim.result.read_streamed`` reads them back whole) and the
    returned summary is also written to ``out_dir/summary.json``. ``progress(done_arrivals,
    loaded)`` is called every few thousand arrivals."""
    if isinstance(policy, str):
        from policies.registry import load_policy
        policy = load_policy(policy)
    t0 = time.perf_counter()
    sim = StreamingSimulation(batches, out_dir, config, policy, rows_per_part=rows_per_part)
    summary = sim.run(progress=progress)
    summary.wall_s = time.perf_counter() - t0
    return summary
