#!/usr/bin/env bash
# Sets up a virtual environment with presensi-edge and runs `presensi demo`: the whole flow on emulated
# hardware and an embedded central server. Works on a fresh machine with Python 3.11+ and pip.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PRESENSI_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -e ".[demo]"
exec "$VENV/bin/presensi" demo "$@"
