"""``make demo``'s live-platform section: start wl on loopback (registry, router, 2 nodes),
deploy the example functions, invoke each cold then warm, show the difference and a few of the
router's metrics, and stop.

    from rich.console import Console
    from wl.demo_platform import run_platform_demo
    run_platform_demo(Console())
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BUILD = EXAMPLES / "build"

# name -> (request, language); the Python components are opt-in (18 MB each: validating and
# compiling them takes tens of seconds the first time).
REQUESTS: dict[str, tuple[bytes, str]] = {
    "echo": (b"hello, wl", "C"),
    "json_transform": (b'{"city": "paris", "temp": 21}', "C"),
    "cpu_work": (b"20000", "C"),
    "hello": (b"demo", "AssemblyScript"),
    "reverse": (b"stressed", "AssemblyScript"),
    "stats": (b"3 1 4 1 5 9 2 6", "Rust"),
    "counter": (b"", "Python"),
    "wordcount": (b"the cat and the hat", "Python"),
}
COMPONENTS = ("counter", "wordcount")
WARM_CALLS = 20


def _configs(include_components: bool) -> dict[str, dict[str, Any]]:
    found = {}
    for name in REQUESTS:
        if name in COMPONENTS and not include_components:
            continue
        configs = list(EXAMPLES.glob(f"*/{name}.json"))
        if configs and (BUILD / f"{name}.wasm").is_file():
            found[name] = json.loads(configs[0].read_text())
    return found


def _metric(text: str, name: str, **labels: str) -> float:
    from wlruntime.router.client import metric_value

    return metric_value(text, name, **labels)


def run_platform_demo(console: Console, *, nodes: int = 2, include_components: bool = False,
                      data_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the demo, printing as it goes; returns the measured numbers (for tests/scripts)."""
    from wlruntime.platform import Platform

    configs = _configs(include_components)
    if not configs:
        console.print("[yellow]no built examples found: run `make -C examples` first[/]")
        return {}
    with tempfile.TemporaryDirectory(prefix="wl-demo-") as tmp:
        platform = Platform(Path(data_dir) if data_dir else Path(tmp), nodes=nodes, policy="default",
                            log_level="warning")
        t = time.perf_counter()
        with console.status("starting registry, router and nodes..."):
            platform.start()
        console.print(f"wl is up in {time.perf_counter() - t:.1f} s: router {platform.router_url}, "
                      f"{nodes} wasmtime nodes, policy [bold]default[/] (logs in {platform.log_dir})")
        try:
            return _demo(console, platform, configs, include_components)
        finally:
            with console.status("stopping..."):
                platform.stop()


def _demo(console: Console, platform: Any, configs: dict[str, dict[str, Any]], include_components: bool) -> dict:
    wl = platform.client(timeout=300)
    with console.status(f"deploying {len(configs)} example functions..."):
        for name, config in configs.items():
            wl.deploy(name, BUILD / f"{name}.wasm", config)
    table = Table(title="cold start vs warm invocation, through the router (client-side round trip)",
                  title_justify="left", header_style="bold")
    for col in ("function", "language", "cold (ms)", "of which spawn (ms)", f"warm p50 of {WARM_CALLS} (ms)",
                "cold ÷ warm", "output"):
        numeric = "ms" in col or "÷" in col
        table.add_column(col, justify="right" if numeric else "left", no_wrap=not numeric, overflow="ellipsis",
                         max_width=28 if col == "output" else None)
    results: dict[str, Any] = {}
    for name in configs:
        request, language = REQUESTS[name]
        cold = wl.invoke(name, request)
        warm = [wl.invoke(name, request) for _ in range(WARM_CALLS)]
        if not cold.ok or not all(w.ok for w in warm):
            bad = cold if not cold.ok else next(w for w in warm if not w.ok)
            table.add_row(name, language, "-", "-", "-", "-", f"[red]{bad.error}: {bad.message[:40]}[/]")
            continue
        warm_ms = statistics.median(w.elapsed_ms for w in warm)
        output = warm[-1].text.strip().replace("\n", " ")
        results[name] = {"cold_ms": cold.elapsed_ms, "spawn_ms": cold.wait_ms, "warm_ms": warm_ms,
                         "cold_flag": cold.cold, "warm_flags": [w.cold for w in warm]}
        table.add_row(name, language, f"{cold.elapsed_ms:.1f}", f"{cold.wait_ms or 0:.1f}", f"{warm_ms:.2f}",
                      f"{cold.elapsed_ms / warm_ms:.0f}×", output)
    console.print(table)
    console.print("The first call of each function waited for a cold start (X-WL-Cold: 1: the node fetched "
                  "the code from the registry, loaded the artifact compiled at deploy and instantiated it); "
                  "the next ones reused the warm instance. "
                  "Lambda's cold starts are 100 ms and up.")
    if not include_components:
        console.print("[dim]Python components (counter, wordcount; 18 MB each) are skipped here: "
                      "wl deploy counter examples/build/counter.wasm --config examples/python/counter.json[/]")

    # The same policy decides as in the simulator; swap it live, without a restart.
    wl.set_policy("fixed_ttl:ttl_ms=600000")
    swapped = wl.invoke("echo", b"after the swap") if "echo" in configs else None
    wl.set_policy("default")
    if swapped is not None:
        console.print(f"policy swapped live to fixed_ttl and back: echo still answers "
                      f"({swapped.elapsed_ms:.2f} ms, warm={not swapped.cold})")

    text = wl.metrics()
    invocations = _metric(text, "wl_router_invocations_total", outcome="ok")
    colds = _metric(text, "wl_router_cold_starts_total")
    decisions = _metric(text, "wl_router_policy_decision_seconds_count", decision="route")
    decision_s = _metric(text, "wl_router_policy_decision_seconds_sum", decision="route")
    instances = {s: _metric(text, "wl_router_instances", state=s) for s in ("idle", "busy", "starting")}
    metrics = Table(title=f"router metrics ({platform.router_url}/metrics)", title_justify="left",
                    show_header=False)
    metrics.add_row("invocations answered ok", f"{invocations:.0f}")
    metrics.add_row("cold starts", f"{colds:.0f}")
    metrics.add_row("policy route decisions, mean time", f"{decisions:.0f}, "
                    f"{(decision_s / decisions * 1e6) if decisions else 0:.1f} µs")
    metrics.add_row("live instances", ", ".join(f"{n:.0f} {s}" for s, n in instances.items()))
    for node in wl.state()["nodes"]:
        metrics.add_row(f"node {node['name']}", f"{node['instances']} instances, {node['free_mb']:.0f} of "
                        f"{node['capacity_mb']:.0f} MB free")
    console.print(metrics)
    wl.close()
    return results


if __name__ == "__main__":
    import sys

    run_platform_demo(Console(), include_components="--components" in sys.argv)
