"""The `presensi` command line. Each module in COMMAND_MODULES registers its sub-commands; the commands
are thin wrappers over library calls and add no logic of their own.

Every command takes -c/--config FILE and --json; errors go to stderr with a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from terminal import __version__
from terminal.cli.common import CommandError, common_options, run_command

# Explicit registry: one line per command module (order = order in --help).
COMMAND_MODULES = [
    "terminal.cli.log",
    "terminal.cli.run",
    "terminal.cli.demo",
    "terminal.cli.face",
    "terminal.cli.finger",
    "terminal.cli.time",
    "terminal.cli.sync",
    "terminal.cli.fault",
    "terminal.cli.roster",
    "terminal.cli.schedule",
    "terminal.cli.models",
    "terminal.cli.server",
    "terminal.cli.admin",
    "terminal.cli.config",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="presensi",
        description="presensi-edge: the attendance terminal's daemon and tools",
        parents=[common_options(top_level=True)],
    )
    parser.add_argument("--version", action="version", version=f"presensi-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except CommandError as e:
        print(f"presensi: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("presensi: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
