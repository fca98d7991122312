#!/usr/bin/env bash
# Not part of CI: tries the newest release of every Python package (the ranges in
# pyproject.toml, no lock) in .venv-newest, runs the checks and tests on it, and reports
# which packages moved and which steps broke. Upgrading requirements-dev.lock is then a
# decision with a commit of its own (the command is at the top of the lock).
# Arguments go to pytest (default: everything but the browser tests).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
venv="$ROOT/.venv-newest"
rm -rf "$venv"
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade -e '.[dev]' || {
  echo "newest: the newest releases do not install together"; exit 1; }
export PATH="$venv/bin:$PATH"

echo "== packages newer than the lock"
"$venv/bin/python" - "$ROOT/requirements-dev.lock" <<'PY'
import re, sys
from importlib.metadata import distributions
locked = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==([^ ;\\]+)", open(sys.argv[1]).read(), re.M))
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
locked = {norm(k): v for k, v in locked.items()}
for dist in sorted(distributions(), key=lambda d: norm(d.metadata["Name"])):
    name = norm(dist.metadata["Name"])
    if name in locked and locked[name] != dist.version:
        print(f"  {name}: {locked[name]} -> {dist.version}")
PY

broken=()
step() { local name="$1"; shift; echo "== $name"; "$@" || broken+=("$name"); }
step ruff ruff check .
step mypy mypy
if [ "$#" -eq 0 ]; then
  set -- tests -m "not browser"
fi
step pytest python -m pytest -q -p no:cacheprovider "$@"
if [ "${#broken[@]}" -eq 0 ]; then
  echo "newest: nothing broke; the lock can be upgraded (see its first lines)"
else
  echo "newest: broken with the newest releases: ${broken[*]}"
  exit 1
fi
