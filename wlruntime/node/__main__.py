"""Run a handler node: ``python -m wlruntime.node [--registry URL] [--port P] [--memory-mb M]
[--node-id ID] [--scheduler HOST:PORT] [--cache-dir DIR] [--workers N] [--metrics-port P]``.

Defaults come from the shared runtime settings (wlruntime/config.py: embedded defaults, a
config file, ``WL_*`` env vars), flags override them. Prints
``wl node <id> listening on <host>:<port>`` once it serves (``--port 0`` picks a free port).
"""

from __future__ import annotations

import logging
import os
import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from wlruntime.node.register import Registrar

Opt = typer.Option


def serve(
    registry: Annotated[str | None, Opt(help="code registry base URL (default: the registry settings, "
                                             "http://127.0.0.1:7700)")] = None,
    registry_token: Annotated[str | None, Opt(help="token for registries that require one for reads")] = None,
    host: Annotated[str | None, Opt(help="listen address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, Opt(help="gRPC port (default 7710; 0 = any free port)")] = None,
    memory_mb: Annotated[int, Opt(min=1, help="memory offered to instances")] = 2048,
    node_id: Annotated[str, Opt(help="name of this node (default <hostname>-<port>)")] = "",
    scheduler: Annotated[str | None, Opt(help="Scheduler gRPC address asked when keep-alives expire "
                                              "(default: none, expired instances are killed)")] = None,
    cache_dir: Annotated[str | None, Opt(help="fetched code and compiled artifacts (default <data_dir>/node-cache, "
                                              "i.e. ~/.wl/node-cache; nodes on one host may share it)")] = None,
    workers: Annotated[int, Opt(min=1, help="threads running wasm = max concurrent invocations")]
    = max(4, 2 * (os.cpu_count() or 1)),
    idle_grace_ms: Annotated[int, Opt(min=1, help="an instance left idle without instructions this long counts "
                                                  "as expired")] = 30_000,
    metrics_port: Annotated[int | None, Opt(help="serve Prometheus /metrics on this port (0 = any)")] = None,
    config: Annotated[str | None, Opt(help="TOML/YAML config file (default: $WL_CONFIG, ./wl.toml, "
                                           "~/.wl/config.toml)")] = None,
    log_level: Annotated[str, Opt(help="debug, info, warning or error")] = "info",
    register: Annotated[str | None, Opt(help="router URL to register this node with (POST /admin/nodes), "
                                             "again every --register-every seconds")] = None,
    advertise: Annotated[str | None, Opt(help="HOST[:PORT] the router dials for this node (default "
                                              "<host>:<port>; on Kubernetes the pod IP)")] = None,
    admin_token: Annotated[str | None, Opt(envvar="WL_ROUTER_ADMIN_TOKEN",
                                           help="the router's admin token for --register (default: the "
                                                "router settings' admin_token, else the registry token)")] = None,
    register_every: Annotated[float, Opt(min=1.0, help="seconds between registrations")] = 30.0,
) -> None:
    """wl handler node (gRPC). Flags override the config file and WL_* variables."""
    from wlruntime.wasm.engine import POOL_SLOTS

    if workers >= POOL_SLOTS:  # each running ABI 1 call holds a slot; one more runs inline
        typer.echo(f"wl node: --workers must be below {POOL_SLOTS} (the wasm instance pool's size)", err=True)
        raise typer.Exit(2)
    _run(SimpleNamespace(registry=registry, registry_token=registry_token, host=host, port=port,
                         memory_mb=memory_mb, node_id=node_id, scheduler=scheduler, cache_dir=cache_dir,
                         workers=workers, idle_grace_ms=idle_grace_ms, metrics_port=metrics_port, config=config,
                         log_level=log_level, register=register, advertise=advertise, admin_token=admin_token,
                         register_every=register_every))


def main(argv: list[str] | None = None) -> None:
    app = typer.Typer(add_completion=False)
    app.command()(serve)
    typer.main.get_command(app)(args=argv, prog_name="python -m wlruntime.node")


def _run(args: SimpleNamespace) -> None:
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

    registrars = []  # the one Registrar, once serving (with --register)

    def ready(node) -> None:
        metrics = f", metrics on http://{settings.node.host}:{node.metrics_port}/metrics" if node.metrics_port else ""
        print(f"wl node {node.runtime.node_id} listening on {settings.node.host}:{node.port}{metrics}", flush=True)
        if args.register:
            registrars.append(_start_registration(args, settings, node.port))

    def leaving() -> None:
        for registrar in registrars:
            registrar.deregister()

    try:
        serve(
            on_ready=ready, on_stop=leaving, registry_url=settings.registry.base_url(), registry_token=token,
            node_id=args.node_id,
            memory_mb=args.memory_mb, host=settings.node.host, port=settings.node.port,
            cache_dir=str(settings.node_cache_dir()), scheduler_address=args.scheduler, workers=args.workers,
            idle_grace_ms=args.idle_grace_ms, metrics_port=args.metrics_port,
        )
    except (OSError, RuntimeError, ValueError) as error:  # ValueError: inconsistent TLS settings (auth.py)
        print(f"wl node: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _start_registration(args: SimpleNamespace, settings, port: int) -> Registrar:
    """Register with the router now and periodically (wlruntime.node.register)."""
    from wlruntime.node.register import Registrar

    address = args.advertise or f"{settings.node.host}:{port}"
    if ":" not in address.rsplit("]", 1)[-1]:
        address = f"{address}:{port}"
    token = args.admin_token or settings.router.admin_token or settings.registry_token()
    registrar = Registrar(args.register, address, token, args.register_every)
    registrar.start()
    print(f"wl node registering {address} with {args.register}", flush=True)
    return registrar


if __name__ == "__main__":
    main()
