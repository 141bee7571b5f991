"""`presensi server publish-roster FILE --db PATH`: sign a roster from the staff's employee list and photos
and publish it to the terminals (a sub-command of the `server` group in terminal/cli/server.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from terminal.cli.common import CommandError, add_command, emit


def register(group) -> None:
    """Adds `publish-roster` to the `server` group (called by terminal/cli/server.py)."""
    p = add_command(group, "publish-roster", cmd_publish_roster,
                    "sign and publish a roster from a CSV/JSON list of employees plus photos")
    p.add_argument("employees", metavar="CSV_OR_JSON",
                   help="employees: CSV with id,name[,uid][,pin_allowed][,finger_templates] or a JSON list")
    p.add_argument("--photos", metavar="DIR", help="enrolment photos: DIR/<id>/*.jpg or DIR/<id>.jpg")
    p.add_argument("--schedule", metavar="FILE", help="work schedule (JSON object)")
    p.add_argument("--holidays", metavar="FILE", help='holidays (JSON list of {"date": "YYYY-MM-DD", "name"})')
    p.add_argument("--version", type=int, metavar="N", help="roster version (default: the latest + 1)")
    p.add_argument("--output", "-o", metavar="FILE", help="also write the bundle to FILE (for `roster import`)")
    p.add_argument("--db", required=True, metavar="PATH", help="the server's SQLite file or postgresql:// URL")


def _json_file(path: str | None, kind: type, what: str):
    if path is None:
        return kind()
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CommandError(f"{path}: cannot read the {what} ({e}); it must be a JSON file") from None
    if not isinstance(value, kind):
        raise CommandError(f"{path}: the {what} must be a JSON {'object' if kind is dict else 'list'}")
    return value


def cmd_publish_roster(args) -> int:
    from sync.server import offices, republish, rosterfiles
    from sync.server.storage import open_store
    from sync.wire import rosterbundle

    store = open_store(args.db)
    latest = store.latest_roster()
    previous = []
    if latest is not None:  # keep every employee's uid (ZKTeco user number) from the last roster
        previous = rosterbundle.verify_bundle(latest["bundle"], store.server_key().public_key(), 0)["employees"]
    if latest is not None and args.version is not None and args.version <= latest["version"]:
        raise CommandError(f"--version {args.version} is not newer than the published version {latest['version']}; "
                           "terminals would refuse it")
    try:
        employees = rosterfiles.publish_from_files(args.employees, args.photos, previous=previous)
        offices.set_employee_offices(store, {e["id"]: e["office"] for e in employees})
        # the templates terminals enrolled for these employees come along (sync/server/enrolments.py)
        result = republish.publish_next(store, employees=employees, version=args.version,
                                        schedule=_json_file(args.schedule, dict, "schedule"),
                                        holidays=_json_file(args.holidays, list, "holidays"))
    except ValueError as e:
        raise CommandError(str(e)) from None
    except rosterbundle.BundleRejected as e:
        raise CommandError(f"the roster would be refused by the terminals ({e.code}): {e.reason}") from None
    bundle = result.pop("bundle")
    if args.output:  # it holds every template: readable by its owner only, like the database
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(bundle)
        os.chmod(args.output, 0o600)
    result["output"] = args.output
    emit(args, result, f"published roster version {result['version']}: {result['employees']} employees, "
                       f"{result['face_photos']} photos, {result['bytes']} bytes")
    return 0
