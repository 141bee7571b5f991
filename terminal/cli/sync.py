"""`presensi sync now|status` and `presensi export --to DIR` (offline delivery)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from terminal.cli.common import CommandError, add_command, add_group, emit, load_config
from terminal.log import punchlog, syncstate
from terminal.ops import status


def register(sub) -> None:
    grp = add_group(sub, "sync", "push everything pending to the central server, or show the sync state")
    p = add_command(grp, "now", cmd_sync_now,
                    "push every pending punch, photo and fault event; exit 0 only when all are acknowledged")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="give up (exit 1, nothing lost) after this long (default 300)")
    add_command(grp, "status", cmd_sync_status, "backlog, acknowledged seq, last contact and last error")
    p = add_command(sub, "export", cmd_export,
                    "offline export (USB stick) of unacknowledged punches with a manifest signed by the device")
    p.add_argument("--to", required=True, metavar="DIR", help="folder to write the export into (e.g. the stick)")
    p.add_argument("--after-seq", type=int, default=None, metavar="N",
                   help="export every punch after seq N instead of those not yet acknowledged")
    p.add_argument("--format", choices=["presensi", "zk-attlog"], default="presensi",
                   help="presensi: signed jsonl and csv; zk-attlog: the same plus <SERIAL>_attlog.dat, the file a "
                        "ZKTeco machine writes to a USB stick (PIN, local time, verify, state, work code)")


def _health(cfg):
    """The heartbeat's health summary: each part's state (terminal/app/heartbeat.py), computed once per run."""
    from terminal.app import heartbeat

    return heartbeat.cached(cfg)


def cmd_sync_now(args) -> int:
    from sync.device import push
    from terminal.punch.service import recomputer

    cfg = load_config(args)
    try:
        settings = push.Settings.from_config(cfg)
    except push.PushError as e:
        raise CommandError(str(e)) from None
    health = _health(cfg)
    beat = push.Heartbeat(cfg.state_dir, settings, health)
    beat.start()
    # time before delivery: the pusher samples the server's time first when punches of a boot without a
    # sample wait, and kinds are recomputed from the corrected time before they go
    pusher = push.Pusher(cfg.state_dir, settings, health=health, recompute=recomputer(cfg))
    try:
        result = pusher.drain(time.monotonic() + args.timeout)
        result["time_sample"] = pusher.last_sample
        summary = syncstate.summary(pusher.conn, pusher.target, pusher.log.log_id)
    except push.PushError as e:
        raise CommandError(f"{e}; nothing was lost: pending punches stay in the log") from None
    finally:
        beat.stop()
        beat.join(settings.timeout * 2 + 5)  # no thread may be mid-request when the process exits
        pusher.close()
    result.update(acked_seq=summary["acked_seq"], head_seq=summary["head_seq"], kept_aside=summary["kept_aside"])
    result["enrolments"] = _upload_enrolments(cfg)
    if result["done"] and result["enrolments"].get("error"):
        result["done"] = False
        result["last_error"] = result["enrolments"]["error"]
    if result["done"] and result["kept_aside"]:
        if getattr(args, "json", False):
            emit(args, result)
        print(f"presensi: error: the central server kept {len(result['kept_aside'])} punch(es) aside because it "
              f"holds another version of them (seq {', '.join(map(str, result['kept_aside'][:20]))}): they are "
              "NOT delivered; IT staff compare `presensi log verify` here with `presensi server alarms`",
              file=sys.stderr)
        return 1
    if result["done"]:
        emit(args, result, f"all delivered: acked seq {result['acked_seq']} of {result['head_seq']} "
                           f"to {settings.url}{_sample_note(result['time_sample'])}")
        return 0
    if getattr(args, "json", False):
        emit(args, result)
    print(f"presensi: error: not everything was acknowledged within {args.timeout:g} s: {result['punches']} "
          f"punches, {result['photos']} photos, {result['faults']} fault events pending (last error: "
          f"{result['last_error']}). Nothing is lost; they stay in the log and are sent when the server is "
          "reachable. Check the network and [central] url, or use `presensi export --to DIR`", file=sys.stderr)
    return 1


def _enrolment_counts(conn) -> dict | None:
    """The enrolment outbox by state; None for a database not yet migrated to have one."""
    import sqlite3

    from terminal.punch import enrolments

    try:
        return enrolments.summary(conn)
    except sqlite3.OperationalError:
        return None


def _upload_enrolments(cfg) -> dict:
    """The enrolments made here, to the central server (which publishes them in the next roster)."""
    from sync.device import central, enrol_client

    conn = punchlog.connect(punchlog.db_path(cfg.state_dir))
    try:
        with central.Client.from_config(cfg) as client:
            return enrol_client.upload(client, conn, cfg.state_dir)
    except central.CentralError as e:
        return {"error": f"enrolments not delivered: {e}"}
    finally:
        conn.close()


def _sample_note(sample: dict | None) -> str:
    if sample is None:
        return ""
    if sample.get("ok"):
        return f" (time sample first: {sample['method']})"
    return f" (no time sample: {sample['error']}; the punches went out flagged)"


def cmd_sync_status(args) -> int:
    cfg = load_config(args)
    with punchlog.PunchLog(cfg.state_dir, readonly=True) as log:  # reads only: works on a full disk
        result = syncstate.summary(log.conn, syncstate.target_of(cfg.central.url), log.log_id)
        result["enrolments"] = _enrolment_counts(log.conn)
    if getattr(args, "json", False) or not result.get("configured"):
        emit(args, result, result["summary"])
        return 0
    last = status.format_ns(result["last_contact_ns"]) if result["last_contact_ns"] else "never"
    lines = [f"central    {result['target']}",
             f"backlog    {result['backlog']} punches (acked seq {result['acked_seq']} of {result['head_seq']})",
             f"contact    {last}"]
    counts = result["enrolments"]
    if counts:
        lines.append(f"enrolments {counts['unsent']} to send, {counts['accepted']} accepted, {counts['pending']} "
                     f"awaiting approval, {counts['refused']} refused by the server")
    if result["last_error"]:
        when = status.format_ns(result["last_error_ns"])
        lines.append(f"last error {when}: {result['last_error']}"
                     + ("" if result["last_attempt_failed"] else " (recovered since)"))
    emit(args, result, "\n".join(lines))
    return 0


def cmd_export(args) -> int:
    from sync.device import offline
    from sync.device.zkattlog import ZkAttlog

    cfg = load_config(args)
    try:
        zk = ZkAttlog.from_config(cfg) if args.format == "zk-attlog" else None
        result = offline.export(cfg.state_dir, cfg.device.id, cfg.central.url, Path(args.to), args.after_seq, zk=zk)
    except OSError as e:
        raise CommandError(f"cannot write the export to {args.to}: {e.strerror or e}; check that the stick "
                           "is mounted, writable and has space") from None
    if not result["count"]:
        emit(args, result, f"nothing to export: no punch after seq {result['after_seq']} is waiting "
                           f"(an empty export was written to {result['dir']})")
    else:
        emit(args, result, f"exported {result['count']} punches (seq {result['first_seq']}-{result['last_seq']}) "
                           f"to {result['dir']}; import with `presensi server import DIR --db …`"
                           + (f" (ZK attendance file: {result['zk_attlog']})" if result.get("zk_attlog") else ""))
    return 0
