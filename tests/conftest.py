"""Shared test helpers: real registry and node processes on loopback, a stand-in scheduler for
the router, the WAT fixture compiler and a polling wait.

Test modules import what they need from here (``from conftest import NodeProcess, wait_until``:
pytest puts this folder on ``sys.path`` and registers this module as ``conftest``), so no test
module imports another. The layers are the markers registered in pyproject.toml: ``unit`` (no
sockets or processes, seconds), ``integration`` (a few real servers or processes) and ``e2e``
(the whole platform); each test module declares its layer in ``pytestmark``.
"""

from __future__ import annotations

import functools
import math
import os
import queue
import random
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import httpx

from policies.interface import INVOKE, KILL, REJECT, Assign, KeepAlive, Policy, Spawn
from wlruntime.node.client import CHANNEL_OPTIONS, connect
from wlruntime.proto import node_pb2 as pb
from wlruntime.proto import node_pb2_grpc
from wlruntime.registry.client import RegistryClient

if TYPE_CHECKING:
    import pytest

    from wlsim.result import SimResult

FIXTURES = Path(__file__).resolve().parent / "fixtures"
WAT_DIR = FIXTURES / "wat"
# The upload token of every RegistryProcess unless a test picks another one.
TOKEN = "test-token"

T = TypeVar("T")


# ---- the layers --------------------------------------------------------------------------------

LAYERS = ("unit", "integration", "e2e")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``pytest -m <layer>`` does not import the test modules that cannot hold a test of that layer
    (their text never names ``pytest.mark.<layer>``): the unit layer then does not import the
    server, training and plotting stacks of the other layers' modules (~2-3 s of CPU). They are
    not collected at all (so not counted as deselected); any other ``-m`` collects everything."""
    layer = (config.getoption("markexpr", "") or "").strip()
    if layer not in LAYERS or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if f"pytest.mark.{layer}" in collection_path.read_text(encoding="utf-8"):
        return None
    return True


# ---- wasm fixtures -----------------------------------------------------------------------------

def wat2wasm(text: str) -> bytes:
    """WebAssembly text (a core module or a component) compiled to its binary."""
    import wasmtime

    return bytes(wasmtime.wat2wasm(text))


@functools.cache
def wat(name: str) -> bytes:
    """The binary of ``tests/fixtures/wat/<name>.wat`` (compiled once per session)."""
    return wat2wasm((WAT_DIR / f"{name}.wat").read_text())


# ---- waiting without sleeping blindly ----------------------------------------------------------

def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition not reached in time") -> T:
    """Poll ``condition`` until it returns something true, and return that; fail the test after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, message
        time.sleep(interval)
    return value


# ---- processes ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without WL_* settings (they would configure the child)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WL_")} | (extra or {})


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM (a clean stop), SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RegistryProcess:
    """``python -m wlruntime.registry`` on a loopback port, ready when /healthz answers.

    ``token=None`` starts it without ``--token`` (it then makes its own token file)."""

    def __init__(self, data_dir: Path, *args: str, port: int | None = None, token: str | None = TOKEN,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"registry-{self.port}.log"
        command = [sys.executable, "-m", "wlruntime.registry", "--port", str(self.port),
                   "--data-dir", str(data_dir), "--log-level", "warning", *args]
        if token is not None:
            command += ["--token", token]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=clean_env(env))
        self._wait_ready()
        self.token = token if token is not None else (data_dir / "registry.token").read_text().strip()

    def _wait_ready(self) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"registry exited with {self.proc.returncode}: {self.log()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(healthy, timeout=30, interval=0.05, message="registry did not become ready")
        except AssertionError:
            self.stop()
            raise RuntimeError(f"registry did not become ready: {self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, token: str | None = None, **kwargs) -> RegistryClient:
        return RegistryClient(self.url, self.token if token is None else token, **kwargs)

    def stop(self) -> None:
        stop_process(self.proc)


class NodeProcess:
    """``python -m wlruntime.node`` on a free port; ready when it prints 'listening on'."""

    def __init__(self, registry: RegistryProcess, cache_dir: Path, *args: str) -> None:
        self.log = cache_dir.parent / f"node-{cache_dir.name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wlruntime.node", "--registry", registry.url, "--port", "0",
                 "--cache-dir", str(cache_dir), "--log-level", "warning", *args],
                stdout=subprocess.PIPE, stderr=log, text=True, env=clean_env())
        line = self._read_line(timeout=30)
        assert "listening on" in line, f"node did not start: {line!r} {self.log.read_text()}"
        self.address = line.split("listening on ")[1].split(",")[0].strip()
        self.metrics_url = line.split("metrics on ")[1].strip() if "metrics on" in line else None
        self.channel, self.stub = connect(self.address)

    def _read_line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else ""

    def stop(self) -> int | None:
        self.channel.close()
        stop_process(self.proc)
        return self.proc.returncode


class StandInScheduler(node_pb2_grpc.SchedulerServicer):
    """Stands in for the router: records IdleEvents, answers from a per-instance script."""

    def __init__(self) -> None:
        self.events: queue.Queue[pb.IdleEvent] = queue.Queue()
        self.scripts: dict[str, list[pb.IdleDirective]] = {}
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=CHANNEL_OPTIONS)
        node_pb2_grpc.add_SchedulerServicer_to_server(self, self.server)
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def OnIdle(self, request: pb.IdleEvent, context) -> pb.IdleDirective:
        self.events.put(request)
        script = self.scripts.get(request.instance_id) or [pb.IdleDirective(kill=pb.Kill())]
        return script.pop(0)

    def next_event(self, timeout: float = 10.0) -> pb.IdleEvent:
        return self.events.get(timeout=timeout)

    def stop(self) -> None:
        self.server.stop(0)


# ---- hand-built simulation results ------------------------------------------------------------

def make_result(requests: list[tuple], instances: list[tuple], horizon_ms: float,
                wall_s: float = 0.5, policy: str = "hand") -> SimResult:
    """A SimResult from rows of the request and instance tables."""
    import pandas as pd

    from wlsim.result import INSTANCE_COLUMNS, REQUEST_COLUMNS, SimResult

    req = pd.DataFrame(requests, columns=list(REQUEST_COLUMNS)).astype(REQUEST_COLUMNS)
    inst = pd.DataFrame(instances, columns=list(INSTANCE_COLUMNS)).astype(INSTANCE_COLUMNS)
    return SimResult(policy=policy, requests=req, instances=inst, horizon_ms=horizon_ms, wall_s=wall_s)


def two_function_result() -> SimResult:
    """Two functions, two cold starts, a queued and a rejected request (numbers worked by hand in
    test_results_metrics.py)."""
    nan = float("nan")
    # request_id, function, arrival, wait, cold, cold_start, exec, end, latency, instance, rejected
    requests = [
        (0, "f", 0.0, 0.0, True, 300.0, 100.0, 400.0, 400.0, 0, False),       # cold start on f
        (1, "f", 1000.0, 0.0, False, 0.0, 100.0, 1100.0, 100.0, 0, False),     # warm
        (2, "f", 1050.0, 50.0, False, 0.0, 200.0, 1300.0, 250.0, 0, False),    # queued 50 ms
        (3, "g", 2000.0, 0.0, True, 500.0, 1000.0, 3500.0, 1500.0, 1, False),  # cold start on g
        (4, "g", 2100.0, nan, False, nan, 50.0, nan, nan, -1, True),           # rejected
    ]
    # id, function, node, memory, created, ready, died, busy, idle, invocations, prewarmed, evicted
    instances = [
        (0, "f", "n0", 512.0, 0.0, 300.0, 61300.0, 400.0, 60600.0, 3, False, False),
        (1, "g", "n0", 2048.0, 2000.0, 2500.0, 3500.0, 1000.0, 0.0, 1, False, False),
    ]
    return make_result(requests, instances, horizon_ms=100_000.0)


# ---- a seeded random policy ---------------------------------------------------------------------
class Chaotic(Policy):
    """Seeded random answers at every decision point (all kinds, incl. re-routes, rejects,
    pre-warms and evictions): any change in the order or number of decisions between two
    runs changes the random stream, and so the results. ``whole_ms``: keep-alives and
    pre-warm delays in whole ms (the sim/live parity test: its virtual clock is in whole ms).
    ``evict_in_spawn``: spawns also name up to 3 random idle instances (of any function routed
    so far) to kill first, ``Spawn(evict=...)`` (off by default: the streams stay unchanged)."""
    name = "chaotic"

    def __init__(self, seed: int, whole_ms: bool = False, evict_in_spawn: bool = False) -> None:
        self.rng = random.Random(seed)
        self.whole_ms = whole_ms
        self.evict_in_spawn = evict_in_spawn
        self.seen: dict[str, Any] = {}      # functions routed so far, in first-seen order

    def route(self, now_ms, request, fn):
        if self.evict_in_spawn:
            self.seen[fn.name] = fn
        u = self.rng.random()
        if u < 0.02:
            return REJECT
        if fn.idle and u < 0.7:
            return Assign(fn.idle[self.rng.randrange(len(fn.idle))])
        live = list(fn.instances.values())
        if live and u < 0.85:
            return Assign(live[self.rng.randrange(len(live))])
        node = self.rng.choice([None, None, "node0", "node1"])
        if not self.evict_in_spawn:
            return Spawn(node=node)
        idle = [i for f in self.seen.values() for i in f.idle]
        return Spawn(node=node, evict=self.rng.sample(idle, self.rng.randrange(min(len(idle), 3) + 1)))

    def on_idle(self, now_ms, instance, fn):
        u = self.rng.random()
        if instance.queue and u < 0.8:
            return INVOKE
        if u < 0.9:
            ms = self.rng.choice([1.0, 50.0, 700.0, 3000.0, 20000.0])
            return KeepAlive(ms if self.whole_ms else ms * (1 + self.rng.random()))
        return KILL

    def prewarm(self, now_ms, fn):
        u = self.rng.random()
        if u < 0.5:
            return None
        return float(math.floor(5000.0 * u)) if self.whole_ms else 5000.0 * u

    def evict(self, now_ms, need_mb, candidates):
        chosen = super().evict(now_ms, need_mb, candidates)
        return chosen if self.rng.random() < 0.9 else []
