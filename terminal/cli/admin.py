"""`presensi admin set-password`: the password of the local admin pages (stored as a scrypt hash only)."""

from __future__ import annotations

import getpass
import sys

from terminal.cli.common import CommandError, add_command, add_group, emit, load_config


def register(sub) -> None:
    admin = add_group(sub, "admin", "the local admin pages (http://<terminal>/admin/)")
    add_command(admin, "set-password", cmd_set_password,
                "set the admin password (asked twice; read from standard input when it is not a terminal)")


def _ask() -> tuple[str, str]:
    if sys.stdin.isatty():
        return getpass.getpass("new admin password: "), getpass.getpass("again: ")
    lines = sys.stdin.read().splitlines() + ["", ""]
    return lines[0], lines[1]


def cmd_set_password(args) -> int:
    from terminal.web import auth

    cfg = load_config(args)
    first, second = _ask()
    if first != second:
        raise CommandError("the two passwords differ; nothing was changed")
    try:
        auth.set_password(cfg.state_dir, first)
    except auth.PasswordError as e:
        raise CommandError(f"{e}; nothing was changed") from None
    except OSError as e:
        raise CommandError(f"cannot write {auth.admin_path(cfg.state_dir)}: {e.strerror}; "
                           "run as the presensi user (sudo -u presensi presensi admin set-password)") from None
    emit(args, {"ok": True, "path": str(auth.admin_path(cfg.state_dir))},
         f"admin password set ({auth.admin_path(cfg.state_dir)}); admins logged in must log in again")
    return 0
