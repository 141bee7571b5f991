"""The daemon's fingerprint part in one object: sensor, capture loop, slot map, punch, feedback and health.

    service = FingerprintService(cfg.fingerprint, cfg.state_dir, punch_service, feedback=feedback)
    service.start()                 # capture runs in its own thread from here on
    service.sync(people)            # [(employee_id, [512-byte templates])], e.g. after a roster swap
    service.health()                # for terminal.ops.health's providers: {"ok", "error", ...}
    service.stop()

Decisions reach `on_decision` (the kiosk screen) after the punch was committed; feedback (LEDs, buzzer)
follows the decision, and the red LED blinks while the sensor is in fault. An exception while deciding,
punching or giving feedback reaches `on_error` (default: the failure pattern) and capture goes on with the
next finger; `heartbeat` is called on every round of the capture loop, for the daemon's supervision.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from drivers.fingerprint.capture import CaptureLoop
from drivers.fingerprint.registry import from_config
from terminal.finger.punch import FingerDecision, capture_handler
from terminal.finger.slots import SlotMap, SyncReport, enrol_employee, report_sync_fault, sync_slots
from terminal.log import punchlog
from terminal.log.punchlog import PunchLog
from terminal.punch import enrolments
from terminal.punch.service import PunchService

log = logging.getLogger(__name__)


class FingerprintService:
    def __init__(self, settings, state_dir: str | Path, sink: PunchLog | PunchService, *, feedback=None,
                 on_decision: Callable[[FingerDecision], None] | None = None,
                 on_health: Callable[[dict], None] | None = None,
                 on_error: Callable[[Exception], None] | None = None,
                 heartbeat: Callable[[], None] | None = None):
        """`settings` is the [fingerprint] section; `sink` the daemon's PunchService (or a bare PunchLog);
        `feedback` a drivers.gpio.Feedback or None."""
        self.settings = settings
        self.feedback = feedback
        # Its own connection for fault_events, opened when a sync reports (not at start: on a full disk the
        # sensor must still come up): a sqlite3 connection carries one transaction at a time, and the punch
        # writer's connection is busy in other threads.
        self._db_path = punchlog.db_path(state_dir)
        self._conn = None
        self._on_decision = on_decision
        self._on_health = on_health
        self._on_error = on_error
        self.errors = 0
        self.last_error: str | None = None
        self.slots = SlotMap(state_dir)
        # A slot sync runs in its own thread (after a roster swap); stop() must not close the sensor and the
        # databases under it (a closed sqlite connection in use crashed the process), so they take turns.
        self._closing = threading.Lock()
        self._stopped = False
        self.sensor = from_config(settings, on_health=self._health_changed)  # [fingerprint] model picks it
        self.loop = CaptureLoop(self.sensor, capture_handler(sink, self.slots, settings.min_score,
                                                             on_decision=self._decided, on_error=self._failed),
                                heartbeat=heartbeat)

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()
        with self._closing:
            self._stopped = True
            self.sensor.close()
            self.slots.close()
            if self._conn is not None:
                self._conn.close()

    def health(self) -> dict:
        report = {"enabled": True, **self.sensor.health()}
        if self.last_error:
            report.update(last_attempt_error=self.last_error, failures=self.errors)
        return report

    def sync(self, people: list[tuple[str, list[bytes]]]) -> SyncReport:
        """Slot sync while capture keeps running (they take turns per sensor call). Raises RuntimeError
        once the service has stopped."""
        with self._closing:
            if self._stopped:
                raise RuntimeError("the fingerprint service has stopped")
            report = sync_slots(self.sensor, self.slots, people)
            if report.fault:
                log.error("fingerprint slot sync: %s", report.fault)
            if self._conn is None:
                self._conn = punchlog.connect(self._db_path)
            report_sync_fault(self._conn, report)
            return report

    def enrol(self, employee: str, prompt: Callable[[str], None], timeout: float = 20.0) -> dict:
        with self.loop.pause():
            result = enrol_employee(self.sensor, self.slots, employee, prompt=prompt, timeout=timeout)
        # for the central server, and from there every terminal's roster
        enrolments.record_in(self.slots.state_dir, employee, "finger", [base64.b64decode(result["template"])])
        return result

    def _decided(self, decision: FingerDecision) -> None:
        if self.feedback is not None:
            stored = decision.accepted and (decision.outcome is None or decision.outcome.acknowledged)
            (self.feedback.success if stored else self.feedback.failure)()
        if self._on_decision:
            self._on_decision(decision)

    def _failed(self, error: Exception) -> None:
        """One finger's attempt failed (deciding, punching or feedback): the failure pattern, the error to
        `on_error` (the daemon's fault and screen), and capture goes on."""
        log.error("fingerprint attempt failed: %s: %s", type(error).__name__, error, exc_info=error)
        self.errors += 1
        self.last_error = f"{type(error).__name__}: {error}"
        if self._on_error is not None:
            self._on_error(error)
        elif self.feedback is not None:
            self.feedback.failure()

    def _health_changed(self, health: dict) -> None:
        if self.feedback is not None:
            self.feedback.set_fault(health["state"] == "fault")
        if self._on_health:
            self._on_health(health)
