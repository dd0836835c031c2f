"""/metrics shows each node's health from the router's node records: up/down, consecutive
failed health checks, and the failure count when the records keep one."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest

from wl.testing import metric_value
from wlruntime.router.metrics import RouterMetrics

pytestmark = pytest.mark.unit


def scrape(nodes: list[SimpleNamespace]) -> str:
    metrics = RouterMetrics(list, lambda: [(n.name, n.alive, 1024.0, 512.0) for n in nodes])
    metrics.watch_nodes(lambda: nodes)
    metrics.watch_nodes(lambda: nodes)  # a second app on the same router registers nothing twice
    return generate_latest(metrics.registry).decode()


def test_each_nodes_health_is_scraped_from_its_record() -> None:
    nodes = [SimpleNamespace(name="node-1", alive=True, misses=0),
             SimpleNamespace(name="node-2", alive=False, misses=3)]
    text = scrape(nodes)
    assert metric_value(text, "wl_router_node_up", node="node-1") == 1
    assert metric_value(text, "wl_router_node_up", node="node-2") == 0
    assert metric_value(text, "wl_router_node_health_misses", node="node-1") == 0
    assert metric_value(text, "wl_router_node_health_misses", node="node-2") == 3
    assert "wl_router_node_failures" not in text  # records without a count: nothing invented

    nodes[1].failures = 2
    nodes[1].misses = 0  # re-admitted
    text = scrape(nodes)
    assert metric_value(text, "wl_router_node_failures_total", node="node-2") == 2
    assert metric_value(text, "wl_router_node_health_misses", node="node-2") == 0
