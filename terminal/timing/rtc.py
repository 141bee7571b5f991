"""The hardware RTC as an offline time source: its reading becomes a sample with an honest error bound.

A battery-backed RTC (a DS3231 board: ±2 ppm from 0 to 40 °C, ±3.5 ppm over −40 … 85 °C; the Pi 5's own
RTC on its 32 kHz crystal: tens of ppm) keeps counting through power cuts, when the system clock and the
monotonic clock start again from nothing. What it says is only as good as the last time someone compared it
with a trusted time, so this module keeps a *calibration*: when the boot has a fresh trusted sample (signed
server time, kernel NTP, GPS: never the RTC itself, never a ZK/ADMS claim, never an unsigned Date header), the
RTC is read and its offset from UTC stored (state_dir/rtc-calibration.json), together with whether the daemon
could also set the chip (that needs CAP_SYS_TIME; without it the offset is simply remembered).

Later, an RTC reading s (whole seconds: the chip is somewhere in [s, s + 1)) says
    UTC ∈ [s − o_hi − ρ·E,  s + 1 − o_lo + ρ·E]
where [o_lo, o_hi] is the calibrated offset (RTC − UTC), ρ the rated drift (`[time] rtc_drift_ppm`) and E the
time elapsed since the calibration (measured by the RTC itself, widened by ρ and a second). The bound grows
with E, as the drift rating says, and never assumes a better crystal than rated.

While the kernel is NTP-synchronised it may itself write the system time into the RTC (chrony's `rtcsync`,
the kernel's 11-minute mode), and a daemon without CAP_SYS_TIME cannot stop it: the chip's offset can then
jump to about zero between two calibrations. A calibration taken while the kernel is synchronised therefore
also admits an offset of zero ± (1 s + the kernel's maximum error): nothing is lost when the RTC is already
right (the usual case), and a chip far off is bounded honestly until the next calibration sees it written.

Refused, with a fault, never turned into a weaker sample: a reading before the software's build date (a dead
battery: many chips restart at 2000-01-01), a reading behind the calibration or behind the last trusted time
(the RTC was reset, or someone set it back), and an uncalibrated RTC (nothing bounds its error).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from terminal import durable
from terminal.timing import fitting, timeline
from terminal.timing.clock import ClockReading

S = 1_000_000_000
CALIBRATION_FILE = "rtc-calibration.json"
# Sources good enough to calibrate the RTC from. Deliberately not: rtc (circular), zk-settime/adms-datetime
# (claims from the LAN, see the trust rules), http-date (unsigned), manual.
TRUSTED = ("server-signed", "kernel-ntp", "gps")
ELAPSED_SLACK_S = 1  # the RTC's own measure of elapsed time is off by at most a second of quantisation


class RtcRefused(Exception):
    """An RTC reading that must not become a sample; `code` names the fault, the message says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Calibration:
    rtc_s: int  # what the RTC read at the calibration
    offset_lo_ns: int  # RTC − UTC at that moment lies in [offset_lo_ns, offset_hi_ns]
    offset_hi_ns: int
    utc: str  # the trusted UTC estimate at the calibration (for people)
    source: str  # the trusted sample's source
    sample_id: int | None
    set_rtc: bool  # the daemon also set the chip at this calibration
    set_error: str | None  # why it could not (e.g. no CAP_SYS_TIME), or None
    boot_id: str
    kernel_may_write: bool = False  # the kernel was NTP-synchronised: it may write the RTC itself (rtcsync)

    def as_dict(self) -> dict:
        return asdict(self)


def load(state_dir: Path) -> Calibration | None:
    """The stored calibration, or None (never calibrated, or the record is unreadable: then nothing bounds
    the RTC, and it gives no samples until the next trusted sample calibrates it again)."""
    try:
        data = json.loads((Path(state_dir) / CALIBRATION_FILE).read_text())
        return Calibration(**data)
    except (OSError, ValueError, TypeError):
        return None


def save(state_dir: Path, cal: Calibration) -> None:
    durable.write_atomic(Path(state_dir) / CALIBRATION_FILE,
                         json.dumps(cal.as_dict(), sort_keys=True, indent=1).encode())


# -- a trusted estimate of now, and the floor no later reading may fall under ---------------------------------


def trusted_now(conn: sqlite3.Connection, reading: ClockReading, *, max_age_ns: int,
                drift_bound_ppm: float = timeline.DEFAULT_PARAMS.drift_bound_ppm) -> dict | None:
    """UTC at `reading` from the newest accepted TRUSTED sample of the same boot no older than max_age_ns:
    {lo_ns, hi_ns, source, sample_id}; None without one. Extrapolated with the configured drift bound only,
    so it depends on that one sample, not on the RTC's own samples."""
    marks = ",".join("?" * len(TRUSTED))
    row = conn.execute(
        f"""SELECT id, source, sent_monoraw_ns, monoraw_ns, utc_ns, uncertainty_ns FROM time_samples
            WHERE boot_id = ? AND status = 'accepted' AND source IN ({marks}) AND monoraw_ns <= ?
            ORDER BY monoraw_ns DESC LIMIT 1""", (reading.boot_id, *TRUSTED, reading.monoraw_ns)).fetchone()
    if row is None:
        return None
    sample_id, source, sent_m, m, utc_ns, unc = tuple(row)
    if sent_m is not None:  # the remote stamped utc_ns somewhere between sending and receiving
        half_rtt = (m - sent_m + 1) // 2
        m, unc = sent_m + (m - sent_m) // 2, unc + half_rtt
    age = reading.monoraw_ns - m
    if age > max_age_ns:
        return None
    rho = drift_bound_ppm * fitting.PPM
    return {"lo_ns": utc_ns - unc + age - int(age * rho) - 1, "hi_ns": utc_ns + unc + age + int(age * rho) + 1,
            "source": source, "sample_id": sample_id}


def trusted_floor_ns(conn: sqlite3.Connection) -> int | None:
    """The latest moment known for certain to have passed: the greatest lower bound of an accepted trusted
    sample (of any boot). An RTC reading whose whole interval lies before it is impossible."""
    marks = ",".join("?" * len(TRUSTED))
    row = conn.execute(f"SELECT max(utc_ns - uncertainty_ns) FROM time_samples WHERE status = 'accepted' "
                       f"AND source IN ({marks})", TRUSTED).fetchone()
    return None if row is None else row[0]


# -- calibration and samples ---------------------------------------------------------------------------------


def calibrate(rtc_s: int, trusted_before: dict, trusted_after: dict, *, boot_id: str, set_rtc: bool,
              set_error: str | None, kernel_maxerror_ns: int | None = None) -> Calibration:
    """The RTC read `rtc_s` at some moment between two trusted estimates (taken just before and after the read).
    The chip was somewhere in [rtc_s, rtc_s + 1 s) and UTC in [before.lo, after.hi]. `kernel_maxerror_ns`:
    the kernel is NTP-synchronised with this maximum error, so it may write the RTC itself (see above)."""
    lo, hi = trusted_before["lo_ns"], trusted_after["hi_ns"]
    off_lo, off_hi = int(rtc_s) * S - hi, (int(rtc_s) + 1) * S - lo
    if kernel_maxerror_ns is not None:
        margin = S + int(kernel_maxerror_ns)
        off_lo, off_hi = min(off_lo, -margin), max(off_hi, margin)
    return Calibration(rtc_s=int(rtc_s), offset_lo_ns=off_lo, offset_hi_ns=off_hi,
                       utc=timeline.iso((lo + hi) // 2), source=trusted_after["source"],
                       sample_id=trusted_after["sample_id"], set_rtc=set_rtc, set_error=set_error, boot_id=boot_id,
                       kernel_may_write=kernel_maxerror_ns is not None)


def interval(rtc_s: int, cal: Calibration, drift_ppm: float) -> tuple[int, int]:
    """[earliest, latest] UTC (ns) of the moment the RTC read `rtc_s`, from the calibration and drift rating."""
    rho = drift_ppm * fitting.PPM
    # the chip's own count since the calibration, plus however much of it a write within the offset range
    # (the kernel's, see above) may have removed
    elapsed_ns = (abs(int(rtc_s) - cal.rtc_s) + 1 + ELAPSED_SLACK_S) * S + (cal.offset_hi_ns - cal.offset_lo_ns)
    drift_ns = int(elapsed_ns * (1 + 2 * rho) * rho) + 1
    return int(rtc_s) * S - cal.offset_hi_ns - drift_ns, (int(rtc_s) + 1) * S - cal.offset_lo_ns + drift_ns


def check(rtc_s: int, cal: Calibration | None, drift_ppm: float, floor_ns: int | None) -> tuple[int, int]:
    """The interval of an RTC reading, or RtcRefused saying why it must not be used."""
    if rtc_s * S < timeline.BUILD_DATE_NS:
        raise RtcRefused("rtc-lost-time", f"the RTC reads {timeline.iso(rtc_s * S)}, before this software was "
                         "built: it lost its time (flat or missing battery); replace the battery, the time "
                         "is set again at the next trusted sample")
    if cal is None:
        raise RtcRefused("rtc-uncalibrated", "the RTC has not been compared with a trusted time yet (no "
                         "calibration in the state directory); it gives no samples until the next trusted "
                         "sample (central server, NTP or GPS)")
    written_back = max(0, cal.offset_hi_ns) // S if cal.kernel_may_write else 0  # the kernel may undo an offset
    if rtc_s < cal.rtc_s - ELAPSED_SLACK_S - written_back:
        raise RtcRefused("rtc-went-back", f"the RTC reads {timeline.iso(rtc_s * S)}, before its own calibration "
                         f"at {cal.utc}: it was reset or set back")
    lo, hi = interval(rtc_s, cal, drift_ppm)
    if floor_ns is not None and hi < floor_ns:
        raise RtcRefused("rtc-behind", f"the RTC reads {timeline.iso(rtc_s * S)}, before the last trusted time "
                         f"{timeline.iso(floor_ns)} even with its drift allowance: it was reset or set back")
    if not timeline.plausible_utc(lo) or not timeline.plausible_utc(hi):
        raise RtcRefused("rtc-implausible", f"the RTC reads {timeline.iso(rtc_s * S)}, implausibly far ahead")
    return lo, hi


def sample_kwargs(rtc_s: int, before: ClockReading, after: ClockReading, cal: Calibration, drift_ppm: float,
                  floor_ns: int | None) -> dict:
    """record_sample keyword arguments for one RTC read between two raw clock readings (RtcRefused if unusable)."""
    lo, hi = check(rtc_s, cal, drift_ppm, floor_ns)
    return {"source": "rtc", "reading": after, "sent": before, "utc_ns": (lo + hi) // 2,
            "uncertainty_ns": (hi - lo + 1) // 2,
            "evidence": {"rtc_s": int(rtc_s), "drift_ppm": drift_ppm, "calibrated_rtc_s": cal.rtc_s,
                         "calibrated_utc": cal.utc, "calibration_source": cal.source}}
