"""A punch's kind, lateness, local date and time and workday: derived values, kept beside the record.

For the regency these values are money (TPP is cut per late minute), and they depend on the punch's time,
which the terminal often knows only roughly when the punch happens (a Pi without RTC after a power cut). So
they are not part of the hash-chained record (that holds the raw clock readings and what the employee chose:
employee, method, work code); they live in `punch_derived`, computed at the punch from the best estimate
then, and recomputed whenever re-anchoring changes the punch's time interval (terminal/timing/timeline.py
writes `punch_times` with a new revision; `refresh` follows every revision it has not seen yet). A value
that changes gets a new `revision`, which the push client delivers to the central server.

Each row says where it came from: `basis` (the time source: server-signed, kernel-ntp, order, wall-clock,
or 'recorded' for records older than this table, whose hashed kind it copies), `computed_from` ('utc' =
the best estimate of the interval, 'wall' = the raw wall clock when there is no estimate) and
`time_verified` (False while the punch's time rests on no trusted sample: the kiosk says so).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time

from terminal.log.punchlog import DERIVED_FIELDS
from terminal.punch.rules import Decision, RecentPunch, Schedule

UNVERIFIED_BASES = ("order", "none", "wall-clock", "unanchored", "recorded")
FIELDS = DERIVED_FIELDS
BATCH = 200
RECENT = 8  # earlier punches of the employee the rules look at (as at the punch: history.recent_punches)


def values(decision: Decision, *, timezone: str, basis: str, computed_from: str, verified: bool) -> dict:
    """The derived row of a decision (FIELDS), as plain data."""
    local = decision.details.get("local_time") or decision.local_time.replace(".", ":") + ":00"
    return {"kind": decision.kind, "minutes_late": decision.minutes_late, "minutes_early": decision.minutes_early,
            "local_date": decision.date, "local_time": local, "timezone": timezone,
            "workday": bool(decision.workday), "day_name": decision.day_name or "", "zk_state": decision.zk_state,
            "basis": basis, "computed_from": computed_from, "time_verified": bool(verified)}


def at_punch(decision: Decision, estimate: dict, timezone: str) -> dict:
    """What is stored with a new punch: the decision made from timeline.now() at that moment."""
    has_estimate = bool(estimate.get("utc"))
    return values(decision, timezone=timezone, basis=estimate.get("basis") or "none",
                  computed_from="utc" if has_estimate else "wall", verified=bool(estimate.get("verified")))


def get(conn: sqlite3.Connection, seq: int) -> dict | None:
    row = conn.execute(f"SELECT {', '.join(FIELDS)}, revision FROM punch_derived WHERE seq = ?", (seq,)).fetchone()
    return None if row is None else _public(dict(zip((*FIELDS, "revision"), tuple(row), strict=True)))


def for_seqs(conn: sqlite3.Connection, lo: int, hi: int) -> dict[int, dict]:
    """seq -> derived values for lo <= seq <= hi (one query for a push batch)."""
    cur = conn.execute(f"SELECT seq, {', '.join(FIELDS)}, revision FROM punch_derived WHERE seq BETWEEN ? AND ?",
                       (lo, hi))
    names = ("seq", *FIELDS, "revision")
    out = {}
    for r in cur.fetchall():
        d = dict(zip(names, tuple(r), strict=True))
        out[d.pop("seq")] = _public(d)
    return out


def _public(d: dict) -> dict:
    d["workday"] = None if d["workday"] is None else bool(d["workday"])
    d["time_verified"] = bool(d["time_verified"])
    return d


# -- recomputing after re-anchoring ------------------------------------------------------------------------


def refresh(conn: sqlite3.Connection, schedule: Schedule, *, max_rows: int = 1_000_000) -> int:
    """Recompute the derived values of every punch whose time changed since they were computed (its
    punch_times revision differs from the one they came from), in seq order, so a punch's recomputed kind
    sees the recomputed kinds of the employee's earlier punches. Short transactions of BATCH rows: a
    punch never waits long for the write lock. Returns how many rows changed value."""
    changed, done = 0, 0
    while done < max_rows:
        rows = conn.execute(
            """SELECT p.seq, p.log_id, p.employee, p.realtime_ns, t.utc, t.basis, t.flags, t.revision
               FROM punch_times t JOIN punches p ON p.seq = t.seq LEFT JOIN punch_derived d ON d.seq = t.seq
               WHERE d.seq IS NULL OR d.times_revision != t.revision ORDER BY t.seq LIMIT ?""", (BATCH,)).fetchall()
        if not rows:
            break
        changed += _refresh_batch(conn, schedule, [tuple(r) for r in rows])
        done += len(rows)
    return changed


def _refresh_batch(conn: sqlite3.Connection, schedule: Schedule, rows: list[tuple]) -> int:
    changed = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        for seq, log_id, employee, realtime_ns, utc_text, basis, flags, revision in rows:
            utc = _utc(utc_text) or dt.datetime.fromtimestamp(realtime_ns / 1e9, dt.UTC)
            decision = schedule.classify("", utc, _earlier(conn, employee, seq))
            verified = basis not in UNVERIFIED_BASES and "no-time-sample" not in json.loads(flags or "[]")
            new = values(decision, timezone=schedule.timezone, basis=basis,
                         computed_from="utc" if utc_text else "wall", verified=verified)
            changed += _upsert(conn, seq, log_id, new, revision)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return changed


def _earlier(conn: sqlite3.Connection, employee: str, seq: int) -> list[RecentPunch]:
    """The employee's punches before `seq`, placed at their current best time, with their derived kinds."""
    cur = conn.execute(
        """SELECT p.seq, p.realtime_ns, t.utc, coalesce(d.kind, p.kind) FROM punches p
           LEFT JOIN punch_times t ON t.seq = p.seq LEFT JOIN punch_derived d ON d.seq = p.seq
           WHERE p.employee = ? AND p.seq < ? ORDER BY p.seq DESC LIMIT ?""", (employee, seq, RECENT))
    return [RecentPunch(kind or "", _utc(utc) or dt.datetime.fromtimestamp(wall / 1e9, dt.UTC), s)
            for s, wall, utc, kind in cur.fetchall()]


def _upsert(conn: sqlite3.Connection, seq: int, log_id: str, new: dict, times_revision: int) -> int:
    """Store `new` as computed from times_revision; a new revision only when a value changed. 1 = changed."""
    row = conn.execute(f"SELECT {', '.join(FIELDS)} FROM punch_derived WHERE seq = ?", (seq,)).fetchone()
    cols = [_db_value(new[k]) for k in FIELDS]
    now = time.time_ns()
    if row is None:
        conn.execute(f"""INSERT INTO punch_derived (seq, log_id, {', '.join(FIELDS)}, times_revision, updated_ns)
                         VALUES (?, ?, {', '.join('?' * len(FIELDS))}, ?, ?)""",
                     (seq, log_id, *cols, times_revision, now))
        return 1
    if list(tuple(row)) == cols:
        conn.execute("UPDATE punch_derived SET times_revision = ? WHERE seq = ?", (times_revision, seq))
        return 0
    sets = ", ".join(f"{k} = ?" for k in FIELDS)
    conn.execute(f"UPDATE punch_derived SET {sets}, times_revision = ?, revision = revision + 1, updated_ns = ? "
                 "WHERE seq = ?", (*cols, times_revision, now, seq))
    return 1


def _db_value(v):
    return int(v) if isinstance(v, bool) else v


def _utc(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


# -- delivery bookkeeping -------------------------------------------------------------------------------------


def pending(conn: sqlite3.Connection, up_to_seq: int | None = None, limit: int = 500) -> list[dict]:
    """Derived rows whose current revision the central server has not stored, oldest first."""
    cur = conn.execute(
        f"""SELECT seq, {', '.join(FIELDS)}, revision FROM punch_derived WHERE revision > pushed_revision
            AND seq <= ? ORDER BY seq LIMIT ?""", (up_to_seq if up_to_seq is not None else 2**62, limit))
    names = ("seq", *FIELDS, "revision")
    return [_public(dict(zip(names, tuple(r), strict=True))) for r in cur.fetchall()]


def mark_pushed(conn: sqlite3.Connection, rows: list[dict]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("UPDATE punch_derived SET pushed_revision = max(pushed_revision, ?) WHERE seq = ?",
                         [(r["revision"], r["seq"]) for r in rows])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise

