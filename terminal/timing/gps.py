"""GPS fix times as an offline time source: gpsd's TPV time becomes a sample with an honest error bound.

A receiver reports the UTC of its fix (the start of the second it describes) in sentences sent after that
second began: over a serial line at 9600 baud, a cycle's sentences take a few hundred milliseconds, and gpsd
reports the TPV when the cycle ends. So when a TPV with time t arrives, UTC lies in [t, t + L], L being the
largest latency the receiver and gpsd can add (`[time] gps_max_latency_s`, 1 s by default; the PPS line,
which this does not use, would make it microseconds). gpsd's own `ept` ignores that latency and is not used.

A TPV without a fix (mode < 2) is not a time: receivers report their own battery-backed guess before the
first fix. A fix time before the build date (a GPS week-number rollover in an old receiver) is refused by
the timeline's plausibility check.
"""

from __future__ import annotations

from terminal.timing import timeline
from terminal.timing.clock import ClockReading

S = 1_000_000_000


def sample_kwargs(fix_time: str, mode: int, reading: ClockReading, max_latency_s: float, *,
                  device: str = "") -> dict:
    """record_sample keyword arguments for one TPV that arrived at `reading`."""
    if mode < 2:
        raise timeline.TimeSampleError(f"GPS has no fix (mode {mode}): its time is the receiver's own guess")
    try:
        t = timeline.parse_iso(fix_time)
    except ValueError:
        raise timeline.TimeSampleError(f"gpsd sent an unreadable fix time {fix_time[:40]!r}") from None
    latency = int(max_latency_s * S)
    return {"source": "gps", "reading": reading, "utc_ns": t + latency // 2, "uncertainty_ns": (latency + 1) // 2,
            "evidence": {"fix_time": fix_time, "mode": mode, "device": device, "max_latency_s": max_latency_s}}
