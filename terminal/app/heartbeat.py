"""What a heartbeat tells the central server about each part of the terminal, for its fleet page:
camera, fingerprint, clock (basis and uncertainty), disk, database and roster, each as {ok, summary} plus
the few figures the page shows. The daemon and `presensi sync now` send the same shape (in the
heartbeat's `health.parts`), built here from the cheap parts of `presensi status` and, in the daemon,
from the live health of its camera and fingerprint workers. Nothing personal or biometric goes in.

The status parts read the database (a quick integrity check among them), so the result is cached for
CACHE_S seconds: a heartbeat every few seconds does not turn into a database scan every few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from terminal.config import Config

log = logging.getLogger("presensi.sync")

STATUS_PARTS = ("database", "health", "time", "roster", "fingerprint")
CACHE_S = 60.0
SUMMARY = 300  # characters of a part's summary


def _short(part: dict) -> str:
    return str(part.get("summary") or part.get("error") or part.get("message") or "")[:SUMMARY]


def parts(cfg: Config, live: dict | None = None) -> dict:
    """Each part's state now. `live`: {"camera": worker health, "fingerprint": worker health} of a running
    daemon (None for a part the daemon does not run); without it the camera is not reported."""
    from terminal.app import status as app_status

    report = app_status.collect_parts(cfg, STATUS_PARTS)
    db, roster, finger = (report.get(k) or {} for k in ("database", "roster", "fingerprint"))
    time_part = report.get("time") or {}
    now = time_part.get("now") or {}
    disk = ((report.get("health") or {}).get("parts") or {}).get("disk") or {}
    out = {
        "database": {"ok": bool(db.get("ok")), "summary": _short(db) or (
            f"head seq {db['head']['seq']}" if db.get("ok") and db.get("head") else "")},
        "disk": {"ok": bool(disk.get("ok", False)) if disk else None, "summary": _short(disk),
                 "free_mb": (disk.get("diagnostics") or {}).get("free_mb")},
        "clock": {"ok": bool(now.get("verified")) if now else None, "summary": _short(time_part),
                  "basis": now.get("basis"), "uncertainty_s": now.get("uncertainty_s")},
        "roster": {"ok": bool(roster.get("ok", False)) if roster else None, "summary": _short(roster),
                   "version": roster.get("version"), "employees": roster.get("employees")},
        "fingerprint": {"ok": bool(finger.get("ok")) if finger.get("enabled", True) else None,
                        "summary": _short(finger)},
        "camera": {"ok": None, "summary": ""},
    }
    for name, health in (live or {}).items():
        if health is None:
            out[name] = {"ok": None, "summary": "not used on this terminal"}
        else:
            out[name] = {"ok": bool(health.get("ok")), "summary": _short(health) or out[name].get("summary", "")}
    return out


def cached(cfg: Config, base: Callable[[], dict] | None = None, live: Callable[[], dict] | None = None,
           clock=time.monotonic) -> Callable[[], dict]:
    """The heartbeat's `health` function: `base()` (the kiosk's indicators in the daemon) with `parts`
    added, the parts recomputed at most every CACHE_S seconds."""
    lock = threading.Lock()
    state: dict = {"at": None, "parts": None}

    def health() -> dict:
        with lock:
            if state["at"] is None or clock() - state["at"] >= CACHE_S:
                try:
                    state["parts"] = parts(cfg, live() if live else None)
                except Exception as e:  # the heartbeat itself must go out whatever a part does
                    log.exception("the heartbeat's part report failed")
                    state["parts"] = {"error": f"{type(e).__name__}: {e}"[:SUMMARY]}
                state["at"] = clock()
            current = state["parts"]
        return {**(base() if base else {}), "parts": current}
    return health
