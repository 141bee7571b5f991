"""What Diskominfo needs to know about the terminals: each one's health from its last heartbeat, its faults
with their state (open, acknowledged, closed, or cleared by the terminal itself), acknowledging and
closing a fault, and the silent-terminal check that raises a fault on the server when a terminal stops
calling in. The fleet pages (sync/server/pages/fleet.py) and `presensi server faults` read it.

A fault is a `raised` or `report` event the terminal sent (sync/server/app.py stores them in `faults`);
a later `cleared` event with the same fault_key means the terminal recovered by itself. Faults the server
raises (a silent terminal) live in the same table with negative event ids (the terminal's are positive,
so they never collide) and fault_key `server:silent`; they clear the same way when contact returns.
Acknowledging and closing are the server's own acts, kept beside the event in `fault_actions` (who,
when, note): the event as the terminal sent it is never changed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

from .storage import Store

log = logging.getLogger("presensi.server")

SILENT_KEY = "server:silent"
ACTIONS = ("acknowledge", "close")

DDL = """
CREATE TABLE IF NOT EXISTS fault_actions (
    device_id TEXT NOT NULL, event_id BIGINT NOT NULL, action TEXT NOT NULL, actor TEXT NOT NULL,
    note TEXT NOT NULL, created_ns BIGINT NOT NULL, PRIMARY KEY (device_id, event_id, action));
CREATE INDEX IF NOT EXISTS faults_by_key ON faults (device_id, fault_key, event_id);
CREATE INDEX IF NOT EXISTS faults_by_event ON faults (event, device_id);
"""


def ensure_schema(store: Store) -> None:
    if not getattr(store, "fleet_ready", False):
        store.run_ddl(DDL)
        store.fleet_ready = True  # type: ignore[attr-defined]


# -- faults and their state -----------------------------------------------------------------------------

# A fault is cleared when the same device sent a `cleared` event for its key after it (terminal ids grow
# upwards, the server's own downwards).
_CLEARED = """SELECT min(c.received_ns) FROM faults c WHERE c.device_id = f.device_id AND c.fault_key = f.fault_key
              AND c.event = 'cleared' AND ((f.event_id > 0 AND c.event_id > f.event_id)
                                           OR (f.event_id < 0 AND c.event_id < f.event_id))"""
_FAULTS = f"""SELECT f.*, ({_CLEARED}) AS cleared_ns FROM faults f WHERE f.event IN ('raised', 'report')"""


def faults(store: Store, device_id: str | None = None, *, open_only: bool = False, limit: int = 500) -> list[dict]:
    """Fault reports, newest first, each with `state`, `reporter`, its acknowledgement and closure."""
    ensure_schema(store)
    sql, args = _FAULTS, []
    if device_id is not None:
        sql += " AND f.device_id = ?"
        args.append(device_id)
    rows = store.query(f"SELECT * FROM ({sql}) AS x ORDER BY received_ns DESC, event_id DESC", args)
    actions = _actions(store, device_id)
    out = []
    for r in rows:
        r = _with_state(r, actions.get((r["device_id"], r["event_id"]), {}))
        if open_only and r["state"] not in ("open", "acknowledged"):
            continue
        out.append(r)
        if len(out) >= limit:
            break
    return out


def _actions(store: Store, device_id: str | None) -> dict[tuple[str, int], dict[str, dict]]:
    rows = store.query("SELECT * FROM fault_actions" + (" WHERE device_id = ?" if device_id else ""),
                       (device_id,) if device_id else ())
    out: dict[tuple[str, int], dict[str, dict]] = {}
    for a in rows:
        out.setdefault((a["device_id"], a["event_id"]), {})[a["action"]] = {
            "by": a["actor"], "at_ns": a["created_ns"], "note": a["note"]}
    return out


def _with_state(row: dict, actions: dict) -> dict:
    try:
        diagnostics = json.loads(row.get("diagnostics") or "null")
    except ValueError:
        diagnostics = row.get("diagnostics")
    reporter = "server" if row["event_id"] < 0 else (
        (diagnostics or {}).get("reporter") if isinstance(diagnostics, dict) else None) or "terminal"
    if "close" in actions:
        state = "closed"
    elif row.get("cleared_ns") is not None:
        state = "cleared"
    elif "acknowledge" in actions:
        state = "acknowledged"
    else:
        state = "open"
    return {**row, "diagnostics": diagnostics, "reporter": reporter, "state": state,
            "acknowledged": actions.get("acknowledge"), "closed": actions.get("close")}


def fault(store: Store, device_id: str, event_id: int) -> dict | None:
    ensure_schema(store)
    rows = store.query(_FAULTS + " AND f.device_id = ? AND f.event_id = ?", (device_id, event_id))
    if not rows:
        return None
    actions = _actions(store, device_id).get((device_id, event_id), {})
    return _with_state(rows[0], actions)


def act(store: Store, device_id: str, event_id: int, action: str, actor: str, note: str) -> str:
    """Acknowledge or close a fault. Returns "done", or why not: "unknown", "closed" (already closed),
    "acknowledged" (already acknowledged)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    ensure_schema(store)
    with store.transaction() as cur:
        if not store.rows(cur, "SELECT 1 FROM faults WHERE device_id=? AND event_id=? AND event IN "
                          "('raised', 'report')", (device_id, event_id)):
            return "unknown"
        done = {r[0] for r in store.rows(cur, "SELECT action FROM fault_actions WHERE device_id=? AND event_id=?",
                                         (device_id, event_id))}
        if "close" in done:
            return "closed"
        if action in done:
            return "acknowledged"
        store.execute(cur, "INSERT INTO fault_actions VALUES (?, ?, ?, ?, ?, ?)",
                      (device_id, event_id, action, actor, note, time.time_ns()))
    return "done"


# -- health from the last heartbeat ---------------------------------------------------------------------

@dataclass
class Part:
    name: str  # the part's key: camera, fingerprint, clock, disk, database, roster
    ok: bool | None  # None: not used on this terminal, or not reported
    summary: str


PART_NAMES = ("camera", "fingerprint", "clock", "disk", "database", "roster")


def parts(heartbeat: dict | None) -> list[Part]:
    """Each part's state as the terminal last reported it. Heartbeats carry `health.parts` (terminal/app/
    heartbeat.py); older terminals sent only the kiosk's indicators, which say less."""
    health = (heartbeat or {}).get("health") or {}
    reported = health.get("parts") if isinstance(health.get("parts"), dict) else {}
    out = []
    for name in PART_NAMES:
        p = reported.get(name)
        if isinstance(p, dict):
            ok = p.get("ok") if isinstance(p.get("ok"), bool) else None
            out.append(Part(name, ok, str(p.get("summary") or "")[:300]))
        else:
            out.append(Part(name, *_legacy(name, health)))
    return out


def _legacy(name: str, health: dict) -> tuple[bool | None, str]:
    value = {"camera": health.get("camera"), "fingerprint": health.get("fingerprint"),
             "clock": health.get("time_verified"),
             "disk": (health.get("storage") or {}).get("ok") if isinstance(health.get("storage"), dict) else None,
             }.get(name)
    return (value if isinstance(value, bool) else None), ""


def part_detail(heartbeat: dict | None, name: str) -> dict:
    """The reported fields of one part (e.g. clock: basis, uncertainty_s; roster: version)."""
    health = (heartbeat or {}).get("health") or {}
    reported = health.get("parts") if isinstance(health.get("parts"), dict) else {}
    value = reported.get(name)
    return value if isinstance(value, dict) else {}


# -- the fleet at a glance ------------------------------------------------------------------------------

def overview(store: Store, silent_after_s: float, now_ns: int | None = None,
             device_id: str | None = None) -> list[dict]:
    """One row per terminal (or only `device_id`'s): last contact, silent or not, parts, open faults,
    backlog, versions, alarms."""
    ensure_schema(store)
    now_ns = now_ns or time.time_ns()
    open_faults: dict[str, list[dict]] = {}
    for f in faults(store, device_id, open_only=True, limit=100_000):
        open_faults.setdefault(f["device_id"], []).append(f)
    only = " WHERE device_id = ?" if device_id is not None else ""
    args = (device_id,) if device_id is not None else ()
    alarms = {r["device_id"]: r["n"] for r in store.query(f"SELECT device_id, count(*) AS n FROM alarms{only} "
                                                          "GROUP BY device_id", args)}
    out = []
    for d in store.query(f"SELECT device_id, created_ns, last_contact_ns, last_heartbeat FROM devices{only} "
                         "ORDER BY device_id", args):
        try:
            hb = json.loads(d["last_heartbeat"] or "null")
        except ValueError:
            hb = None
        hb = hb if isinstance(hb, dict) else None
        since = d["last_contact_ns"] or d["created_ns"]
        quiet_s = max(0.0, (now_ns - since) / 1e9)
        out.append({
            "device_id": d["device_id"], "last_contact_ns": d["last_contact_ns"], "quiet_s": quiet_s,
            "silent": quiet_s > silent_after_s, "heartbeat": hb, "parts": parts(hb),
            "version": (hb or {}).get("version"), "backlog": (hb or {}).get("backlog"),
            "roster_version": part_detail(hb, "roster").get("version"),
            "open_faults": open_faults.get(d["device_id"], []), "alarms": alarms.get(d["device_id"], 0)})
    return out


# -- the silent-terminal check --------------------------------------------------------------------------

def check_silent(store: Store, silent_after_s: float, now_ns: int | None = None) -> dict:
    """Raise a server fault for every terminal silent longer than `silent_after_s` (never heard from: since
    it was registered), clear it once the terminal calls again. Returns {"raised": [...], "cleared": [...]}."""
    ensure_schema(store)
    now_ns = now_ns or time.time_ns()
    raised, cleared = [], []
    open_silent = {f["device_id"]: f for f in faults(store, open_only=True, limit=100_000)
                   if f["fault_key"] == SILENT_KEY}
    for d in store.query("SELECT device_id, created_ns, last_contact_ns FROM devices"):
        since = d["last_contact_ns"] or d["created_ns"]
        silent = (now_ns - since) / 1e9 > silent_after_s
        dev = d["device_id"]
        if silent and dev not in open_silent:
            _server_event(store, dev, "raised", _silent_message(d["last_contact_ns"], silent_after_s),
                          {"last_contact_ns": d["last_contact_ns"], "silent_after_s": silent_after_s})
            raised.append(dev)
        elif not silent and dev in open_silent:
            _server_event(store, dev, "cleared", "terminal menghubungi server lagi",
                          {"last_contact_ns": d["last_contact_ns"]})
            cleared.append(dev)
    return {"raised": raised, "cleared": cleared}


def _silent_message(last_contact_ns: int | None, silent_after_s: float) -> str:
    limit = f"{silent_after_s / 3600:g} jam" if silent_after_s >= 3600 else f"{silent_after_s:g} detik"
    if last_contact_ns is None:
        return f"terminal belum pernah menghubungi server (lebih dari {limit} sejak didaftarkan)"
    return f"terminal tidak menghubungi server lebih dari {limit}"


def _server_event(store: Store, device_id: str, event: str, message: str, diagnostics: dict) -> None:
    now = time.time_ns()
    with store.transaction() as cur:
        low = store.rows(cur, "SELECT min(event_id) FROM faults WHERE device_id=?", (device_id,))[0][0]
        event_id = min(-1, (low or 0) - 1)
        store.execute(cur, "INSERT INTO faults VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (device_id, event_id, SILENT_KEY, event, "connection", "network", message,
                       json.dumps(diagnostics), None, now, now))


class SilenceWatch(threading.Thread):
    """The periodic silent-terminal check inside the server process."""

    def __init__(self, store: Store, silent_after_s: float, every_s: float):
        super().__init__(name="silence-watch", daemon=True)
        self.store, self.silent_after_s, self.every_s = store, silent_after_s, every_s
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                result = check_silent(self.store, self.silent_after_s)
                for dev in result["raised"]:
                    log.warning("terminal %s is silent for more than %g s: fault raised", dev, self.silent_after_s)
            except Exception:  # a database hiccup must not end the check for good
                log.exception("silent-terminal check failed")
            self.stop_event.wait(self.every_s)

    def stop(self) -> None:
        self.stop_event.set()
