#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine (Debian packages, a virtual environment with the
# project and its test dependencies), checks style (ruff) and the import rules (import-linter's contracts in
# .importlinter), and runs the test suite. The README's test command is this script.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(faketime systemd shellcheck postgresql chromium e2fsprogs mount util-linux)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

VENV=${PRESENSI_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -e ".[dev]"
"$VENV/bin/ruff" check .
"$VENV/bin/lint-imports" --no-cache
exec "$VENV/bin/python" -m pytest -q "$@"
