#!/usr/bin/env python3
"""Generate Python gRPC stubs for the hanoi247 desk API from the protos.

    python generate.py                  # stubs in ./generated (next to this file)
    python generate.py --out DIR        # stubs in DIR
    python generate.py --proto DIR      # protos from DIR (default: ../../proto of this repository)

The desk API is `hanoi247/v1/desk.proto`; it imports `hanoi247/v1/envelope.proto` and
`google/protobuf/timestamp.proto`. The latter ships with grpcio-tools under `grpc_tools/_proto`,
so that directory is on the include path too. The stubs land as `DIR/hanoi247/v1/*_pb2*.py` and
are imported as `from hanoi247.v1 import desk_pb2, desk_pb2_grpc` with DIR on `sys.path`.
"""

import argparse
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_PROTO_ROOT = HERE.parent.parent / "proto"
DEFAULT_OUT = HERE / "generated"
# Only what an agency needs: the desk service and the envelope it carries (peer.proto is for nodes).
PROTOS = ["hanoi247/v1/envelope.proto", "hanoi247/v1/desk.proto"]


def generate(out: pathlib.Path = DEFAULT_OUT, proto_root: pathlib.Path = DEFAULT_PROTO_ROOT) -> None:
    """Runs protoc (bundled in grpcio-tools) over the desk protos into `out`."""
    import grpc_tools
    from grpc_tools import protoc

    for proto in PROTOS:
        if not (proto_root / proto).is_file():
            raise SystemExit(f"generate: {proto_root / proto} not found (use --proto DIR)")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    if not os.path.isfile(os.path.join(well_known, "google", "protobuf", "timestamp.proto")):
        raise SystemExit(f"generate: google/protobuf/timestamp.proto not found under {well_known}")
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *PROTOS,
    ]
    status = protoc.main(args)
    if status != 0:
        raise SystemExit(f"generate: protoc failed with status {status}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--proto", type=pathlib.Path, default=DEFAULT_PROTO_ROOT, help="proto root")
    args = parser.parse_args()
    generate(args.out.resolve(), args.proto.resolve())
    print(f"stubs written to {args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
