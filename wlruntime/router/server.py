"""The router's HTTP API (FastAPI) and its Scheduler gRPC service, on one event loop.

Invocation endpoints (no auth; like a Lambda function URL on loopback):
  POST /invoke/{function}                               body in, the function's output out
  POST /2015-03-31/functions/{function}/invocations     the AWS Lambda Invoke API

The two invoke paths are served by a small ASGI handler in front of the FastAPI app: they are
the hot path, and FastAPI's request parsing and dependency machinery would cost more than the
rest of the router's work. Everything else (admin, /metrics, /healthz) is plain FastAPI.

/invoke answers: 200 with the output; function errors 500 (JSON {"error", "message"}), a
timeout 504, 404 unknown function, 413 payload over the function's max_payload_bytes, 429
throttled (concurrency limit, policy reject, no memory; with Retry-After), 502 a node failed
mid-request, 503 no node reachable. Headers: X-WL-Cold (1 when the request waited for a cold
start), X-WL-Duration-Ms (execution), X-WL-Wait-Ms (arrival to start), X-WL-Version,
X-WL-Instance, X-WL-Node; X-WL-Error on errors. ``X-WL-Meta-<key>`` request headers reach the
function as metadata ``<key>``. ``X-WL-Feature-<name>: <number>`` headers are request features
for the policy (``RequestView.features[name]``, name lowercased with - as _; at most 16; 400 for
a value that is not a finite number), recorded in the traffic trace as columns, as the
simulator reads them from a trace.

The Lambda path follows Lambda's wire format: RequestResponse, Event (202, runs in the
background) and DryRun (204) invocation types, X-Amz-Function-Error: Unhandled with an
{"errorMessage", "errorType"} body for function errors and timeouts, X-Amz-Executed-Version,
X-Amz-Log-Result with X-Amz-Log-Type: Tail, and Lambda's error types (ResourceNotFoundException
404, RequestTooLargeException 413, TooManyRequestsException 429) in x-amzn-ErrorType. Request
features come from X-WL-Feature headers there too, or from the client context (boto3's
``ClientContext``: base64 JSON whose ``custom.wl_features`` maps names to numbers).

Admin endpoints need ``Authorization: Bearer <admin token>``:
  GET/PUT /admin/policy ({"spec": "..."}), GET /admin/state, GET /admin/functions,
  POST /admin/functions/{name} (multipart wasm + config, forwarded to the registry),
  DELETE /admin/functions/{name}, GET /admin/logs/{name}, GET /admin/trace?format=csv|parquet,
  GET/POST /admin/nodes ({"address": "host:port"}).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import re
import secrets
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import grpc
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from policies.registry import PolicySpecError
from wlruntime.auth import InternalAuth
from wlruntime.proto import node_pb2 as pb
from wlruntime.proto import node_pb2_grpc
from wlruntime.router.core import CHANNEL_OPTIONS, UNKNOWN_FUNCTION, Router
from wlruntime.router.state import (
    NODE_ERROR,
    OK,
    TIMEOUT,
    BadRequest,
    PayloadTooLarge,
    Result,
    RouterError,
    Throttled,
)
from wlruntime.router.trace import COLUMNS as TRACE_COLUMNS
from wlruntime.router.trace import encode_csv, encode_parquet

log = logging.getLogger("wlruntime.router")

INVOKE_PREFIX = "/invoke/"
LAMBDA_PREFIX = "/2015-03-31/functions/"
LAMBDA_SUFFIX = "/invocations"
HARD_BODY_LIMIT = 64 * 1024 * 1024
LOG_TAIL_BYTES = 4096

# Lambda's errorType for wl's error kinds.
LAMBDA_ERROR_TYPES = {
    "function_error": "Runtime.ExitError",
    "trap": "Runtime.Trap",
    "out_of_memory": "Runtime.OutOfMemory",
    "out_of_fuel": "Runtime.OutOfFuel",
    "response_too_large": "Function.ResponseSizeTooLarge",
    "timeout": "Sandbox.Timedout",
    "init_error": "Runtime.InitError",
    "invalid_request": "InvalidRequestContentException",
}
MAX_FEATURES = 16
FEATURE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

LAMBDA_EXCEPTIONS = {404: "ResourceNotFoundException", 413: "RequestTooLargeException",
                     429: "TooManyRequestsException", 503: "ServiceException", 504: "ServiceException"}

_OCTET = (b"content-type", b"application/octet-stream")
_JSON = (b"content-type", b"application/json")


class _ClientGone(Exception):
    pass


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The request body, or None once it exceeds ``limit`` bytes (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body = message.get("body", b"")
        if body:
            size += len(body)
            if size > limit:
                return None
            chunks.append(body)
        if not message.get("more_body", False):
            break
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _retry_after_s(ms: float) -> bytes:
    return str(max(1, math.ceil(ms / 1000.0))).encode()


def _content_length(scope: dict) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RouterApp:
    """ASGI entry point: the invoke fast paths, then the FastAPI app for everything else."""

    def __init__(self, router: Router, api: FastAPI) -> None:
        self.router = router
        self.api = api

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            try:
                if path.startswith(INVOKE_PREFIX):
                    await self._invoke(path[len(INVOKE_PREFIX):], scope, receive, send)
                    return
                if path.startswith(LAMBDA_PREFIX) and path.endswith(LAMBDA_SUFFIX):
                    await self._lambda(path[len(LAMBDA_PREFIX):-len(LAMBDA_SUFFIX)], scope, receive, send)
                    return
            except _ClientGone:
                return
        await self.api(scope, receive, send)

    # ---- POST /invoke/{function} ------------------------------------------------------------
    async def _invoke(self, name: str, scope: dict, receive: Any, send: Any) -> None:
        router = self.router
        try:
            fn = router.functions.get(name) or await router.function(unquote(name))
            payload = await self._body(fn, scope, receive)
            result = await router.invoke(fn.name, payload, _metadata(scope), _features(scope))
        except RouterError as error:
            if error.status == 404:
                router.metrics.outcome(UNKNOWN_FUNCTION, error.kind)  # one label for all unknown names
            await self._invoke_error(send, error)
            return
        headers = [_OCTET,
                   (b"x-wl-cold", b"1" if result.cold else b"0"),
                   (b"x-wl-duration-ms", b"%.3f" % result.exec_ms),
                   (b"x-wl-wait-ms", b"%.3f" % result.wait_ms),
                   (b"x-wl-version", str(result.version).encode()),
                   (b"x-wl-instance", result.instance.encode()),
                   (b"x-wl-node", result.node.encode())]
        if result.error == OK:
            await _send(send, 200, headers, result.output)
            return
        headers[0] = _JSON
        headers.append((b"x-wl-error", result.error.encode()))
        status = 504 if result.error == TIMEOUT else 502 if result.error == NODE_ERROR else 500
        await _send(send, status, headers, _json_bytes({"error": result.error, "message": result.error_message,
                                                        "logs": result.logs.decode("utf-8", "replace")}))

    async def _body(self, fn: Any, scope: dict, receive: Any) -> bytes:
        limit = min(fn.max_payload_bytes, HARD_BODY_LIMIT)
        declared = _content_length(scope)
        body = None if declared is not None and declared > limit else await _read_body(receive, limit)
        if body is None:
            self.router.metrics.outcome(fn.name, PayloadTooLarge.kind)
            raise PayloadTooLarge(f"Request must be smaller than {limit} bytes for function {fn.name}", limit)
        return body

    async def _invoke_error(self, send: Any, error: RouterError) -> None:
        headers = [_JSON, (b"x-wl-error", error.kind.encode())]
        body: dict[str, Any] = {"error": error.kind, "message": error.message}
        if isinstance(error, Throttled):
            headers.append((b"retry-after", _retry_after_s(error.retry_after_ms)))
            body["retry_after_ms"] = error.retry_after_ms
            body["reason"] = error.reason
        await _send(send, error.status, headers, _json_bytes(body))

    # ---- POST /2015-03-31/functions/{name}/invocations ----------------------------------------
    async def _lambda(self, name: str, scope: dict, receive: Any, send: Any) -> None:
        router = self.router
        request_id = str(uuid.uuid4())
        name = unquote(name)
        # Lambda accepts a function name, a partial ARN (123456789012:function:name) or a full ARN.
        if ":function:" in name:
            name = name.split(":function:", 1)[1]
        qualifier = None
        if ":" in name:
            name, qualifier = name.split(":", 1)
        invocation_type, log_type, client_context = "RequestResponse", None, None
        for key, value in scope["headers"]:
            if key == b"x-amz-invocation-type":
                invocation_type = value.decode()
            elif key == b"x-amz-log-type":
                log_type = value.decode()
            elif key == b"x-amz-client-context":
                client_context = value
        query = parse_qs(scope.get("query_string", b"").decode())
        qualifier = query.get("Qualifier", [qualifier])[0]
        try:
            fn = await router.function(name)
            if qualifier not in (None, "", "$LATEST", str(fn.version)):
                raise _LambdaNotFound(name, qualifier)
            payload = await self._body(fn, scope, receive)
            features = _features(scope, client_context)
            if invocation_type == "DryRun":
                await _send(send, 204, [(b"x-amzn-requestid", request_id.encode())], b"")
                return
            if invocation_type == "Event":
                router._bg(self._event(fn.name, payload, features))
                await _send(send, 202, [(b"x-amzn-requestid", request_id.encode())], b"")
                return
            if invocation_type != "RequestResponse":
                await self._lambda_error(send, request_id, 400, "InvalidParameterValueException",
                                         f"Invalid X-Amz-Invocation-Type {invocation_type!r}")
                return
            result = await router.invoke(fn.name, payload, _metadata(scope, request_id), features)
        except _LambdaNotFound as missing:
            await self._lambda_error(send, request_id, 404, "ResourceNotFoundException",
                                     f"Function not found: {_arn(missing.name, missing.qualifier)}")
            return
        except RouterError as error:
            if error.status == 404:
                router.metrics.outcome(UNKNOWN_FUNCTION, error.kind)
                await self._lambda_error(send, request_id, 404, "ResourceNotFoundException",
                                         f"Function not found: {_arn(name, qualifier)}")
            elif isinstance(error, BadRequest):
                await self._lambda_error(send, request_id, 400, "InvalidParameterValueException", error.message)
            elif error.status == 504:
                await self._lambda_function_error(send, request_id, Result(error=TIMEOUT, error_message=error.message),
                                                  "", log_type)
            else:
                extra = {}
                if isinstance(error, Throttled):
                    extra = {"Reason": {"concurrency": "ReservedFunctionConcurrentInvocationLimitExceeded",
                                        "capacity": "CallerRateLimitExceeded"}.get(error.reason,
                                                                                    "CallerRateLimitExceeded")}
                await self._lambda_error(send, request_id, error.status,
                                         LAMBDA_EXCEPTIONS.get(error.status, "ServiceException"), error.message,
                                         extra, error.retry_after_ms if isinstance(error, Throttled) else None)
            return
        version = str(result.version).encode()
        if result.error == OK:
            headers = [_JSON, (b"x-amzn-requestid", request_id.encode()), (b"x-amz-executed-version", version)]
            if log_type == "Tail":
                headers.append((b"x-amz-log-result", base64.b64encode(result.logs[-LOG_TAIL_BYTES:])))
            await _send(send, 200, headers, result.output)
        elif result.error == NODE_ERROR:
            await self._lambda_error(send, request_id, 502, "ServiceException", result.error_message)
        else:
            await self._lambda_function_error(send, request_id, result, version.decode(), log_type)

    async def _event(self, name: str, payload: bytes, features: dict[str, float] | None) -> None:
        try:
            await self.router.invoke(name, payload, {"invocation_type": "Event"}, features)
        except RouterError as error:
            log.info("asynchronous (Event) invocation of %s was not run: %s", name, error.message)

    async def _lambda_function_error(self, send: Any, request_id: str, result: Result, version: str,
                                     log_type: str | None) -> None:
        error_type = LAMBDA_ERROR_TYPES.get(result.error, "Runtime.Unknown")
        message = result.error_message or result.error
        headers = [_JSON, (b"x-amzn-requestid", request_id.encode()), (b"x-amz-function-error", b"Unhandled")]
        if version:
            headers.append((b"x-amz-executed-version", version.encode()))
        if log_type == "Tail":
            headers.append((b"x-amz-log-result", base64.b64encode(result.logs[-LOG_TAIL_BYTES:])))
        await _send(send, 200, headers, _json_bytes({"errorMessage": message, "errorType": error_type}))

    async def _lambda_error(self, send: Any, request_id: str, status: int, error_type: str, message: str,
                            extra: dict[str, Any] | None = None, retry_after_ms: float | None = None) -> None:
        headers = [_JSON, (b"x-amzn-requestid", request_id.encode()), (b"x-amzn-errortype", error_type.encode())]
        if retry_after_ms is not None:
            headers.append((b"retry-after", _retry_after_s(retry_after_ms)))
        await _send(send, status, headers, _json_bytes({"Type": "User", "message": message, **(extra or {})}))


class _LambdaNotFound(Exception):
    def __init__(self, name: str, qualifier: str | None) -> None:
        self.name = name
        self.qualifier = qualifier


def _arn(name: str, qualifier: str | None = None) -> str:
    return f"arn:aws:lambda:local:000000000000:function:{name}" + (f":{qualifier}" if qualifier else "")


def _metadata(scope: dict, request_id: str | None = None) -> dict[str, str]:
    """Request facts for the function: X-WL-Meta-<key> headers, and the content type."""
    meta: dict[str, str] = {}
    for key, value in scope["headers"]:
        if key.startswith(b"x-wl-meta-"):
            meta[key[10:].decode("latin-1")] = value.decode("latin-1")
        elif key == b"content-type":
            meta["content_type"] = value.decode("latin-1")
    if request_id is not None:
        meta["aws_request_id"] = request_id
    return meta


def _features(scope: dict, client_context: bytes | None = None) -> dict[str, float] | None:
    """The request's features for the policy: X-WL-Feature-<name> headers, and on the Lambda
    path the client context's custom.wl_features. Raises BadRequest naming what is wrong."""
    raw: list[tuple[str, Any]] = []
    for key, value in scope["headers"]:
        if key.startswith(b"x-wl-feature-"):
            raw.append((key[13:].decode("latin-1"), value.decode("latin-1")))
    if client_context is not None:
        try:
            context = json.loads(base64.b64decode(client_context, validate=True))
            custom = context.get("custom") or {}
            given = custom.get("wl_features") or {}
            if not isinstance(given, dict):
                raise TypeError("custom.wl_features must be an object")
        except (ValueError, TypeError, AttributeError) as error:
            raise BadRequest(f"X-Amz-Client-Context: not base64 JSON with custom.wl_features "
                             f"mapping names to numbers ({error})") from None
        raw.extend(given.items())
    if not raw:
        return None
    if len(raw) > MAX_FEATURES:
        raise BadRequest(f"a request carries at most {MAX_FEATURES} features, got {len(raw)}")
    features: dict[str, float] = {}
    for name, value in raw:
        name = name.lower().replace("-", "_")
        if not FEATURE_NAME_RE.match(name) or name in TRACE_COLUMNS:
            raise BadRequest(f"feature name {name!r}: use letters, digits and _ (starting with a letter), "
                             f"and none of the trace's own columns ({', '.join(TRACE_COLUMNS)})")
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number):
            raise BadRequest(f"feature {name!r}: {value!r} is not a finite number")
        features[name] = number
    return features


class SchedulerService(node_pb2_grpc.SchedulerServicer):
    """Scheduler.OnIdle for the nodes, answered on the router's event loop."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def OnIdle(self, request: pb.IdleEvent, context: grpc.aio.ServicerContext) -> pb.IdleDirective:
        return self.router.on_node_idle(request)


def create_app(router: Router, *, admin_token: str, scheduler_host: str = "127.0.0.1",
               scheduler_port: int | None = None, trace_out: str | Path | None = None) -> RouterApp:
    """The router's ASGI app. Its lifespan starts the router (node health checks, registry
    listing) and, when ``scheduler_port`` is given, the Scheduler gRPC server (0 = any free
    port; the bound port is in ``app.api.state.scheduler_port``)."""

    @asynccontextmanager
    async def lifespan(api: FastAPI):
        server = None
        if scheduler_port is not None:
            auth = InternalAuth.from_env()  # nodes' calls must carry the internal token (wlruntime/auth.py)
            server = grpc.aio.server(options=CHANNEL_OPTIONS, interceptors=auth.server_interceptors())
            node_pb2_grpc.add_SchedulerServicer_to_server(SchedulerService(router), server)
            bound = auth.add_port(server, f"{scheduler_host}:{scheduler_port}")
            if bound == 0:
                raise OSError(f"cannot listen for the Scheduler service on {scheduler_host}:{scheduler_port}")
            api.state.scheduler_port = bound
            await server.start()
        await router.start()
        try:
            yield
        finally:
            if server is not None:
                await server.stop(grace=1.0)
            await router.stop()
            if trace_out is not None:
                try:
                    path = router.trace.write(trace_out)
                    log.info("recorded traffic (%d invocations) written to %s", len(router.trace), path)
                except (OSError, ValueError) as error:
                    log.error("could not write the recorded traffic to %s: %s", trace_out, error)

    api = FastAPI(title="wl router", lifespan=lifespan, docs_url=None, redoc_url=None)
    api.state.router = router
    api.state.scheduler_port = scheduler_port

    # The handlers below are async: they run on the event loop, the only place the router's
    # tables change, so they never see them half-updated.
    def require_admin(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token or not secrets.compare_digest(token.strip(), admin_token):
            raise HTTPException(401, "missing or wrong admin token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})

    @api.get("/healthz")
    async def healthz() -> dict:
        alive = sum(1 for n in router.nodes if n.alive)
        return {"status": "ok", "nodes": len(router.nodes), "nodes_alive": alive, "started": router.started}

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(router.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.get("/admin/policy")
    async def get_policy(request: Request) -> dict:
        require_admin(request)
        return router.describe_policy()

    @api.put("/admin/policy")
    async def put_policy(request: Request) -> dict:
        require_admin(request)
        spec = (await _json_body(request)).get("spec")
        if not isinstance(spec, str) or not spec.strip():
            raise HTTPException(400, 'body must be JSON {"spec": "<policy spec>"}, e.g. {"spec": "fixed_ttl"}')
        try:
            return await router.set_policy(spec.strip())
        except PolicySpecError as error:
            raise HTTPException(400, str(error)) from None

    @api.get("/admin/state")
    async def state(request: Request) -> dict:
        require_admin(request)
        return router.snapshot()

    @api.get("/admin/functions")
    async def list_functions(request: Request) -> list[dict]:
        require_admin(request)
        try:
            listing = await router.list_registry()
        except RouterError as error:
            raise HTTPException(error.status, error.message) from None
        out = []
        for meta in listing:
            fn = router.functions.get(meta["name"])
            out.append({**meta, "live": router.function_summary(fn) if fn is not None else None})
        return out

    @api.post("/admin/functions/{name}")
    async def deploy(name: str, request: Request) -> JSONResponse:
        require_admin(request)
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

    @api.delete("/admin/functions/{name}")
    async def delete(name: str, request: Request) -> JSONResponse:
        require_admin(request)
        try:
            status, body = await router.delete(name)
        except RouterError as error:
            raise HTTPException(error.status, error.message) from None
        return JSONResponse(body, status_code=status)

    @api.get("/admin/logs/{name}")
    async def logs(name: str, request: Request, limit: int = 50) -> list[dict]:
        require_admin(request)
        fn = router.functions.get(name)
        if fn is None:
            raise HTTPException(404, f"no invocations of {name!r} recorded by this router")
        return list(fn.logs)[-max(1, limit):]

    @api.get("/admin/trace")
    async def trace(request: Request, format: str = "csv") -> Response:
        require_admin(request)
        if format not in ("csv", "parquet"):
            raise HTTPException(400, f"format must be csv or parquet, got {format!r}")
        rows = list(router.trace.rows)  # a snapshot taken on the loop, encoded off it
        if format == "csv":
            return Response(await asyncio.to_thread(encode_csv, rows), media_type="text/csv")
        return Response(await asyncio.to_thread(encode_parquet, rows), media_type="application/vnd.apache.parquet")

    @api.get("/admin/nodes")
    async def nodes(request: Request) -> list[dict]:
        require_admin(request)
        return router.snapshot()["nodes"]

    @api.post("/admin/nodes")
    async def add_node(request: Request) -> dict:
        require_admin(request)
        address = (await _json_body(request)).get("address")
        if not isinstance(address, str) or ":" not in address:
            raise HTTPException(400, 'body must be JSON {"address": "host:port"}')
        node = await router.add_node(address)
        return {"name": node.name, "address": node.address, "alive": node.alive, "last_error": node.last_error}

    return RouterApp(router, api)


async def _json_body(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(400, "body must be JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "body must be a JSON object")
    return body


def run_router_forever(app: RouterApp, host: str, port: int, loop: str = "uvloop", log_level: str = "warning") -> None:
    """Serve until SIGINT/SIGTERM (uvicorn handles both and runs the lifespan shutdown)."""
    import uvicorn

    # No proxy-header rewriting (loopback; one less middleware per request) and no Server header.
    uvicorn.run(app, host=host, port=port, loop=loop, http="httptools", lifespan="on", access_log=False,
                log_level=log_level, proxy_headers=False, server_header=False)


__all__ = ["RouterApp", "SchedulerService", "create_app", "run_router_forever"]
