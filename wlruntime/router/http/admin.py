"""The router's admin API: every endpoint under /admin, declared once behind the admin-token
dependency (``Authorization: Bearer <admin token>``):

  GET/PUT /admin/policy ({"spec": "..."}), GET /admin/state, GET /admin/functions,
  POST /admin/functions/{name} (multipart wasm + config, forwarded to the registry),
  DELETE /admin/functions/{name}, GET /admin/logs/{name}, GET /admin/trace?format=csv|parquet[&kind=instances]
  (kind=instances: every instance that died, INSTANCE_LOG_COLUMNS),
  GET/POST /admin/nodes ({"address": "host:port"}), DELETE /admin/nodes/{address} (a node leaving),
  GET /admin/events (queued Event invocations),
  POST /admin/policies/{name} (upload routing code to the registry), GET /admin/policies.
"""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from policies.registry import PolicySpecError
from wlruntime.registry.models import name_problem
from wlruntime.router.core import Router
from wlruntime.router.dispatch import INSTANCE_LOG_COLUMNS
from wlruntime.router.state import RouterError
from wlruntime.router.trace import encode_csv, encode_parquet

if TYPE_CHECKING:
    from wlruntime.router.http.events import EventQueue
    from wlruntime.router.http.invocations import InvocationLog
    from wlruntime.router.http.uploaded import UploadedPolicies

HARD_BODY_LIMIT = 64 * 1024 * 1024


def encode_instance_log(deaths: list[tuple], format: str) -> bytes:
    """The router's instance log (``Dispatch.deaths``) as CSV or Parquet, in order of death."""
    import pyarrow as pa

    columns = {name: [d[i] for d in deaths] for i, name in enumerate(INSTANCE_LOG_COLUMNS)}
    table = pa.table(columns, schema=pa.schema([("instance", pa.string()), ("function", pa.string()),
                                                ("created_ms", pa.float64()), ("ready_ms", pa.float64()),
                                                ("died_ms", pa.float64()), ("evicted", pa.bool_())]))
    sink = io.BytesIO()
    if format == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, sink)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, sink)
    return sink.getvalue()


class PolicySpec(BaseModel):
    spec: str = Field(min_length=1, description="a policy spec, e.g. fixed_ttl:ttl_ms=60000 or uploaded:NAME")
    fresh_statistics: bool = Field(False, description="also start every function's statistics afresh (arrivals, "
                                   "cold-start and duration estimates), as a simulation starts: e.g. after a warm-up")


class NodeAddress(BaseModel):
    address: str = Field(pattern=r"^[^:\s]+:[0-9]{1,5}$", description="host:port of a handler node's gRPC server")


class NodeInfo(BaseModel):
    name: str
    address: str
    alive: bool
    last_error: str


class LogEntry(BaseModel):
    """One recent invocation of a function (http/invocations.py)."""

    time: float
    request_id: str
    instance: str
    error: str
    message: str
    logs: str
    node: str | None = None
    version: int | None = None
    duration_ms: float | None = None
    wait_ms: float | None = None
    cold: bool | None = None


def admin_check(admin_token: str) -> Callable[[Request], None]:
    def require_admin(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token or not secrets.compare_digest(token.strip(), admin_token):
            raise HTTPException(401, "missing or wrong admin token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
    return require_admin


def _checked(name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise HTTPException(400, problem)
    return name


def admin_api(router: Router, admin_token: str, events: EventQueue | None = None,
              uploaded: UploadedPolicies | None = None, invocations: InvocationLog | None = None) -> APIRouter:
    """The /admin endpoints. Handlers are async: they run on the event loop, the only place the
    router's tables change, so they never see them half-updated."""
    api = APIRouter(prefix="/admin", dependencies=[Depends(admin_check(admin_token))])
    # /metrics (server.py) also shows each node's health, read from the pool's records at scrape time.
    router.metrics.watch_nodes(lambda: router.nodes)

    @api.get("/policy")
    async def get_policy() -> dict[str, Any]:
        return router.describe_policy()

    @api.put("/policy")
    async def put_policy(body: PolicySpec) -> dict[str, Any]:
        spec = body.spec.strip()
        try:
            if uploaded is not None and spec.startswith("uploaded:"):
                described = await uploaded.activate(spec)
            else:
                described = await router.set_policy(spec)
        except PolicySpecError as error:
            raise HTTPException(400, str(error)) from None
        if body.fresh_statistics:
            router.reset_statistics()
        return described

    @api.get("/state")
    async def state() -> dict[str, Any]:
        return router.snapshot()

    @api.get("/functions")
    async def list_functions() -> list[dict[str, Any]]:
        try:
            listing = await router.list_registry()
        except RouterError as error:
            raise HTTPException(error.status, error.message) from None
        out = []
        for meta in listing:
            fn = router.functions.get(meta["name"])
            out.append({**meta, "live": router.function_summary(fn) if fn is not None else None})
        return out

    # {name:path} so that an empty name or one with '/' gets the name rule, not a routing 404/307.
    @api.post("/functions/{name:path}")
    async def deploy(name: str, request: Request) -> JSONResponse:
        _checked(name)
        async with request.form(max_files=1, max_fields=4, max_part_size=HARD_BODY_LIMIT) as form:
            wasm = form.get("wasm")
            if wasm is None or isinstance(wasm, str):
                raise HTTPException(400, "missing multipart file field 'wasm' with the .wasm code")
            config = form.get("config")
            if config is not None and not isinstance(config, str):
                raise HTTPException(400, "field 'config' must be a text field holding JSON")
            data = await wasm.read()
        try:
            status, body = await router.deploy(name, data, config)
        except RouterError as error:
            raise HTTPException(error.status, error.message) from None
        return JSONResponse(body, status_code=status)

    @api.delete("/functions/{name:path}")
    async def delete(name: str) -> JSONResponse:
        _checked(name)
        try:
            status, body = await router.delete(name)
        except RouterError as error:
            raise HTTPException(error.status, error.message) from None
        if status == 200 and invocations is not None:
            invocations.forget(name)
        return JSONResponse(body, status_code=status)

    @api.get("/logs/{name:path}")
    async def logs(name: str, limit: int = 50) -> list[LogEntry]:
        _checked(name)
        entries = invocations.recent(name, limit) if invocations is not None else None
        if entries is None:
            fn = router.functions.get(name)
            if fn is None:
                raise HTTPException(404, f"no invocations of {name!r} recorded by this router")
            entries = list(fn.logs)[-max(1, limit):]
        return [LogEntry.model_validate(entry) for entry in entries]

    @api.get("/trace")
    async def trace(format: str = "csv", kind: str = "requests") -> Response:
        if format not in ("csv", "parquet"):
            raise HTTPException(400, f"format must be csv or parquet, got {format!r}")
        if kind not in ("requests", "instances"):
            raise HTTPException(400, f"kind must be requests or instances, got {kind!r}")
        if kind == "instances":  # the instances that died, with their exact lifetimes
            deaths = list(router.dispatch.deaths)
            return Response(await asyncio.to_thread(encode_instance_log, deaths, format),
                            media_type="text/csv" if format == "csv" else "application/vnd.apache.parquet")
        rows = list(router.trace.rows)  # a snapshot taken on the loop, encoded off it
        if format == "csv":
            return Response(await asyncio.to_thread(encode_csv, rows), media_type="text/csv")
        return Response(await asyncio.to_thread(encode_parquet, rows), media_type="application/vnd.apache.parquet")

    @api.get("/nodes")
    async def nodes() -> list[dict[str, Any]]:
        return router.snapshot()["nodes"]

    @api.post("/nodes")
    async def add_node(body: NodeAddress) -> NodeInfo:
        node = await router.add_node(body.address)
        return NodeInfo(name=node.name, address=node.address, alive=node.alive, last_error=node.last_error)

    @api.delete("/nodes/{address}")
    async def remove_node(address: str) -> NodeInfo:
        # A node leaving (self-registered nodes say so when they stop): its instances are
        # forgotten and requests queued on them placed again, as when a node dies.
        node = await router.remove_node(address)
        if node is None:
            raise HTTPException(404, f"no node {address!r} in the pool")
        return NodeInfo(name=node.name, address=node.address, alive=node.alive, last_error=node.last_error)

    @api.get("/events")
    async def queued_events(limit: int = Query(20, ge=1, le=1000)) -> dict[str, Any]:  # SQLite's LIMIT is 64-bit
        if events is None:
            raise HTTPException(404, "this router has no Event queue")
        return events.describe(limit)

    if uploaded is not None:
        @api.post("/policies/{name:path}")
        async def upload_policy(name: str, request: Request) -> JSONResponse:
            _checked(name)
            async with request.form(max_files=1, max_fields=2, max_part_size=HARD_BODY_LIMIT) as form:
                code = form.get("code")
                if code is None or isinstance(code, str):
                    raise HTTPException(400, "missing multipart file field 'code' (a .wasm policy, or a zip of a "
                                             "learned artifact folder)")
                data = await code.read()
            meta, created = await uploaded.upload(name, data)
            return JSONResponse(meta, status_code=201 if created else 200)

        @api.get("/policies")
        async def list_policies() -> list[dict[str, Any]]:
            return await uploaded.list()

    return api
