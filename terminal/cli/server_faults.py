"""`presensi server faults [--device ID] [--json]`: the fault reports the terminals sent and the ones the
server raised (a silent terminal), with their state (open, acknowledged, closed, cleared). A sub-command of
`presensi server`, registered by terminal/cli/server.py."""

from __future__ import annotations

import json

from terminal.cli.common import add_command

FIELDS = ("device_id", "event_id", "fault_key", "event", "part", "category", "message", "reporter", "photo_sha256",
          "state")


def register(group, store_of) -> None:
    """`store_of(args)` opens the server database of --db (terminal/cli/server.py, with its error message)."""
    p = add_command(group, "faults", cmd_faults, "list fault reports: part, message, reporter, photo, state")
    p.add_argument("--device", metavar="DEVICE_ID", help="only this device")
    p.add_argument("--open", action="store_true", help="only open (and acknowledged) faults")
    p.add_argument("--db", required=True, metavar="PATH", help="the server's SQLite file or postgresql:// URL")
    p.set_defaults(store_of=store_of)


def cmd_faults(args) -> int:
    from sync.server import fleet
    from sync.server.display import safe
    from terminal.ops.status import format_ns

    rows = fleet.faults(args.store_of(args), args.device, open_only=args.open, limit=100_000)
    if getattr(args, "json", False):
        for f in rows:
            out = {k: f[k] for k in FIELDS}
            out.update(received_ns=f["received_ns"], cleared_ns=f["cleared_ns"], diagnostics=f["diagnostics"],
                       photo=bool(f["photo_sha256"]), acknowledged=f["acknowledged"], closed=f["closed"])
            print(json.dumps(out, ensure_ascii=True))  # \u escapes: no control character reaches the screen
        return 0
    if not rows:
        print("no fault reports")
    for f in rows:
        photo = "photo" if f["photo_sha256"] else "-"
        print(f"{format_ns(f['received_ns'])}  {safe(f['device_id'])}  {safe(f['part']):<12} {f['state']:<12} "
              f"{safe(f['reporter'], 40):<10} {photo:<5} {safe(f['message'], 200)}")
    return 0
