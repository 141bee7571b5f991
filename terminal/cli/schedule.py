"""`presensi schedule show|try`: check the punch windows and holidays in force (configuration or the
roster's published schedule), and what a punch at a given office-local time would be."""

from __future__ import annotations

import datetime as dt
import sys

from terminal.cli.common import CommandError, add_command, add_group, emit, load_config
from terminal.log import punchlog


def register(sub) -> None:
    group = add_group(sub, "schedule", "punch windows, holidays and lateness in force")
    p = add_command(group, "show", cmd_show, "the windows of the coming days (from the roster or [schedule])")
    p.add_argument("--date", metavar="YYYY-MM-DD", help="first day (default: today in the office's timezone)")
    p.add_argument("--days", type=int, default=7, metavar="N", help="how many days (default 7)")
    p = add_command(group, "try", cmd_try, "what a punch at an office-local time would be (nothing is recorded)")
    p.add_argument("--at", required=True, metavar="'YYYY-MM-DD HH:MM'", help="office-local date and time")
    p.add_argument("--employee", metavar="ID", help="look at this employee's punches in the log (repeats)")
    p.add_argument("--name", default="", help="the name to show in the message")


def load_schedule(cfg):
    from terminal.punch import roster, rules  # lazy: every `presensi` start pays for every command's imports

    try:
        with roster.Roster.open(cfg.state_dir) as r:
            return rules.Schedule.from_config(cfg, roster=r)
    except roster.RosterError as e:
        raise CommandError(str(e)) from None


def _plan_dict(plan) -> dict:
    from terminal.punch import rules

    windows = {w.kind: {"opens": w.opens.strftime("%H:%M"), "due": w.due.strftime("%H:%M") if w.due else None,
                        "closes": w.closes.strftime("%H:%M")} for w in plan.windows}
    return {"date": plan.date.isoformat(), "weekday": rules.WEEKDAYS[plan.date.weekday()],
            "workday": plan.workday, "name": plan.name, "windows": windows}


def cmd_show(args) -> int:
    cfg = load_config(args)
    sched = load_schedule(cfg)
    try:
        first = dt.date.fromisoformat(args.date) if args.date else sched.local(dt.datetime.now(dt.UTC)).date()
    except ValueError:
        raise CommandError(f"--date {args.date!r} is not a date; use YYYY-MM-DD") from None
    days = [_plan_dict(sched.day_plan(first + dt.timedelta(days=i))) for i in range(max(1, min(args.days, 366)))]
    out = {"timezone": cfg.device.timezone, "source": sched.source, "problem": sched.problem,
           "repeat_minutes": cfg.schedule.repeat_minutes, "days": days}
    lines = [f"timezone {cfg.device.timezone}, schedule from {sched.source}"
             + (f" (PROBLEM: {sched.problem})" if sched.problem else "")]
    for d in days:
        what = "  ".join(f"{k} {w['opens']}-{w['due'] + '-' if w['due'] else ''}{w['closes']}"
                         for k, w in d["windows"].items())
        lines.append(f"{d['date']} {d['weekday']}  {what if d['workday'] else 'libur'}  {d['name']}".rstrip())
    emit(args, out, "\n".join(lines))
    return 0


def cmd_try(args) -> int:
    cfg = load_config(args)
    sched = load_schedule(cfg)
    try:
        local = dt.datetime.fromisoformat(args.at).replace(tzinfo=sched.tz)
    except ValueError:
        raise CommandError(f"--at {args.at!r} is not a date and time; use 'YYYY-MM-DD HH:MM'") from None
    utc = local.astimezone(dt.UTC)
    from terminal.punch import history

    recent = []
    if args.employee:
        with punchlog.PunchLog(cfg.state_dir) as log:
            try:
                recent = history.recent_punches(log.conn, args.employee, utc)
            except history.AnnotationFailed as e:  # decide anyway, but say on what ground
                print(f"presensi: warning: {e}", file=sys.stderr)
                recent = e.placed
    decision = sched.decide(args.name, utc, recent)
    emit(args, decision.as_dict(), f"{decision.message}  (kind {decision.kind}, ZK state {decision.zk_state}"
                                   f"{', not recorded: repeat' if not decision.record else ''})")
    return 0
