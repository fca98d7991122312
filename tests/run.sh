#!/usr/bin/env bash
# The whole test suite from a clean clone: set-up, ruff, mypy strict, buf lint, the docs
# site (mkdocs --strict), the wheel and sdist (twine check), pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/setup.sh"
echo "== ruff"; ruff check .
echo "== mypy"; mypy
echo "== layers (import contracts)"; lint-imports --no-cache
echo "== buf lint"; bash tests/lint_protos.sh
echo "== docs site (strict)"; bash tests/site_and_package.sh site
echo "== wheel and sdist"; bash tests/site_and_package.sh package
echo "== pytest"; pytest "$@"
echo "== other Pythons (pure and in-process tests)"; bash tests/pythons.sh
