"""`presensi server …`: the reference central server (run, add-device, punches, alarms, import; user, faults,
notices, publish-roster and recap in their own modules)."""

from __future__ import annotations

import json
import re
import signal
import sys

from terminal.cli import server_faults, server_notices, server_recap, server_roster, server_users
from terminal.cli.common import CommandError, add_command, add_group, emit

DEVICE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
PUNCH_FIELDS = ("device", "log_id", "seq", "employee", "method", "kind", "utc", "earliest", "latest", "basis",
                "flags")


def safe(value) -> str:
    from sync.server.display import safe as _safe

    return _safe(value)


def register(sub) -> None:
    srv = add_group(sub, "server", "the reference central server (development, tests, small regencies)")
    p = add_command(srv, "run", cmd_run, "serve the sync API and the pages (fleet, faults, punches) behind a login")
    _db(p)
    p.add_argument("--listen", default="127.0.0.1:8800", metavar="HOST:PORT",
                   help="address to listen on (port 0 = any free port; default 127.0.0.1:8800)")
    p.add_argument("--threads", type=int, default=4, help="worker threads (default 4)")
    p.add_argument("--silent-after", type=float, default=4 * 3600.0, metavar="SECONDS",
                   help="a terminal not heard from this long becomes a fault (default 14400 = 4 hours)")
    p.add_argument("--check-every", type=float, default=60.0, metavar="SECONDS",
                   help="how often the silent-terminal check runs (default 60)")
    p.add_argument("--timezone", default="Asia/Jakarta", choices=("Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"),
                   help="the timezone the pages show times in (default Asia/Jakarta, WIB)")
    p = add_command(srv, "add-device", cmd_add_device,
                    "register a device, bind its key, and print its token and the server key")
    p.add_argument("device_id", metavar="DEVICE_ID")
    p.add_argument("--public-key", metavar="B64", help="bind the device's Ed25519 public key (the one `presensi "
                   "init` printed on the terminal); without it a one-time enrolment code is printed, which the "
                   "terminal's first signed request redeems ([central] enrolment_code)")
    _db(p)
    p = add_command(srv, "rebind-device", cmd_rebind_device,
                    "bind a new key to a registered device (a re-imaged terminal); audited and alarmed, "
                    "issues a new token")
    p.add_argument("device_id", metavar="DEVICE_ID")
    p.add_argument("--public-key", metavar="B64", help="the new key (`presensi init` on the re-imaged terminal "
                   "prints it); without it a one-time enrolment code is printed")
    p.add_argument("--reason", required=True, help="why (kept in the audit trail), e.g. 'SD card replaced'")
    _db(p)
    p = add_command(srv, "punches", cmd_punches, "list stored punches, one line each")
    _db(p)
    p.add_argument("--device", metavar="DEVICE_ID", help="only this device")
    p = add_command(srv, "alarms", cmd_alarms, "list alarms (gaps, edits, bad signatures) per device")
    _db(p)
    p.add_argument("--device", metavar="DEVICE_ID", help="only this device")
    p = add_command(srv, "import", cmd_import, "take in an offline export (`presensi export --to DIR`)")
    p.add_argument("dir", metavar="DIR")
    _db(p)
    server_roster.register(srv)
    server_users.register(srv, _store)
    server_faults.register(srv, _store)
    server_notices.register(srv)
    server_recap.register(srv)


def _db(p) -> None:
    p.add_argument("--db", required=True, metavar="PATH",
                   help="SQLite file of the server (created if missing) or a postgresql:// URL")


def _store(args):
    from sync.server.storage import open_store

    try:
        return open_store(args.db)
    except Exception as e:  # sqlite3/psycopg errors: say which database and what to check
        raise CommandError(f"cannot open the server database {args.db}: {e}; check the path or URL "
                           "and permissions") from None


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise CommandError(f"--listen {text!r}: use HOST:PORT, e.g. 127.0.0.1:8800")
    return host.strip("[]"), int(port)


def cmd_run(args) -> int:
    from sync.server import fleet, pages
    from sync.server.app import build_app, serve

    host, port = _listen(args.listen)
    if not (args.silent_after > 0 and args.check_every > 0):
        raise CommandError("--silent-after and --check-every must be positive numbers of seconds")
    store = _store(args)
    app = build_app(store, pages.Settings(silent_after_s=args.silent_after, timezone=args.timezone))
    fleet.SilenceWatch(store, args.silent_after, args.check_every).start()

    def ready(url: str) -> None:
        print(f"listening on {url}", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(app, host, port, on_ready=ready, threads=max(1, args.threads))
    except OSError as e:
        raise CommandError(f"cannot listen on {args.listen}: {e.strerror or e}; choose another port") from None
    return 0


def cmd_add_device(args) -> int:
    return _register(args, rebind=False)


def cmd_rebind_device(args) -> int:
    return _register(args, rebind=True)


def _register(args, rebind: bool) -> int:
    import getpass

    from sync.server.app import add_device

    if not DEVICE_ID.match(args.device_id):
        raise CommandError(f"device id {args.device_id!r} is not valid: use 1-64 letters, digits, '.', '_' or '-'")
    try:
        actor = getpass.getuser()
    except (KeyError, OSError):
        actor = "unknown"
    try:
        result = add_device(_store(args), args.device_id, args.public_key, rebind=rebind, actor=actor,
                            reason=getattr(args, "reason", "") or "")
    except ValueError as e:
        raise CommandError(str(e)) from None
    lines = [f"device      {result['device']}", f"token       {result['token']}",
             f"server_key  {result['server_key']}"]
    if result.get("enrolment_code"):
        lines += [f"enrolment_code {result['enrolment_code']}",
                  "put token, server_key and enrolment_code into the terminal's [central] section; the code "
                  "binds the first key that uses it and then expires (unused, after 3 days)"]
    else:
        lines += [f"bound key   {result['public_key_fingerprint']} (compare with what `presensi init` printed)",
                  "put token and server_key into the terminal's [central] section"]
    emit(args, result, "\n".join(lines))
    return 0


def _work_code(details) -> int | None:
    """The employee's work code in the hashed details (e.g. 1 Dinas Luar), or None."""
    try:
        code = json.loads(details or "{}").get("work_code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def cmd_punches(args) -> int:
    store = _store(args)
    for p in store.iter_punches(args.device):
        row = {"device": p["device_id"], **{k: p[k] for k in PUNCH_FIELDS[1:-1]},
               "flags": json.loads(p["flags"] or "[]") + json.loads(p["problems"] or "[]")}
        # `kind` is the punch's kind as the terminal derives it now (it follows re-anchoring); the value in
        # the hashed record ('' since derived kinds) stays available as `recorded_kind`
        derived = p.get("derived")
        row.update(kind=(derived or {}).get("kind") or p["kind"], recorded_kind=p["kind"], derived=derived,
                   work_code=_work_code(p.get("details")))
        if getattr(args, "json", False):
            print(json.dumps(row, ensure_ascii=True))  # \u escapes: no control character reaches the screen
        else:
            print("\t".join("-" if row[k] is None else safe(",".join(row[k]) or "-") if k == "flags"
                            else safe(row[k]) for k in PUNCH_FIELDS))
    return 0


def cmd_alarms(args) -> int:
    alarms = list(reversed(_store(args).alarms(args.device, limit=100000)))
    if getattr(args, "json", False):
        for a in alarms:
            print(json.dumps(a, ensure_ascii=True))
        return 0
    from terminal.ops.status import format_ns

    if not alarms:
        print("no alarms")
    for a in alarms:
        print(f"{format_ns(a['created_ns'])}  {safe(a['device_id'])}  {safe(a['kind']):<13} {safe(a['message'])}")
    return 0


def cmd_import(args) -> int:
    from sync.server import offline

    try:
        result = offline.import_dir(_store(args), args.dir)
    except offline.ImportRefused as e:
        raise CommandError(f"import refused: {e}") from None
    emit(args, result, f"imported {result['stored']} new punches from {result['device']} "
                       f"({result['duplicates']} already delivered, {result['flagged']} flagged); "
                       f"acked through seq {result['acked_through']}")
    return 0
