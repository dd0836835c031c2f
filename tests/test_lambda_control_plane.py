"""The Lambda control plane and the Invoke API's Lambda behaviours, end to end with boto3 against
a real platform (registry, router, wasmtime node as subprocesses): every control-plane
operation, AWS-shaped errors for unsupported operations, tail logs, JSON-only payloads, and
Event invocations retried on function errors and kept across a router restart."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import wait_until

from wlruntime.platform import Child, Platform
from wlruntime.registry.models import DEFAULT_MAX_INSTANCES

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BUILD = Path(__file__).resolve().parent.parent / "examples" / "build"
ECHO = (BUILD / "echo.wasm").read_bytes()
JSON_TRANSFORM = (BUILD / "json_transform.wasm").read_bytes()
RETRY_DELAYS = "0.2,4"  # the second retry comes late enough to restart the router before it


def zipped(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Platform]:
    pytest_cache = getattr(request.config, "cache", None)   # None under -p no:cacheprovider
    cache = pytest_cache.mkdir("wl-node-cache") if pytest_cache is not None else None
    p = Platform(tmp_path_factory.mktemp("lambda"), nodes=1, cache_dir=cache, supervise=False,
                 router_args=["--event-retry-delays", RETRY_DELAYS])
    p.start(timeout_s=120.0)
    try:
        yield p
    finally:
        p.stop()


def lambda_client(platform: Platform, key: str | None = None):
    return boto3.client("lambda", endpoint_url=platform.router_url, region_name="us-east-1",
                        aws_access_key_id=key or platform.token, aws_secret_access_key="unused",
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120))


@pytest.fixture(scope="module")
def lam(platform: Platform):
    return lambda_client(platform)


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_every_control_plane_operation_through_boto3(lam) -> None:
    created = lam.create_function(FunctionName="cp-echo", Role="arn:aws:iam::1:role/r", Runtime="provided.al2023",
                                  Handler="echo", Code={"ZipFile": zipped(("echo.wasm", ECHO))}, MemorySize=128,
                                  Timeout=2, Description="an echo", Environment={"Variables": {"MODE": "loud"}})
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert (created["FunctionName"], created["MemorySize"], created["Timeout"], created["Version"]) == \
        ("cp-echo", 128, 2, "$LATEST")
    assert created["FunctionArn"].endswith(":function:cp-echo")
    assert created["Environment"] == {"Variables": {"MODE": "loud"}}
    assert (created["Description"], created["Role"], created["Handler"]) == ("an echo", "arn:aws:iam::1:role/r", "echo")
    assert created["CodeSize"] == len(ECHO) and created["State"] == "Active"
    import hashlib
    assert base64.b64decode(created["CodeSha256"]) == hashlib.sha256(ECHO).digest()

    with pytest.raises(ClientError) as conflict:
        lam.create_function(FunctionName="cp-echo", Role="r", Code={"ZipFile": ECHO})
    assert error_code(conflict) == "ResourceConflictException"

    assert lam.invoke(FunctionName="cp-echo", Payload=b'{"a": 1}')["Payload"].read() == b'{"a": 1}'

    got = lam.get_function(FunctionName="cp-echo")
    assert got["Configuration"]["MemorySize"] == 128
    assert "Concurrency" not in got, "nothing reserved: AWS omits Concurrency"
    code = httpx.get(got["Code"]["Location"])
    assert code.status_code == 200 and code.content == ECHO
    assert lam.get_function_configuration(FunctionName="cp-echo")["Description"] == "an echo"

    updated = lam.update_function_configuration(FunctionName="cp-echo", MemorySize=256, Timeout=5,
                                                Environment={"Variables": {"MODE": "quiet"}})
    assert (updated["MemorySize"], updated["Timeout"], updated["Environment"]["Variables"]) == \
        (256, 5, {"MODE": "quiet"})
    assert updated["Description"] == "an echo", "unchanged fields stay"

    new_code = lam.update_function_code(FunctionName="cp-echo", ZipFile=JSON_TRANSFORM, Publish=True)
    assert new_code["Version"] == "3" and new_code["MemorySize"] == 256
    out = json.loads(lam.invoke(FunctionName="cp-echo", Payload=b'{"city": "paris"}')["Payload"].read())
    assert out["city"] == "PARIS"
    first = lam.get_function_configuration(FunctionName="cp-echo", Qualifier="1")
    assert (first["Version"], first["MemorySize"]) == ("1", 128)
    with pytest.raises(ClientError) as missing_version:
        lam.get_function(FunctionName="cp-echo", Qualifier="9")
    assert error_code(missing_version) == "ResourceNotFoundException"

    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName="cp-echo")["Versions"]]
    assert versions == ["$LATEST", "1", "2", "3"]
    assert lam.publish_version(FunctionName="cp-echo")["Version"] == "3"

    unreserved = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
    assert unreserved == lam.get_account_settings()["AccountLimit"]["ConcurrentExecutions"], \
        "functions without reserved concurrency reserve none of the account's"
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName="cp-echo")
    assert lam.put_function_concurrency(FunctionName="cp-echo",
                                        ReservedConcurrentExecutions=3)["ReservedConcurrentExecutions"] == 3
    assert lam.get_function_concurrency(FunctionName="cp-echo")["ReservedConcurrentExecutions"] == 3
    assert lam.get_function(FunctionName="cp-echo")["Concurrency"] == {"ReservedConcurrentExecutions": 3}
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == unreserved - 3
    with pytest.raises(ClientError) as too_many:
        lam.put_function_concurrency(FunctionName="cp-echo", ReservedConcurrentExecutions=DEFAULT_MAX_INSTANCES)
    assert error_code(too_many) == "InvalidParameterValueException"
    lam.delete_function_concurrency(FunctionName="cp-echo")
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName="cp-echo")
    assert "Concurrency" not in lam.get_function(FunctionName="cp-echo")
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == unreserved

    for name in ("cp-a", "cp-b"):
        lam.create_function(FunctionName=name, Role="r", Code={"ZipFile": ECHO})
    page = lam.list_functions(MaxItems=2)
    assert len(page["Functions"]) == 2 and "NextMarker" in page
    names = [f["FunctionName"] for p in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2})
             for f in p["Functions"]]
    assert {"cp-echo", "cp-a", "cp-b"} <= set(names) and len(names) == len(set(names))

    settings = lam.get_account_settings()
    assert settings["AccountUsage"]["FunctionCount"] >= 3
    assert settings["AccountUsage"]["TotalCodeSize"] >= len(ECHO) * 3
    assert settings["AccountLimit"]["ConcurrentExecutions"] > 0

    lam.delete_function(FunctionName="cp-b")
    with pytest.raises(ClientError) as deleted:
        lam.get_function(FunctionName="cp-b")
    assert error_code(deleted) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as gone:
        lam.invoke(FunctionName="cp-b", Payload=b"{}")
    assert error_code(gone) == "ResourceNotFoundException"


def test_bad_requests_get_aws_errors_that_say_what_is_wrong(platform: Platform, lam) -> None:
    with pytest.raises(ClientError) as two:
        lam.create_function(FunctionName="cp-two", Role="r",
                            Code={"ZipFile": zipped(("a.wasm", ECHO), ("b.wasm", ECHO))})
    assert error_code(two) == "InvalidParameterValueException"
    assert "exactly one .wasm" in str(two.value) and "a.wasm, b.wasm" in str(two.value)
    with pytest.raises(ClientError) as not_code:
        lam.create_function(FunctionName="cp-text", Role="r", Code={"ZipFile": b"hello"})
    assert error_code(not_code) == "InvalidParameterValueException"
    with pytest.raises(ClientError) as bad_name:
        lam.create_function(FunctionName="Has_Upper", Role="r", Code={"ZipFile": ECHO})
    assert error_code(bad_name) == "ValidationException" and "lowercase" in str(bad_name.value)
    # boto3 checks MemorySize itself; an unmodified raw client reaches wl's own check.
    huge = httpx.post(f"{platform.router_url}/2015-03-31/functions",
                      headers={"Authorization": f"Bearer {platform.token}"},
                      json={"FunctionName": "cp-huge", "Role": "r", "MemorySize": 100_000,
                            "Code": {"ZipFile": base64.b64encode(ECHO).decode()}})
    assert huge.status_code == 400 and huge.headers["x-amzn-errortype"] == "InvalidParameterValueException"
    assert "memory_mb" in huge.json()["message"]

    with pytest.raises(ClientError) as unsupported:
        lam.list_aliases(FunctionName="cp-echo")
    assert error_code(unsupported) == "UnsupportedOperationException"
    assert "ListAliases" in str(unsupported.value)
    raw = httpx.post(f"{platform.router_url}/2015-03-31/functions/cp-echo/policy", json={})
    assert raw.headers["x-amzn-errortype"] == "UnsupportedOperationException"
    assert "AddPermission" in raw.json()["message"]

    with pytest.raises(ClientError) as stranger:
        lambda_client(platform, key="not-the-token").list_functions()
    assert error_code(stranger) == "UnrecognizedClientException"


def test_tail_logs_and_json_only_payloads(lam) -> None:
    lam.create_function(FunctionName="cp-tail", Role="r", Code={"ZipFile": JSON_TRANSFORM}, MemorySize=128)
    cold = lam.invoke(FunctionName="cp-tail", Payload=b'{"x": 1}', LogType="Tail")
    log = base64.b64decode(cold["LogResult"]).decode()
    lines = log.splitlines()
    assert lines[0].startswith("START RequestId: ") and lines[-2].startswith("END RequestId: ")
    report = lines[-1]
    for field in ("Duration:", "Billed Duration:", "Memory Size: 128 MB", "Max Memory Used:", "Init Duration:"):
        assert field in report, (field, report)
    warm = base64.b64decode(lam.invoke(FunctionName="cp-tail", Payload=b"{}", LogType="Tail")["LogResult"]).decode()
    assert "REPORT RequestId" in warm and "Init Duration" not in warm, "Init Duration is for cold starts only"

    failed = lam.invoke(FunctionName="cp-tail", Payload=b"[1]", LogType="Tail")
    assert failed["FunctionError"] == "Unhandled"
    assert "json_transform: invalid request" in base64.b64decode(failed["LogResult"]).decode()

    with pytest.raises(ClientError) as not_json:
        lam.invoke(FunctionName="cp-tail", Payload=b"not json")
    assert error_code(not_json) == "InvalidRequestContentException"
    assert not_json.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def admin(platform: Platform, path: str) -> dict:
    return httpx.get(f"{platform.router_url}{path}", headers={"Authorization": f"Bearer {platform.token}"}).json()


def restart_router(platform: Platform, policy: str | None = None) -> None:
    old = platform.router
    assert old is not None
    old.stop(grace_s=15.0)
    argv = list(old.argv)
    if policy is not None:
        argv[argv.index("--policy") + 1] = policy
    platform.router = Child(old.name, argv, old.log_path, old.env, None)

    def started() -> bool:
        try:
            health = httpx.get(f"{platform.router_url}/healthz", timeout=1.0).json()
        except (httpx.HTTPError, ValueError):
            return False
        return bool(health.get("started")) and health.get("nodes_alive") == platform.n_nodes

    wait_until(started, 60.0, message="the router did not come back")


def test_event_invocations_are_retried_and_survive_a_router_restart(platform: Platform, lam) -> None:
    lam.create_function(FunctionName="cp-event", Role="r", Code={"ZipFile": JSON_TRANSFORM})
    ok = lam.invoke(FunctionName="cp-event", InvocationType="Event", Payload=b'{"fine": true}')
    assert ok["StatusCode"] == 202
    wait_until(lambda: admin(platform, "/admin/events")["since_start"]["succeeded"] >= 1, 30.0)

    bad = lam.invoke(FunctionName="cp-event", InvocationType="Event", Payload=b"[1]")  # the function fails
    assert bad["StatusCode"] == 202

    def errors_logged() -> int:
        return sum(1 for e in admin(platform, "/admin/logs/cp-event?limit=200") if e["error"] != "none")

    wait_until(lambda: errors_logged() >= 2, 30.0, message="the first retry did not run")
    state = admin(platform, "/admin/events")
    assert state["pending"] == 1 and state["failed"] == 0  # the second retry waits 4 s

    restart_router(platform)  # the queue is in <data dir>/router/events.db
    wait_until(lambda: admin(platform, "/admin/events")["failed"] == 1, 30.0,
               message="the second retry did not run after the restart")
    after = admin(platform, "/admin/events")
    assert after["pending"] == 0
    failure = after["recent_failures"][0]
    assert failure["attempts"] == 3 and failure["function"] == "cp-event", failure
    assert "function_error" in failure["error"]
    assert errors_logged() == 1, "after the restart only the last attempt ran"


def test_a_router_starts_with_uploaded_routing_code(platform: Platform) -> None:
    headers = {"Authorization": f"Bearer {platform.token}"}
    code = (BUILD / "policies" / "keep_warm.wasm").read_bytes()
    uploaded = httpx.post(f"{platform.router_url}/admin/policies/kw", headers=headers,
                          files={"code": ("keep_warm.wasm", code)})
    assert uploaded.status_code == 201, uploaded.text
    restart_router(platform, policy="uploaded:kw@1")
    assert admin(platform, "/admin/policy")["spec"] == "uploaded:kw@1"
    assert httpx.post(f"{platform.router_url}/invoke/cp-echo", content=b'{"still": "served"}').status_code == 200


@pytest.fixture(scope="module")
def two_versions(lam) -> str:
    """cp-ver: version 1 echoes, version 2 (the latest) upper-cases JSON values."""
    lam.create_function(FunctionName="cp-ver", Role="r", Code={"ZipFile": ECHO}, MemorySize=128)
    assert lam.update_function_code(FunctionName="cp-ver", ZipFile=JSON_TRANSFORM, Publish=True)["Version"] == "2"
    return "cp-ver"


def test_invoke_qualifiers_that_name_the_latest_version_and_unknown_ones(lam, two_versions: str) -> None:
    arn = lam.get_function_configuration(FunctionName=two_versions)["FunctionArn"]
    for target, qualifier in ((two_versions, "$LATEST"), (two_versions, "2"), (f"{arn}:2", None)):
        extra = {"Qualifier": qualifier} if qualifier else {}
        answer = lam.invoke(FunctionName=target, Payload=b'{"city": "paris"}', **extra)
        assert json.loads(answer["Payload"].read())["city"] == "PARIS", (target, qualifier)
        assert answer["ExecutedVersion"] == "2"
    for target, qualifier in ((two_versions, "9"), (two_versions, "prod"), (f"{arn}:9", None)):
        extra = {"Qualifier": qualifier} if qualifier else {}
        with pytest.raises(ClientError) as missing:
            lam.invoke(FunctionName=target, Payload=b"{}", **extra)
        assert error_code(missing) == "ResourceNotFoundException" and "cp-ver:" in str(missing.value)


def test_invoke_with_an_older_qualifier_runs_that_version(lam, two_versions: str) -> None:
    arn = lam.get_function_configuration(FunctionName=two_versions)["FunctionArn"]
    for extra in ({"FunctionName": two_versions, "Qualifier": "1"}, {"FunctionName": f"{arn}:1"}):
        answer = lam.invoke(Payload=b'{"city": "paris"}', **extra)
        assert json.loads(answer["Payload"].read()) == {"city": "paris"}, "version 1 echoes"
        assert answer["ExecutedVersion"] == "1"
    latest = lam.invoke(FunctionName=two_versions, Payload=b'{"city": "paris"}')
    assert json.loads(latest["Payload"].read())["city"] == "PARIS", "$LATEST still runs version 2"


def test_an_event_with_an_older_qualifier_runs_that_version(platform: Platform, lam, two_versions: str) -> None:
    def version_1_runs() -> list[dict]:
        return [e for e in admin(platform, f"/admin/logs/{two_versions}?limit=200") if e["version"] == 1]

    before = len(version_1_runs())
    # "[1]" is what version 2 (json_transform) refuses and version 1 (echo) answers
    queued = lam.invoke(FunctionName=two_versions, Qualifier="1", InvocationType="Event", Payload=b"[1]")
    assert queued["StatusCode"] == 202
    runs = wait_until(lambda: version_1_runs()[before:], 30.0, message="the event did not run")
    assert runs[0]["error"] == "none", runs
