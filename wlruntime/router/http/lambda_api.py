"""The AWS Lambda control plane on the router, shaped as AWS's so unmodified clients (boto3,
the AWS CLI, infrastructure tools) manage wl functions:

  POST   /2015-03-31/functions                          CreateFunction
  GET    /2015-03-31/functions/                         ListFunctions (Marker / NextMarker, MaxItems)
  GET    /2015-03-31/functions/{name}                   GetFunction
  DELETE /2015-03-31/functions/{name}                   DeleteFunction
  GET    /2015-03-31/functions/{name}/configuration     GetFunctionConfiguration
  PUT    /2015-03-31/functions/{name}/configuration     UpdateFunctionConfiguration
  PUT    /2015-03-31/functions/{name}/code              UpdateFunctionCode
  GET    /2015-03-31/functions/{name}/versions          ListVersionsByFunction
  POST   /2015-03-31/functions/{name}/versions          PublishVersion
  PUT    /2017-10-31/functions/{name}/concurrency       PutFunctionConcurrency
  GET    /2019-09-30/functions/{name}/concurrency       GetFunctionConcurrency
  DELETE /2017-10-31/functions/{name}/concurrency       DeleteFunctionConcurrency
  GET    /2016-08-19/account-settings/                  GetAccountSettings

Any other Lambda operation answers 501 ``UnsupportedOperationException`` naming it.

Mapping to wl: code is a ZIP holding exactly one ``.wasm`` (or the raw ``.wasm``); MemorySize
is ``memory_mb``, Timeout (s) is ``timeout_ms``/1000, Environment.Variables is ``env``,
reserved concurrency is the function's instance limit (``max_instances``): a function whose limit
is below wl's default (``DEFAULT_MAX_INSTANCES``) has that much reserved, one at the default has
none (GetFunction then omits ``Concurrency``, as AWS does, and GetAccountSettings subtracts only
reservations from the unreserved concurrency). Every change makes a
new wl version (immutable, like a published Lambda version): ``$LATEST`` is the newest,
``Version: "N"`` is wl version N, so PublishVersion returns the newest number. Descriptive
fields wl does not use (Description, Role, Handler, Runtime, Architectures) are kept in the
router's state dir and returned as given. CodeSha256 is the hash of the ``.wasm`` (what wl
stores), not of the ZIP.

Auth: these calls change what runs, so they need the admin token, either as
``Authorization: Bearer <token>`` or as the AWS access key id of a SigV4-signed request
(boto3: ``aws_access_key_id=<admin token>``; the signature itself is not checked).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import math
import secrets
import sqlite3
import uuid
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.convertors import Convertor, register_url_convertor

from wlruntime.registry.client import RegistryClient, RegistryError
from wlruntime.registry.models import DEFAULT_MAX_INSTANCES, name_problem
from wlruntime.router.core import Router
from wlruntime.router.http.invocations import InvocationLog
from wlruntime.router.http.invoke import split_function_name
from wlruntime.router.http.lambda_operations import operation_name
from wlruntime.router.http.wire import ACCOUNT_ID, LambdaError, arn
from wlruntime.router.state import RouterError

MAX_CODE_BYTES = 64 * 1024 * 1024       # the registry's default max_wasm_bytes
PAGE_SIZE = 50                          # Lambda's ListFunctions page
TOTAL_CODE_SIZE_LIMIT = 80_530_636_800  # Lambda's default quota; reported, not enforced by wl
DESCRIPTIVE = ("Description", "Role", "Handler", "Runtime", "Architectures")
INSTANCE_MB = 128.0                     # GetAccountSettings counts concurrency in 128 MB instances


class _ApiDate(Convertor):
    """A Lambda API version path segment (``2015-03-31``), so the catch-all for unsupported
    operations matches Lambda paths only."""

    regex = "20[0-9]{2}-[0-9]{2}-[0-9]{2}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("lambda_date", _ApiDate())
M = TypeVar("M", bound=BaseModel)


# ---- request bodies ------------------------------------------------------------------------
class _Body(BaseModel):
    # Lambda clients send many fields wl has no use for (Tags, TracingConfig...): ignored.
    model_config = ConfigDict(extra="ignore")


class EnvironmentVariables(_Body):
    Variables: dict[str, str] = {}


class FunctionCode(_Body):
    ZipFile: str | None = None
    S3Bucket: str | None = None
    ImageUri: str | None = None


class FunctionSettings(_Body):
    Description: str | None = None
    Role: str | None = None
    Handler: str | None = None
    Runtime: str | None = None
    Timeout: int | None = None
    MemorySize: int | None = None
    Environment: EnvironmentVariables | None = None
    Layers: list[str] | None = None
    Architectures: list[str] | None = None


class CreateFunction(FunctionSettings):
    FunctionName: str
    Code: FunctionCode
    Publish: bool = False
    PackageType: str | None = None


class UpdateFunctionCode(_Body):
    ZipFile: str | None = None
    S3Bucket: str | None = None
    ImageUri: str | None = None
    Publish: bool = False
    DryRun: bool = False
    Architectures: list[str] | None = None


class PutConcurrency(_Body):
    ReservedConcurrentExecutions: int


class PublishVersion(_Body):
    CodeSha256: str | None = None
    Description: str | None = None


def _parse(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors())
        raise LambdaError(400, "InvalidParameterValueException", f"invalid request: {problems}") from None


# ---- descriptive fields wl keeps for Lambda clients ----------------------------------------
class LambdaStore:
    """Description/Role/Handler/Runtime/Architectures per function, in ``<state dir>/lambda.db``
    (in memory without a state dir). Used from the event loop only."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path is not None else ":memory:", isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS descriptive (name TEXT PRIMARY KEY, fields TEXT NOT NULL)")

    def get(self, name: str) -> dict[str, Any]:
        row = self._db.execute("SELECT fields FROM descriptive WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else {}

    def update(self, name: str, fields: dict[str, Any]) -> None:
        merged = self.get(name) | {k: v for k, v in fields.items() if v is not None}
        self._db.execute("INSERT INTO descriptive (name, fields) VALUES (?, ?) ON CONFLICT (name) "
                         "DO UPDATE SET fields = excluded.fields", (name, json.dumps(merged)))

    def delete(self, name: str) -> None:
        self._db.execute("DELETE FROM descriptive WHERE name = ?", (name,))

    def close(self) -> None:
        self._db.close()


# ---- the code package ----------------------------------------------------------------------
def wasm_from_package(data: bytes) -> bytes:
    """The .wasm inside a deployment package: a ZIP holding exactly one .wasm, or raw wasm."""
    if data[:4] == b"\0asm":
        return data
    if data[:2] != b"PK":
        raise LambdaError(400, "InvalidParameterValueException",
                          "Code.ZipFile must be a ZIP holding one .wasm file, or a .wasm module")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist()
                   if not m.is_dir() and m.filename.lower().endswith(".wasm") and "__MACOSX" not in m.filename]
        if len(members) != 1:
            found = ", ".join(m.filename for m in members) or "none"
            raise LambdaError(400, "InvalidParameterValueException",
                              f"the ZIP must hold exactly one .wasm file (found: {found})")
        member = members[0]
        if member.file_size > MAX_CODE_BYTES:
            raise LambdaError(400, "InvalidParameterValueException",
                              f"Unzipped size must be smaller than {MAX_CODE_BYTES} bytes")
        with archive.open(member) as f:
            return f.read(MAX_CODE_BYTES + 1)[:MAX_CODE_BYTES + 1]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
        raise LambdaError(400, "InvalidParameterValueException", f"Code.ZipFile is not a valid ZIP: {error}") from None


def _decode_code(zip_b64: str | None, s3: str | None, image: str | None) -> bytes:
    if s3 or image:
        raise LambdaError(400, "InvalidParameterValueException",
                          "wl takes code inline only: give Code.ZipFile (a ZIP with one .wasm, or the .wasm)")
    if not zip_b64:
        raise LambdaError(400, "InvalidParameterValueException", "Code.ZipFile is required")
    try:
        return base64.b64decode(zip_b64, validate=True)
    except (binascii.Error, ValueError):
        raise LambdaError(400, "InvalidParameterValueException", "Code.ZipFile is not base64") from None


# ---- wl config <-> Lambda configuration ----------------------------------------------------
def _reserved(config: dict[str, Any]) -> int | None:
    """The reserved concurrency of a function with this wl config: its instance limit when set
    below wl's default, None when none is reserved (stored configs hold every field, so the
    default limit cannot be told from an explicit one; AWS would refuse to reserve it anyway, as
    a reservation must leave some account concurrency unreserved)."""
    limit = int(config.get("max_instances", config.get("concurrency", DEFAULT_MAX_INSTANCES)))
    return limit if limit < DEFAULT_MAX_INSTANCES else None


def _wl_config(base: dict[str, Any], settings: FunctionSettings) -> dict[str, Any]:
    """The wl config a Lambda configuration describes, on top of ``base`` (the current one)."""
    if settings.Layers:
        raise LambdaError(400, "InvalidParameterValueException", "wl functions have no layers: omit Layers")
    config = {k: v for k, v in base.items() if k != "max_instances"}
    if "max_instances" in base:
        config["concurrency"] = base["max_instances"]
    config.pop("abi", None)  # detected again from the code (it may have changed)
    if settings.MemorySize is not None:
        config["memory_mb"] = settings.MemorySize
    if settings.Timeout is not None:
        if settings.Timeout < 1:
            raise LambdaError(400, "InvalidParameterValueException", "Timeout must be at least 1 second")
        config["timeout_ms"] = settings.Timeout * 1000
    if settings.Environment is not None:
        config["env"] = dict(settings.Environment.Variables)
    return config


def _last_modified(created_at: str) -> str:
    """Lambda's timestamp format (2019-09-24T18:38:53.000+0000) from the registry's ISO time."""
    try:
        stamp = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return created_at
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}+0000"


def configuration(meta: dict[str, Any], descriptive: dict[str, Any], published: bool) -> dict[str, Any]:
    """A FunctionConfiguration document for one wl version (``published``: named by its number)."""
    config = meta.get("config") or {}
    version = str(meta["version"]) if published else "$LATEST"
    out: dict[str, Any] = {
        "FunctionName": meta["name"],
        "FunctionArn": arn(meta["name"], version if published else None),
        "Role": descriptive.get("Role", f"arn:aws:iam::{ACCOUNT_ID}:role/wl"),
        "CodeSize": meta["size"],
        "Description": descriptive.get("Description", ""),
        "Timeout": max(1, math.ceil(int(config.get("timeout_ms", 3000)) / 1000)),
        "MemorySize": int(config.get("memory_mb", 128)),
        "LastModified": _last_modified(meta.get("created_at", "")),
        "CodeSha256": base64.b64encode(bytes.fromhex(meta["sha256"])).decode(),
        "Version": version,
        "RevisionId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"wl:{meta['name']}:{meta['version']}:{meta['sha256']}")),
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
    }
    for key in ("Handler", "Runtime", "Architectures"):
        if key in descriptive:
            out[key] = descriptive[key]
    if config.get("env"):
        out["Environment"] = {"Variables": dict(config["env"])}
    return out


# ---- the API -------------------------------------------------------------------------------
class ControlPlane:
    """The Lambda control plane's handlers over the router and its registry."""

    def __init__(self, router: Router, store: LambdaStore) -> None:
        self.router = router
        self.store = store
        self.registry = RegistryClient(router.registry_url, router.registry_token, timeout=300.0)

    def close(self) -> None:
        self.registry.close()
        self.store.close()

    # -- registry access (sync client, off the event loop) --
    async def _registry(self, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(method, *args)
        except RegistryError as error:
            if error.status == 404:
                return None
            raise LambdaError(500, "ServiceException", f"the code registry: {error.message}") from None

    async def versions(self, name: str) -> list[dict[str, Any]]:
        return await self._registry(self.registry.versions, name) or []

    async def version(self, raw_name: str, qualifier: str | None) -> tuple[dict[str, Any], bool]:
        """(metadata, published) of the version a name/ARN and qualifier name; 404 otherwise."""
        name, from_name = _checked_name(raw_name)
        qualifier = qualifier or from_name
        versions = await self.versions(name)
        if not versions:
            raise LambdaError(404, "ResourceNotFoundException", f"Function not found: {arn(name)}")
        if qualifier in (None, "", "$LATEST"):
            return versions[-1], False
        for meta in versions:
            if str(meta["version"]) == qualifier:
                return meta, True
        raise LambdaError(404, "ResourceNotFoundException", f"Function not found: {arn(name, qualifier)}")

    async def deploy(self, name: str, wasm: bytes, config: dict[str, Any]) -> dict[str, Any]:
        """A new wl version through the router (which also updates its live function table)."""
        try:
            status, body = await self.router.deploy(name, wasm, json.dumps(config))
        except RouterError as error:
            raise LambdaError(500, "ServiceException", error.message) from None
        if status in (200, 201):
            return body
        detail = body.get("detail", body) if isinstance(body, dict) else body
        if status == 400:
            raise LambdaError(400, "InvalidParameterValueException", str(detail))
        if status == 413:
            raise LambdaError(413, "RequestTooLargeException", str(detail))
        raise LambdaError(500, "ServiceException", f"the code registry answered {status}: {detail}")

    async def code(self, name: str, version: int) -> bytes:
        data = await self._registry(self.registry.fetch_code, name, version)
        if data is None:
            raise LambdaError(404, "ResourceNotFoundException", f"Function not found: {arn(name)}")
        return data

    def respond(self, meta: dict[str, Any], published: bool, status: int = 200) -> JSONResponse:
        return JSONResponse(configuration(meta, self.store.get(meta["name"]), published), status_code=status)


def _checked_name(raw: str) -> tuple[str, str | None]:
    name, qualifier = split_function_name(raw)
    problem = name_problem(name)
    if problem:
        raise LambdaError(400, "ValidationException", f"FunctionName: {problem}")
    return name, qualifier


def _caller_check(admin_token: str) -> Callable[[Request], None]:
    def require_caller(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, rest = header.partition(" ")
        given = ""
        if scheme.lower() == "bearer":
            given = rest.strip()
        elif scheme == "AWS4-HMAC-SHA256":
            for part in rest.split(","):
                key, _, value = part.strip().partition("=")
                if key == "Credential":
                    given = value.split("/", 1)[0]
        if not given or not secrets.compare_digest(given, admin_token):
            raise LambdaError(403, "UnrecognizedClientException",
                              "The security token included in the request is invalid: use the wl admin token "
                              "as the AWS access key id (or Authorization: Bearer <token>)")
    return require_caller


def install(api: FastAPI, router: Router, admin_token: str, state_dir: Path | None,
            invocations: InvocationLog | None = None) -> ControlPlane:
    """Add the Lambda control plane (and the catch-all for unsupported operations) to ``api``."""
    plane = ControlPlane(router, LambdaStore(state_dir / "lambda.db" if state_dir is not None else None))
    lam = APIRouter(dependencies=[Depends(_caller_check(admin_token))])

    @api.exception_handler(LambdaError)
    async def _lambda_error(request: Request, error: LambdaError) -> JSONResponse:
        return error.response(request.headers.get("x-amzn-requestid") or str(uuid.uuid4()))

    @lam.post("/2015-03-31/functions")
    @lam.post("/2015-03-31/functions/")
    async def create_function(request: Request) -> JSONResponse:
        body = _parse(CreateFunction, await request.body())
        name, _ = _checked_name(body.FunctionName)
        if body.PackageType not in (None, "Zip"):
            raise LambdaError(400, "InvalidParameterValueException", "wl runs ZIP packages only (PackageType: Zip)")
        if await plane.versions(name):
            raise LambdaError(409, "ResourceConflictException", f"Function already exist: {name}")
        wasm = wasm_from_package(_decode_code(body.Code.ZipFile, body.Code.S3Bucket, body.Code.ImageUri))
        meta = await plane.deploy(name, wasm, _wl_config({}, body))
        plane.store.update(name, {k: getattr(body, k) for k in DESCRIPTIVE})
        return plane.respond(meta, body.Publish, 201)

    @lam.get("/2015-03-31/functions")
    @lam.get("/2015-03-31/functions/")
    async def list_functions(Marker: str | None = None, MaxItems: int | None = None,
                             FunctionVersion: str | None = None) -> JSONResponse:
        if MaxItems is not None and not 1 <= MaxItems <= 10_000:
            raise LambdaError(400, "InvalidParameterValueException", "MaxItems must be between 1 and 10000")
        listing = await plane._registry(plane.registry.list) or []
        entries: list[tuple[dict[str, Any], bool]] = []
        for item in listing:
            latest = {"name": item["name"], "version": item["latest_version"], **item}
            if FunctionVersion == "ALL":
                entries.append((latest, False))
                entries.extend((meta, True) for meta in await plane.versions(item["name"]))
            else:
                entries.append((latest, False))
        start = 0
        if Marker:
            try:
                start = int(base64.urlsafe_b64decode(Marker.encode()).decode())
            except (ValueError, binascii.Error):
                raise LambdaError(400, "InvalidParameterValueException", f"invalid Marker {Marker!r}") from None
        size = MaxItems or PAGE_SIZE
        page = entries[start:start + size]
        out: dict[str, Any] = {"Functions": [configuration(m, plane.store.get(m["name"]), p) for m, p in page]}
        if start + size < len(entries):
            out["NextMarker"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return JSONResponse(out)

    @lam.get("/2015-03-31/functions/{name}")
    async def get_function(name: str, Qualifier: str | None = None) -> JSONResponse:
        meta, published = await plane.version(name, Qualifier)
        location = (f"{router.registry_url}/functions/{meta['name']}/versions/{meta['version']}/code")
        out = {"Configuration": configuration(meta, plane.store.get(meta["name"]), published),
               "Code": {"RepositoryType": "S3", "Location": location}}
        reserved = _reserved(meta.get("config") or {})
        if reserved is not None:
            out["Concurrency"] = {"ReservedConcurrentExecutions": reserved}
        return JSONResponse(out)

    @lam.get("/2015-03-31/functions/{name}/configuration")
    async def get_configuration(name: str, Qualifier: str | None = None) -> JSONResponse:
        meta, published = await plane.version(name, Qualifier)
        return plane.respond(meta, published)

    @lam.put("/2015-03-31/functions/{name}/configuration")
    async def update_configuration(name: str, request: Request) -> JSONResponse:
        body = _parse(FunctionSettings, await request.body())
        meta, _ = await plane.version(name, None)
        wasm = await plane.code(meta["name"], meta["version"])
        new = await plane.deploy(meta["name"], wasm, _wl_config(meta.get("config") or {}, body))
        plane.store.update(meta["name"], {k: getattr(body, k) for k in DESCRIPTIVE})
        return plane.respond(new, False)

    @lam.put("/2015-03-31/functions/{name}/code")
    async def update_code(name: str, request: Request) -> JSONResponse:
        body = _parse(UpdateFunctionCode, await request.body())
        meta, _ = await plane.version(name, None)
        wasm = wasm_from_package(_decode_code(body.ZipFile, body.S3Bucket, body.ImageUri))
        if body.DryRun:
            return plane.respond(meta, False)
        new = await plane.deploy(meta["name"], wasm, _wl_config(meta.get("config") or {}, FunctionSettings()))
        if body.Architectures:
            plane.store.update(meta["name"], {"Architectures": body.Architectures})
        return plane.respond(new, body.Publish)

    @lam.delete("/2015-03-31/functions/{name}")
    async def delete_function(name: str, Qualifier: str | None = None) -> Response:
        function, from_name = _checked_name(name)
        if (Qualifier or from_name) not in (None, "", "$LATEST"):
            raise LambdaError(400, "InvalidParameterValueException",
                              "wl keeps every version of a function: delete the whole function (no Qualifier)")
        try:
            status, body = await router.delete(function)
        except RouterError as error:
            raise LambdaError(500, "ServiceException", error.message) from None
        if status == 404:
            raise LambdaError(404, "ResourceNotFoundException", f"Function not found: {arn(function)}")
        if status != 200:
            raise LambdaError(500, "ServiceException", f"the code registry answered {status}: {body}")
        plane.store.delete(function)
        if invocations is not None:
            invocations.forget(function)
        return Response(status_code=204)

    @lam.get("/2015-03-31/functions/{name}/versions")
    async def list_versions(name: str, Marker: str | None = None, MaxItems: int | None = None) -> JSONResponse:
        meta, _ = await plane.version(name, None)
        descriptive = plane.store.get(meta["name"])
        every = [configuration(meta, descriptive, False)]
        every += [configuration(v, descriptive, True) for v in await plane.versions(meta["name"])]
        start = int(Marker) if Marker and Marker.isdigit() else 0
        size = MaxItems or PAGE_SIZE
        out: dict[str, Any] = {"Versions": every[start:start + size]}
        if start + size < len(every):
            out["NextMarker"] = str(start + size)
        return JSONResponse(out)

    @lam.post("/2015-03-31/functions/{name}/versions")
    async def publish_version(name: str, request: Request) -> JSONResponse:
        body = _parse(PublishVersion, await request.body())
        meta, _ = await plane.version(name, None)
        if body.CodeSha256 and body.CodeSha256 != base64.b64encode(bytes.fromhex(meta["sha256"])).decode():
            raise LambdaError(412, "PreconditionFailedException",
                              "CodeSha256 does not match the function's current code")
        if body.Description is not None:
            plane.store.update(meta["name"], {"Description": body.Description})
        return plane.respond(meta, True, 201)

    @lam.put("/2017-10-31/functions/{name}/concurrency")
    async def put_concurrency(name: str, request: Request) -> JSONResponse:
        body = _parse(PutConcurrency, await request.body())
        if not 1 <= body.ReservedConcurrentExecutions < DEFAULT_MAX_INSTANCES:
            raise LambdaError(400, "InvalidParameterValueException",
                              f"ReservedConcurrentExecutions must be from 1 to {DEFAULT_MAX_INSTANCES - 1} (wl's "
                              f"instance limit per function; {DEFAULT_MAX_INSTANCES}, the default, reserves nothing: "
                              "use DeleteFunctionConcurrency)")
        meta, _ = await plane.version(name, None)
        config = _wl_config(meta.get("config") or {}, FunctionSettings())
        config["concurrency"] = body.ReservedConcurrentExecutions
        await plane.deploy(meta["name"], await plane.code(meta["name"], meta["version"]), config)
        return JSONResponse({"ReservedConcurrentExecutions": body.ReservedConcurrentExecutions})

    @lam.get("/2019-09-30/functions/{name}/concurrency")
    async def get_concurrency(name: str) -> JSONResponse:
        meta, _ = await plane.version(name, None)
        reserved = _reserved(meta.get("config") or {})
        return JSONResponse({} if reserved is None else {"ReservedConcurrentExecutions": reserved})

    @lam.delete("/2017-10-31/functions/{name}/concurrency")
    async def delete_concurrency(name: str) -> Response:
        meta, _ = await plane.version(name, None)
        config = _wl_config(meta.get("config") or {}, FunctionSettings())
        config.pop("concurrency", None)  # back to wl's default limit
        await plane.deploy(meta["name"], await plane.code(meta["name"], meta["version"]), config)
        return Response(status_code=204)

    @lam.get("/2016-08-19/account-settings")
    @lam.get("/2016-08-19/account-settings/")
    async def account_settings() -> JSONResponse:
        listing = await plane._registry(plane.registry.list) or []
        total_code = 0
        for item in listing:
            total_code += sum(v["size"] for v in await plane.versions(item["name"]))
        capacity = int(sum(n.capacity_mb for n in router.nodes if n.alive) // INSTANCE_MB)
        reserved = sum(_reserved(item.get("config") or {}) or 0 for item in listing)
        return JSONResponse({
            "AccountLimit": {"TotalCodeSize": TOTAL_CODE_SIZE_LIMIT, "CodeSizeUnzipped": MAX_CODE_BYTES,
                             "CodeSizeZipped": MAX_CODE_BYTES, "ConcurrentExecutions": capacity,
                             "UnreservedConcurrentExecutions": max(0, capacity - reserved)},
            "AccountUsage": {"TotalCodeSize": total_code, "FunctionCount": len(listing)},
        })

    api.include_router(lam)

    @api.api_route("/{api_date:lambda_date}/{rest:path}",
                   methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"], include_in_schema=False)
    async def unsupported(request: Request) -> JSONResponse:
        name = operation_name(request.method, request.url.path)
        what = f"the Lambda operation {name}" if name else "this Lambda operation"
        error_type = "UnsupportedOperationException" if name else "UnknownOperationException"
        raise LambdaError(501 if name else 400, error_type,
                          f"wl does not implement {what} ({request.method} {request.url.path})")

    return plane
