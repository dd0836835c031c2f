"""Run the router: ``python -m wlruntime.router [--host H] [--port P] [--scheduler-port S]
[--registry URL] [--node HOST:PORT ...] [--policy SPEC] [--admin-token T] [--registry-token T]
[--trace-out FILE] [--config FILE]``. Flags override the config file and ``WL_*`` env vars
(``WL_ROUTER_PORT``, ``WL_ROUTER_NODES=a:1,b:2``, ``WL_ROUTER_POLICY``, ...).

Tokens: the admin token (``--admin-token``, ``router.admin_token``) guards /admin; unset, the
registry's token is used (configured, or the one the registry generated into its data dir), so
one token runs a local platform. The registry token is what the router forwards deploys with.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wlruntime.router", description="wl router (HTTP + Scheduler gRPC)")
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default 7701)")
    parser.add_argument("--scheduler-port", type=int, help="Scheduler gRPC port the nodes call (default 7702; 0 = any)")
    parser.add_argument("--registry", help="code registry base URL (default from settings: http://127.0.0.1:7700)")
    parser.add_argument("--registry-token", help="registry write token (deploys are forwarded with it)")
    parser.add_argument("--admin-token", help="token for /admin (default: the registry token)")
    parser.add_argument("--node", action="append", default=[], metavar="HOST:PORT",
                        help="a handler node's gRPC address; repeat for several (or a comma-separated list)")
    parser.add_argument("--policy", help="policy spec, e.g. default, fixed_ttl:ttl_ms=60000, custom:my.py, learned:DIR")
    parser.add_argument("--trace-out", help="write the recorded traffic here on shutdown (.parquet or .csv)")
    parser.add_argument("--state-dir", help="where queued Event invocations, Lambda metadata and fetched uploaded "
                                            "policies survive a restart (default <data dir>/router)")
    parser.add_argument("--event-retry-delays", default="60,120", metavar="S,S",
                        help="seconds before the retries of an Event invocation whose function failed (Lambda: 60,120)")
    parser.add_argument("--config", help="TOML/YAML config file (default: $WL_CONFIG, ./wl.toml, ~/.wl/config.toml)")
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"], help="event loop (default uvloop)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

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
        router = Router(registry_url=settings.registry.base_url(), registry_token=registry_token, nodes=rs.nodes,
                        policy=rs.policy)
        try:
            delays = tuple(float(d) for d in args.event_retry_delays.split(",") if d.strip())
        except ValueError:
            raise ConfigError(f"--event-retry-delays {args.event_retry_delays!r}: expected seconds, "
                              "comma-separated (e.g. 60,120)") from None
        state_dir = args.state_dir or settings.data_dir / "router"
        app = create_app(router, admin_token=admin_token, scheduler_host=rs.host, scheduler_port=rs.scheduler_port,
                         trace_out=rs.trace_out, state_dir=state_dir, event_retry_delays_s=delays)
    except (ConfigError, PolicySpecError, OSError) as exc:
        print(f"wl router: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wl router: http://{rs.host}:{rs.port} (Scheduler gRPC on {rs.host}:{rs.scheduler_port}), "
          f"policy {rs.policy}, nodes {', '.join(rs.nodes) or 'none'}", flush=True)
    run_router_forever(app, rs.host, rs.port, loop=args.loop, log_level="warning")


if __name__ == "__main__":
    main()
