#!/usr/bin/env bash
# The in-process tests (no socket, process or browser) on every other supported CPython
# (pyproject: 3.11-3.13).
# tests/run.sh runs the whole suite on .venv's Python; this runs the rest of the versions,
# each in its own .venv-3.X. A version that cannot be found is a failure under CI=true and
# a skip (with a note) otherwise. RPCKIT_PYTHONS overrides the list ("3.12 3.13").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source "$ROOT/.ci/locked.sh"
VERSIONS="${RPCKIT_PYTHONS:-3.12 3.13}"
in_ci() { case "${CI:-}" in 1|true|TRUE|yes) return 0;; esac; return 1; }

# An interpreter for version $1 (e.g. 3.12), found without a hard-coded path: python3.12 on
# PATH if it really runs, else the newest pyenv install of that version.
find_python() {
  local version="$1" candidate installed
  candidate="$(command -v "python$version" || true)"
  if [ -n "$candidate" ] && "$candidate" -c 'import sys' >/dev/null 2>&1; then
    echo "$candidate"; return 0
  fi
  if command -v pyenv >/dev/null; then
    installed="$(pyenv versions --bare 2>/dev/null | grep -E "^${version//./\\.}(\.[0-9]+)?$" | sort -V | tail -1 || true)"
    if [ -n "$installed" ]; then
      candidate="$(PYENV_VERSION="$installed" pyenv which "python$version" 2>/dev/null || true)"
      if [ -n "$candidate" ] && "$candidate" -c 'import sys' >/dev/null 2>&1; then
        echo "$candidate"; return 0
      fi
    fi
  fi
  return 1
}

# The in-process tests: everything not marked loopback, process or browser (pyproject.toml
# registers the markers; tests/conftest.py fails a test that uses a socket or starts a process
# without its marker). The others run on .venv's Python in tests/run.sh.
IN_PROCESS=(-m "not loopback and not process and not browser")

status=0
for version in $VERSIONS; do
  if ! python="$(find_python "$version")"; then
    if in_ci; then
      echo "pythons: CPython $version not found (CI=true: every supported version must run)" >&2
      status=1
    else
      echo "pythons: CPython $version not found; skipped" >&2
    fi
    continue
  fi
  venv="$ROOT/.venv-$version"
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
  fi
  install_locked "$venv/bin/python"
  echo "== pytest on $("$venv/bin/python" -c 'import platform; print(platform.python_version())')"
  if ! "$venv/bin/python" -m pytest -q -p no:cacheprovider "${IN_PROCESS[@]}" tests "$@"; then
    status=1
  fi
done
exit "$status"
