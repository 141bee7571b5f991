"""`presensi init`, `punch`, `log list|export|verify|checkpoint` and `status`."""

from __future__ import annotations

import csv
import json
import re
import sys

from terminal.cli.common import CommandError, add_command, add_group, emit, load_config
from terminal.log import punchlog
from terminal.ops import status

EMPLOYEE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
EXPORT_FIELDS = (
    "log_id", "seq", "employee", "method", "kind", "details", "boot_id", "monoraw_ns", "boottime_ns",
    "realtime_ns", "timex_status", "maxerror_us", "latitude", "longitude", "photo_path", "photo_sha256",
    "prev_hash", "hash",
)

CSV_DERIVED = ("derived_kind", "minutes_late", "minutes_early", "local_date", "local_time", "time_verified")


def _csv_derived(rec: dict) -> dict:
    d = rec.get("derived") or {}
    return {"derived_kind": punchlog.kind_of(rec), **{k: d.get(k) for k in CSV_DERIVED[1:]}}


def register(sub) -> None:
    add_command(sub, "init", cmd_init, "create the state directory, database and device key (idempotent)")

    p = add_command(sub, "punch", cmd_punch, "record an operator punch; exits 0 only after a durable commit")
    p.add_argument("--employee", required=True, metavar="ID", help="employee id (NIP)")
    p.add_argument("--method", required=True, choices=["pin"],
                   help="pin: an operator confirmed the employee (face and finger punches come from the sensors)")
    p.add_argument("--override-reason", metavar="TEXT", default=None,
                   help="record the punch although the roster refuses it (not in the roster, PIN not allowed); "
                        "the reason and the operator go into the punch and the audit table")
    p.add_argument("--work-code", type=int, default=None, metavar="CODE",
                   help="the employee's work code ([work_codes] codes, e.g. 1 Dinas Luar); refused when unknown "
                        "or when it does not apply to the punch's kind")

    log = add_group(sub, "log", "read, export and verify the punch log")
    p = add_command(log, "list", cmd_log_list, "list punches")
    p.add_argument("--after-seq", type=int, default=None, metavar="N", help="only punches with seq > N")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N punches (default: the last 20)")
    p = add_command(log, "export", cmd_log_export, "export punches as csv or jsonl")
    p.add_argument("--format", choices=["csv", "jsonl"], default="jsonl")
    p.add_argument("--since-seq", type=int, default=0, metavar="N", help="only punches with seq > N")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of standard output")
    add_command(log, "verify", cmd_log_verify, "prove the hash chain and checkpoint signatures")
    add_command(log, "checkpoint", cmd_log_checkpoint, "sign a checkpoint over the current head now")

    add_command(sub, "status", cmd_status, "health, clock, backlog and faults at a glance")


def open_log(cfg, readonly: bool = False) -> punchlog.PunchLog:
    """`readonly` for the commands that only read: they never write, so they work on a full disk."""
    return punchlog.PunchLog(cfg.state_dir, checkpoint_every=cfg.log.checkpoint_every, readonly=readonly)


def cmd_init(args) -> int:
    cfg = load_config(args)
    result = punchlog.init(cfg.state_dir)
    result["device"] = cfg.device.id
    what = "created" if result["created_database"] else "already initialised"
    from terminal import identity
    from terminal.log import chain

    key_b64 = identity.public_key_b64(identity.load_key(cfg.state_dir))
    result["public_key"], result["public_key_fingerprint"] = key_b64, chain.key_fingerprint(key_b64)
    text = (f"{cfg.state_dir}: {what}; log_id {result['log_id']}\n"
            f"device key  {result['public_key_fingerprint']}\n"
            f"public key  {key_b64}\n"
            f"(register it on the central server: `presensi server add-device {cfg.device.id} --public-key "
            f"{key_b64}`, and compare the fingerprint it prints)")
    from terminal.web import ensure_admin_password

    password = ensure_admin_password(cfg.state_dir)  # only on the first run; never stored in clear text
    if password:
        result["admin_password"] = password
        text += (f"\nadmin password: {password}\n(shown only now: note it, or set another with "
                 "`presensi admin set-password`)")
    emit(args, result, text)
    return 0


def cmd_punch(args) -> int:
    if not EMPLOYEE_ID.match(args.employee):
        raise CommandError(f"employee id {args.employee!r} is not valid: use 1-64 letters, digits, '.', '_' or '-'")
    cfg = load_config(args)
    from terminal.punch.service import PunchService

    if args.override_reason is not None and not args.override_reason.strip():
        raise CommandError("--override-reason must say why the roster is overridden (it is audited)")
    operator = f"cli:{_login_name()}"
    with open_log(cfg) as log:
        outcome = PunchService(cfg, log).punch(args.employee, args.method, details={"operator": "cli"},
                                               override_reason=args.override_reason, operator=operator,
                                               work_code=args.work_code)
    if outcome.refused and args.work_code is not None and "work code" in (outcome.error or ""):
        raise CommandError(f"{outcome.error}; the punch was NOT recorded (`presensi config check` lists "
                           "[work_codes] codes)")
    if outcome.refused:
        raise CommandError(f"{outcome.error}; the punch was NOT recorded (an operator may record it anyway "
                           "with --override-reason TEXT, which is audited)")
    if not outcome.acknowledged:
        raise CommandError(outcome.error or outcome.message)
    rec = outcome.record
    result = {**rec, "recorded": outcome.recorded, "kind": outcome.kind, "message": outcome.message,
              "time_verified": outcome.time_verified}
    if outcome.recorded:
        text = f"recorded: seq {rec['seq']} employee {rec['employee']} method {rec['method']} {outcome.kind}"
        if args.work_code is not None:
            text += f" work code {args.work_code}"
        if not outcome.time_verified:  # the kind is the best estimate; re-anchoring corrects it later
            text += " (time not verified: the kind follows the corrected time once a time sample arrives)"
    else:
        text = f"already recorded (seq {rec['seq'] if rec else '?'}): {outcome.message}"
    emit(args, result, text.rstrip())
    return 0


def _login_name() -> str:
    """Who ran the command, for the audit table (sudo keeps the real operator in SUDO_USER)."""
    import getpass
    import os

    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except Exception:  # no passwd entry (a container): the uid still names someone
        return f"uid{os.getuid()}"


def cmd_log_list(args) -> int:
    cfg = load_config(args)
    with open_log(cfg, readonly=True) as log:
        after = args.after_seq
        if after is None:
            after = max(0, log.head()[0] - (args.limit or 20))
        records = list(log.records(after_seq=after, limit=args.limit))
    if getattr(args, "json", False):
        emit(args, records)
        return 0
    if not records:
        print("no punches")
    for r in records:
        print(f"{r['seq']:>7}  {status.format_ns(r['realtime_ns'])}  {r['employee']:<20} {r['method']:<6} "
              f"{punchlog.kind_of(r) or '-':<10} {r['hash'][:12]}")
    return 0


def cmd_log_export(args) -> int:
    from terminal.punch.workcodes import code_of

    cfg = load_config(args)
    out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout
    try:
        with open_log(cfg, readonly=True) as log:
            # kind and lateness are derived values beside the record: `derived` in jsonl, columns in csv
            if args.format == "jsonl":
                for r in log.records(after_seq=args.since_seq):
                    out.write(json.dumps({**{k: r[k] for k in EXPORT_FIELDS}, "derived": r.get("derived")},
                                         ensure_ascii=False) + "\n")
            else:
                w = csv.DictWriter(out, fieldnames=EXPORT_FIELDS + CSV_DERIVED + ("work_code",),
                                   extrasaction="ignore")
                w.writeheader()
                for r in log.records(after_seq=args.since_seq):
                    w.writerow({**r, "details": json.dumps(r["details"], sort_keys=True, ensure_ascii=False),
                                **_csv_derived(r), "work_code": code_of(r)})
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_log_verify(args) -> int:
    cfg = load_config(args)
    with open_log(cfg, readonly=True) as log:
        problems = log.verify()
        head = log.head()
        checkpoints = log.db["checkpoints"].count
    result = {"ok": not problems, "head_seq": head[0], "head_hash": head[1], "checkpoints": checkpoints,
              "problems": [{"seq": p.seq, "what": p.what} for p in problems]}
    if getattr(args, "json", False):
        emit(args, result)
    elif problems:
        first = problems[0]
        print(f"log verify FAILED: first bad seq {first.seq}: {_explain(first.what)}", file=sys.stderr)
        for p in problems[1:10]:
            print(f"  also seq {p.seq}: {_explain(p.what)}", file=sys.stderr)
    else:
        print(f"log verify ok: {head[0]} punches, {checkpoints} checkpoints, head {head[1][:16]}")
    return 0 if not problems else 3


def _explain(what: str) -> str:
    return {
        "edited": "edited (the record no longer matches its hash)",
        "missing": "missing (deleted record: gap in seq)",
        "reordered": "reordered (records out of order)",
        "broken-link": "broken link (the record does not follow its predecessor)",
        "bad-signature": "bad checkpoint signature",
        "truncated": "truncated tail (records after a signed checkpoint were deleted)",
        "rewritten": "rewritten (differs from the signed checkpoint)",
        "wrong-log": "record belongs to another log",
    }.get(what, what)


def cmd_log_checkpoint(args) -> int:
    cfg = load_config(args)
    with open_log(cfg) as log:
        cp = log.checkpoint()
    emit(args, cp, f"checkpoint at seq {cp['seq']}" if cp else "the log is empty: nothing to sign")
    return 0


def cmd_status(args) -> int:
    cfg = load_config(args)
    from terminal.app import status as app_status  # lazy: it loads every wing's status function

    report = app_status.collect(cfg)
    emit(args, report, None if getattr(args, "json", False) else status.format_text(report))
    if not report["database"]["ok"]:
        raise CommandError(report["database"].get("error", "the database is not healthy"))
    return 0
