"""Exact sharded replay (wlsim.shard): split by application, merged, equal to one process."""

import pytest

from wlsim.config import ColdStartModel, SimConfig
from wlsim.engine import simulate
from wlsim.parallel import LocalExecutor
from wlsim.shard import ShardError, plan_shards, sharded_simulate
from wlsim.traces import read_trace

pytestmark = pytest.mark.integration   # worker processes

# Two hours of the bundled day keep the suite fast; bench/README has the whole day.
SLICE = (601, 720)


@pytest.fixture(scope="module")
def day_slice():
    return read_trace("traces/azure2019/40", seed=0, start_minute=SLICE[0], end_minute=SLICE[1])


@pytest.mark.parametrize("spec", ["fixed_ttl:ttl_ms=120000", "hybrid_histogram", "kpa", "faascache", "oracle"])
def test_sharded_equals_one_process(day_slice, spec):
    one = simulate(day_slice, spec)
    run = sharded_simulate(day_slice, spec, shards=3, executor=LocalExecutor(2))
    merged = run.result
    assert run.shards == 3
    assert merged.horizon_ms == one.horizon_ms
    # every request and instance identical, instance ids included (renumbered in spawn order)
    assert merged.requests.equals(one.requests)
    assert merged.instances.equals(one.instances)


def test_shards_keep_applications_whole(day_slice):
    plan = plan_shards(day_slice, 4)
    apps = [set(day_slice["app"].iloc[rows].astype(str)) for rows in plan]
    assert sum(len(rows) for rows in plan) == len(day_slice)
    for i in range(len(apps)):
        for j in range(i + 1, len(apps)):
            assert not apps[i] & apps[j]


def test_shard_in_process_executor_too(day_slice):
    # one worker: the shards run one after another in this process, same merge
    one = simulate(day_slice, "fixed_ttl")
    merged = sharded_simulate(day_slice, "fixed_ttl", shards=5, executor=LocalExecutor(1)).result
    assert merged.requests.equals(one.requests)


@pytest.mark.parametrize("config, spec, reason", [
    (SimConfig(node_memory_mb=4096), "fixed_ttl", "memory bound"),
    (SimConfig(nodes=2), "fixed_ttl", "2 nodes"),
    (SimConfig(), "faascache:memory_cap_mb=2048", "memory cap"),
    (SimConfig(), "default", "pools idle periods"),
    (SimConfig(cold_start=ColdStartModel(quantiles_ms={"f": (1.0, 2.0)})), "fixed_ttl", "drawn cold starts"),
])
def test_cannot_shard_says_why(day_slice, config, spec, reason):
    with pytest.raises(ShardError, match=reason):
        sharded_simulate(day_slice, spec, config, shards=2, executor=LocalExecutor(1))
