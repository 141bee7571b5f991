"""`presensi fault report|list|check`: IT staff report a broken part (with a photo of the damage), list
faults, and run the self-tests once. The daemon runs the same self-tests on its own every few seconds."""

from __future__ import annotations

import os

from terminal.cli.common import CommandError, add_command, add_group, emit, load_config
from terminal.log import punchlog
from terminal.ops import faults, status


def register(sub) -> None:
    group = add_group(sub, "fault", "report a broken part, list faults, run the self-tests")
    p = add_command(group, "report", cmd_report, "report a fault (IT staff), with an optional photo as evidence")
    p.add_argument("--category", required=True, choices=faults.CATEGORIES, help="which kind of part is broken")
    p.add_argument("--message", required=True, metavar="TEXT", help="what is broken and since when")
    p.add_argument("--photo", metavar="FILE", help="a JPEG/PNG photo of the damage (bukti kerusakan)")
    p.add_argument("--part", metavar="NAME", help="the part, if more specific than the category")
    p.add_argument("--reporter", metavar="NAME", default="", help="who reports (name or NIP)")
    p = add_command(group, "list", cmd_list, "open faults (with --all: the recent fault history)")
    p.add_argument("--all", action="store_true", help="show the recent history, not only open faults")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="with --all: at most N events")
    add_command(group, "check", cmd_check, "run the self-tests once and raise or clear faults")


def _open(cfg, writing: bool = False) -> punchlog.PunchLog:
    if writing:
        _refuse_root_in_foreign_state_dir(cfg.state_dir)
    return punchlog.PunchLog(cfg.state_dir, checkpoint_every=cfg.log.checkpoint_every)


def _refuse_root_in_foreign_state_dir(state_dir) -> None:
    """root writing into the service's state directory would leave root-owned photo folders (and possibly
    database side files) that the daemon, running as its own user, cannot write to afterwards."""
    try:
        owner = os.stat(state_dir).st_uid
    except OSError:
        return
    if os.geteuid() == 0 and owner != 0:
        user = _user_name(owner)
        raise CommandError(f"{state_dir} belongs to {user}; run this as that user so the daemon can keep "
                           f"writing there: sudo -u {user} presensi ...")


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid)


def cmd_report(args) -> int:
    cfg = load_config(args)
    photo = None
    if args.photo:
        try:
            with open(args.photo, "rb") as f:
                photo = f.read(faults.MAX_PHOTO_BYTES + 1)
        except OSError as e:
            raise CommandError(f"cannot read the photo {args.photo}: {e.strerror}; check the path") from None
    with _open(cfg, writing=True) as log:
        try:
            event = faults.report(log.conn, cfg.state_dir, category=args.category, message=args.message,
                                  photo_jpeg=photo, part=args.part, reporter=args.reporter)
        except faults.FaultError as e:
            raise CommandError(str(e)) from None
        log.audit(args.reporter or "cli", "fault.report", {"fault_event_id": event["id"],
                                                           "category": event["category"]})
    photo_note = f", photo {event['photo_path']}" if event["photo_path"] else ""
    emit(args, event, f"fault report {event['id']} recorded ({event['category']}{photo_note}); "
                      "it is sent to the central server with the next sync")
    return 0


def cmd_list(args) -> int:
    cfg = load_config(args)
    with _open(cfg) as log:
        rows = faults.recent(log.conn, args.limit) if args.all else faults.open_faults(log.conn)
    if getattr(args, "json", False):
        emit(args, rows)
        return 0
    if not rows:
        print("no open faults" if not args.all else "no fault events")
    for e in rows:
        photo = f"  photo {e['photo_path']}" if e["photo_path"] else ""
        print(f"{e['id']:>6}  {status.format_ns(e['realtime_ns'])}  {e['event']:<7} {e['part']:<12} "
              f"{e['message']}{photo}")
    return 0


def cmd_check(args) -> int:
    from terminal.ops import health  # lazy: every `presensi` start pays for the imports of every command module

    cfg = load_config(args)
    with _open(cfg, writing=True) as log:
        monitor = health.HealthMonitor(cfg, log.conn, log_id=log.log_id)
        written = monitor.tick()
        results = {n: r.as_dict() for n, r in monitor.last.items()}
    if getattr(args, "json", False):
        emit(args, {"results": results, "events": written})
    else:
        for name, r in results.items():
            print(f"{name:<12} {r['level']:<8} {r['message']}")
        for e in written:
            print(f"fault {e['event']}: {e['fault_key']}")
    return 0 if all(r["level"] != "fault" for r in results.values()) else 1

