"""Upload validation in the registry: off the event loop, not serialised behind a big compile,
each code validated once, and the compiled artifact left in the nodes' compiled cache."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import wasmtime
from conftest import RegistryProcess, wait_until, wat

from wlruntime.node.runtime import NodeRuntime
from wlruntime.registry import RegistryClient, RegistryError
from wlruntime.wasm.runners import Invocation

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far: unlike wall-clock time, it does not
    grow while the process waits for a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def big_module() -> bytes:
    """A valid WASI command with four huge functions: seconds to compile. Like CPython's eval
    loop in a componentize-py component, each keeps one compiler thread busy for long, which
    is what made small uploads wait for wasmtime's shared compile pool before."""
    body = " ".join(["local.get 0 i32.const 7 i32.mul i32.const 3 i32.add local.set 0"] * 100_000)
    functions = "\n".join(f'(func (export "f{i}") (param i32) (result i32) {body} local.get 0)' for i in range(4))
    return bytes(wasmtime.wat2wasm(f'(module (memory (export "memory") 1) (func (export "_start")) {functions})'))


def test_a_small_upload_is_not_held_up_by_a_big_validation(tmp_path, big_module) -> None:
    registry = RegistryProcess(tmp_path / "registry")
    try:
        client = RegistryClient(registry.url, registry.token, timeout=60)
        big = {}
        pid = registry.proc.pid
        idle_cpu = cpu_seconds(pid)

        def upload_big() -> None:
            with RegistryClient(registry.url, registry.token, timeout=60) as big_client:
                big["meta"] = big_client.upload("big", big_module, {"abi": "wasi-command"})
            big["cpu_done"] = cpu_seconds(pid)

        uploader = threading.Thread(target=upload_big)
        uploader.start()
        # the big upload is in once the registry compiles it (seconds of CPU time)
        wait_until(lambda: cpu_seconds(pid) - idle_cpu > 0.3, timeout=30)
        cpu_before_small = cpu_seconds(pid)
        meta = client.upload("small", wat("echo"), {"abi": "wasi-command"})
        cpu_during_small = cpu_seconds(pid) - cpu_before_small
        assert "meta" not in big  # answered while the big one is still being validated
        assert meta["version"] == 1 and client.get("small", "1")["sha256"] == meta["sha256"]
        uploader.join(60)
        assert big["meta"]["name"] == "big"
        # Answered long before the big validation ended, counted in the registry's CPU time (a
        # shared compile pool made it wait for nearly all of it: 2.6 s of 3.0 s left in one
        # measurement, 0.07 s without).
        assert cpu_during_small < 0.5 * (big["cpu_done"] - cpu_before_small)
        client.close()
    finally:
        registry.stop()


def test_code_is_validated_once_and_compiled_for_the_nodes(tmp_path) -> None:
    compiled = tmp_path / "node-cache" / "compiled"
    registry = RegistryProcess(tmp_path / "registry", "--compiled-cache-dir", str(compiled))
    try:
        client = RegistryClient(registry.url, registry.token)
        code = wat("echo")
        meta = client.upload("echo", code, {"abi": "wasi-command"})
        # validating compiled it into the nodes' cache folder ...
        artifacts = list(compiled.glob(f"{meta['sha256']}.wasi-command.*.cwasm"))
        assert len(artifacts) == 1
        # ... so a node using that folder loads it: no compile on the first cold start
        runtime = NodeRuntime("n1", RegistryClient(registry.url), memory_mb=256, cache_dir=tmp_path / "node-cache")
        spawned = runtime.spawn("echo")
        assert spawned.compile_source == "disk"  # neither downloaded nor compiled
        assert runtime.invoke(spawned.instance_id, Invocation(b"hi"))[0].output == b"hi"
        runtime.close()

        # The same bytes are not validated again (the artifact would come back): not under
        # another name, not after a restart (the stored versions say they passed).
        artifacts[0].unlink()
        assert client.upload("echo-again", code, {"abi": "wasi-command"})["sha256"] == meta["sha256"]
        client.close()
        registry.stop()
        registry = RegistryProcess(tmp_path / "registry", "--compiled-cache-dir", str(compiled))
        client = RegistryClient(registry.url, registry.token)
        client.upload("echo-after-restart", code, {"abi": "wasi-command"})
        assert not list(compiled.glob("*.cwasm"))

        # Other bytes are validated (and compiled) as usual; bad code is refused every time.
        client.upload("env", wat("env"), {"abi": "wasi-command"})
        assert len(list(compiled.glob("*.cwasm"))) == 1
        for name in ("bad-1", "bad-2"):
            with pytest.raises(RegistryError, match="no exported `_start`") as info:
                client.upload(name, wat("reactor"), {"abi": "wasi-command"})
            assert info.value.status == 400
        client.close()
    finally:
        registry.stop()
