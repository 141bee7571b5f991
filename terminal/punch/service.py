"""One punch, whatever the method: decide its kind, append it durably, then (only then) give feedback.

Face, fingerprint and operator PIN all end here. The order is the design's promise: the employee hears
the beep and reads "Berhasil" only after the record is committed; a storage failure is reported on the
screen as "gagal simpan" and nothing is acknowledged.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from terminal.config import Config
from terminal.errors import LogError
from terminal.log.punchlog import PunchLog
from terminal.punch import derived, history, rules
from terminal.timing import clock, timeline

log = logging.getLogger("presensi.punch")

FAILED_MESSAGE = "Gagal simpan — silakan ulangi atau hubungi operator"


@dataclass
class PunchOutcome:
    """What happened to one identified punch; the screen, the LEDs and the CLI show this."""

    employee: str
    name: str
    method: str
    recorded: bool  # a new record was committed
    acknowledged: bool  # the punch is in the log (new, or an earlier one within the repeat interval)
    message: str  # Bahasa Indonesia, for the screen
    kind: str = ""  # the best estimate at the punch (derived; recomputed later when the time is re-anchored)
    time_verified: bool = False  # False: the punch's time rests on no trusted sample yet (the kiosk says so)
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
        return load_schedule(self.cfg)

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
            estimate, decision = self._decide(employee, name, reading)
            verified = bool(estimate.get("verified"))
            if not decision.record:
                earlier = self.log.get(decision.repeat_of["seq"]) if decision.repeat_of else None
                outcome = PunchOutcome(employee, name, method, recorded=False, acknowledged=True,
                                       message=decision.message, kind=decision.kind, time_verified=verified,
                                       record=earlier, decision=decision.as_dict())
            else:
                outcome = self._append(employee, name, method, decision, estimate, details, photo_jpeg, reading)
        self._notify(outcome)
        return outcome

    def _decide(self, employee: str, name: str, reading: clock.ClockReading) -> tuple[dict, rules.Decision]:
        estimate = timeline.now(self.log.conn, reading=reading)
        utc = _parse_iso(estimate.get("utc")) or dt.datetime.fromtimestamp(reading.realtime_ns / 1e9, dt.UTC)
        return estimate, history.decide_for_log(self.schedule, self.log.conn, employee, name, utc, reading)

    def _append(self, employee, name, method, decision, estimate, details, photo_jpeg, reading) -> PunchOutcome:
        # The hashed record keeps what the employee chose (the caller's details: operator, work code, …);
        # kind and lateness are derived from the time and go beside it (terminal/punch/derived.py), so that
        # a later, better time can correct them without touching the chain.
        values = derived.at_punch(decision, estimate, self.schedule.timezone)
        verified = values["time_verified"]
        try:
            record = self.log.append(employee, method, details=details or {}, photo_jpeg=photo_jpeg,
                                     latitude=self.cfg.device.latitude, longitude=self.cfg.device.longitude,
                                     reading=reading, derived=values)
        except LogError as e:
            log.error("punch not recorded (method %s): %s", method, e)
            return PunchOutcome(employee, name, method, recorded=False, acknowledged=False,
                                message=FAILED_MESSAGE, kind=decision.kind, time_verified=verified,
                                decision=decision.as_dict(), error=str(e))
        return PunchOutcome(employee, name, method, recorded=True, acknowledged=True, message=decision.message,
                            kind=decision.kind, time_verified=verified, record=record,
                            decision=decision.as_dict())

    def _notify(self, outcome: PunchOutcome) -> None:
        for fn in self.feedback:
            try:
                fn(outcome)
            except Exception:  # a broken LED must not undo or hide a committed punch
                log.exception("feedback %r failed", fn)


def load_schedule(cfg: Config) -> rules.Schedule:
    """The config's windows, with the installed roster's schedule and holidays taking precedence."""
    from terminal.punch import roster

    try:
        with roster.Roster.open(cfg.state_dir) as r:
            return rules.Schedule.from_config(cfg, roster=r)
    except roster.RosterError as e:
        log.error("roster unreadable (%s); punch kinds follow [schedule] in the configuration", e)
        return rules.Schedule.from_config(cfg)


def recomputer(cfg: Config) -> Callable:
    """derived.refresh with the schedule in force, read at each call (a new roster's holidays apply to the
    next recomputation): what the push client and `presensi time sync` call after a time sample."""
    def run(conn) -> int:
        return derived.refresh(conn, load_schedule(cfg))
    return run


def _parse_iso(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
