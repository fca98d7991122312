#!/usr/bin/env bash
# The whole test suite from a clean clone: set-up, ruff, mypy strict, buf lint, pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/setup.sh"
echo "== ruff"; ruff check .
echo "== mypy"; mypy
echo "== buf lint"; bash tests/lint_protos.sh
echo "== pytest"; pytest "$@"
