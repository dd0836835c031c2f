"""Loading policies by spec string: every built-in by name and with parameters, the example
custom policy, and custom policy files that cannot load (clear PolicySpecError messages)."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.builtin.default import ExpectedWait
from policies.builtin.faascache import FaasCache
from policies.builtin.fixed_ttl import FixedTTL
from policies.builtin.hybrid_histogram import HybridHistogram
from policies.builtin.kpa import KPA
from policies.builtin.oracle import Oracle
from policies.features import FunctionStats
from policies.interface import IDLE, KILL, FunctionView, InstanceView, KeepAlive, Policy
from policies.registry import BUILTINS, PolicySpecError, load_custom, load_policy

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "policies" / "keep_warm_5min.py"

CLASSES = {"fixed_ttl": FixedTTL, "hybrid_histogram": HybridHistogram, "faascache": FaasCache,
           "kpa": KPA, "default": ExpectedWait, "oracle": Oracle}


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_loads_by_name(name):
    policy = load_policy(name)
    assert type(policy) is CLASSES[name]
    assert policy.name == name
    assert policy.describe()["name"] == name


@pytest.mark.parametrize("spec, key, value", [
    ("fixed_ttl:ttl_ms=60000", "ttl_ms", 60_000.0),
    ("hybrid_histogram:margin=0.2:per_app=false", "per_app", False),
    ("hybrid_histogram:cv_threshold=1.5", "cv_threshold", 1.5),
    ("faascache:memory_cap_mb=4096", "memory_cap_mb", 4096.0),
    ("kpa:panic_threshold=3:queue_limit=2", "queue_limit", 2),
    ("default:percentile=90:max_keepalive_ms=120000", "max_keepalive_ms", 120_000.0),
    ("oracle:prewarm=false:latency_usd_per_s=0.01", "latency_usd_per_s", 0.01),
])
def test_builtins_take_parameters_from_the_spec(spec, key, value):
    assert load_policy(spec).describe()[key] == value


def test_an_unknown_parameter_names_the_spec():
    with pytest.raises(PolicySpecError, match=r"fixed_ttl:ttl=5.*ttl"):
        load_policy("fixed_ttl:ttl=5")


@pytest.mark.parametrize("spec, field", [
    ("fixed_ttl:ttl_ms=-1", "ttl_ms"),
    ("fixed_ttl:ttl_ms=ten", "ttl_ms"),
    ("kpa:stable_window_ms=0", "stable_window_ms"),
    ("default:min_keepalive_ms=9:max_keepalive_ms=8", "min_keepalive_ms"),
    ("faascache:memory_cap_mb=-4", "memory_cap_mb"),
    ("oracle:prewarm=maybe", "prewarm"),
])
def test_a_bad_parameter_value_names_the_parameter(spec, field):
    with pytest.raises(PolicySpecError, match=field):
        load_policy(spec)


def test_an_unknown_policy_lists_the_known_ones():
    with pytest.raises(PolicySpecError, match=r"unknown policy 'lru'.*fixed_ttl.*hybrid_histogram"):
        load_policy("lru")


# ----------------------------------------------------------------------- custom policies

def test_the_example_custom_policy_loads_by_path_and_decides():
    policy = load_policy(f"custom:{EXAMPLE}")
    assert isinstance(policy, Policy) and type(policy).__name__ == "KeepWarm5Min"
    assert policy.describe() == {"name": "keep_warm_5min", "minutes": 5.0}
    fn = FunctionView("f", stats=FunctionStats())
    inst = InstanceView(0, fn, "node0", 128.0, 1, 0.0)
    inst.state, inst.idle_since_ms = IDLE, 1_000.0
    fn.instances[0] = inst
    fn.idle.append(inst)
    assert policy.on_idle(1_000.0, inst, fn) == KeepAlive(300_000.0)
    assert policy.on_idle(301_000.0, inst, fn) == KILL


def test_the_example_takes_a_class_name_and_parameters():
    assert load_policy(f"custom:{EXAMPLE}:KeepWarm5Min:minutes=2").describe()["minutes"] == 2.0
    assert load_policy(f"custom:{EXAMPLE}:minutes=3").describe()["minutes"] == 3.0
    assert load_custom(EXAMPLE, "KeepWarm5Min", minutes=1.5).describe()["minutes"] == 1.5


def test_the_example_loads_by_the_relative_path_in_its_docstring(monkeypatch):
    monkeypatch.chdir(EXAMPLE.parents[2])
    assert load_policy("custom:examples/policies/keep_warm_5min.py").name == "keep_warm_5min"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.py"
    with pytest.raises(PolicySpecError, match=f"not found: {missing}"):
        load_policy(f"custom:{missing}")


def test_a_syntax_error_is_reported_with_the_file(tmp_path):
    path = write(tmp_path, "broken.py", "from policies import Policy\nclass P(Policy)\n    pass\n")
    with pytest.raises(PolicySpecError, match=r"broken\.py failed to import: SyntaxError"):
        load_policy(f"custom:{path}")


def test_an_error_while_importing_is_reported(tmp_path):
    path = write(tmp_path, "raises.py", "raise RuntimeError('no config here')\n")
    with pytest.raises(PolicySpecError, match="RuntimeError: no config here"):
        load_custom(path)


def test_a_file_without_a_policy_class_says_so(tmp_path):
    path = write(tmp_path, "empty.py", "class NotAPolicy:\n    pass\n")
    with pytest.raises(PolicySpecError, match=r"exactly one Policy subclass \(found: none\)"):
        load_policy(f"custom:{path}")


def test_a_file_with_two_policy_classes_asks_for_a_name(tmp_path):
    path = write(tmp_path, "two.py", "from policies import Policy\n"
                                     "class A(Policy):\n    pass\n"
                                     "class B(Policy):\n    pass\n")
    with pytest.raises(PolicySpecError, match=r"found: A, B\); name one with custom:.*two\.py:ClassName"):
        load_policy(f"custom:{path}")
    assert type(load_policy(f"custom:{path}:B")).__name__ == "B"


def test_an_imported_builtin_does_not_count_as_the_files_policy(tmp_path):
    path = write(tmp_path, "mine.py", "from policies.builtin.fixed_ttl import FixedTTL\n"
                                      "class Mine(FixedTTL):\n    name = 'mine'\n")
    policy = load_policy(f"custom:{path}:ttl_ms=1000")
    assert policy.name == "mine" and policy.describe()["ttl_ms"] == 1000.0


def test_a_named_class_that_is_missing_or_not_a_policy(tmp_path):
    path = write(tmp_path, "one.py", "from policies import Policy\nclass A(Policy):\n    pass\n"
                                     "class Helper:\n    pass\n")
    with pytest.raises(PolicySpecError, match="has no class 'Z'"):
        load_policy(f"custom:{path}:Z")
    with pytest.raises(PolicySpecError, match=r"not a subclass of policies\.Policy"):
        load_policy(f"custom:{path}:Helper")


def test_a_custom_policy_with_a_bad_parameter(tmp_path):
    with pytest.raises(PolicySpecError, match="unknown parameter hours; valid parameters: "):
        load_policy(f"custom:{EXAMPLE}:hours=2")


def test_with_absolute_path_makes_existing_relative_paths_absolute(tmp_path):
    from policies.registry import with_absolute_path

    (tmp_path / "mine.py").write_text("")
    (tmp_path / "art").mkdir()
    assert with_absolute_path("custom:mine.py:Mine:k=1", tmp_path) == f"custom:{tmp_path / 'mine.py'}:Mine:k=1"
    assert with_absolute_path("learned:art", tmp_path) == f"learned:{tmp_path / 'art'}"
    assert with_absolute_path("wasm:missing.wasm:fuel=5", tmp_path) == "wasm:missing.wasm:fuel=5"
    assert with_absolute_path("fixed_ttl:ttl_ms=5", tmp_path) == "fixed_ttl:ttl_ms=5"
    assert with_absolute_path(f"custom:{tmp_path / 'mine.py'}", "/") == f"custom:{tmp_path / 'mine.py'}"
