"""`presensi demo`: the whole flow on emulated hardware and an embedded central server."""

from __future__ import annotations

import logging
from pathlib import Path

from terminal.cli.common import CommandError, add_command, emit


def register(sub) -> None:
    p = add_command(sub, "demo", cmd_demo, "the whole flow on emulated hardware and an embedded central server")
    p.add_argument("--state-dir", metavar="DIR", help="keep the demo's files here (default: a temporary folder)")
    p.add_argument("--linger", type=float, default=0.0, metavar="SECONDS",
                   help="keep the terminal (and its kiosk page) running this long after the demo")
    # A slow or busy machine (CI on two shared cores) needs longer than the default; the demo's steps stay
    # the same, only how long each may take before the demo gives up with the step it was waiting for.
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for each step (the daemon starting, each punch, the delivery) "
                        "before giving up; default 60")


def cmd_demo(args) -> int:
    from terminal.app import demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    say = (lambda line: None) if getattr(args, "json", False) else print
    try:
        summary = demo.run(say=say, work=Path(args.state_dir) if args.state_dir else None, linger=args.linger,
                           timeout=args.timeout)
    except demo.DemoError as e:
        raise CommandError(str(e)) from None
    emit(args, summary, "demo complete: punches by face, fingerprint and PIN were recorded, delivered and verified")
    return 0 if summary["verified"] and summary["delivered"] >= 3 else 1
