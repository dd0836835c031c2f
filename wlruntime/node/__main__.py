"""Run a handler node: ``python -m wlruntime.node [--registry URL] [--port P] [--memory-mb M]
[--node-id ID] [--scheduler HOST:PORT] [--cache-dir DIR] [--workers N] [--metrics-port P]``.

Defaults come from the shared runtime settings (wlruntime/config.py: embedded defaults, a
config file, ``WL_*`` env vars), flags override them. Prints
``wl node <id> listening on <host>:<port>`` once it serves (``--port 0`` picks a free port).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wlruntime.node", description="wl handler node (gRPC)")
    parser.add_argument("--registry", help="code registry base URL (default: the registry settings, "
                        "http://127.0.0.1:7700)")
    parser.add_argument("--registry-token", help="token for registries that require one for reads")
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="gRPC port (default 7710; 0 = any free port)")
    parser.add_argument("--memory-mb", type=int, default=2048, help="memory offered to instances (default 2048)")
    parser.add_argument("--node-id", default="", help="name of this node (default <hostname>-<port>)")
    parser.add_argument("--scheduler", help="Scheduler gRPC address asked when keep-alives expire "
                        "(default: none, expired instances are killed)")
    parser.add_argument("--cache-dir", help="fetched code and compiled artifacts (default <data_dir>/node-cache, "
                        "i.e. ~/.wl/node-cache; nodes on one host may share it)")
    parser.add_argument("--workers", type=int, default=max(4, 2 * (os.cpu_count() or 1)),
                        help="threads running wasm = max concurrent invocations (default max(4, 2 x cores))")
    parser.add_argument("--idle-grace-ms", type=int, default=30_000,
                        help="an instance left idle without instructions this long counts as expired")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (0 = any)")
    parser.add_argument("--config", help="TOML/YAML config file (default: $WL_CONFIG, ./wl.toml, ~/.wl/config.toml)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    for name in ("memory_mb", "workers", "idle_grace_ms"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    from wlruntime.wasm.engine import POOL_SLOTS

    if args.workers >= POOL_SLOTS:  # each running ABI 1 call holds a slot; one more runs inline
        parser.error(f"--workers must be below {POOL_SLOTS} (the wasm instance pool's size)")

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from wlruntime.config import ConfigError, load_settings
    from wlruntime.node.server import serve

    try:
        settings = load_settings(args.config, overrides={
            "node": {"host": args.host, "port": args.port, "cache_dir": args.cache_dir},
            "registry": {"url": args.registry},
        })
    except ConfigError as error:
        print(f"wl node: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    # The registry hands a function's secrets (its env) only to callers with the token.
    token = args.registry_token or settings.registry.token

    def ready(node) -> None:
        metrics = f", metrics on http://{settings.node.host}:{node.metrics_port}/metrics" if node.metrics_port else ""
        print(f"wl node {node.runtime.node_id} listening on {settings.node.host}:{node.port}{metrics}", flush=True)

    try:
        serve(
            on_ready=ready, registry_url=settings.registry.base_url(), registry_token=token, node_id=args.node_id,
            memory_mb=args.memory_mb, host=settings.node.host, port=settings.node.port,
            cache_dir=str(settings.node_cache_dir()), scheduler_address=args.scheduler, workers=args.workers,
            idle_grace_ms=args.idle_grace_ms, metrics_port=args.metrics_port,
        )
    except (OSError, RuntimeError, ValueError) as error:  # ValueError: inconsistent TLS settings (auth.py)
        print(f"wl node: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
