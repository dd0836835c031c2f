"""Property-based tests (hypothesis) of the inputs wl takes from users: trace files, request
feature headers, policy specs and function names. For any input: either a result that keeps
the documented invariants or the documented error with a clear message; never another
exception, never Python internals in the message."""

from __future__ import annotations

import base64
import itertools
import json
import math
import re
import string
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from policies.interface import Policy
from policies.registry import BUILTINS, PolicySpecError, load_policy, parameters_of
from wlruntime.registry.models import NAME_RE, NAME_RULE, name_problem

pytestmark = pytest.mark.unit

INTERNALS = re.compile(r"object has no attribute|Traceback|unexpected keyword argument|NoneType|"
                       r"object is not subscriptable|object is not iterable")
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- function names ----------------------------------------------------------------------------------
names = st.one_of(
    st.from_regex(NAME_RE, fullmatch=True),
    st.text(min_size=0, max_size=80),
    st.sampled_from(["", ".", "..", "../x", "a/b", "/etc/passwd", "A", "-x", "_x", "x" * 64, "é", "a b", "a\x00b"]),
)


@FAST
@given(names)
def test_a_name_is_valid_exactly_when_it_matches_the_rule(name: str) -> None:
    problem = name_problem(name)
    if NAME_RE.match(name) and "\n" not in name:
        assert problem is None
    else:
        assert problem is not None and NAME_RULE in problem


@pytest.fixture(scope="module")
def registry_client():
    from fastapi.testclient import TestClient

    from wlruntime.config import Settings
    from wlruntime.registry.server import create_app

    with tempfile.TemporaryDirectory() as tmp:
        settings_ = Settings(data_dir=Path(tmp))
        settings_.registry.token = "t"
        with TestClient(create_app(settings_)) as client:
            yield client


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names)
def test_the_registry_answers_every_name_with_the_rule_or_not_found(registry_client, name: str) -> None:
    path = quote(name, safe="").replace(".", "%2E")  # dots too: a client would collapse "../"
    for method, url in (("GET", f"/functions/{path}/versions/latest"), ("GET", f"/functions/{path}"),
                        ("DELETE", f"/functions/{path}")):
        r = registry_client.request(method, url, headers={"Authorization": "Bearer t"})
        if name_problem(name) is None:
            assert r.status_code == 404, (name, method, url, r.status_code, r.text)
        else:
            assert r.status_code in (400, 404), (name, url, r.status_code)
            if r.status_code == 400:
                assert NAME_RULE in r.json()["detail"]
            # A 404 only for paths no function route matches at all (e.g. an empty name).
            else:
                assert name == "" or "/" in name, (name, url, r.text)


# ---- policy specs ------------------------------------------------------------------------------------
values = st.one_of(st.integers(-10**6, 10**9).map(str), st.floats(allow_nan=True).map(str),
                   st.sampled_from(["true", "false", "", "abc", "1e400", "-0"]), st.text(max_size=8))
param_names = st.one_of(st.sampled_from(sorted({p for cls_path in BUILTINS.values()
                                                for p in ("ttl_ms", "memory_cap_mb", "target", "window",
                                                          "percentile", "keepalive")})),
                        st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=10))


@st.composite
def specs(draw) -> str:
    kind = draw(st.sampled_from(["builtin", "builtin", "builtin", "path", "text"]))
    if kind == "text":
        return draw(st.text(max_size=40))
    if kind == "path":
        head = draw(st.sampled_from(["custom", "learned", "wasm"]))
        return f"{head}:{draw(st.text(alphabet=string.ascii_letters + '/._-', max_size=20))}"
    name = draw(st.sampled_from(sorted(set(BUILTINS) - {"oracle"})))
    params = draw(st.lists(st.tuples(param_names, values), max_size=3))
    return ":".join([name, *(f"{k}={v}" for k, v in params)])


@settings(max_examples=200, deadline=None)
@given(specs())
def test_a_policy_spec_loads_or_is_a_clear_spec_error(spec: str) -> None:
    assume(":/" not in spec or not Path(spec.split(":", 1)[1]).exists() or spec.startswith("learned:"))
    try:
        policy = load_policy(spec)
    except PolicySpecError as error:
        message = str(error)
        assert message and not INTERNALS.search(message), message
        head = spec.strip().split(":", 1)[0]
        if "unknown parameter" in message and head in BUILTINS:
            from importlib import import_module

            module, cls = BUILTINS[head].split(":")
            for valid in parameters_of(getattr(import_module(module), cls)):
                assert valid in message  # the valid choices are named
        return
    assert isinstance(policy, Policy)


# ---- request features --------------------------------------------------------------------------------
feature_names = st.one_of(st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True), st.text(max_size=12))
feature_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                           st.text(max_size=10))
json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=8)


@st.composite
def client_contexts(draw) -> bytes | None:
    kind = draw(st.sampled_from(["none", "json", "features", "bytes"]))
    if kind == "none":
        return None
    if kind == "bytes":
        return draw(st.binary(max_size=30))
    value = draw(json_values) if kind == "json" else {"custom": {"wl_features": draw(
        st.dictionaries(feature_names, st.one_of(st.floats(), st.integers(), st.text(max_size=4), st.none()),
                        max_size=4))}}
    return base64.b64encode(json.dumps(value).encode())


@FAST
@given(headers=st.lists(st.tuples(feature_names, feature_values), max_size=5), context=client_contexts())
def test_feature_headers_become_finite_numbers_or_a_clear_400(headers, context) -> None:
    from wlruntime.router.http.invoke import features
    from wlruntime.router.state import BadRequest

    scope = {"headers": [(f"x-wl-feature-{k}".lower().encode("utf-8", "replace"),
                          v.encode("utf-8", "replace")) for k, v in headers]}
    assume(all(b"\n" not in k and b"\r" not in v for k, v in scope["headers"]))
    try:
        out = features(scope, context)
    except BadRequest as error:
        assert not INTERNALS.search(error.message), error.message
        return
    if out is not None:
        assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", k) for k in out)


# ---- trace loaders -----------------------------------------------------------------------------------
cells = st.one_of(st.floats(min_value=-10.0, max_value=1e7).map(str), st.just("nan"),
                  st.integers(-5, 10**7).map(str), st.sampled_from(["", "x", "inf", "-1", "1e3"]))
rows = st.lists(st.tuples(st.sampled_from(["a", "b", ""]), st.sampled_from(["f", "g", ""]), cells, cells, cells),
                min_size=0, max_size=12)


@settings(max_examples=80, deadline=None)
@given(rows=rows, drop=st.sampled_from([None, "app", "function", "arrival_ms", "duration_ms", "memory_mb"]))
def test_a_csv_trace_loads_into_the_canonical_table_or_names_the_problem(rows, drop) -> None:
    from wlsim.traces import TraceError, read_trace

    columns = ["app", "function", "arrival_ms", "duration_ms", "memory_mb"]
    keep = [i for i, c in enumerate(columns) if c != drop]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        lines = [",".join(columns[i] for i in keep)] + [",".join(str(r[i]) for i in keep) for r in rows]
        path.write_text("\n".join(lines) + "\n")
        try:
            df = read_trace(path)
        except TraceError as error:
            message = str(error)
            assert str(path) in message and not INTERNALS.search(message), message
            return
    assert drop is None and len(df) == len(rows) > 0
    for column in ("arrival_ms", "duration_ms", "memory_mb"):
        values = df[column].to_numpy(dtype=float)
        assert all(math.isfinite(v) and v >= 0 for v in values), (column, values)
    arrivals = df["arrival_ms"].to_numpy(dtype=float)
    assert all(a <= b for a, b in itertools.pairwise(arrivals))
