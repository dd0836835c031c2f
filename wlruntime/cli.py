"""The runtime's ``wl`` commands: up, deploy, invoke, rm, ls, logs, run, new, build, policy, and
the per-component ``serve`` wrappers. ``register(app)`` adds them to the top-level typer app
(wl/cli.py).

Only typer, rich and httpx are imported at module level so ``wl invoke`` starts fast; the
settings (pydantic) and the platform are imported inside the commands.

Where the router is and which admin token to send: ``wl up`` records the platform it started
(see wl/settings.py for the order: --url/--token, WL_ROUTER_URL / WL_ROUTER_ADMIN_TOKEN, the
platform ``wl up`` recorded, the settings file, the defaults).
"""

from __future__ import annotations

import base64
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
    from wlruntime.router.client import RouterClient, RouterClientError

console = Console()
err_console = Console(stderr=True)

policy_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Show or change the router's policy.")
registry_app = typer.Typer(no_args_is_help=True, add_completion=False, help="The code registry.")
node_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Handler nodes.")
router_app = typer.Typer(no_args_is_help=True, add_completion=False, help="The router.")

UrlOpt = Annotated[str | None, typer.Option("--url", envvar="WL_ROUTER_URL", show_envvar=True,
                                             help="router URL (default: the platform `wl up` started, "
                                                  "else http://127.0.0.1:7701)", show_default=False)]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="WL_ROUTER_ADMIN_TOKEN", show_envvar=True,
                                               help="admin token (default: the one of the platform `wl up` started)",
                                               show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML/YAML settings file")]


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # one line to grep
    raise typer.Exit(code)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _check_name(name: str, what: str = "function") -> str:
    """Fail with the name rule, before any request, for a name the platform would refuse."""
    from wlruntime.registry.models import name_problem

    problem = name_problem(name)
    if problem:
        _fail(problem.replace("function name", f"{what} name"), 2)
    return name


def _settings(config: Path | None = None) -> Settings:
    from wlruntime.config import ConfigError, load_settings

    try:
        return load_settings(config)
    except ConfigError as error:
        _fail(str(error), 2)


def _target(url: str | None, token: str | None, config: Path | None = None,
            need_token: bool = True) -> tuple[str, str | None, str]:
    """(router URL, admin token, where they came from): see wl/settings.py for the order."""
    from wl.settings import CliSettings, read_state

    cli = CliSettings()
    state = read_state(cli.state_path())
    where = "--url/WL_ROUTER_URL"
    if not url:
        if state is not None:
            url, where = state.router_url, f"the platform `wl up` started ({cli.state_path()})"
        else:
            url, where = _settings(config).router.base_url(), "the settings"
    if not need_token:
        return url, None, where
    if not token and state is not None:
        token = state.token()
    if not token:
        settings = _settings(config)
        token = settings.router.admin_token or settings.registry_token()
    return url, token, where


def _client(url: str | None, token: str | None, config: Path | None = None, need_token: bool = True) -> RouterClient:
    from wlruntime.router.client import RouterClient

    base, found, _ = _target(url, token, config)
    if need_token and not found:
        _fail("no admin token: pass --token, set WL_ROUTER_ADMIN_TOKEN, or start the platform with `wl up` "
              "(the CLI then finds its token)", 2)
    return RouterClient(base, found)


def _admin_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from wlruntime.router.client import RouterClientError

    try:
        return fn(*args, **kwargs)
    except RouterClientError as error:
        _admin_failed(error)


def _admin_failed(error: RouterClientError) -> NoReturn:
    hint = " (is the platform running? start it with `wl up`)" if error.status is None else ""
    _fail(f"{error}{hint}")


# ----------------------------------------------------------------------------------- wl up
def up(
    nodes: Annotated[int | None, typer.Option("--nodes", "-n", help="handler nodes to start (default 1)")] = None,
    policy: Annotated[str | None,
                      typer.Option(help="policy spec (default: default), e.g. fixed_ttl:ttl_ms=60000")] = None,
    port: Annotated[int | None, typer.Option(help="router HTTP port (default 7701)")] = None,
    registry_port: Annotated[int | None, typer.Option(help="registry port (default 7700)")] = None,
    scheduler_port: Annotated[int | None, typer.Option(help="router's Scheduler gRPC port (default 7702)")] = None,
    node_port: Annotated[int | None, typer.Option(help="first node's gRPC port (default 7710; then +1...)")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="memory each node offers (default 2048)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="platform data (default ~/.wl)")] = None,
    trace_out: Annotated[Path | None,
                         typer.Option(help="write the recorded traffic here on exit (.parquet/.csv)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="do not print the components' logs")] = False,
    config: ConfigOpt = None,
) -> None:
    """Start the registry, the router and N nodes on loopback; Ctrl-C stops them all.

    The platform is recorded in ~/.wl/platform.json (WL_STATE_FILE) while it runs, so every
    other `wl` command finds its URL and token."""
    import os
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
        if not spec.startswith("uploaded:"):  # uploaded code is fetched by the router once it is up
            load_live_policy(spec)  # fail here, with the reason, rather than in the router's log
    except PolicySpecError as error:
        _fail(str(error), 2)
    registry_dir = s.registry_dir()
    token = s.registry.token or s.router.admin_token or platform_token(registry_dir)
    token_source = ("from your settings" if s.registry.token or s.router.admin_token
                    else str(s.registry_token_file()))
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
    from wl.settings import CliSettings, PlatformState, clear_state, write_state

    state_file = CliSettings().state_path()
    try:
        platform.start()
        # Recorded so that the other commands find this platform (URL, data dir, token file).
        write_state(state_file, PlatformState(
            router_url=platform.router_url, registry_url=platform.registry_url, data_dir=str(s.data_dir),
            token_file=None if token_source == "from your settings" else token_source, pid=os.getpid()))
        console.print(
            f"\n[bold green]wl is up[/]: router [bold]{platform.router_url}[/] · registry {platform.registry_url} · "
            f"{platform.n_nodes} node(s) on {', '.join(platform.node_addresses)} · policy [bold]{escape(spec)}[/]\n"
            f"  token: {token_source}\n"
            f"  recorded in {state_file}: `wl` commands in any shell use this platform\n"
            f"  try:   wl deploy echo examples/build/echo.wasm && wl invoke echo --data hi -v\n"
            f"  Lambda API: boto3 endpoint_url={platform.router_url} (Invoke is open; managing functions "
            f"takes the token as aws_access_key_id)\n"
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
        clear_state(state_file, os.getpid())
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
    as_json: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Upload a function (code + config) through the router; the next invocation runs it."""
    _check_name(name)
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
    if as_json:
        _print_json(meta)
        return
    c = meta.get("config", {})
    limit = c.get("max_instances", c.get("concurrency"))
    console.print(f"deployed [bold]{escape(name)}[/] version {meta.get('version')} · {c.get('abi')} · "
                  f"{c.get('memory_mb')} MB · timeout {c.get('timeout_ms')} ms · concurrency {limit} · "
                  f"{meta.get('size', 0) / 1024:.1f} KB · sha256 {str(meta.get('sha256', ''))[:12]}", highlight=False)


def _request_body(data: str | None, file: Path | None) -> bytes:
    if data is not None and file is not None:
        _fail("give --data or --file, not both", 2)
    if data is not None:
        return data.encode()
    if file is not None:
        if str(file) == "-":
            return sys.stdin.buffer.read()
        try:
            return file.read_bytes()
        except OSError as error:
            _fail(f"--file {file}: {error.strerror or error}", 2)
    return b""


def _pairs(items: list[str] | None, option: str, shape: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"{option} {item!r}: expected {shape}", 2)
        out[key] = value
    return out


DataOpt = Annotated[str | None, typer.Option("--data", "-d", help="request body text")]
FileOpt = Annotated[Path | None, typer.Option("--file", "-f", help="request body from a file ('-' = stdin)",
                                              allow_dash=True)]
MetaOpt = Annotated[list[str] | None, typer.Option("--meta", "-m", help="KEY=VALUE metadata for the function; "
                                                                        "repeatable")]


def _write_output(output: bytes) -> None:
    sys.stdout.buffer.write(output)
    if output and not output.endswith(b"\n") and sys.stdout.isatty():
        sys.stdout.write("\n")
    sys.stdout.flush()


def _output_json(output: bytes) -> dict[str, str]:
    try:
        return {"output": output.decode("utf-8")}
    except UnicodeDecodeError:
        return {"output_base64": base64.b64encode(output).decode()}


def invoke(
    name: Annotated[str, typer.Argument(help="function name")],
    data: DataOpt = None, file: FileOpt = None, header: MetaOpt = None,
    feature: Annotated[list[str] | None, typer.Option("--feature", "-F", help="NAME=NUMBER request feature for "
                                                                             "the policy; repeatable")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show cold/warm, timings, node")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result (output, status, timings) as JSON")] = False,
    url: UrlOpt = None,
) -> None:
    """Invoke a function and print its output (timings on stderr with -v)."""
    from wlruntime.router.client import RouterClient, RouterClientError

    _check_name(name)
    body = _request_body(data, file)
    headers = {f"x-wl-meta-{k}": v for k, v in _pairs(header, "--meta", "KEY=VALUE").items()}
    headers |= {f"x-wl-feature-{k}": v for k, v in _pairs(feature, "--feature", "NAME=NUMBER").items()}
    base, _, _ = _target(url, None, need_token=False)
    try:
        with RouterClient(base) as client:
            result = client.invoke(name, body, headers=headers)
    except RouterClientError as error:
        _fail(f"{error} (is the platform running? start it with `wl up`)")
    h = result.headers
    if as_json:
        _print_json({"status": result.status, "ok": result.ok, **_output_json(result.output),
                     "error": result.error, "message": result.message or None,
                     "cold": result.cold if "x-wl-cold" in h else None, "duration_ms": result.duration_ms,
                     "wait_ms": result.wait_ms, "total_ms": round(result.elapsed_ms, 3),
                     "version": h.get("x-wl-version"), "node": h.get("x-wl-node"),
                     "instance": h.get("x-wl-instance"), "logs": result.details.get("logs")})
        raise typer.Exit(0 if result.ok else 1)
    if result.ok:
        _write_output(result.output)
    if verbose:
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
        logs = (result.details.get("logs") or "").rstrip()
        message = _without_log(result.message, logs)
        err_console.print(f"[red]{escape(result.error or 'error')}[/] (HTTP {result.status})"
                          + (f": {escape(message)}" if message else ""), highlight=False)
        if logs:
            err_console.print(escape(logs), highlight=False)
        raise typer.Exit(1)


def rm(name: Annotated[str, typer.Argument(help="function name")],
       url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Delete a function (every version); its idle instances are stopped."""
    _check_name(name)
    client = _client(url, token)
    removed = _admin_call(client.delete, name)
    console.print(f"removed [bold]{escape(name)}[/] ({removed.get('deleted_versions', '?')} version(s))",
                  highlight=False)


def _print_rows(columns: list[str], rows: list[list[str]], numeric: set[str]) -> None:
    """A table whose numbers are never cut: number columns keep their width, text columns
    wrap; when even that does not fit the terminal, one block of ``column: value`` per row."""
    from rich.measure import Measurement
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for i, column in enumerate(columns):
        if column in numeric:
            width = max(len(column), *(len(row[i]) for row in rows))
            table.add_column(column, justify="right", no_wrap=True, min_width=width)
        else:
            table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    if Measurement.get(console, console.options, table).minimum <= console.width:
        console.print(table)
        return
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            console.print(f"[bold]{column}[/]: {escape(value)}", highlight=False, soft_wrap=True)
        console.print()


def _platform_components() -> list[dict[str, Any]] | None:
    """Each component's health as the running ``wl up`` records it (``<data dir>/status.json``),
    or None when no platform's data dir is known (not started by ``wl up`` and no WL_DATA_DIR)."""
    from wl.settings import CliSettings, read_state
    from wlruntime.platform import read_status

    cli = CliSettings()
    state = read_state(cli.state_path())
    data_dir = state.data_dir if state is not None else cli.data_dir
    status = None if data_dir is None else read_status(data_dir)
    return None if status is None else status.get("components")


def _print_components(components: list[dict[str, Any]]) -> None:
    rows = [[c["name"], "up" if c.get("alive") else ("held down" if c.get("held_down") else "down"),
             f"{c.get('restarts', 0):,}", "-" if c.get("last_exit_code") is None else str(c["last_exit_code"]),
             f"{c.get('up_s', 0.0):,.1f} s"] for c in components]
    columns = ["component", "state", "restarts", "last exit", "up"]
    _print_rows(columns, rows, set(columns))  # short values: whole, or one block per component


def ls(as_json: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """List deployed functions with their live instances, and the health of each component of
    the platform `wl up` started (router, registry, nodes: alive, restarts, last exit code)."""
    from wlruntime.router.client import RouterClientError

    client = _client(url, token)
    components = _platform_components()
    try:
        functions = client.functions()
    except RouterClientError as error:
        if components and not as_json:  # the router is down (restarting, held down): its health says why
            _print_components(components)
            console.print()
        _admin_failed(error)
    if as_json:
        _print_json({"functions": functions, "components": components})
        return
    if components:
        _print_components(components)
        console.print()
    if not functions:
        console.print("no functions deployed (wl deploy NAME FILE.wasm)")
        return
    columns = ["name", "version", "abi", "memory", "timeout", "concurrency", "instances", "invocations",
               "cold starts"]
    rows = []
    for f in functions:
        c = f.get("config", {})
        live = f.get("live") or {}
        states: dict[str, int] = {}
        for inst in live.get("instances", []):
            states[inst["state"]] = states.get(inst["state"], 0) + 1
        rows.append([f["name"], str(f.get("latest_version")), str(c.get("abi")), f"{c.get('memory_mb')} MB",
                     f"{c.get('timeout_ms'):,} ms", str(c.get("max_instances", c.get("concurrency"))),
                     ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "-",
                     f"{live.get('completions', 0):,}", f"{live.get('cold_starts', 0):,}"])
    _print_rows(columns, rows, {"version", "memory", "timeout", "concurrency", "invocations", "cold starts"})


def _log_lines(entry: dict[str, Any]) -> tuple[str, str]:
    """(head, body) of one log entry, each error said once: the message is left out of the head
    when the function's own log already says it."""
    stamp = time.strftime("%H:%M:%S", time.localtime(entry["time"])) + f".{int(entry['time'] * 1000) % 1000:03d}"
    head = f"[dim]{stamp}[/] {escape(entry.get('request_id', ''))} [dim]{escape(entry.get('instance', ''))}[/]"
    if entry.get("duration_ms") is not None:
        head += f" {entry['duration_ms']:.2f} ms"
    if entry.get("cold"):
        head += " [yellow]cold[/]"
    logs = (entry.get("logs") or "").rstrip()
    if entry.get("error", "none") != "none":
        message = _without_log(entry.get("message") or "", logs)
        head += f" [red]{escape(entry['error'])}[/]"
        if message:
            head += f": {escape(message)}"
    return head, logs


def _without_log(message: str, logs: str) -> str:
    """``message`` minus the log lines it repeats (the node appends the last stderr line to an
    error's message), so an error printed with its log says each thing once."""
    for line in logs.splitlines():
        line = line.strip()
        if line and line in message:
            message = message.replace(line, "")
    return message.strip().rstrip(":").strip()


def logs(
    name: Annotated[str, typer.Argument(help="function name")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="how many recent entries")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new entries")] = False,
    as_json: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Recent invocations of a function: time, request id, instance, duration, errors, stderr.

    Each error is printed once; what the router records per invocation is in its README."""
    _check_name(name)
    client = _client(url, token)
    seen: set[tuple[float, str]] = set()
    while True:
        entries = _admin_call(client.logs, name, lines)
        if as_json:
            _print_json(entries)
            return
        for e in entries:
            key = (e["time"], e.get("request_id", ""))
            if key in seen:
                continue
            seen.add(key)
            head, body = _log_lines(e)
            console.print(head, highlight=False, soft_wrap=True)
            if body:
                console.print(escape(body), highlight=False, soft_wrap=True)
        if not follow:
            if not entries:
                console.print(f"nothing recorded for {escape(name)} yet (the router keeps invocations that wrote "
                              "to stderr or failed)")
            return
        time.sleep(1.0)


# ---------------------------------------------------------------------- run, new, build (local)
def run(
    wasm: Annotated[Path, typer.Argument(help="the .wasm file (a WASI command or a component)", exists=True,
                                         dir_okay=False, readable=True)],
    data: DataOpt = None, file: FileOpt = None, header: MetaOpt = None,
    memory: Annotated[int, typer.Option("--memory", help="memory limit, MB")] = 128,
    timeout: Annotated[int, typer.Option("--timeout", help="timeout, ms")] = 3000,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE for the function; repeatable")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result (output, error, timings) as JSON")] = False,
) -> None:
    """Run a .wasm once, in-process, with the nodes' wasm runner: no platform needed.

    Like `sam local invoke`: output on stdout; the function's stderr and timings on stderr."""
    from wlruntime.wasm.engine import wasm_running
    from wlruntime.wasm.runners import CompiledFunction, ConfigError, FunctionConfig, Invocation
    from wlruntime.wasm.validate import compile_checked, detect_kind

    code = wasm.read_bytes()
    body = _request_body(data, file)
    metadata = _pairs(header, "--meta", "KEY=VALUE")
    t0 = time.perf_counter()
    try:
        abi = "component" if detect_kind(code) == "component" else "wasi-command"
        config = FunctionConfig.from_stored({"abi": abi, "memory_mb": memory, "timeout_ms": timeout,
                                             "env": _pairs(env, "--env", "KEY=VALUE")})
        artifact = compile_checked(code, abi)
    except (ValueError, ConfigError) as error:
        _fail(f"{wasm}: {error}", 2)
    function = CompiledFunction(wasm.stem, 1, config, artifact)
    instance = function.new_instance("local")
    with wasm_running:
        if abi == "component":
            instance.instantiate()
        init_ms = (time.perf_counter() - t0) * 1000.0
        outcome = instance.invoke(Invocation(body, request_id="local-1", metadata=metadata))
    instance.close()
    if as_json:
        _print_json({"ok": outcome.ok, **_output_json(outcome.output), "error": outcome.error,
                     "message": outcome.error_message or None, "logs": outcome.logs.decode("utf-8", "replace"),
                     "duration_ms": round(outcome.exec_ms, 3), "init_ms": round(init_ms, 3), "abi": abi})
        raise typer.Exit(0 if outcome.ok else 1)
    _write_output(outcome.output)
    if outcome.logs:
        err_console.print(escape(outcome.logs.decode("utf-8", "replace").rstrip()), highlight=False)
    err_console.print(f"[dim]{abi} · compile+instantiate {init_ms:.1f} ms · exec {outcome.exec_ms:.2f} ms[/]",
                      highlight=False)
    if not outcome.ok:
        err_console.print(f"[red]{escape(outcome.error)}[/]: {escape(outcome.error_message)}", highlight=False)
        raise typer.Exit(1)


def new(
    name: Annotated[str, typer.Argument(help="function name (also the folder created)")],
    lang: Annotated[str, typer.Option("--lang", "-l", help="c, assemblyscript, python or rust")] = "c",
    directory: Annotated[Path | None, typer.Option("--dir", help="create it here (default ./NAME)")] = None,
) -> None:
    """Create a function project from a template (source, build recipe, wl.json config, README)."""
    from wl.templates import TemplateError, create

    _check_name(name)
    try:
        folder = create(name, lang, directory or Path(name))
    except TemplateError as error:
        _fail(str(error), 2)
    console.print(f"created [bold]{escape(str(folder))}[/] ({lang}); next:\n"
                  f"  cd {escape(str(folder))} && wl build && wl run build/{escape(name)}.wasm --data hi\n"
                  f"  wl deploy {escape(name)} build/{escape(name)}.wasm", highlight=False)


def build(
    directory: Annotated[Path, typer.Argument(help="the function project (default: here)")] = Path("."),
) -> None:
    """Build a project made by `wl new` into build/NAME.wasm (runs its recorded build command)."""
    from wl.templates import TemplateError, build_project

    try:
        out = build_project(directory, log=lambda line: err_console.print(escape(line), highlight=False))
    except TemplateError as error:
        _fail(str(error))
    console.print(f"built [bold]{escape(str(out))}[/] ({out.stat().st_size / 1024:.1f} KB)", highlight=False)


# ---------------------------------------------------------------------------------- policies
@policy_app.command("set")
def policy_set(spec: Annotated[str, typer.Argument(help="policy spec, e.g. fixed_ttl:ttl_ms=60000, "
                                                        "uploaded:NAME[@version], wasm:FILE.wasm, learned:DIR, "
                                                        "custom:my_policy.py (admin only, on the router's host)")],
               url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Swap the running router's policy (no request is dropped).

    ``uploaded:NAME[@version]`` runs routing code uploaded with `wl policy upload`; a relative
    custom:/learned:/wasm: path that exists here is sent absolute (the router reads it on its host)."""
    from policies.registry import with_absolute_path

    if not spec.startswith("uploaded:"):
        spec = with_absolute_path(spec)
    client = _client(url, token)
    described = _admin_call(client.set_policy, spec)
    console.print(f"policy is now [bold]{escape(described.get('spec', spec))}[/]: {escape(json.dumps(described))}",
                  highlight=False)


@policy_app.command("show")
def policy_show(url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Print the running router's policy and its parameters."""
    client = _client(url, token)
    console.print_json(json.dumps(_admin_call(client.policy)))


@policy_app.command("upload")
def policy_upload(
    name: Annotated[str, typer.Argument(help="policy name: lowercase letters, digits, '_' and '-'")],
    path: Annotated[Path, typer.Argument(help="a wasm policy module (.wasm), or a learned artifact (its folder "
                                              "or a .zip of it)", exists=True, readable=True)],
    as_json: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Store routing code (wasm policy or learned artifact) in the registry for any router.

    Content-addressed and versioned like functions; run it with `wl policy set
    uploaded:NAME[@version]`. Python custom: policies are never uploaded: they run arbitrary
    code in the router, so they stay a local admin option."""
    _check_name(name, "policy")
    if path.is_dir():
        data = _zip_artifact(path)
    elif path.suffix == ".py":
        _fail("a Python policy runs arbitrary code in the router, so it is not uploaded: build it as a wasm "
              "policy (examples/policies/wasm) or run it on the router's host with custom:PATH.py", 2)
    else:
        data = path.read_bytes()
    client = _client(url, token)
    response = _admin_call(client._admin, "POST", f"/admin/policies/{name}", ok=(200, 201),
                           files={"code": (path.name, data, "application/octet-stream")})
    meta = response.json()
    if as_json:
        _print_json(meta)
        return
    console.print(f"uploaded policy [bold]{escape(name)}[/] version {meta.get('version')} "
                  f"({meta.get('config', {}).get('kind')}, {meta.get('size', 0) / 1024:.1f} KB, sha256 "
                  f"{str(meta.get('sha256', ''))[:12]}); run it with: wl policy set uploaded:{escape(name)}",
                  highlight=False)


def _zip_artifact(folder: Path) -> bytes:
    import io
    import zipfile

    missing = [f for f in ("spec.json", "weights.npz") if not (folder / f).is_file()]
    if missing:
        _fail(f"{folder}: not a learned artifact folder (missing {', '.join(missing)})", 2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member in ("spec.json", "weights.npz"):
            archive.write(folder / member, member)
    return buffer.getvalue()


@policy_app.command("ls")
def policy_ls(as_json: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """List uploaded policies (latest version of each)."""
    client = _client(url, token)
    policies = _admin_call(client._admin, "GET", "/admin/policies").json()
    if as_json:
        _print_json(policies)
        return
    if not policies:
        console.print("no policies uploaded (wl policy upload NAME FILE)")
        return
    rows = [[p["name"], str(p["version"]), str(p.get("config", {}).get("kind")), f"{p.get('size', 0) / 1024:,.1f} KB",
             p["sha256"][:12], p.get("created_at", "")] for p in policies]
    _print_rows(["name", "version", "kind", "size", "sha256", "uploaded"], rows, {"version", "size"})


# ---------------------------------------------------------------------------- serve wrappers
def _serve_commands() -> None:
    """`wl registry|node|router serve`: the components' own typer commands (their modules import
    only typer at the top, so this costs `wl` nothing)."""
    from wlruntime.node.__main__ import serve as node_serve
    from wlruntime.registry.__main__ import serve as registry_serve
    from wlruntime.router.__main__ import serve as router_serve

    registry_app.command("serve")(registry_serve)
    node_app.command("serve")(node_serve)
    router_app.command("serve")(router_serve)


_serve_commands()


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
    app.command("rm")(rm)
    app.command("ls")(ls)
    app.command("logs")(logs)
    app.command("run")(run)
    app.command("new")(new)
    app.command("build")(build)
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
