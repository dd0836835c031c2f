"""Run the code registry: ``python -m wlruntime.registry [--host H] [--port P] [--data-dir D]
[--token T] [--compiled-cache-dir DIR] [--config FILE]``. Flags override the config file and
``WL_*`` env vars."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import typer

Opt = typer.Option


def serve(
    host: Annotated[str | None, Opt(help="listen address (default 127.0.0.1: reads are open, keep it local)")] = None,
    port: Annotated[int | None, Opt(help="listen port (default 7700)")] = None,
    data_dir: Annotated[Path | None, Opt(help="registry directory: blobs, SQLite, token (default ~/.wl/registry)")]
    = None,
    token: Annotated[str | None, Opt(help="write token (default: WL_REGISTRY_TOKEN, else generated into the "
                                          "data dir)")] = None,
    max_wasm_bytes: Annotated[int | None, Opt(help="largest accepted .wasm (default 64 MiB)")] = None,
    read_token_required: Annotated[bool | None, Opt("--read-token-required", help="require the token for reads "
                                                                                   "too")] = None,
    compiled_cache_dir: Annotated[Path | None, Opt(help="keep artifacts compiled at upload here: the nodes' "
                                                        "compiled cache on this host (<node cache dir>/compiled), "
                                                        "so new code compiles once")] = None,
    config: Annotated[str | None, Opt(help="TOML/YAML config file (default: $WL_CONFIG, ./wl.toml, "
                                           "~/.wl/config.toml)")] = None,
    log_level: Annotated[str, Opt(help="debug, info, warning or error")] = "info",
) -> None:
    """wl code registry (HTTP). Flags override the config file and WL_* variables."""
    _run(SimpleNamespace(host=host, port=port, data_dir=data_dir, token=token, max_wasm_bytes=max_wasm_bytes,
                         read_token_required=read_token_required, compiled_cache_dir=compiled_cache_dir,
                         config=config, log_level=log_level))


def main(argv: list[str] | None = None) -> None:
    app = typer.Typer(add_completion=False)
    app.command()(serve)
    typer.main.get_command(app)(args=argv, prog_name="python -m wlruntime.registry")


def _run(args: SimpleNamespace) -> None:
    import uvicorn

    from wlruntime.config import ConfigError, load_settings
    from wlruntime.registry.server import create_app

    try:
        settings = load_settings(args.config, overrides={"registry": {
            "host": args.host, "port": args.port, "data_dir": args.data_dir, "token": args.token,
            "max_wasm_bytes": args.max_wasm_bytes, "read_token_required": args.read_token_required,
            "compiled_cache_dir": args.compiled_cache_dir}})
        app = create_app(settings)
    except (ConfigError, OSError, RuntimeError) as exc:
        print(f"wl registry: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    reg = settings.registry
    print(f"wl registry: data in {settings.registry_dir()}", flush=True)
    if app.state.token_file is not None:
        print(f"wl registry: write token in {app.state.token_file}", flush=True)
    if reg.host not in ("127.0.0.1", "localhost", "::1") and not reg.read_token_required:
        print("wl registry: warning: reads need no token and the registry listens beyond loopback; "
              "use --read-token-required or a network boundary", flush=True)
    uvicorn.run(app, host=reg.host, port=reg.port, http="httptools", log_level=args.log_level)


if __name__ == "__main__":
    main()
