"""Work codes: the reason an employee gives with a punch (Dinas Luar, izin keluar, kembali dari izin, lembur).

ZKTeco terminals record a numeric work code beside the punch state, and regional systems read it from there,
so a code here is that same number, with a label in Bahasa Indonesia and the punch kinds it applies to
([work_codes] codes, or the list a roster publishes in its schedule). This module only decides: which codes
exist, whether one applies to a kind, and the choice an employee made before the punch (`Chooser`: a kiosk
touch or the fingerprint button arms a code for the next punch within a few seconds). Recording is the punch
service's and the log's job.

A code chosen *after* the face or finger was recognised is part of the punch because the punch is held for
it: the kiosk offers the codes of the punch's kind for [work_codes] after_punch_seconds (`ChoiceWindow`),
and the punch is committed with the choice, or without a code when the employee taps "Lewati" or the time
runs out. The clock reading is taken at recognition, so the punch's time is not moved by the wait.
Why holding and not an amending record appended after the punch: the chain stays one record per punch, so
every reader that counts records as punches (ZK port 4370 sizes its download by the seq range, ADMS
stamps, exports, the central server's lists) stays right without learning a second kind of record, and no
record can ever contradict an earlier one. The cost: feedback (beep, "Berhasil") waits for the choice, and
a power cut during the wait loses a punch that was never acknowledged (the employee has not heard the
beep, and punches again). So the window is off by default (0 s); a code chosen *before* the punch needs no
wait at all.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from terminal.punch.rules import LABELS

log = logging.getLogger("presensi.punch")


@dataclass(frozen=True)
class WorkCode:
    code: int
    label: str
    kinds: tuple[str, ...]  # empty: every kind

    def applies_to(self, kind: str) -> bool:
        return not self.kinds or kind in self.kinds

    def as_dict(self) -> dict:
        return {"code": self.code, "label": self.label, "kinds": list(self.kinds)}


@dataclass(frozen=True)
class Refusal:
    """Why a code is not accepted: `message` for the screen (Bahasa Indonesia), `reason` in English."""

    message: str
    reason: str


class Catalogue:
    """The work codes in force (from [work_codes])."""

    def __init__(self, codes: list[dict], enabled: bool = True):
        self.enabled = enabled
        self.codes = {int(c["code"]): WorkCode(int(c["code"]), str(c["label"]), tuple(c.get("kinds") or ()))
                      for c in codes}

    @classmethod
    def from_config(cls, cfg) -> Catalogue:
        return cls(cfg.work_codes.codes, cfg.work_codes.enabled)

    @classmethod
    def load(cls, cfg) -> Catalogue:
        """The roster's list when the central server published one (its schedule's "work_codes", checked
        like [work_codes] codes), else the configuration's. An unreadable roster keeps the configured list."""
        from terminal.punch import roster

        try:
            with roster.Roster.open(cfg.state_dir) as r:
                published = parse_published(r.schedule())
        except (roster.RosterError, ValueError) as e:
            log.error("the roster's work codes are unusable (%s); using [work_codes] codes", e)
            published = None
        return cls(cfg.work_codes.codes if published is None else published, cfg.work_codes.enabled)

    def for_kind(self, kind: str) -> list[WorkCode]:
        """The codes the kiosk offers after a punch of `kind`."""
        if not self.enabled:
            return []
        return [c for c in self.codes.values() if c.applies_to(kind)]

    def check(self, code, kind: str) -> Refusal | None:
        """None when `code` may go with a punch of `kind`; else the refusal."""
        if not self.enabled:
            return Refusal("Kode kerja tidak dipakai di terminal ini",
                           "work codes are disabled on this terminal ([work_codes] enabled = false)")
        if isinstance(code, bool) or not isinstance(code, int):
            return Refusal("Kode kerja tidak dikenal", f"work code {code!r} is not a number")
        entry = self.codes.get(code)
        if entry is None:
            known = ", ".join(f"{c.code} {c.label}" for c in self.codes.values()) or "none"
            return Refusal(f"Kode kerja {code} tidak dikenal",
                           f"unknown work code {code}; the codes are: {known} ([work_codes] codes)")
        if not entry.applies_to(kind):
            label = LABELS.get(kind, kind or "di luar jadwal")
            allowed = ", ".join(entry.kinds)
            return Refusal(f"Kode kerja {code} {entry.label} tidak berlaku untuk {label}",
                           f"work code {code} ({entry.label}) applies to {allowed}, not to a punch of kind "
                           f"{kind or '(none)'}")
        return None


    def known(self, code) -> Refusal | None:
        """None when `code` is one of the codes (the kind is not known yet: a choice before the punch)."""
        if not self.enabled or isinstance(code, bool) or not isinstance(code, int) or code not in self.codes:
            return self.check(code, "")
        return None


class Chooser:
    """The code chosen before a punch, waiting for it: armed by a kiosk touch or the fingerprint button,
    taken by the next punch within `seconds` (on the monotonic clock), at most once."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._armed: tuple[int, float, str] | None = None  # code, when, source

    def arm(self, code: int, source: str) -> None:
        with self._lock:
            self._armed = (code, self._clock(), source)

    def clear(self) -> None:
        with self._lock:
            self._armed = None

    def peek(self) -> dict | None:
        """The armed choice while it is still valid (what the kiosk shows)."""
        with self._lock:
            armed = self._fresh()
            return None if armed is None else {"code": armed[0], "source": armed[2],
                                                "remaining": round(self.seconds - (self._clock() - armed[1]), 1)}

    def take(self) -> int | None:
        """The armed code for the punch happening now (then it is used up), or None."""
        with self._lock:
            armed = self._fresh()
            self._armed = None
            return None if armed is None else armed[0]

    def _fresh(self):
        if self._armed is not None and self._clock() - self._armed[1] > self.seconds:
            self._armed = None
        return self._armed


@dataclass
class _Open:
    token: str
    employee: str
    kind: str
    codes: tuple[int, ...]
    done: threading.Event = field(default_factory=threading.Event)
    chosen: int | None = None


class ChoiceWindow:
    """The kiosk's offer after a recognised face or finger: one open at a time (one employee stands at the
    terminal), answered through the kiosk route with the token the offer carried, or expiring."""

    def __init__(self, catalogue: Catalogue, seconds: float, publish: Callable[[str, dict], None]):
        self.catalogue, self.seconds, self.publish = catalogue, seconds, publish
        self._lock = threading.Lock()
        self._open: _Open | None = None

    def wait(self, employee: str, name: str, kind: str, codes: list[WorkCode]) -> int | None:
        """Offer `codes` on the kiosk and wait for the choice (None: skipped or expired)."""
        offer = _Open(secrets.token_urlsafe(18), employee, kind, tuple(c.code for c in codes))
        with self._lock:
            if self._open is not None:  # a second recognition meanwhile: the earlier offer ends without a code
                self._open.done.set()
            self._open = offer
        self.publish("workcode", {"token": offer.token, "employee": employee, "name": name, "kind": kind,
                                  "kind_label": LABELS.get(kind, kind), "seconds": self.seconds,
                                  "codes": [c.as_dict() for c in codes]})
        offer.done.wait(self.seconds)
        with self._lock:
            if self._open is offer:
                self._open = None
        self.publish("workcode-closed", {"token": offer.token, "chosen": offer.chosen})
        return offer.chosen

    def choose(self, token: str, code: int | None) -> Refusal | None:
        """The kiosk's answer: a code of the offer, or None to record the punch without one."""
        with self._lock:
            offer = self._open
            if offer is None or not hmac.compare_digest(str(token).encode(), offer.token.encode()):
                return Refusal("Waktu memilih kode kerja sudah habis",
                               "no work-code choice is open with this token (expired, answered, or never offered)")
            if code is not None:
                refusal = self.catalogue.check(code, offer.kind)
                if refusal is None and code not in offer.codes:
                    refusal = Refusal(f"Kode kerja {code} tidak ditawarkan", f"work code {code} was not offered")
                if refusal is not None:
                    return refusal
            offer.chosen = code
            self._open = None
            offer.done.set()
            return None


def parse_published(schedule: dict) -> list[dict] | None:
    """The work codes a roster carries (`schedule["work_codes"]`, same entries as [work_codes] codes), checked;
    None when it carries none. ValueError names the problem."""
    if not isinstance(schedule, dict) or "work_codes" not in schedule:
        return None
    from terminal.config import ConfigError, WorkCodes

    try:
        return WorkCodes(codes=schedule["work_codes"]).codes
    except ConfigError as e:
        raise ValueError(f"work_codes: {e}") from None


def check_published(schedule: dict, holidays: list) -> None:
    """A roster bundle's check (with the schedule's, terminal/punch/rules.py): unusable codes refuse it whole."""
    parse_published(schedule)


def next_code(catalogue: Catalogue, current: int | None) -> int | None:
    """The fingerprint button's cycle: none → first code → … → last code → none."""
    codes = sorted(catalogue.codes) if catalogue.enabled else []
    if not codes:
        return None
    if current is None or current not in codes:
        return codes[0]
    i = codes.index(current)
    return codes[i + 1] if i + 1 < len(codes) else None


def code_of(record: dict) -> int | None:
    """The work code a record itself carries (in its hashed details), or None."""
    details = record.get("details") if isinstance(record.get("details"), dict) else {}
    code = details.get("work_code")
    return code if isinstance(code, int) and not isinstance(code, bool) else None
