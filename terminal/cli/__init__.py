"""The `presensi` command line. Each module in COMMAND_MODULES registers its sub-commands; the commands
are thin wrappers over library calls and add no logic of their own.

Every command takes -c/--config FILE and --json; errors go to stderr with a non-zero exit.
"""

from __future__ import annotations

import argparse
import sys

from terminal import __version__
from terminal.cli import (
    admin,
    config,
    demo,
    face,
    fault,
    finger,
    log,
    models,
    roster,
    run,
    schedule,
    server,
    sync,
    time,
)
from terminal.cli.common import CommandError, common_options, run_command

# Explicit registry: one module per command group (order = order in --help). Each module imports what its
# commands need inside the command functions, so importing them all here keeps `presensi --help` cheap.
COMMAND_MODULES = (log, run, demo, face, finger, time, sync, fault, roster, schedule, models, server, admin,
                   config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="presensi",
        description="presensi-edge: the attendance terminal's daemon and tools",
        parents=[common_options(top_level=True)],
    )
    parser.add_argument("--version", action="version", version=f"presensi-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
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
