#!/usr/bin/env bash
# Regenerate duct/protocol/remote_pb2.py from duct/protocol/remote.proto.
# Needs protoc: grpcio-tools from PyPI bundles one (pip install grpcio-tools).
set -euo pipefail
cd "$(dirname "$0")/../duct/protocol"
python -m grpc_tools.protoc --proto_path=. --python_out=. --pyi_out=. remote.proto
echo "generated duct/protocol/remote_pb2.py and remote_pb2.pyi"
