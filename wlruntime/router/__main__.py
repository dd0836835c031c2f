"""Run the router: ``python -m wlruntime.router [--host H] [--port P] [--scheduler-port S]
[--registry URL] [--node HOST:PORT ...] [--policy SPEC] [--admin-token T] [--registry-token T]
[--trace-out FILE] [--config FILE]``. Flags override the config file and ``WL_*`` env vars
(``WL_ROUTER_PORT``, ``WL_ROUTER_NODES=a:1,b:2``, ``WL_ROUTER_POLICY``, ...).

Tokens: the admin token (``--admin-token``, ``router.admin_token``) guards /admin; unset, the
registry's token is used (configured, or the one the registry generated into its data dir), so
one token runs a local platform. The registry token is what the router forwards deploys with.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import typer

Opt = typer.Option


def serve(
    host: Annotated[str | None, Opt(help="listen address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, Opt(help="HTTP port (default 7701)")] = None,
    scheduler_port: Annotated[int | None, Opt(help="Scheduler gRPC port the nodes call (default 7702; "
                                                   "0 = any)")] = None,
    registry: Annotated[str | None, Opt(help="code registry base URL (default from settings: "
                                             "http://127.0.0.1:7700)")] = None,
    registry_token: Annotated[str | None, Opt(help="registry write token (deploys are forwarded with it)")] = None,
    admin_token: Annotated[str | None, Opt(help="token for /admin (default: the registry token)")] = None,
    node: Annotated[list[str] | None, Opt(metavar="HOST:PORT", help="a handler node's gRPC address; repeat for "
                                                                    "several (or a comma-separated list)")] = None,
    policy: Annotated[str | None, Opt(help="policy spec, e.g. default, fixed_ttl:ttl_ms=60000, uploaded:NAME, "
                                           "learned:DIR, wasm:FILE.wasm, custom:my.py")] = None,
    trace_out: Annotated[str | None, Opt(help="write the recorded traffic here on shutdown (.parquet or .csv)")] = None,
    state_dir: Annotated[Path | None, Opt(help="where queued Event invocations, Lambda metadata and fetched "
                                               "uploaded policies survive a restart (default <data dir>/router)")]
    = None,
    event_retry_delays: Annotated[str, Opt(metavar="S,S", help="seconds before the retries of an Event "
                                                                "invocation whose function failed (Lambda: 60,120)")]
    = "60,120",
    config: Annotated[str | None, Opt(help="TOML/YAML config file (default: $WL_CONFIG, ./wl.toml, "
                                           "~/.wl/config.toml)")] = None,
    loop: Annotated[str, Opt(help="event loop: uvloop or asyncio")] = "uvloop",
    log_level: Annotated[str, Opt(help="debug, info, warning or error")] = "info",
) -> None:
    """wl router (HTTP + Scheduler gRPC). Flags override the config file and WL_* variables."""
    if loop not in ("uvloop", "asyncio"):
        raise typer.BadParameter(f"{loop!r}: use uvloop or asyncio", param_hint="--loop")
    _run(SimpleNamespace(host=host, port=port, scheduler_port=scheduler_port, registry=registry,
                         registry_token=registry_token, admin_token=admin_token, node=node or [], policy=policy,
                         trace_out=trace_out, state_dir=state_dir, event_retry_delays=event_retry_delays,
                         config=config, loop=loop, log_level=log_level))


def main(argv: list[str] | None = None) -> None:
    app = typer.Typer(add_completion=False)
    app.command()(serve)
    typer.main.get_command(app)(args=argv, prog_name="python -m wlruntime.router")


def _run(args: SimpleNamespace) -> None:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from policies.registry import PolicySpecError
    from wlruntime.config import ConfigError, load_settings
    from wlruntime.router.core import Router
    from wlruntime.router.server import create_app, run_router_forever

    nodes = [a.strip() for value in args.node for a in value.split(",") if a.strip()] or None
    try:
        settings = load_settings(args.config, overrides={
            "registry": {"url": args.registry, "token": args.registry_token},
            "router": {"host": args.host, "port": args.port, "scheduler_port": args.scheduler_port,
                       "admin_token": args.admin_token, "policy": args.policy, "nodes": nodes,
                       "trace_out": args.trace_out}})
        registry_token = settings.registry_token()
        admin_token = settings.router.admin_token or registry_token
        if not admin_token:
            raise ConfigError("no admin token: give --admin-token (or router.admin_token / WL_ROUTER_ADMIN_TOKEN), "
                              "or a registry token")
        rs = settings.router
        if not rs.nodes:
            print("wl router: warning: no handler nodes configured (--node HOST:PORT); add some with "
                  "POST /admin/nodes", file=sys.stderr)
        # Uploaded routing code is fetched from the registry once the router runs (server.py).
        uploaded = rs.policy if rs.policy.startswith("uploaded:") else None
        router = Router(registry_url=settings.registry.base_url(), registry_token=registry_token, nodes=rs.nodes,
                        policy="default" if uploaded else rs.policy)
        try:
            delays = tuple(float(d) for d in args.event_retry_delays.split(",") if d.strip())
        except ValueError:
            raise ConfigError(f"--event-retry-delays {args.event_retry_delays!r}: expected seconds, "
                              "comma-separated (e.g. 60,120)") from None
        state_dir = args.state_dir or settings.data_dir / "router"
        app = create_app(router, admin_token=admin_token, scheduler_host=rs.host, scheduler_port=rs.scheduler_port,
                         trace_out=rs.trace_out, state_dir=state_dir, event_retry_delays_s=delays,
                         uploaded_policy=uploaded)
    except (ConfigError, PolicySpecError, OSError) as exc:
        print(f"wl router: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wl router: http://{rs.host}:{rs.port} (Scheduler gRPC on {rs.host}:{rs.scheduler_port}), "
          f"policy {rs.policy}, nodes {', '.join(rs.nodes) or 'none'}", flush=True)
    run_router_forever(app, rs.host, rs.port, loop=args.loop, log_level="warning")


if __name__ == "__main__":
    main()
