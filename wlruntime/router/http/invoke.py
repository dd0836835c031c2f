"""The invoke hot paths, served by a small ASGI handler in front of the FastAPI app:

  POST /invoke/{function}                               body in, the function's output out
  POST /2015-03-31/functions/{function}/invocations     the AWS Lambda Invoke API

FastAPI's request parsing and dependency machinery would cost more than the rest of the
router's work on these paths, so they are plain ASGI (see server.py for the wire contract).
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import math
import re
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from wlruntime.router.core import UNKNOWN_FUNCTION, Router
from wlruntime.router.http import wire
from wlruntime.router.http.wire import JSON, OCTET, ClientGone, arn, json_bytes, retry_after_s
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

if TYPE_CHECKING:
    from wlruntime.router.http.events import EventQueue
    from wlruntime.router.http.invocations import InvocationLog

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
LAMBDA_EXCEPTIONS = {404: "ResourceNotFoundException", 413: "RequestTooLargeException",
                     429: "TooManyRequestsException", 503: "ServiceException", 504: "ServiceException"}
MAX_FEATURES = 16
FEATURE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class InvokeHandler:
    """ASGI entry point: the invoke fast paths, then ``fallback`` (the FastAPI app) for the rest."""

    def __init__(self, router: Router, fallback: Any, events: EventQueue | None = None,
                 invocations: InvocationLog | None = None) -> None:
        self.router = router
        self.api = fallback
        self.events = events
        self.invocations = invocations
        self._ids = itertools.count(1)  # request ids of /invoke calls, for `wl logs`

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
            except ClientGone:
                return
        await self.api(scope, receive, send)

    # ---- POST /invoke/{function} ------------------------------------------------------------
    async def _invoke(self, name: str, scope: dict, receive: Any, send: Any) -> None:
        router = self.router
        fn = None
        request_id = f"i{next(self._ids)}"
        try:
            fn = router.catalog.functions.get(name) or await router.function(unquote(name))
            payload = await self._body(fn, scope, receive)
            result = await router.invoke(fn.name, payload, metadata(scope), features(scope))
        except RouterError as error:
            if error.status == 404:
                router.metrics.outcome(UNKNOWN_FUNCTION, error.kind)  # one label for all unknown names
            elif fn is not None and self.invocations is not None:
                self.invocations.refused(fn.name, request_id, error)
            await self._invoke_error(send, error)
            return
        if self.invocations is not None:
            self.invocations.record(fn.name, request_id, result)
        headers = [OCTET,
                   (b"x-wl-cold", b"1" if result.cold else b"0"),
                   (b"x-wl-duration-ms", b"%.3f" % result.exec_ms),
                   (b"x-wl-wait-ms", b"%.3f" % result.wait_ms),
                   (b"x-wl-version", str(result.version).encode()),
                   (b"x-wl-instance", result.instance.encode()),
                   (b"x-wl-node", result.node.encode())]
        if result.error == OK:
            await wire.send(send, 200, headers, result.output)
            return
        headers[0] = JSON
        headers.append((b"x-wl-error", result.error.encode()))
        status = 504 if result.error == TIMEOUT else 502 if result.error == NODE_ERROR else 500
        await wire.send(send, status, headers, json_bytes({"error": result.error, "message": result.error_message,
                                                           "logs": result.logs.decode("utf-8", "replace")}))

    async def _body(self, fn: Any, scope: dict, receive: Any) -> bytes:
        limit = min(fn.max_payload_bytes, HARD_BODY_LIMIT)
        declared = wire.content_length(scope)
        body = None if declared is not None and declared > limit else await wire.read_body(receive, limit)
        if body is None:
            self.router.metrics.outcome(fn.name, PayloadTooLarge.kind)
            raise PayloadTooLarge(f"Request must be smaller than {limit} bytes for function {fn.name}", limit)
        return body

    async def _invoke_error(self, send: Any, error: RouterError) -> None:
        headers = [JSON, (b"x-wl-error", error.kind.encode())]
        body: dict[str, Any] = {"error": error.kind, "message": error.message}
        if isinstance(error, Throttled):
            headers.append((b"retry-after", retry_after_s(error.retry_after_ms)))
            body["retry_after_ms"] = error.retry_after_ms
            body["reason"] = error.reason
        await wire.send(send, error.status, headers, json_bytes(body))

    # ---- POST /2015-03-31/functions/{name}/invocations ----------------------------------------
    async def _lambda(self, name: str, scope: dict, receive: Any, send: Any) -> None:
        router = self.router
        request_id = str(uuid.uuid4())
        name, qualifier = split_function_name(unquote(name))
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
            version = await self._published_version(fn, qualifier)
            payload = await self._body(fn, scope, receive)
            if payload.strip():
                try:
                    json.loads(payload)
                except ValueError as error:  # Lambda takes JSON documents only (UnicodeDecodeError too)
                    await self._lambda_error(send, request_id, 400, "InvalidRequestContentException",
                                             f"Could not parse request body into json: {error}")
                    return
            request_features = features(scope, client_context)
            if invocation_type == "DryRun":
                await wire.send(send, 204, [(b"x-amzn-requestid", request_id.encode())], b"")
                return
            if invocation_type == "Event":
                await self._event(fn.name, version, payload, request_features, request_id)
                await wire.send(send, 202, [(b"x-amzn-requestid", request_id.encode())], b"")
                return
            if invocation_type != "RequestResponse":
                await self._lambda_error(send, request_id, 400, "InvalidParameterValueException",
                                         f"Invalid X-Amz-Invocation-Type {invocation_type!r}: use RequestResponse, "
                                         "Event or DryRun")
                return
            result = await router.invoke(fn.name, payload, metadata(scope, request_id), request_features,
                                         version=version)
            if self.invocations is not None:
                self.invocations.record(fn.name, request_id, result)
        except _LambdaNotFound as missing:
            await self._lambda_error(send, request_id, 404, "ResourceNotFoundException",
                                     f"Function not found: {arn(missing.name, missing.qualifier)}")
            return
        except RouterError as error:
            if error.status == 404:
                router.metrics.outcome(UNKNOWN_FUNCTION, error.kind)
                await self._lambda_error(send, request_id, 404, "ResourceNotFoundException",
                                         f"Function not found: {arn(name, qualifier)}")
            elif isinstance(error, BadRequest):
                await self._lambda_error(send, request_id, 400, "InvalidParameterValueException", error.message)
            elif error.status == 504:
                await self._lambda_function_error(send, request_id, Result(error=TIMEOUT, error_message=error.message),
                                                  "", log_type, 0)
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
            headers = [JSON, (b"x-amzn-requestid", request_id.encode()), (b"x-amz-executed-version", version)]
            if log_type == "Tail":
                headers.append((b"x-amz-log-result", tail_log(request_id, result, fn.memory_mb)))
            await wire.send(send, 200, headers, result.output)
        elif result.error == NODE_ERROR:
            await self._lambda_error(send, request_id, 502, "ServiceException", result.error_message)
        else:
            await self._lambda_function_error(send, request_id, result, version.decode(), log_type, fn.memory_mb)

    async def _published_version(self, fn: Any, qualifier: str | None) -> int | None:
        """The published version a Lambda qualifier names when it is not the latest one (None for
        $LATEST or the latest number); _LambdaNotFound for a version that does not exist (or an
        alias: wl has none)."""
        if qualifier in (None, "", "$LATEST") or qualifier == str(fn.version):
            return None
        if not qualifier.isdigit() or int(qualifier) > fn.version:
            raise _LambdaNotFound(fn.name, qualifier)
        meta = await self.router.catalog.registry_get(f"/functions/{fn.name}/versions/{int(qualifier)}")
        if meta is None:
            raise _LambdaNotFound(fn.name, qualifier)
        return int(qualifier)

    async def _event(self, name: str, version: int | None, payload: bytes,
                     request_features: dict[str, float] | None, request_id: str) -> None:
        """Queue an Event invocation; ``version``: a published version other than the latest."""
        if self.events is not None:
            # the queue stores "name:N" for a pinned version (events.pinned_target reads it back)
            await self.events.enqueue(name if version is None else f"{name}:{version}", payload, request_features,
                                      request_id)
            return
        # No queue (an app built without one, e.g. in unit tests): run once in the background.
        self.router._bg(self.router.invoke(name, payload, {"invocation_type": "Event"}, request_features, version))

    async def _lambda_function_error(self, send: Any, request_id: str, result: Result, version: str,
                                     log_type: str | None, memory_mb: float) -> None:
        error_type = LAMBDA_ERROR_TYPES.get(result.error, "Runtime.Unknown")
        message = result.error_message or result.error
        headers = [JSON, (b"x-amzn-requestid", request_id.encode()), (b"x-amz-function-error", b"Unhandled")]
        if version:
            headers.append((b"x-amz-executed-version", version.encode()))
        if log_type == "Tail":
            headers.append((b"x-amz-log-result", tail_log(request_id, result, memory_mb)))
        await wire.send(send, 200, headers, json_bytes({"errorMessage": message, "errorType": error_type}))

    async def _lambda_error(self, send: Any, request_id: str, status: int, error_type: str, message: str,
                            extra: dict[str, Any] | None = None, retry_after_ms: float | None = None) -> None:
        headers = [JSON, (b"x-amzn-requestid", request_id.encode()), (b"x-amzn-errortype", error_type.encode())]
        if retry_after_ms is not None:
            headers.append((b"retry-after", retry_after_s(retry_after_ms)))
        await wire.send(send, status, headers, json_bytes(wire.lambda_error_body(message, **(extra or {}))))


class _LambdaNotFound(Exception):
    def __init__(self, name: str, qualifier: str | None) -> None:
        self.name = name
        self.qualifier = qualifier


def split_function_name(name: str) -> tuple[str, str | None]:
    """(name, qualifier) from a function name, a partial ARN (123456789012:function:name) or a
    full ARN, each optionally with ``:qualifier``, as Lambda accepts them."""
    if ":function:" in name:
        name = name.split(":function:", 1)[1]
    qualifier = None
    if ":" in name:
        name, qualifier = name.split(":", 1)
    return name, qualifier


def tail_log(request_id: str, result: Result, memory_mb: float) -> bytes:
    """X-Amz-Log-Result: the last 4 KB of the invocation's log as Lambda writes it (START, the
    function's stderr, END, REPORT), base64. Init Duration (cold starts only) is how long the
    request waited for its instance to start. Max Memory Used is the instance's peak linear
    memory as the node measured it after the call (InvokeResult.max_memory_bytes, carried in
    ``result.extra``); when it is not measured (components), the instance's memory size."""
    lines = [f"START RequestId: {request_id} Version: {result.version or '$LATEST'}\n".encode()]
    if result.logs:
        lines.append(result.logs if result.logs.endswith(b"\n") else result.logs + b"\n")
    lines.append(f"END RequestId: {request_id}\n".encode())
    report = (f"REPORT RequestId: {request_id}\tDuration: {result.exec_ms:.2f} ms\t"
              f"Billed Duration: {max(1, math.ceil(result.exec_ms))} ms\tMemory Size: {memory_mb:g} MB\t"
              f"Max Memory Used: {max_memory_used_mb(result, memory_mb):g} MB\t")
    if result.cold:
        report += f"Init Duration: {result.wait_ms:.2f} ms\t"
    lines.append(report.encode() + b"\n")
    return base64.b64encode(b"".join(lines)[-LOG_TAIL_BYTES:])


def max_memory_used_mb(result: Result, memory_mb: float) -> int | float:
    """Lambda's Max Memory Used (whole MB, rounded up) from the node's measurement, or the
    instance's memory size when the node did not measure it."""
    measured = result.extra.get("max_memory_bytes", 0)
    return math.ceil(measured / (1024 * 1024)) if measured else memory_mb


def metadata(scope: dict, request_id: str | None = None) -> dict[str, str]:
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


def features(scope: dict, client_context: bytes | None = None) -> dict[str, float] | None:
    """The request's features for the policy: X-WL-Feature-<name> headers, and on the Lambda
    path the client context's custom.wl_features. Raises BadRequest naming what is wrong."""
    raw: list[tuple[str, Any]] = []
    for key, value in scope["headers"]:
        if key.startswith(b"x-wl-feature-"):
            raw.append((key[13:].decode("latin-1"), value.decode("latin-1")))
    if client_context is not None:
        try:
            context = json.loads(base64.b64decode(client_context, validate=True))
        except ValueError:
            raise BadRequest("X-Amz-Client-Context: not base64-encoded JSON") from None
        custom = context.get("custom") if isinstance(context, dict) else None
        given = custom.get("wl_features") if isinstance(custom, dict) else None
        if not isinstance(context, dict) or not isinstance(custom or {}, dict) or not isinstance(given or {}, dict):
            # what is wrong, in the caller's terms (no Python type names)
            raise BadRequest("X-Amz-Client-Context: expected a JSON object whose custom.wl_features is an "
                             "object mapping feature names to numbers")
        given = given or {}
        raw.extend(given.items())
    if not raw:
        return None
    if len(raw) > MAX_FEATURES:
        raise BadRequest(f"a request carries at most {MAX_FEATURES} features, got {len(raw)}")
    out: dict[str, float] = {}
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
        out[name] = number
    return out
