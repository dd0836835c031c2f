"""The local developer loop without a platform: `wl new` from each template, `wl build` with the
real toolchains, `wl run` executing the result once in-process with the nodes' wasm runner,
and `wl --version`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wl.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "examples" / "build"
AS_MODULES = ROOT / "examples" / "assemblyscript" / "node_modules"


def wl(*args: str, code: int = 0) -> tuple[str, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
    return result.stdout, result.stderr


@pytest.mark.parametrize("lang", ["c", "rust", "assemblyscript"])
def test_new_build_run(lang: str, tmp_path: Path) -> None:
    folder = tmp_path / "greet"
    out, _ = wl("new", "greet", "--lang", lang, "--dir", str(folder))
    assert "created" in out and (folder / "wl.json").is_file()
    if lang == "assemblyscript":
        # The machine has no network for `npm install`: reuse the examples' pinned compiler.
        (folder / "node_modules").symlink_to(AS_MODULES)
    out, _ = wl("build", str(folder))
    wasm = folder / "build" / "greet.wasm"
    assert wasm.is_file() and "built" in out
    out, err = wl("run", str(wasm), "--data", "Ada")
    assert out == "Hello, Ada! (from greet)\n"
    assert "greet: answered 3 bytes" in err
    doc = json.loads(wl("run", str(wasm), "--json", "--data", "Bob")[0])
    assert doc["ok"] and doc["output"].startswith("Hello, Bob!") and doc["duration_ms"] > 0


def test_python_template_has_the_platform_wit(tmp_path: Path) -> None:
    # Building it takes componentize-py about a minute of CPU: the examples' Python build covers the tool.
    wl("new", "pyfn", "--lang", "python", "--dir", str(tmp_path / "pyfn"))
    assert (tmp_path / "pyfn" / "wit" / "handler.wit").read_text() == (ROOT / "protos" / "handler.wit").read_text()
    recipe = json.loads((tmp_path / "pyfn" / "wl.json").read_text())
    assert "componentize" in recipe["build"][0] and recipe["output"] == "build/pyfn.wasm"
    assert "class WitWorld" in (tmp_path / "pyfn" / "app.py").read_text()


def test_bad_input_says_what_is_wrong(tmp_path: Path) -> None:
    _, err = wl("new", "x", "--lang", "cobol", "--dir", str(tmp_path / "x"), code=2)
    assert "use one of c, assemblyscript, python, rust" in err
    _, err = wl("new", "Bad/Name", code=2)
    assert "lowercase letters" in err
    _, err = wl("build", str(tmp_path), code=1)
    assert "no wl.json" in err
    text = tmp_path / "not.wasm"
    text.write_text("(module)")
    _, err = wl("run", str(text), code=2)
    assert "WebAssembly text" in err and "Traceback" not in err
    _, err = wl("run", str(BUILD / "json_transform.wasm"), "--data", "[1]", code=1)
    assert "function_error" in err and "expected a JSON object" in err


def test_version() -> None:
    out, _ = wl("--version")
    assert out.startswith("wl ")
