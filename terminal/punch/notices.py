"""What the terminal tells an employee after their punch, and the apel cancellations it knows of.

Three sources, one list of lines in Bahasa Indonesia under the punch's own message:
- messages from the central server, in the signed roster (terminal/punch/roster.py: per employee or all
  staff, valid from/until office-local dates);
- messages a ZKTeco client set over port 4370 (SMS with UDATA naming the users, sync/device/zk/), kept in
  the punch database's `local_messages` and `local_message_recipients`;
- what the terminal notices itself: yesterday was a working day on which the employee punched but no pulang
  was recorded ("Absen pulang kemarin belum tercatat"), said at their first punch of today.

Apel cancellations come from the roster (the central server) and from the admin page
(`local_apel_cancellations`); terminal/punch/rules.py leaves a cancelled day's apel window out.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time

MISSING_PULANG = "Absen pulang kemarin belum tercatat"
APEL_CANCELLED = "Apel pagi hari ini ditiadakan"
MAX_TEXT = 300
MAX_NOTICES = 3  # what fits under the punch's message on the 800x480 screen


def _valid(m: dict, when: str) -> bool:
    """`when` is "YYYY-MM-DD HH:MM:SS" office-local; dates alone cover the whole day."""
    start, end = m["valid_from"], m["valid_until"]
    return start <= when and (when <= end if len(end) > 10 else when[:10] <= end)


def server_messages(roster, employee: str, when: str) -> list[str]:
    return [m["text"] for m in roster.messages()
            if m.get("employee") in (None, employee) and _valid(m, when)]


def local_messages(conn: sqlite3.Connection, employee: str, when: str) -> list[str]:
    rows = conn.execute(
        "SELECT m.text, m.valid_from, m.valid_until FROM local_messages m WHERE m.audience = 'all' OR EXISTS "
        "(SELECT 1 FROM local_message_recipients r WHERE r.source = m.source AND r.ext_id = m.ext_id AND "
        "r.employee = ?) ORDER BY m.id", (employee,)).fetchall()
    return [r[0] for r in rows if _valid({"valid_from": r[1], "valid_until": r[2]}, when)]


def missing_pulang(conn: sqlite3.Connection, schedule, employee: str, today: dt.date) -> bool:
    """Yesterday was a working day with pulang in its windows, the employee punched then, no pulang among
    those punches, and this is their first punch of today."""
    yesterday = today - dt.timedelta(days=1)
    plan = schedule.day_plan(yesterday)
    if not plan.workday or "pulang" not in {w.kind for w in plan.windows}:
        return False
    kinds = {}
    for day in (yesterday, today):
        kinds[day] = {r[0] for r in conn.execute(
            "SELECT d.kind FROM punches p JOIN punch_derived d ON d.seq = p.seq WHERE p.employee = ? AND "
            "d.local_date = ?", (employee, day.isoformat()))}
    return bool(kinds[yesterday]) and "pulang" not in kinds[yesterday] and len(kinds[today]) <= 1


def for_punch(conn: sqlite3.Connection, roster, schedule, employee: str, local: dt.datetime,
              first_today: bool) -> list[str]:
    """The lines to show under the punch message, most important first, at most MAX_NOTICES."""
    when = local.strftime("%Y-%m-%d %H:%M:%S")
    lines = []
    if first_today and missing_pulang(conn, schedule, employee, local.date()):
        lines.append(MISSING_PULANG)
    lines += server_messages(roster, employee, when) + local_messages(conn, employee, when)
    return list(dict.fromkeys(lines))[:MAX_NOTICES]


# -- written by the ZK server and the admin page ---------------------------------------------------------

def put_message(conn: sqlite3.Connection, source: str, ext_id: int, audience: str, text: str, valid_from: str,
                valid_until: str) -> None:
    """Add or replace one message (ZK: an SMS by its id). audience 'all', or 'listed' (its recipients)."""
    if audience not in ("all", "listed"):
        raise ValueError(f"unknown audience {audience!r}")
    text = " ".join(str(text).split())[:MAX_TEXT]
    conn.execute("DELETE FROM local_messages WHERE source = ? AND ext_id = ?", (source, ext_id))
    conn.execute("INSERT INTO local_messages (source, ext_id, audience, text, valid_from, valid_until, created_ns) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (source, ext_id, audience, text, valid_from, valid_until,
                                                  time.time_ns()))


def add_recipient(conn: sqlite3.Connection, source: str, ext_id: int, employee: str) -> None:
    conn.execute("INSERT OR IGNORE INTO local_message_recipients VALUES (?, ?, ?)", (source, ext_id, employee))


def delete_message(conn: sqlite3.Connection, source: str, ext_id: int) -> bool:
    cur = conn.execute("DELETE FROM local_messages WHERE source = ? AND ext_id = ?", (source, ext_id))
    conn.execute("DELETE FROM local_message_recipients WHERE source = ? AND ext_id = ?", (source, ext_id))
    return cur.rowcount > 0


def message_ids(conn: sqlite3.Connection, source: str) -> list[int]:
    return [r[0] for r in conn.execute("SELECT ext_id FROM local_messages WHERE source = ? ORDER BY ext_id",
                                       (source,))]


def cancel_apel(conn: sqlite3.Connection, date: str, reason: str, actor: str) -> None:
    dt.date.fromisoformat(date)  # ValueError for anything but a real date
    conn.execute("INSERT OR REPLACE INTO local_apel_cancellations VALUES (?, ?, ?, ?)",
                 (date, " ".join(str(reason).split())[:MAX_TEXT], actor, time.time_ns()))


def restore_apel(conn: sqlite3.Connection, date: str) -> bool:
    return conn.execute("DELETE FROM local_apel_cancellations WHERE date = ?", (date,)).rowcount > 0


def local_apel_cancellations(conn: sqlite3.Connection) -> list[dict]:
    return [{"date": r[0], "reason": r[1], "actor": r[2]} for r in
            conn.execute("SELECT date, reason, actor FROM local_apel_cancellations ORDER BY date")]
