"""The runtime's ``wl`` commands: up, deploy, invoke, ls, logs, policy, and the per-component
``serve`` wrappers. ``register(app)`` adds them to the top-level typer app (wl/cli.py).

Only typer, rich and httpx are imported at module level so ``wl invoke`` starts fast; the
settings (pydantic) and the platform are imported inside the commands.

Where the router is: ``--url``, else the settings (``WL_ROUTER_URL``, ``router.url`` /
``router.port`` in wl.toml; default http://127.0.0.1:7701). The admin token (deploy, ls,
logs, policy): ``--token``, else ``WL_ROUTER_ADMIN_TOKEN`` / ``router.admin_token``, else the
registry token (``WL_REGISTRY_TOKEN``, or the file ``wl up`` generated in the data dir).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from wlruntime.config import Settings
    from wlruntime.router.client import RouterClient

console = Console()
err_console = Console(stderr=True)

policy_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Show or change the router's policy.")
registry_app = typer.Typer(no_args_is_help=True, add_completion=False, help="The code registry.")
node_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Handler nodes.")
router_app = typer.Typer(no_args_is_help=True, add_completion=False, help="The router.")

UrlOpt = Annotated[str | None, typer.Option("--url", help="router URL (default from settings: http://127.0.0.1:7701)")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="admin token (default: settings, then the "
                                                             "token file `wl up` created)", show_default=False)]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML/YAML settings file")]
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _settings(config: Path | None = None) -> Settings:
    from wlruntime.config import ConfigError, load_settings

    try:
        return load_settings(config)
    except ConfigError as error:
        _fail(str(error), 2)


def _token(settings: Settings, token: str | None) -> str | None:
    if token:
        return token
    if settings.router.admin_token:
        return settings.router.admin_token
    if settings.registry.token:
        return settings.registry.token
    path = settings.registry_dir() / "registry.token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _client(url: str | None, token: str | None, config: Path | None = None, need_token: bool = True) -> RouterClient:
    from wlruntime.router.client import RouterClient

    settings = _settings(config)
    found = _token(settings, token)
    if need_token and not found:
        _fail("no admin token: pass --token, set WL_ROUTER_ADMIN_TOKEN, or start the platform with `wl up` "
              f"(it writes {settings.registry_dir() / 'registry.token'})", 2)
    return RouterClient(url or settings.router.base_url(), found)


def _admin_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from wlruntime.router.client import RouterClientError

    try:
        return fn(*args, **kwargs)
    except RouterClientError as error:
        hint = " (is the platform running? start it with `wl up`)" if error.status is None else ""
        _fail(f"{error}{hint}")


# ----------------------------------------------------------------------------------- wl up
def up(
    nodes: Annotated[int | None, typer.Option("--nodes", "-n", help="handler nodes to start (default 1)")] = None,
    policy: Annotated[str | None, typer.Option(help="policy spec (default: default), e.g. fixed_ttl:ttl_ms=60000")] = None,
    port: Annotated[int | None, typer.Option(help="router HTTP port (default 7701)")] = None,
    registry_port: Annotated[int | None, typer.Option(help="registry port (default 7700)")] = None,
    scheduler_port: Annotated[int | None, typer.Option(help="router's Scheduler gRPC port (default 7702)")] = None,
    node_port: Annotated[int | None, typer.Option(help="first node's gRPC port (default 7710; then +1...)")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="memory each node offers (default 2048)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="platform data (default ~/.wl)")] = None,
    trace_out: Annotated[Path | None, typer.Option(help="write the recorded traffic here on exit (.parquet/.csv)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="do not print the components' logs")] = False,
    config: ConfigOpt = None,
) -> None:
    """Start the registry, the router and N nodes on loopback; Ctrl-C stops them all."""
    import signal

    from rich.text import Text

    from policies.registry import PolicySpecError
    from wlruntime.platform import Platform, PlatformError, platform_token
    from wlruntime.router.core import load_live_policy

    s = _settings(config)
    if data_dir is not None:
        s.data_dir = data_dir.expanduser()
    spec = policy or s.router.policy
    try:
        load_live_policy(spec)  # fail here, with the reason, rather than in the router's log
    except PolicySpecError as error:
        _fail(str(error), 2)
    registry_dir = s.registry_dir()
    token = s.registry.token or s.router.admin_token or platform_token(registry_dir)
    token_source = ("from your settings" if s.registry.token or s.router.admin_token
                    else str(registry_dir / "registry.token"))
    colors = {"registry": "cyan", "router": "magenta"}

    def echo(name: str, line: str) -> None:
        if not quiet:
            console.print(Text.assemble((f"{name:>9} │ ", colors.get(name, "green")), line), soft_wrap=True,
                          highlight=False)

    platform = Platform(
        s.data_dir, nodes=nodes or s.node.count, policy=spec, host="127.0.0.1",
        registry_port=registry_port or s.registry.port, router_port=port or s.router.port,
        scheduler_port=scheduler_port or s.router.scheduler_port, node_port=node_port or s.node.port,
        node_memory_mb=memory_mb or s.node.memory_mb, token=token, trace_out=trace_out or s.router.trace_out,
        echo=echo, registry_dir=registry_dir, cache_dir=s.node_cache_dir())

    stopping = False

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        platform.start()
        console.print(
            f"\n[bold green]wl is up[/]: router [bold]{platform.router_url}[/] · registry {platform.registry_url} · "
            f"{platform.n_nodes} node(s) on {', '.join(platform.node_addresses)} · policy [bold]{escape(spec)}[/]\n"
            f"  token: {token_source} (the CLI finds it)\n"
            f"  try:   wl deploy echo examples/build/echo.wasm && wl invoke echo --data hi -v\n"
            f"  Lambda API: {platform.router_url}/2015-03-31/functions/<name>/invocations\n"
            f"  metrics: {platform.router_url}/metrics (router) · {' · '.join(platform.node_metrics_urls)}\n"
            f"  Ctrl-C stops everything.\n")
        while True:
            time.sleep(0.5)
            dead = platform.dead_children()
            if dead:
                names = ", ".join(f"{c.name} (exit {c.proc.returncode})" for c in dead)
                _stop(platform, f"{names} stopped unexpectedly; stopping the platform")
                raise typer.Exit(1)
    except KeyboardInterrupt:
        stopping = True
    except PlatformError as error:
        _stop(platform, None)
        _fail(str(error))
    finally:
        if stopping:
            _stop(platform, "stopping...")


def _stop(platform: Any, message: str | None) -> None:
    if message:
        err_console.print(f"[yellow]{escape(message)}[/]")
    platform.stop()
    if platform.trace_out is not None and platform.trace_out.exists():
        err_console.print(f"recorded traffic written to {platform.trace_out}")
    err_console.print("wl stopped.")


# ------------------------------------------------------------------------------- functions
def deploy(
    name: Annotated[str, typer.Argument(help="function name: lowercase letters, digits, '_' and '-'")],
    wasm: Annotated[Path, typer.Argument(help="the .wasm file", exists=True, dir_okay=False, readable=True)],
    memory: Annotated[int | None, typer.Option("--memory", help="memory limit, MB (default 128)")] = None,
    timeout: Annotated[int | None, typer.Option("--timeout", help="timeout, ms (default 3000)")] = None,
    concurrency: Annotated[int | None, typer.Option(help="max concurrent instances (default 1); more → 429")] = None,
    abi: Annotated[str | None, typer.Option(help="wasi-command or component (default: detected)")] = None,
    max_payload: Annotated[int | None, typer.Option(help="largest request/response, bytes (default 6 MiB)")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE for the function; repeatable")] = None,
    config_file: Annotated[Path | None, typer.Option("--config", help="a JSON config file (flags override it)",
                                                     exists=True, dir_okay=False)] = None,
    url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Upload a function (code + config) through the router; the next invocation runs it."""
    config: dict[str, Any] = {}
    if config_file is not None:
        try:
            config = json.loads(config_file.read_text())
        except ValueError as error:
            _fail(f"{config_file}: not valid JSON: {error}", 2)
        if not isinstance(config, dict):
            _fail(f"{config_file}: the config must be a JSON object", 2)
    for key, value in (("memory_mb", memory), ("timeout_ms", timeout), ("concurrency", concurrency),
                       ("abi", abi), ("max_payload_bytes", max_payload)):
        if value is not None:
            config[key] = value
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--env {item!r}: expected KEY=VALUE", 2)
        config.setdefault("env", {})[key] = value
    client = _client(url, token)
    meta = _admin_call(client.deploy, name, wasm, config)
    c = meta.get("config", {})
    console.print(f"deployed [bold]{escape(name)}[/] version {meta.get('version')} · {c.get('abi')} · "
                  f"{c.get('memory_mb')} MB · timeout {c.get('timeout_ms')} ms · concurrency {c.get('concurrency')} · "
                  f"{meta.get('size', 0) / 1024:.1f} KB · sha256 {str(meta.get('sha256', ''))[:12]}")


def invoke(
    name: Annotated[str, typer.Argument(help="function name")],
    data: Annotated[str | None, typer.Option("--data", "-d", help="request body text")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="request body from a file ('-' = stdin)",
                                              allow_dash=True)] = None,
    header: Annotated[list[str] | None, typer.Option("--meta", "-m", help="KEY=VALUE metadata for the "
                                                                          "function; repeatable")] = None,
    feature: Annotated[list[str] | None, typer.Option("--feature", "-F", help="NAME=NUMBER request feature for "
                                                                             "the policy; repeatable")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show cold/warm, timings, node")] = False,
    url: UrlOpt = None,
) -> None:
    """Invoke a function and print its output (timings on stderr with -v)."""
    import os

    from wlruntime.router.client import RouterClient, RouterClientError

    if data is not None and file is not None:
        _fail("give --data or --file, not both", 2)
    body = b""
    if data is not None:
        body = data.encode()
    elif file is not None:
        body = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    headers = {}
    for item in header or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--meta {item!r}: expected KEY=VALUE", 2)
        headers[f"x-wl-meta-{key}"] = value
    for item in feature or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--feature {item!r}: expected NAME=NUMBER", 2)
        headers[f"x-wl-feature-{key}"] = value
    base = url or os.environ.get("WL_ROUTER_URL") or _settings().router.base_url()
    try:
        with RouterClient(base) as client:
            result = client.invoke(name, body, headers=headers)
    except RouterClientError as error:
        _fail(f"{error} (is the platform running? start it with `wl up`)")
    if result.ok:
        sys.stdout.buffer.write(result.output)
        if result.output and not result.output.endswith(b"\n") and sys.stdout.isatty():
            sys.stdout.write("\n")
        sys.stdout.flush()
    if verbose:
        h = result.headers
        parts = []
        if "x-wl-cold" in h:  # absent when the request never reached an instance
            parts.append("[yellow]cold start[/]" if result.cold else "[green]warm[/]")
        parts.append(f"status {result.status}")
        if "x-wl-duration-ms" in h:
            parts += [f"exec {float(h['x-wl-duration-ms']):.2f} ms", f"wait {float(h['x-wl-wait-ms']):.2f} ms"]
        parts.append(f"total {result.elapsed_ms:.2f} ms")
        if h.get("x-wl-node"):
            parts.append(f"{h['x-wl-node']}/{h.get('x-wl-instance', '')} v{h.get('x-wl-version', '')}")
        err_console.print(" · ".join(parts), highlight=False)
    if not result.ok:
        err_console.print(f"[red]{escape(result.error or 'error')}[/] (HTTP {result.status}): "
                          f"{escape(result.message)}", highlight=False)
        logs = result.details.get("logs")
        if logs:
            err_console.print(escape(logs.rstrip()), highlight=False)
        raise typer.Exit(1)


def ls(url: UrlOpt = None, token: TokenOpt = None) -> None:
    """List deployed functions with their live instances."""
    from rich.table import Table

    client = _client(url, token)
    functions = _admin_call(client.functions)
    if not functions:
        console.print("no functions deployed (wl deploy NAME FILE.wasm)")
        return
    table = Table("name", "version", "abi", "memory", "timeout", "concurrency", "instances", "invocations",
                  "cold starts", box=None, header_style="bold")
    for f in functions:
        c = f.get("config", {})
        live = f.get("live") or {}
        states: dict[str, int] = {}
        for inst in live.get("instances", []):
            states[inst["state"]] = states.get(inst["state"], 0) + 1
        table.add_row(f["name"], str(f.get("latest_version")), str(c.get("abi")), f"{c.get('memory_mb')} MB",
                      f"{c.get('timeout_ms')} ms", str(c.get("concurrency")),
                      ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "-",
                      str(live.get("completions", 0)), str(live.get("cold_starts", 0)))
    console.print(table)


def logs(
    name: Annotated[str, typer.Argument(help="function name")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="how many recent entries")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new entries")] = False,
    url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Recent invocation logs (stderr) and errors of a function, as the router saw them."""
    client = _client(url, token)
    seen: set[tuple[float, str]] = set()
    while True:
        entries = _admin_call(client.logs, name, lines)
        for e in entries:
            key = (e["time"], e["request_id"])
            if key in seen:
                continue
            seen.add(key)
            stamp = time.strftime("%H:%M:%S", time.localtime(e["time"]))
            head = f"[dim]{stamp} {escape(e['request_id'])} {escape(e['instance'])}[/]"
            if e["error"] != "none":
                head += f" [red]{escape(e['error'])}[/]: {escape(e['message'])}"
            console.print(head, highlight=False)
            if e["logs"]:
                console.print(escape(e["logs"].rstrip()), highlight=False)
        if not follow:
            if not entries:
                console.print(f"no logs recorded for {escape(name)} yet")
            return
        time.sleep(1.0)


@policy_app.command("set")
def policy_set(spec: Annotated[str, typer.Argument(help="policy spec, e.g. fixed_ttl:ttl_ms=60000, "
                                                        "custom:my_policy.py, learned:DIR, wasm:FILE.wasm")],
               url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Swap the running router's policy (no request is dropped). A relative custom:/learned:/wasm:
    path that exists here is sent as an absolute path (the router resolves it in its own directory)."""
    from policies.registry import with_absolute_path

    spec = with_absolute_path(spec)
    client = _client(url, token)
    described = _admin_call(client.set_policy, spec)
    console.print(f"policy is now [bold]{escape(described.get('spec', spec))}[/]: {escape(json.dumps(described))}")


@policy_app.command("show")
def policy_show(url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Print the running router's policy and its parameters."""
    client = _client(url, token)
    console.print_json(json.dumps(_admin_call(client.policy)))


# ---------------------------------------------------------------------------- serve wrappers
@registry_app.command("serve", context_settings=PASSTHROUGH)
def registry_serve(ctx: typer.Context) -> None:
    """Run the code registry (all options of `python -m wlruntime.registry`; --help lists them)."""
    from wlruntime.registry.__main__ import main

    main(ctx.args)


@node_app.command("serve", context_settings=PASSTHROUGH)
def node_serve(ctx: typer.Context) -> None:
    """Run a handler node (all options of `python -m wlruntime.node`; --help lists them)."""
    from wlruntime.node.__main__ import main

    main(ctx.args)


@router_app.command("serve", context_settings=PASSTHROUGH)
def router_serve(ctx: typer.Context) -> None:
    """Run the router (all options of `python -m wlruntime.router`; --help lists them)."""
    from wlruntime.router.__main__ import main

    main(ctx.args)


@router_app.command("trace")
def router_trace(out: Annotated[Path, typer.Argument(help="output file, .parquet or .csv")],
                 url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Save the traffic the router recorded as a canonical trace (replay it with `wl sim`)."""
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        _fail(f"{out}: use a .csv or .parquet name", 2)
    client = _client(url, token)
    data = _admin_call(client.trace, suffix[1:])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    console.print(f"wrote {out} ({len(data)} bytes)")


@router_app.command("state")
def router_state(url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Print the router's nodes, functions and instances as JSON."""
    client = _client(url, token)
    console.print_json(json.dumps(_admin_call(client.state)))


def register(app: typer.Typer) -> None:
    """Add the runtime commands to the top-level ``wl`` app."""
    app.command("up")(up)
    app.command("deploy")(deploy)
    app.command("invoke")(invoke)
    app.command("ls")(ls)
    app.command("logs")(logs)
    app.add_typer(policy_app, name="policy")
    app.add_typer(registry_app, name="registry")
    app.add_typer(node_app, name="node")
    app.add_typer(router_app, name="router")


# A standalone app with only the runtime commands (tests, or `python -m wlruntime.cli`).
app = typer.Typer(no_args_is_help=True, add_completion=False, help="wl runtime commands")
register(app)

if __name__ == "__main__":
    app()

__all__ = ["app", "register"]
