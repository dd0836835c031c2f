"""End-to-end benchmark of the live platform on loopback: warm latency and throughput through the
router, cold-start latency through the router (code cached on the node), and the router's
overhead against a bare FastAPI echo endpoint measured in the same run.

    .venv/bin/python bench/bench_e2e.py [--nodes 2] [--repeats 3] [--duration 5] [--connections 16]

Load generator: wrk (Debian package `wrk`, a separate C process, so the generator is not the
bottleneck) with a Lua script that POSTs a small body. Measured:

- warm latency p50/p99: 1 connection, sequential requests, echo function (C, ABI 1);
- throughput: ``--connections`` connections, one wrk thread;
- the same two against a bare FastAPI app (uvicorn + httptools + uvloop, the router's stack)
  whose handler returns the body: the ratio is what the router and the node add over the
  cheapest possible HTTP answer from the same Python stack;
- a node's ``Do(Invoke)`` alone over gRPC (Python client, sequential): the part of the
  router's latency that is the node's;
- cold start through the router: a policy that kills instances right after use
  (``fixed_ttl:ttl_ms=1``) makes every request spawn a new instance; the code and its
  compiled artifact stay cached on the node, so this is the cold start wl pays in steady
  state. wrk sends one request every 80 ms on one connection (its Lua ``delay``); compared
  with warm requests at the same pace (an idle machine answers a lone request slower than a
  back-to-back stream: processes and threads wake up) and with the bare FastAPI app at that
  pace, plus the router's spawn wait (X-WL-Wait-Ms: arrival to execution start, read by the
  Lua script).

Each measurement is repeated ``--repeats`` times (interleaved) and the median is printed.

``--router-logic [--baseline DIR]``: only the router's own work per request, in-process and
without sockets (the real Router on the real clock, the default loop, two in-process nodes
that answer at once, 16 concurrent callers, the invocation log as the HTTP handler keeps it):
CPU µs per request, in child processes alternating this tree and ``DIR`` (another tree, e.g.
``git archive d16f7dd``), medians and minima of ``--rounds`` rounds of 8,000 requests. On a
busy shared machine this resolves differences that the end-to-end CPU figures cannot.

``--side-by-side DIR``: the whole platform of this tree and of ``DIR`` up at the same time (one
child process each), wrk on both at once in ``--rounds`` rounds of ``--duration`` seconds, with
``--policy``: CPU µs per invocation of each router and of its nodes, per-round ratios. Both
saturating (``--connections``) and paced (the same connections, a request every
``SIDE_PACE_MS`` on each, so both platforms serve the same rate: at saturation the platform
that gets more of the shared CPU batches more per DoStream write and pays less per request).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if os.environ.get("WL_BENCH_TREE"):  # --router-logic's child for another tree: its wlruntime first
    sys.path.insert(0, os.environ["WL_BENCH_TREE"])

from wlruntime.platform import Child, Platform, free_port
from wlruntime.proto import node_pb2 as pb

ECHO_WASM = ROOT / "examples" / "build" / "echo.wasm"
BODY = b"hello, wl! " * 4

BARE_APP = '''
import sys
from fastapi import FastAPI, Request
from fastapi.responses import Response
import uvicorn

app = FastAPI()

@app.post("/echo")
async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")

@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            access_log=False, log_level="warning")
'''

LUA = '''
wrk.method = "POST"
wrk.body = "{body}"
wrk.headers["Content-Type"] = "application/octet-stream"
'''

# One request every PACE_MS; collects the router's X-WL-Wait-Ms and X-WL-Cold (one wrk thread).
PACE_MS = 80
LUA_PACED = LUA + '''
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) waits, cold = {{}}, 0 end
function delay() return {pace} end
function response(status, headers, body)
  local wait = headers["x-wl-wait-ms"] or headers["X-WL-Wait-Ms"]
  if wait then waits[#waits + 1] = tonumber(wait) end
  if (headers["x-wl-cold"] or headers["X-WL-Cold"]) == "1" then cold = cold + 1 end
end
function done(summary, latency, requests)
  local all, colds = {{}}, 0
  for _, thread in ipairs(threads) do
    for _, w in ipairs(thread:get("waits")) do all[#all + 1] = w end
    colds = colds + thread:get("cold")
  end
  table.sort(all)
  if #all > 0 then io.write(string.format("WAIT_P50 %f\\n", all[math.floor((#all + 1) / 2)])) end
  io.write(string.format("COLD %d OF %d\\n", colds, #all))
end
'''


def parse_wrk(output: str) -> dict[str, float]:
    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    out: dict[str, float] = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE):
        out[f"p{pct}_ms"] = ms(value, unit)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None or "p50_ms" not in out:
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    out["rps"] = float(rps.group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    if bad or errors:
        raise RuntimeError(f"wrk saw failed requests:\n{output}")
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, script: Path, connections: int, duration: float,
        pids: dict[str, int] | None = None) -> dict[str, float]:
    """Run wrk; with ``pids`` also the CPU µs each process used per request."""
    before = {name: cpu_seconds(pid) for name, pid in (pids or {}).items()}
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(script), url]
    result = subprocess.run(command,
                            capture_output=True, text=True, timeout=duration + 60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stdout} {result.stderr}")
    parsed = parse_wrk(result.stdout)
    requests = int(re.search(r"(\d+) requests in", result.stdout).group(1))
    for name, pid in (pids or {}).items():
        parsed[f"{name} cpu us"] = (cpu_seconds(pid) - before[name]) / max(1, requests) * 1e6
    return parsed


async def node_do_latency(address: str, instance_function: str, n: int, token: str) -> float:
    """p50 of Do(Invoke) on one instance, sequential, from a Python gRPC client (ms)."""
    from wlruntime.auth import InternalAuth
    from wlruntime.proto import node_pb2_grpc

    async with InternalAuth(token=token).aio_channel(address) as channel:  # the platform's nodes need it
        stub = node_pb2_grpc.NodeStub(channel)
        spawned = await stub.Spawn(pb.SpawnRequest(function=instance_function))
        request = pb.DoRequest(instance_id=spawned.instance_id, invoke=pb.Invoke(payload=BODY))
        for _ in range(50):
            await stub.Do(request)
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            await stub.Do(request)
            samples.append((time.perf_counter() - t) * 1000.0)
        await stub.Do(pb.DoRequest(instance_id=spawned.instance_id, kill=pb.Kill()))
    return statistics.median(samples)


def paced(url: str, script: Path, duration: float) -> dict[str, float]:
    """wrk on one connection, a request every PACE_MS: p50 round trip (ms), and from the router's
    headers the p50 spawn wait (ms) and the fraction of cold requests (NaN without them)."""
    result = subprocess.run(["wrk", "-t1", "-c1", f"-d{max(1, round(duration))}s", "--latency", "-s", str(script),
                             url], capture_output=True, text=True, timeout=duration + 60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stdout} {result.stderr}")
    parsed = parse_wrk(result.stdout)
    wait = re.search(r"WAIT_P50 ([\d.]+)", result.stdout)
    cold = re.search(r"COLD (\d+) OF (\d+)", result.stdout)
    parsed["wait_ms"] = float(wait.group(1)) if wait else math.nan
    parsed["cold_fraction"] = int(cold.group(1)) / int(cold.group(2)) if cold and int(cold.group(2)) else math.nan
    return parsed


class _InstantNode:
    """A node transport answering every call at once (``--router-logic``; the gRPC stub's names)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stub = self.calls = self.channel = self

    async def Health(self, request, timeout=None):
        return pb.HealthReply(ok=True, node_id=self.name)

    async def Status(self, request, timeout=None):
        return pb.StatusReply(node_id=self.name, memory_capacity_mb=4096)

    async def Spawn(self, request, timeout=None):
        reply = pb.SpawnReply(instance_id=request.instance_id, function=request.function)
        if request.HasField("invoke"):
            reply.invoke.CopyFrom(pb.InvokeResult(request_id=request.invoke.request_id, exec_ms=0.05,
                                                  output=request.invoke.payload))
        return reply

    async def spawn(self, request, timeout=None):   # DoStreamClient.spawn (routers that spawn on the stream)
        return await self.Spawn(request, timeout)

    def in_order(self, payload_bytes=0):
        return False

    async def do(self, request, timeout=None, size=0):
        await asyncio.sleep(0)
        if request.HasField("invoke"):
            return pb.DoReply(instance_id=request.instance_id, invoke=pb.InvokeResult(
                request_id=request.invoke.request_id, exec_ms=0.05, output=request.invoke.payload))
        return pb.DoReply(instance_id=request.instance_id)

    async def close(self, grace=None) -> None:
        return None


async def _router_logic_rounds(rounds: int, policy: str) -> list[float]:
    """CPU µs per request of the router importable here (see ``--router-logic``)."""
    import inspect

    import wlruntime.router.core as core
    from wlruntime.router.state import Function

    if "node_factory" in inspect.signature(core.Router).parameters:
        from wlruntime.router.nodes import NodeRef
        router = core.Router(registry_url="http://registry.invalid", nodes=["n1", "n2"], policy=policy,
                             node_factory=lambda address: NodeRef(address, _InstantNode(address)))
        await router.start(background=False)
    else:  # a tree from before the router split (d16f7dd): its NodeRef is built inside the router
        class Ref(core.NodeRef):
            def __init__(self, address: str) -> None:
                self.address = self.name = address
                self.channel = self.stub = self.calls = _InstantNode(address)
                self.alive, self.capacity_mb, self.free_mb, self.instances = False, 0.0, 0.0, {}
                self.last_error, self.misses = "", 0
        core.NodeRef = Ref
        router = core.Router(registry_url="http://127.0.0.1:9", nodes=["n1", "n2"], policy=policy)
        await router.start()
    router.functions["echo"] = Function("echo", 1, {"memory_mb": 16, "concurrency": 64})
    try:
        from wlruntime.router.http.invocations import InvocationLog
        invocations: Any = InvocationLog()
    except ImportError:  # older trees kept none
        invocations = None

    async def caller(n: int) -> None:
        for i in range(n):
            result = await router.invoke("echo", BODY, {"content_type": "application/octet-stream"}, None)
            if invocations is not None:
                invocations.record("echo", f"i{i}", result)

    await asyncio.gather(*(caller(200) for _ in range(16)))   # warm-up: instances, policy state
    out = []
    for _ in range(rounds):
        t = time.process_time()
        await asyncio.gather(*(caller(500) for _ in range(16)))
        out.append((time.process_time() - t) / 8000 * 1e6)
    return out


def router_logic(rounds: int, policy: str, baseline: Path | None) -> None:
    """``--router-logic``: child processes alternating this tree and ``baseline``."""
    trees = [("this tree", ROOT)] + ([("baseline", baseline.resolve())] if baseline else [])
    results: dict[str, list[float]] = {}
    for label, tree in trees * 2:
        env = dict(os.environ, WL_BENCH_TREE=str(tree), PYTHONPATH=str(tree))
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--router-logic-child",
                              "--rounds", str(rounds), "--policy", policy],
                             capture_output=True, text=True, env=env, cwd=tree, check=True).stdout
        results.setdefault(label, []).extend(float(x) for x in out.split())
    print(f"\nrouter logic alone (in-process, instant nodes, policy {policy}), CPU µs per request:")
    for label, tree in trees:
        v = results[label]
        print(f"  {label:10} median {statistics.median(v):6.1f}  min {min(v):6.1f}  ({tree})")


SIDE_PACE_MS = 20   # --side-by-side's paced runs: per connection (16 connections: ~800 inv/s each)


def _side_by_side_child(args: argparse.Namespace) -> None:
    """One platform of ``--side-by-side``; rounds in step with the other child (the barrier directory
    ``args.side_by_side_child``)."""
    tree, barrier = Path.cwd(), Path(args.side_by_side_child)
    tmp = Path(tempfile.mkdtemp(prefix="wl-side-"))
    scripts = {"saturating": tmp / "post.lua", "paced": tmp / "paced.lua"}
    scripts["saturating"].write_text(LUA.format(body=BODY.decode()))
    scripts["paced"].write_text(LUA.format(body=BODY.decode()) + f"function delay() return {SIDE_PACE_MS} end\n")
    platform = Platform(tmp / "wl", nodes=args.nodes, log_level="warning")
    try:
        platform.start()
        client = platform.client()
        client.deploy("echo", tree / "examples" / "build" / "echo.wasm", {"memory_mb": 16, "concurrency": 64})
        client.set_policy(args.policy)
        url = f"{platform.router_url}/invoke/echo"
        pids = {"router": platform.router.proc.pid, **{f"node{i}": n.proc.pid for i, n in enumerate(platform.nodes)}}
        wrk(url, scripts["saturating"], args.connections, 2.0)   # warm-up: instances, policy state
        for step in range(2 * args.rounds):
            mode = ("saturating", "paced")[step % 2]
            (barrier / f"{os.getpid()}.{step}").touch()
            deadline = time.monotonic() + 120
            while len(list(barrier.glob(f"*.{step}"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            m = wrk(url, scripts[mode], args.connections, args.duration, pids)
            nodes = sum(v for k, v in m.items() if k.startswith("node") and k.endswith(" cpu us"))
            print(f"{mode} {m['rps']:.1f} {m['router cpu us']:.2f} {nodes:.2f}", flush=True)
    finally:
        platform.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def side_by_side(args: argparse.Namespace) -> None:
    """``--side-by-side``: both platforms at once (see the module docstring)."""
    barrier = Path(tempfile.mkdtemp(prefix="wl-side-barrier-"))
    trees = {"this tree": ROOT, "baseline": args.side_by_side.resolve()}
    command = [sys.executable, str(Path(__file__).resolve()), "--side-by-side-child", str(barrier),
               "--rounds", str(args.rounds), "--duration", str(args.duration), "--policy", args.policy,
               "--connections", str(args.connections), "--nodes", str(args.nodes)]
    children = {label: subprocess.Popen(command, cwd=tree, stdout=subprocess.PIPE, text=True,
                                        env=dict(os.environ, WL_BENCH_TREE=str(tree), PYTHONPATH=str(tree)))
                for label, tree in trees.items()}
    rows = {label: [line.split() for line in child.communicate()[0].splitlines()] for label, child in children.items()}
    shutil.rmtree(barrier, ignore_errors=True)
    if any(child.returncode for child in children.values()):
        sys.exit("a side-by-side platform failed (its output is above)")
    print(f"\nside by side, both platforms at once, policy {args.policy}, {args.connections} connections, "
          f"{args.rounds} rounds of {args.duration:.0f} s (medians; now/baseline per round):")
    for mode in ("saturating", "paced"):
        mine = [r for r in rows["this tree"] if r[0] == mode]
        base = [r for r in rows["baseline"] if r[0] == mode]
        for k, what in ((1, "inv/s"), (2, "router µs/inv"), (3, "nodes µs/inv")):
            a, b = [float(r[k]) for r in mine], [float(r[k]) for r in base]
            ratios = sorted(x / y for x, y in zip(a, b, strict=True))
            print(f"  {mode:10} {what:14} this {statistics.median(a):8.1f}  baseline {statistics.median(b):8.1f}"
                  f"  ratio median {statistics.median(ratios):.2f} (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2, help="handler nodes (default 2: one per core)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16, help="connections for the throughput runs")
    parser.add_argument("--paced-duration", type=float, default=4.0,
                        help=f"seconds per paced run (a request every {PACE_MS} ms)")
    parser.add_argument("--router-logic", action="store_true",
                        help="only the router's own CPU per request, in-process (see the module docstring)")
    parser.add_argument("--baseline", type=Path, help="with --router-logic: another tree to alternate with")
    parser.add_argument("--rounds", type=int, default=10,
                        help="with --router-logic / --side-by-side: rounds per child process")
    parser.add_argument("--policy", default="fixed_ttl",
                        help="with --router-logic / --side-by-side: the router's policy")
    parser.add_argument("--router-logic-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side-by-side", type=Path, metavar="DIR",
                        help="this tree's platform and DIR's at the same time (see the module docstring)")
    parser.add_argument("--side-by-side-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side_by_side_child:
        _side_by_side_child(args)
        return
    if args.side_by_side:
        side_by_side(args)
        return
    if args.router_logic_child:
        print(" ".join(f"{x:.3f}" for x in asyncio.run(_router_logic_rounds(args.rounds, args.policy))))
        return
    if args.router_logic:
        router_logic(args.rounds, args.policy, args.baseline)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    if not ECHO_WASM.is_file():
        sys.exit(f"{ECHO_WASM} is missing: make -C examples")

    tmp = Path(tempfile.mkdtemp(prefix="wl-bench-"))
    script = tmp / "post.lua"
    script.write_text(LUA.format(body=BODY.decode()))
    paced_script = tmp / "paced.lua"
    paced_script.write_text(LUA_PACED.format(body=BODY.decode(), pace=PACE_MS))
    bare_port = free_port()
    (tmp / "bare_app.py").write_text(BARE_APP)
    bare = Child("bare-fastapi", [sys.executable, str(tmp / "bare_app.py"), str(bare_port)], tmp / "bare.log",
                 dict(os.environ), None)
    platform = Platform(tmp / "wl", nodes=args.nodes, log_level="warning")
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    try:
        platform.start()
        client = platform.client()
        client.deploy("echo", ECHO_WASM, {"memory_mb": 16, "concurrency": 64})
        client.deploy("coldecho", ECHO_WASM, {"memory_mb": 16, "concurrency": 64})
        for _ in range(20):
            client.invoke("echo", BODY)
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{bare_port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"bare FastAPI app did not start: {bare.log_tail()}") from None
                time.sleep(0.1)
        platform_pids = {"router": platform.router.proc.pid,
                         **{f"node-{i + 1}": n.proc.pid for i, n in enumerate(platform.nodes)}}
        router_url = f"{platform.router_url}/invoke/echo"
        bare_url = f"http://127.0.0.1:{bare_port}/echo"
        wrk(router_url, script, args.connections, 2.0)  # warm-up: instances for the throughput runs
        wrk(bare_url, script, args.connections, 1.0)
        for rep in range(args.repeats):
            print(f"repeat {rep + 1}/{args.repeats}...", file=sys.stderr, flush=True)
            targets = (("router", router_url, platform_pids), ("bare", bare_url, {"bare": bare.proc.pid}))
            for label, url, pids in targets:
                one = wrk(url, script, 1, args.duration)
                add(f"{label} p50 ms", one["p50_ms"])
                add(f"{label} p99 ms", one["p99_ms"])
                many = wrk(url, script, args.connections, args.duration, pids)
                add(f"{label} rps", many["rps"])
                add(f"{label} loaded p50 ms", many["p50_ms"])
                for name in pids:
                    add(f"{name} cpu us", many[f"{name} cpu us"])
            add("node Do p50 ms", asyncio.run(
                node_do_latency(platform.node_addresses[0], "echo", 1000, platform.token)))
            # Cold vs warm at the same pace (a request every PACE_MS), and the bare app at that pace.
            add("paced warm p50 ms", paced(router_url, paced_script, args.paced_duration)["p50_ms"])
            add("paced bare p50 ms", paced(bare_url, paced_script, args.paced_duration)["p50_ms"])
            client.set_policy("fixed_ttl:ttl_ms=1")
            cold = paced(f"{platform.router_url}/invoke/coldecho", paced_script, args.paced_duration)
            client.set_policy("default")
            add("cold round trip p50 ms", cold["p50_ms"])
            add("cold spawn wait p50 ms", cold["wait_ms"])
            add("cold fraction", cold["cold_fraction"])
    finally:
        platform.stop()
        bare.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\nwl end-to-end on loopback ({os.cpu_count()} cores, {args.nodes} node(s), echo function, "
          f"{len(BODY)}-byte body, wrk -t1; medians of {args.repeats} repeats)\n")
    print(f"{'':34}{'router':>12}{'bare FastAPI':>14}{'ratio':>9}")
    for key, label in (("p50 ms", "warm latency p50 (1 conn), ms"), ("p99 ms", "warm latency p99 (1 conn), ms"),
                       ("rps", f"throughput ({args.connections} conns), inv/s"),
                       ("loaded p50 ms", f"latency p50 ({args.connections} conns), ms")):
        r, b = med[f"router {key}"], med[f"bare {key}"]
        print(f"{label:34}{r:12.2f}{b:14.2f}{r / b:8.2f}x")
    print("\nCPU per invocation in the throughput runs (all processes share the machine's cores):")
    for name in [k[:-7] for k in med if k.endswith(" cpu us")]:
        us = med[f"{name} cpu us"]
        print(f"  {name:10} {us:8.0f} µs  (alone, one core would serve ~{1e6 / us:,.0f} inv/s)")
    print(f"\nnode Do(Invoke) alone (gRPC from a Python client, sequential) p50: {med['node Do p50 ms']:.2f} ms "
          f"(the router's warm p50 is {med['router p50 ms']:.2f} ms)")
    print(f"\ncold start through the router (code cached on the node), one request every {PACE_MS} ms (wrk):")
    print(f"  cold round trip p50 {med['cold round trip p50 ms']:.2f} ms vs warm round trip p50 "
          f"{med['paced warm p50 ms']:.2f} ms at the same pace: the cold start adds "
          f"{med['cold round trip p50 ms'] - med['paced warm p50 ms']:.2f} ms "
          f"({med['cold round trip p50 ms'] / med['paced warm p50 ms']:.2f}x); the bare FastAPI echo at "
          f"that pace: {med['paced bare p50 ms']:.2f} ms")
    print(f"  router's spawn wait (arrival to execution start) p50 {med['cold spawn wait p50 ms']:.2f} ms; "
          f"{med['cold fraction']:.0%} of those requests were cold")
    print("\ntargets: warm p50 <= 2 ms, >= 1500 inv/s, cold start p50 <= 5 ms through the router")


if __name__ == "__main__":
    main()
