"""The ABI 1 example functions (examples/: C and AssemblyScript) deployed to a real registry and
run on a real node process over gRPC: upload with their deploy config -> spawn -> invoke.

The Python components (ABI 2) are left to tests/test_examples.py: compiling CPython takes ~15
CPU-seconds per component, which the registry (validation) and the node would each pay here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import NodeProcess, RegistryProcess

from wlruntime.proto import node_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ABI1 = {"echo": "c", "json_transform": "c", "cpu_work": "c", "hello": "assemblyscript", "reverse": "assemblyscript"}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    missing = [n for n in ABI1 if not (EXAMPLES / "build" / f"{n}.wasm").is_file()]
    if missing:
        pytest.fail(f"examples not built ({', '.join(missing)}): run `make -C examples`")
    registry = RegistryProcess(tmp_path_factory.mktemp("registry") / "data")
    client = registry.client()
    for name, language in ABI1.items():
        config = json.loads((EXAMPLES / language / f"{name}.json").read_text())
        client.upload(name, (EXAMPLES / "build" / f"{name}.wasm").read_bytes(), config)
    proc = NodeProcess(registry, tmp_path_factory.mktemp("node") / "cache")
    yield proc
    proc.stop()
    client.close()
    registry.stop()


def run(node: NodeProcess, function: str, payload: bytes, request_id: str = "r-1") -> pb.InvokeResult:
    iid = node.stub.Spawn(pb.SpawnRequest(function=function), timeout=30).instance_id
    try:
        return node.stub.Do(pb.DoRequest(instance_id=iid, invoke=pb.Invoke(request_id=request_id, payload=payload)),
                            timeout=30).invoke
    finally:
        node.stub.Do(pb.DoRequest(instance_id=iid, kill=pb.Kill()))


def test_c_echo(node) -> None:
    result = run(node, "echo", b"any bytes \x00\xff")
    assert (result.error, result.output) == (pb.ERROR_KIND_NONE, b"any bytes \x00\xff")


def test_c_json_transform_sees_the_metadata(node) -> None:
    result = run(node, "json_transform", b'{"name": "ada"}', request_id="req-9")
    assert result.error == pb.ERROR_KIND_NONE, result.error_message
    body = json.loads(result.output)
    assert body["name"] == "ADA"
    assert body["_wl"]["function"] == "json_transform" and body["_wl"]["request_id"] == "req-9"
    bad = run(node, "json_transform", b"not json")
    assert bad.error == pb.FUNCTION_ERROR and bad.error_message.startswith("exited with status 1: ")
    assert b"json_transform" in bad.logs


def test_c_cpu_work(node) -> None:
    result = run(node, "cpu_work", b"100")
    assert result.error == pb.ERROR_KIND_NONE and result.output.startswith(b"n=100 hash=")


def test_assemblyscript_hello_and_reverse(node) -> None:
    hello = run(node, "hello", b"Ada", request_id="r-42")
    assert hello.output == b"Hello, Ada! (function hello, request r-42)\n"
    assert run(node, "reverse", "héllo".encode()).output == "olléh".encode()
