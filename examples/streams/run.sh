#!/usr/bin/env bash
# The streams example from a clean clone: set-up (with the connect.html bundle), then serve it
# on gRPC and HTTP, with the web pages (index.html, connect.html) at the HTTP root, an access
# log line per call, and both uploads (UploadAsByteStream, UploadWithProgress) behind a
# bearer token (demo-token).
set -euo pipefail
RPCKIT_SETUP_NODE=0 RPCKIT_SETUP_BROWSER=0 source "$(dirname "${BASH_SOURCE[0]}")/../../.ci/setup.sh"
# setup.sh leaves ROOT set to the repo root; the web pages are served from /.
exec rpckit serve examples.streams.server:create_service \
  --grpc "${GRPC_ADDR:-127.0.0.1:50051}" --http "${HTTP_ADDR:-127.0.0.1:8080}" \
  --static "$ROOT/examples/streams/web" \
  --interceptor examples.streams.server:upload_auth "$@"
