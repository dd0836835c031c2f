"""The router's function catalog: what is deployed, from the code registry.

A function is loaded from the registry on first use (concurrent first uses share one
lookup), unknown names are not asked again for ``NEGATIVE_CACHE_S``, and the whole list is
refreshed every ``REFRESH_INTERVAL_S`` (a new version replaces idle instances of the old
one; a deleted function is forgotten). Deploy and delete go through here with the router's
registry token. A published version other than the latest (a Lambda qualifier) is loaded on
first use into a record of its own (``pinned``: its own instances, statistics and policy
state; versions are immutable, so it is never refreshed) and forgotten with its function.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from wlruntime.router.state import ConfigError, Function, FunctionNotFound, Unavailable

log = logging.getLogger("wlruntime.router")

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
NEGATIVE_CACHE_S = 1.0       # unknown function names are not asked again for this long
REFRESH_INTERVAL_S = 2.0


class FunctionCatalog:
    """``functions`` by name, kept in step with the registry (see the module docstring).
    ``on_update(fn)`` is called after a new version or config; ``on_forget(fn)`` after a
    delete (the router drops the instances that no longer fit)."""

    def __init__(self, registry_url: str, registry_token: str | None,
                 on_update: Callable[[Function], None], on_forget: Callable[[Function], None]) -> None:
        self.registry_url = registry_url.rstrip("/")
        self.registry_token = registry_token
        self.functions: dict[str, Function] = {}
        self.pinned: dict[tuple[str, int], Function] = {}   # (name, version) of older versions run
        self._on_update = on_update
        self._on_forget = on_forget
        self._loading: dict[str, asyncio.Future] = {}
        self._unknown: dict[str, float] = {}
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        headers = {"Authorization": f"Bearer {self.registry_token}"} if self.registry_token else {}
        self._http = httpx.AsyncClient(base_url=self.registry_url, headers=headers, timeout=30.0)
        try:
            await self.refresh()
        except Exception as error:  # noqa: BLE001 (the registry may come up later: functions load on first use)
            log.warning("could not list functions in the registry at %s: %s", self.registry_url, error)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def get(self, name: str) -> Function:
        fn = self.functions.get(name)
        if fn is not None:
            return fn
        return await self._load(name)

    async def get_version(self, name: str, version: int) -> Function:
        """``name`` at its published ``version``: the latest's record when it is the latest."""
        fn = await self.get(name)
        if version == fn.version:
            return fn
        pinned = self.pinned.get((name, version))
        if pinned is not None:
            return pinned
        meta = await self.registry_get(f"/functions/{name}/versions/{version}")
        if meta is None:
            raise FunctionNotFound(f"Function not found: {name}:{version}")
        # setdefault: a concurrent first use may have loaded it meanwhile
        return self.pinned.setdefault((name, version), _function(name, version, meta.get("config") or {}))

    async def _load(self, name: str) -> Function:
        if not NAME_RE.match(name):
            raise FunctionNotFound(f"Function not found: {name[:80]!r} is not a valid function name")
        until = self._unknown.get(name)
        if until is not None and until > time.monotonic():
            raise FunctionNotFound(f"Function not found: {name}")
        waiting = self._loading.get(name)
        if waiting is not None:
            return await asyncio.shield(waiting)
        future = asyncio.get_running_loop().create_future()
        self._loading[name] = future
        try:
            meta = await self.registry_get(f"/functions/{name}/versions/latest")
            if meta is None:
                self._unknown[name] = time.monotonic() + NEGATIVE_CACHE_S
                raise FunctionNotFound(f"Function not found: {name}")
            fn = self.upsert(name, int(meta["version"]), meta.get("config") or {})
            future.set_result(fn)
            return fn
        except BaseException as error:
            future.set_exception(error if isinstance(error, Exception) else RuntimeError("cancelled"))
            future.exception()  # retrieved: waiters re-raise it, nobody else needs it
            raise
        finally:
            del self._loading[name]

    async def registry_get(self, path: str) -> Any:
        assert self._http is not None
        try:
            response = await self._http.get(path)
        except httpx.HTTPError as error:
            raise Unavailable(f"the code registry at {self.registry_url} is unreachable: {error}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise Unavailable(f"the code registry answered {response.status_code}: {response.text[:200]}")
        return response.json()

    def upsert(self, name: str, version: int, config: dict[str, Any]) -> Function:
        self._unknown.pop(name, None)
        fn = self.functions.get(name)
        if fn is None:
            fn = self.functions[name] = _function(name, version, config)
            log.info("function %s@%d loaded (%s, %s MB, timeout %s ms, max_instances %s)", name, version,
                     fn.abi, fn.memory_mb, fn.timeout_ms, fn.max_instances)
        elif fn.version != version or fn.config != config:
            log.info("function %s: version %d -> %d", name, fn.version, version)
            try:
                fn.update(version, config)
            except ConfigError as error:
                raise _bad_config(name, version, error) from None
            self._on_update(fn)
        return fn

    def forget(self, name: str) -> None:
        for key in [key for key in self.pinned if key[0] == name]:
            pinned = self.pinned.pop(key)
            pinned.deleted = True
            self._on_forget(pinned)
        fn = self.functions.pop(name, None)
        if fn is None:
            return
        fn.deleted = True
        self._on_forget(fn)

    async def refresh(self) -> None:
        listing = await self.registry_get("/functions")
        if listing is None:
            return
        latest = {m["name"]: m for m in listing}
        for name in list(self.functions):
            meta = latest.get(name)
            if meta is None:
                log.info("function %s was deleted from the registry", name)
                self.forget(name)
            else:
                try:
                    self.upsert(name, int(meta["latest_version"]), meta.get("config") or {})
                except Unavailable as error:   # a bad stored config: keep running the version we have
                    log.warning("%s", error)

    async def refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_INTERVAL_S)
            try:
                await self.refresh()
            except Exception as error:  # noqa: BLE001 (retried at the next refresh)
                log.debug("registry refresh failed: %s", error)

    async def deploy(self, name: str, wasm: bytes, config_json: str | None) -> tuple[int, Any]:
        """Upload to the registry (with the router's registry token); returns (status, body)."""
        assert self._http is not None
        files = {"wasm": ("code.wasm", wasm, "application/wasm")}
        data = {"config": config_json} if config_json else None
        try:
            response = await self._http.post(f"/functions/{name}", files=files, data=data, timeout=300.0)
        except httpx.HTTPError as error:
            raise Unavailable(f"the code registry at {self.registry_url} is unreachable: {error}") from None
        body = _json_or_text(response)
        if response.status_code in (200, 201):
            self.upsert(name, int(body["version"]), body.get("config") or {})
        return response.status_code, body

    async def delete(self, name: str) -> tuple[int, Any]:
        assert self._http is not None
        try:
            response = await self._http.delete(f"/functions/{name}")
        except httpx.HTTPError as error:
            raise Unavailable(f"the code registry at {self.registry_url} is unreachable: {error}") from None
        if response.status_code == 200:
            self.forget(name)
        return response.status_code, _json_or_text(response)

    async def list_registry(self) -> list[dict]:
        listing = await self.registry_get("/functions")
        return listing or []


def _function(name: str, version: int, config: dict[str, Any]) -> Function:
    try:
        return Function(name, version, config)
    except ConfigError as error:
        raise _bad_config(name, version, error) from None


def _bad_config(name: str, version: int, error: ConfigError) -> Unavailable:
    """The registry stored a config this router cannot run (it validates at upload, so an older
    or newer registry's): the function cannot be served, and the message says which key."""
    return Unavailable(f"function {name} version {version} has an invalid config in the registry: {error}")


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"detail": response.text[:500]}
