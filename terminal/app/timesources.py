"""Reading the offline time sources once: the kernel's NTP view, GPS through gpsd, the hardware RTC.

The wiring wing, because it joins the drivers (drivers/rtc, drivers/gps) with the timing wing (which turns
readings into samples: terminal/timing/rtc.py, gps.py, timeline.py) and the faults. The daemon runs
read_sources() every `[time] sources_interval` (terminal/app/jobs.py) and once at start, so the first punch
after a power cut already has an anchor; `presensi time sources` runs it by hand.

Order matters: the kernel and GPS first, so that a fresh trusted sample taken in the same run calibrates (and,
when allowed, sets) the RTC; the RTC is read as a sample only while the boot has no fresh trusted sample.
Nothing here accepts a ZK SetTime or ADMS DateTime claim: the sources are fixed below.

Every source that is configured and fails raises a fault ("time:rtc", "time:gps", category clock) with what
to do, and clears it when it works again; a failure never becomes a weaker sample.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from drivers.gps import GpsError, read_fix
from drivers.rtc import RtcError, RtcPermissionError, open_rtc
from terminal.config import Config
from terminal.ops import faults
from terminal.timing import clock, gps, rtc, timeline

log = logging.getLogger("presensi.timesources")

S = 1_000_000_000
TRUSTED_MAX_AGE_NS = 2 * 3600 * S  # a trusted sample older than this no longer calibrates the RTC
MIN_GAP_NS = 3000 * S  # samples of one source: at most about one an hour per boot (the rest add nothing)
SOURCES = ("kernel-ntp", "gps", "rtc")  # what this module may record: never zk-settime, adms-datetime


def read_sources(cfg: Config, conn: sqlite3.Connection, *, force: bool = False,
                 read_clock=clock.read) -> dict:
    """Read every configured offline source once; {source: result}. `force` ignores the hourly gap;
    `read_clock` takes the raw clock readings (clock.read; a bench or test passes readings of another boot)."""
    t = cfg.time
    out: dict[str, dict] = {}
    if t.kernel_ntp:
        out["kernel-ntp"] = _guard("kernel-ntp", lambda: _kernel(conn, force, read_clock))
    if t.gps != "off":
        out["gps"] = _guard("gps", lambda: _gps(cfg, conn, force, read_clock))
    if t.rtc != "off":
        out["rtc"] = _guard("rtc", lambda: _rtc(cfg, conn, force, read_clock))
    return out


def _guard(name: str, fn) -> dict:
    try:
        return fn()
    except Exception as e:  # a bug in one source must not stop the others, and is never silent
        log.exception("time source %s failed", name)
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def _recent(conn: sqlite3.Connection, source: str, reading: clock.ClockReading) -> bool:
    row = conn.execute("SELECT max(monoraw_ns) FROM time_samples WHERE boot_id = ? AND source = ? "
                       "AND status = 'accepted'", (reading.boot_id, source)).fetchone()
    return row[0] is not None and reading.monoraw_ns - row[0] < MIN_GAP_NS


def _brief(sample: dict) -> dict:
    return {k: sample[k] for k in ("id", "source", "utc", "uncertainty_ns", "status")}


def _kernel(conn: sqlite3.Connection, force: bool, read_clock) -> dict:
    reading = read_clock()
    if not force and _recent(conn, "kernel-ntp", reading):
        return {"ok": True, "skipped": "a kernel sample of this boot is less than an hour old"}
    sample = timeline.observe_kernel(conn, reading)
    if sample is None:  # normal in an office without NTP: nothing to record, nothing broken
        return {"ok": True, "skipped": "the kernel is not NTP-synchronised (no chrony/timesyncd sync)"}
    return {"ok": True, "sample": _brief(sample)}


def _gps(cfg: Config, conn: sqlite3.Connection, force: bool, read_clock) -> dict:
    t = cfg.time
    if not force and _recent(conn, "gps", read_clock()):
        return {"ok": True, "skipped": "a GPS sample of this boot is less than an hour old"}
    try:
        fix = read_fix(t.gpsd_host, t.gpsd_port, t.gps_timeout, read_clock)
        sample = timeline.record_sample(conn, **gps.sample_kwargs(fix.time, fix.mode, fix.stamp,
                                                                  t.gps_max_latency_s, device=fix.device))
    except (GpsError, timeline.TimeSampleError) as e:
        faults.raise_fault(conn, "time:gps", part="gps", category="clock",
                           message=f"GPS time unavailable: {e}. Check the antenna (sky view), the receiver's "
                                   "cable and `systemctl status gpsd`",
                           diagnostics={"gpsd": f"{t.gpsd_host}:{t.gpsd_port}"})
        return {"ok": False, "error": str(e)}
    faults.clear_fault(conn, "time:gps", message="GPS time available again")
    return {"ok": True, "sample": _brief(sample), "fix_time": fix.time, "mode": fix.mode}


# -- the RTC -------------------------------------------------------------------------------------------------


def _read_bracketed(drv, read_clock) -> tuple[int, clock.ClockReading, clock.ClockReading]:
    before = read_clock()
    seconds = drv.read()
    return seconds, before, read_clock()


def _rtc(cfg: Config, conn: sqlite3.Connection, force: bool, read_clock) -> dict:
    t = cfg.time
    try:
        drv = open_rtc(t.rtc, t.rtc_path, t.rtc_device)
        if rtc.trusted_now(conn, read_clock(), max_age_ns=TRUSTED_MAX_AGE_NS) is not None:
            result = _calibrate(cfg, conn, drv, read_clock)
        elif not force and _recent(conn, "rtc", read_clock()):
            return {"ok": True, "skipped": "an RTC sample of this boot is less than an hour old"}
        else:
            seconds, before, after = _read_bracketed(drv, read_clock)
            kwargs = rtc.sample_kwargs(seconds, before, after, rtc.load(cfg.state_dir), t.rtc_drift_ppm,
                                       rtc.trusted_floor_ns(conn))
            result = {"ok": True, "action": "sample", "sample": _brief(timeline.record_sample(conn, **kwargs))}
    except rtc.RtcRefused as e:
        return _rtc_fault(conn, e.code, str(e))
    except (RtcError, timeline.TimeSampleError) as e:
        return _rtc_fault(conn, "rtc-unreadable", f"the RTC cannot be used: {e}")
    faults.clear_fault(conn, "time:rtc", message="RTC usable again")
    return result


def _rtc_fault(conn: sqlite3.Connection, code: str, message: str) -> dict:
    faults.raise_fault(conn, "time:rtc", part="rtc", category="clock", message=message, diagnostics={"code": code})
    return {"ok": False, "code": code, "error": message}


def _calibrate(cfg: Config, conn: sqlite3.Connection, drv, read_clock) -> dict:
    """Compare the RTC with the fresh trusted estimate; set it first when it is off by more than a second
    (and allowed to); remember the offset either way."""
    _, measured = _measure(conn, drv, read_clock, set_rtc=False, set_error=None)
    set_rtc, set_error = False, None
    if cfg.time.rtc_set and not measured.offset_lo_ns <= 0 <= measured.offset_hi_ns:
        try:
            _set_on_the_second(conn, drv, read_clock)
            set_rtc = True
        except RtcPermissionError as e:
            set_error = str(e)
            log.info("RTC not set (%s); its offset is remembered instead", e)
    cal, measured = _measure(conn, drv, read_clock, set_rtc=set_rtc, set_error=set_error)
    rtc.save(cfg.state_dir, cal)
    off = (measured.offset_lo_ns + measured.offset_hi_ns) / 2e9
    return {"ok": True, "action": "calibrated", "set": cal.set_rtc, "set_error": cal.set_error,
            "offset_s": round(off, 3), "calibration": cal.as_dict()}


def _measure(conn, drv, read_clock, *, set_rtc: bool, set_error: str | None) -> tuple[rtc.Calibration, ...]:
    """(the calibration to keep, the offset as measured): they differ while the kernel is NTP-synchronised,
    when the calibration also admits the kernel writing the chip (terminal/timing/rtc.py)."""
    seconds, before, after = _read_bracketed(drv, read_clock)
    tb = rtc.trusted_now(conn, before, max_age_ns=TRUSTED_MAX_AGE_NS)
    ta = rtc.trusted_now(conn, after, max_age_ns=TRUSTED_MAX_AGE_NS)
    if tb is None or ta is None:
        raise RtcError("the trusted sample expired during calibration")
    kernel = after.maxerror_us * 1000 if after.kernel_synced and after.maxerror_us is not None else None
    args = dict(boot_id=after.boot_id, set_rtc=set_rtc, set_error=set_error)
    return (rtc.calibrate(seconds, tb, ta, kernel_maxerror_ns=kernel, **args),
            rtc.calibrate(seconds, tb, ta, **args))


def _set_on_the_second(conn, drv, read_clock) -> None:
    """Write the RTC at the moment the trusted estimate crosses a whole second (a chip restarts its second
    at the write), so it starts right to within the estimate's width."""
    now = rtc.trusted_now(conn, read_clock(), max_age_ns=TRUSTED_MAX_AGE_NS)
    mid = (now["lo_ns"] + now["hi_ns"]) // 2
    target = mid // S + 2
    time.sleep((target * S - mid) / 1e9)
    drv.set(target)
