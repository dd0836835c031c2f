"""Where the ``wl`` CLI finds the platform, and the environment variables it reads.

``wl up`` records the platform it started in a state file (``~/.wl/platform.json``, or
``$WL_STATE_FILE``): the router URL, the registry URL, the data dir and where the admin token
is. Every other command reads it, so after ``wl up --data-dir D --port P`` a plain
``wl deploy`` talks to that platform. What is given explicitly still wins, in this order:

    router URL:  --url, then WL_ROUTER_URL, then the state file, then the settings file
                 (router.url / router.port in wl.toml), then http://127.0.0.1:7701
    admin token: --token, then WL_ROUTER_ADMIN_TOKEN, then the token file the state file
                 names, then the settings file / WL_REGISTRY_TOKEN / <data dir>/registry/registry.token

The state file is removed when ``wl up`` stops, and ignored when the process that wrote it is
gone (a crashed ``wl up`` leaves no trap behind).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

# Every environment variable the CLI reads, for --help and the README.
ENV_VARS: dict[str, str] = {
    "WL_ROUTER_URL": "the router's base URL (default: the platform `wl up` started, else http://127.0.0.1:7701)",
    "WL_ROUTER_ADMIN_TOKEN": "the admin token for deploy/rm/ls/logs/policy (default: the one `wl up` generated)",
    "WL_DATA_DIR": "platform data (registry, node cache, logs; default ~/.wl)",
    "WL_STATE_FILE": "where `wl up` records the running platform (default ~/.wl/platform.json)",
    "WL_CONFIG": "settings file, TOML or YAML (default ./wl.toml, then ~/.wl/config.toml)",
    "WL_REGISTRY_TOKEN": "the registry's write token (default: generated into the data dir)",
}


class CliSettings(BaseSettings):
    """The CLI's own settings from the environment (flags override them)."""

    model_config = SettingsConfigDict(env_prefix="WL_", extra="ignore")

    router_url: str | None = None
    router_admin_token: str | None = None
    data_dir: Path | None = None
    state_file: Path = Path("~/.wl/platform.json")
    config: Path | None = None

    def state_path(self) -> Path:
        return self.state_file.expanduser()


class PlatformState(BaseModel):
    """What ``wl up`` records about the platform it runs."""

    router_url: str
    registry_url: str
    data_dir: str
    token_file: str | None = None  # None: the token came from the user's settings
    pid: int

    def token(self) -> str | None:
        from wlcommon.files import read_token_file

        return None if self.token_file is None else read_token_file(self.token_file)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(path: Path) -> PlatformState | None:
    """The running platform's record, or None (no file, unreadable, or its process is gone)."""
    try:
        state = PlatformState.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None
    return state if _alive(state.pid) else None


def write_state(path: Path, state: PlatformState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".platform-")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(state.model_dump(), indent=2) + "\n")
    os.replace(tmp, path)


def clear_state(path: Path, pid: int) -> None:
    """Remove the state file if it is this process's (another `wl up` may have replaced it)."""
    try:
        if PlatformState.model_validate_json(path.read_text()).pid == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def env_help() -> str:
    """The environment variables, as a --help epilog."""
    return "Environment variables:\n\n" + "\n\n".join(f"  {name}: {text}" for name, text in ENV_VARS.items())
