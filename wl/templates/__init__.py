"""``wl new NAME --lang c|assemblyscript|python|rust`` and ``wl build``.

Each language folder here is a function project with ``{{name}}`` placeholders (a file called
``__name__.<ext>`` becomes ``NAME.<ext>``). ``wl new`` copies one and writes ``wl.json``: the
function's deploy config and the build recipe (``setup`` commands run once, when the folder
``setup_creates`` names is missing; then the ``build`` commands), each an argv run in the
project folder. ``wl build`` runs that recipe; the result is ``build/NAME.wasm``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LANGS = ("c", "assemblyscript", "python", "rust")
PROJECT_FILE = "wl.json"


class TemplateError(Exception):
    """A user-facing problem: unknown language, existing folder, failed build."""


def _tool(name: str) -> str:
    """A tool next to this Python first (the venv's componentize-py), else the one on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def _rustc() -> str:
    # Debian's rustc ships the wasm32-wasi std; a rustup toolchain earlier on PATH may lack it.
    return "/usr/bin/rustc" if Path("/usr/lib/rustlib/wasm32-wasi").is_dir() else "rustc"


def recipe(name: str, lang: str) -> dict[str, Any]:
    out = f"build/{name}.wasm"
    if lang == "c":
        build = [["clang", "--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-Wall", "-Wextra",
                  "-Wl,--stack-first", "-s", "-o", out, f"{name}.c"]]
        return {"build": build}
    if lang == "rust":
        return {"build": [[_rustc(), "--edition", "2021", "--target", "wasm32-wasi", "-O", "-C", "strip=symbols",
                           "-o", out, "src/main.rs"]]}
    if lang == "python":
        return {"build": [[_tool("componentize-py"), "--quiet", "-d", "wit", "-w", "handler", "componentize",
                           "-p", ".", "app", "-o", out]]}
    return {"setup": [["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"]],
            "setup_creates": "node_modules",
            "build": [["node_modules/.bin/asc", "assembly/index.ts", "--config", "asconfig.json", "-o", out]]}


def create(name: str, lang: str, folder: Path) -> Path:
    """Copy the ``lang`` template into ``folder`` (which must not exist or be empty)."""
    if lang not in LANGS:
        raise TemplateError(f"unknown language {lang!r}: use one of {', '.join(LANGS)}")
    if folder.exists() and any(folder.iterdir()):
        raise TemplateError(f"{folder} already exists and is not empty")
    source = HERE / lang
    for path in sorted(source.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(source)
        target = folder / str(relative).replace("__name__", name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text().replace("{{name}}", name))
    config = {"memory_mb": 128, "timeout_ms": 3000}
    if lang == "python":
        config = {"memory_mb": 256, "timeout_ms": 10000}  # a component embeds CPython
    project = {"name": name, "lang": lang, "output": f"build/{name}.wasm", "config": config, **recipe(name, lang)}
    (folder / PROJECT_FILE).write_text(json.dumps(project, indent=2) + "\n")
    (folder / "README.md").write_text(
        f"# {name}\n\nA wl function ({lang}).\n\n```sh\n"
        f"wl build                              # -> build/{name}.wasm\n"
        f"wl run build/{name}.wasm --data hi    # once, locally, no platform\n"
        f"wl deploy {name} build/{name}.wasm --config wl-config.json\n"
        f"wl invoke {name} --data hi\n```\n\nThe build recipe is in `wl.json`.\n")
    (folder / "wl-config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def build_project(folder: Path, log: Callable[[str], None] = print) -> Path:
    """Run the project's recipe; returns the built .wasm. Raises TemplateError with the tool's output."""
    try:
        project = json.loads((folder / PROJECT_FILE).read_text())
    except OSError:
        raise TemplateError(f"{folder}: no {PROJECT_FILE} here (make a project with `wl new NAME --lang ...`)") \
            from None
    except ValueError as error:
        raise TemplateError(f"{folder / PROJECT_FILE}: not valid JSON: {error}") from None
    (folder / "build").mkdir(exist_ok=True)
    steps: list[list[str]] = []
    creates = project.get("setup_creates")
    if project.get("setup") and not (creates and (folder / creates).exists()):
        steps += project["setup"]
    steps += project.get("build", [])
    for argv in steps:
        log("$ " + " ".join(argv))
        try:
            done = subprocess.run(argv, cwd=folder, capture_output=True, text=True)
        except FileNotFoundError:
            raise TemplateError(f"{argv[0]} not found: install the {project.get('lang')} toolchain "
                                "(see examples/README.md), or edit the recipe in wl.json") from None
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0:
            raise TemplateError(f"{' '.join(argv)} failed (exit {done.returncode}):\n{output}")
        if output:
            log(output)
    out = folder / project.get("output", f"build/{project.get('name')}.wasm")
    if not out.is_file():
        raise TemplateError(f"the build finished but {out} is missing")
    return out
