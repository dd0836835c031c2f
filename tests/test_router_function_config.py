"""The router builds its function records from the registry's FunctionConfig (one config model)."""

import asyncio

import pytest

from wlruntime.registry.models import DEFAULT_MAX_INSTANCES, FunctionConfig
from wlruntime.router.catalog import FunctionCatalog
from wlruntime.router.state import ConfigError, Function, Unavailable

pytestmark = pytest.mark.unit


def test_defaults_and_the_old_key_come_from_function_config() -> None:
    defaults = FunctionConfig()
    fn = Function("f", 1, {})
    assert (fn.memory_mb, fn.timeout_ms, fn.max_payload_bytes, fn.max_instances) == (
        defaults.memory_mb, defaults.timeout_ms, defaults.max_payload_bytes, DEFAULT_MAX_INSTANCES)
    assert fn.abi == "wasi-command" and fn.settings == FunctionConfig.from_stored({})
    assert Function("f", 1, {"concurrency": 7}).max_instances == 7          # the old name, an alias
    assert Function("f", 1, {"max_instances": 7, "future_key": 1}).max_instances == 7  # newer keys ignored


def test_a_bad_stored_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match="max_instances"):
        Function("f", 1, {"max_instances": DEFAULT_MAX_INSTANCES + 1})
    fn = Function("f", 1, {"memory_mb": 32})
    with pytest.raises(ConfigError, match="memory_mb"):
        fn.update(2, {"memory_mb": "lots"})
    assert (fn.version, fn.memory_mb) == (1, 32.0)   # a refused update changes nothing


def test_catalog_refuses_a_bad_config_and_keeps_the_running_version() -> None:
    updated: list[Function] = []
    catalog = FunctionCatalog("http://registry.invalid", None, on_update=updated.append, on_forget=lambda fn: None)
    with pytest.raises(Unavailable, match=r"function g version 1 has an invalid config.*timeout_ms"):
        catalog.upsert("g", 1, {"timeout_ms": 0})
    assert "g" not in catalog.functions
    fn = catalog.upsert("f", 1, {"memory_mb": 64})
    with pytest.raises(Unavailable, match="memory_mb"):
        catalog.upsert("f", 2, {"memory_mb": -1})
    assert catalog.functions["f"] is fn and (fn.version, fn.memory_mb) == (1, 64.0) and not updated

    async def listing(path: str) -> list[dict]:   # the refresh skips the bad one, keeps going
        return [{"name": "f", "latest_version": 2, "config": {"memory_mb": -1}}]
    catalog.registry_get = listing
    asyncio.run(catalog.refresh())
    assert catalog.functions["f"].version == 1
