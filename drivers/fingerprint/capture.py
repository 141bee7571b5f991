"""The capture loop: polls the glass in its own thread so the daemon never waits on the sensor.

readImage → convertImage → searchTemplate; one result per touch (the finger must be lifted before the next);
after an error the loop backs off exponentially (the sensor's health says why) and resumes by itself when the
sensor answers again. Other users of the sensor (slot sync, enrolment) take `sensor.lock` between cycles, or
`pause()` the loop for a multi-step job such as enrolment.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from drivers.fingerprint.base import Capture, FingerprintSensor, SensorError

log = logging.getLogger(__name__)


class CaptureLoop:
    def __init__(self, sensor: FingerprintSensor, on_capture: Callable[[Capture], None], *,
                 poll_interval: float = 0.05, backoff_start: float = 0.1, backoff_max: float = 2.0,
                 lift_timeout: float = 10.0, heartbeat: Callable[[], None] | None = None):
        """`heartbeat` is called on every round (also while paused): the owner restarts a loop that stops."""
        self.sensor = sensor
        self.on_capture = on_capture
        self.heartbeat = heartbeat or (lambda: None)
        self.poll_interval = poll_interval
        self.backoff_start, self.backoff_max = backoff_start, backoff_max
        self.lift_timeout = lift_timeout  # a finger resting longer than this is read again
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self.cycles = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fingerprint-capture", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._resume.set()
        if self._thread:
            self._thread.join(timeout)

    @contextlib.contextmanager
    def pause(self, timeout: float = 5.0):
        """Hold the loop between cycles (enrolment needs the glass to itself)."""
        self._idle.clear()
        self._resume.clear()
        try:
            self._idle.wait(timeout)
            yield
        finally:
            self._resume.set()

    def health(self) -> dict:
        return self.sensor.health()

    def _run(self) -> None:
        delay = self.backoff_start
        while not self._stop.is_set():
            self.heartbeat()
            if not self._resume.is_set():
                self._idle.set()
                self._resume.wait(1.0)
                continue
            try:
                capture = self.sensor.capture()
                self.cycles += 1
                delay = self.backoff_start
            except SensorError as e:  # warn once per outage; the sensor's health carries the details
                level = logging.WARNING if delay == self.backoff_start else logging.DEBUG
                log.log(level, "fingerprint capture failed, retrying in %.1f s: %s", delay, e)
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            if capture is None:
                self._stop.wait(self.poll_interval)
                continue
            try:
                self.on_capture(capture)
            except Exception:  # the receiver's bug must not stop the sensor
                log.exception("fingerprint capture handler failed")
            self._wait_for_lift()

    def _wait_for_lift(self) -> None:
        end = time.monotonic() + self.lift_timeout
        while not self._stop.is_set() and time.monotonic() < end and self._resume.is_set():
            self.heartbeat()
            try:
                if not self.sensor.finger_present():
                    return
            except SensorError:
                return  # the main loop's error handling takes over
            self._stop.wait(self.poll_interval)
