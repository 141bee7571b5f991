"""One punch, whatever the method: decide its kind, append it durably, then (only then) give feedback.

Face, fingerprint and operator PIN all end here. The order is the design's promise: the employee hears
the beep and reads "Berhasil" only after the record is committed. Any storage failure of a punch (a full
disk, an I/O error, a writer that holds the log too long), while deciding or while appending, takes one
refusal path: nothing is acknowledged, the screen says so in Bahasa Indonesia ("penyimpanan penuh" for a
full disk) and `error` says it in English for the CLI ("the disk is full; the punch was NOT recorded").
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from terminal.config import Config
from terminal.errors import LogError, StorageFull
from terminal.log import punchlog
from terminal.log.punchlog import PunchLog
from terminal.log.writelock import WriterLockTimeout
from terminal.punch import history, rules
from terminal.timing import clock, timeline

log = logging.getLogger("presensi.punch")

FAILED_MESSAGE = "Gagal simpan — silakan ulangi atau hubungi operator"
DISK_FULL_MESSAGE = "Penyimpanan penuh — presensi TIDAK tercatat. Hubungi operator"
# what a storage failure of a punch may raise, besides the LogErrors the log itself raises
STORAGE_ERRORS = (LogError, sqlite3.Error, OSError, WriterLockTimeout)


@dataclass
class PunchOutcome:
    """What happened to one identified punch; the screen, the LEDs and the CLI show this."""

    employee: str
    name: str
    method: str
    recorded: bool  # a new record was committed
    acknowledged: bool  # the punch is in the log (new, or an earlier one within the repeat interval)
    message: str  # Bahasa Indonesia, for the screen
    kind: str = ""
    record: dict | None = None  # the committed record (or the earlier one for a repeat)
    decision: dict = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


Feedback = Callable[[PunchOutcome], None]


class PunchService:
    """Shared by the daemon's camera, fingerprint and PIN paths and by `presensi punch`."""

    def __init__(self, cfg: Config, punch_log: PunchLog, *, names: Callable[[str], str] | None = None,
                 feedback: list[Feedback] | None = None):
        self.cfg = cfg
        self.log = punch_log
        self.schedule = self.load_schedule()
        self.names = names or (lambda employee: employee)
        self.feedback: list[Feedback] = list(feedback or [])
        # Face, fingerprint and web threads punch through one service: deciding (the repeat check reads the
        # log) and appending must happen as one step, or two quick reads of one finger could both record.
        self._lock = threading.Lock()

    def load_schedule(self) -> rules.Schedule:
        """The config's windows, with the installed roster's schedule and holidays taking precedence."""
        from terminal.punch import roster

        try:
            with roster.Roster.open(self.cfg.state_dir) as r:
                return rules.Schedule.from_config(self.cfg, roster=r)
        except roster.RosterError as e:
            log.error("roster unreadable (%s); punch kinds follow [schedule] in the configuration", e)
            return rules.Schedule.from_config(self.cfg)

    def reload_schedule(self) -> None:
        """After a roster swap: new holidays and windows apply from the next punch on."""
        new = self.load_schedule()
        with self._lock:
            self.schedule = new

    def punch(self, employee: str, method: str, *, details: dict | None = None,
              photo_jpeg: bytes | None = None, reading: clock.ClockReading | None = None) -> PunchOutcome:
        reading = reading or clock.read()
        name = self.names(employee) or employee
        with self._lock:
            try:
                outcome = self._punch_locked(employee, name, method, details, photo_jpeg, reading)
            except STORAGE_ERRORS as e:  # deciding reads the log too: a full disk or a busy lock is a refusal
                outcome = self._refused(employee, name, method, e)
        self._notify(outcome)
        return outcome

    def _punch_locked(self, employee, name, method, details, photo_jpeg, reading) -> PunchOutcome:
        decision = self._decide(employee, name, reading)
        if not decision.record:
            earlier = self.log.get(decision.repeat_of["seq"]) if decision.repeat_of else None
            return PunchOutcome(employee, name, method, recorded=False, acknowledged=True,
                                message=decision.message, kind=decision.kind, record=earlier,
                                decision=decision.as_dict())
        return self._append(employee, name, method, decision, details, photo_jpeg, reading)

    def _refused(self, employee: str, name: str, method: str, e: Exception, decision=None) -> PunchOutcome:
        """The clear refusal: English for the CLI and the log (error), Bahasa Indonesia for the screen."""
        error = punchlog.classify_error(e, self.log.path)
        log.error("punch not recorded (method %s): %s", method, error)
        message = DISK_FULL_MESSAGE if isinstance(error, StorageFull) else FAILED_MESSAGE
        return PunchOutcome(employee, name, method, recorded=False, acknowledged=False, message=message,
                            kind=decision.kind if decision else "",
                            decision=decision.as_dict() if decision else {}, error=str(error))

    def _decide(self, employee: str, name: str, reading: clock.ClockReading) -> rules.Decision:
        estimate = timeline.now(self.log.conn, reading=reading)
        ns = estimate.get("utc_ns") if "utc_ns" in estimate else None
        utc = _parse_iso(estimate.get("utc")) if ns is None else dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
        utc = utc or dt.datetime.fromtimestamp(reading.realtime_ns / 1e9, dt.UTC)
        return history.decide_for_log(self.schedule, self.log.conn, employee, name, utc, reading)

    def _append(self, employee, name, method, decision, details, photo_jpeg, reading) -> PunchOutcome:
        stored = {**decision.details, **(details or {})}
        stored.setdefault("minutes_late", decision.minutes_late)
        stored.setdefault("minutes_early", decision.minutes_early)
        try:
            record = self.log.append(employee, method, kind=decision.kind, details=stored, photo_jpeg=photo_jpeg,
                                     latitude=self.cfg.device.latitude, longitude=self.cfg.device.longitude,
                                     reading=reading)
        except STORAGE_ERRORS as e:
            return self._refused(employee, name, method, e, decision)
        return PunchOutcome(employee, name, method, recorded=True, acknowledged=True, message=decision.message,
                            kind=decision.kind, record=record, decision=decision.as_dict())

    def _notify(self, outcome: PunchOutcome) -> None:
        for fn in self.feedback:
            try:
                fn(outcome)
            except Exception:  # a broken LED must not undo or hide a committed punch
                log.exception("feedback %r failed", fn)


def _parse_iso(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
