"""The router's Prometheus metrics (served at /metrics).

Per-request updates use label children cached on the Function record, so the hot path pays a
dictionary lookup and an ``inc``/``observe`` of a ``tallies`` child (plain attributes, exported as
Prometheus counters and histograms when scraped); instance counts are computed at scrape time.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from wlruntime.router.deadline import DeadlineCollector
from wlruntime.tallies import Counter, Histogram

# Latency buckets from 0.1 ms (a warm call on loopback) to 60 s (a slow cold start + timeout).
SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DECISION_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.1)


class RouterMetrics:
    def __init__(self, instances: Callable[[], Iterable[tuple[str, str, str]]],
                 nodes: Callable[[], Iterable[tuple[str, bool, float, float]]]) -> None:
        """``instances()`` yields (function, node, state) of live instances; ``nodes()`` yields
        (node, alive, capacity_mb, free_mb)."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.invocations = Counter("wl_router_invocations", "Requests answered, by function and outcome "
                                   "(ok, function_error, timeout, throttled, payload_too_large, not_found, "
                                   "node_error, no_capacity, ...)", ["function", "outcome"], registry=r)
        self.cold_starts = Counter("wl_router_cold_starts", "Instances spawned (cold starts), by function",
                                   ["function"], registry=r)
        self.spawn_failures = Counter("wl_router_spawn_failures", "Spawns that failed, by function",
                                      ["function"], registry=r)
        self.cold_start_seconds = Histogram("wl_router_cold_start_seconds", "Spawn time seen by the router",
                                            ["function"], buckets=SECONDS_BUCKETS, registry=r)
        self.duration = Histogram("wl_router_duration_seconds", "Execution time reported by the node",
                                  ["function"], buckets=SECONDS_BUCKETS, registry=r)
        self.wait = Histogram("wl_router_wait_seconds", "Time from arrival to execution start (queueing "
                              "and cold start)", ["function"], buckets=SECONDS_BUCKETS, registry=r)
        self.latency = Histogram("wl_router_request_seconds", "Arrival to answer, as the router sees it",
                                 ["function"], buckets=SECONDS_BUCKETS, registry=r)
        self.decision = Histogram("wl_router_policy_decision_seconds", "Time spent in the policy, by "
                                  "decision (route, on_idle, evict, prewarm)", ["decision"],
                                  buckets=DECISION_BUCKETS, registry=r)
        self.policy_errors = Counter("wl_router_policy_errors", "Policy calls that raised or answered "
                                     "something invalid (the router fell back to the base policy)",
                                     ["decision"], registry=r)
        self.node_rpcs = Counter("wl_router_node_rpcs", "Calls to nodes by operation (invoke, keep_alive, kill, "
                                 "spawn)", ["op"], registry=r)
        self.rpc_invoke = self.node_rpcs.labels("invoke")
        self.rpc_keep_alive = self.node_rpcs.labels("keep_alive")
        self.rpc_kill = self.node_rpcs.labels("kill")
        self.rpc_spawn = self.node_rpcs.labels("spawn")
        self.policy_swaps = Counter("wl_router_policy_swaps", "Policy changes at run time", registry=r)
        r.register(DeadlineCollector())  # policy decisions over their time budget (deadline.py)
        self.route_seconds = self.decision.labels("route")
        self.on_idle_seconds = self.decision.labels("on_idle")
        r.register(_StateCollector(instances, nodes))
        self._watching_nodes = False

    def watch_nodes(self, nodes: Callable[[], Iterable[Any]]) -> None:
        """Export each node's health (``NodeHealthCollector``) from the pool's node records; once."""
        if not self._watching_nodes:
            self.registry.register(NodeHealthCollector(nodes))
            self._watching_nodes = True

    def children(self, fn: Any) -> dict[str, Any]:
        """Label children for one function, cached on the Function record."""
        c = fn.metric_children
        if not c:
            name = fn.name
            c["duration"] = self.duration.labels(name)
            c["wait"] = self.wait.labels(name)
            c["latency"] = self.latency.labels(name)
            c["cold"] = self.cold_starts.labels(name)
            c["cold_seconds"] = self.cold_start_seconds.labels(name)
        return c

    def outcome(self, fn_name: str, outcome: str, cache: dict[str, Any] | None = None) -> None:
        if cache is not None:
            child = cache.get(outcome)
            if child is None:
                child = cache[outcome] = self.invocations.labels(fn_name, outcome)
            child.inc()
        else:
            self.invocations.labels(fn_name, outcome).inc()


class NodeHealthCollector:
    """Each node's health as the router's node pool sees it, computed when scraped:
    ``wl_router_node_health_misses`` (consecutive failed health checks; 0 on a healthy node) and,
    when the node records carry a ``failures`` count, ``wl_router_node_failures`` (times the
    router marked the node dead). Up/down is ``wl_router_node_up`` (``_StateCollector``)."""

    def __init__(self, nodes: Callable[[], Iterable[Any]]) -> None:
        self._nodes = nodes

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        misses = GaugeMetricFamily("wl_router_node_health_misses", "Consecutive failed health checks of the "
                                   "node (0 when it answers)", labels=["node"])
        failures = CounterMetricFamily("wl_router_node_failures", "Times the router marked the node dead "
                                       "(health check failed, call failed, or removed)", labels=["node"])
        counted = False
        for node in self._nodes():
            misses.add_metric([node.name], float(getattr(node, "misses", 0)))
            count = getattr(node, "failures", None)
            if count is not None:
                failures.add_metric([node.name], float(count))
                counted = True
        yield misses
        if counted:
            yield failures


class _StateCollector:
    """Instances by function, node and state, and node capacity, computed when scraped."""

    def __init__(self, instances: Callable[[], Iterable[tuple[str, str, str]]],
                 nodes: Callable[[], Iterable[tuple[str, bool, float, float]]]) -> None:
        self._instances = instances
        self._nodes = nodes

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily("wl_router_instances", "Live instances by function, node and state",
                              labels=["function", "node", "state"])
        for (fn, node, state), n in sorted(Tally(self._instances()).items()):
            g.add_metric([fn, node, state], n)
        yield g
        up = GaugeMetricFamily("wl_router_node_up", "1 when the router considers the node alive", labels=["node"])
        cap = GaugeMetricFamily("wl_router_node_memory_capacity_mb", "Node memory offered to instances",
                                labels=["node"])
        free = GaugeMetricFamily("wl_router_node_memory_free_mb", "Node memory not held by instances (router's "
                                 "accounting)", labels=["node"])
        for name, alive, capacity, free_mb in self._nodes():
            up.add_metric([name], 1.0 if alive else 0.0)
            cap.add_metric([name], capacity)
            free.add_metric([name], free_mb)
        yield up
        yield cap
        yield free
