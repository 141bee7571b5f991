"""`presensi server enrolments|messages|apel …`: what the central server decides for every terminal besides
the employee list: templates enrolled at terminals (list, approve, reject, the approval setting), messages to
employees, cancelled apel pagi. Each change that terminals must see publishes the next roster version
(sync/server/republish.py); a sub-command group of `server` (terminal/cli/server.py)."""

from __future__ import annotations

import getpass

from terminal.cli.common import CommandError, add_command, add_group, emit


def register(group) -> None:
    grp = add_group(group, "enrolments", "templates enrolled at the terminals: list, approve, reject, settings")
    p = add_command(grp, "list", cmd_enrolments_list, "list enrolments (no template data)")
    p.add_argument("--status", choices=("pending", "accepted", "rejected"), help="only those with this status")
    _db(p)
    for name, helptext in (("approve", "accept pending enrolments and publish them to every terminal"),
                           ("reject", "reject enrolments; a rejected template is taken out of the roster")):
        p = add_command(grp, name, cmd_enrolments_decide, helptext)
        p.add_argument("ids", type=int, nargs="+", metavar="ID", help="enrolment ids from `enrolments list`")
        _db(p)
    p = add_command(grp, "settings", cmd_enrolments_settings,
                    "show or change whether enrolments need approval and which terminals they reach")
    p.add_argument("--approval", choices=("on", "off"), help="on: enrolments wait for `approve`; off (default): "
                   "they reach the terminals with the next roster at once")
    p.add_argument("--scope", choices=("regency", "office"), help="regency (default): every terminal; office: "
                   "only the terminals of the employee's office (the `office` column of publish-roster)")
    _db(p)
    p = add_command(grp, "office", cmd_enrolments_office, "put a terminal in an office (for --scope office)")
    p.add_argument("device_id", metavar="DEVICE_ID")
    p.add_argument("office", nargs="?", default="", metavar="OFFICE", help="the office's name (none: no office)")
    _db(p)

    grp = add_group(group, "messages", "messages shown to employees at the terminals after their punch")
    p = add_command(grp, "add", cmd_messages_add, "publish a message to one employee or to all staff")
    p.add_argument("text", help="the message, in Bahasa Indonesia (one line, at most 300 characters)")
    p.add_argument("--employee", metavar="NIP", help="only this employee (default: all staff)")
    p.add_argument("--from", dest="valid_from", required=True, metavar="YYYY-MM-DD", help="first day shown")
    p.add_argument("--until", dest="valid_until", required=True, metavar="YYYY-MM-DD", help="last day shown")
    _db(p)
    p = add_command(grp, "list", cmd_messages_list, "list the messages")
    _db(p)
    p = add_command(grp, "remove", cmd_messages_remove, "withdraw a message from every terminal")
    p.add_argument("id", type=int, metavar="ID")
    _db(p)

    grp = add_group(group, "apel", "cancel apel pagi for a date (the terminals say so and record no apel)")
    p = add_command(grp, "cancel", cmd_apel_cancel, "cancel apel pagi on a date")
    p.add_argument("date", metavar="YYYY-MM-DD")
    p.add_argument("--reason", default="", help="why (kept and sent with the cancellation)")
    _db(p)
    p = add_command(grp, "restore", cmd_apel_restore, "undo a cancellation")
    p.add_argument("date", metavar="YYYY-MM-DD")
    _db(p)
    p = add_command(grp, "list", cmd_apel_list, "list cancelled apel dates")
    _db(p)


def _db(p) -> None:
    p.add_argument("--db", required=True, metavar="PATH", help="the server's SQLite file or postgresql:// URL")


def _store(args):
    from sync.server.storage import open_store

    return open_store(args.db)


def _publish(store) -> dict:
    """The next roster version, so every terminal sees the change with its next pull."""
    from sync.server import republish
    from sync.wire.rosterbundle import BundleRejected

    if store.latest_roster() is None:
        raise CommandError("no roster is published yet: publish one first with `presensi server publish-roster`")
    try:
        result = republish.publish_next(store)
    except BundleRejected as e:
        raise CommandError(f"the next roster would be refused by the terminals ({e.code}): {e.reason}") from None
    result.pop("bundle")
    return result


def cmd_enrolments_list(args) -> int:
    from sync.server import enrolments

    rows = enrolments.listing(_store(args), args.status)
    text = "\n".join(f"{r['id']:>5}  {r['status']:<9} {r['modality']:<6} {r['employee']:<20} from {r['device_id']}"
                     for r in rows) or "no enrolments"
    emit(args, {"enrolments": rows}, text)
    return 0


def cmd_enrolments_decide(args) -> int:
    from sync.server import enrolments

    store = _store(args)
    status = "accepted" if args.enrolments_command == "approve" else "rejected"
    try:
        changed = enrolments.decide(store, args.ids, status, actor=f"cli:{getpass.getuser()}")
    except enrolments.EnrolmentError as e:
        raise CommandError(str(e)) from None
    result = {"changed": changed, "status": status, "roster": _publish(store) if changed else None}
    emit(args, result, f"{changed} enrolment(s) {status}" + (
        f"; roster version {result['roster']['version']} published" if changed else ""))
    return 0


def cmd_enrolments_settings(args) -> int:
    from sync.server import enrolments, offices

    store = _store(args)
    if args.approval is not None:
        enrolments.set_approval(store, args.approval == "on")
    if args.scope is not None and args.scope != offices.scope(store):
        offices.set_scope(store, args.scope)
        if store.latest_roster() is not None:
            _publish(store)  # the terminals get the roster of the new scope
    on, scope = enrolments.approval_required(store), offices.scope(store)
    emit(args, {"approval": "on" if on else "off", "scope": scope},
         ("enrolments wait for `presensi server enrolments approve`" if on
          else "enrolments reach the terminals with the next roster at once (approval off)")
         + ("; every terminal of the regency" if scope == "regency" else "; only the employee's office"))
    return 0


def cmd_enrolments_office(args) -> int:
    from sync.server import offices

    store = _store(args)
    try:
        offices.set_device_office(store, args.device_id, args.office or None)
    except offices.OfficeError as e:
        raise CommandError(str(e)) from None
    roster = _publish(store) if store.latest_roster() is not None and offices.scope(store) == "office" else None
    emit(args, {"device": args.device_id, "office": args.office, "roster": roster},
         f"{args.device_id} is in office {args.office!r}" if args.office else f"{args.device_id} is in no office")
    return 0


def _notice(fn, *a):
    from sync.server import notices

    try:
        return fn(*a)
    except notices.NoticeError as e:
        raise CommandError(str(e)) from None


def cmd_messages_add(args) -> int:
    from sync.server import notices

    store = _store(args)
    message_id = _notice(notices.add_message, store, args.text, args.valid_from, args.valid_until, args.employee)
    roster = _publish(store)
    emit(args, {"id": message_id, "roster": roster},
         f"message {message_id} published with roster version {roster['version']}")
    return 0


def cmd_messages_list(args) -> int:
    from sync.server import notices

    rows = notices.messages(_store(args))
    emit(args, {"messages": rows}, "\n".join(
        f"{m['id']:>5}  {m['valid_from']}..{m['valid_until']}  {m['employee'] or 'semua pegawai':<20} {m['text']}"
        for m in rows) or "no messages")
    return 0


def cmd_messages_remove(args) -> int:
    from sync.server import notices

    store = _store(args)
    _notice(notices.remove_message, store, args.id)
    roster = _publish(store)
    emit(args, {"removed": args.id, "roster": roster}, f"message {args.id} removed (roster {roster['version']})")
    return 0


def cmd_apel_cancel(args) -> int:
    from sync.server import notices

    store = _store(args)
    _notice(notices.cancel_apel, store, args.date, args.reason)
    roster = _publish(store)
    emit(args, {"date": args.date, "roster": roster},
         f"apel pagi on {args.date} cancelled (roster version {roster['version']})")
    return 0


def cmd_apel_restore(args) -> int:
    from sync.server import notices

    store = _store(args)
    _notice(notices.restore_apel, store, args.date)
    roster = _publish(store)
    emit(args, {"date": args.date, "roster": roster}, f"apel pagi on {args.date} restored")
    return 0


def cmd_apel_list(args) -> int:
    from sync.server import notices

    rows = notices.apel_cancellations(_store(args))
    emit(args, {"apel_cancelled": rows}, "\n".join(f"{a['date']}  {a['reason']}" for a in rows) or "none")
    return 0
