"""HTTP client for the wl code registry (used by handler nodes, the router and the CLI).

Only httpx is imported, so the client is cheap to import. Every failure — an HTTP error
answer or an unreachable registry — raises :class:`RegistryError` carrying the server's
message and status.

Code caching: give ``cache_dir`` (to the constructor or per call) and fetched code is kept
as ``<cache_dir>/blobs/<sha256>.wasm``. A fetch by hash is then served from disk with no
request at all (blobs are immutable); a fetch by name/version sends ``If-None-Match`` with
the hash last seen for that reference and reads the blob from disk on ``304``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

import httpx

from wlcommon.files import atomic_write
from wlruntime.names import NAME_PATTERN, SHA256_RE

if TYPE_CHECKING:
    from wlruntime.config import Settings

_REF_RE = re.compile(rf"^{NAME_PATTERN}@(latest|[0-9]+)$")


class RegistryError(Exception):
    """A registry request failed. ``status`` is the HTTP status, or None when the registry
    could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message if status is None else f"{message} (HTTP {status})")
        self.message = message
        self.status = status


@dataclass(frozen=True)
class FetchedCode:
    """Code bytes plus what identifies them; ``path`` is the cached file when caching is on."""

    data: bytes
    sha256: str
    name: str | None = None
    version: int | None = None
    from_cache: bool = False
    path: Path | None = None


class RegistryClient:
    """Talks to a registry at ``base_url`` (e.g. ``http://127.0.0.1:7700``).

    ``token`` is sent as ``Authorization: Bearer`` on every request (writes need it; reads
    need it only when the registry runs with ``read_token_required``).
    """

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> RegistryClient:
        """A client for the registry ``settings`` describe, with its token: the configured
        one, else the one the registry generated into its data dir (when this machine can
        read it), else none (reads only)."""
        return cls(settings.registry.base_url(), settings.registry_token(), **kwargs)

    # -- plumbing ------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RegistryError(f"cannot reach the registry at {self.base_url}: {exc}") from exc
        if response.status_code not in ok:
            raise RegistryError(_error_message(response), response.status_code)
        return response

    # -- API -----------------------------------------------------------------------------

    def health(self) -> dict:
        return self._request("GET", "/healthz").json()

    def identity(self) -> str | None:
        """The registry's id (``X-WL-Registry-Id``): random, made with its database, so a
        registry made anew at the same address has another one; None from older registries."""
        return self._request("GET", "/healthz").headers.get("x-wl-registry-id")

    def upload(self, name: str, wasm_bytes: bytes, config: dict | None = None) -> dict:
        """Upload a new version of ``name``; returns its metadata (name, version, sha256, size,
        config, created_at). Identical bytes and config to the latest version return that
        version instead of creating a new one."""
        files = {"wasm": ("code.wasm", bytes(wasm_bytes), "application/wasm")}
        data = {"config": json.dumps(config)} if config is not None else {}
        return self._request("POST", f"/functions/{_q(name)}", ok=(200, 201), files=files, data=data).json()

    def get(self, name: str, version: int | str = "latest") -> dict:
        """Metadata of one version (``"latest"`` or an int)."""
        return self._request("GET", f"/functions/{_q(name)}/versions/{_q(str(version))}").json()

    def versions(self, name: str) -> list[dict]:
        """Metadata of every version of ``name``, oldest first."""
        return self._request("GET", f"/functions/{_q(name)}").json()["versions"]

    def list(self) -> list[dict]:
        """Every function with its latest version: name, latest_version, sha256, config, created_at."""
        return self._request("GET", "/functions").json()

    def delete(self, name: str) -> dict:
        return self._request("DELETE", f"/functions/{_q(name)}").json()

    def fetch_code(self, name_or_sha: str, version: int | str = "latest", *,
                   cache_dir: str | os.PathLike[str] | None = None) -> bytes:
        """The wasm bytes of a function version, or of a blob when given a sha256."""
        return self.fetch(name_or_sha, version, cache_dir=cache_dir).data

    def fetch(self, name_or_sha: str, version: int | str = "latest", *,
              cache_dir: str | os.PathLike[str] | None = None) -> FetchedCode:
        """Like :meth:`fetch_code` but also says which hash/version was served and whether it
        came from the local cache. A 64-hex-digit argument is a hash (function names are at
        most 63 characters, so the two never clash)."""
        cache = Path(cache_dir) if cache_dir is not None else self.cache_dir
        if SHA256_RE.match(name_or_sha):
            return self._fetch_blob(name_or_sha, cache)
        return self._fetch_version(name_or_sha, version, cache)

    # -- uploaded policies (registry/policies.py) ------------------------------------------

    def upload_policy(self, name: str, data: bytes) -> dict:
        """Store a new version of routing code ``name`` (a wasm policy module, or a ZIP of a
        learned artifact folder); returns its metadata (config.kind: wasm or learned)."""
        files = {"code": ("policy", bytes(data), "application/octet-stream")}
        return self._request("POST", f"/policies/{_q(name)}", ok=(200, 201), files=files).json()

    def policies(self) -> list[dict]:
        """Every uploaded policy's latest version."""
        return self._request("GET", "/policies").json()

    def fetch_policy(self, name: str, version: int | str = "latest") -> FetchedCode:
        """An uploaded policy's bytes (checked against their sha256), name and version."""
        response = self._request("GET", f"/policies/{_q(name)}/versions/{_q(str(version))}/code")
        sha = response.headers.get("etag", "").strip('"')
        return FetchedCode(_checked(response.content, sha), sha, name,
                           _int_or_none(response.headers.get("x-wl-version")))

    # -- code fetching -------------------------------------------------------------------

    def _fetch_blob(self, sha: str, cache: Path | None) -> FetchedCode:
        if cache is not None:
            cached = _blob_path(cache, sha)
            if cached.is_file():
                return FetchedCode(cached.read_bytes(), sha, from_cache=True, path=cached)
        response = self._request("GET", f"/blobs/{sha}")
        data = _checked(response.content, sha)
        path = _store_blob(cache, sha, data) if cache is not None else None
        return FetchedCode(data, sha, path=path)

    def _fetch_version(self, name: str, version: int | str, cache: Path | None) -> FetchedCode:
        headers = {}
        ref = f"{name}@{version}"
        # Only well-formed refs become cache file names (a bad name must not escape the cache).
        ref_file = cache / "refs" / ref if cache is not None and _REF_RE.match(ref) else None
        known_sha = None
        if ref_file is not None and ref_file.is_file():
            known_sha = ref_file.read_text().strip()
            if SHA256_RE.match(known_sha) and _blob_path(cache, known_sha).is_file():
                headers["If-None-Match"] = f'"{known_sha}"'
        response = self._request("GET", f"/functions/{_q(name)}/versions/{_q(str(version))}/code", ok=(200, 304),
                                 headers=headers)
        served_version = _int_or_none(response.headers.get("x-wl-version"))
        if response.status_code == 304:
            path = _blob_path(cache, known_sha)
            return FetchedCode(path.read_bytes(), known_sha, name, served_version, from_cache=True, path=path)
        sha = response.headers.get("etag", "").strip('"')
        data = _checked(response.content, sha)
        path = None
        if cache is not None:
            path = _store_blob(cache, sha, data)
            if ref_file is not None:
                atomic_write(ref_file, sha, mode=0o600, fsync=True)
        return FetchedCode(data, sha, name, served_version, path=path)


def _q(segment: str) -> str:
    """Percent-encode a path segment so a bad name (even "..", which URL normalization would
    otherwise resolve) reaches the server's name check intact."""
    return quote(segment, safe="").replace(".", "%2E")


def _error_message(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, str) and detail:
        return detail
    return response.text.strip() or response.reason_phrase


def _checked(data: bytes, sha: str) -> bytes:
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha:
        raise RegistryError(f"code from the registry does not match its hash: expected {sha}, got {actual}")
    return data


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _blob_path(cache: Path, sha: str) -> Path:
    return cache / "blobs" / f"{sha}.wasm"


def _store_blob(cache: Path, sha: str, data: bytes) -> Path:
    path = _blob_path(cache, sha)
    if not path.is_file():
        # other threads or node processes sharing the cache never see a partial file
        atomic_write(path, data, mode=0o600, fsync=True)
    return path


