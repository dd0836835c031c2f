"""Quick node measurements: cold starts (uncached / disk / memory), warm invokes, concurrency.

    python -m wlruntime.node.quickbench [--samples N] [--seconds S]

Starts a real registry and real node processes on loopback and talks gRPC to them, like the
router will. Prints medians (and p99 where there are enough samples) measured in this run.
Not the project benchmark (bench/ has that); this is the node's own sanity check, and the
source of the numbers in its docs.

- uncached cold start: every sample is a different sha256 (the same echo module with a distinct
  custom section appended), so each spawn downloads and compiles;
- disk cold start: a fresh node process spawning those same versions loads compiled artifacts
  from the cache folder the first node filled;
- memory cold start: spawning a version this node already holds (a new instance, no compile);
- warm invoke: Do(Invoke) on an idle instance, client round trip and exec time on the node;
- concurrency: K client threads, each with its own instance, for S seconds: invocations/s for a
  trivial function (GIL-bound) and for a CPU-bound one (wasm runs without the GIL).
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
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


def _start(args: list[str], ready: str, log: Path) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WL_")}
    with open(log, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=log_file, text=True,
                                env=env)
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


def _summary(values: list[float]) -> str:
    values = sorted(values)
    text = f"median {statistics.median(values):8.3f} ms"
    if len(values) >= 100:
        text += f"   p99 {values[int(len(values) * 0.99) - 1]:8.3f} ms"
    return text + f"   (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m wlruntime.node.quickbench")
    parser.add_argument("--samples", type=int, default=30, help="cold starts per kind (default 30)")
    parser.add_argument("--invokes", type=int, default=2000, help="warm invokes (default 2000)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per concurrency level (default 3)")
    args = parser.parse_args()

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

        def node(*extra: str):
            proc, line = _start(["-m", "wlruntime.node", "--registry", url, "--port", "0", "--cache-dir",
                                 str(work / "cache"), "--memory-mb", "100000", "--log-level", "warning", *extra],
                                "listening on", work / f"node-{len(procs)}.log")
            procs.append(proc)
            channel, stub = connect(line.split("listening on ")[1].strip())
            return proc, channel, stub

        print(f"wl node quickbench: {os.cpu_count()} cores, function {echo_source}")
        print("cold start (Spawn, as measured by the client; node-side breakdown in parentheses)")
        proc, channel, stub = node()
        rows = {"uncached": [], "disk": [], "memory": []}
        parts = {"uncached": [], "disk": [], "memory": []}

        def spawn(kind: str, function: str) -> str:
            t = time.perf_counter()
            reply = stub.Spawn(pb.SpawnRequest(function=function, version="1"))
            rows[kind].append((time.perf_counter() - t) * 1000)
            parts[kind].append((reply.fetch_ms, reply.compile_ms, reply.instantiate_ms))
            assert reply.compile_source == {"uncached": "compiled", "disk": "disk", "memory": "memory"}[kind], reply
            return reply.instance_id

        for i in range(args.samples):
            spawn("uncached", f"echo-{i}")
        for i in range(args.samples):
            spawn("memory", "echo-0")
        _stop(proc)
        channel.close()
        proc, channel, stub = node()
        for i in range(args.samples):
            spawn("disk", f"echo-{i}")
        for kind in ("uncached", "disk", "memory"):
            fetch, compile_, inst = (statistics.median(p) for p in zip(*parts[kind]))
            print(f"  {kind:9s} {_summary(rows[kind])}   (fetch {fetch:.2f}, compile/load {compile_:.2f}, "
                  f"instantiate {inst:.3f})")
        uncached = statistics.median(rows["uncached"])
        print(f"  ratio uncached/disk {uncached / statistics.median(rows['disk']):.1f}x, "
              f"uncached/memory {uncached / statistics.median(rows['memory']):.1f}x")

        print("warm invoke (Do(Invoke) round trip from the client; exec = time inside the node's runner)")
        for function, payload in (("echo", b"x" * 100), ("counter", b"x" * 100)):
            iid = stub.Spawn(pb.SpawnRequest(function=function, version="1")).instance_id
            rtt, exec_ms = [], []
            for _ in range(args.invokes):
                t = time.perf_counter()
                reply = stub.Do(pb.DoRequest(instance_id=iid, invoke=pb.Invoke(payload=payload)))
                rtt.append((time.perf_counter() - t) * 1000)
                exec_ms.append(reply.invoke.exec_ms)
                assert reply.invoke.error == pb.ERROR_KIND_NONE, reply
            abi = "ABI 1" if function == "echo" else "ABI 2"
            print(f"  {function:8s} {abi}  rtt {_summary(rtt)}   exec median {statistics.median(exec_ms):.3f} ms")

        print(f"concurrency (K client threads, one instance each, {args.seconds:.0f} s per level)")

        def throughput(stubs, function: str, payload: bytes, k: int) -> float:
            ids = [(s, s.Spawn(pb.SpawnRequest(function=function, version="1")).instance_id)
                   for s in (stubs * k)[:k]]
            counts = [0] * k
            stop = time.monotonic() + args.seconds

            def loop(j: int) -> None:
                s, iid = ids[j]
                while time.monotonic() < stop:
                    s.Do(pb.DoRequest(instance_id=iid, invoke=pb.Invoke(payload=payload)))
                    counts[j] += 1

            threads = [threading.Thread(target=loop, args=(j,)) for j in range(k)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for s, iid in ids:
                s.Do(pb.DoRequest(instance_id=iid, kill=pb.Kill()))
            return sum(counts) / args.seconds

        loads = [("echo", b"x" * 100, "trivial (echo)")]
        if cpu_path.is_file():
            loads.append(("cpu", b"2000", "CPU-bound (cpu_work n=2000)"))
        second = node()
        for function, payload, label in loads:
            one = {k: throughput([stub], function, payload, k) for k in (1, 2, 4, 8)}
            two = {k: throughput([stub, second[2]], function, payload, k) for k in (2, 4, 8)}
            print(f"  {label}: one node  " + "  ".join(f"K={k}: {v:7.0f}/s" for k, v in one.items()))
            print(f"  {' ' * len(label)}  two nodes " + "  ".join(f"K={k}: {v:7.0f}/s" for k, v in two.items()))
    finally:
        for proc in reversed(procs):
            _stop(proc)


if __name__ == "__main__":
    main()
