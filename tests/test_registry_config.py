"""wlruntime.config: embedded defaults, then a TOML/YAML file, then WL_* env vars, then flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from wlruntime.config import ConfigError, Settings, env_overrides, load_settings

pytestmark = pytest.mark.unit

NO_ENV: dict[str, str] = {}


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """No ./wl.toml or ~/.wl/config.toml from the machine leaks into these tests."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_defaults_need_no_file_and_no_env(tmp_path):
    settings = load_settings(env=NO_ENV)
    assert settings == Settings(data_dir=tmp_path / ".wl")
    assert settings.registry_dir() == tmp_path / ".wl" / "registry"
    assert settings.node_cache_dir() == tmp_path / ".wl" / "node-cache"
    assert settings.registry.base_url() == "http://127.0.0.1:7700"
    assert settings.registry.token is None and settings.registry.read_token_required is False
    assert settings.registry.max_wasm_bytes == 64 * 1024 * 1024


def test_toml_file_then_env_then_overrides(tmp_path):
    config = tmp_path / "wl.toml"
    config.write_text('data_dir = "state"\n[registry]\nport = 9000\ntoken = "from-file"\n'
                      'host = "0.0.0.0"\n[node]\ncache_dir = "/var/cache/wl"\n')
    settings = load_settings(config, env=NO_ENV)
    assert settings.data_dir == tmp_path / "state"  # relative to the file's folder
    assert settings.registry.port == 9000 and settings.registry.token == "from-file"
    assert settings.registry.base_url() == "http://127.0.0.1:9000"  # 0.0.0.0 is not dialable
    assert settings.node_cache_dir() == Path("/var/cache/wl")

    env = {"WL_REGISTRY_TOKEN": "from-env", "WL_REGISTRY_READ_TOKEN_REQUIRED": "true",
           "WL_DATA_DIR": str(tmp_path / "env-data"), "WL_ROUTER_PORT": "9100", "UNRELATED": "x"}
    settings = load_settings(config, env=env)
    assert settings.registry.token == "from-env" and settings.registry.read_token_required is True
    assert settings.registry.port == 9000  # untouched by env
    assert settings.router.port == 9100
    assert settings.registry_dir() == tmp_path / "env-data" / "registry"

    settings = load_settings(config, env=env, overrides={"registry": {"token": "from-flag", "port": None}})
    assert settings.registry.token == "from-flag" and settings.registry.port == 9000


def test_yaml_file_and_wl_config_env(tmp_path):
    config = tmp_path / "wl.yaml"
    config.write_text("registry:\n  max_wasm_bytes: 1000\n  data_dir: ~/elsewhere\nrouter:\n  url: http://r:1/\n")
    settings = load_settings(env={"WL_CONFIG": str(config)})
    assert settings.registry.max_wasm_bytes == 1000
    assert settings.registry_dir() == Path("~/elsewhere").expanduser()
    assert settings.router.base_url() == "http://r:1"


@pytest.mark.parametrize("text, message", [
    ("[registry]\nprot = 1\n", "registry.prot: Extra inputs are not permitted"),
    ("[registry]\nport = \"high\"\n", "registry.port"),
    ("[registry]\nport = 70000\n", "registry.port"),
    ("[routr]\nport = 1\n", "routr"),
    ("registry = [", "not valid TOML"),
])
def test_bad_config_file_names_file_and_key(tmp_path, text, message):
    config = tmp_path / "wl.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(config, env=NO_ENV)
    assert str(config) in str(err.value) and message in str(err.value)


def test_missing_or_unknown_files_and_bad_env_values(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(env={"WL_CONFIG": str(tmp_path / "missing.toml")})
    assert "missing.toml" in str(err.value) and "cannot read" in str(err.value)
    (tmp_path / "x.ini").write_text("[registry]\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path / "x.ini", env=NO_ENV)
    assert "unknown format" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_settings(env={"WL_REGISTRY_PORT": "eighty"})
    assert "WL_REGISTRY_PORT" in str(err.value)


def test_env_overrides_cover_every_section_field():
    assert env_overrides({"WL_NODE_CACHE_DIR": "/c", "WL_REGISTRY_URL": "http://x", "WL_DATA_DIR": "/d"}) == {
        "node": {"cache_dir": "/c"}, "registry": {"url": "http://x"}, "data_dir": "/d"}
