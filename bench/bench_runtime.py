"""Runtime benchmark: cold starts and warm invocations per ABI against process-per-request baselines.

    .venv/bin/python bench/bench_runtime.py                  # full run (several minutes)
    .venv/bin/python bench/bench_runtime.py --quick --no-python    # smoke run (seconds)
    .venv/bin/python bench/bench_runtime.py --cold 50 --warm 500 --json runtime.json

Starts a real code registry and real handler nodes as subprocesses on free loopback ports, with
temporary folders, uploads the example functions and talks gRPC to the nodes like the router does.
Every time is measured by this client, around the RPC or the child process; the node's own
breakdown (fetch / compile or load / instantiate, exec_ms) is shown next to it.

Functions: examples/build/echo.wasm (C, ABI 1 WASI command), tests/fixtures/wat/counter.component.wat
(a tiny ABI 2 component: measures the component path without a big guest) and
examples/build/counter.wasm (Python via componentize-py, ABI 2, 18 MB embedding CPython).

Cold start = Spawn of a new instance, in three cases:
- uncached: registry metadata + code download + compile. Each sample is a different sha256 (the
  same module with a distinct custom section appended), so nothing is cached anywhere. The Python
  component is compiled only once (n=1, about 16 CPU-s; it is not worth a median), and the
  registry also compiles it once when it validates the upload;
- disk: a fresh node process per sample whose cache folder holds the compiled artifact (written
  by the first node); it still looks the metadata up in the registry but neither downloads nor
  compiles. The OS page cache is warm, as on a node that ran the function recently. Each fresh
  node first spawns two other functions (one per ABI) so one-time process costs (first gRPC
  connection, first registry request, engine setup) are not charged to the sample;
- memory: the node already holds the compiled artifact; only a new instance is made.

Warm invocation = Do(Invoke) on an idle instance: the client's round trip, and exec_ms measured
inside the node (ABI 1 instantiates a fresh Store per call by design; ABI 2 calls the live
instance).

Baselines, same payload, interleaved with the warm invocations so background load hits all alike:
- fork/exec of examples/build/native/echo (the same C source compiled natively) with
  subprocess.run: what a CGI- or process-per-request platform pays at least per request;
- the same with os.posix_spawn and raw pipes (the leanest way to start a process from Python);
- a Python process per request running echo.wasm with wasmtime-py from a precompiled artifact:
  the container/CGI analogue with a wasm runtime (the Rust `wasmtime` CLI is not installed here;
  it would start faster than Python + wasmtime-py). Sampled once per fresh node.

Machines are noisy: read medians and the ratios to fork/exec, which are measured in the same run,
not single absolute times. p99 is nearest-rank; with fewer than 100 samples it is the maximum.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console
from rich.table import Table

# Process and upload helpers shared with the node's own quick benchmark.
from wlruntime.node.quickbench import _free_port, _start, _stop, _with_custom_section

BUILD = ROOT / "examples" / "build"
ECHO_WASM = BUILD / "echo.wasm"
ECHO_NATIVE = BUILD / "native" / "echo"
PY_COUNTER_WASM = BUILD / "counter.wasm"
WAT_COUNTER = ROOT / "tests" / "fixtures" / "wat" / "counter.component.wat"
TOKEN = "bench-runtime"
MAX_PAYLOAD = 64 * 1024  # the pipe-based baselines write all input before reading (no deadlock below a pipe)

# One row per (function, ABI); "key" names it in the table and the JSON.
FUNCTIONS = {
    "echo": ("echo (C)", "1"),
    "cwat": ("counter (WAT)", "2"),
    "pycounter": ("counter (Python)", "2"),
}

# The per-request wasm runtime process: what a CGI/container-style wasm platform starts per request.
WASM_PROCESS_CODE = """
import sys, wasmtime
engine = wasmtime.Engine()
module = wasmtime.Module.deserialize_file(engine, sys.argv[1])
linker = wasmtime.Linker(engine)
linker.define_wasi()
store = wasmtime.Store(engine)
wasi = wasmtime.WasiConfig()
wasi.inherit_stdin()
wasi.inherit_stdout()
wasi.inherit_stderr()
store.set_wasi(wasi)
try:
    linker.instantiate(store, module).exports(store)["_start"](store)
except wasmtime.ExitTrap as exit_:
    sys.exit(exit_.code)
"""


@dataclass
class Row:
    group: str  # "cold start", "warm invoke", "per-request process", "node"
    case: str
    key: str  # a FUNCTIONS key, or the baseline's name
    function: str
    abi: str
    samples: list[float] = field(default_factory=list)
    # Node-side medians (ms) shown beside the client's time, e.g. {"fetch": 1.2, "compile": 8.0}.
    parts: dict[str, list[float]] = field(default_factory=dict)

    def add(self, ms: float, **parts: float) -> None:
        self.samples.append(ms)
        for name, value in parts.items():
            self.parts.setdefault(name, []).append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def p99_label(n: int) -> str:
    return "" if n >= 100 else " (max)"


class Bench:
    def __init__(self, args: argparse.Namespace, log: Console) -> None:
        self.args = args
        self.log = log
        self.payload = bytes((b"wl-bench-payload-" * (args.payload_bytes // 17 + 1))[: args.payload_bytes])
        self.work = Path(tempfile.mkdtemp(prefix="wl-bench-runtime-"))
        self.cache_dir = self.work / "node-cache"  # shared by every node of the run
        self.procs: list = []
        self.rows: dict[tuple[str, str, str], Row] = {}
        self.functions = ["echo", "cwat"] + (["pycounter"] if args.python else [])
        self.python_compile_row: Row | None = None

    def row(self, group: str, case: str, key: str) -> Row:
        function, abi = FUNCTIONS.get(key, (key, "-"))
        return self.rows.setdefault((group, case, key), Row(group, case, key, function, abi))

    # -- processes ------------------------------------------------------------------------------

    def start_registry(self) -> str:
        import httpx

        port = _free_port()
        proc, _ = _start(["-m", "wlruntime.registry", "--host", "127.0.0.1", "--port", str(port),
                          "--data-dir", str(self.work / "registry"), "--token", TOKEN, "--log-level", "warning"],
                         "data in", self.work / "registry.log")
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(url + "/healthz", timeout=1).raise_for_status()
                return url
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"registry at {url} did not become healthy: see {self.work / 'registry.log'}")

    def start_node(self, registry_url: str, index: int):
        """(process, channel, stub, ms from exec to serving gRPC)."""
        from wlruntime.node.client import connect

        started = time.perf_counter()
        proc, line = _start(["-m", "wlruntime.node", "--registry", registry_url, "--port", "0",
                             "--cache-dir", str(self.cache_dir), "--memory-mb", "100000",
                             "--node-id", f"bench-{index}", "--log-level", "warning"],
                            "listening on", self.work / f"node-{index}.log")
        start_ms = (time.perf_counter() - started) * 1000
        self.procs.append(proc)
        channel, stub = connect(line.split("listening on ")[1].strip())
        return proc, channel, stub, start_ms

    def stop_node(self, proc, channel) -> None:
        channel.close()
        _stop(proc)
        self.procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)
        shutil.rmtree(self.work, ignore_errors=True)

    # -- registry content -----------------------------------------------------------------------

    def upload(self, registry_url: str) -> None:
        import wasmtime

        from wlruntime.registry.client import RegistryClient

        echo = ECHO_WASM.read_bytes()
        echo_config = json.loads((ROOT / "examples" / "c" / "echo.json").read_text())
        cwat = bytes(wasmtime.wat2wasm(WAT_COUNTER.read_text()))
        cwat_config = {"abi": "component", "memory_mb": 16, "timeout_ms": 1000}
        with RegistryClient(registry_url, TOKEN) as client:
            client.upload("echo", echo, echo_config)
            client.upload("cwat", cwat, cwat_config)
            # Only ever spawned first in a fresh node, to pay its one-time costs outside the samples.
            client.upload("warmup-echo", _with_custom_section(echo, "warmup"), echo_config)
            client.upload("warmup-cwat", _with_custom_section(cwat, "warmup"), cwat_config)
            for i in range(self.args.cold):
                client.upload(f"echo-u{i}", _with_custom_section(echo, str(i)), echo_config)
                client.upload(f"cwat-u{i}", _with_custom_section(cwat, str(i)), cwat_config)
            if self.args.python:
                self.log.print("uploading counter.wasm (18 MB): the registry compiles it to validate it, "
                               "about 16 CPU-s ...")
                config = json.loads((ROOT / "examples" / "python" / "counter.json").read_text())
                # A minute or more on a loaded machine: longer than the client's default timeout.
                with RegistryClient(registry_url, TOKEN, timeout=900) as slow_client:
                    slow_client.upload("pycounter", PY_COUNTER_WASM.read_bytes(), config)
        # The per-request wasm runtime process loads this, as a container would ship a precompiled module.
        engine = wasmtime.Engine()
        (self.work / "echo.cwasm").write_bytes(wasmtime.Module(engine, echo).serialize())

    # -- measurements ---------------------------------------------------------------------------

    def spawn(self, stub, function: str, expect_source: str, row: Row | None) -> None:
        from wlruntime.proto import node_pb2 as pb

        started = time.perf_counter()
        reply = stub.Spawn(pb.SpawnRequest(function=function, version="1"))
        ms = (time.perf_counter() - started) * 1000
        try:
            if reply.compile_source != expect_source:
                raise RuntimeError(f"spawn of {function}: expected the compiled artifact from {expect_source!r}, "
                                   f"the node reports {reply.compile_source!r}")
            if expect_source == "compiled" and reply.code_cached:
                raise RuntimeError(f"spawn of {function}: the code was expected to be downloaded, "
                                   "the node had it cached")
            if row is not None:
                row.add(ms, fetch=reply.fetch_ms, compile=reply.compile_ms, inst=reply.instantiate_ms,
                        node=reply.cold_start_ms)
        finally:
            stub.Do(pb.DoRequest(instance_id=reply.instance_id, kill=pb.Kill()))

    def first_node(self, registry_url: str) -> None:
        """Uncached and in-memory cold starts, warm invocations and the fork/exec baselines."""
        proc, channel, stub, _ = self.start_node(registry_url, 0)
        try:
            self.spawn(stub, "warmup-echo", "compiled", None)
            self.spawn(stub, "warmup-cwat", "compiled", None)
            self.log.print(f"cold starts, uncached ({self.args.cold} per ABI) ...")
            for i in range(self.args.cold):
                self.spawn(stub, f"echo-u{i}", "compiled", self.row("cold start", "uncached", "echo"))
                self.spawn(stub, f"cwat-u{i}", "compiled", self.row("cold start", "uncached", "cwat"))
            self.spawn(stub, "echo", "compiled", None)
            self.spawn(stub, "cwat", "compiled", None)
            if self.args.python:
                self.log.print("compiling counter.wasm on the node once (uncached cold start, n=1) ...")
                self.spawn(stub, "pycounter", "compiled", self.row("cold start", "uncached", "pycounter"))
            self.log.print(f"cold starts, compiled artifact in memory ({self.args.cold} per function) ...")
            for _ in range(self.args.cold):
                for key in self.functions:
                    self.spawn(stub, key, "memory", self.row("cold start", "memory", key))
            self.log.print(f"warm invocations and fork/exec baselines ({self.args.warm} each, interleaved) ...")
            self.warm_and_baselines(stub)
        finally:
            self.stop_node(proc, channel)

    def warm_and_baselines(self, stub) -> None:
        from wlruntime.proto import node_pb2 as pb

        instances = {key: stub.Spawn(pb.SpawnRequest(function=key, version="1")).instance_id
                     for key in self.functions}
        checks: dict[str, Callable[[bytes, int], bool]] = {
            "echo": lambda out, i: out == self.payload,
            "cwat": lambda out, i: out == self.payload + f" #{i + 1}".encode(),
            "pycounter": lambda out, i: out == str(i + 1).encode(),
        }
        for i in range(self.args.warm):
            for key, instance_id in instances.items():
                started = time.perf_counter()
                reply = stub.Do(pb.DoRequest(instance_id=instance_id, invoke=pb.Invoke(payload=self.payload)))
                ms = (time.perf_counter() - started) * 1000
                result = reply.invoke
                if result.error != pb.ERROR_KIND_NONE or not checks[key](result.output, i):
                    raise RuntimeError(f"warm invoke {i} of {key}: error {result.error} "
                                       f"{result.error_message!r}, output {result.output[:80]!r}")
                self.row("warm invoke", "round trip", key).add(ms)
                self.row("warm invoke", "exec in node", key).add(result.exec_ms)
            self.row("per-request process", "fork/exec (subprocess)", "native echo").add(self.fork_exec())
            self.row("per-request process", "posix_spawn", "native echo").add(self.posix_spawn())
        for instance_id in instances.values():
            stub.Do(pb.DoRequest(instance_id=instance_id, kill=pb.Kill()))

    def fresh_nodes(self, registry_url: str) -> None:
        """Cold starts from the compiled artifact on disk, one fresh node process per sample."""
        self.log.print(f"cold starts from disk, {self.args.cold} fresh node processes ...")
        for i in range(self.args.cold):
            proc, channel, stub, start_ms = self.start_node(registry_url, i + 1)
            try:
                self.row("node", "process start to gRPC serving", "node").add(start_ms)
                self.spawn(stub, "warmup-echo", "disk", None)
                self.spawn(stub, "warmup-cwat", "disk", None)
                for key in self.functions:
                    self.spawn(stub, key, "disk", self.row("cold start", "disk", key))
            finally:
                self.stop_node(proc, channel)
            self.row("per-request process", "python + wasmtime-py process", "echo.wasm").add(self.wasm_process())

    # -- baselines ------------------------------------------------------------------------------

    def check_echo(self, what: str, returncode: int, output: bytes) -> None:
        if returncode != 0 or output != self.payload:
            raise RuntimeError(f"{what}: exit {returncode}, output {output[:80]!r} is not the payload")

    def fork_exec(self) -> float:
        started = time.perf_counter()
        done = subprocess.run([str(ECHO_NATIVE)], input=self.payload, capture_output=True, check=False)
        ms = (time.perf_counter() - started) * 1000
        self.check_echo("native echo (subprocess)", done.returncode, done.stdout)
        return ms

    def posix_spawn(self) -> float:
        started = time.perf_counter()
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        # The pipe ends are close-on-exec; dup2 onto 0/1 gives the child inheritable copies.
        pid = os.posix_spawn(str(ECHO_NATIVE), [str(ECHO_NATIVE)], {},
                             file_actions=[(os.POSIX_SPAWN_DUP2, stdin_r, 0), (os.POSIX_SPAWN_DUP2, stdout_w, 1)])
        os.close(stdin_r)
        os.close(stdout_w)
        with os.fdopen(stdin_w, "wb") as to_child:
            to_child.write(self.payload)
        with os.fdopen(stdout_r, "rb") as from_child:
            output = from_child.read()
        _, status = os.waitpid(pid, 0)
        ms = (time.perf_counter() - started) * 1000
        self.check_echo("native echo (posix_spawn)", os.waitstatus_to_exitcode(status), output)
        return ms

    def wasm_process(self) -> float:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", WASM_PROCESS_CODE, str(self.work / "echo.cwasm")],
                              input=self.payload, capture_output=True, check=False)
        ms = (time.perf_counter() - started) * 1000
        if done.returncode != 0:
            raise RuntimeError(f"per-request wasm process failed: {done.stderr.decode()[-500:]}")
        self.check_echo("per-request wasm process", done.returncode, done.stdout)
        return ms


# -- report ---------------------------------------------------------------------------------------

ORDER = [
    ("cold start", "uncached", "echo"), ("cold start", "disk", "echo"), ("cold start", "memory", "echo"),
    ("cold start", "uncached", "cwat"), ("cold start", "disk", "cwat"), ("cold start", "memory", "cwat"),
    ("cold start", "uncached", "pycounter"), ("cold start", "disk", "pycounter"),
    ("cold start", "memory", "pycounter"),
    ("warm invoke", "round trip", "echo"), ("warm invoke", "exec in node", "echo"),
    ("warm invoke", "round trip", "cwat"), ("warm invoke", "exec in node", "cwat"),
    ("warm invoke", "round trip", "pycounter"), ("warm invoke", "exec in node", "pycounter"),
    ("per-request process", "fork/exec (subprocess)", "native echo"),
    ("per-request process", "posix_spawn", "native echo"),
    ("per-request process", "python + wasmtime-py process", "echo.wasm"),
    ("node", "process start to gRPC serving", "node"),
]
CASE_LABELS = {
    "uncached": "uncached: fetch + compile",
    "disk": "compiled artifact on disk, fresh node",
    "memory": "compiled artifact in memory",
}
BASELINE = ("per-request process", "fork/exec (subprocess)", "native echo")


COLUMNS = [("measurement", "left"), ("function", "left"), ("ABI", "center"), ("n", "right"),
           ("median", "right"), ("p99", "right"), ("× fork/exec", "right"), ("node-side medians (ms)", "left")]
TITLE = "wl runtime: medians and p99 in ms; ratio = median / fork-exec median (same run)"


def table_cells(rows: dict[tuple[str, str, str], Row]) -> list[tuple[str, list[str]]]:
    """(group, cells) per reported row, in ORDER; the same cells feed the rich and Markdown tables."""
    baseline = rows[BASELINE].median
    out = []
    for key in ORDER:
        row = rows.get(key)
        if row is None:
            continue
        # "node" (the node's own cold_start_ms) first: client time minus it is the gRPC round trip.
        parts = " ".join(f"{'node total' if name == 'node' else name} {statistics.median(values):.2f}"
                         for name, values in sorted(row.parts.items(), key=lambda item: item[0] != "node"))
        if row.group == "cold start" and len(row.samples) == 1:
            parts += " (one sample)"
        out.append((row.group, [f"{row.group}: {CASE_LABELS.get(row.case, row.case)}", row.function, row.abi,
                                str(len(row.samples)), f"{row.median:.3f}",
                                f"{row.p99:.3f}{p99_label(len(row.samples))}", f"{row.median / baseline:.2f}×", parts]))
    return out


def rich_table(rows: dict[tuple[str, str, str], Row]) -> Table:
    table = Table(title=TITLE)
    for name, justify in COLUMNS:
        table.add_column(name, justify=justify, no_wrap=True)
    previous_group = None
    for group, cells in table_cells(rows):
        if previous_group is not None and group != previous_group:
            table.add_section()
        previous_group = group
        table.add_row(*cells)
    return table


def markdown_table(rows: dict[tuple[str, str, str], Row]) -> str:
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|" + "|".join({"left": "---", "right": "---:", "center": ":---:"}[justify] for _, justify in COLUMNS)
             + "|"]
    lines += ["| " + " | ".join(cells) + " |" for _, cells in table_cells(rows)]
    return "\n".join(lines)


def headline(rows: dict[tuple[str, str, str], Row]) -> list[str]:
    baseline = rows[BASELINE].median
    lines = []
    for key in ("echo", "cwat", "pycounter"):
        disk, warm = rows.get(("cold start", "disk", key)), rows.get(("warm invoke", "round trip", key))
        if disk and warm:
            function, abi = FUNCTIONS[key]
            lines.append(f"{function}, ABI {abi}: cold start (artifact on disk) / fork-exec = "
                         f"{disk.median / baseline:.2f}×, warm invoke / fork-exec = {warm.median / baseline:.2f}×")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=int, help="cold starts per case and function, and fresh node processes "
                        "(default 100; --quick 3)")
    parser.add_argument("--warm", type=int, help="warm invocations per function and baseline samples "
                        "(default 300; --quick 20)")
    parser.add_argument("--payload-bytes", type=int, default=1024,
                        help=f"request size (1..{MAX_PAYLOAD}, default 1024)")
    parser.add_argument("--quick", action="store_true", help="a smoke run with few repetitions")
    parser.add_argument("--no-python", dest="python", action="store_false",
                        help="leave out the componentize-py component (saves two ~16 CPU-s compiles)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for bench/README.md)")
    parser.add_argument("--json", type=Path, help="also write every row (samples included) to this JSON file")
    args = parser.parse_args(argv)
    args.cold = args.cold if args.cold is not None else (3 if args.quick else 100)
    args.warm = args.warm if args.warm is not None else (20 if args.quick else 300)
    for name in ("cold", "warm"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not 1 <= args.payload_bytes <= MAX_PAYLOAD:
        parser.error(f"--payload-bytes must be between 1 and {MAX_PAYLOAD}, got {args.payload_bytes}")
    needed = [ECHO_WASM, ECHO_NATIVE, WAT_COUNTER] + ([PY_COUNTER_WASM] if args.python else [])
    missing = [str(p.relative_to(ROOT)) for p in needed if not p.is_file()]
    if missing:
        print(f"bench_runtime: missing {', '.join(missing)}: run `make -C examples` first", file=sys.stderr)
        return 2

    # Piped output (tests, files) gets a wide table instead of rich's 80 columns.
    out = Console() if sys.stdout.isatty() else Console(width=200)
    log = Console(stderr=True)
    load_before = os.getloadavg()
    began = datetime.datetime.now().astimezone()
    bench = Bench(args, log)
    try:
        registry_url = bench.start_registry()
        bench.upload(registry_url)
        bench.first_node(registry_url)
        bench.fresh_nodes(registry_url)
    finally:
        bench.close()
    load_after = os.getloadavg()

    from importlib.metadata import version

    out.print(f"wl bench_runtime {began:%Y-%m-%d %H:%M %Z}: {os.cpu_count()} cores, wasmtime {version('wasmtime')}, "
              f"payload {args.payload_bytes} B, cold n={args.cold}, warm n={args.warm}, load average "
              f"{load_before[0]:.1f} at start, {load_after[0]:.1f} at end")
    if args.markdown:
        out.print(markdown_table(bench.rows), markup=False, highlight=False, soft_wrap=True)
    else:
        out.print(rich_table(bench.rows))
    for line in headline(bench.rows):
        out.print(line)
    if args.json:
        args.json.write_text(json.dumps({
            "date": began.isoformat(timespec="seconds"), "cores": os.cpu_count(),
            "wasmtime": version("wasmtime"), "payload_bytes": args.payload_bytes,
            "load_average": {"start": load_before, "end": load_after},
            "baseline": "fork/exec (subprocess) of examples/build/native/echo",
            "rows": [asdict(row) | {"median_ms": row.median, "p99_ms": row.p99,
                                    "ratio_to_fork_exec": row.median / bench.rows[BASELINE].median}
                     for key in ORDER if (row := bench.rows.get(key))],
        }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
