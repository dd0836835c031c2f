"""The code registry's HTTP API (FastAPI).

Writes (upload, delete) need ``Authorization: Bearer <token>``. Reads are open unless
``read_token_required`` is set, but a function's secrets (its config's ``env`` values) are
only shown to callers with the token: without it every value reads ``REDACTED`` (the nodes
and the router send the token). Run the registry on loopback (the default, 127.0.0.1) or
behind a network boundary.

Endpoints::

    POST   /functions/{name}                           multipart: wasm (file), config (JSON)
    GET    /functions                                  latest version of every function
    GET    /functions/{name}                           {"name", "versions": [...]}
    DELETE /functions/{name}
    GET    /functions/{name}/versions/{version}        metadata; version is an int or "latest"
    GET    /functions/{name}/versions/{version}/code   wasm bytes, ETag "<sha256>"
    GET    /blobs/{sha256}                             wasm bytes, ETag "<sha256>"
    POST/GET /policies/...                             uploaded routing code (registry/policies.py)
    GET    /healthz                                    {"status": "ok"}, header X-WL-Registry-Id

Errors are JSON ``{"detail": "<what is wrong>"}``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from wlcommon.files import read_or_create_token_file
from wlruntime.config import Settings
from wlruntime.names import SHA256_RE
from wlruntime.registry.models import FunctionConfig, name_problem
from wlruntime.registry.policies import add_policy_routes
from wlruntime.registry.store import RegistryStore

REDACTED = "(redacted: send the registry token to read it)"
REGISTRY_ID_HEADER = "X-WL-Registry-Id"
# Multipart framing and the config field ride on top of the wasm bytes.
MULTIPART_SLACK_BYTES = 1024 * 1024


def resolve_token(settings: Settings) -> tuple[str, Path | None]:
    """The write token and, when it lives in a file, that file.

    A configured token (config file, ``WL_REGISTRY_TOKEN``, ``--token``) wins. Otherwise the
    token in ``<registry dir>/registry.token`` is used, created on first start (0600).
    """
    if settings.registry.token:
        return settings.registry.token, None
    path = settings.registry_token_file()
    return read_or_create_token_file(path), path


class _AnyPath(Convertor):
    """Like starlette's ``path`` convertor, newlines included: every name reaches the name check."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", _AnyPath())


class _BodyTooLarge(Exception):
    pass


class _UploadSizeLimit:
    """Rejects request bodies over ``max_body`` with 413 before they are buffered: at once
    when Content-Length says so, otherwise as soon as the streamed body passes the limit."""

    def __init__(self, app: Any, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            response = JSONResponse({"detail": self._message()}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge()
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"request body too large: the code may be at most {self.max_body - MULTIPART_SLACK_BYTES} bytes"


def _etag_matches(if_none_match: str | None, sha256: str) -> bool:
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == f'"{sha256}"':
            return True
    return False


def _parse_version(version: str) -> int | None:
    """None for "latest", else a positive int; 400 otherwise."""
    if version == "latest":
        return None
    if version.isdigit() and int(version) >= 1:
        return int(version)
    raise HTTPException(400, f"invalid version {version!r}: expected a positive integer or 'latest'")


def _check_name(name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise HTTPException(400, problem)
    return name


def _config_problem(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
            problems.append(f"{field}: unknown field (known: {', '.join(FunctionConfig.model_fields)})")
        else:
            problems.append(f"{field}: {err['msg']}")
    return "invalid config: " + "; ".join(problems)


def _parse_config(raw: str | None) -> FunctionConfig:
    if raw is None or raw.strip() == "":
        return FunctionConfig()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"invalid config: not valid JSON: {exc}") from None
    if value is None:
        return FunctionConfig()
    if not isinstance(value, dict):
        raise HTTPException(400, f"invalid config: expected a JSON object, got {type(value).__name__}")
    try:
        return FunctionConfig.model_validate(value)
    except ValidationError as exc:
        raise HTTPException(400, _config_problem(exc)) from None


class _Validator:
    """Validates uploaded code with wasmtime, off the event loop, and each code once.

    Compiling a big component takes seconds to tens of seconds of CPU (a componentize-py
    handler embeds CPython), so validations run on their own threads, each compiling on its
    calling thread only (``parallel_compilation=False``: wasmtime's shared compile pool would
    make a small upload wait for a big one). The outcome is remembered by (sha256, ABI): bytes
    already stored under that ABI passed (the store answers across restarts), recent failures
    are kept in memory, and concurrent uploads of the same bytes share one validation.

    With ``compiled_cache_dir`` (the nodes' compiled cache on this host) the artifact compiled
    for validating is kept there, so nodes load it instead of compiling the code again.
    """

    MAX_REMEMBERED = 10_000

    def __init__(self, store: RegistryStore, compiled_cache_dir: Path | None, threads: int = 4) -> None:
        self.store = store
        self.compiled_cache = None
        if compiled_cache_dir is not None:
            from wlruntime.wasm.cache import CompiledCache  # imports wasmtime

            # nothing kept in memory: the registry only leaves artifacts on disk for the nodes
            self.compiled_cache = CompiledCache(compiled_cache_dir, max_in_memory=0, parallel_compilation=False)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="validate")
        self._passed: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._failed: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._running: dict[tuple[str, str], asyncio.Task] = {}

    async def check(self, data: bytes, config: FunctionConfig) -> tuple[str, dict[str, Any]]:
        """(sha256, the config to store with the ABI filled in); raises 400 with wasmtime's reason."""
        from wlruntime.wasm.validate import detect_kind

        try:
            abi = config.abi or ("component" if detect_kind(data) == "component" else "wasi-command")
        except ValueError as exc:
            raise HTTPException(400, f"invalid code: {exc}") from None
        loop = asyncio.get_running_loop()
        sha256 = await loop.run_in_executor(self.pool, _sha256, data)  # 18 MB take ~30 ms: not on the loop
        key = (sha256, abi)
        if key not in self._passed:
            task = self._running.get(key)
            if task is None:
                task = self._running[key] = loop.create_task(self._validate(key, data, config.fuel is not None))
                task.add_done_callback(lambda _: self._running.pop(key, None))
            problem = await asyncio.shield(task)  # a gone client does not cancel it for the others
            if problem is not None:
                raise HTTPException(400, problem)
        return sha256, config.model_dump() | {"abi": abi}

    async def _validate(self, key: tuple[str, str], data: bytes, fuel: bool) -> str | None:
        """None when the code is valid, else the error message (both remembered)."""
        problem = self._failed.get(key)
        if problem is not None:
            return problem
        sha256, abi = key
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(self.pool, self.store.has_code, sha256, abi):
            validate = functools.partial(self._compile, sha256, abi, data, fuel)
            try:
                await loop.run_in_executor(self.pool, validate)
            except ValueError as exc:
                problem = f"invalid code for abi {abi!r}: {exc}"
                _remember(self._failed, key, problem, self.MAX_REMEMBERED)
                return problem
        _remember(self._passed, key, None, self.MAX_REMEMBERED)
        return None

    def _compile(self, sha256: str, abi: str, data: bytes, fuel: bool) -> None:
        """Validate by compiling; with a compiled cache folder, through the nodes' cache (which
        validates what it compiles) so the artifact stays there. Raises InvalidWasm."""
        if self.compiled_cache is None:
            from wlruntime.wasm.validate import validate_wasm

            validate_wasm(data, abi, fuel=fuel, parallel_compilation=False)
        else:
            self.compiled_cache.get(sha256, abi, fuel, lambda: data)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def redact(meta: dict) -> dict:
    """``meta`` with its config's env values (secrets) replaced by REDACTED (keys stay visible)."""
    config = meta.get("config")
    if not isinstance(config, dict) or not config.get("env"):
        return meta
    return {**meta, "config": {**config, "env": dict.fromkeys(config["env"], REDACTED)}}


def _remember(memory: OrderedDict, key: Any, value: Any, limit: int) -> None:
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > limit:
        memory.popitem(last=False)


def create_app(settings: Settings) -> FastAPI:
    """The registry app storing into ``settings.registry_dir()``."""
    store = RegistryStore(settings.registry_dir())
    token, token_file = resolve_token(settings)
    max_wasm = settings.registry.max_wasm_bytes
    compiled_cache_dir = settings.registry.compiled_cache_dir
    validator = _Validator(store, Path(compiled_cache_dir).expanduser() if compiled_cache_dir else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        validator.close()

    app = FastAPI(title="wl code registry", version="1", lifespan=lifespan)
    app.state.store = store
    app.state.token_file = token_file
    app.add_middleware(_UploadSizeLimit, max_body=max_wasm + MULTIPART_SLACK_BYTES)

    @app.exception_handler(_BodyTooLarge)
    async def _too_large(request: Request, exc: _BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": f"upload too large: the code may be at most {max_wasm} bytes"}, 413)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # The uploader went away mid-body; nothing was stored and nobody reads this answer.
        return Response(status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"detail": f"bad request: {problems}"}, 400)

    def _authorize(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(401, "missing token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(401, "wrong token", headers={"WWW-Authenticate": "Bearer"})

    def _shown(request: Request, meta: dict) -> dict:
        """What a read shows of ``meta``: secrets only to a caller with the token."""
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return meta
        return redact(meta)

    def require_write(request: Request) -> None:
        _authorize(request)

    def require_read(request: Request) -> None:
        if settings.registry.read_token_required:
            _authorize(request)

    def _get_version(name: str, version: str) -> dict:
        _check_name(name)
        number = _parse_version(version)
        meta = store.get(name, number)
        if meta is None:
            if number is None or not store.versions(name):
                raise HTTPException(404, f"no function named {name!r}")
            raise HTTPException(404, f"function {name!r} has no version {number}")
        return meta

    def _code_response(request: Request, sha256: str, immutable: bool, extra: dict[str, str]) -> Response:
        headers = {"ETag": f'"{sha256}"',
                   "Cache-Control": "public, max-age=31536000, immutable" if immutable else "no-cache"} | extra
        if _etag_matches(request.headers.get("if-none-match"), sha256):
            return Response(status_code=304, headers=headers)
        path = store.blob_path(sha256)
        if not path.is_file():
            raise HTTPException(404, f"no blob with sha256 {sha256}")
        return FileResponse(path, media_type="application/wasm", headers=headers)

    @app.get("/healthz")
    def healthz(response: Response) -> dict:
        # Which registry this is: nodes key their cache of name@version metadata by it.
        response.headers[REGISTRY_ID_HEADER] = store.registry_id
        return {"status": "ok"}

    @app.get("/functions", dependencies=[Depends(require_read)])
    def list_functions(request: Request) -> list[dict]:
        return [{"name": m["name"], "latest_version": m["version"], "sha256": m["sha256"], "size": m["size"],
                 "config": m["config"], "created_at": m["created_at"]}
                for m in map(functools.partial(_shown, request), store.latest_of_each())]

    # {name:anypath} so that names with '/' (e.g. "../etc", percent-encoded) or control
    # characters (starlette's :path stops at a newline) reach the name
    # check and get a 400 instead of falling through to a routing 404.
    @app.post("/functions/{name:anypath}", status_code=201, dependencies=[Depends(require_write)])
    async def upload(name: str, request: Request) -> JSONResponse:
        _check_name(name)
        async with request.form(max_files=1, max_fields=4) as form:
            wasm = form.get("wasm")
            if wasm is None:
                raise HTTPException(400, "missing multipart file field 'wasm' with the .wasm code")
            if not isinstance(wasm, UploadFile):
                raise HTTPException(400, "field 'wasm' must be a file part (multipart filename=...)")
            raw_config = form.get("config")
            if raw_config is not None and not isinstance(raw_config, str):
                raise HTTPException(400, "field 'config' must be a text field holding JSON, not a file")
            data = await wasm.read(max_wasm + 1)
        if len(data) > max_wasm:
            raise HTTPException(413, f"upload too large: the code may be at most {max_wasm} bytes")
        if not data:
            raise HTTPException(400, "invalid code: the 'wasm' file is empty")
        config = _parse_config(raw_config)
        sha256, stored_config = await validator.check(data, config)
        meta, created = await run_in_threadpool(store.add_version, name, data, sha256, stored_config)
        return JSONResponse(meta, status_code=201 if created else 200,
                            headers={"Location": f"/functions/{name}/versions/{meta['version']}"})

    @app.delete("/functions/{name:anypath}", dependencies=[Depends(require_write)])
    def delete_function(name: str) -> dict:
        _check_name(name)
        removed = store.delete(name)
        if removed == 0:
            raise HTTPException(404, f"no function named {name!r}")
        return {"name": name, "deleted_versions": removed}

    @app.get("/functions/{name}", dependencies=[Depends(require_read)])
    def get_function(name: str, request: Request) -> dict:
        _check_name(name)
        versions = store.versions(name)
        if not versions:
            raise HTTPException(404, f"no function named {name!r}")
        return {"name": name, "versions": [_shown(request, v) for v in versions]}

    @app.get("/functions/{name}/versions/{version}", dependencies=[Depends(require_read)])
    def get_version(name: str, version: str, request: Request) -> dict:
        return _shown(request, _get_version(name, version))

    @app.get("/functions/{name}/versions/{version}/code", dependencies=[Depends(require_read)])
    def get_code(name: str, version: str, request: Request) -> Response:
        meta = _get_version(name, version)
        return _code_response(request, meta["sha256"], immutable=version != "latest",
                              extra={"X-WL-Function": name, "X-WL-Version": str(meta["version"])})

    @app.get("/blobs/{sha256}", dependencies=[Depends(require_read)])
    def get_blob(sha256: str, request: Request) -> Response:
        if not SHA256_RE.match(sha256):
            raise HTTPException(400, f"invalid sha256 {sha256[:80]!r}: expected 64 lowercase hex digits")
        return _code_response(request, sha256, immutable=True, extra={})

    # Uploaded routing code (wasm policy modules, learned artifacts): its own store and names.
    app.state.policy_store = add_policy_routes(app, settings.registry_dir() / "policies", require_read,
                                               require_write, max_wasm)

    @app.api_route("/functions/{rest:anypath}", methods=["GET"], dependencies=[Depends(require_read)])
    def unmatched(rest: str) -> Response:
        # Reached for paths the routes above do not match, e.g. a name containing '/'.
        if name_problem(rest.split("/", 1)[0]):
            raise HTTPException(400, name_problem(rest))
        raise HTTPException(404, f"no such endpoint: /functions/{rest}")

    return app
