# Sourced by the README's commands: builds .venv and the Node tools from a clean clone.
# Idempotent: a second run only checks what is already installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
source "$ROOT/.ci/locked.sh"
install_locked .venv/bin/python
export PATH="$ROOT/.venv/bin:$PATH"
# Debian's Chromium for the browser tests (never a browser download of Playwright's own).
if [ "${RPCKIT_SETUP_BROWSER:-1}" = 1 ] && ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: the browser tests need Debian's chromium (apt-get install chromium)" >&2
  fi
fi
# Debian's nginx for the reverse-proxy tests (tests/serving/test_nginx.py) and bench/files.py,
# wrk for bench/unary.py, and redis-server for the Redis stream log (tests/durable).
for tool in nginx wrk redis-server; do
  if ! command -v "$tool" >/dev/null && [ ! -x "/usr/sbin/$tool" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
    else
      echo "setup: the serving tests and benchmarks need Debian's $tool (apt-get install $tool)" >&2
    fi
  fi
done
# Node and npm: installed with apt when missing (as root); returns 1 when they cannot be.
ensure_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
    else
      echo "setup: node and npm are needed (apt-get install nodejs npm)" >&2
      return 1
    fi
  fi
}
if [ "${RPCKIT_SETUP_NODE:-1}" = 1 ]; then
  ensure_node || exit 1
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
  export PATH="$ROOT/tests/node/node_modules/.bin:$PATH"
fi
# The example's pages: index.html's app (on the generated TypeScript client) and
# connect.html (connect-web), bundled by build.sh. The tests need them; without Node the
# example only warns, and its page says to run build.sh.
if [ "${RPCKIT_SETUP_WEB:-1}" = 1 ]; then
  if ensure_node; then
    PY="$ROOT/.venv/bin/python" bash examples/streams/web/build.sh
  elif [ "${RPCKIT_SETUP_NODE:-1}" = 1 ]; then
    exit 1
  else
    echo "setup: skipping the web page's bundle (examples/streams/web/build.sh needs node)" >&2
  fi
fi
