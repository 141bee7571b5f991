"""What the time sources need from a real-time clock: its reading in whole seconds and, where allowed, a way
to set it. A driver raises RtcError when the clock cannot be read (absent, unreadable, garbage) and
RtcPermissionError when setting it is not allowed (no CAP_SYS_TIME): the caller then keeps its own record.
"""

from __future__ import annotations

import abc
from typing import ClassVar


class RtcError(Exception):
    """The RTC cannot be read or set now; the message says why."""


class RtcPermissionError(RtcError):
    """Setting the RTC needs CAP_SYS_TIME (and access to /dev/rtcN), which this process does not have."""


class Rtc(abc.ABC):
    #: the name under which registry.MODELS lists the class (the value of `[time] rtc`)
    model: ClassVar[str]

    def __init__(self, path: str, device: str):
        self.path, self.device = path, device

    @abc.abstractmethod
    def read(self) -> int:
        """The RTC's time as whole seconds since the epoch (UTC, as Linux keeps RTCs)."""

    @abc.abstractmethod
    def set(self, epoch_s: int) -> None:
        """Set the RTC to `epoch_s` (UTC). RtcPermissionError without the right to do so."""

    def describe(self) -> str:
        return f"{self.model} RTC at {self.path}"
