"""Run the code registry: ``python -m wlruntime.registry [--host H] [--port P] [--data-dir D]
[--token T] [--compiled-cache-dir DIR] [--config FILE]``. Flags override the config file and
``WL_*`` env vars."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wlruntime.registry", description="wl code registry")
    parser.add_argument("--host", help="listen address (default 127.0.0.1: reads are open, keep it local)")
    parser.add_argument("--port", type=int, help="listen port (default 7700)")
    parser.add_argument("--data-dir", help="registry directory: blobs, SQLite, token (default ~/.wl/registry)")
    parser.add_argument("--token", help="write token (default: WL_REGISTRY_TOKEN, else generated into the data dir)")
    parser.add_argument("--max-wasm-bytes", type=int, help="largest accepted .wasm (default 64 MiB)")
    parser.add_argument("--read-token-required", action="store_true", default=None,
                        help="require the token for reads too")
    parser.add_argument("--compiled-cache-dir", help="keep artifacts compiled at upload here: the nodes' compiled "
                        "cache on this host (<node cache dir>/compiled), so new code compiles once")
    parser.add_argument("--config", help="TOML/YAML config file (default: $WL_CONFIG, ./wl.toml, ~/.wl/config.toml)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

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
