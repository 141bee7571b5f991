"""The command line as a contract: every command DESIGN.md names exists, is documented, and starts fast."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, presensi

CONTRACT = [
    ["init"], ["run"], ["demo"], ["status"], ["punch"], ["log", "list"], ["log", "export"], ["log", "verify"],
    ["enroll-photos"], ["identify"], ["scan"], ["finger", "info"], ["finger", "scan"], ["finger", "enroll"],
    ["time", "status"], ["sync", "now"], ["sync", "status"], ["fault", "report"], ["export"], ["server"],
]


@pytest.mark.parametrize("command", CONTRACT, ids=" ".join)
def test_contract_command_exists(command):
    result = presensi(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout or command == ["server"]


def test_every_command_is_documented_in_the_readme():
    from terminal.cli import build_parser

    readme = (REPO / "README.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = [name for name in sub.choices if f"presensi {name}" not in readme]
    assert not missing, f"README.md does not document: {', '.join(missing)}"


def test_starting_a_command_loads_no_heavy_libraries():
    """`presensi punch` must answer fast on a Pi: no command module may import numpy, OpenCV, dlib, requests
    or the web server at start-up; they load inside the command that needs them."""
    code = ("import sys; from terminal.cli import build_parser; build_parser(); "
            "print(' '.join(m for m in ('numpy', 'cv2', 'dlib', 'requests', 'fastapi', 'uvicorn', 'sqlite_utils', "
            "'serial', 'pyfingerprint', 'gpiozero', 'apscheduler') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "", f"imported at start-up: {out.stdout.strip()}"
