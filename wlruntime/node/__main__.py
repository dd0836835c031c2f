"""Run a handler node: ``python -m wlruntime.node --registry URL [--port P] [--memory-mb M]
[--node-id ID] [--scheduler HOST:PORT] [--cache-dir DIR] [--workers N] [--metrics-port P]``.

Prints ``wl node <id> listening on <host>:<port>`` once it serves (port 0 picks a free one).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wlruntime.node", description="wl handler node (gRPC)")
    parser.add_argument("--registry", default=os.environ.get("WL_REGISTRY_URL", "http://127.0.0.1:7700"),
                        help="code registry base URL (default $WL_REGISTRY_URL or http://127.0.0.1:7700)")
    parser.add_argument("--registry-token", default=os.environ.get("WL_REGISTRY_TOKEN"),
                        help="token for registries that require one for reads")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7800, help="gRPC port (default 7800; 0 = any free port)")
    parser.add_argument("--memory-mb", type=int, default=2048, help="memory offered to instances (default 2048)")
    parser.add_argument("--node-id", help="name of this node (default <hostname>-<port>)")
    parser.add_argument("--scheduler", help="Scheduler gRPC address asked when keep-alives expire "
                        "(default: none, expired instances are killed)")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".wl" / "node-cache"),
                        help="code and compiled-artifact cache (default ~/.wl/node-cache; may be shared by nodes)")
    parser.add_argument("--workers", type=int, default=max(4, 2 * (os.cpu_count() or 1)),
                        help="threads running wasm = max concurrent invocations (default max(4, 2 x cores))")
    parser.add_argument("--idle-grace-ms", type=int, default=30_000,
                        help="an instance left idle without instructions this long counts as expired")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (0 = any)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    for name in ("memory_mb", "workers", "idle_grace_ms"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from wlruntime.node.server import start_node, wait_forever

    try:
        node = start_node(
            registry_url=args.registry, registry_token=args.registry_token, node_id=args.node_id or "",
            memory_mb=args.memory_mb, host=args.host, port=args.port, cache_dir=args.cache_dir,
            scheduler_address=args.scheduler, workers=args.workers, idle_grace_ms=args.idle_grace_ms,
            metrics_port=args.metrics_port,
        )
    except (OSError, RuntimeError) as error:
        print(f"wl node: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    metrics = f", metrics on http://{args.host}:{node.metrics_port}/metrics" if node.metrics_port else ""
    print(f"wl node {node.runtime.node_id} listening on {args.host}:{node.port}{metrics}", flush=True)
    wait_forever(node)


if __name__ == "__main__":
    main()
