#!/usr/bin/env bash
# buf lint over protos/ with the repo's buf.yaml, resolving google/api imports from the
# installed googleapis-common-protos (no Buf Schema Registry): protoc builds an image,
# buf lints only our files in it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
BUF="${BUF:-$ROOT/tests/node/node_modules/.bin/buf}"
SITE=$("$PY" -c 'import google.api, pathlib; print(pathlib.Path(next(iter(google.api.__path__))).parent.parent)')
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
cd "$ROOT/protos"
mapfile -t FILES < <(find . -name '*.proto' | sed 's|^\./||' | sort)
"$PY" -m grpc_tools.protoc -I . -I "$SITE" --include_imports --include_source_info \
  --descriptor_set_out="$TMP/image.binpb" "${FILES[@]}"
PATHS=(); for f in "${FILES[@]}"; do PATHS+=(--path "$f"); done
"$BUF" lint "$TMP/image.binpb" --config "$ROOT/buf.yaml" "${PATHS[@]}"
echo "buf lint: ${#FILES[@]} files clean"
