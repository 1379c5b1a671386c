#!/usr/bin/env bash
# Regenerates the checked-in protobuf/gRPC Python modules from the .proto files here.
# Imports between generated modules are rewritten to absolute `block_sdk.protos.x_pb2`
# imports, so the package works without adding this folder to sys.path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
cd "$here"
"$python" -m grpc_tools.protoc -I . \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  aios_packet.proto vdag_packet.proto inference_proxy.proto queue_envelope.proto
for f in *_pb2.py *_pb2_grpc.py *_pb2.pyi; do
  sed -i -E 's/^import ([a-z_]+_pb2) as /from block_sdk.protos import \1 as /' "$f"
done
# The envelope proto declares no service, so its empty gRPC module is noise.
rm -f queue_envelope_pb2_grpc.py
echo "generated: $(ls *_pb2*.py* | tr '\n' ' ')"
