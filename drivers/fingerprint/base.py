"""What the terminal needs from a fingerprint sensor, whatever its protocol: the interface every model
implements (registry.py picks one by `[fingerprint] model`).

The terminal relies on sensors that search 1:N on the module (the finger never leaves the sensor as an
image) and hold templates in numbered slots. Everything above drivers/ (the capture loop, slot sync, the
finger wing, the CLI) uses only what is declared here, so a sensor of another protocol is one new class.
Every method is bounded in time and either returns a trustworthy answer or raises SensorError.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar


class SensorError(Exception):
    """The sensor could not do what was asked; `category` says why (for health and fault reports)."""

    def __init__(self, message: str, category: str = "protocol"):
        super().__init__(message)
        self.category = category  # unreachable | protocol | password | busy | config | sensor


class EnrolmentError(SensorError):
    """Enrolment did not produce a template; the message says what the employee should do."""

    def __init__(self, message: str):
        super().__init__(message, "sensor")


@dataclass(frozen=True)
class Capture:
    """A finger was read: `slot` of the matching template (None: not in the sensor), on-sensor score."""

    slot: int | None
    score: int


class FingerprintSensor(abc.ABC):
    """One sensor. `lock` (re-entrant) serialises its calls: a multi-step job such as slot sync holds it so
    the capture loop waits between its cycles."""

    #: the name under which registry.MODELS lists the class (the value of `[fingerprint] model`)
    model: ClassVar[str]
    #: True when the sensor sits on `[fingerprint] port` (the status line checks the port exists)
    uses_port: ClassVar[bool] = True

    lock: threading.RLock

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings, *, on_health: Callable[[dict], None] | None = None,
                      **overrides) -> FingerprintSensor:
        """Build from the `[fingerprint]` section (an object with its keys as attributes); `overrides`
        replace single settings (e.g. the CLI's --port) or pass driver options. Must not block."""

    # --- connection and health ------------------------------------------------------------------------
    @abc.abstractmethod
    def open(self) -> dict:
        """Connect if not connected; the sensor's parameters, at least {"capacity": slots}."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the port; a later call may connect again."""

    @abc.abstractmethod
    def health(self) -> dict:
        """{"state": "ok"|"fault"|"closed", "ok": bool, "fault"/"error": message|None, "category", ...};
        changes also go to the `on_health` callback given at construction."""

    @abc.abstractmethod
    def info(self) -> dict:
        """What `presensi finger info` prints: capacity, templates stored, and model-specific facts. A
        cheap exchange, also usable as a self-test."""

    # --- the glass -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def capture(self) -> Capture | None:
        """One read of the glass: None when no finger, else the on-sensor search result."""

    @abc.abstractmethod
    def finger_present(self) -> bool:
        """Whether a finger is on the glass now (the capture loop waits for it to be lifted)."""

    @abc.abstractmethod
    def enrol(self, slot: int, *, prompt: Callable[[str], None] = lambda step: None, timeout: float = 20.0,
               poll: float = 0.05) -> bytes:
        """Enrol the finger on the glass into `slot`; returns its template. `prompt` gets the steps
        "place", "lift", "place_again", "done" (the caller shows its own text). Raises EnrolmentError."""

    # --- template slots ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def template_slots(self) -> set[int]:
        """The occupied slots."""

    @abc.abstractmethod
    def read_template(self, slot: int) -> bytes:
        """Download the template in `slot`."""

    @abc.abstractmethod
    def write_template(self, slot: int, template: bytes) -> None:
        """Upload `template` into `slot` (checked: raises unless the sensor holds exactly it)."""

    @abc.abstractmethod
    def delete_templates(self, slot: int, count: int = 1) -> None:
        """Empty `count` slots from `slot` on."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Empty every slot."""
