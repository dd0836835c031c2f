"""Regenerate the Python gRPC stubs in this folder from protos/*.proto.

    python -m wlruntime.proto.generate            # rewrite wlruntime/proto/
    python -m wlruntime.proto.generate OUT_DIR    # write elsewhere (the staleness test does)

Needs grpcio-tools (a dev dependency). protoc emits ``import node_pb2`` in the *_grpc.py
files, which only works with the folder on sys.path; we rewrite it to a relative import.
"""

from __future__ import annotations

import re
import sys
from importlib.resources import files
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parents[2] / "protos"
OUT_DIR = Path(__file__).resolve().parent
PROTOS = ("node.proto",)


def generate(out_dir: Path = OUT_DIR) -> list[Path]:
    """Run protoc for every proto in PROTOS into ``out_dir``; returns the files written."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = str(files("grpc_tools") / "_proto")
    for proto in PROTOS:
        args = [
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO_DIR / proto),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO_DIR / proto}")
    written = []
    for proto in PROTOS:
        stem = Path(proto).stem
        grpc_file = out_dir / f"{stem}_pb2_grpc.py"
        text = grpc_file.read_text()
        text = re.sub(r"^import (\w+_pb2) as", r"from . import \1 as", text, flags=re.MULTILINE)
        grpc_file.write_text(text)
        written += [out_dir / f"{stem}_pb2.py", out_dir / f"{stem}_pb2.pyi", grpc_file]
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR
    for path in generate(target):
        print(path)
