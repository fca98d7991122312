# install_locked PYTHON: every Python package from the lock (exact versions and hashes), then
# rpckit itself without its dependencies and without build isolation, so nothing unlocked
# enters. Sourced by .ci/setup.sh and tests/pythons.sh; tests/newest.sh tries the newest
# releases instead and reports what broke.
install_locked() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  "$1" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
    -r "$root/requirements-dev.lock"
  "$1" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    -e "$root"
}
