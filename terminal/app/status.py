"""The parts of `presensi status`, wired: one function per part, each from the wing that owns it.

The list lives here, in the wiring wing, because it spans every wing (and sync/, for the ZKTeco servers); the
report itself is assembled and formatted by terminal/ops/status.py. Importing this module loads every wing's
status function, so only the commands and services that report status import it.
"""

from __future__ import annotations

from sync.device import adms
from terminal import face, liveness, web
from terminal.config import Config
from terminal.finger import slots
from terminal.log import punchlog, syncstate
from terminal.ops import faults, health, status
from terminal.punch import roster
from terminal.timing import timeline


def time_part(cfg: Config) -> dict:
    """The clock's line: the corrected time now, its basis and uncertainty, and any contradicting samples."""
    with punchlog.PunchLog(cfg.state_dir, readonly=True) as log:
        report = timeline.status(log.conn)
    cur = report["now"]
    unc = "" if cur["uncertainty_s"] is None else f" ±{cur['uncertainty_s']:.3f} s"
    alarm = f"; ALARM: {report['contradicting_samples']} contradicting time sample(s)" \
        if report["contradicting_samples"] else ""
    report["summary"] = f"{cur['message']}; now {cur['utc']}{unc} ({cur['basis']}){alarm}"
    return report


PARTS: dict[str, status.Part] = {
    "database": status.database_part,
    "roster": roster.status_part,  # installed roster version and counts
    "faults": faults.status_part,  # open faults
    "health": health.quick_report,  # disk, CPU temperature, under-voltage
    "face": face.status_part,  # enrolled employees and templates
    "sync": syncstate.status_part,  # backlog, acked seq, last contact
    "time": time_part,  # corrected time: verified or not, uncertainty, alarms
    "fingerprint": slots.status_part,  # slot map size, port present (never opens it)
    "web": web.status_part,  # kiosk and admin pages: listen address, admin password set
    "zkteco": adms.status_part,  # ZK server settings, ADMS delivered seq and backlog
    "liveness": liveness.status_part,  # mode, passive model loaded or the problem with it
}


def collect(cfg: Config) -> dict:
    """`presensi status` as one dictionary."""
    return status.collect(cfg, PARTS)


def collect_parts(cfg: Config, names: tuple[str, ...]) -> dict:
    """Only the named parts (the heartbeat sends the cheap ones)."""
    return status.collect(cfg, {name: PARTS[name] for name in names if name in PARTS})
