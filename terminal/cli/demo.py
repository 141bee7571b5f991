"""`presensi demo`: the whole flow on emulated hardware, in a temporary state directory."""

from __future__ import annotations

import tempfile
from pathlib import Path

from terminal import config as config_mod
from terminal import punchlog
from terminal.cli.common import add_command, emit

DEMO_EMPLOYEES = ["198501012010011001", "199002022015022002", "198803032012031003"]


def register(sub) -> None:
    p = add_command(sub, "demo", cmd_demo, "the whole flow on emulated hardware and an embedded central server")
    p.add_argument("--state-dir", metavar="DIR", help="keep the demo's state here (default: a temporary folder)")


def cmd_demo(args) -> int:
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="presensi-demo-"))
    cfg = config_mod.from_dict({"device": {"id": "demo-01", "name": "Demo OPD"},
                                "paths": {"state_dir": str(state_dir)}}, "<demo>")
    info = punchlog.init(cfg.state_dir)
    print(f"state directory  {state_dir}")
    print(f"log_id           {info['log_id']}")
    with punchlog.PunchLog(cfg.state_dir, checkpoint_every=cfg.log.checkpoint_every) as log:
        for emp in DEMO_EMPLOYEES:
            rec = log.append(emp, "pin")
            print(f"punch            seq {rec['seq']}  {emp}  pin  {rec['hash'][:16]}")
        log.checkpoint()
        problems = log.verify()
        head = log.head()
    summary = {"state_dir": str(state_dir), "punches": head[0], "verified": not problems}
    emit(args, summary, f"log verify       {'ok' if not problems else problems[0]}  ({head[0]} punches)")
    return 0 if not problems else 1
