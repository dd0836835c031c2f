"""A whole wl platform on loopback: the code registry, N handler nodes and the router, each a
subprocess (``wl up``, the ``wl.testing`` fixture, the demo and the benchmarks use it).

    with Platform(data_dir="/tmp/wl", nodes=2, policy="default") as p:
        client = p.client()                 # RouterClient with the admin token
        client.deploy("echo", "examples/build/echo.wasm")
        print(client.invoke("echo", b"hi").output)

Start order: registry, then the nodes (told the router's Scheduler address), then the router
(told the nodes' addresses); each node also serves Prometheus metrics on a free port
(``node_metrics_urls``). Ready when the router's /healthz sees every node alive. Stop
order: router first (it answers what is in flight and writes its trace), then nodes, then the
registry; SIGTERM, then SIGKILL after a grace period. Children run in their own session (a
terminal's Ctrl-C reaches only this process, which stops them in order) and are sent SIGTERM
by the kernel if this process dies (PR_SET_PDEATHSIG).

Each child's output goes to ``<log_dir>/<name>.log`` and, with ``echo``, to a callback line by
line (``wl up`` prints them prefixed with the component's name).

Supervision (``supervise=True``, the default): a child that exits while the platform runs is
started again on the same address with the same arguments, after a backoff that doubles while
it keeps dying young (``RESTART_BACKOFF_S`` up to ``MAX_BACKOFF_S``); the others keep serving
meanwhile and the router re-admits a node that answers its health check again. Each
component's state (pid, alive, restarts, last exit code) is in ``<data_dir>/status.json``
(``Platform.status()``). ``kill_node`` holds a node down (no restart) until ``restart_node``.

Internal gRPC (node <-> router's Scheduler) is authenticated with the platform token, passed to
every child in ``WL_INTERNAL_TOKEN`` (wlruntime/auth.py).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import httpx

from wlcommon.files import atomic_write, read_or_create_token_file
from wlruntime.config import REGISTRY_TOKEN_FILE
from wlruntime.router.client import RouterClient

STATUS_FILE = "status.json"    # in the data dir: each component's health, for `wl ls` and operators
RESTART_BACKOFF_S = 0.25       # first restart delay; doubles while a child keeps dying young
MAX_BACKOFF_S = 10.0
STABLE_AFTER_S = 30.0          # a child that ran this long before exiting starts again at once
SUPERVISE_INTERVAL_S = 0.1
STATUS_REFRESH_S = 5.0         # status.json is rewritten at least this often (uptimes), and at every change


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def platform_token(registry_dir: Path) -> str:
    """The local platform's token: the registry's token file, created (0600) when missing."""
    return read_or_create_token_file(registry_dir / REGISTRY_TOKEN_FILE)


def read_status(data_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The status a running ``wl up`` keeps in ``<data_dir>/status.json`` (see ``Platform.status``),
    or None when there is none (no platform ran there, or it is unreadable)."""
    try:
        return json.loads((Path(data_dir).expanduser() / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class PlatformError(RuntimeError):
    pass


class _ChildHealth:
    """What the supervisor knows about one component across its restarts."""

    def __init__(self) -> None:
        self.exits = 0
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.backoff = 0.0
        self.restart_at: float | None = None  # set while a restart is pending


class Child:
    """One subprocess with its output copied to a log file (and optionally a callback)."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str],
                 echo: Callable[[str, str], None] | None, ready_marker: str | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.ready = threading.Event()
        self.ready_line = ""
        self._marker = ready_marker
        self._echo = echo
        self.started_at = time.monotonic()
        self.held = False  # kill_node: stays down until restart_node
        self._log = open(log_path, "a", buffering=1)  # noqa: SIM115 (closed by the reader thread)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, text=True, bufsize=1,
                                     preexec_fn=_die_with_parent)
        self._reader = threading.Thread(target=self._read, name=f"wl-{name}-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                line = line.rstrip("\n")
                self._log.write(line + "\n")
                if self._marker and not self.ready.is_set() and self._marker in line:
                    self.ready_line = line
                    self.ready.set()
                if self._echo is not None:
                    self._echo(self.name, line)
        finally:
            self._log.close()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def again(self) -> Child:
        """A new process with the same name, arguments, log and environment."""
        return Child(self.name, self.argv, self.log_path, self.env, self._echo, self._marker)

    def stop(self, grace_s: float = 10.0) -> int | None:
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(5)
        self._reader.join(2)
        return self.proc.returncode


class Platform:
    """Registry + nodes + router as subprocesses on ``host``. Ports left at 0 are picked free;
    ``data_dir`` holds the registry (``registry/``), the nodes' shared code and compile cache
    (``node-cache/``, where the registry also leaves what it compiled at upload) and the logs
    (``logs/``)."""

    def __init__(self, data_dir: str | os.PathLike[str], *, nodes: int = 1, policy: str = "default",
                 host: str = "127.0.0.1", registry_port: int = 0, router_port: int = 0, scheduler_port: int = 0,
                 node_port: int = 0, node_memory_mb: int = 2048, node_workers: int | None = None,
                 token: str | None = None, trace_out: str | os.PathLike[str] | None = None,
                 log_dir: str | os.PathLike[str] | None = None, echo: Callable[[str, str], None] | None = None,
                 log_level: str = "info", router_loop: str = "uvloop", python: str = sys.executable,
                 registry_dir: str | os.PathLike[str] | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, supervise: bool = True,
                 router_args: list[str] | None = None) -> None:
        if nodes < 1:
            raise ValueError("a platform needs at least one node")
        self.data_dir = Path(data_dir).expanduser()
        self.n_nodes = nodes
        self.policy = policy
        self.host = host
        self.registry_port = registry_port or free_port(host)
        self.router_port = router_port or free_port(host)
        self.scheduler_port = scheduler_port or free_port(host)
        self.node_ports = [node_port + i if node_port else free_port(host) for i in range(nodes)]
        self.node_metrics_ports = [free_port(host) for _ in range(nodes)]
        self.node_memory_mb = node_memory_mb
        self.node_workers = node_workers
        self.registry_dir = Path(registry_dir) if registry_dir is not None else self.data_dir / "registry"
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.data_dir / "node-cache"
        self.log_dir = Path(log_dir) if log_dir is not None else self.data_dir / "logs"
        self.token = token or platform_token(self.registry_dir)
        self.trace_out = Path(trace_out) if trace_out is not None else None
        self.echo = echo
        self.log_level = log_level
        self.router_loop = router_loop
        self.python = python
        self.router_args = list(router_args or [])  # extra `python -m wlruntime.router` flags
        self.registry: Child | None = None
        self.nodes: list[Child] = []
        self.router: Child | None = None
        self.supervise = supervise
        self._lock = threading.RLock()  # the child slots: the supervisor thread replaces children
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._health: dict[str, _ChildHealth] = {}

    # ---- addresses -----------------------------------------------------------------------------
    @property
    def registry_url(self) -> str:
        return f"http://{self.host}:{self.registry_port}"

    @property
    def router_url(self) -> str:
        return f"http://{self.host}:{self.router_port}"

    @property
    def node_addresses(self) -> list[str]:
        return [f"{self.host}:{p}" for p in self.node_ports]

    @property
    def node_metrics_urls(self) -> list[str]:
        return [f"http://{self.host}:{p}/metrics" for p in self.node_metrics_ports]

    def client(self, timeout: float = 60.0) -> RouterClient:
        return RouterClient(self.router_url, self.token, timeout=timeout)

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> Platform:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WL_")}
        env["WL_REGISTRY_TOKEN"] = self.token  # tokens by env, not argv (visible in ps)
        env["WL_ROUTER_ADMIN_TOKEN"] = self.token
        env["WL_INTERNAL_TOKEN"] = self.token  # node and Scheduler gRPC calls carry it (wlruntime/auth.py)
        # Optional TLS for internal gRPC, and the policy decision budget (router/deadline.py).
        for name in ("WL_TLS_CERT", "WL_TLS_KEY", "WL_TLS_CA", "WL_ROUTER_DECISION_BUDGET_MS",
                     "WL_ROUTER_POLICY_DISABLE_AFTER"):
            if os.environ.get(name):
                env[name] = os.environ[name]
        env["PYTHONUNBUFFERED"] = "1"
        deadline = time.monotonic() + timeout_s
        try:
            # The registry compiles uploads to validate them: it keeps the artifacts in the nodes'
            # compiled cache (NodeRuntime: <cache dir>/compiled), so new code compiles once.
            self.registry = self._child("registry", [
                "-m", "wlruntime.registry", "--host", self.host, "--port", str(self.registry_port),
                "--data-dir", str(self.registry_dir), "--compiled-cache-dir", str(self.cache_dir / "compiled"),
                "--log-level", "warning"], env)
            self._wait_http(self.registry, f"{self.registry_url}/healthz", deadline)
            for i, port in enumerate(self.node_ports):
                argv = ["-m", "wlruntime.node", "--registry", self.registry_url, "--host", self.host,
                        "--port", str(port), "--memory-mb", str(self.node_memory_mb), "--node-id", f"node-{i + 1}",
                        "--scheduler", f"{self.host}:{self.scheduler_port}", "--cache-dir", str(self.cache_dir),
                        "--metrics-port", str(self.node_metrics_ports[i]), "--log-level", self.log_level]
                if self.node_workers:
                    argv += ["--workers", str(self.node_workers)]
                self.nodes.append(self._child(f"node-{i + 1}", argv, env, ready_marker="listening on"))
            for node in self.nodes:
                self._wait_marker(node, deadline)
            argv = ["-m", "wlruntime.router", "--host", self.host, "--port", str(self.router_port),
                    "--scheduler-port", str(self.scheduler_port), "--registry", self.registry_url,
                    "--policy", self.policy, "--loop", self.router_loop, "--log-level", self.log_level,
                    "--node", ",".join(self.node_addresses), "--state-dir", str(self.data_dir / "router"),
                    *self.router_args]
            if self.trace_out is not None:
                argv += ["--trace-out", str(self.trace_out)]
            self.router = self._child("router", argv, env)
            self._wait_router(deadline)
        except BaseException:
            self.stop()
            raise
        self._write_status()
        if self.supervise:
            self._supervisor = threading.Thread(target=self._supervise, name="wl-supervisor", daemon=True)
            self._supervisor.start()
        return self

    # ---- supervision ---------------------------------------------------------------------------
    def _supervise(self) -> None:
        """Restart children that exited, with backoff, until ``stop``."""
        written = time.monotonic()
        while not self._stopping.wait(SUPERVISE_INTERVAL_S):
            with self._lock:
                changed = False
                for child in self.children():
                    if not child.alive and not child.held and not self._stopping.is_set():
                        changed |= self._revive(child)
                refresh = time.monotonic() - written >= STATUS_REFRESH_S
                if changed or refresh:
                    self._write_status()
                    written = time.monotonic()
            if refresh:
                self._learn_policy()  # outside the lock: an HTTP call

    def _revive(self, child: Child) -> bool:
        health = self._health.setdefault(child.name, _ChildHealth())
        now = time.monotonic()
        if health.restart_at is None:  # just noticed the exit
            health.exits += 1
            health.last_exit_code = child.proc.returncode
            young = now - child.started_at < STABLE_AFTER_S
            health.backoff = min(MAX_BACKOFF_S, health.backoff * 2) if young and health.backoff else (
                RESTART_BACKOFF_S if young else 0.0)
            health.restart_at = now + health.backoff
            self._say(f"{child.name} exited (code {child.proc.returncode}); restarting it in {health.backoff:g} s, "
                      "the rest keeps serving")
            return True
        if now < health.restart_at:
            return False
        health.restart_at = None
        health.restarts += 1
        if child is self.router:
            self._keep_policy(child)
        try:
            fresh = child.again()
        except OSError as error:
            self._say(f"could not restart {child.name}: {error}")
            return True
        self._replace_child(child, fresh)
        self._say(f"{child.name} restarted (pid {fresh.proc.pid}, restart {health.restarts})")
        return True

    def _learn_policy(self) -> None:
        """Remember the router's current policy spec (it may have been swapped at run time), so a
        restarted router comes back with it rather than the one it was started with."""
        router = self.router
        if router is None or not router.alive:
            return
        try:
            spec = httpx.get(f"{self.router_url}/admin/policy", timeout=1.0,
                             headers={"Authorization": f"Bearer {self.token}"}).json().get("spec")
        except (httpx.HTTPError, ValueError, AttributeError):
            return
        if isinstance(spec, str) and spec:
            self.policy = spec

    def _keep_policy(self, router: Child) -> None:
        argv = router.argv
        if "--policy" in argv:
            argv[argv.index("--policy") + 1] = self.policy

    def _replace_child(self, old: Child, new: Child) -> None:
        if old is self.registry:
            self.registry = new
        elif old is self.router:
            self.router = new
        else:
            self.nodes[self.nodes.index(old)] = new

    def _say(self, message: str) -> None:
        if self.echo is not None:
            self.echo("wl", message)
        else:
            print(f"wl: {message}", file=sys.stderr, flush=True)

    def status(self) -> dict[str, Any]:
        """Each component's health: name, pid, alive, restarts, last exit code, seconds up."""
        now = time.monotonic()
        with self._lock:
            components = []
            for child in self.children():
                health = self._health.get(child.name, _ChildHealth())
                alive = child.alive
                components.append({
                    "name": child.name, "pid": child.proc.pid, "alive": alive, "held_down": child.held,
                    "restarts": health.restarts, "exits": health.exits, "last_exit_code": health.last_exit_code,
                    "up_s": round(now - child.started_at, 1) if alive else 0.0,
                    "restarting_in_s": (None if health.restart_at is None
                                        else round(max(0.0, health.restart_at - now), 2)),
                })
        return {"time": time.time(), "running": not self._stopping.is_set(), "supervised": self.supervise,
                "router": self.router_url,
                "registry": self.registry_url, "components": components}

    @property
    def status_path(self) -> Path:
        return self.data_dir / STATUS_FILE

    def _write_status(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.status_path, json.dumps(self.status(), indent=1))
        except OSError as error:  # status is informative: never stop the platform for it
            self._say(f"could not write {self.status_path}: {error}")

    def _child(self, name: str, args: list[str], env: dict[str, str], ready_marker: str | None = None) -> Child:
        return Child(name, [self.python, *args], self.log_dir / f"{name}.log", env, self.echo, ready_marker)

    def _wait_http(self, child: Child, url: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not child.alive:
                raise PlatformError(f"the {child.name} exited during start:\n{child.log_tail()}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise PlatformError(f"the {child.name} did not answer {url} in time:\n{child.log_tail()}")

    def _wait_marker(self, child: Child, deadline: float) -> None:
        while not child.ready.wait(0.05):
            if not child.alive:
                raise PlatformError(f"{child.name} exited during start:\n{child.log_tail()}")
            if time.monotonic() > deadline:
                raise PlatformError(f"{child.name} did not start in time:\n{child.log_tail()}")

    def _wait_router(self, deadline: float) -> None:
        assert self.router is not None
        last: Any = None
        while time.monotonic() < deadline:
            if not self.router.alive:
                raise PlatformError(f"the router exited during start:\n{self.router.log_tail()}")
            try:
                last = httpx.get(f"{self.router_url}/healthz", timeout=1.0).json()
                if last.get("started") and last.get("nodes_alive") == self.n_nodes:
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.05)
        raise PlatformError(f"the router did not see all nodes alive in time (last: {last}):\n"
                            f"{self.router.log_tail()}")

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(5)
        if self.router is not None:
            self.router.stop(grace_s=15.0)
        for node in self.nodes:
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop(grace_s=10.0)
        if self.registry is not None:
            self.registry.stop(grace_s=10.0)
        if self.children() and self.status_path.exists():
            self._write_status()  # all down now: a `wl ls` afterwards says so

    def children(self) -> list[Child]:
        return [c for c in (self.registry, *self.nodes, self.router) if c is not None]

    def dead_children(self) -> list[Child]:
        """Children that are down for good: exited and not being restarted by the supervisor."""
        with self._lock:
            return [c for c in self.children() if not c.alive and (not self.supervise or self._stopping.is_set())]

    def kill_node(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to node ``index`` (0-based), e.g. to test failure handling. The node stays
        down (the supervisor leaves it) until ``restart_node``."""
        with self._lock:
            node = self.nodes[index]
            node.held = True
        node.signal(sig)
        if sig == signal.SIGKILL:
            node.proc.wait(10)

    def restart_node(self, index: int, timeout_s: float = 30.0) -> None:
        """Start node ``index`` again (same port and id) after it stopped or was killed."""
        with self._lock:
            old = self.nodes[index]
            old.held = True  # not the supervisor's to restart meanwhile
        if old.alive:
            old.stop()
        with self._lock:
            child = old.again()
            self.nodes[index] = child
            self._health.setdefault(child.name, _ChildHealth()).restarts += 1
        self._wait_marker(child, time.monotonic() + timeout_s)
        self._write_status()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
