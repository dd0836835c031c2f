"""Runtime settings shared by the registry, the router and the handler nodes.

Sources, later ones win:

1. embedded defaults (this file) — enough for ``wl up`` on loopback with nothing configured;
2. a config file, TOML (``.toml``) or YAML (``.yml``/``.yaml``): the path given to
   :func:`load_settings`, else ``$WL_CONFIG``, else ``./wl.toml`` if it exists, else
   ``~/.wl/config.toml`` if it exists;
3. environment variables: ``WL_DATA_DIR`` for the top-level ``data_dir`` and
   ``WL_<SECTION>_<FIELD>`` for every section field, e.g. ``WL_REGISTRY_TOKEN``,
   ``WL_REGISTRY_PORT``, ``WL_ROUTER_URL``, ``WL_NODE_CACHE_DIR``;
4. explicit overrides (command-line flags), passed as a nested dict.

Data directory: ``~/.wl`` by default (per user, like ``~/.docker``), so ``wl up`` run from
any folder finds the same deployed functions. Each component keeps its state in a
sub-folder (``registry/``, ``node-cache/``) unless its own ``data_dir`` says otherwise.

Example ``wl.toml``::

    data_dir = "/var/lib/wl"

    [registry]
    port = 7700
    token = "change-me"          # or leave unset: one is generated into the data dir
    max_wasm_bytes = 67108864

Unknown keys and bad values are errors naming the key and where it came from.
Relative paths in a config file are relative to that file's folder.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_DATA_DIR = Path("~/.wl")


class ConfigError(ValueError):
    """Bad configuration; the message names the key and its source (file or env var)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RegistrySettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(7700, ge=0, le=65535)
    url: str | None = None
    """How clients reach the registry; defaults to http://host:port."""
    token: str | None = None
    """Bearer token for writes. Unset: generated once into ``<registry dir>/registry.token``."""
    read_token_required: bool = False
    """Require the token for reads too (when the registry is reachable beyond loopback)."""
    max_wasm_bytes: int = Field(64 * 1024 * 1024, ge=1)
    data_dir: Path | None = None
    """Where blobs, the SQLite database and the generated token live; default <data_dir>/registry."""
    compiled_cache_dir: Path | None = None
    """Keep the artifacts compiled while validating uploads here. Point it at the compiled cache
    of the nodes on the same host (``<node cache_dir>/compiled``) and a new function is compiled
    once, at upload, instead of again on its first cold start. Unset: not kept."""

    def base_url(self) -> str:
        if self.url:
            return self.url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"


class RouterSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(7701, ge=0, le=65535)
    url: str | None = None
    admin_token: str | None = None
    """Bearer token for /admin (deploy, policy swap, logs, trace). Unset: the registry's token."""
    scheduler_port: int = Field(7702, ge=0, le=65535)
    """gRPC port of the Scheduler service (Scheduler.OnIdle) the nodes call back."""
    policy: str = "default"
    """Policy spec (policies.registry grammar), e.g. ``fixed_ttl:ttl_ms=60000``."""
    nodes: list[str] = Field(default_factory=list)
    """Handler node gRPC addresses (host:port); env/flags take a comma-separated list."""
    trace_out: Path | None = None
    """Write the recorded traffic (canonical trace table, .parquet or .csv) here on shutdown."""

    @field_validator("nodes", mode="before")
    @classmethod
    def _split_nodes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def base_url(self) -> str:
        if self.url:
            return self.url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"


class NodeSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(7710, ge=0, le=65535)
    """gRPC port of the first node; ``wl up --nodes N`` uses port, port+1, ..."""
    cache_dir: Path | None = None
    """Fetched code and compiled artifacts; default <data_dir>/node-cache."""
    memory_mb: int = Field(2048, ge=1)
    """Memory each node offers to instances."""
    count: int = Field(1, ge=1, le=64)
    """How many nodes ``wl up`` starts."""


REGISTRY_TOKEN_FILE = "registry.token"


class Settings(_Section):
    data_dir: Path = DEFAULT_DATA_DIR
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    node: NodeSettings = Field(default_factory=NodeSettings)

    def registry_dir(self) -> Path:
        return _expand(self.registry.data_dir or self.data_dir / "registry")

    def registry_token_file(self) -> Path:
        """Where a registry with no configured token keeps the one it generates."""
        return self.registry_dir() / REGISTRY_TOKEN_FILE

    def registry_token(self) -> str | None:
        """The registry's write token: the configured one, else the one the registry generated
        (when this machine can read it), else None (reads only)."""
        from wlcommon.files import read_token_file

        return self.registry.token or read_token_file(self.registry_token_file())

    def node_cache_dir(self) -> Path:
        return _expand(self.node.cache_dir or self.data_dir / "node-cache")


_SECTIONS: dict[str, type[_Section]] = {"registry": RegistrySettings, "router": RouterSettings,
                                        "node": NodeSettings}
_PATH_KEYS = {(), ("registry",), ("node",), ("router",)}  # where relative paths in a file get anchored


def _expand(path: Path) -> Path:
    return Path(os.path.expanduser(path))


def find_config_file(env: Mapping[str, str] | None = None) -> Path | None:
    """The config file that :func:`load_settings` would read when given no path."""
    env = os.environ if env is None else env
    if env.get("WL_CONFIG"):
        return Path(env["WL_CONFIG"]).expanduser()
    for candidate in (Path("wl.toml"), _expand(DEFAULT_DATA_DIR) / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML or YAML config file into a plain dict (not yet validated)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it: {exc}") from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yml", ".yaml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path}: unknown format {suffix!r}; use .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"config file {path}: not valid {suffix[1:].upper()}: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError, without importing yaml up front
        raise ConfigError(f"config file {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a table/mapping")
    _anchor_relative_paths(data, path.parent)
    return data


def _anchor_relative_paths(data: dict[str, Any], base: Path) -> None:
    for section in _PATH_KEYS:
        table = data
        for key in section:
            table = table.get(key) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            continue
        for key in ("data_dir", "cache_dir", "trace_out", "compiled_cache_dir"):
            value = table.get(key)
            if isinstance(value, str) and not value.startswith("~") and not Path(value).is_absolute():
                table[key] = str(base / value)


def env_overrides(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The nested settings dict that ``WL_*`` environment variables describe."""
    env = os.environ if env is None else env
    out: dict[str, Any] = {}
    if env.get("WL_DATA_DIR"):
        out["data_dir"] = env["WL_DATA_DIR"]
    for section, model in _SECTIONS.items():
        for field in model.model_fields:
            value = env.get(f"WL_{section.upper()}_{field.upper()}")
            if value is not None:
                out.setdefault(section, {})[field] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(exc: ValidationError, source: str, env_names: bool = False) -> str:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ("WL_" + "_".join(loc).upper()) if env_names else ".".join(loc)
        problems.append(f"{key}: {err['msg']}")
    return f"{source}: " + "; ".join(problems)


def load_settings(config_file: str | os.PathLike[str] | None = None, *,
                  env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Defaults, then the config file, then ``WL_*`` env vars, then ``overrides``.

    ``overrides`` is nested like the file (``{"registry": {"port": 8000}}``); ``None``
    values in it are ignored, so command-line flags can be passed straight through.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    path = Path(config_file) if config_file is not None else find_config_file(env)
    if path is not None:
        data = read_config_file(path)
        try:
            Settings.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, f"config file {path}")) from exc

    from_env = env_overrides(env)
    if from_env:
        data = _merge(data, from_env)
        try:
            Settings.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, "environment", env_names=True)) from exc

    if overrides:
        data = _merge(data, _drop_none(overrides))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "settings")) from exc
    settings.data_dir = _expand(settings.data_dir)
    return settings


def _drop_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            value = _drop_none(value)
            if not value:
                continue
        if value is not None:
            out[key] = value
    return out
