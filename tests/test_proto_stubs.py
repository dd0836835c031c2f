"""The committed gRPC stubs match protos/node.proto (regenerated into a temp dir and compared)."""

from pathlib import Path

import pytest

from wlruntime.proto.generate import OUT_DIR, generate

pytestmark = pytest.mark.unit


def test_generated_stubs_are_up_to_date(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert fresh, "generate() wrote nothing"
    stale = [p.name for p in fresh if (OUT_DIR / p.name).read_bytes() != p.read_bytes()]
    assert not stale, f"stale stubs {stale}: run `python -m wlruntime.proto.generate` and commit"


def test_stubs_import_and_round_trip() -> None:
    from wlruntime.proto import node_pb2 as pb
    from wlruntime.proto import node_pb2_grpc

    request = pb.DoRequest(
        instance_id="i-1", invoke=pb.Invoke(request_id="r-1", payload=b"\x00\xff", metadata={"k": "v"})
    )
    decoded = pb.DoRequest.FromString(request.SerializeToString())
    assert decoded.WhichOneof("op") == "invoke"
    assert decoded.invoke.payload == b"\x00\xff" and dict(decoded.invoke.metadata) == {"k": "v"}
    assert pb.IdleDirective().WhichOneof("action") is None  # "none set means kill"
    assert hasattr(node_pb2_grpc, "NodeStub") and hasattr(node_pb2_grpc, "SchedulerServicer")
