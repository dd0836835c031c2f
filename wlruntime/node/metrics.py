"""Prometheus metrics of a node (prometheus-client), served on their own HTTP port.

Each NodeRuntime gets its own CollectorRegistry so several nodes can live in one process (tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from wlruntime import tallies

if TYPE_CHECKING:
    from wlruntime.node.runtime import NodeRuntime, SpawnResult
    from wlruntime.wasm.runners import Outcome

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class NodeMetrics:
    def __init__(self, node_id: str) -> None:
        self.registry = CollectorRegistry()
        self.node_id = node_id
        # Per invocation: tallies (no lock of their own; ``invocation`` is called under the
        # runtime's lock, from the event loop and the pool's threads alike).
        self.invocations = tallies.Counter("wl_node_invocations", "Invocations run on this node",
                                           ["function", "outcome"], registry=self.registry)
        self.invocation_seconds = tallies.Histogram("wl_node_invocation_seconds", "Function execution time",
                                                    ["function"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.cold_starts = Counter("wl_node_cold_starts", "Instances spawned",
                                   ["function", "code_cached", "compile_source"], registry=self.registry)
        self.cold_start_seconds = Histogram("wl_node_cold_start_seconds", "Spawn time (fetch+compile+instantiate)",
                                            ["function"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.inline_retries = Counter("wl_node_inline_retries", "Invocations interrupted at the inline budget "
                                      "(2-4 ms on the event loop) and run again on the pool", ["function"],
                                      registry=self.registry)
        self._runtime: NodeRuntime | None = None
        self._invocation_children: dict[tuple[str, str], Any] = {}
        self._seconds_children: dict[str, Any] = {}

    def attach(self, runtime: NodeRuntime) -> None:
        """Report the runtime's instance table (instances by state, memory) at scrape time."""
        self._runtime = runtime
        self.registry.register(_InstanceCollector(self))

    def invocation(self, function: str, outcome: Outcome) -> None:
        """One invocation ended; call under the runtime's lock (the tallies have none)."""
        # Bound children are cached: ``labels()`` builds a key on every call.
        key = (function, outcome.error)
        counter = self._invocation_children.get(key)
        if counter is None:
            counter = self._invocation_children[key] = self.invocations.labels(function, outcome.error)
        histogram = self._seconds_children.get(function)
        if histogram is None:
            histogram = self._seconds_children[function] = self.invocation_seconds.labels(function)
        counter.inc()
        histogram.observe(outcome.exec_ms / 1000.0)

    def inline_retry(self, function: str) -> None:
        self.inline_retries.labels(function).inc()

    def cold_start(self, result: SpawnResult) -> None:
        self.cold_starts.labels(result.function, str(result.code_cached).lower(), result.compile_source).inc()
        self.cold_start_seconds.labels(result.function).observe(result.cold_start_ms / 1000.0)

    def serve(self, port: int, host: str = "127.0.0.1") -> Any:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server


class _InstanceCollector:
    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self):
        runtime = self.metrics._runtime
        if runtime is None:
            return
        counts = runtime.instance_counts()
        memory_used = counts.pop("memory_used_mb")
        instances = GaugeMetricFamily("wl_node_instances", "Instances on this node by state", labels=["state"])
        for state, count in sorted(counts.items()):
            instances.add_metric([state.lower()], count)
        yield instances
        yield GaugeMetricFamily("wl_node_memory_used_mb", "Memory reserved by instances", value=memory_used)
        yield GaugeMetricFamily("wl_node_memory_capacity_mb", "Memory this node offers",
                                value=runtime.memory_capacity_mb)
