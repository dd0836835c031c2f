"""The runtime CLI as a new user drives it: `wl up` in its own process with a chosen data dir and
ports, then plain `wl` commands (no --url, no --token) that find it through the state file it
records; name errors, --json, uncut tables, logs, rm, uploaded routing code (a wasm policy
and a learned artifact) and the state file removed when `wl up` stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from typer.testing import CliRunner

from wl.cli import app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "examples" / "build"


def _ctrl_c_reaches_it() -> None:
    """`wl up` as started from a terminal, where Ctrl-C (SIGINT) stops it. A shell without job
    control (`nohup pytest &`, some CI runners) starts its background jobs with SIGINT ignored;
    the child would inherit that, Python would then never raise KeyboardInterrupt, and the
    SIGINT below would be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("cli")
    state_file = home / "platform.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WL_")}
    env |= {"WL_STATE_FILE": str(state_file), "HOME": str(home)}
    port = free_port()
    argv = [sys.executable, "-m", "wl.cli", "up", "--data-dir", str(home / "data"), "--port", str(port),
            "--registry-port", str(free_port()), "--scheduler-port", str(free_port()),
            "--node-port", str(free_port()), "--quiet"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=_ctrl_c_reaches_it)
    deadline = time.monotonic() + 120
    while not state_file.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "wl up did not record the platform"
        time.sleep(0.1)
    try:
        yield {"env": env, "state_file": state_file, "port": port, "proc": proc}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(60)


def wl(platform: dict, *args: str, code: int = 0, columns: int = 200) -> tuple[str, str]:
    env = dict(platform["env"]) | {"COLUMNS": str(columns)}
    result = CliRunner().invoke(app, list(args), env=env | {k: "" for k in os.environ if k.startswith("WL_")
                                                            and k not in env})
    assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
    return result.stdout, result.stderr


def test_commands_find_the_platform_wl_up_started(platform: dict) -> None:
    recorded = json.loads(platform["state_file"].read_text())
    assert recorded["router_url"] == f"http://127.0.0.1:{platform['port']}"
    out, _ = wl(platform, "deploy", "echo", str(BUILD / "echo.wasm"), "--memory", "16")
    assert "deployed echo version 1" in out
    out, _ = wl(platform, "invoke", "echo", "--data", "hello")
    assert out == "hello"
    out, _ = wl(platform, "invoke", "echo", "--data", "again", "--json")
    doc = json.loads(out)
    assert (doc["output"], doc["status"], doc["cold"]) == ("again", 200, False)
    assert doc["duration_ms"] > 0


def test_names_are_checked_with_the_rule(platform: dict) -> None:
    for bad in ("", "../etc", "a/b", "Upper"):
        _, err = wl(platform, "deploy", bad, str(BUILD / "echo.wasm"), code=2)
        assert "lowercase letters, digits" in err, (bad, err)
    _, err = wl(platform, "rm", "", code=2)
    assert "lowercase letters" in err
    _, err = wl(platform, "policy", "upload", "x/y", str(BUILD / "policies" / "keep_warm.wasm"), code=2)
    assert "invalid policy name" in err


def test_ls_json_and_a_narrow_table_keeps_numbers_whole(platform: dict) -> None:
    wl(platform, "deploy", "wide-function-name-for-tables", str(BUILD / "echo.wasm"), "--memory", "16",
       "--timeout", "123456")
    listing = json.loads(wl(platform, "ls", "--json")[0])
    names = {f["name"] for f in listing["functions"]}
    assert "wide-function-name-for-tables" in names
    # each component's health, from the status file of the platform `wl up` started
    components = {c["name"]: c for c in listing["components"]}
    assert {"registry", "router"} <= components.keys() and any(n.startswith("node") for n in components)
    assert all(c["alive"] and c["restarts"] == 0 and c["last_exit_code"] is None for c in components.values())
    for columns in (200, 80, 40):  # a table, a squeezed table, then one block per function
        table, _ = wl(platform, "ls", columns=columns)
        assert "…" not in table
        assert "123,456 ms" in table, (columns, table)
        assert "registry" in table and "restarts" in table, table


def test_logs_show_every_invocation_with_its_duration(platform: dict) -> None:
    wl(platform, "deploy", "logged", str(BUILD / "echo.wasm"), "--memory", "16")
    for i in range(3):
        wl(platform, "invoke", "logged", "--data", str(i))
    entries = json.loads(wl(platform, "logs", "logged", "--json")[0])
    assert len(entries) == 3 and all(e["error"] == "none" and e["duration_ms"] > 0 for e in entries)
    assert [e["cold"] for e in entries] == [True, False, False]
    out, _ = wl(platform, "logs", "logged")
    assert out.count(" ms") == 3 and "cold" in out


def test_logs_show_each_error_once(platform: dict) -> None:
    wl(platform, "deploy", "jt", str(BUILD / "json_transform.wasm"), "--memory", "16")
    _, err = wl(platform, "invoke", "jt", "--data", "[1]", code=1)
    assert err.count("expected a JSON object") == 1, err
    out, _ = wl(platform, "logs", "jt")
    assert out.count("expected a JSON object") == 1, out
    assert "function_error: exited with status 1" in out
    entries = json.loads(wl(platform, "logs", "jt", "--json")[0])
    assert entries and entries[-1]["error"] == "function_error"


def test_uploaded_routing_code_runs_in_the_router(platform: dict) -> None:
    out, _ = wl(platform, "policy", "upload", "keepwarm", str(BUILD / "policies" / "keep_warm.wasm"))
    assert "uploaded policy keepwarm version 1 (wasm" in out
    out, _ = wl(platform, "policy", "set", "uploaded:keepwarm")
    assert "uploaded:keepwarm@1" in out
    assert wl(platform, "invoke", "echo", "--data", "ok")[0] == "ok"
    shown = json.loads(wl(platform, "policy", "show")[0])
    assert shown["spec"] == "uploaded:keepwarm@1"

    out, _ = wl(platform, "policy", "upload", "az40", str(ROOT / "examples" / "learned" / "azure40"))
    assert "(learned" in out
    wl(platform, "policy", "set", "uploaded:az40@1")
    assert wl(platform, "invoke", "echo", "--data", "ok")[0] == "ok"
    listing = json.loads(wl(platform, "policy", "ls", "--json")[0])
    assert {p["name"]: p["config"]["kind"] for p in listing} == {"keepwarm": "wasm", "az40": "learned"}

    _, err = wl(platform, "policy", "set", "uploaded:nothing", code=1)
    assert "no uploaded policy nothing@latest" in err
    _, err = wl(platform, "policy", "upload", "pyp", str(ROOT / "examples" / "policies" / "keep_warm_5min.py"),
                code=2)
    assert "arbitrary code" in err


def test_rm_then_wl_up_stops_and_forgets_the_platform(platform: dict) -> None:
    out, _ = wl(platform, "rm", "wide-function-name-for-tables")
    assert "removed wide-function-name-for-tables" in out
    _, err = wl(platform, "invoke", "wide-function-name-for-tables", code=1)
    assert "not_found" in err
    proc = platform["proc"]
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(60)
    assert not platform["state_file"].exists()
    _, err = wl(platform, "ls", code=2)  # the platform's token went with it
    assert "no admin token" in err
    _, err = wl(platform, "invoke", "echo", code=1)
    assert "unreachable" in err and "wl up" in err


def test_ls_shows_component_health_even_when_the_router_is_down(tmp_path: Path) -> None:
    """The status file of a `wl up` whose router is held down after repeated crashes (found with
    WL_DATA_DIR): `wl ls` shows why before it reports the router unreachable."""
    components = [{"name": "registry", "alive": True, "held_down": False, "restarts": 0, "last_exit_code": None,
                   "up_s": 1234.5},
                  {"name": "router", "alive": False, "held_down": True, "restarts": 5, "last_exit_code": 3,
                   "up_s": 0.0}]
    (tmp_path / "status.json").write_text(json.dumps({"running": True, "components": components}))
    env = {k: "" for k in os.environ if k.startswith("WL_")} | {
        "WL_DATA_DIR": str(tmp_path), "WL_STATE_FILE": str(tmp_path / "none.json"),
        "WL_ROUTER_URL": f"http://127.0.0.1:{free_port()}", "WL_ROUTER_ADMIN_TOKEN": "t", "COLUMNS": "120"}
    result = CliRunner().invoke(app, ["ls"], env=env)
    assert result.exit_code == 1, result.output
    assert "held down" in result.stdout and "1,234.5 s" in result.stdout, result.stdout
    assert "unreachable" in result.stderr and "wl up" in result.stderr
