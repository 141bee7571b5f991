#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine (Debian packages, a virtual environment with the
# project and its test dependencies), checks style (ruff) and the import rules (import-linter's contracts in
# .importlinter), and runs the test suite. The README's test command is this script.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests need beyond Python: libfaketime (test_time_blackbox), systemd-analyze and the shell
# linter (test_systemd), PostgreSQL (started by the tests' fixture), Chromium (test_web), util-linux's
# setpriv and runuser (an unreadable file for root; the cluster as postgres), gpsd and gpsfake
# (test_time_sources), e2fsprogs and mount (a loop-mounted full ext4, test_full_disk). In CI (CI=true)
# a missing one fails the tests that need it instead of skipping them (tests/conftest.py).
APT_PACKAGES=(faketime systemd shellcheck postgresql chromium util-linux gpsd gpsd-clients e2fsprogs mount)
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
# Two workers, each taking whole test files (module fixtures such as a daemon or a PostgreSQL cluster stay
# one per file): most tests wait on processes, sockets and the sensor emulator, so two workers on two cores
# roughly halve the run. PRESENSI_TEST_WORKERS=0 runs everything in one process.
WORKERS=${PRESENSI_TEST_WORKERS:-2}
if [ "$WORKERS" = 0 ]; then
  exec "$VENV/bin/python" -m pytest -q "$@"
fi
exec "$VENV/bin/python" -m pytest -q -n "$WORKERS" --dist loadfile "$@"
