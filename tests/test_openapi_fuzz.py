"""Schemathesis against the router's and the registry's OpenAPI on a running platform: no
generated request gets a 500 (issue 12: errors are the caller's 4xx with a reason, never the
server's). The router's invoke paths are served before FastAPI (its ASGI fast path), so they
are added to its schema here, with the Lambda Invoke headers.

Left out: POST /admin/nodes (it would make the router health-check arbitrary generated
addresses; tests/test_e2e_router.py covers it)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from wl.testing import PlatformClient, start_platform
from wlruntime.platform import Platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BUILD = Path(__file__).resolve().parent.parent / "examples" / "build"
FUZZ = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
SKIPPED = {("/admin/nodes", "post")}

_INVOKE_PATHS = {
    "/invoke/{function}": {"post": {
        "operationId": "invoke",
        "parameters": [{"name": "function", "in": "path", "required": True, "schema": {"type": "string"}},
                       {"name": "X-WL-Feature-Priority", "in": "header", "required": False,
                        "schema": {"type": "string"}}],
        "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {"200": {"description": "the function's output"}}}},
    "/2015-03-31/functions/{function}/invocations": {"post": {
        "operationId": "lambda_invoke",
        "parameters": [
            {"name": "function", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "Qualifier", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "X-Amz-Invocation-Type", "in": "header", "required": False,
             "schema": {"anyOf": [{"enum": ["RequestResponse", "Event", "DryRun"]}, {"type": "string"}]}},
            {"name": "X-Amz-Log-Type", "in": "header", "required": False,
             "schema": {"anyOf": [{"enum": ["None", "Tail"]}, {"type": "string"}]}},
            {"name": "X-Amz-Client-Context", "in": "header", "required": False, "schema": {"type": "string"}}],
        "requestBody": {"content": {"application/json": {"schema": {}}}},
        "responses": {"200": {"description": "the function's output"}}}},
}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Platform]:
    p = start_platform(tmp_path_factory.mktemp("fuzz") / "wl", nodes=1,
                       cache_dir=request.config.cache.mkdir("wl-node-cache"))
    try:
        PlatformClient(p).deploy("echo", BUILD / "echo.wasm", {"memory_mb": 16})
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def router_openapi(platform: Platform):
    raw = copy.deepcopy(httpx.get(platform.router_url + "/openapi.json", timeout=10).json())
    raw["paths"].update(_INVOKE_PATHS)
    for path, method in SKIPPED:
        raw["paths"].get(path, {}).pop(method, None)
    return schemathesis.openapi.from_dict(raw)


@pytest.fixture(scope="module")
def registry_openapi(platform: Platform):
    return schemathesis.openapi.from_dict(httpx.get(platform.registry_url + "/openapi.json", timeout=10).json())


def _function_error(response) -> bool:
    """A 500 that is the function's own error (reported as such), not the server's."""
    headers = {k.lower(): v for k, v in response.headers.items()}
    return "x-wl-error" in headers or "x-amz-function-error" in headers


def fuzz(schema, base_url: str, token: str, allow_function_errors: bool) -> int:
    """Every operation of ``schema`` with generated requests, with and without the token;
    returns the number of operations exercised. (schemathesis' own pytest integration does
    not run on this pytest version, so hypothesis drives each operation's strategy here.)"""
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @FUZZ
        @given(case=operation.as_strategy())
        def check(case) -> None:
            for headers in ({"Authorization": f"Bearer {token}"}, {}):
                response = case.call(base_url=base_url, headers=headers, timeout=30)
                assert response.status_code < 500 or (allow_function_errors and _function_error(response)), (
                    case.method, case.formatted_path, response.status_code, response.text[:500])
                assert "Traceback" not in response.text

        check()
    return operations


def test_the_router_never_answers_500(router_openapi, platform: Platform) -> None:
    assert fuzz(router_openapi, platform.router_url, platform.token, allow_function_errors=True) >= 20


def test_the_registry_never_answers_500(registry_openapi, platform: Platform) -> None:
    assert fuzz(registry_openapi, platform.registry_url, platform.token, allow_function_errors=False) >= 7
