"""``uploaded:NAME[@version][:key=value...]`` policies: routing code a user uploaded to the
registry (``wl policy upload``), fetched by the router and run sandboxed.

The router fetches the bytes (checked against their sha256), keeps them in
``<state dir>/policies/<sha256>.wasm`` or ``<sha256>/`` (a learned artifact, unzipped) and
hands ``wasm:<file>`` or ``learned:<dir>`` (with the parameters) to the existing loaders
(policies/registry.py). Only these two kinds exist: a wasm module runs fuel-limited and
memory-capped, a learned artifact is numbers evaluated by numpy. Python ``custom:`` policies
run arbitrary code in the router, so they are never uploaded: they stay an admin-only local
option (a path on the router's host).
"""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from policies.registry import PolicySpecError
from wlruntime.registry.client import RegistryClient, RegistryError
from wlruntime.registry.policies import LEARNED_FILES, WASM, policy_kind
from wlruntime.router.core import Router

PREFIX = "uploaded:"
REF_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_-]{0,62})(?:@(?P<version>latest|[0-9]+))?$")
MAX_UNZIPPED = 256 * 1024 * 1024


class UploadedPolicies:
    def __init__(self, router: Router, cache_dir: Path | None) -> None:
        self.router = router
        self._tmp = None if cache_dir is not None else tempfile.TemporaryDirectory(prefix="wl-policies-")
        self.cache_dir = cache_dir if cache_dir is not None else Path(self._tmp.name)
        self.registry = RegistryClient(router.registry_url, router.registry_token, timeout=120.0)

    def close(self) -> None:
        self.registry.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    async def upload(self, name: str, data: bytes) -> tuple[dict[str, Any], bool]:
        try:
            policy_kind(data)
        except ValueError as error:
            raise HTTPException(400, f"invalid policy: {error}") from None
        try:
            meta = await asyncio.to_thread(self.registry.upload_policy, name, data)
        except RegistryError as error:
            raise HTTPException(error.status or 503, f"the code registry: {error.message}") from None
        return meta, True

    async def list(self) -> list[dict[str, Any]]:
        try:
            return await asyncio.to_thread(self.registry.policies)
        except RegistryError as error:
            raise HTTPException(error.status or 503, f"the code registry: {error.message}") from None

    async def activate(self, spec: str) -> dict[str, Any]:
        """Fetch the uploaded policy ``spec`` names and make it the router's policy."""
        ref, _, params = spec[len(PREFIX):].partition(":")
        match = REF_RE.match(ref)
        if match is None:
            raise PolicySpecError(f"{spec!r}: expected uploaded:NAME[@version][:key=value...] with a policy name "
                                  "of lowercase letters, digits, '_' and '-'")
        name, version = match["name"], match["version"] or "latest"
        try:
            fetched = await asyncio.to_thread(self.registry.fetch_policy, name, version)
        except RegistryError as error:
            if error.status == 404:
                raise PolicySpecError(f"{spec!r}: no uploaded policy {name}@{version} "
                                      "(upload one with `wl policy upload NAME FILE`)") from None
            raise PolicySpecError(f"{spec!r}: the code registry: {error.message}") from None
        local = await asyncio.to_thread(self._materialise, fetched.data, fetched.sha256)
        local_spec = local + (f":{params}" if params else "")
        await self.router.set_policy(local_spec)
        label = f"{PREFIX}{name}@{fetched.version}" + (f":{params}" if params else "")
        self.router.policy_spec = label  # what `wl policy show` prints: the uploaded name, not the cache path
        return {**self.router.describe_policy(), "loaded_from": local_spec}

    def _materialise(self, data: bytes, sha256: str) -> str:
        """A local wasm:/learned: spec for the fetched bytes (cached by hash)."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if policy_kind(data) == WASM:
            path = self.cache_dir / f"{sha256}.wasm"
            if not path.is_file():
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.replace(path)
            return f"wasm:{path}"
        folder = self.cache_dir / sha256
        if not folder.is_dir():
            staging = Path(tempfile.mkdtemp(dir=self.cache_dir, prefix=".unzip-"))
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    total = 0
                    for member in LEARNED_FILES:  # only the artifact's own files: no path from the archive
                        info = archive.getinfo(member)
                        total += info.file_size
                        if total > MAX_UNZIPPED:
                            raise PolicySpecError(f"learned artifact larger than {MAX_UNZIPPED} bytes unzipped")
                        (staging / member).write_bytes(archive.read(info))
                staging.replace(folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return f"learned:{folder}"
