#!/usr/bin/env bash
# Builds the bundles the example's pages load: dist/app.js (index.html) and dist/connect.js
# (connect.html).
#   1. npm ci: connect-web, protobuf-es, protoc-gen-es, esbuild and typescript
#      (package-lock.json);
#   2. `rpckit generate --ts` writes rpckit's own typed client for streams.proto (and
#      rpckit/v1/durable.proto: the Stop of the durable card) under gen-ts/;
#   3. protoc-gen-es (through grpcio-tools' protoc) turns streams.proto and its imports into
#      connect-es TypeScript under gen/;
#   4. tsc type-checks both pages' code against their generated clients (tsconfig.json);
#   5. esbuild bundles src/app.ts into dist/app.js and src/connect.ts into dist/connect.js.
# gen-ts/, gen/ and dist/ are build output (not committed): every run writes them afresh
# from the .proto files and the generator. Idempotent and runnable from anywhere. PY picks the
# Python that has rpckit, grpcio-tools and googleapis-common-protos (default: python).
set -euo pipefail
WEB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$WEB/../../.." && pwd)"
PY="${PY:-python}"
cd "$WEB"

npm ci --no-audit --no-fund --loglevel=error

# rpckit's client: plain proto3-JSON interfaces and a dependency-free runtime over fetch.
rm -rf gen-ts
(cd "$ROOT" && "$PY" -m rpckit generate -I "$ROOT/protos" --ts "$WEB/gen-ts" \
  examples/streams/v1/streams.proto rpckit/v1/durable.proto >/dev/null)

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

# esbuild strips types without checking them: tsc does (--strict, no output).
node_modules/.bin/tsc -p tsconfig.json

for page in app connect; do
  node_modules/.bin/esbuild "src/$page.ts" --bundle --format=esm --target=es2022 \
    --sourcemap --log-level=warning --outfile="dist/$page.js"
done
echo "built $WEB/dist/app.js and $WEB/dist/connect.js"
