#!/usr/bin/env bash
# `site`: build the documentation site in strict mode (a broken link or reference fails).
# `package`: build the wheel and sdist without network (no build isolation) and twine-check them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
case "${1:-}" in
  site)
    NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet -f examples/site/mkdocs.yml -d "$out/site"
    test -s "$out/site/tutorial/index.html"
    ;;
  package)
    python -m build --no-isolation --outdir "$out" . >/dev/null
    twine check --strict "$out"/*
    python - "$out" <<'PY'
import sys, zipfile, pathlib, rpckit
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
names = zipfile.ZipFile(wheel).namelist()
assert f"rpckit-{rpckit.__version__}" in wheel.name, wheel.name
assert any(n.endswith("licenses/LICENSE") for n in names), "LICENSE missing from the wheel"
assert "rpckit/tools/docs.py" in names and "rpckit/py.typed" in names
print(f"{wheel.name}: {len(names)} files")
PY
    ;;
  *) echo "usage: $0 site|package" >&2; exit 2 ;;
esac
