"""The hardware real-time clock (a DS3231 board, the Pi 5's own RTC): read it, set it, behind one interface.

    base.py       the Rtc interface, RtcError, RtcPermissionError
    kernel.py     the kernel's RTC: read from sysfs (/sys/class/rtc/rtcN), read and set through /dev/rtcN ioctls
    fake.py       a sysfs-shaped directory that ticks with the host clock (tests, benches, demos)
    registry.py   `[time] rtc` name -> class, and open_rtc()

The driver only reports what the chip says (whole seconds, UTC); how far that can be trusted (its drift since
it was last set from a trusted sample) is terminal/timing/rtc.py's business.
"""

from drivers.rtc.base import Rtc, RtcError, RtcPermissionError
from drivers.rtc.registry import MODELS, open_rtc

__all__ = ["MODELS", "Rtc", "RtcError", "RtcPermissionError", "open_rtc"]
