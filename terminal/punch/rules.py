"""Punch kinds and lateness: which punch (apel pagi, masuk, istirahat, pulang) a moment is, how late or
early it is, and whether it merely repeats a punch just recorded.

Everything is computed from the corrected time (an aware datetime the caller passes, normally from
terminal.timing.timeline) converted to the office's timezone (WIB, WITA or WIT), never from the Pi's wall clock.
The windows come from the roster's schedule when the central server publishes one (contract C4), else from
the `[schedule]` section of the configuration. Results are plain data; the daemon records the punch, the
kiosk shows `message`, and the ZK/ADMS servers use `zk_state`.

A window is written 'OPEN-DUE-CLOSE' (or 'OPEN-CLOSE' without lateness): a masuk or apel after DUE is late,
a pulang before DUE leaves early. Windows lie within one calendar day (no night shifts).

A cancelled apel pagi (by the central server in the roster, or on the admin page) takes the apel window out
of that day: a punch in its time is chosen among the day's other windows like any other punch (normally a
masuk, late only after masuk's DUE), so nobody is late for an apel that did not take place.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field

from terminal.config.windows import (
    KINDS,
    WEEKDAYS,
    Window,
    parse_holidays,
    parse_special,
    parse_windows,
    parse_workdays,
)

log = logging.getLogger(__name__)

LABELS = {"apel": "Apel Pagi", "masuk": "Masuk", "istirahat": "Istirahat", "pulang": "Pulang",
          "lembur_masuk": "Lembur", "lembur_pulang": "Lembur", "hadir": "Hadir"}
# ZKTeco ATTLOG punch states: 0 check-in, 1 check-out, 2 break-out, 3 break-in, 4 OT-in, 5 OT-out.
# Same as the default [zk] state_map; "hadir" (schedule off) has no state, 255 = servers infer in/out.
ZK_STATES = {"apel": 0, "masuk": 0, "istirahat": 2, "pulang": 1, "lembur_masuk": 4, "lembur_pulang": 5,
             "hadir": 255}
_FIXED_OFFSETS = {"Asia/Jakarta": 7, "Asia/Makassar": 8, "Asia/Jayapura": 9}


@dataclass(frozen=True)
class DayPlan:
    date: dt.date
    workday: bool
    windows: tuple[Window, ...]
    name: str = ""  # holiday or special day name
    apel_cancelled: bool = False  # the day's apel pagi was cancelled (its window is left out)


@dataclass(frozen=True)
class Decision:
    """What the terminal does with one identified punch."""

    kind: str
    label: str
    record: bool  # False: a repeat, acknowledged but not recorded again
    zk_state: int
    minutes_late: int
    minutes_early: int
    message: str  # Bahasa Indonesia, for the screen
    local_time: str  # "07.02" in the office's timezone
    date: str  # office-local date, YYYY-MM-DD
    workday: bool
    day_name: str = ""
    repeat_of: dict | None = None  # the earlier punch: {"kind", "local_time", "seq"}
    details: dict = field(default_factory=dict)  # to store with the punch record

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RecentPunch:
    kind: str
    utc: dt.datetime
    seq: int | None = None


# -- the schedule ----------------------------------------------------------------------------------------


def office_tz(name: str) -> dt.tzinfo:
    """The office's timezone; a fixed offset if the system lacks tz data (Indonesia has no DST)."""
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, or no tzdata on a minimal image
        return dt.timezone(dt.timedelta(hours=_FIXED_OFFSETS[name]), name)


class Schedule:
    def __init__(self, timezone: str, *, default: dict, weekdays: dict[str, dict] | None = None,
                 workdays=WEEKDAYS[:5], holidays=(), special=(), repeat_minutes: float = 30.0,
                 enabled: bool = True, apel_cancelled=()):
        self.tz = office_tz(timezone)
        self.timezone = timezone
        self.enabled = enabled
        self.repeat = dt.timedelta(minutes=repeat_minutes)
        self.default = parse_windows(default)
        self.weekdays = {d: parse_windows((weekdays or {}).get(d, {})) for d in WEEKDAYS}
        self.workdays = parse_workdays(workdays)
        self.holidays = parse_holidays(holidays)
        self.special = parse_special(special)
        self.apel_cancelled = {dt.date.fromisoformat(str(d)) for d in apel_cancelled}
        self.source = "config"  # or "roster" when the central server's schedule is in use
        self.problem: str | None = None

    @classmethod
    def from_config(cls, cfg, roster=None, apel_cancelled=()) -> Schedule:
        """From cfg.schedule, with the roster's schedule and holidays (C4) taking precedence when present.
        `apel_cancelled`: dates cancelled on this terminal, besides those the roster carries."""
        s = cfg.schedule
        source = {"default": s.default, "workdays": s.workdays, "special": s.special,
                  **{d: getattr(s, d) for d in WEEKDAYS}}

        def build(src: dict, holidays: list, cancelled=tuple(apel_cancelled)) -> Schedule:
            return cls(cfg.device.timezone, default=src["default"], weekdays={d: src[d] for d in WEEKDAYS},
                       workdays=src["workdays"], holidays=holidays, special=src["special"],
                       repeat_minutes=s.repeat_minutes, enabled=s.enabled, apel_cancelled=cancelled)

        if roster is None:
            return build(source, list(s.holidays))
        try:
            published = _call(roster, "schedule") or {}
            merged = {**source, **{k: v for k, v in published.items() if k in source}}
            cancelled = [*apel_cancelled, *(c["date"] for c in _call(roster, "apel_cancelled") or [])]
            sched = build(merged, list(s.holidays) + list(_call(roster, "holidays") or []), cancelled)
            sched.source = "roster" if published else "config"
            return sched
        except (ValueError, TypeError, AttributeError) as e:
            # A bad published schedule must not stop punches: keep the configured one and say why.
            log.error("the roster's schedule or holidays are invalid (%s); using [schedule] from the configuration", e)
            sched = build(source, list(s.holidays))
            sched.problem = f"roster schedule rejected: {e}"
            return sched

    def day_plan(self, date: dt.date) -> DayPlan:
        windows = {**self.default, **self.weekdays[WEEKDAYS[date.weekday()]]}
        workday, name = date.weekday() in self.workdays, ""
        for sp in self.special:
            if sp.start <= date <= sp.end:
                windows.update(sp.windows)
                workday, name = sp.workday, sp.name
        if date in self.holidays:
            workday, name = False, self.holidays[date]
        cancelled = date in self.apel_cancelled and windows.get("apel") is not None
        if cancelled:
            windows.pop("apel")
        ordered = tuple(windows[k] for k in KINDS if windows.get(k) is not None)
        return DayPlan(date, workday, ordered if workday else (), name, cancelled and workday)

    def local(self, utc: dt.datetime) -> dt.datetime:
        if utc.tzinfo is None or utc.utcoffset() is None:
            raise ValueError("the corrected time must be an aware datetime (UTC), not a naive one")
        return utc.astimezone(self.tz)

    def local_midnight(self, utc: dt.datetime) -> dt.datetime:
        """The start of the office-local day containing `utc`, as an aware datetime."""
        return self.local(utc).replace(hour=0, minute=0, second=0, microsecond=0)

    def decide(self, name: str, utc: dt.datetime, recent: list[RecentPunch] = ()) -> Decision:
        """The kind, lateness and screen message of a punch by `name` at corrected time `utc`.

        `recent` = the employee's recent recorded punches (see recent_punches), newest first or not.
        """
        now = self.local(utc)
        recent = sorted(recent, key=lambda p: p.utc, reverse=True)
        last = recent[0] if recent else None
        if last is not None and dt.timedelta(0) <= utc - last.utc < self.repeat:
            return self._repeat(now, last)
        return self.classify(name, utc, recent)

    def classify(self, name: str, utc: dt.datetime, recent: list[RecentPunch] = ()) -> Decision:
        """The kind and lateness of a punch already recorded (no repeat check): what decide() gives a new
        punch, and what re-anchoring recomputes when the corrected time of a recorded punch changes."""
        now = self.local(utc)
        plan = self.day_plan(now.date())
        today = [p for p in recent if self.local(p.utc).date() == now.date()]
        if not self.enabled:
            return self._result(name, now, plan, "hadir", 0, 0)
        if not plan.workday:  # a day off: overtime, first punch in, later ones out
            return self._result(name, now, plan, "lembur_pulang" if today else "lembur_masuk", 0, 0)
        if not plan.windows:
            return self._result(name, now, plan, "hadir", 0, 0)
        window = _choose_window(plan.windows, now, {p.kind for p in today})
        late, early = _lateness(window, now)
        return self._result(name, now, plan, window.kind, late, early)

    def _repeat(self, now: dt.datetime, last: RecentPunch) -> Decision:
        earlier = self.local(last.utc)
        hhmm = _hhmm(earlier)
        label = LABELS.get(last.kind, last.kind or "Hadir")
        plan = self.day_plan(now.date())
        return Decision(
            kind=last.kind, label=label, record=False, zk_state=ZK_STATES.get(last.kind, 255), minutes_late=0,
            minutes_early=0, message=f"Sudah tercatat {label.lower()} pukul {hhmm}", local_time=_hhmm(now),
            date=now.date().isoformat(), workday=plan.workday, day_name=plan.name,
            repeat_of={"kind": last.kind, "local_time": hhmm, "seq": last.seq})

    def _result(self, name, now, plan: DayPlan, kind, late, early) -> Decision:
        label = LABELS[kind]
        message = f"Berhasil — {name}, {label} {_hhmm(now)}" if name else f"Berhasil — {label} {_hhmm(now)}"
        if late:
            message += f", terlambat {late} menit"
        if early:
            message += f", pulang cepat {early} menit"
        if not plan.workday:
            message += f" ({plan.name or 'hari libur'})"
        zk = ZK_STATES[kind]
        details = {"kind": kind, "minutes_late": late, "minutes_early": early, "zk_state": zk,
                   "local_date": now.date().isoformat(), "local_time": now.strftime("%H:%M:%S"),
                   "timezone": self.timezone, "workday": plan.workday}
        if plan.name:
            details["day_name"] = plan.name
        return Decision(kind=kind, label=label, record=True, zk_state=zk, minutes_late=late,
                        minutes_early=early, message=message, local_time=_hhmm(now),
                        date=now.date().isoformat(), workday=plan.workday, day_name=plan.name,
                        details=details)


def check_published(schedule: dict, holidays: list) -> None:
    """Raise ValueError unless this terminal can use a schedule and holidays the central server published
    (the roster bundle's `schedule_check`: a bundle with an unusable schedule is refused whole)."""
    Schedule("Asia/Jakarta", default=schedule.get("default", {}),
             weekdays={d: schedule.get(d, {}) for d in WEEKDAYS},
             workdays=schedule.get("workdays", WEEKDAYS[:5]), holidays=holidays,
             special=schedule.get("special", []))


def _call(obj, method: str):
    fn = getattr(obj, method, None)
    return fn() if callable(fn) else None


def _hhmm(t: dt.datetime) -> str:
    return t.strftime("%H.%M")


def _minutes(t: dt.time) -> float:
    return t.hour * 60 + t.minute


def _choose_window(windows: tuple[Window, ...], now: dt.datetime, punched: set[str]) -> Window:
    """A window containing `now` whose kind was not punched today; else the nearest such window; a kind
    already punched today only when nothing else is near (a second pulang, a late masuk after a missed one)."""
    m = now.hour * 60 + now.minute + now.second / 60

    def distance(w: Window) -> float:
        return max(0.0, _minutes(w.opens) - m, m - (_minutes(w.closes) + 1))  # CLOSE's minute included

    order = {w.kind: i for i, w in enumerate(windows)}
    return min(windows, key=lambda w: (w.kind in punched and distance(w) > 0, distance(w) > 0,
                                       w.kind in punched, distance(w), order[w.kind]))


def _lateness(window: Window, now: dt.datetime) -> tuple[int, int]:
    """Whole minutes late (apel, masuk) or early (pulang); a started minute does not count."""
    if window.due is None:
        return 0, 0
    due = now.replace(hour=window.due.hour, minute=window.due.minute, second=0, microsecond=0)
    seconds = (now - due).total_seconds()
    if window.kind in ("apel", "masuk") and seconds > 0:
        return int(seconds // 60), 0
    if window.kind == "pulang" and seconds < 0:
        return 0, int(-seconds // 60)
    return 0, 0
