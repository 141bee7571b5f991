"""The attendance file a ZKTeco machine writes to a USB stick, made from the punch log: `<SERIAL>_attlog.dat`
(the line format: sync/wire/offline.py). Offices without a network hand it in to regional systems that import
ZK attlog files; `presensi export --format zk-attlog` writes it beside the signed export (sync/device/offline.py).

Each line carries what port 4370 and ADMS carry for the same punch: the employee id as PIN, the local time in
the office timezone from the corrected UTC (the raw clock when there is none), the verify code of the method
and the ZK state of the kind through the same [zk] maps, and the work code (0 = none).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sync.wire.offline import zk_attlog_name, zk_line
from terminal.log import punchlog
from terminal.punch.workcodes import code_of


@dataclass(frozen=True)
class ZkAttlog:
    serial: str
    timezone: str
    verify_map: dict = field(default_factory=dict)
    state_map: dict = field(default_factory=dict)
    unknown_state: int = 255

    @classmethod
    def from_config(cls, cfg) -> ZkAttlog:
        return cls(serial=cfg.zk.serial_number or cfg.device.id, timezone=cfg.device.timezone,
                   verify_map=dict(cfg.zk.verify_map), state_map=dict(cfg.zk.state_map),
                   unknown_state=cfg.zk.unknown_state)

    @property
    def file_name(self) -> str:
        return zk_attlog_name(self.serial)

    def line(self, rec: dict) -> str:
        """The attlog line of one exported record (with its annotated `utc`)."""
        if rec.get("utc"):
            utc = dt.datetime.fromisoformat(rec["utc"].replace("Z", "+00:00"))
        else:
            utc = dt.datetime.fromtimestamp(rec["realtime_ns"] / 1e9, dt.UTC)
        local = utc.astimezone(ZoneInfo(self.timezone)).replace(tzinfo=None, microsecond=0)
        state = self.state_map.get(punchlog.kind_of(rec), self.unknown_state)
        return zk_line(rec["employee"], local, self.verify_map.get(rec["method"], 0), state, code_of(rec) or 0)

    def manifest(self, lines: int) -> dict:
        """What the signed manifest says about the file: the central server recomputes each line from it."""
        return {"file": self.file_name, "serial": self.serial, "timezone": self.timezone, "lines": lines,
                "verify_map": self.verify_map, "state_map": self.state_map, "unknown_state": self.unknown_state}
