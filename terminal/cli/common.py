"""What every command shares: the -c/--config and --json options, loading the configuration, printing
results, and turning library errors into one clear line on stderr."""

from __future__ import annotations

import argparse
import json
import sys

from terminal import config as config_mod
from terminal.errors import LogError
from terminal.identity import KeyError_


class CommandError(Exception):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


# Library errors whose messages are written for users: shown as they are.
USER_ERRORS: tuple[type[Exception], ...] = (config_mod.ConfigError, LogError, KeyError_)


def common_options(top_level: bool = False) -> argparse.ArgumentParser:
    """-c and --json, accepted before or after the sub-command."""
    p = argparse.ArgumentParser(add_help=False)
    default = None if top_level else argparse.SUPPRESS
    p.add_argument("-c", "--config", metavar="FILE", default=default,
                   help="configuration file (default: $PRESENSI_CONFIG or /etc/presensi/presensi.toml)")
    p.add_argument("--json", action="store_true", default=False if top_level else argparse.SUPPRESS,
                   help="machine-readable output")
    return p


def add_command(sub, name: str, func, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text, parents=[common_options()])
    p.set_defaults(func=func)
    return p


def add_group(sub, name: str, help_text: str):
    """A command with sub-commands of its own (e.g. `presensi log list`)."""
    p = sub.add_parser(name, help=help_text, description=help_text, parents=[common_options()])
    return p.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)


def run_command(args: argparse.Namespace) -> int:
    try:
        return args.func(args) or 0
    except USER_ERRORS as e:
        raise CommandError(str(e)) from None


def load_config(args: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(getattr(args, "config", None))


def emit(args: argparse.Namespace, data, text: str | None = None) -> None:
    """Print data as one JSON document with --json, else the human text (or a readable JSON)."""
    if getattr(args, "json", False) or text is None:
        print(json.dumps(data, ensure_ascii=False, sort_keys=False))
    else:
        print(text)
    sys.stdout.flush()
