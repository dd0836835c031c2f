"""NodeRuntime in-process: defence against bad code from a registry, the scheduler conversation's
edge cases (unreachable scheduler, stale answers), and kill while busy."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
from conftest import wait_until, wat

from wlruntime.node.runtime import DEAD, IDLE, Directive, NodeError, NodeRuntime
from wlruntime.registry.client import FetchedCode, RegistryError
from wlruntime.wasm.runners import Invocation

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


class InMemoryRegistry:
    """Serves code it was given, whatever it is (a real registry would have validated it)."""

    def __init__(self) -> None:
        self.functions: dict[str, tuple[bytes, dict]] = {}

    def add(self, name: str, code: bytes, **config) -> None:
        self.functions[name] = (code, config)

    def get(self, name: str, version: str = "latest") -> dict:
        if name not in self.functions:
            raise RegistryError(f"no function named {name!r}", 404)
        code, config = self.functions[name]
        return {"name": name, "version": 1, "sha256": hashlib.sha256(code).hexdigest(), "config": config}

    def fetch(self, sha: str) -> FetchedCode:
        for code, _ in self.functions.values():
            if hashlib.sha256(code).hexdigest() == sha:
                return FetchedCode(code, sha)
        raise RegistryError("no such blob", 404)


@pytest.fixture
def registry() -> InMemoryRegistry:
    reg = InMemoryRegistry()
    reg.add("echo", wat("echo"), abi="wasi-command")
    reg.add("spin", wat("loop"), abi="wasi-command", timeout_ms=300)
    return reg


def make_runtime(registry, tmp_path, scheduler=None, **kwargs) -> NodeRuntime:
    return NodeRuntime("n1", registry, memory_mb=1024, cache_dir=tmp_path, scheduler=scheduler, **kwargs)


def test_code_that_fails_validation_is_refused(registry, tmp_path) -> None:
    registry.add("garbage", b"\x7fELF not wasm at all", abi="wasi-command")
    registry.add("library", wat("reactor"), abi="wasi-command")
    runtime = make_runtime(registry, tmp_path)
    with pytest.raises(NodeError, match="not a WebAssembly binary") as info:
        runtime.spawn("garbage")
    assert info.value.code == "FAILED_PRECONDITION"
    with pytest.raises(NodeError, match="no exported `_start`"):
        runtime.spawn("library")
    with pytest.raises(NodeError, match="no function named 'nope'") as info:
        runtime.spawn("nope")
    assert info.value.code == "NOT_FOUND"
    assert runtime.status()["memory_used_mb"] == 0  # failed spawns reserve nothing
    runtime.close()


def test_unreachable_scheduler_means_kill(registry, tmp_path) -> None:
    def broken(event):
        raise ConnectionError("router is down")

    runtime = make_runtime(registry, tmp_path, scheduler=broken)
    iid = runtime.spawn("echo").instance_id
    runtime.keep_alive(iid, 20)
    wait_until(lambda: not runtime.status()["instances"])
    with pytest.raises(NodeError, match="scheduler unreachable"):
        runtime.invoke(iid, Invocation(b""))
    runtime.close()


def test_a_stale_scheduler_answer_is_ignored(registry, tmp_path) -> None:
    asked, answer = threading.Event(), threading.Event()

    def slow_kill(event):
        asked.set()
        answer.wait(5)
        return Directive()  # kill

    runtime = make_runtime(registry, tmp_path, scheduler=slow_kill)
    kill, kill_handled = runtime.kill, threading.Event()

    def observed_kill(*args, **kwargs):
        try:
            return kill(*args, **kwargs)
        finally:
            kill_handled.set()

    runtime.kill = observed_kill
    iid = runtime.spawn("echo").instance_id
    runtime.keep_alive(iid, 10)
    assert asked.wait(5)
    # the router used the instance while the node was asking: the late "kill" must not apply
    assert runtime.invoke(iid, Invocation(b"still mine"))[0].output == b"still mine"
    answer.set()
    assert kill_handled.wait(5)  # the node has acted on the scheduler's answer
    assert [i["state"] for i in runtime.status()["instances"]] == [IDLE]
    runtime.close()


def test_kill_while_busy_answers_the_request_then_frees(registry, tmp_path) -> None:
    runtime = make_runtime(registry, tmp_path)
    iid = runtime.spawn("spin").instance_id
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=runtime.invoke(iid, Invocation(b""))))
    worker.start()
    wait_until(lambda: runtime.status()["instances"][0]["state"] == "BUSY")
    assert runtime.kill(iid) == DEAD
    with pytest.raises(NodeError, match="dead"):
        runtime.invoke(iid, Invocation(b""))
    assert runtime.status()["memory_used_mb"] == 128  # still running: memory still in use
    worker.join(5)
    outcome, state = result["r"]
    assert outcome.error == "timeout" and state == DEAD
    assert runtime.status() | {"uptime_s": 0} == runtime.status() | {"uptime_s": 0, "instances": [],
                                                                      "memory_used_mb": 0}
    runtime.close()


def test_many_instances_run_concurrently(registry, tmp_path) -> None:
    runtime = make_runtime(registry, tmp_path, workers=4)
    ids = [runtime.spawn("spin").instance_id for _ in range(4)]
    spans = []

    def run(iid: str) -> None:
        outcome, _ = runtime.invoke(iid, Invocation(b""))
        end = time.perf_counter()
        spans.append((end - outcome.exec_ms / 1000.0, end))

    threads = [threading.Thread(target=run, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # the four executions overlap in time: they ran side by side, not one after another
    assert len(spans) == 4
    assert max(start for start, _ in spans) < min(end for _, end in spans)
    runtime.close()


def test_short_invocations_run_inline_and_long_ones_move_to_the_pool(registry, tmp_path) -> None:
    registry.add("slow", wat("slow_echo"), abi="wasi-command", timeout_ms=10_000)
    registry.add("counter", wat("counter.component"), abi="component")
    runtime = make_runtime(registry, tmp_path)
    echo = runtime.spawn("echo").instance_id
    instance = runtime.begin_invoke(echo, Invocation(b"inline"))
    outcome, state = runtime.try_run_inline(instance, Invocation(b"inline"))
    assert (outcome.output, state) == (b"inline", IDLE)
    assert runtime.status()["instances"][0]["invocations"] == 1

    slow = runtime.spawn("slow").instance_id
    instance = runtime.begin_invoke(slow, Invocation(b""))
    assert runtime.try_run_inline(instance, Invocation(b"")) is None  # over budget: interrupted
    assert instance.state == "BUSY"  # still claimed: the caller runs it on the pool now
    outcome, state = runtime.run_invocation(instance, Invocation(b""))
    assert (outcome.output, state) == (b"done", IDLE)
    # its runs are known to be long now: not tried inline again, no budget wasted on every call
    assert instance.function.recent_exec_ms > 1.0
    assert runtime.try_run_inline(runtime.begin_invoke(slow, Invocation(b"")), Invocation(b"")) is None
    # a function that was slow a while ago and is fast now goes back inline once its recent
    # runs (on the pool) say so
    instance = runtime.begin_invoke(echo, Invocation(b""))
    instance.function.recent_exec_ms = 5.0
    assert runtime.try_run_inline(instance, Invocation(b"")) is None
    runtime.run_invocation(instance, Invocation(b""))
    for _ in range(20):
        runtime.invoke(echo, Invocation(b""))
    assert instance.function.recent_exec_ms < 1.0
    instance = runtime.begin_invoke(echo, Invocation(b"back"))
    assert runtime.try_run_inline(instance, Invocation(b"back"))[0].output == b"back"
    runtime.close()

    # components keep state: an interrupted attempt could not be undone, so never inline
    runtime = make_runtime(registry, tmp_path)
    counter = runtime.spawn("counter").instance_id
    assert runtime.try_run_inline(runtime.begin_invoke(counter, Invocation(b"a")), Invocation(b"a")) is None
    runtime.close()


def test_idle_grace_restarts_with_every_request(registry, tmp_path) -> None:
    # No scheduler: an instance left idle for idle_grace_ms is killed. Requests keep it alive
    # (one timer entry serves them all: it is queued again for the latest idle period).
    runtime = make_runtime(registry, tmp_path, idle_grace_ms=200)
    iid = runtime.spawn("echo").instance_id
    for _ in range(8):
        time.sleep(0.06)
        assert runtime.invoke(iid, Invocation(b"x"))[0].output == b"x"
    assert [i["state"] for i in runtime.status()["instances"]] == [IDLE]
    wait_until(lambda: not runtime.status()["instances"])
    with pytest.raises(NodeError, match="dead"):
        runtime.invoke(iid, Invocation(b""))
    runtime.close()


def test_quick_spawns_are_the_ones_needing_no_io_and_no_guest_code(registry, tmp_path) -> None:
    registry.add("counter", wat("counter.component"), abi="component")
    runtime = make_runtime(registry, tmp_path)
    assert not runtime.spawn_is_quick("echo", "1")  # nothing known yet: registry, compile
    runtime.spawn("echo", "1")
    assert runtime.spawn_is_quick("echo", "1")
    assert not runtime.spawn_is_quick("echo", "latest") and not runtime.spawn_is_quick("echo", "")
    runtime.spawn("counter", "1")
    assert not runtime.spawn_is_quick("counter", "1")  # instantiating a component runs its code
    runtime.close()

