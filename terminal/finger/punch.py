"""A fingerprint match becomes a punch: sensor slot → employee (terminal/finger/slots.py) → punch log.

The sink is the daemon's terminal.punch.service.PunchService (schedule kind, repeat interval, feedback after
commit) or, where no schedule is wanted (tools, tests), the PunchLog itself.

The capture loop (drivers/fingerprint/capture.py) only hands over complete, checked exchanges, so whatever
reaches here came from an intact readImage → convertImage → searchTemplate. A match below the configured
score, or in a slot the map does not know (a template left by another terminal), is no punch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from drivers.fingerprint.base import Capture
from terminal.finger.slots import SlotMap
from terminal.log.punchlog import PunchLog
from terminal.punch.service import PunchService


@dataclass(frozen=True)
class FingerDecision:
    accepted: bool
    employee: str | None
    slot: int | None
    score: int
    reason: str  # matched | no_match | low_score | unknown_slot
    record: dict | None = None
    outcome: object = None  # the PunchService's PunchOutcome, when punched through one


def decide(capture: Capture, slots: SlotMap, min_score: int) -> FingerDecision:
    if capture.slot is None:
        return FingerDecision(False, None, None, capture.score, "no_match")
    employee = slots.employee_for(capture.slot)
    if employee is None:
        return FingerDecision(False, None, capture.slot, capture.score, "unknown_slot")
    if capture.score < min_score:
        return FingerDecision(False, employee, capture.slot, capture.score, "low_score")
    return FingerDecision(True, employee, capture.slot, capture.score, "matched")


def punch(sink: PunchLog | PunchService, slots: SlotMap, capture: Capture, min_score: int) -> FingerDecision:
    """Decide, and for a match append the punch (committed before this returns; feedback comes after)."""
    decision = decide(capture, slots, min_score)
    if not decision.accepted:
        return decision
    details = {"score": capture.score, "slot": capture.slot}
    if isinstance(sink, PunchLog):
        record, outcome = sink.append(decision.employee, "finger", details=details), None
    else:
        outcome = sink.punch(decision.employee, "finger", details=details)
        record = outcome.record if outcome.recorded else None
    return FingerDecision(True, decision.employee, capture.slot, capture.score, "matched", record, outcome)


def capture_handler(sink: PunchLog | PunchService, slots: SlotMap, min_score: int,
                    on_decision: Callable[[FingerDecision], None] | None = None,
                    on_error: Callable[[Exception], None] | None = None) -> Callable[[Capture], None]:
    """The `on_capture` callback for CaptureLoop: punch, then tell the screen/LEDs (on_decision). With
    `on_error`, any exception of this attempt goes there instead of up (the employee must hear about it)."""

    def handle(capture: Capture) -> None:
        try:
            decision = punch(sink, slots, capture, min_score)
            if on_decision:
                on_decision(decision)
        except Exception as e:
            if on_error is None:
                raise
            on_error(e)

    return handle
