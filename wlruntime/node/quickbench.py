"""Quick node measurements: cold starts (uncached / disk / memory), warm invokes, concurrency.

    python -m wlruntime.node.quickbench [--samples N] [--invokes N] [--seconds S] [--rounds R]
                                        [--compare-with DIR]

Starts a real registry and real node processes on loopback and talks gRPC to them, like the
router does. Prints medians (and p99 where there are enough samples) measured in this run.
Not the project benchmark (bench/ has that); this is the node's own sanity check, and the
source of the numbers in its docs.

- uncached cold start: every sample is a different sha256 (the same echo module with a distinct
  custom section appended), so each spawn downloads and compiles;
- disk cold start: a fresh node process spawning those same versions loads compiled artifacts
  from the cache folder the first node filled;
- memory cold start: spawning a version this node already holds (a new instance, no compile);
- warm invoke: Do(Invoke) on an idle instance, sequential: the client's round trip, the exec
  time inside the node's runner, and the node process's CPU time per invocation;
- concurrency: K concurrent callers (asyncio, one process), each with its own instance, for S
  seconds: invocations/s and node CPU per invocation, for a trivial function and, when
  examples/build/cpu_work.wasm exists, a CPU-bound one (wasm runs without the GIL).

``--compare-with DIR`` also starts nodes from the ``wlruntime`` package in DIR (e.g. an older
commit: ``git archive <rev> wlruntime | tar -x -C DIR``) against the same registry and measures
the warm and concurrency cases on both, interleaved in ``--rounds`` rounds so background load
hits both alike, with the ratios baseline / this tree.

``--grpc-floor`` measures only what gRPC itself costs a Python server like the node (grpc.aio
on uvloop): server CPU per trivial unary call (bytes in, the same bytes out) against per
message on a bidirectional stream, 4 concurrent callers, interleaved rounds. The node's
Do(Invoke) is a unary call; the difference is what a streaming Invoke would save per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "build"
WAT_ECHO = REPO / "tests" / "fixtures" / "wat" / "echo.wat"
WAT_COUNTER = REPO / "tests" / "fixtures" / "wat" / "counter.component.wat"
TOKEN = "quickbench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_custom_section(wasm: bytes, tag: str) -> bytes:
    """Same code, different bytes (and sha256): append a custom section."""
    name = b"wl-bench"
    payload = bytes([len(name)]) + name + tag.encode()
    return wasm + b"\x00" + _leb128(len(payload)) + payload


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _start(args: list[str], ready: str, log: Path, cwd: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``python <args>`` (``-m wlruntime...`` resolves the package from ``cwd`` first)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WL_")}
    with open(log, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=log_file, text=True,
                                env=env, cwd=cwd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.2)[0]:
            line = proc.stdout.readline()
            if ready in line:
                return proc, line
        if proc.poll() is not None:
            break
    raise RuntimeError(f"{args[:3]} did not start: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _summary(values: list[float]) -> str:
    values = sorted(values)
    text = f"median {statistics.median(values):8.3f} ms"
    if len(values) >= 100:
        text += f"   p99 {values[int(len(values) * 0.99) - 1]:8.3f} ms"
    return text + f"   (n={len(values)})"


def _median_ratio(this: list[tuple[float, float]], base: list[tuple[float, float]]) -> float:
    """Median rate of ``this`` over median rate of ``base`` ((rate, cpu) samples)."""
    return statistics.median(r for r, _ in this) / statistics.median(r for r, _ in base)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m wlruntime.node.quickbench")
    parser.add_argument("--samples", type=int, default=30, help="cold starts per kind (default 30)")
    parser.add_argument("--invokes", type=int, default=2000, help="warm invokes (default 2000)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per concurrency level (default 3)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved rounds for warm and concurrency cases (default 4)")
    parser.add_argument("--compare-with", type=Path, metavar="DIR",
                        help="also measure nodes run from the wlruntime package in DIR (a baseline)")
    parser.add_argument("--grpc-floor", action="store_true",
                        help="only measure gRPC's own server cost: unary call vs stream message")
    args = parser.parse_args()
    if args.compare_with is not None and not (args.compare_with / "wlruntime" / "node").is_dir():
        parser.error(f"--compare-with {args.compare_with}: no wlruntime/node package in that folder")
    if args.grpc_floor:
        _grpc_floor(args)
        return

    import httpx
    import wasmtime

    from wlruntime.node.client import connect
    from wlruntime.proto import node_pb2 as pb
    from wlruntime.registry.client import RegistryClient

    work = Path(tempfile.mkdtemp(prefix="wl-quickbench-"))
    reg_port = _free_port()
    registry, _ = _start(["-m", "wlruntime.registry", "--port", str(reg_port), "--data-dir", str(work / "reg"),
                          "--token", TOKEN, "--log-level", "warning"], "data in", work / "registry.log")
    url = f"http://127.0.0.1:{reg_port}"
    for _ in range(100):
        try:
            httpx.get(url + "/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    procs = [registry]
    try:
        client = RegistryClient(url, TOKEN)
        echo_path = EXAMPLES / "echo.wasm"
        echo = echo_path.read_bytes() if echo_path.is_file() else bytes(wasmtime.wat2wasm(WAT_ECHO.read_text()))
        echo_source = "examples/build/echo.wasm (C)" if echo_path.is_file() else "tests/fixtures/wat/echo.wat"
        for i in range(args.samples):
            client.upload(f"echo-{i}", _with_custom_section(echo, str(i)), {"abi": "wasi-command"})
        client.upload("echo", echo, {"abi": "wasi-command", "memory_mb": 16})
        client.upload("counter", bytes(wasmtime.wat2wasm(WAT_COUNTER.read_text())),
                      {"abi": "component", "memory_mb": 16})
        cpu_path = EXAMPLES / "cpu_work.wasm"
        if cpu_path.is_file():
            client.upload("cpu", cpu_path.read_bytes(), {"abi": "wasi-command", "memory_mb": 16})

        def node(*extra: str, source: Path | None = None, cache: Path | None = None):
            cache = cache or work / ("cache" if source is None else "baseline-cache")
            proc, line = _start(["-m", "wlruntime.node", "--registry", url, "--port", "0", "--cache-dir",
                                 str(cache), "--memory-mb", "100000", "--log-level", "warning", *extra],
                                "listening on", work / f"node-{len(procs)}.log", cwd=source)
            procs.append(proc)
            return proc, line.split("listening on ")[1].strip()

        print(f"wl node quickbench: {os.cpu_count()} cores, function {echo_source}, "
              f"load average {os.getloadavg()[0]:.1f}")
        print("cold start (Spawn, as measured by the client; node-side breakdown in parentheses)")
        proc, address = node()
        channel, stub = connect(address)
        rows = {"uncached": [], "disk": [], "memory": []}
        parts = {"uncached": [], "disk": [], "memory": []}

        def spawn(kind: str, function: str, on=None) -> str:
            t = time.perf_counter()
            reply = (on or stub).Spawn(pb.SpawnRequest(function=function, version="1"))
            rows[kind].append((time.perf_counter() - t) * 1000)
            parts[kind].append((reply.fetch_ms, reply.compile_ms, reply.instantiate_ms))
            assert reply.compile_source == {"uncached": "compiled", "memory": "memory"}.get(kind, "disk"), reply
            return reply.instance_id

        for i in range(args.samples):
            spawn("uncached", f"echo-{i}")
        for _ in range(args.samples):
            spawn("memory", "echo-0")
        _stop(proc)
        channel.close()
        proc, address = node()
        channel, stub = connect(address)
        baseline_stub = None
        if args.compare_with is not None:  # a fresh baseline node on the same cache, spawns interleaved
            rows["disk, baseline"], parts["disk, baseline"] = [], []
            baseline_proc, baseline_address = node(source=args.compare_with, cache=work / "cache")
            baseline_channel, baseline_stub = connect(baseline_address)
        for i in range(args.samples):
            spawn("disk", f"echo-{i}")
            if baseline_stub is not None:
                spawn("disk, baseline", f"echo-{i}", baseline_stub)
        if baseline_stub is not None:
            baseline_channel.close()
            _stop(baseline_proc)
        for kind, times in rows.items():
            fetch, compile_, inst = (statistics.median(p) for p in zip(*parts[kind]))
            print(f"  {kind:14s} {_summary(times)}   (fetch {fetch:.2f}, compile/load {compile_:.2f}, "
                  f"instantiate {inst:.3f})")
        uncached = statistics.median(rows["uncached"])
        print(f"  ratio uncached/disk {uncached / statistics.median(rows['disk']):.1f}x, "
              f"uncached/memory {uncached / statistics.median(rows['memory']):.1f}x")
        if baseline_stub is not None:
            ratio = statistics.median(rows['disk, baseline']) / statistics.median(rows['disk'])
            print(f"  disk: baseline / this tree {ratio:.2f}x")
        channel.close()

        # Warm and concurrency cases: this tree's node(s), and the baseline's when asked.
        targets = {"this tree": [(proc, address), node()]}
        if args.compare_with is not None:
            targets["baseline"] = [node(source=args.compare_with), node(source=args.compare_with)]
        addresses = {name: [a for _, a in nodes] for name, nodes in targets.items()}
        pids = {name: [p.pid for p, _ in nodes] for name, nodes in targets.items()}
        asyncio.run(_warm_and_concurrency(args, addresses, pids, cpu_path.is_file()))
    finally:
        for proc in reversed(procs):
            _stop(proc)


async def _warm_and_concurrency(args: argparse.Namespace, addresses: dict[str, list[str]],
                                pids: dict[str, list[int]], with_cpu_work: bool) -> None:
    import grpc

    from wlruntime.node.client import CHANNEL_OPTIONS
    from wlruntime.proto import node_pb2 as pb
    from wlruntime.proto import node_pb2_grpc

    channels = {name: [grpc.aio.insecure_channel(a, options=CHANNEL_OPTIONS) for a in addrs]
                for name, addrs in addresses.items()}
    stubs = {name: [node_pb2_grpc.NodeStub(c) for c in chans] for name, chans in channels.items()}
    names = list(stubs)

    def rounds():
        """Each round visits every target, in alternating order (background load hits all alike)."""
        for r in range(args.rounds):
            yield r, (names if r % 2 == 0 else names[::-1])

    async def spawn(stub, function: str) -> str:
        return (await stub.Spawn(pb.SpawnRequest(function=function, version="1"))).instance_id

    print(f"warm invoke (Do(Invoke) round trip from an asyncio client, sequential; exec = time inside the "
          f"node's runner; cpu = node process CPU per invocation; medians over {args.rounds} interleaved rounds)")
    for function, payload, abi in (("echo", b"x" * 100, "ABI 1"), ("counter", b"x" * 100, "ABI 2")):
        ids = {name: await spawn(stubs[name][0], function) for name in names}
        samples = {name: {"rtt": [], "exec": [], "cpu": []} for name in names}
        per_round = max(1, args.invokes // args.rounds)
        for _, order in rounds():
            for name in order:
                stub, pid = stubs[name][0], pids[name][0]
                request = pb.DoRequest(instance_id=ids[name], invoke=pb.Invoke(payload=payload, request_id="q",
                                                                                metadata={"content_type": "x"}))
                cpu0 = _cpu_seconds(pid)
                for _ in range(per_round):
                    t = time.perf_counter()
                    reply = await stub.Do(request)
                    samples[name]["rtt"].append((time.perf_counter() - t) * 1000)
                    samples[name]["exec"].append(reply.invoke.exec_ms)
                    assert reply.invoke.error == pb.ERROR_KIND_NONE, reply
                samples[name]["cpu"].append((_cpu_seconds(pid) - cpu0) / per_round * 1e6)
        for name in names:
            row = samples[name]
            print(f"  {function:8s} {abi}  {name:9s} rtt {_summary(row['rtt'])}   exec median "
                  f"{statistics.median(row['exec']):.3f} ms   cpu {statistics.median(row['cpu']):5.0f} us/inv")
        if len(names) > 1:
            this, base = (statistics.median(samples[n]["rtt"]) for n in names)
            cpu_this, cpu_base = (statistics.median(samples[n]["cpu"]) for n in names)
            print(f"  {function:8s} {abi}  baseline / this tree: rtt {base / this:.2f}x, "
                  f"node cpu {cpu_base / cpu_this:.2f}x")
        for name in names:
            await stubs[name][0].Do(pb.DoRequest(instance_id=ids[name], kill=pb.Kill()))

    loads = [("echo", b"x" * 100, "trivial (echo)")]
    if with_cpu_work:
        loads.append(("cpu", b"2000", "CPU-bound (cpu_work n=2000)"))
    print(f"concurrency (K concurrent callers, one instance each, {args.seconds:g} s per level and round; "
          "inv/s and node CPU per invocation)")

    async def throughput(name: str, nodes: int, function: str, payload: bytes, k: int) -> tuple[float, float]:
        targets = [(stubs[name][i % nodes], pids[name][i % nodes]) for i in range(k)]
        ids = [await spawn(stub, function) for stub, _ in targets]
        count = 0
        stop = time.monotonic() + args.seconds

        async def loop(j: int) -> None:
            nonlocal count
            stub = targets[j][0]
            request = pb.DoRequest(instance_id=ids[j], invoke=pb.Invoke(payload=payload))
            while time.monotonic() < stop:
                await stub.Do(request)
                count += 1

        used = sorted({pid for _, pid in targets})
        cpu0 = sum(_cpu_seconds(pid) for pid in used)
        t = time.monotonic()
        await asyncio.gather(*(loop(j) for j in range(k)))
        elapsed = time.monotonic() - t
        cpu = sum(_cpu_seconds(pid) for pid in used) - cpu0
        for (stub, _), iid in zip(targets, ids):
            await stub.Do(pb.DoRequest(instance_id=iid, kill=pb.Kill()))
        return count / elapsed, cpu / max(count, 1) * 1e6

    for function, payload, label in loads:
        for nodes, levels in ((1, (1, 4, 8)), (2, (2, 8))):
            results = {name: {k: [] for k in levels} for name in names}
            for _, order in rounds():
                for name in order:
                    for k in levels:
                        results[name][k].append(await throughput(name, nodes, function, payload, k))
            for name in names:
                cells = "  ".join(f"K={k}: {statistics.median(r for r, _ in v):6.0f}/s "
                                  f"({statistics.median(c for _, c in v):4.0f} us)" for k, v in results[name].items())
                print(f"  {label}, {nodes} node{'s' if nodes > 1 else ' '}  {name:9s} {cells}")
            if len(names) > 1:
                this, base = names
                ratios = "  ".join(f"K={k}: {_median_ratio(results[this][k], results[base][k]):.2f}x"
                                   for k in levels)
                print(f"  {label}, {nodes} node{'s' if nodes > 1 else ' '}  this tree / baseline inv/s: {ratios}")
    for chans in channels.values():
        for channel in chans:
            await channel.close()


_FLOOR_SERVER = """
import asyncio, sys
import grpc, uvloop

def same(data):
    return data

async def unary(request, context):
    return request

async def stream(requests, context):
    async for message in requests:
        yield message

async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floor.Floor", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, same, same),
        "Stream": grpc.stream_stream_rpc_method_handler(stream, same, same)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()

uvloop.run(main())
"""


def _grpc_floor(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="wl-grpc-floor-"))
    script = work / "floor_server.py"
    script.write_text(_FLOOR_SERVER)
    proc, line = _start([str(script)], "listening on", work / "server.log")
    try:
        results = asyncio.run(_grpc_floor_rounds(args, line.split("listening on ")[1].strip(), proc.pid))
    finally:
        _stop(proc)
    print(f"gRPC floor (grpc.aio server on uvloop, 100-byte messages, 4 concurrent callers, medians of "
          f"{args.rounds} rounds of {args.seconds:g} s; load average {os.getloadavg()[0]:.1f})")
    for kind in ("unary", "stream"):
        rate, cpu = (statistics.median(v) for v in zip(*results[kind]))
        print(f"  {kind:6s} {rate:7.0f} calls/s   server cpu {cpu:5.0f} us per "
              f"{'call' if kind == 'unary' else 'message'}")
    ratio = statistics.median(c for _, c in results["unary"]) / statistics.median(c for _, c in results["stream"])
    print(f"  unary / stream server cpu: {ratio:.2f}x")


async def _grpc_floor_rounds(args: argparse.Namespace, address: str, pid: int) -> dict[str, list]:
    import grpc

    channel = grpc.aio.insecure_channel(address)
    unary = channel.unary_unary("/floor.Floor/Unary")
    stream = channel.stream_stream("/floor.Floor/Stream")
    payload = b"x" * 100
    results: dict[str, list] = {"unary": [], "stream": []}

    async def run(kind: str) -> tuple[float, float]:
        count = 0
        stop = time.monotonic() + args.seconds

        async def caller() -> None:
            nonlocal count
            if kind == "unary":
                while time.monotonic() < stop:
                    await unary(payload)
                    count += 1
                return
            call = stream()
            while time.monotonic() < stop:
                await call.write(payload)
                await call.read()
                count += 1
            await call.done_writing()

        cpu0, t = _cpu_seconds(pid), time.monotonic()
        await asyncio.gather(*(caller() for _ in range(4)))
        return count / (time.monotonic() - t), (_cpu_seconds(pid) - cpu0) / max(count, 1) * 1e6

    await run("unary")  # warm-up
    for r in range(args.rounds):
        for kind in (("unary", "stream") if r % 2 == 0 else ("stream", "unary")):
            results[kind].append(await run(kind))
    await channel.close()
    return results


if __name__ == "__main__":
    main()
