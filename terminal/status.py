"""`presensi status`: one dictionary with the state of every part, for the CLI, the web page and the
heartbeat. Each part contributes through a small function in PARTS; a part that fails reports its error
instead of hiding the others."""

from __future__ import annotations

import datetime as dt
import importlib

from terminal import __version__, punchlog
from terminal.config import Config
from terminal.errors import LogError


def _database(cfg: Config) -> dict:
    try:
        with punchlog.PunchLog(cfg.state_dir) as log:
            seq, hash_ = log.head()
            return {
                "ok": log.integrity(quick=True) == "ok",
                "path": str(log.path),
                "log_id": log.log_id,
                "head": {"seq": seq, "hash": hash_},
                "last_checkpoint": log.latest_checkpoint(),
            }
    except LogError as e:
        return {"ok": False, "error": str(e)}


# name -> "module:function" taking the Config and returning a dict. Resolved only when status is
# collected, so that importing this module (every CLI command does) stays cheap.
PARTS: dict[str, str] = {
    "database": "terminal.status:_database",
    "roster": "terminal.roster:status_part",  # installed roster version and counts
    "faults": "terminal.faults:status_part",  # open faults
    "health": "terminal.health:quick_report",  # disk, CPU temperature, under-voltage
    "face": "terminal.face:status_part",  # enrolled employees and templates
    "sync": "terminal.syncstate:status_part",  # backlog, acked seq, last contact
    "time": "terminal.timeline:status_part",  # corrected time: verified or not, uncertainty, alarms
    "fingerprint": "terminal.fingerslots:status_part",  # slot map size, port present (never opens it)
    "web": "terminal.web:status_part",  # kiosk and admin pages: listen address, admin password set
    "zkteco": "sync.adms:status_part",  # ZK server settings, ADMS delivered seq and backlog
    "liveness": "terminal.liveness:status_part",  # mode, passive model loaded or the problem with it
}


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def collect(cfg: Config) -> dict:
    report = {"device": cfg.device.id, "name": cfg.device.name, "version": __version__}
    for name, target in PARTS.items():
        try:
            report[name] = _resolve(target)(cfg)
        except Exception as e:  # one broken part must not hide the others
            report[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return report


def format_ns(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_text(report: dict) -> str:
    lines = [f"device   {report['device']} {report['name']}".rstrip(), f"version  {report['version']}"]
    db = report["database"]
    if db.get("ok"):
        cp = db["last_checkpoint"]
        lines.append(f"database ok  {db['path']}")
        lines.append(f"log      head seq {db['head']['seq']} hash {db['head']['hash'][:16]}  log_id {db['log_id']}")
        lines.append(f"checkpoint {'seq ' + str(cp['seq']) if cp else 'none yet'}")
    else:
        lines.append(f"database PROBLEM: {db.get('error')}")
    for name, part in report.items():
        if name in ("device", "name", "version", "database") or not isinstance(part, dict):
            continue
        state = "ok" if part.get("ok", True) else "PROBLEM"
        summary = part.get("summary") or part.get("error") or ""
        lines.append(f"{name:<8} {state}  {summary}".rstrip())
    return "\n".join(lines)
