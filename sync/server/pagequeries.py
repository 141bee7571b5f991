"""The read queries behind the server's pages and the monthly recap: the punches of a device-day or of an
employee, and the month of punches a recap is computed from. (The fleet at a glance is sync/server/fleet.py's
`overview()`, the one query the fleet page and the bench both use: what counts as an open fault is decided
there.)

They are kept apart from storage.py's write path because they change when a page changes, not when
ingest does. Each query is shaped to use one of the indexes in storage.INDEXES (bench/server_bench.py times
them with 200 terminals, 10,000 employees and a month of punches, with and without the indexes). Store
mixes this class in and provides `query`, `_with_derived`, `DERIVED_SELECT` and `punch_columns`.

A punch's day is the office-local date the terminal derived from its corrected time (`punch_derived`);
punches sent by terminals older than derived values carry their day in the hashed record's details instead
(`legacy_month_punches`).
"""

from __future__ import annotations

import json

MONTH_BATCH = 5000  # rows per keyset page: the store's lock is released between pages, pushes go on
EMPLOYEE_BATCH = 500  # employee ids per IN list (SQLite's limit of bound parameters is far above)

# What the recap reads of a punch (narrow: a month is ~600,000 rows for 10,000 employees)
MONTH_FIELDS = ("device_id", "log_id", "seq", "employee", "method", "work_code", "details", "flags", "problems",
                "kind", "minutes_late", "minutes_early", "local_date", "local_time", "time_verified", "basis")


class PageQueries:
    """Read-only queries of the pages; a mixin of storage.Store."""

    # -- punch lists ----------------------------------------------------------------------------------------

    def punches_of_device_day(self, device_id: str, local_date: str) -> list[dict]:
        """The punches a device recorded on one office-local day (YYYY-MM-DD), in the day's order, each with
        `derived` (kind, lateness, local time, time_verified) as iter_punches gives them."""
        return self._with_derived(self.query(
            f"""SELECT p.*, {self.DERIVED_SELECT} FROM punch_derived d JOIN punches p
                  ON p.device_id = d.device_id AND p.log_id = d.log_id AND p.seq = d.seq
                WHERE d.local_date = ? AND d.device_id = ? ORDER BY d.local_time, p.log_id, p.seq""",
            (local_date, device_id)))

    def punches_of_employee(self, employee: str, first_date: str, last_date: str) -> list[dict]:
        """An employee's punches on every device from first_date to last_date (office-local, inclusive)."""
        return self._with_derived(self.query(
            f"""SELECT p.*, {self.DERIVED_SELECT} FROM punches p JOIN punch_derived d
                  ON d.device_id = p.device_id AND d.log_id = p.log_id AND d.seq = p.seq
                WHERE p.employee = ? AND d.local_date >= ? AND d.local_date <= ?
                ORDER BY d.local_date, d.local_time, p.device_id, p.seq""", (employee, first_date, last_date)))

    # -- the recap's month ---------------------------------------------------------------------------------

    def _month_select(self) -> str:
        """The columns of MONTH_FIELDS over `punches p` and `punch_derived d`; its one `?` is bound to
        "%work_code%": `details` is read only where it holds a work code (older terminals kept it there)."""
        work_code = "p.work_code" if "work_code" in self.punch_columns else "NULL"
        return f"""p.device_id, p.log_id, p.seq, p.employee, p.method, {work_code} AS work_code,
                   CASE WHEN p.details LIKE ? THEN p.details END AS details, p.flags, p.problems,
                   d.kind, d.minutes_late, d.minutes_early, d.local_date, d.local_time, d.time_verified, d.basis"""

    def month_punches(self, first_date: str, last_date: str, batch: int = MONTH_BATCH):
        """Every punch whose office-local date lies in [first_date, last_date], as dicts of MONTH_FIELDS,
        read in keyset pages along the punch_derived_day index. `details` is read only where it holds a
        work code (older terminals kept it there)."""
        sql = f"""SELECT {self._month_select()}
                  FROM punch_derived d JOIN punches p
                    ON p.device_id = d.device_id AND p.log_id = d.log_id AND p.seq = d.seq
                  WHERE (d.local_date, d.device_id, d.log_id, d.seq) > (?, ?, ?, ?) AND d.local_date <= ?
                  ORDER BY d.local_date, d.device_id, d.log_id, d.seq LIMIT ?"""
        # the row value alone bounds the page from below, so each page is a seek in the index, not a scan
        # from the month's first row (with `local_date >= ?` beside it SQLite seeks on the date only)
        key: tuple = (first_date, "", "", -1)
        while True:
            rows = self.query_rows(sql, ("%work_code%", *key, last_date, batch))
            yield from (dict(zip(MONTH_FIELDS, r, strict=True)) for r in rows)
            if len(rows) < batch:
                return
            last = rows[-1]
            key = (last[MONTH_FIELDS.index("local_date")], last[0], last[1], last[2])

    def month_punches_of(self, employees: list[str], first_date: str, last_date: str) -> list[dict]:
        """The punches of these employees whose office-local date lies in [first_date, last_date], as
        month_punches rows: one page of the recap (200 employees) reads ~11,000 rows along the
        punches_employee index instead of the month's 600,000."""
        out: list[dict] = []
        for start in range(0, len(employees), EMPLOYEE_BATCH):
            chunk = employees[start:start + EMPLOYEE_BATCH]
            rows = self.query_rows(
                f"""SELECT {self._month_select()} FROM punches p JOIN punch_derived d
                      ON d.device_id = p.device_id AND d.log_id = p.log_id AND d.seq = p.seq
                    WHERE p.employee IN ({", ".join("?" * len(chunk))}) AND d.local_date >= ?
                      AND d.local_date <= ?""", ("%work_code%", *chunk, first_date, last_date))
            out += (dict(zip(MONTH_FIELDS, r, strict=True)) for r in rows)
        return out

    def punching_employees(self) -> list[str]:
        """Every employee id that has any stored punch (a scan of the punches_employee index: ~0.1 s for
        600,000 punches, where the distinct punchers of one month cost a join of the month)."""
        return [r[0] for r in self.query_rows("SELECT DISTINCT employee FROM punches") if r[0] is not None]

    def punched_between(self, employee: str, first_date: str, last_date: str) -> bool:
        """Whether an employee has a punch with an office-local date in [first_date, last_date]."""
        return bool(self.query_rows(
            """SELECT 1 FROM punches p JOIN punch_derived d
                 ON d.device_id = p.device_id AND d.log_id = p.log_id AND d.seq = p.seq
               WHERE p.employee = ? AND d.local_date >= ? AND d.local_date <= ? LIMIT 1""",
            (employee, first_date, last_date)))

    def punches_without_derived(self) -> int:
        """How many stored punches have no derived values (sent by terminals older than derived kinds).
        Derived rows exist only beside stored punches (ingest.py), so a difference of counts says it."""
        return (self.query_rows("SELECT count(*) FROM punches")[0][0]
                - self.query_rows("SELECT count(*) FROM punch_derived")[0][0])

    def legacy_month_punches(self, first_date: str, last_date: str) -> tuple[list[dict], int]:
        """The punches without derived values whose hashed details place them in the month (how terminals
        recorded kind and lateness before derived values), as month_punches rows (`basis` is then the time
        basis of the punch, `time_verified` None); and how many of those
        punches carry no local date at all (they cannot be placed in any month)."""
        rows, undated = [], 0
        for p in self.query(
                """SELECT p.device_id, p.log_id, p.seq, p.employee, p.method, p.kind, p.details, p.flags,
                          p.problems, p.basis FROM punches p WHERE NOT EXISTS (SELECT 1 FROM punch_derived d
                          WHERE d.device_id = p.device_id AND d.log_id = p.log_id AND d.seq = p.seq)"""):
            details = _details(p.pop("details"))
            day = details.get("local_date")
            if not isinstance(day, str):
                undated += 1
                continue
            if first_date <= day <= last_date:
                rows.append({**p, "work_code": details.get("work_code"), "details": None,
                             "kind": p["kind"] or details.get("kind"), "local_date": day,
                             "minutes_late": details.get("minutes_late") or 0,
                             "minutes_early": details.get("minutes_early") or 0,
                             "local_time": details.get("local_time") or "", "time_verified": None})
        return rows, undated


def _details(text) -> dict:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
