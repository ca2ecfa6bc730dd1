#!/usr/bin/env bash
# Regenerate the checked-in protobuf/gRPC stubs. Usage: tools/gen_protos.sh [OUT_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/protos}
py=${PYTHON:-$here/.venv/bin/python}
mkdir -p "$out/corral/v1"
"$py" -m grpc_tools.protoc -I "$here/protos" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$here"/protos/corral/v1/*.proto
