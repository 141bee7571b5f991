"""Enrolment on the sensor: two reads → createTemplate → store → download the characteristics.

The downloaded 512-byte template goes to the central server, which hands it to the office's other terminals.
`prompt` receives a step name ("place", "lift", "place_again", "done") so the caller can show its own text.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from drivers.fingerprint.sensor import FingerprintSensor, SensorError


class EnrolmentError(SensorError):
    """Enrolment did not produce a template; the message says what the employee should do."""

    def __init__(self, message: str):
        super().__init__(message, "sensor")


def _wait_finger(sensor: FingerprintSensor, present: bool, timeout: float, poll: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sensor.finger_present() == present:
            return
        time.sleep(poll)
    raise EnrolmentError("no finger on the sensor in time; start again" if present else
                         "the finger was not lifted in time; start again")


def _read_into(sensor: FingerprintSensor, buffer: int) -> None:
    try:
        sensor.call("convertImage", buffer)
    except SensorError as e:
        if e.category != "sensor":
            raise
        raise EnrolmentError(f"the image was not usable ({e}); press the finger flat and try again") from e


def enroll(sensor: FingerprintSensor, slot: int, *, prompt: Callable[[str], None] = lambda step: None,
           timeout: float = 20.0, poll: float = 0.05) -> bytes:
    """Enrol the finger on the glass into `slot` and return its 512-byte template."""
    with sensor.lock:
        prompt("place")
        _wait_finger(sensor, True, timeout, poll)
        _read_into(sensor, 0x01)
        prompt("lift")
        _wait_finger(sensor, False, timeout, poll)
        prompt("place_again")
        _wait_finger(sensor, True, timeout, poll)
        _read_into(sensor, 0x02)
        if not sensor.call("createTemplate"):
            raise EnrolmentError("the two reads were not of the same finger; start again")
        stored = sensor.call("storeTemplate", slot, 0x01)
        if stored != slot:
            raise SensorError(f"the sensor stored the template in slot {stored}, not {slot}")
        template = bytes(sensor.call("downloadCharacteristics", 0x01))
        prompt("done")
        return template
