#!/usr/bin/env bash
# Builds dist/connect.js, the bundle connect.html loads (index.html needs no build).
#   1. npm ci: connect-web, protobuf-es, protoc-gen-es and esbuild (package-lock.json);
#   2. protoc-gen-es (through grpcio-tools' protoc) turns streams.proto and its imports into
#      TypeScript under gen/;
#   3. esbuild bundles src/connect.ts (types stripped, no type check) into dist/connect.js.
# Idempotent and runnable from anywhere. PY picks the Python that has grpcio-tools and
# googleapis-common-protos (default: python).
set -euo pipefail
WEB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$WEB/../../.." && pwd)"
PY="${PY:-python}"
cd "$WEB"

npm ci --no-audit --no-fund --loglevel=error

# Include dirs: the repo's protos, googleapis-common-protos (google/api/*) and grpcio-tools'
# own google/protobuf/* (the well-known types; protoc-gen-es maps them to @bufbuild/protobuf/wkt).
mapfile -t INCLUDES < <("$PY" - <<'PYEOF'
import os
import google.api
import grpc_tools
print(os.path.dirname(os.path.dirname(next(iter(google.api.__path__)))))
print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))
PYEOF
)
rm -rf gen
mkdir -p gen
"$PY" -m grpc_tools.protoc \
  -I"$ROOT/protos" -I"${INCLUDES[0]}" -I"${INCLUDES[1]}" \
  --plugin=protoc-gen-es="$WEB/node_modules/.bin/protoc-gen-es" \
  --es_out="$WEB/gen" --es_opt=target=ts \
  examples/streams/v1/streams.proto rpckit/v1/stream.proto \
  google/api/annotations.proto google/api/http.proto google/api/httpbody.proto

node_modules/.bin/esbuild src/connect.ts --bundle --format=esm --target=es2022 \
  --sourcemap --log-level=warning --outfile=dist/connect.js
echo "built $WEB/dist/connect.js"
