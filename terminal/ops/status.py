"""`presensi status`: one dictionary with the state of every part, for the CLI, the web page and the
heartbeat. Each part contributes through a small function taking the Config (the list of them is wired in
terminal/app/status.py); a part that fails reports its error instead of hiding the others."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from terminal import __version__
from terminal.config import Config
from terminal.errors import LogError
from terminal.log import punchlog


def _database(cfg: Config) -> dict:
    try:
        with punchlog.PunchLog(cfg.state_dir, readonly=True) as log:
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


Part = Callable[[Config], dict]

log = logging.getLogger("presensi.status")


def database_part(cfg: Config) -> dict:
    """The punch database: reachable, intact (quick check), its log head and last checkpoint."""
    return _database(cfg)


def collect(cfg: Config, parts: dict[str, Part]) -> dict:
    """Every part's report under its name; `parts` is the explicit list the wiring (terminal/app/status.py)
    assembles, so that this wing imports no other."""
    report = {"device": cfg.device.id, "name": cfg.device.name, "version": __version__}
    for name, part in parts.items():
        report[name] = _within(name, part, cfg, PART_SECONDS)
    return report


#: how long one part may take: a part that hangs (a file system that does not answer, a tool that waits)
#: is reported as such, and the other parts and the command still answer
PART_SECONDS = 15.0


def _within(name: str, part: Part, cfg: Config, seconds: float) -> dict:
    box: dict = {}

    def run() -> None:
        try:
            box["report"] = part(cfg)
        except Exception as e:  # one broken part must not hide the others
            box["report"] = {"ok": False, "error": f"{type(e).__name__}: {e}"}

    # a daemon thread: a part that never returns must not keep the command from exiting
    worker = threading.Thread(target=run, name=f"status-{name}", daemon=True)
    worker.start()
    worker.join(seconds)
    if "report" not in box:
        log.error("status part %s gave no answer within %.0f s", name, seconds)
        return {"ok": False, "error": f"no answer within {seconds:.0f} s"}
    return box["report"]


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
