"""`presensi run`: the daemon, as systemd starts it."""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys

from terminal.cli.common import add_command, load_config


def register(sub) -> None:
    p = add_command(sub, "run", cmd_run, "run the terminal daemon (what systemd starts)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def cmd_run(args) -> int:
    cfg = load_config(args)
    # journald adds its own timestamps; plain lines read well there and on a console.
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    # `kill -USR1 <pid>` writes every thread's stack to the journal: how IT staff report a hang
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    from terminal.app.daemon import Daemon

    return Daemon(cfg).run()
