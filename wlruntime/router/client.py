"""HTTP client for the router (the CLI, the pytest fixture, the demo and the benchmarks use it).

Only httpx is imported, so it is cheap to load.

    from wlruntime.router.client import RouterClient
    with RouterClient("http://127.0.0.1:7701", token) as wl:
        wl.deploy("echo", "examples/build/echo.wasm", memory_mb=16)
        r = wl.invoke("echo", b"hi")        # r.output == b"hi", r.cold, r.duration_ms
        wl.set_policy("fixed_ttl:ttl_ms=60000")
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx


class RouterClientError(Exception):
    """A router request failed: ``status`` is the HTTP status (None: unreachable)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message if status is None else f"{message} (HTTP {status})")
        self.message = message
        self.status = status
        self.body = body


@dataclass
class Invocation:
    """One answer from ``POST /invoke/{function}``."""

    status: int
    output: bytes
    headers: dict[str, str]
    elapsed_ms: float
    error: str | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def cold(self) -> bool:
        return self.headers.get("x-wl-cold") == "1"

    @property
    def duration_ms(self) -> float | None:
        value = self.headers.get("x-wl-duration-ms")
        return float(value) if value is not None else None

    @property
    def wait_ms(self) -> float | None:
        value = self.headers.get("x-wl-wait-ms")
        return float(value) if value is not None else None

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.output)


class RouterClient:
    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- invoking ----------------------------------------------------------------------------
    def invoke(self, function: str, data: bytes | str | dict | list | None = None,
               headers: dict[str, str] | None = None) -> Invocation:
        """Invoke ``function``; never raises for an HTTP error answer (see ``Invocation.status``)."""
        if isinstance(data, (dict, list)):
            body = json.dumps(data).encode()
        elif isinstance(data, str):
            body = data.encode()
        else:
            body = data or b""
        t = time.perf_counter()
        try:
            response = self._http.post(f"/invoke/{function}", content=body, headers=headers)
        except httpx.HTTPError as error:
            raise RouterClientError(f"the router at {self.base_url} is unreachable: {error}") from None
        elapsed = (time.perf_counter() - t) * 1000.0
        inv = Invocation(response.status_code, response.content, dict(response.headers), elapsed)
        if response.status_code != 200:
            try:
                details = response.json()
            except ValueError:
                details = {"message": response.text}
            inv.details = details if isinstance(details, dict) else {"message": str(details)}
            inv.error = inv.details.get("error") or f"http_{response.status_code}"
            inv.message = inv.details.get("message", "")
        return inv

    # ---- admin -------------------------------------------------------------------------------
    def _admin(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as error:
            raise RouterClientError(f"the router at {self.base_url} is unreachable: {error}") from None
        if response.status_code not in ok:
            try:
                body = response.json()
                message = body.get("detail", body) if isinstance(body, dict) else body
            except ValueError:
                body, message = response.text, response.text
            raise RouterClientError(str(message), response.status_code, body)
        return response

    def deploy(self, name: str, wasm: bytes | str | os.PathLike[str], config: dict[str, Any] | None = None,
               **config_fields: Any) -> dict[str, Any]:
        """Upload a function (bytes or a .wasm path) with its config; returns the registry's metadata."""
        data = wasm if isinstance(wasm, (bytes, bytearray)) else Path(wasm).read_bytes()
        merged = {**(config or {}), **{k: v for k, v in config_fields.items() if v is not None}}
        form = {"config": json.dumps(merged)} if merged else None
        response = self._admin("POST", f"/admin/functions/{name}", ok=(200, 201),
                               files={"wasm": ("code.wasm", bytes(data), "application/wasm")}, data=form,
                               timeout=300.0)
        return response.json()

    def delete(self, name: str) -> dict[str, Any]:
        return self._admin("DELETE", f"/admin/functions/{name}").json()

    def functions(self) -> list[dict[str, Any]]:
        return self._admin("GET", "/admin/functions").json()

    def logs(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        return self._admin("GET", f"/admin/logs/{name}", params={"limit": limit}).json()

    def policy(self) -> dict[str, Any]:
        return self._admin("GET", "/admin/policy").json()

    def set_policy(self, spec: str, fresh_statistics: bool = False) -> dict[str, Any]:
        """``fresh_statistics``: also start every function's statistics afresh (after a warm-up)."""
        body: dict[str, Any] = {"spec": spec, **({"fresh_statistics": True} if fresh_statistics else {})}
        return self._admin("PUT", "/admin/policy", json=body).json()

    def state(self) -> dict[str, Any]:
        return self._admin("GET", "/admin/state").json()

    def trace(self, fmt: str = "csv") -> bytes:
        return self._admin("GET", "/admin/trace", params={"format": fmt}).content

    def instance_log(self, fmt: str = "csv") -> bytes:
        """Every instance that died (id, function, created/ready/died on the trace's clock, evicted)."""
        return self._admin("GET", "/admin/trace", params={"format": fmt, "kind": "instances"}).content

    def metrics(self) -> str:
        try:
            return self._http.get("/metrics").text
        except httpx.HTTPError as error:
            raise RouterClientError(f"the router at {self.base_url} is unreachable: {error}") from None

    def health(self) -> dict[str, Any]:
        try:
            return self._http.get("/healthz", timeout=2.0).json()
        except (httpx.HTTPError, ValueError) as error:
            raise RouterClientError(f"the router at {self.base_url} is unreachable: {error}") from None

    def lambda_client(self, region: str = "us-east-1") -> Any:
        """A boto3 ``lambda`` client pointed at this router (dummy credentials)."""
        import boto3
        from botocore.config import Config

        return boto3.client("lambda", endpoint_url=self.base_url, region_name=region,
                            aws_access_key_id="wl", aws_secret_access_key="wl",
                            config=Config(retries={"max_attempts": 1, "mode": "standard"},
                                          read_timeout=120, connect_timeout=5))


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (Prometheus text format)."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        found = dict(part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part)
        if all(found.get(k, "").strip('"') == v for k, v in labels.items()):
            total += float(value)
    return total
