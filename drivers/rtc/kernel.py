"""The kernel's RTC driver: what `hwclock` would read and set, without running it.

Reading prefers sysfs (`<path>/since_epoch`, else `<path>/date` + `<path>/time`): it needs no device access,
so the systemd unit's closed device policy does not get in the way. Setting needs the character device
(ioctl RTC_SET_TIME on /dev/rtcN) and CAP_SYS_TIME; an unprivileged daemon gets RtcPermissionError and the
timing code keeps its own calibration record instead. The kernel keeps RTCs in UTC.
"""

from __future__ import annotations

import calendar
import datetime as dt
import errno
import fcntl
import os
import struct
from pathlib import Path

from drivers.rtc.base import Rtc, RtcError, RtcPermissionError

_RTC_TIME = struct.Struct("9i")  # struct rtc_time: sec, min, hour, mday, mon (0-11), year-1900, wday, yday, isdst
RTC_RD_TIME = (2 << 30) | (_RTC_TIME.size << 16) | (ord("p") << 8) | 0x09  # _IOR('p', 0x09, struct rtc_time)
RTC_SET_TIME = (1 << 30) | (_RTC_TIME.size << 16) | (ord("p") << 8) | 0x0A  # _IOW('p', 0x0a, struct rtc_time)


def parse_sysfs(path: Path) -> int:
    """Seconds since the epoch from a sysfs RTC directory (since_epoch, or date and time)."""
    try:
        text = (path / "since_epoch").read_text().strip()
    except FileNotFoundError:
        text = None
    except OSError as e:
        raise RtcError(f"{path}/since_epoch: cannot read ({e.strerror or e})") from None
    if text is not None:
        if not text.isdigit():
            raise RtcError(f"{path}/since_epoch: {text[:40]!r} is not a number of seconds")
        return int(text)
    try:
        date, clock = (path / "date").read_text().strip(), (path / "time").read_text().strip()
        stamp = dt.datetime.strptime(f"{date} {clock}", "%Y-%m-%d %H:%M:%S")
    except OSError as e:
        raise RtcError(f"{path}: no readable RTC here (since_epoch, date, time: {e.strerror or e})") from None
    except ValueError:
        raise RtcError(f"{path}: date/time are not YYYY-MM-DD / HH:MM:SS") from None
    return calendar.timegm(stamp.timetuple())


def _to_struct(epoch_s: int) -> bytes:
    t = dt.datetime.fromtimestamp(epoch_s, dt.UTC)
    return _RTC_TIME.pack(t.second, t.minute, t.hour, t.day, t.month - 1, t.year - 1900,
                          (t.weekday() + 1) % 7, t.timetuple().tm_yday - 1, 0)


def _from_struct(raw: bytes) -> int:
    sec, minute, hour, mday, mon, year, *_ = _RTC_TIME.unpack(raw)
    try:
        return calendar.timegm((year + 1900, mon + 1, mday, hour, minute, sec))
    except (ValueError, OverflowError):
        raise RtcError(f"the RTC returned an impossible date {year + 1900}-{mon + 1}-{mday}") from None


class KernelRtc(Rtc):
    model = "kernel"

    def read(self) -> int:
        path = Path(self.path)
        if path.is_dir():
            return parse_sysfs(path)
        return self._ioctl_read()

    def _ioctl_read(self) -> int:
        try:
            fd = os.open(self.device, os.O_RDONLY)
        except OSError as e:
            raise RtcError(f"{self.path} is no RTC directory and {self.device} cannot be opened "
                           f"({e.strerror})") from None
        try:
            raw = fcntl.ioctl(fd, RTC_RD_TIME, bytes(_RTC_TIME.size))
        except OSError as e:  # EINVAL: the chip's time is invalid (it lost power)
            raise RtcError(f"{self.device}: RTC_RD_TIME failed ({e.strerror}); the RTC has no valid time") from None
        finally:
            os.close(fd)
        return _from_struct(raw)

    def set(self, epoch_s: int) -> None:
        try:
            fd = os.open(self.device, os.O_RDONLY)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM):
                raise RtcPermissionError(f"{self.device}: no access ({e.strerror})") from None
            raise RtcError(f"{self.device}: cannot open ({e.strerror})") from None
        try:
            fcntl.ioctl(fd, RTC_SET_TIME, _to_struct(int(epoch_s)))
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM):
                raise RtcPermissionError(f"{self.device}: setting the RTC needs CAP_SYS_TIME ({e.strerror})") from None
            raise RtcError(f"{self.device}: RTC_SET_TIME failed ({e.strerror})") from None
        finally:
            os.close(fd)
