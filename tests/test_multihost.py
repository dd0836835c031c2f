"""The platform across hosts: the registry, the router and two nodes each in a network
namespace of its own (a "host"), joined by veth pairs to a bridge in a fifth namespace; the
addresses exist only inside those namespaces. The nodes register themselves with the router
(``--register``). Deploy, invoke on both nodes, delete one node's namespace (its process and
its network vanish), and check nothing is lost: the router marks that node dead, the function
is still deployed, and every later request is answered by the surviving node.

Needs root (``ip netns``), as CI runs; the namespaces are removed even when the test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "examples" / "build" / "echo.wasm"
TOKEN = "multihost-test-token"
PREFIX = f"wl{os.getpid() % 100000}"        # namespaces of this run only
SUBNET = "10.77.0"
HOSTS = {"registry": 1, "router": 2, "node1": 11, "node2": 12}   # last octet of each host


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def ns(host: str) -> str:
    return f"{PREFIX}-{host}"


def addr(host: str) -> str:
    return f"{SUBNET}.{HOSTS[host]}"


@pytest.fixture
def hosts() -> Iterator[dict[str, str]]:
    """Four namespaces on one bridge (in a fifth); yields {host: namespace}; removes them all."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.fail("needs root and iproute2 (ip netns), as in CI")
    hub = ns("hub")
    made: list[str] = []
    try:
        ip("netns", "add", hub)
        made.append(hub)
        ip("-n", hub, "link", "add", "br0", "type", "bridge")
        ip("-n", hub, "link", "set", "br0", "up")
        for k, host in enumerate(HOSTS):
            name = ns(host)
            ip("netns", "add", name)
            made.append(name)
            # one veth pair per host: "eth0" inside the host, "v<k>" on the hub's bridge
            ip("-n", hub, "link", "add", f"v{k}", "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("-n", hub, "link", "set", f"v{k}", "master", "br0", "up")
            ip("-n", name, "addr", "add", f"{addr(host)}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")
        yield {h: ns(h) for h in HOSTS}
    finally:
        for name in reversed(made):
            kill_namespace(name)


def kill_namespace(name: str) -> None:
    """Kill what runs in the namespace, then delete it (its veth end goes with it)."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), 9)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)


class Services:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, host: str, *args: str) -> None:
        log = open(self.tmp / f"{host}.log", "wb")   # noqa: SIM115 (closed with the process)
        self.procs[host] = subprocess.Popen(["ip", "netns", "exec", ns(host), sys.executable, *args],
                                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def logs(self) -> str:
        return "\n".join(f"--- {h}\n{(self.tmp / f'{h}.log').read_text()[-3000:]}" for h in self.procs)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


CLIENT = """
import json, sys, time
from wlruntime.router.client import RouterClient
wl = RouterClient(sys.argv[1], token=sys.argv[2])
op = sys.argv[3]
if op == "nodes":
    out = wl._admin("GET", "/admin/nodes").json()
elif op == "deploy":
    out = wl.deploy("echo", sys.argv[4], memory_mb=16, timeout_ms=5000, concurrency=16)
elif op == "functions":
    out = [f.get("name") for f in wl.functions()]
elif op == "invoke":      # n requests, k at a time, so more than one instance is needed
    import concurrent.futures as cf
    n, k = int(sys.argv[4]), int(sys.argv[5])
    def one(i):
        r = wl.invoke("echo", f"hello {i}".encode())
        return [r.status, r.output.decode(errors="replace"), r.headers.get("x-wl-node", "")]
    with cf.ThreadPoolExecutor(k) as pool:
        out = list(pool.map(one, range(n)))
print(json.dumps(out))
"""


def client(*args: str, host: str = "router", timeout: float = 120) -> object:
    """Run a RouterClient call inside a namespace (the test process cannot reach them)."""
    r = subprocess.run(["ip", "netns", "exec", ns(host), sys.executable, "-c", CLIENT,
                        f"http://{addr('router')}:7701", TOKEN, *args],
                       capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if r.returncode != 0:
        raise AssertionError(f"client {args} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def wait_for(what: str, check, timeout: float, services: Services) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except AssertionError as e:     # not up yet
            last = e
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last}\n{services.logs()}")


def test_registry_router_and_nodes_on_separate_hosts_survive_losing_a_node(hosts, tmp_path):
    services = Services(tmp_path)
    try:
        reg, rtr = addr("registry"), addr("router")
        services.start("registry", "-m", "wlruntime.registry", "--host", reg, "--port", "7700",
                       "--data-dir", str(tmp_path / "registry"), "--token", TOKEN, "--read-token-required")
        services.start("router", "-m", "wlruntime.router", "--host", rtr, "--port", "7701",
                       "--scheduler-port", "7702", "--registry", f"http://{reg}:7700",
                       "--registry-token", TOKEN, "--admin-token", TOKEN, "--state-dir", str(tmp_path / "router"))
        for node in ("node1", "node2"):
            services.start(node, "-m", "wlruntime.node", "--host", addr(node), "--port", "7710",
                           "--node-id", node, "--memory-mb", "512", "--workers", "4",
                           "--registry", f"http://{reg}:7700", "--registry-token", TOKEN,
                           "--scheduler", f"{rtr}:7702", "--cache-dir", str(tmp_path / f"cache-{node}"),
                           "--register", f"http://{rtr}:7701", "--advertise", f"{addr(node)}:7710",
                           "--admin-token", TOKEN, "--register-every", "2")

        # both nodes registered themselves and are alive
        def both_alive():
            nodes = client("nodes")
            return {n["address"] for n in nodes if n["alive"]} == {f"{addr('node1')}:7710", f"{addr('node2')}:7710"}
        wait_for("both nodes registered", both_alive, 90, services)

        client("deploy", str(ECHO))
        served = client("invoke", "12", "4")
        assert all(status == 200 and body == f"hello {i}" for i, (status, body, _) in enumerate(served)), served
        assert {node for *_, node in served} == {"node1", "node2"}, served   # both hosts served

        kill_namespace(hosts["node1"])       # the host is gone: process and network

        def node1_dead():
            nodes = {n["address"]: n for n in client("nodes")}
            return not nodes[f"{addr('node1')}:7710"]["alive"] and nodes[f"{addr('node2')}:7710"]["alive"]
        wait_for("the router to mark node1 dead", node1_dead, 60, services)

        assert client("functions") == ["echo"]                 # the deployment is not lost
        after = client("invoke", "12", "4")
        assert [s for s, *_ in after] == [200] * 12, after      # every request answered
        assert all(body == f"hello {i}" for i, (_, body, _) in enumerate(after))
        assert {node for *_, node in after} == {"node2"}
        assert services.procs["registry"].poll() is None and services.procs["router"].poll() is None

        # a node that stops cleanly deregisters itself: the router forgets it at once
        services.procs["node2"].terminate()
        assert services.procs["node2"].wait(30) == 0
        assert f"{addr('node2')}:7710" not in {n["address"] for n in client("nodes")}
    finally:
        services.stop()
