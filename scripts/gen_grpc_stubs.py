"""Regenerate the gRPC modules from ``llmsim/api/grpc/generated/vllm_engine.proto``.

Run from anywhere (needs grpcio-tools, in the ``test`` extra)::

    python scripts/gen_grpc_stubs.py

which runs, from the repository root::

    python -m grpc_tools.protoc --proto_path=. --python_out=. --pyi_out=. \\
        --grpc_python_out=. llmsim/api/grpc/generated/vllm_engine.proto

The proto path is the repository root, so the service module imports the messages as
``llmsim.api.grpc.generated.vllm_engine_pb2`` without editing. ``tests/test_grpc_stubs.py``
regenerates into a temporary directory and fails when the committed modules differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "llmsim/api/grpc/generated/vllm_engine.proto"
GENERATED = ("vllm_engine_pb2.py", "vllm_engine_pb2.pyi", "vllm_engine_pb2_grpc.py")


def generate(out_dir: Path) -> Path:
    """Write the modules under ``out_dir`` (at the proto's own relative path); their folder."""
    from grpc_tools import protoc

    args = [
        "grpc_tools.protoc",
        f"--proto_path={ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    return out_dir / Path(PROTO).parent


if __name__ == "__main__":
    folder = generate(ROOT)
    print("\n".join(str(folder / name) for name in GENERATED))
    sys.exit(0)
