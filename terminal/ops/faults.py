"""Faults: what is broken on this terminal, kept in the append-only `fault_events` table (contract C5).

A health check that fails calls `raise_fault`; while the fault stays open, further calls with the same
`fault_key` add nothing (deduplicated), so a camera that stays dead is one report, not one a minute.
`clear_fault` closes it once the part recovers. IT staff add `report` events with a description and an
optional photo of the damage ("disertai bukti kerusakan"). The push client sends rows with id above its
high-water mark to the central server; nothing here imports sync/.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

from terminal.log import evidence

CATEGORIES = ("camera", "fingerprint", "screen", "gpio", "disk", "database", "clock", "sync", "network",
              "temperature", "power", "other")
EVENT_FIELDS = ("id", "fault_key", "event", "part", "category", "message", "diagnostics", "photo_path",
                "photo_sha256", "realtime_ns")
MAX_MESSAGE = 2000
MAX_PHOTO_BYTES = 10 * 1024 * 1024


class FaultError(ValueError):
    """A fault report was refused; the message says what to correct."""


def _row(row) -> dict:
    event = dict(zip(EVENT_FIELDS, tuple(row), strict=True))
    event["diagnostics"] = json.loads(event["diagnostics"] or "{}")
    return event


def _select(conn: sqlite3.Connection, where: str = "", args: tuple = ()) -> list[dict]:
    cur = conn.execute(f"SELECT {', '.join(EVENT_FIELDS)} FROM fault_events {where}", args)
    return [_row(r) for r in cur.fetchall()]


def _insert(conn: sqlite3.Connection, event: dict) -> dict:
    event = {"photo_path": None, "photo_sha256": None, "realtime_ns": time.time_ns(), **event}
    event["diagnostics"] = json.dumps(event.get("diagnostics") or {}, sort_keys=True, default=str)
    cols = [f for f in EVENT_FIELDS if f != "id"]
    cur = conn.execute(f"INSERT INTO fault_events ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                       tuple(event[c] for c in cols))
    event["id"] = cur.lastrowid
    event["diagnostics"] = json.loads(event["diagnostics"])
    return {f: event[f] for f in EVENT_FIELDS}


class _Immediate:
    """BEGIN IMMEDIATE … COMMIT, so the check for an open fault and the insert are one atomic step."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def _latest(conn: sqlite3.Connection, fault_key: str) -> dict | None:
    rows = _select(conn, "WHERE fault_key = ? AND event IN ('raised', 'cleared') ORDER BY id DESC LIMIT 1",
                   (fault_key,))
    return rows[0] if rows else None


def raise_fault(conn: sqlite3.Connection, fault_key: str, *, part: str, category: str, message: str,
                diagnostics: dict | None = None) -> dict | None:
    """Open a fault; returns the new event, or None when that fault is already open (deduplicated)."""
    _check_category(category)
    with _Immediate(conn):
        last = _latest(conn, fault_key)
        if last is not None and last["event"] == "raised":
            return None
        return _insert(conn, {"fault_key": fault_key, "event": "raised", "part": part, "category": category,
                              "message": message[:MAX_MESSAGE], "diagnostics": diagnostics})


def clear_fault(conn: sqlite3.Connection, fault_key: str, *, message: str = "recovered",
                diagnostics: dict | None = None) -> dict | None:
    """Close an open fault; returns the new event, or None when it was not open."""
    with _Immediate(conn):
        last = _latest(conn, fault_key)
        if last is None or last["event"] != "raised":
            return None
        return _insert(conn, {"fault_key": fault_key, "event": "cleared", "part": last["part"],
                              "category": last["category"], "message": message[:MAX_MESSAGE],
                              "diagnostics": diagnostics})


def open_faults(conn: sqlite3.Connection) -> list[dict]:
    """The raised events whose fault has not been cleared since, oldest first."""
    return _select(conn, """WHERE id IN (SELECT MAX(id) FROM fault_events WHERE event IN ('raised', 'cleared')
                                        GROUP BY fault_key) AND event = 'raised' ORDER BY id""")


def events(conn: sqlite3.Connection, after_id: int = 0, limit: int = 500) -> list[dict]:
    """Events with id > after_id in id order, at most `limit` (the push client's batches)."""
    return _select(conn, "WHERE id > ? ORDER BY id LIMIT ?", (int(after_id), int(limit)))


def recent(conn: sqlite3.Connection, limit: int = 50) -> list[dict]:
    return list(reversed(_select(conn, "ORDER BY id DESC LIMIT ?", (int(limit),))))


def report(conn: sqlite3.Connection, state_dir: Path, *, category: str, message: str,
           photo_jpeg: bytes | None = None, part: str | None = None, reporter: str = "") -> dict:
    """A fault report by IT staff, with an optional photo (stored and fsynced as evidence first)."""
    _check_category(category)
    message = (message or "").strip()
    if not message:
        raise FaultError("describe the fault: --message must not be empty (what is broken, since when)")
    if len(message) > MAX_MESSAGE:
        raise FaultError(f"the description is {len(message)} characters; keep it under {MAX_MESSAGE}")
    photo = None
    if photo_jpeg is not None:
        photo = evidence.store_photo(Path(state_dir), _check_photo(photo_jpeg))
    with _Immediate(conn):
        return _insert(conn, {
            "fault_key": f"report:{uuid.uuid4().hex}", "event": "report", "part": part or category,
            "category": category, "message": message, "diagnostics": {"reporter": reporter} if reporter else {},
            "photo_path": photo.relative_path if photo else None,
            "photo_sha256": photo.sha256 if photo else None})


def _check_category(category: str) -> None:
    if category not in CATEGORIES:
        raise FaultError(f"unknown fault category {category!r}; use one of {', '.join(CATEGORIES)}")


def _check_photo(data: bytes) -> bytes:
    if len(data) > MAX_PHOTO_BYTES:
        raise FaultError(f"the photo is {len(data) // 1024} KiB; use one under {MAX_PHOTO_BYTES // 2**20} MiB")
    if data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n":
        return data
    raise FaultError("the photo is not a JPEG or PNG image; take the photo again or convert it")


def status_part(cfg) -> dict:
    """The `faults` part of `presensi status`: the open faults."""
    from terminal.log import punchlog  # lazy: punchlog is heavier than this module needs otherwise

    with punchlog.PunchLog(cfg.state_dir, readonly=True) as log:
        rows = open_faults(log.conn)
    names = ", ".join(f"{e['part']} ({e['message'][:60]})" for e in rows)
    return {"ok": not rows, "open": rows, "count": len(rows),
            "summary": f"{len(rows)} open: {names}" if rows else "no open faults"}
