"""The metric tallies (router and node) export exactly what prometheus_client's Counter/Histogram would."""

import random

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram

from wlruntime.router.metrics import SECONDS_BUCKETS
from wlruntime.tallies import Counter, Histogram

pytestmark = pytest.mark.unit


def _exposition(counter_type, histogram_type) -> str:
    registry = CollectorRegistry()
    calls = counter_type("t_calls", "calls", ["function", "outcome"], registry=registry)
    swaps = counter_type("t_swaps", "swaps", registry=registry)
    seconds = histogram_type("t_seconds", "seconds", ["function"], buckets=SECONDS_BUCKETS, registry=registry)
    histogram_type("t_unused", "never observed", ["function"], buckets=SECONDS_BUCKETS, registry=registry)
    rng = random.Random(7)
    for i in range(3000):
        calls.labels(f"f{i % 3}", "ok").inc()
        # bounds themselves (a value equal to a bound is in that bucket), above the last, random
        seconds.labels(f"f{i % 2}").observe(rng.choice([*SECONDS_BUCKETS, 0.0, 100.0, rng.random() * 3]))
    seconds.labels("nan").observe(float("nan"))     # in no bucket, in the sum
    seconds.labels("nan").observe(0.5)
    calls.labels(function="g", outcome="timeout").inc(2)
    swaps.inc()
    text = generate_latest(registry).decode()
    # _created holds the creation time: present in both, equal in neither
    return "\n".join(line for line in text.splitlines() if "_created" not in line), text.count("_created")


def test_same_exposition_as_prometheus_client():
    ours, ours_created = _exposition(Counter, Histogram)
    theirs, theirs_created = _exposition(PromCounter, PromHistogram)
    assert ours == theirs
    assert ours_created == theirs_created > 0
    assert 't_seconds_bucket{function="f0",le="+Inf"} 1500.0' in ours


def test_bad_use_is_refused():
    counter = Counter("t_bad", "bad", ["function"])
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("f").inc(-1)
    with pytest.raises(ValueError, match="expected 1 label values"):
        counter.labels("f", "g")
    with pytest.raises(ValueError, match="labels must be function"):
        counter.labels(name="f")
