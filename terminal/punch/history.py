"""The punch history the schedule rules look at: an employee's recent punches with their corrected times.

The rules (terminal/punch/rules.py) decide from plain data; this module is where that data is read from the
punch log (SQL over the punches table) and placed in time: by the monotonic clock for the current boot, by the
timeline's annotation for earlier boots.

If the annotation itself fails, a punch must still be possible (a time-service bug must not stop attendance),
but never silently on weaker ground: the earlier boots' punches are then placed by their raw wall clock, and
the decision says so (`time_unverified` in its details), so the punch is recorded flagged and the punch
service raises a clock fault.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
import time

from terminal.punch.rules import Decision, RecentPunch, Schedule
from terminal.timing import timeline


class AnnotationFailed(Exception):
    """The timeline could not place earlier boots' punches; `placed` holds them by their raw wall clock."""

    def __init__(self, message: str, placed: list[RecentPunch]):
        super().__init__(message)
        self.placed = placed


def recent_punches(conn: sqlite3.Connection, employee: str, now_utc: dt.datetime, reading=None,
                   limit: int = 8, since: dt.datetime | None = None) -> list[RecentPunch]:
    """The employee's last `limit` recorded punches with their corrected times, newest first.

    A punch of the current boot is placed by the monotonic clock (now_utc minus the boottime elapsed since
    it), which no wall-clock step can disturb; punches of earlier boots use the time service's annotation
    (terminal/timing/timeline.py), or their raw wall clock when it has none. With `since`, punches of earlier boots are
    skipped when the current boot began before `since` (boots never interleave in seq order), which spares
    the annotation on a terminal that has been running since before today. Raises AnnotationFailed when
    earlier boots' punches could not be annotated (its `placed` is the raw-clock answer).
    """
    # the kind is the derived one (terminal/punch/derived.py): it follows re-anchoring, the hashed one does not
    cur = conn.execute("SELECT p.*, d.kind AS derived_kind FROM punches p LEFT JOIN punch_derived d "
                       "ON d.seq = p.seq WHERE p.employee = ? ORDER BY p.seq DESC LIMIT ?", (employee, limit))
    cols = [c[0] for c in cur.description]
    records = [dict(zip(cols, tuple(r), strict=True)) for r in cur.fetchall()]
    if reading is not None and since is not None:
        boot_began = now_utc - dt.timedelta(microseconds=reading.boottime_ns / 1000)
        if boot_began <= since:
            records = [r for r in records if r["boot_id"] == reading.boot_id]
    earlier = [r for r in records if reading is None or r["boot_id"] != reading.boot_id]
    failure = None
    try:
        annotated = _annotate(conn, earlier)
    except Exception as e:  # the time service's bug: place them by the raw clock, and say so
        annotated, failure = {}, f"{type(e).__name__}: {e}"
    out = []
    for r in records:
        if reading is not None and r["boot_id"] == reading.boot_id:
            utc = now_utc - dt.timedelta(microseconds=(reading.boottime_ns - r["boottime_ns"]) / 1000)
        else:
            utc = annotated.get(r["seq"]) or dt.datetime.fromtimestamp(r["realtime_ns"] / 1e9, dt.UTC)
        kind = r["derived_kind"] or r["kind"] or _kind_from_details(r["details"])
        out.append(RecentPunch(kind, utc, r["seq"]))
    if failure is not None:
        raise AnnotationFailed(f"the corrected times of {len(earlier)} earlier punches could not be computed "
                               f"({failure}); they were placed by the raw wall clock", out)
    return out


def _kind_from_details(details: str) -> str:
    try:
        return json.loads(details or "{}").get("kind", "")
    except ValueError:
        return ""


# Annotations of earlier boots' punches, by (log_id, seq): one timeline.annotate call costs a scan of the
# log (~0.25 s at 200k punches), so the neighbourhood of a miss is annotated at once and kept for a while.
# Entries expire because a new time sample may re-anchor an earlier boot.
_ANNOTATIONS: dict[tuple[str, int], tuple[float, dt.datetime | None]] = {}
ANNOTATION_TTL_S = 600.0
ANNOTATION_BATCH = 5000
_ANNOTATIONS_MAX = 50_000


def _annotate(conn, records: list[dict]) -> dict[int, dt.datetime]:
    if not records:
        return {}
    now = time.monotonic()
    missing = [r for r in records if now - _ANNOTATIONS.get((r["log_id"], r["seq"]), (-1e18, None))[0]
               > ANNOTATION_TTL_S]
    if missing:
        top = max(r["seq"] for r in missing)
        cur = conn.execute("SELECT * FROM punches WHERE seq <= ? AND seq > ? ORDER BY seq",
                           (top, top - ANNOTATION_BATCH))
        cols = [c[0] for c in cur.description]
        batch = [dict(zip(cols, tuple(r), strict=True)) for r in cur.fetchall()]
        batch += [r for r in missing if r["seq"] <= top - ANNOTATION_BATCH]
        annotated = timeline.annotate(conn, batch)  # a failure is the caller's to flag (recent_punches)
        if len(_ANNOTATIONS) > _ANNOTATIONS_MAX:
            _ANNOTATIONS.clear()
        for rec in annotated:
            utc = dt.datetime.fromisoformat(rec["utc"].replace("Z", "+00:00")) if rec.get("utc") else None
            _ANNOTATIONS[(rec["log_id"], rec["seq"])] = (now, utc)
    out = {}
    for r in records:
        utc = _ANNOTATIONS.get((r["log_id"], r["seq"]), (0, None))[1]
        if utc is not None:
            out[r["seq"]] = utc
    return out


def decide_for_log(schedule: Schedule, conn: sqlite3.Connection, employee: str, name: str,
                   now_utc: dt.datetime, reading=None) -> Decision:
    """The daemon's one call per identified employee: look at the log, then decide. If earlier punches
    could not be placed in time, the decision is made on their raw clock and carries `time_unverified`."""
    since = min(schedule.local_midnight(now_utc), now_utc - schedule.repeat)
    try:
        return schedule.decide(name, now_utc, recent_punches(conn, employee, now_utc, reading, since=since))
    except AnnotationFailed as e:
        decision = schedule.decide(name, now_utc, e.placed)
        return dataclasses.replace(decision, details={**decision.details, "time_unverified": str(e)})
