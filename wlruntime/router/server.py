"""The router's HTTP API (FastAPI) and its Scheduler gRPC service, on one event loop.

The HTTP app is assembled here from the modules in ``wlruntime/router/http/``:

- ``invoke.py``: the invoke hot paths, plain ASGI in front of FastAPI (no auth; like a Lambda
  function URL on loopback):
    POST /invoke/{function}                               body in, the function's output out
    POST /2015-03-31/functions/{function}/invocations     the AWS Lambda Invoke API
- ``lambda_api.py``: the Lambda control plane (Create/Get/List/Update/Delete functions,
  versions, reserved concurrency, account settings; admin token as the AWS access key id);
  any other Lambda operation answers an AWS-shaped error naming it.
- ``events.py``: the durable queue of Event invocations (SQLite in the state dir).
- ``admin.py``: /admin/..., declared once behind the admin-token dependency.
- ``uploaded.py``: routing code uploaded to the registry (``uploaded:NAME`` policies).
- plain FastAPI here: GET /healthz, GET /metrics.

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

The Lambda Invoke path follows Lambda's wire format: RequestResponse, Event (202, queued
durably, retried twice on function errors) and DryRun (204) invocation types; a payload that
is not JSON is 400 InvalidRequestContentException; X-Amz-Function-Error: Unhandled with an
{"errorMessage", "errorType"} body for function errors and timeouts, X-Amz-Executed-Version,
X-Amz-Log-Result (START/END/REPORT lines, base64) with X-Amz-Log-Type: Tail, and Lambda's error
types (ResourceNotFoundException 404, RequestTooLargeException 413, TooManyRequestsException
429) in x-amzn-ErrorType. Request features come from X-WL-Feature headers there too, or from
the client context (boto3's ``ClientContext``: base64 JSON whose ``custom.wl_features`` maps
names to numbers).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from wlruntime.auth import InternalAuth
from wlruntime.proto import node_pb2 as pb
from wlruntime.proto import node_pb2_grpc
from wlruntime.router.core import CHANNEL_OPTIONS, Router
from wlruntime.router.http import lambda_api
from wlruntime.router.http.admin import admin_api
from wlruntime.router.http.events import LAMBDA_RETRY_DELAYS_S, EventQueue
from wlruntime.router.http.invocations import InvocationLog
from wlruntime.router.http.invoke import InvokeHandler
from wlruntime.router.http.invoke import features as _features  # noqa: F401 (re-exported for tests)
from wlruntime.router.http.invoke import metadata as _metadata  # noqa: F401
from wlruntime.router.http.uploaded import UploadedPolicies
from wlruntime.router.http.wire import arn as _arn  # noqa: F401
from wlruntime.router.http.wire import retry_after_s as _retry_after_s  # noqa: F401

log = logging.getLogger("wlruntime.router")

RouterApp = InvokeHandler  # the ASGI app create_app returns (``.api`` is the FastAPI app)


class SchedulerService(node_pb2_grpc.SchedulerServicer):
    """Scheduler.OnIdle for the nodes, answered on the router's event loop."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def OnIdle(self, request: pb.IdleEvent, context: grpc.aio.ServicerContext) -> pb.IdleDirective:
        return self.router.on_node_idle(request)


def create_app(router: Router, *, admin_token: str, scheduler_host: str = "127.0.0.1",
               scheduler_port: int | None = None, trace_out: str | Path | None = None,
               state_dir: str | Path | None = None,
               event_retry_delays_s: tuple[float, ...] = LAMBDA_RETRY_DELAYS_S,
               uploaded_policy: str | None = None) -> InvokeHandler:
    """The router's ASGI app. Its lifespan starts the router (node health checks, registry
    listing), the Event queue and, when ``scheduler_port`` is given, the Scheduler gRPC server
    (0 = any free port; the bound port is in ``app.api.state.scheduler_port``).

    ``state_dir`` keeps what must survive a restart: queued Event invocations (events.db), the
    Lambda descriptive fields (lambda.db) and fetched uploaded policies (policies/). Without it
    they live in memory. ``uploaded_policy`` (``uploaded:NAME[@version]``) is fetched from the
    registry and made the policy at start; the router does not start without it."""
    state = Path(state_dir).expanduser() if state_dir is not None else None
    invocations = InvocationLog()
    events = EventQueue(router, state / "events.db" if state is not None else None,
                        retry_delays_s=event_retry_delays_s, invocations=invocations)
    uploaded = UploadedPolicies(router, state / "policies" if state is not None else None)

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
        if uploaded_policy is not None:
            await uploaded.activate(uploaded_policy)  # PolicySpecError (with the reason) stops the start
        await events.start()
        try:
            yield
        finally:
            await events.stop()
            if server is not None:
                await server.stop(grace=1.0)
            await router.stop()
            plane.close()
            uploaded.close()
            if trace_out is not None:
                try:
                    path = router.trace.write(trace_out)
                    log.info("recorded traffic (%d invocations) written to %s", len(router.trace), path)
                except (OSError, ValueError) as error:
                    log.error("could not write the recorded traffic to %s: %s", trace_out, error)

    api = FastAPI(title="wl router", lifespan=lifespan, docs_url=None, redoc_url=None)
    api.state.router = router
    api.state.scheduler_port = scheduler_port
    api.state.events = events

    @api.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
                             for e in error.errors())
        return JSONResponse({"detail": f"bad request: {problems}"}, status_code=400)

    @api.get("/healthz")
    async def healthz() -> dict[str, Any]:
        alive = sum(1 for n in router.nodes if n.alive)
        return {"status": "ok", "nodes": len(router.nodes), "nodes_alive": alive, "started": router.started}

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(router.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    api.include_router(admin_api(router, admin_token, events, uploaded, invocations))
    plane = lambda_api.install(api, router, admin_token, state, invocations)
    return InvokeHandler(router, api, events, invocations)


def run_router_forever(app: InvokeHandler, host: str, port: int, loop: str = "uvloop",
                       log_level: str = "warning") -> None:
    """Serve until SIGINT/SIGTERM (uvicorn handles both and runs the lifespan shutdown)."""
    import gc

    import uvicorn

    # What exists now (modules, the app, the router, the policy) lives as long as the process:
    # frozen, it is left out of the collector's full passes, which then walk only what requests
    # left behind (measured: a full collection every ~15k requests took ~50 ms, bench/README.md).
    gc.collect()
    gc.freeze()
    # No proxy-header rewriting (loopback; one less middleware per request) and no Server header.
    uvicorn.run(app, host=host, port=port, loop=loop, http="httptools", lifespan="on", access_log=False,
                log_level=log_level, proxy_headers=False, server_header=False)


__all__ = ["RouterApp", "SchedulerService", "create_app", "run_router_forever"]
