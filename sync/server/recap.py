"""The monthly attendance recap per employee that BKPSDM computes the allowance (TPP) from: days present,
minutes late, minutes of early leave, missing masuk and pulang, apel attended, work codes, each figure with
the punches behind it, so a page can link every number to the records that make it.

The rules (docs/recap.md says the same for BKPSDM):
- A punch's day, kind and lateness are what its terminal derived from its corrected time (punch_derived;
  terminal/punch/rules.py): the server recomputes nothing, and a re-anchored punch counts as it reads now.
- Working days: the days of the month that are workdays in the published calendar (the latest roster's
  `schedule.workdays`, Monday to Friday when none, its special days and its `holidays`), up to `until`
  (today by default: the rest of a running month is not yet absent). Leave (cuti), official duty and
  sickness are not known here: such a day without punches counts as absent.
- Present: a working day with at least one counted punch. Arrival: the day's earliest apel or masuk punch;
  its minutes late are the day's minutes late. Departure: the day's last pulang; its minutes early are the
  day's early leave. (A terminal that took a working day for a day off records lembur_masuk/lembur_pulang:
  they stand for arrival and departure, without lateness.) Missing masuk / pulang: a present day without an
  arrival / departure. Apel attended: a working day with an apel punch. Apel days: working days whose
  published windows (the roster schedule's `default`, weekday and special windows) hold an apel pagi and
  whose apel was not cancelled (`presensi server apel cancel`, the server's apel_cancellations); apel missed:
  a present apel day without an apel punch (a cancelled apel is never missed). A terminal with its schedule off
  records `hadir`: presence only, never a missing masuk or pulang. A punch on a day off (weekend, holiday)
  counts in `days_off_worked` only.
- Unverified time (the punch's time rests on no trusted sample, or its flags say `review`): counted with the
  terminal's best estimate, and listed as `unverified`, so BKPSDM can check those before cutting the TPP.
- Alarmed records (their hash or chain link failed on receipt: `problems`): never counted, listed as
  `excluded`; an edited record must not make or unmake anyone's attendance.
- An employee of the roster without any punch gets a row: every working day absent. Employees who punched
  but are not in the roster get a row too (name empty).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from sync.wire import rosterbundle
from terminal.config.windows import WEEKDAYS, parse_holidays, parse_special, parse_windows, parse_workdays

from . import notices

ARRIVAL = ("apel", "masuk", "lembur_masuk")
DEPARTURE = ("pulang", "lembur_pulang")
UNVERIFIED_FLAGS = ("review", "no-time-sample")
# time bases that rest on no trusted sample (as terminal/punch/derived.py judges them): for punches older than
# derived values, which carry no time_verified of their own
UNVERIFIED_BASES = ("order", "none", "wall-clock", "unanchored")


class RecapError(ValueError):
    """The recap cannot be made (bad month, unreadable roster); the message says what to do."""


# -- the calendar ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calendar:
    month: str  # YYYY-MM
    first: dt.date
    last: dt.date
    working_days: tuple[dt.date, ...]  # up to `until`
    days_off: dict[dt.date, str]  # holidays and special days off in the month, with their names
    source: str  # "roster N" or "default (Monday-Friday, no holidays published)"
    apel_days: tuple[dt.date, ...] = ()  # working days with an apel pagi that was held (not cancelled)
    apel_cancelled: dict[dt.date, str] = field(default_factory=dict)  # working days whose apel was cancelled


def month_bounds(month: str) -> tuple[dt.date, dt.date]:
    try:
        first = dt.datetime.strptime(month, "%Y-%m").date()
    except (TypeError, ValueError):
        raise RecapError(f"month {month!r} is not YYYY-MM (e.g. 2026-11)") from None
    following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return first, following - dt.timedelta(days=1)


def calendar(month: str, schedule: dict | None, holidays: list | None, until: dt.date,
             source: str = "default (Monday-Friday, no holidays published)",
             apel_cancelled: dict[str, str] | None = None) -> Calendar:
    """The working days of `month` under a published schedule and holidays (the roster's syntax), and which
    of them had an apel pagi (a window for it, not cancelled: `apel_cancelled` maps dates to reasons)."""
    first, last = month_bounds(month)
    schedule = schedule or {}
    try:
        workdays = parse_workdays(schedule.get("workdays", WEEKDAYS[:5]))
        off = parse_holidays(holidays or [])
        special = parse_special(schedule.get("special", []))
        default = parse_windows(schedule.get("default", {}))
        weekday = {d: parse_windows(schedule.get(d, {})) for d in WEEKDAYS}
    except (ValueError, TypeError, AttributeError) as e:
        raise RecapError(f"the published calendar ({source}) is not readable: {e}; publish a corrected "
                         "schedule with `presensi server publish-roster`") from None
    cancelled = {dt.date.fromisoformat(d): r for d, r in (apel_cancelled or {}).items()}
    working, days_off, apel_days, apel_off = [], {}, [], {}
    day = first
    while day <= last:
        workday, name = day.weekday() in workdays, ""
        windows = {**default, **weekday[WEEKDAYS[day.weekday()]]}
        for sp in special:
            if sp.start <= day <= sp.end:
                workday, name = sp.workday, sp.name
                windows.update(sp.windows)
        if day in off:
            workday, name = False, off[day]
        if workday and day <= until:
            working.append(day)
            if windows.get("apel") is not None:
                if day in cancelled:
                    apel_off[day] = cancelled[day]
                else:
                    apel_days.append(day)
        elif not workday and name:
            days_off[day] = name
        day += dt.timedelta(days=1)
    return Calendar(month, first, last, tuple(working), days_off, source, tuple(apel_days), apel_off)


# -- punches as the recap reads them -------------------------------------------------------------------------


class Punch(NamedTuple):  # a NamedTuple: a month is ~600,000 of them, built fast and immutable
    id: str  # "device/log_id/seq": what a page links to
    employee: str
    date: str
    time: str
    kind: str
    minutes_late: int
    minutes_early: int
    verified: bool
    work_code: str | None
    excluded: bool  # an alarmed record (hash or chain failed): listed, never counted


def punch_id(device_id: str, log_id: str, seq: int) -> str:
    return f"{device_id}/{log_id}/{seq}"


def parse_punch_id(text: str) -> tuple[str, str, int]:
    device_id, log_id, seq = text.rsplit("/", 2)
    return device_id, log_id, int(seq)


def punch_from_row(row: dict) -> Punch:
    """A row of Store.month_punches (or legacy_month_punches) as the recap counts it."""
    flags = _json_list(row.get("flags"))
    verified = row.get("time_verified")
    if verified is None:
        verified = row.get("basis") is not None and row["basis"] not in UNVERIFIED_BASES
    return Punch(
        id=punch_id(row["device_id"], row["log_id"], row["seq"]), employee=row["employee"] or "",
        date=row["local_date"], time=row["local_time"] or "", kind=row["kind"] or "",
        minutes_late=int(row["minutes_late"] or 0), minutes_early=int(row["minutes_early"] or 0),
        verified=verified and not any(f in flags for f in UNVERIFIED_FLAGS),
        work_code=_work_code(row), excluded=bool(_json_list(row.get("problems"))))


def _work_code(row: dict) -> str | None:
    code = row.get("work_code")
    if code in (None, "") and row.get("details"):
        try:
            code = json.loads(row["details"]).get("work_code")
        except (ValueError, AttributeError):
            code = None
    return None if code in (None, "") else str(code)


def _json_list(text) -> list:
    if not text or text == "[]":  # nearly every punch: no JSON to parse
        return []
    try:
        value = json.loads(text or "[]")
    except (TypeError, ValueError):
        return ["unreadable"]
    return value if isinstance(value, list) else ["unreadable"]


# -- the recap ---------------------------------------------------------------------------------------------


@dataclass
class Day:
    """One day of one employee: what the recap made of the day's punches."""

    date: str
    working: bool
    punches: list[str] = field(default_factory=list)  # counted, in the day's order
    arrival: str | None = None
    arrival_time: str = ""
    departure: str | None = None
    departure_time: str = ""
    minutes_late: int = 0
    minutes_early: int = 0
    apel: str | None = None
    apel_day: bool = False  # an apel pagi was held that day (a window for it, not cancelled)
    apel_missed: bool = False
    missing_masuk: bool = False
    missing_pulang: bool = False


FIGURES = ("working_days", "days_present", "days_absent", "minutes_late", "minutes_early", "missing_masuk",
           "missing_pulang", "apel_attended", "apel_missed", "days_off_worked", "unverified", "excluded")


@dataclass
class EmployeeRecap:
    employee: str
    name: str
    working_days: int = 0
    days_present: int = 0
    days_absent: int = 0
    minutes_late: int = 0
    minutes_early: int = 0
    missing_masuk: int = 0
    missing_pulang: int = 0
    apel_attended: int = 0
    apel_missed: int = 0
    days_off_worked: int = 0
    unverified: int = 0
    excluded: int = 0
    work_codes: dict[str, int] = field(default_factory=dict)
    punches: dict[str, list[str]] = field(default_factory=dict)  # figure -> the punch ids behind it
    dates: dict[str, list[str]] = field(default_factory=dict)  # figure -> the dates it counts
    days: list[Day] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Recap:
    month: str
    calendar: Calendar
    employees: list[EmployeeRecap]
    until: str
    undated: int = 0  # punches without any local date: in no month's recap
    notes: list[str] = field(default_factory=list)  # what BKPSDM should know about this recap

    def as_dict(self) -> dict:
        cal = self.calendar
        return {"month": self.month, "until": self.until, "calendar": {
            "source": cal.source, "working_days": [d.isoformat() for d in cal.working_days],
            "apel_days": [d.isoformat() for d in cal.apel_days],
            "apel_cancelled": {d.isoformat(): r for d, r in cal.apel_cancelled.items()},
            "days_off": {d.isoformat(): n for d, n in cal.days_off.items()}},
            "undated": self.undated, "notes": self.notes, "employees": [e.as_dict() for e in self.employees]}


def compute(cal: Calendar, punches: Iterable[Punch], roster: dict[str, str]) -> list[EmployeeRecap]:
    """The recap rows, one per employee of the roster or of the punches, ordered by employee id."""
    by_day: dict[str, dict[str, list[Punch]]] = {e: {} for e in roster}
    for p in punches:
        by_day.setdefault(p.employee, {}).setdefault(p.date, []).append(p)
    working = {d.isoformat() for d in cal.working_days}
    apel_days = {d.isoformat() for d in cal.apel_days}
    return [_employee(e, roster.get(e, ""), by_day[e], working, apel_days) for e in sorted(by_day)]


def _employee(employee: str, name: str, days: dict[str, list[Punch]], working: set[str],
              apel_days: set[str]) -> EmployeeRecap:
    row = EmployeeRecap(employee, name, working_days=len(working))
    for date in sorted(set(days) | working):
        day = _day(date, date in working, sorted(days.get(date, []), key=lambda p: (p.time, p.id)), row,
                   date in apel_days)
        if day.punches or day.working:
            row.days.append(day)
        _count(row, day)
    row.days_absent = row.working_days - row.days_present
    return row


def _day(date: str, working: bool, punches: list[Punch], row: EmployeeRecap, apel_day: bool = False) -> Day:
    day = Day(date, working, apel_day=apel_day)
    for p in punches:
        if p.excluded:
            _note(row, "excluded", p.id)
            continue
        day.punches.append(p.id)
        if not p.verified:
            _note(row, "unverified", p.id)
        if p.work_code is not None:
            row.work_codes[p.work_code] = row.work_codes.get(p.work_code, 0) + 1
            _note(row, f"work_code:{p.work_code}", p.id)
    counted = [p for p in punches if not p.excluded]
    if not working or not counted:
        return day
    arrivals = [p for p in counted if p.kind in ARRIVAL]
    departures = [p for p in counted if p.kind in DEPARTURE]
    apel = [p for p in counted if p.kind == "apel"]
    if arrivals:
        day.arrival, day.arrival_time, day.minutes_late = arrivals[0].id, arrivals[0].time, arrivals[0].minutes_late
    if departures:
        last = departures[-1]
        day.departure, day.departure_time, day.minutes_early = last.id, last.time, last.minutes_early
    day.apel = apel[0].id if apel else None
    day.apel_missed = day.apel_day and day.apel is None
    scheduled = not any(p.kind == "hadir" for p in counted)
    day.missing_masuk = scheduled and not arrivals
    day.missing_pulang = scheduled and not departures
    return day


def _count(row: EmployeeRecap, day: Day) -> None:
    if not day.punches:
        if day.working:
            row.dates.setdefault("days_absent", []).append(day.date)
        return
    if not day.working:
        row.days_off_worked += 1
        _mark(row, "days_off_worked", day.date, day.punches)
        return
    row.days_present += 1
    _mark(row, "days_present", day.date, day.punches)
    if day.minutes_late:
        row.minutes_late += day.minutes_late
        _mark(row, "minutes_late", day.date, [day.arrival])
    if day.minutes_early:
        row.minutes_early += day.minutes_early
        _mark(row, "minutes_early", day.date, [day.departure])
    for figure in ("missing_masuk", "missing_pulang", "apel_missed"):
        if getattr(day, figure):
            setattr(row, figure, getattr(row, figure) + 1)
            _mark(row, figure, day.date, day.punches)
    if day.apel:
        row.apel_attended += 1
        _mark(row, "apel_attended", day.date, [day.apel])


def _mark(row: EmployeeRecap, figure: str, date: str, ids: list[str]) -> None:
    row.dates.setdefault(figure, []).append(date)
    row.punches.setdefault(figure, []).extend(ids)


def _note(row: EmployeeRecap, figure: str, punch: str) -> None:
    row.punches.setdefault(figure, []).append(punch)
    if figure in ("unverified", "excluded"):
        setattr(row, figure, getattr(row, figure) + 1)


# -- from the store ------------------------------------------------------------------------------------------


# sha256 of (server key, bundle) -> what published_roster read from it: checking a regency's bundle (10,000
# employees) takes ~0.3 s, and every page of the recap asks; the same bytes under the same key check the same
_VERIFIED: dict[bytes, tuple[dict[str, str], dict, list]] = {}
_VERIFIED_KEPT = 4
_VERIFIED_LOCK = threading.Lock()  # the pages' requests run on several threads


def published_roster(store) -> tuple[dict[str, str], dict | None, list | None, str | None]:
    """(employee id -> name, schedule, holidays, source) of the latest published roster, or empty ones."""
    latest = store.latest_roster()
    if latest is None:
        return {}, None, None, None
    public_key = store.server_key().public_key()
    digest = hashlib.sha256(public_key.public_bytes_raw() + bytes(latest["bundle"])).digest()
    read = _VERIFIED.get(digest)
    if read is None:
        try:
            bundle = rosterbundle.verify_bundle(bytes(latest["bundle"]), public_key, 0)
        except rosterbundle.BundleRejected as e:
            raise RecapError(f"the published roster version {latest['version']} cannot be read ({e}); publish "
                             "it again with `presensi server publish-roster`") from None
        read = ({e["id"]: e.get("name", "") for e in bundle["employees"]}, bundle["schedule"], bundle["holidays"])
        with _VERIFIED_LOCK:
            while len(_VERIFIED) >= _VERIFIED_KEPT:
                _VERIFIED.pop(next(iter(_VERIFIED)))
            _VERIFIED[digest] = read
    names, schedule, holidays = read
    return dict(names), schedule, holidays, f"roster {latest['version']}"


def month_employees(store, month: str, roster: tuple | None = None) -> list[str]:
    """Whom the recap of `month` has a row for, in its order: the employees of the published roster and
    everyone else with a punch in the month (a page of the recap builds 200 of them: `build(employees=)`).
    `roster` is what published_roster(store) gave, for a caller that also builds (one read per request)."""
    first, last = month_bounds(month)
    names = (roster or published_roster(store))[0]
    others = [e for e in store.punching_employees() if e not in names]
    # employees outside the roster (moved away, or never published) count only in months they punched in
    punched = {e for e in others if store.punched_between(e, first.isoformat(), last.isoformat())}
    if store.punches_without_derived():
        legacy, _ = store.legacy_month_punches(first.isoformat(), last.isoformat())
        punched |= {r["employee"] or "" for r in legacy if (r["employee"] or "") not in names}
    return sorted({*names, *punched})


def build(store, month: str, *, until: dt.date | None = None, employees: list[str] | None = None,
          roster: tuple | None = None) -> Recap:
    """The recap of `month` (YYYY-MM) from everything the store holds; with `employees`, only their rows
    (each the same as in the whole recap: an employee's row depends on their own punches and the calendar).
    `roster` as for month_employees."""
    first, last = month_bounds(month)
    until = min(until or dt.date.today(), last)
    names, schedule, holidays, source = roster or published_roster(store)
    cancelled = {a["date"]: a["reason"] for a in notices.apel_cancellations(store)}
    cal = calendar(month, schedule, holidays, until, source or "default (Monday-Friday, no holidays published)",
                   cancelled)
    if employees is None:
        rows = store.month_punches(first.isoformat(), last.isoformat())
    else:
        rows = store.month_punches_of(list(employees), first.isoformat(), last.isoformat())
        names = {e: names.get(e, "") for e in employees}
    undated, notes = 0, []
    if store.punches_without_derived():
        legacy, undated = store.legacy_month_punches(first.isoformat(), last.isoformat())
        if employees is not None:
            legacy = [r for r in legacy if (r["employee"] or "") in names]
        rows = [*rows, *legacy]
    result = compute(cal, (punch_from_row(r) for r in rows), names)
    if source is None:
        notes.append("no roster is published: working days are Monday to Friday without holidays, and employees "
                     "without a punch are not listed (publish the roster with its holidays)")
    if undated:
        notes.append(f"{undated} stored punches carry no local date and are in no month's recap "
                     "(see `presensi server punches`)")
    if until < last:
        notes.append(f"the month is not over: working days are counted up to {until.isoformat()}")
    return Recap(month, cal, result, until.isoformat(), undated, notes)
