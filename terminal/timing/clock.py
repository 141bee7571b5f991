"""Raw clock readings taken at the moment of a punch.

The wall clock of a Raspberry Pi is not trusted (no RTC, drift, steps by NTP or people), so a punch stores
what the kernel reports, untouched: the boot id, CLOCK_MONOTONIC_RAW (never stepped, never slewed),
CLOCK_BOOTTIME, the wall clock, and the kernel's NTP sync status. The corrected UTC interval is derived later
from trusted samples (see terminal/timing/timeline.py) and never rewrites these fields.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from dataclasses import asdict, dataclass

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
TIME_ERROR = 5  # adjtimex() return value: clock not synchronised


@dataclass(frozen=True)
class ClockReading:
    boot_id: str
    monoraw_ns: int
    boottime_ns: int
    realtime_ns: int
    timex_status: int | None  # adjtimex() return: 0 = TIME_OK … 5 = TIME_ERROR; None where unavailable
    maxerror_us: int | None  # the kernel's maximum error estimate, microseconds

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def kernel_synced(self) -> bool:
        return self.timex_status is not None and self.timex_status != TIME_ERROR


def boot_id() -> str:
    try:
        with open(BOOT_ID_PATH) as f:
            return f.read().strip()
    except OSError:
        return "unknown"


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_pad", ctypes.c_int * 11),
    ]


def _load_adjtimex():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.adjtimex
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.POINTER(_Timex)]
    fn.restype = ctypes.c_int
    return fn


_adjtimex = _load_adjtimex()


def kernel_sync_status() -> tuple[int | None, int | None]:
    """(state, maxerror_us) from a read-only adjtimex(); (None, None) where the call is unavailable."""
    if _adjtimex is None:
        return None, None
    tx = _Timex()  # modes = 0: read only, allowed without privileges
    state = _adjtimex(ctypes.byref(tx))
    if state < 0:
        return None, None
    return state, int(tx.maxerror)


_BOOT_ID = boot_id()  # constant for the life of a process


def read() -> ClockReading:
    """Take all raw readings as close together as possible."""
    status, maxerror = kernel_sync_status()
    return ClockReading(
        boot_id=_BOOT_ID,
        monoraw_ns=time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW),
        boottime_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
        realtime_ns=time.time_ns(),
        timex_status=status,
        maxerror_us=maxerror,
    )
