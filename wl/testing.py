"""pytest fixtures that run your functions on a real local wl platform: the same registry,
router and wasmtime handler nodes as ``wl up``, on loopback, so a function is tested exactly
as it runs.

Enable the plugin in your ``conftest.py``::

    pytest_plugins = ["wl.testing"]

and use the ``wl_platform`` fixture (one platform per test session)::

    def test_echo(wl_platform):
        wl_platform.deploy("echo", "build/echo.wasm", memory_mb=16)
        r = wl_platform.invoke("echo", b"hello")
        assert r.ok and r.output == b"hello"
        assert r.cold                                  # the first call started an instance
        assert not wl_platform.invoke("echo", b"again").cold

``wl_platform`` is a :class:`wlruntime.router.client.RouterClient` (deploy, invoke, delete,
logs, set_policy, metrics, state, trace, lambda_client: boto3 with the admin token, so the
Lambda control plane works too) with ``.platform`` (the
:class:`wlruntime.platform.Platform`: URLs, ``kill_node``, logs in ``platform.log_dir``).

Options: ``--wl-nodes N`` (default 1), ``--wl-policy SPEC`` (default ``default``),
``--wl-node-memory-mb M`` (default 2048). Compiled code is cached across sessions in pytest's
cache folder (``.pytest_cache``), so only the first run compiles large functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from wlruntime.platform import Platform
from wlruntime.router.client import Invocation, RouterClient, RouterClientError, metric_value

__all__ = ["Invocation", "PlatformClient", "RouterClientError", "metric_value", "start_platform"]


class PlatformClient(RouterClient):
    """A RouterClient bound to a running local platform."""

    def __init__(self, platform: Platform, timeout: float = 120.0) -> None:
        super().__init__(platform.router_url, platform.token, timeout=timeout)
        self.platform = platform

    def lambda_client(self, region: str = "us-east-1") -> Any:
        """A boto3 ``lambda`` client for the Invoke API and the control plane (CreateFunction,
        UpdateFunctionCode, ...): the admin token is its access key id."""
        import boto3
        from botocore.config import Config

        return boto3.client("lambda", endpoint_url=self.base_url, region_name=region,
                            aws_access_key_id=self.token, aws_secret_access_key="wl",
                            config=Config(retries={"max_attempts": 1, "mode": "standard"},
                                          read_timeout=120, connect_timeout=5))


def start_platform(data_dir: Any, *, nodes: int = 1, policy: str = "default", node_memory_mb: int = 2048,
                   cache_dir: Any = None, **kwargs: Any) -> Platform:
    """Start a platform (registry + router + nodes) in ``data_dir``; stop it with ``.stop()``."""
    return Platform(data_dir, nodes=nodes, policy=policy, node_memory_mb=node_memory_mb, cache_dir=cache_dir,
                    **kwargs).start(timeout_s=120.0)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wl", "wl local platform")
    group.addoption("--wl-nodes", type=int, default=1, help="handler nodes for the wl_platform fixture (default 1)")
    group.addoption("--wl-policy", default="default", help="router policy for the wl_platform fixture")
    group.addoption("--wl-node-memory-mb", type=int, default=2048, help="memory per node (default 2048)")


def _option(config: pytest.Config, name: str, default: Any) -> Any:
    try:
        return config.getoption(name)
    except ValueError:  # the plugin was imported without its options registered
        return default


@pytest.fixture(scope="session")
def wl_platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformClient]:
    """A running wl platform for the test session, as a client (see the module docstring)."""
    config = request.config
    cache = getattr(config, "cache", None)     # absent under -p no:cacheprovider
    cache_dir = cache.mkdir("wl-node-cache") if cache is not None else None
    platform = start_platform(tmp_path_factory.mktemp("wl-platform"),
                              nodes=_option(config, "--wl-nodes", 1),
                              policy=_option(config, "--wl-policy", "default"),
                              node_memory_mb=_option(config, "--wl-node-memory-mb", 2048),
                              cache_dir=cache_dir)
    client = PlatformClient(platform)
    try:
        yield client
    finally:
        client.close()
        platform.stop()
