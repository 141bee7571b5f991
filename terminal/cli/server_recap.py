"""`presensi server recap --month YYYY-MM --format csv|xlsx [--out FILE]`: the monthly attendance recap per
employee for BKPSDM (sync/server/recap.py computes it, sync/server/recapexport.py writes the files; a
sub-command of the `server` group in terminal/cli/server.py). Notes about the recap (no roster published,
a month not over) go to stderr, so a CSV on stdout stays clean."""

from __future__ import annotations

import datetime as dt
import sys

from terminal.cli.common import CommandError, add_command, emit


def register(group) -> None:
    """Adds `recap` to the `server` group (called by terminal/cli/server.py)."""
    p = add_command(group, "recap", cmd_recap, "the monthly recap per employee (days present, minutes late and "
                    "early, missing masuk/pulang, apel, work codes) as CSV or XLSX for BKPSDM")
    p.add_argument("--month", required=True, metavar="YYYY-MM", help="the month, e.g. 2026-11")
    p.add_argument("--format", choices=("csv", "xlsx"), default="csv",
                   help="csv (one row per employee) or xlsx (sheets Rekap, Rincian per day with the punch ids, "
                        "Keterangan); default csv")
    p.add_argument("--out", "-o", metavar="FILE", help="write to FILE (needed for xlsx); csv goes to stdout "
                   "without it; --json without --out prints the whole recap with the punch ids per figure")
    p.add_argument("--until", metavar="YYYY-MM-DD", help="count working days up to this date (default: today, "
                   "so the rest of a running month is not counted as absent)")
    p.add_argument("--db", required=True, metavar="PATH", help="the server's SQLite file or postgresql:// URL")


def cmd_recap(args) -> int:
    from sync.server import recap, recapexport

    until = _date(args.until) if args.until else None
    try:
        result = recap.build(_open(args.db), args.month, until=until)
    except recap.RecapError as e:
        raise CommandError(str(e)) from None
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.out:
        try:
            recapexport.save(result, args.format, args.out)
        except OSError as e:
            raise CommandError(f"cannot write {args.out}: {e.strerror or e}; check the directory and its "
                               "permissions") from None
        summary = {"month": result.month, "until": result.until, "format": args.format, "out": args.out,
                   "employees": len(result.employees), "working_days": len(result.calendar.working_days),
                   "calendar": result.calendar.source, "notes": result.notes}
        emit(args, summary, f"recap {result.month}: {len(result.employees)} employees, "
                            f"{summary['working_days']} working days ({result.calendar.source}) -> {args.out}")
    elif getattr(args, "json", False):
        emit(args, result.as_dict())
    elif args.format == "xlsx":
        raise CommandError("an XLSX file is binary: give --out FILE (e.g. --out rekap-2026-11.xlsx)")
    else:
        recapexport.write_csv(result, sys.stdout)
    return 0


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--until {text!r} is not a date: use YYYY-MM-DD") from None


def _open(db: str):
    from sync.server.storage import open_store

    try:
        return open_store(db)
    except Exception as e:  # sqlite3/psycopg errors: say which database and what to check
        raise CommandError(f"cannot open the server database {db}: {e}; check the path or URL and "
                           "permissions") from None
