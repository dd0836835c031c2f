"""Routing code users upload: the registry's ``policies`` kind.

A policy is a sandboxed WebAssembly policy module (``wasm:``, ABI wl-policy v1) or a learned
artifact (``learned:``: a ZIP of the artifact folder, spec.json + weights.npz). It is stored
like a function: content-addressed by sha256, versions per name that only grow, in its own
store under ``<registry dir>/policies/`` so the two kinds never share names or versions. The
router fetches it by name@version for ``wl policy set uploaded:NAME[@version]`` and loads it
with the existing wasm:/learned: loaders (policies/registry.py); Python (``custom:``) policies
are not accepted here: they run arbitrary code in the router, so they stay a local admin option.

Endpoints (writes need the token, reads follow ``read_token_required``)::

    POST /policies/{name}                          multipart: code (file)
    GET  /policies                                 latest version of every policy
    GET  /policies/{name}                          {"name", "versions": [...]}
    GET  /policies/{name}/versions/{version}       metadata; version is an int or "latest"
    GET  /policies/{name}/versions/{version}/code  the bytes, ETag "<sha256>"
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from wlruntime.registry.models import name_problem
from wlruntime.registry.store import RegistryStore

WASM = "wasm"
LEARNED = "learned"
LEARNED_FILES = ("spec.json", "weights.npz")


def policy_kind(data: bytes) -> str:
    """``wasm`` or ``learned`` for uploaded policy bytes; ValueError naming what is wrong."""
    if data[:4] == b"\0asm":
        return WASM
    if data[:2] == b"PK":
        try:
            names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
        except zipfile.BadZipFile as error:
            raise ValueError(f"not a valid ZIP: {error}") from None
        missing = [f for f in LEARNED_FILES if f not in names]
        if missing:
            raise ValueError(f"a learned artifact ZIP holds {' and '.join(LEARNED_FILES)} at its top level "
                             f"(missing: {', '.join(missing)})")
        return LEARNED
    raise ValueError("expected a wasm policy module (.wasm) or a ZIP of a learned artifact folder "
                     "(spec.json + weights.npz); Python custom: policies cannot be uploaded")


def add_policy_routes(app: FastAPI, root: Path, require_read: Callable[..., None],
                      require_write: Callable[..., None], max_bytes: int) -> RegistryStore:
    """Add the /policies endpoints to the registry ``app``, storing under ``root``."""
    store = RegistryStore(root)

    def checked(name: str) -> str:
        problem = name_problem(name)
        if problem:
            raise HTTPException(400, problem.replace("function name", "policy name"))
        return name

    def version_of(name: str, version: str) -> dict[str, Any]:
        checked(name)
        if version != "latest" and not (version.isdigit() and int(version) >= 1):
            raise HTTPException(400, f"invalid version {version!r}: expected a positive integer or 'latest'")
        meta = store.get(name, None if version == "latest" else int(version))
        if meta is None:
            raise HTTPException(404, f"no policy {name!r}" + ("" if version == "latest" else f" version {version}"))
        return meta

    @app.post("/policies/{name:path}", status_code=201, dependencies=[Depends(require_write)])
    async def upload_policy(name: str, request: Request) -> JSONResponse:
        checked(name)
        async with request.form(max_files=1, max_fields=1) as form:
            code = form.get("code")
            if not isinstance(code, UploadFile):
                raise HTTPException(400, "missing multipart file field 'code' with the policy")
            data = await code.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, f"upload too large: a policy may be at most {max_bytes} bytes")
        try:
            kind = policy_kind(data)
        except ValueError as error:
            raise HTTPException(400, f"invalid policy: {error}") from None
        sha256 = hashlib.sha256(data).hexdigest()
        meta, created = await run_in_threadpool(store.add_version, name, data, sha256, {"kind": kind})
        return JSONResponse(meta, status_code=201 if created else 200)

    @app.get("/policies", dependencies=[Depends(require_read)])
    def list_policies() -> list[dict[str, Any]]:
        return store.latest_of_each()

    @app.get("/policies/{name}", dependencies=[Depends(require_read)])
    def policy_versions(name: str) -> dict[str, Any]:
        versions = store.versions(checked(name))
        if not versions:
            raise HTTPException(404, f"no policy {name!r}")
        return {"name": name, "versions": versions}

    @app.get("/policies/{name}/versions/{version}", dependencies=[Depends(require_read)])
    def policy_version(name: str, version: str) -> dict[str, Any]:
        return version_of(name, version)

    @app.get("/policies/{name}/versions/{version}/code", dependencies=[Depends(require_read)])
    def policy_code(name: str, version: str) -> Response:
        meta = version_of(name, version)
        path = store.blob_path(meta["sha256"])
        if not path.is_file():
            raise HTTPException(404, f"no blob with sha256 {meta['sha256']}")
        return FileResponse(path, media_type="application/octet-stream",
                            headers={"ETag": f'"{meta["sha256"]}"', "X-WL-Version": str(meta["version"]),
                                     "X-WL-Policy-Kind": meta["config"].get("kind", "")})

    return store
