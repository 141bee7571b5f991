"""The syntax of punch windows, holidays and special days, as written in [schedule] and in the roster's
published schedule: 'OPEN-DUE-CLOSE' (or 'OPEN-CLOSE' without lateness) with HH:MM times, 'YYYY-MM-DD'
holidays, special days with their own windows. Parsing only, into plain values; what they mean for a punch
(kind, lateness) is terminal/punch/rules.py. Every parser raises ValueError whose message is the fix; the
[schedule] section (terminal/config/sections.py) turns it into a line naming the file and the key.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

# Order = preference when windows overlap (the assembly comes before the ordinary check-in).
KINDS = ("apel", "masuk", "istirahat", "pulang")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^\s*(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})\s*(?:-\s*(\d{1,2}:\d{2})\s*)?$")


@dataclass(frozen=True)
class Window:
    kind: str
    opens: dt.time
    closes: dt.time
    due: dt.time | None = None


def parse_window(kind: str, text: str) -> Window | None:
    """'06:00-07:30-10:00' → Window; '' → None (the kind is not punched that day). Raises ValueError."""
    if kind not in KINDS:
        raise ValueError(f"unknown punch kind {kind!r}; use one of {', '.join(KINDS)}")
    if not isinstance(text, str):
        raise ValueError(f"{kind} must be a string like '06:00-07:30-10:00', got {text!r}")
    if not text.strip():
        return None
    m = _WINDOW.match(text)
    if not m:
        raise ValueError(f"{kind} = {text!r} is not 'OPEN-DUE-CLOSE' or 'OPEN-CLOSE' with HH:MM times")
    times = [_parse_time(kind, t) for t in m.groups() if t]
    if times != sorted(times):
        raise ValueError(f"{kind} = {text!r}: the times must not go backwards (windows lie within one day)")
    if len(times) == 3:
        return Window(kind, times[0], times[2], times[1])
    return Window(kind, times[0], times[1], None)


def _parse_time(kind: str, text: str) -> dt.time:
    h, m = (int(x) for x in text.split(":"))
    if h > 23 or m > 59:
        raise ValueError(f"{kind}: {text!r} is not a time of day")
    return dt.time(h, m)


def parse_windows(table: dict) -> dict[str, Window | None]:
    if not isinstance(table, dict):
        raise ValueError(f"must be a table like {{ masuk = '06:00-07:30-10:00' }}, got {table!r}")
    return {kind: parse_window(kind, text) for kind, text in table.items()}


def _parse_date(text) -> dt.date:
    if isinstance(text, dt.date) and not isinstance(text, dt.datetime):
        return text  # TOML local dates arrive as datetime.date
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def parse_holidays(items) -> dict[dt.date, str]:
    """['2026-01-01', {date='2026-03-20', to='2026-03-21', name='Idul Fitri'}] → {date: name}."""
    out: dict[dt.date, str] = {}
    for item in items or []:
        if isinstance(item, dict):
            start = _parse_date(item.get("date") or item.get("from"))
            end = _parse_date(item.get("to") or start)
            name = str(item.get("name") or "Hari libur")
        else:
            start = end = _parse_date(item)
            name = "Hari libur"
        if (end - start).days > 366 or end < start:
            raise ValueError(f"holiday {item!r}: 'to' must be on or after the date, within a year")
        for i in range((end - start).days + 1):
            out[start + dt.timedelta(days=i)] = name
    return out


@dataclass(frozen=True)
class Special:
    start: dt.date
    end: dt.date
    name: str
    workday: bool
    windows: dict


def parse_special(items) -> list[Special]:
    out = []
    for item in items or []:
        if not isinstance(item, dict):
            raise ValueError(f"a special day must be a table with from, to, name, got {item!r}")
        start = _parse_date(item.get("from") or item.get("date"))
        end = _parse_date(item.get("to") or start)
        if end < start:
            raise ValueError(f"special day {item.get('name', '')!r}: 'to' is before 'from'")
        windows = parse_windows({k: v for k, v in item.items() if k in KINDS})
        unknown = set(item) - set(KINDS) - {"from", "to", "date", "name", "workday"}
        if unknown:
            raise ValueError(f"special day: unknown key(s) {', '.join(sorted(unknown))}")
        out.append(Special(start, end, str(item.get("name", "")), bool(item.get("workday", True)), windows))
    return out


def parse_workdays(items) -> frozenset[int]:
    days = set()
    for d in items:
        if d not in WEEKDAYS:
            raise ValueError(f"workday {d!r} is not one of {', '.join(WEEKDAYS)}")
        days.add(WEEKDAYS.index(d))
    return frozenset(days)
