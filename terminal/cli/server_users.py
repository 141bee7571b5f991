"""`presensi server user add|passwd|list`: the accounts of the central server's pages (a sub-group of
`presensi server`, registered by terminal/cli/server.py). Passwords are read from the terminal without
echo, or from standard input with --password-stdin (scripts); never from the command line, where `ps`
and the shell history would show them."""

from __future__ import annotations

import getpass
import sys

from terminal.cli.common import CommandError, add_command, add_group, emit


def register(group, store_of) -> None:
    """`store_of(args)` opens the server database of --db (terminal/cli/server.py, with its error message)."""
    users = add_group(group, "user", "accounts of the server's pages (roles: admin, diskominfo, bkpsdm)")
    p = add_command(users, "add", cmd_add, "add an account with a role")
    p.add_argument("username", metavar="NAME")
    p.add_argument("--role", required=True, choices=("admin", "diskominfo", "bkpsdm"),
                   help="diskominfo: devices and faults; bkpsdm: punches and recap; admin: everything and accounts")
    _common(p)
    p = add_command(users, "passwd", cmd_passwd, "set a new password (ends the account's sessions)")
    p.add_argument("username", metavar="NAME")
    _common(p)
    p = add_command(users, "list", cmd_list, "list the accounts and their roles")
    p.add_argument("--db", required=True, metavar="PATH", help="the server's SQLite file or postgresql:// URL")
    for parser in users.choices.values():
        parser.set_defaults(store_of=store_of)


def _common(p) -> None:
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input (for scripts)")
    p.add_argument("--db", required=True, metavar="PATH", help="the server's SQLite file or postgresql:// URL")


def _password(args) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask for the password on: pipe it in with --password-stdin")
    first = getpass.getpass("new password: ")
    if getpass.getpass("again: ") != first:
        raise CommandError("the two passwords differ; nothing was changed")
    return first


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _store(args):
    return args.store_of(args)


def cmd_add(args) -> int:
    from sync.server import accounts

    store = _store(args)
    try:
        accounts.add(store, args.username, args.role, _password(args), actor=_actor())
    except accounts.AccountError as e:
        raise CommandError(str(e)) from None
    emit(args, {"username": args.username, "role": args.role}, f"added {args.username} ({args.role})")
    return 0


def cmd_passwd(args) -> int:
    from sync.server import accounts

    store = _store(args)
    try:
        accounts.set_password(store, args.username, _password(args), actor=_actor())
    except accounts.AccountError as e:
        raise CommandError(str(e)) from None
    emit(args, {"username": args.username, "changed": True},
         f"password of {args.username} changed; its sessions have ended")
    return 0


def cmd_list(args) -> int:
    from sync.server import accounts
    from terminal.ops.status import format_ns

    rows = accounts.list_accounts(_store(args))
    out = [{"username": a["username"], "role": a["role"], "created_ns": a["created_ns"],
            "password_changed_ns": a["password_ns"], "disabled": bool(a["disabled"])} for a in rows]
    text = "\n".join(f"{a['username']:<24} {a['role']:<11} created {format_ns(a['created_ns'])}"
                     f"{'  DISABLED' if a['disabled'] else ''}" for a in out) or "no accounts yet: add one with " \
        "`presensi server user add NAME --role admin`"
    emit(args, out, text)
    return 0
