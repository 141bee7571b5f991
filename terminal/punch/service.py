"""One punch, whatever the method: decide its kind, append it durably, then (only then) give feedback.

Face, fingerprint and operator PIN all end here, from the daemon, the admin page and the commands alike
(`presensi punch`, `presensi scan --record`). The order is the design's promise: the employee hears the beep
and reads "Berhasil" only after the record is committed.

Who may punch is decided here too, so that no way in is weaker than another: once a roster is installed,
only its employees are recorded (every method), and a PIN punch only for those with pin_allowed. A
terminal without any roster yet (version 0: set up by `presensi enroll-photos` alone) accepts everyone,
as it always has. An operator may override a refusal with a stated reason; the override is written into
the punch's details (inside the hash chain) and into the audit table.

Any storage failure of a punch (a full disk, an I/O error, a writer that holds the log too long), while
deciding or while appending, takes one refusal path: nothing is acknowledged, the screen says so in Bahasa
Indonesia ("penyimpanan penuh" for a full disk) and `error` says it in English for the CLI ("the disk is
full; the punch was NOT recorded").
"""

from __future__ import annotations

import dataclasses
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
from terminal.punch import derived, history, rules, workcodes
from terminal.timing import clock, timeline

log = logging.getLogger("presensi.punch")

TIME_FAULT = "punch:time-unverified"
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
    kind: str = ""  # the best estimate at the punch (derived; recomputed later when the time is re-anchored)
    time_verified: bool = False  # False: the punch's time rests on no trusted sample yet (the kiosk says so)
    record: dict | None = None  # the committed record (or the earlier one for a repeat)
    decision: dict = field(default_factory=dict)
    error: str | None = None
    refused: bool = False  # who may punch said no (not in the roster, no PIN allowed); nothing recorded
    notices: list[str] = field(default_factory=list)  # messages for this employee (terminal/punch/notices.py)

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
        self._time_fault_open = True  # unknown at start: the first clean decision clears a stale fault
        self.work_codes = workcodes.Catalogue.load(cfg)
        # a code chosen before a face or finger punch (kiosk touch, fingerprint button) waits here for it
        self.chooser = workcodes.Chooser(cfg.work_codes.before_punch_seconds)
        # set by the daemon when the kiosk offers codes after a recognised face or finger (terminal/punch/workcodes.py)
        self.choices: workcodes.ChoiceWindow | None = None

    def load_schedule(self) -> rules.Schedule:
        return load_schedule(self.cfg)

    def reload_schedule(self) -> None:
        """After a roster swap: new holidays, windows and work codes apply from the next punch on."""
        new, codes = self.load_schedule(), workcodes.Catalogue.load(self.cfg)
        with self._lock:
            self.schedule, self.work_codes = new, codes
            if self.choices is not None:
                self.choices.catalogue = codes

    def punch(self, employee: str, method: str, *, details: dict | None = None,
              photo_jpeg: bytes | None = None, reading: clock.ClockReading | None = None,
              override_reason: str | None = None, operator: str | None = None,
              work_code: int | None = None) -> PunchOutcome:
        """Record one punch. `override_reason` (with `operator`, who gives it) lets an operator record a
        punch the roster would refuse; without it a refusal is final. `work_code` is the employee's reason
        (terminal/punch/workcodes.py): an unknown code, or one that does not apply to the punch's kind, refuses
        the punch with the reason. A face or finger punch without one takes the code chosen before it, or
        waits for the choice the kiosk offers ([work_codes] after_punch_seconds)."""
        reading = reading or clock.read()
        name = self.names(employee) or employee
        check = admission(self.cfg.state_dir, employee, method)
        name = name if name != employee else (check.name or employee)
        override = (override_reason or "").strip()
        if check.refusal and not override:
            outcome = PunchOutcome(employee, name, method, recorded=False, acknowledged=False,
                                   message=check.refusal, error=check.reason, refused=True)
            log.warning("punch refused (method %s): %s", method, check.reason)
            self._notify(outcome)
            return outcome
        if check.refusal:
            details = {**(details or {}), "override": {"reason": override[:500], "operator": operator or "",
                                                       "refused_because": check.reason}}
        if work_code is None and method in ("face", "finger"):
            work_code = self._chosen_code(employee, name, reading)
        with self._lock:
            try:
                outcome = self._punch_locked(employee, name, method, details, photo_jpeg, reading, work_code)
            except STORAGE_ERRORS as e:  # deciding reads the log too: a full disk or a busy lock is a refusal
                outcome = self._refused(employee, name, method, e)
        if check.refusal and outcome.recorded:
            self._audit_override(operator, employee, method, override, check, outcome)
        if outcome.acknowledged:
            outcome.notices = self._notices(employee, outcome)
        self._notify(outcome)
        return outcome

    def _chosen_code(self, employee: str, name: str, reading: clock.ClockReading) -> int | None:
        """The code armed before this punch, else the one chosen in the kiosk's window after recognition
        (None: no choice, no window, a repeat, or no code applies to the kind)."""
        armed = self.chooser.take()
        if armed is not None or self.choices is None or not self.work_codes.enabled:
            return armed
        with self._lock:
            try:
                _estimate, decision = self._decide(employee, name, reading)
            except STORAGE_ERRORS:
                return None  # the punch itself reports the storage failure
        codes = self.work_codes.for_kind(decision.kind)
        if not decision.record or not codes:
            return None
        return self.choices.wait(employee, name, decision.kind, codes)

    def _notices(self, employee: str, outcome: PunchOutcome) -> list[str]:
        """Messages for the employee and what the terminal noticed (a missing pulang yesterday); the punch
        stands without them if they cannot be read."""
        from terminal.punch import notices, roster

        d = outcome.decision
        try:
            local = dt.datetime.strptime(f"{d['date']} {d['local_time']}", "%Y-%m-%d %H.%M")
            with roster.Roster.open(self.cfg.state_dir) as r:
                return notices.for_punch(self.log.conn, r, self.schedule, employee, local,
                                         first_today=outcome.recorded)
        except Exception as e:  # a damaged roster or message table must not hide the punch's answer
            log.error("messages for the punch not read: %s", e)
            return []

    def _punch_locked(self, employee, name, method, details, photo_jpeg, reading, work_code=None) -> PunchOutcome:
        estimate, decision = self._decide(employee, name, reading)
        self._flag_time(decision)
        verified = bool(estimate.get("verified"))
        if work_code is not None:
            refusal = self.work_codes.check(work_code, decision.kind)
            if refusal is not None:
                log.warning("punch refused (method %s): %s", method, refusal.reason)
                return PunchOutcome(employee, name, method, recorded=False, acknowledged=False,
                                    message=refusal.message, kind=decision.kind, time_verified=verified,
                                    decision=decision.as_dict(), error=refusal.reason, refused=True)
            details = {**(details or {}), "work_code": work_code}
        if not decision.record:
            earlier = self.log.get(decision.repeat_of["seq"]) if decision.repeat_of else None
            return PunchOutcome(employee, name, method, recorded=False, acknowledged=True,
                                message=decision.message, kind=decision.kind, time_verified=verified,
                                record=earlier, decision=decision.as_dict())
        outcome = self._append(employee, name, method, decision, estimate, details, photo_jpeg, reading)
        if outcome.recorded and work_code is not None:  # the screen names the reason the employee gave
            outcome.message = f"{outcome.message} · {work_code} {self.work_codes.codes[work_code].label}"
        return outcome

    def _refused(self, employee: str, name: str, method: str, e: Exception, decision=None,
                 verified: bool = False) -> PunchOutcome:
        """The clear refusal: English for the CLI and the log (error), Bahasa Indonesia for the screen."""
        error = punchlog.classify_error(e, self.log.path)
        log.error("punch not recorded (method %s): %s", method, error)
        message = DISK_FULL_MESSAGE if isinstance(error, StorageFull) else FAILED_MESSAGE
        return PunchOutcome(employee, name, method, recorded=False, acknowledged=False, message=message,
                            kind=decision.kind if decision else "", time_verified=verified,
                            decision=decision.as_dict() if decision else {}, error=str(error))

    def _flag_time(self, decision: rules.Decision) -> None:
        """A decision made on raw wall clocks (the timeline failed) is recorded flagged, never silently:
        its details say time_unverified, and IT staff get a clock fault (cleared by the next clean one)."""
        from terminal.ops import faults

        problem = decision.details.get("time_unverified")
        try:
            if problem:
                log.error("punch decided on the raw clock: %s", problem)
                faults.raise_fault(self.log.conn, TIME_FAULT, part="clock", category="clock",
                                   message=f"punch kinds decided on the raw wall clock: {problem}")
            elif self._time_fault_open:
                faults.clear_fault(self.log.conn, TIME_FAULT, message="corrected times available again")
        except Exception as e:  # the punch itself goes on; the flag in its details remains
            log.error("clock fault not recorded: %s", e)
            return
        self._time_fault_open = bool(problem)

    def _audit_override(self, operator, employee, method, reason, check, outcome) -> None:
        try:
            self.log.audit(operator or "operator", "punch-override",
                           {"employee": employee, "method": method, "reason": reason[:500],
                            "refused_because": check.reason, "seq": outcome.record["seq"]})
        except LogError as e:  # the punch and its details already carry the override
            log.error("override of seq %s not written to the audit table: %s", outcome.record["seq"], e)

    def _decide(self, employee: str, name: str, reading: clock.ClockReading) -> tuple[dict, rules.Decision]:
        """Kind and repeat from the best time now. The record holds raw readings only, so a broken time
        service must not stop the punch: it is decided on the wall clock and flagged time_unverified."""
        problem = None
        try:
            estimate = timeline.now(self.log.conn, reading=reading)
        except Exception as e:  # a bug or a damaged sample in the time service
            estimate, problem = {}, f"the corrected time now could not be computed ({type(e).__name__}: {e})"
        ns = estimate.get("utc_ns") if "utc_ns" in estimate else None
        utc = _parse_iso(estimate.get("utc")) if ns is None else dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
        utc = utc or dt.datetime.fromtimestamp(reading.realtime_ns / 1e9, dt.UTC)
        decision = history.decide_for_log(self.schedule, self.log.conn, employee, name, utc, reading)
        if problem:
            earlier = decision.details.get("time_unverified")
            problem = f"{problem}; {earlier}" if earlier else problem
            decision = dataclasses.replace(decision, details={**decision.details, "time_unverified": problem})
        return estimate, decision

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
        except STORAGE_ERRORS as e:
            return self._refused(employee, name, method, e, decision, verified)
        return PunchOutcome(employee, name, method, recorded=True, acknowledged=True, message=decision.message,
                            kind=decision.kind, time_verified=verified, record=record,
                            decision=decision.as_dict())

    def _notify(self, outcome: PunchOutcome) -> None:
        for fn in self.feedback:
            try:
                fn(outcome)
            except Exception:  # a broken LED must not undo or hide a committed punch
                log.exception("feedback %r failed", fn)


@dataclass(frozen=True)
class Admission:
    """Whether the roster lets `employee` punch by `method`: refusal is the screen's text (None = yes),
    reason the same in English for logs, the CLI and the audit table."""

    refusal: str | None = None
    reason: str = ""
    name: str = ""


def admission(state_dir, employee: str, method: str) -> Admission:
    """The roster's word on one punch. No roster installed (version 0): everyone. An unreadable roster
    refuses (fail closed: it cannot say who belongs here), and the operator may still override."""
    from terminal.punch import roster

    try:
        with roster.Roster.open(state_dir) as r:
            if r.version == 0:
                return Admission()
            person = r.employee(employee)
    except (roster.RosterError, sqlite3.DatabaseError) as e:
        return Admission("Ditolak: daftar pegawai terminal ini rusak; hubungi operator",
                         f"the roster cannot be read ({e})")
    if person is None:
        return Admission(f"Ditolak: NIP {employee} tidak ada di daftar pegawai terminal ini",
                         f"employee {employee} is not in the installed roster")
    name = person.get("name") or ""
    if method == "pin" and not person.get("pin_allowed"):
        return Admission(f"Ditolak: {name or employee} tidak diizinkan presensi dengan PIN",
                         f"employee {employee} is not allowed to punch by PIN (pin_allowed = false)", name)
    return Admission(name=name)


def load_schedule(cfg: Config) -> rules.Schedule:
    """The config's windows, with the installed roster's schedule and holidays taking precedence, and the
    apel cancellations of the roster and of the admin page."""
    from terminal.punch import roster

    cancelled = _local_apel_cancellations(cfg)
    try:
        with roster.Roster.open(cfg.state_dir) as r:
            return rules.Schedule.from_config(cfg, roster=r, apel_cancelled=cancelled)
    except roster.RosterError as e:
        log.error("roster unreadable (%s); punch kinds follow [schedule] in the configuration", e)
        return rules.Schedule.from_config(cfg, apel_cancelled=cancelled)


def _local_apel_cancellations(cfg: Config) -> list[str]:
    from terminal.punch import notices

    path = punchlog.db_path(cfg.state_dir)
    if not path.exists():
        return []
    try:
        conn = punchlog.connect(path)
        try:
            return [c["date"] for c in notices.local_apel_cancellations(conn)]
        finally:
            conn.close()
    except (sqlite3.Error, LogError) as e:  # an unmigrated or damaged database: the roster's apply
        log.warning("apel cancellations of this terminal not read: %s", e)
        return []


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
