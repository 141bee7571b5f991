"""Simulation harness for punch times: synthetic clocks drive the REAL estimation code.

Each scenario has a true timeline (UTC, the simulation's truth) and a device whose raw monotonic clock runs
at its own rate (crystal error, with a daily temperature wander), whose wall clock is wrong in the
scenario's way (1970 at boot, days behind, stepped by hand), and which boots, punches and takes time samples
(signed server exchanges with asymmetric network delays, HTTP Date headers, a lying ZK server). Punches go
through the real punch log (PunchLog.append with the synthetic readings), samples through
terminal.timing.timeline.record_sample (built by sync.device.time_client's own sample_from_answer and
sample_from_date_header), and every check reads terminal.timing.timeline.annotate / now and the stored punch_times.

Checked in every scenario, after every sample (re-anchoring) and at the end: each punch's true time lies
inside [earliest, latest]; the stored punch_times equal annotate(); when a boot's drift is measured (two or
more accepted samples) and a same-boot sample is within 8 h, the interval is at most 2 s wide (crystals
within 50 ppm).

Offline offices (issue 15): a battery-backed RTC with its own drift (within its rating), calibrated and set
after the install day's signed samples through terminal.timing.rtc exactly as the daemon's time_sources job
does, then read as a sample at every boot after a daily power cut and hourly; GPS fixes through
terminal.timing.gps (fix time on the second, report 50-900 ms later); an RTC whose battery dies (it reads
2000-01-01: refused, those boots are bounded by order only until a technician's visit sets it again); ZK
SetTime and ADMS DateTime claims, which never calibrate the RTC. Checked as above, plus: every RTC-anchored
interval is at most as wide as the drift rating allows (2 × (1 s resolution at calibration + 1 s now +
rating × time since calibration) + the monotonic drift bound over an hour).

Run: python bench/time_sim.py [--scenario NAME] [--days N] [--office-days N] — prints one JSON document with
interval widths per scenario (tests/test_time_sim.py runs the same scenarios, shorter).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync.device import time_client  # noqa: E402
from terminal.app import timesources  # noqa: E402
from terminal.log import punchlog  # noqa: E402
from terminal.timing import gps, rtc, timeline  # noqa: E402
from terminal.timing.clock import TIME_ERROR, ClockReading  # noqa: E402

S = 1_000_000_000
H = 3600 * S
DAY = 24 * H
T0 = 1_795_000_000 * S  # 2026-11-17: the true start of every scenario
SERVER_HOLD = 300_000  # ns between the server's t2 and t3
WANDER_AMPLITUDE_PPM = 2.0  # daily temperature wander of the crystal


@dataclass
class Boot:
    boot_id: str
    start: int  # true UTC at boot
    rate_ppm: float  # raw clock runs fast by this much
    wall_at_boot: int  # what the wall clock said at boot
    wall_steps: list[tuple[int, int]] = field(default_factory=list)  # (true time, step ns) applied by a person

    def monoraw(self, t: int) -> int:
        """Raw monotonic ns at true time t: (1 + rate) per ns plus a daily sinusoidal wander."""
        el = t - self.start
        wander = WANDER_AMPLITUDE_PPM * 1e-6 * DAY / (2 * math.pi) * (1 - math.cos(2 * math.pi * el / DAY))
        return 5 * S + int(el * (1 + self.rate_ppm * 1e-6) + wander)  # the kernel starts counting ~5 s early

    def wall(self, t: int) -> int:
        step = sum(d for when, d in self.wall_steps if when <= t)
        return self.wall_at_boot + (t - self.start) + step

    def reading(self, t: int) -> ClockReading:
        m = self.monoraw(t)
        return ClockReading(self.boot_id, m, m, self.wall(t), TIME_ERROR, 16_000_000)


@dataclass
class Scenario:
    name: str
    description: str
    boots: list[dict]  # each: start offset, duration, rate_ppm, wall, samples (list of kinds), ...
    drift_bound_ppm: float = 50.0
    liar_at: list[int] = field(default_factory=list)  # true offsets of lying ZK samples
    liar_error_s: float = 90.0
    delays: str = "symmetric"  # or "asymmetric"
    sample_every_h: float = 3.0
    sample_kind: str = "server-signed"  # or "http-date"
    rtc: dict | None = None  # offline office: rate_ppm (true), rating_ppm, offset_s (at install), dies_at_boot
    gps: bool = False  # offline office with a GPS receiver
    claims: list[tuple[str, int, float]] = field(default_factory=list)  # (source, after boot, error s) per boot


def daily_power_cuts(days: int, network_boots: tuple[int, ...] = (0,), outage_h: float = 1.0) -> list[dict]:
    """One boot a day, each ended by a power cut of `outage_h`; only `network_boots` reach the central server
    (the install day, a technician's visit). The wall clock at boot is whatever; samples never use it."""
    out = []
    for k in range(days):
        at = k * DAY + (int(outage_h * H) if k else 0)
        out.append(dict(at=at, dur=DAY - int(outage_h * H), rate=[23.0, -17.0, 8.0][k % 3], wall="-3d",
                        samples=k in network_boots))
    return out


def offline_scenarios(office_days: int) -> list[Scenario]:
    n = max(int(office_days), 4)
    return [
        Scenario("rtc_office_30d_power_cuts", f"RTC only (DS3231, rated 2 ppm, runs +1.8 ppm): network on the "
                 f"install day only, then {n} days offline with a daily 1 h power cut",
                 daily_power_cuts(n), rtc=dict(rate_ppm=1.8, rating_ppm=2.0, offset_s=37.4)),
        Scenario("rtc_office_50ppm_crystal", f"RTC only on a plain crystal (rated 50 ppm, runs -35 ppm), {n} days "
                 "offline with daily power cuts", daily_power_cuts(n),
                 rtc=dict(rate_ppm=-35.0, rating_ppm=50.0, offset_s=-12.0)),
        Scenario("gps_only", f"GPS only (no central server ever): {n} days with daily power cuts",
                 daily_power_cuts(n, network_boots=()), gps=True),
        Scenario("rtc_lost_dead_battery", "the RTC battery dies at the day-2 power cut (it reads 2000-01-01): "
                 "refused with a fault, boots bounded by order only, until a technician's visit (network) on day 4 "
                 "sets it again", daily_power_cuts(n, network_boots=(0, 4)),
                 rtc=dict(rate_ppm=1.8, rating_ppm=2.0, offset_s=5.0, dies_at_boot=2)),
        Scenario("zk_adms_claims_ignored", "RTC office whose ZK server sets the time 90 s ahead and ADMS server 120 s "
                 "behind at every offline boot: the claims never calibrate or set the RTC and are outvoted",
                 daily_power_cuts(n), rtc=dict(rate_ppm=1.8, rating_ppm=2.0, offset_s=0.0),
                 claims=[("zk-settime", 3 * 60 * S, 90.0), ("adms-datetime", 3 * H, -120.0)]),
    ]


def scenarios(days: float, office_days: int = 30) -> list[Scenario]:
    d = int(days * DAY)
    return offline_scenarios(office_days) + [
        Scenario("boot_1970", "no RTC: the wall clock starts at 1970-01-01 at boot",
                 [dict(at=0, dur=d, rate=23.0, wall="1970")]),
        Scenario("boot_3_days_behind", "fake-hwclock restored a time 3 days old",
                 [dict(at=0, dur=d, rate=-17.0, wall="-3d")]),
        Scenario("wall_stepped", "someone steps the wall clock +1 h, later -1 h, while running",
                 [dict(at=0, dur=d, rate=31.0, wall="ok", steps=[(d // 3, H), (2 * d // 3, -2 * H)])]),
        Scenario("drift_plus_100ppm", "crystal 100 ppm fast for 7 days (drift bound configured 100 ppm)",
                 [dict(at=0, dur=max(d, 7 * DAY), rate=100.0, wall="ok")], drift_bound_ppm=100.0),
        Scenario("drift_minus_100ppm", "crystal 100 ppm slow for 7 days (drift bound configured 100 ppm)",
                 [dict(at=0, dur=max(d, 7 * DAY), rate=-100.0, wall="ok")], drift_bound_ppm=100.0),
        Scenario("sparse_samples_50ppm", "one sample every 7 hours, crystal 50 ppm fast",
                 [dict(at=0, dur=d, rate=50.0, wall="ok")], sample_every_h=7.0),
        Scenario("single_sample", "one sample only, 4 h after boot: offset plus the 50 ppm drift allowance",
                 [dict(at=0, dur=min(d, DAY), rate=30.0, wall="-3d")], sample_every_h=1000.0),
        Scenario("asymmetric_delays", "uplink 5 ms, downlink 20–600 ms: the midpoint is biased",
                 [dict(at=0, dur=d, rate=-42.0, wall="ok")], delays="asymmetric"),
        Scenario("http_date_only", "no signed endpoint: HTTP Date headers only (±0.5 s + RTT/2)",
                 [dict(at=0, dur=d, rate=12.0, wall="-3d")], sample_kind="http-date"),
        Scenario("lying_server", "a ZK server sets the time 90 s wrong: right after the first signed sample "
                 "(one against one: the signed one is trusted) and mid-boot (outvoted)",
                 [dict(at=0, dur=d, rate=20.0, wall="ok")], liar_at=[50 * 60 * S, d // 2 + 17 * 60 * S]),
        Scenario("boot_without_sample", "boot 2 (power cut, no network) never gets a sample",
                 [dict(at=0, dur=d // 2, rate=15.0, wall="ok"),
                  dict(at=d // 2 + 2 * H, dur=6 * H, rate=15.0, wall="-1h", samples=False),
                  dict(at=d // 2 + 9 * H, dur=d // 2, rate=15.0, wall="1970")]),
    ]


@dataclass
class SimRtc:
    """A battery-backed RTC chip: counts true time at its own rate; set() restarts its second (DS3231)."""

    rate_ppm: float
    offset_ns: int  # chip − truth at t_ref
    t_ref: int
    dead_since: int | None = None  # flat battery: restarted at 2000-01-01 at this power-up

    def read(self, t: int) -> int:
        if self.dead_since is not None and t >= self.dead_since:
            return rtc_dead_epoch() + (t - self.dead_since) // S
        return (t + self.offset_ns + int((t - self.t_ref) * self.rate_ppm * 1e-6)) // S

    def set(self, epoch_s: int, t: int) -> None:
        self.offset_ns, self.t_ref, self.dead_since = epoch_s * S - t, t, None

    def error_s(self, t: int) -> float:
        return (self.read(t) * S - t) / S


def rtc_dead_epoch() -> int:
    from drivers.rtc.fake import DEAD_BATTERY_EPOCH

    return DEAD_BATTERY_EPOCH


class Network:
    def __init__(self, rng: random.Random, kind: str):
        self.rng, self.kind = rng, kind

    def delays(self) -> tuple[int, int]:
        if self.kind == "asymmetric":
            return 5_000_000, int(self.rng.uniform(20, 600) * 1e6)
        base = self.rng.uniform(2, 40) * 1e6
        return int(base), int(base * self.rng.uniform(0.8, 1.2))


class Sim:
    def __init__(self, sc: Scenario, state_dir: Path, seed: int = 1):
        self.sc, self.rng = sc, random.Random(f"{seed}-{sc.name}")
        self.params = timeline.Params(drift_bound_ppm=sc.drift_bound_ppm)
        punchlog.init(state_dir)
        self.log = punchlog.PunchLog(state_dir)
        self.conn = self.log.conn
        self.net = Network(self.rng, sc.delays)
        self.truth: dict[int, int] = {}  # seq -> true UTC
        self.boot_of: dict[int, Boot] = {}
        self.violations: list[dict] = []
        self.checks = 0
        self.last_anchor_head = 0  # punches up to here must have a stored (re-anchored) time
        self.sample_times: dict[str, list[int]] = {}  # boot_id -> true times of accepted-intended samples
        self.state_dir = state_dir
        self.chip = None if sc.rtc is None else SimRtc(sc.rtc["rate_ppm"], int(sc.rtc["offset_s"] * S), T0)
        self.calibrations: list[dict] = []
        self.rtc_refused: dict[str, int] = {}
        self.rtc_samples = 0
        self.gps_samples = 0

    def make_boot(self, i: int, spec: dict) -> Boot:
        start = T0 + spec["at"]
        wall = {"1970": 0, "-3d": start - 3 * DAY, "-1h": start - H, "ok": start}[spec["wall"]]
        return Boot(f"boot-{self.sc.name}-{i}", start, spec["rate"], wall, [(start + a, b) for a, b in
                                                                            spec.get("steps", [])])

    def events(self) -> list[tuple[int, str, Boot]]:
        out = []
        for i, spec in enumerate(self.sc.boots):
            boot = self.make_boot(i, spec)
            end = boot.start + spec["dur"]
            t = boot.start + 20 * 60 * S  # punches from 20 min after boot, every 25–95 min
            while t < end:
                out.append((t, "punch", boot))
                t += int(self.rng.uniform(25, 95) * 60 * S)
            if spec.get("samples", True):
                t = boot.start + 45 * 60 * S  # network up 45 min after boot: earlier punches get re-anchored
                while t < end:
                    out.append((t, "sample", boot))
                    t += int(self.sc.sample_every_h * H * self.rng.uniform(0.8, 1.2))
            for at in self.sc.liar_at:
                if boot.start + at < end:
                    out.append((boot.start + at, "liar", boot))
            if self.chip is not None and i == self.sc.rtc.get("dies_at_boot"):
                out.append((boot.start, "rtc-dies", boot))
            for kind, first, on in (("rtc", 30 * S, self.chip is not None), ("gps", 75 * S, self.sc.gps)):
                t = boot.start + first  # the daemon reads its sources at start, then hourly
                while on and t < end:
                    out.append((t, kind, boot))
                    t += H + int(self.rng.uniform(0, 120) * S)
            for k, (_, after, _) in enumerate(self.sc.claims):
                # offline boots: on the install day a claim before the first trusted sample is the ZK/ADMS
                # trust rules' matter (claims untrusted by default), not the RTC's
                if i > 0 and boot.start + after < end:
                    out.append((boot.start + after, f"claim:{k}", boot))
        return sorted(out, key=lambda e: e[0])

    def run(self) -> dict:
        for t, kind, boot in self.events():
            if kind == "punch":
                rec = self.log.append(f"emp{len(self.truth) % 40:03d}", "pin", reading=boot.reading(t))
                self.truth[rec["seq"]] = t
                self.boot_of[rec["seq"]] = boot
            elif kind == "sample":
                self.take_sample(t, boot)
                self.check(t, boot)
            elif kind == "liar":
                self.lie(t, boot)
                self.check(t, boot)
            elif kind == "rtc-dies":
                self.chip.dead_since = t
            elif kind == "rtc":
                if self.read_rtc(t, boot):
                    self.check(t, boot)
            elif kind == "gps":
                self.read_gps(t, boot)
                self.check(t, boot)
            else:
                self.claim(t, boot, self.sc.claims[int(kind.split(":")[1])])
                self.check(t, boot)
        return self.final_report()

    # -- the offline sources, as terminal/app/timesources.py reads them ------------------------------------------

    def _rtc_read(self, t: int, boot: Boot) -> tuple[int, ClockReading, ClockReading]:
        return self.chip.read(t + 100_000), boot.reading(t), boot.reading(t + 200_000)

    def read_rtc(self, t: int, boot: Boot) -> bool:
        """The time_sources job: calibrate after a fresh trusted sample, else the RTC as a sample."""
        if rtc.trusted_now(self.conn, boot.reading(t), max_age_ns=timesources.TRUSTED_MAX_AGE_NS) is not None:
            self.calibrate_rtc(t, boot)
            return False
        seconds, before, after = self._rtc_read(t, boot)
        try:
            kwargs = rtc.sample_kwargs(seconds, before, after, rtc.load(self.state_dir), self.sc.rtc["rating_ppm"],
                                       rtc.trusted_floor_ns(self.conn))
        except rtc.RtcRefused as e:
            self.rtc_refused[e.code] = self.rtc_refused.get(e.code, 0) + 1
            return False
        timeline.record_sample(self.conn, params=self.params, **kwargs)
        self.last_anchor_head = self.log.head()[0]
        self.rtc_samples += 1
        return True

    def _measure(self, t: int, boot: Boot, set_rtc: bool) -> rtc.Calibration:
        seconds, before, after = self._rtc_read(t, boot)
        age = timesources.TRUSTED_MAX_AGE_NS
        return rtc.calibrate(seconds, rtc.trusted_now(self.conn, before, max_age_ns=age),
                             rtc.trusted_now(self.conn, after, max_age_ns=age), boot_id=boot.boot_id,
                             set_rtc=set_rtc, set_error=None)

    def calibrate_rtc(self, t: int, boot: Boot) -> None:
        """timesources._calibrate on simulated time: measure; if off by more than a second, set it when the
        trusted estimate crosses a whole second (the daemon sleeps until then) and measure again."""
        if self.chip is None:
            return
        t += S
        cal = self._measure(t, boot, set_rtc=False)
        if not cal.offset_lo_ns <= 0 <= cal.offset_hi_ns:
            now = rtc.trusted_now(self.conn, boot.reading(t), max_age_ns=timesources.TRUSTED_MAX_AGE_NS)
            mid = (now["lo_ns"] + now["hi_ns"]) // 2
            target = mid // S + 2
            t += target * S - mid  # the sleep, on the raw clock (ppm-level differences are within the estimate)
            self.chip.set(target, t)
            cal = self._measure(t + 1_000_000, boot, set_rtc=True)
        rtc.save(self.state_dir, cal)
        self.calibrations.append({"at": timeline.iso(t), "t": t, "source": cal.source, "set": cal.set_rtc,
                                  "chip_error_s": round(self.chip.error_s(t), 3)})

    def read_gps(self, t: int, boot: Boot) -> None:
        """A TPV arrives 50-900 ms after the second of its fix."""
        fix = t // S * S
        arrival = fix + int(self.rng.uniform(0.05, 0.9) * S)
        timeline.record_sample(self.conn, params=self.params, **gps.sample_kwargs(
            timeline.iso(fix), 3, boot.reading(arrival), 1.0))
        self.last_anchor_head = self.log.head()[0]
        self.gps_samples += 1
        self.sample_times.setdefault(boot.boot_id, []).append(arrival)
        if self.chip is not None:
            self.calibrate_rtc(arrival, boot)

    def claim(self, t: int, boot: Boot, spec: tuple[str, int, float]) -> None:
        """A ZK SetTime or ADMS DateTime claim, `error` seconds wrong, whole seconds."""
        source, _, error = spec
        timeline.record_sample(self.conn, source=source, reading=boot.reading(t), utc_ns=(t + int(error * S)) // S * S,
                               uncertainty_ns=2 * S, evidence={"sim": "claim"}, params=self.params)

    def take_sample(self, t: int, boot: Boot) -> None:
        """Six exchanges as fetch_time_sample makes them; the lowest-delay one is recorded."""
        best = None
        for k in range(6):
            up, down = self.net.delays()
            t1 = t + k * 50_000_000
            t2 = t1 + up
            answer = {"t2_ns": t2, "t3_ns": t2 + SERVER_HOLD, "error_bound_ns": 5_000_000}
            sent, received = boot.reading(t1), boot.reading(t2 + SERVER_HOLD + down)
            delay = time_client.exchange_delay(sent, received, answer)
            if best is None or delay < best[0]:
                best = (delay, sent, received, answer, t2)
        _, sent, received, answer, t2 = best
        if self.sc.sample_kind == "http-date":
            date = _http_date(t2)
            kwargs = time_client.sample_from_date_header(date, sent, received)
        else:
            answer = {**answer, **{k: None for k in ("protocol", "nonce", "device_id", "chain_head",
                                                      "server_clock_synced")}, "signature": ""}
            kwargs = time_client.sample_from_answer(sent, received, answer)
        timeline.record_sample(self.conn, params=self.params, **kwargs)
        self.last_anchor_head = self.log.head()[0]
        self.sample_times.setdefault(boot.boot_id, []).append(t)
        self.calibrate_rtc(t, boot)

    def lie(self, t: int, boot: Boot) -> None:
        """A ZK server's set-time command, 90 s wrong (whole seconds, as ZK sends)."""
        utc = (t + int(self.sc.liar_error_s * S)) // S * S
        timeline.record_sample(self.conn, source="zk-settime", reading=boot.reading(t), utc_ns=utc,
                               uncertainty_ns=2 * S, evidence={"sim": "liar"}, params=self.params,
                               trusted_by="[zk] trust_set_time")  # a vouched liar: the hard case

    def check(self, t_now: int, boot_now: Boot) -> None:
        """Every punch so far inside its interval; now() inside its interval."""
        records = list(self.log.records())
        for rec in timeline.annotate(self.conn, records, params=self.params):
            self._check_one(rec["seq"], rec, t_now)
        cur = timeline.now(self.conn, reading=boot_now.reading(t_now), params=self.params)
        self.checks += 1
        if cur["earliest"] and not (timeline.parse_iso(cur["earliest"]) <= t_now <= timeline.parse_iso(cur["latest"])):
            self.violations.append({"what": "now", "at": timeline.iso(t_now), "now": cur})

    def _check_one(self, seq: int, rec: dict, t_now: int | None) -> float | None:
        true = self.truth[seq]
        self.checks += 1
        lo = timeline.parse_iso(rec["earliest"]) if rec["earliest"] else None
        hi = timeline.parse_iso(rec["latest"]) if rec["latest"] else None
        if (lo is not None and true < lo) or (hi is not None and true > hi):
            self.violations.append({"seq": seq, "true": timeline.iso(true), "earliest": rec["earliest"],
                                    "latest": rec["latest"], "basis": rec["basis"], "flags": rec["flags"],
                                    "checked_at": timeline.iso(t_now) if t_now else "end"})
        return None if lo is None or hi is None else (hi - lo) / S

    def final_report(self) -> dict:
        records = list(self.log.records())
        annotated = timeline.annotate(self.conn, records, params=self.params)
        stored = {r[0]: tuple(r[1:]) for r in self.conn.execute(
            "SELECT seq, utc, earliest, latest, basis, flags FROM punch_times")}
        widths, near_widths, unanchored, too_wide, stored_mismatch = [], [], [], [], 0
        accepted = self._accepted_sample_times()
        for rec in annotated:
            w = self._check_one(rec["seq"], rec, None)
            row = stored.get(rec["seq"])
            if row is not None and row != (rec["utc"], rec["earliest"], rec["latest"], rec["basis"],
                                           json.dumps(rec["flags"])):
                stored_mismatch += 1
            if "no-time-sample" in rec["flags"]:
                unanchored.append(w)
                continue
            widths.append(w)
            boot = self.boot_of[rec["seq"]]
            times = accepted.get(boot.boot_id, [])
            near = any(abs(self.truth[rec["seq"]] - t) <= 8 * H for t in times)
            if near and len(times) >= 2 and abs(boot.rate_ppm) <= 50:
                near_widths.append(w)
                if w > 2.0:
                    too_wide.append({"seq": rec["seq"], "width_s": w})
        missing = len([r for r in records if r["seq"] not in stored and r["seq"] <= self.last_anchor_head])
        offline = self._offline_report(annotated) if self.chip is not None or self.sc.gps else {}
        return {**offline,
            "scenario": self.sc.name, "description": self.sc.description, "punches": len(records),
            "samples": self.conn.execute("SELECT count(*) FROM time_samples").fetchone()[0],
            "contradicting_samples": self.conn.execute(
                "SELECT count(*) FROM time_samples WHERE status='contradicting'").fetchone()[0],
            "claims_kept_aside": self.conn.execute(
                "SELECT count(*) FROM time_samples WHERE status=?", (timeline.CLAIM,)).fetchone()[0],
            "drift_bound_ppm": self.sc.drift_bound_ppm, "checks": self.checks,
            "all_inside": not self.violations, "violations": self.violations[:5],
            "width_s": _summary(widths), "width_within_8h_of_sample_s": _summary(near_widths),
            "near_sample_over_2s": too_wide[:5], "unanchored_width_s": _summary(unanchored),
            "unanchored_punches": len(unanchored),
            "stored_equals_annotate": stored_mismatch == 0 and missing == 0,
            "flags": _flag_counts(annotated),
        }

    def _offline_report(self, annotated: list[dict]) -> dict:
        """RTC-anchored widths against what the drift rating allows; calibrations; refusals; GPS samples."""
        out = {"gps_samples": self.gps_samples, "rtc_samples": self.rtc_samples, "rtc_refused": self.rtc_refused}
        if self.chip is None:
            return out
        rating = self.sc.rtc["rating_ppm"] * 1e-6
        mono = self.params.drift_bound_ppm * 1e-6
        widths, over, by_day = [], [], {}
        for rec in annotated:
            if rec["basis"] != "rtc":
                continue
            true = self.truth[rec["seq"]]
            cal_t = max((c["t"] for c in self.calibrations if c["t"] <= true), default=None)
            w = (timeline.parse_iso(rec["latest"]) - timeline.parse_iso(rec["earliest"])) / S
            allowed = 2.0 + 0.2 + 2 * rating * (true - cal_t) / S + 2 * mono * 2 * H / S
            widths.append(w)
            day = (true - T0) // DAY
            by_day[day] = max(by_day.get(day, 0.0), w)
            if w > allowed:
                over.append({"seq": rec["seq"], "width_s": w, "allowed_s": round(allowed, 3)})
        last = max(self.truth.values()) if self.truth else T0
        return {**out, "rtc_rating_ppm": self.sc.rtc["rating_ppm"], "rtc_true_rate_ppm": self.sc.rtc["rate_ppm"],
                "rtc_width_s": _summary(widths), "rtc_max_width_by_day_s": {int(k): round(v, 3) for k, v in
                                                                           sorted(by_day.items())},
                "rtc_over_allowance": over[:5], "rtc_punches": len(widths),
                "calibrations": [{k: c[k] for k in ("at", "source", "set", "chip_error_s")} for c in self.calibrations],
                "calibration_sources": sorted({c["source"] for c in self.calibrations}),
                "chip_error_at_end_s": round(self.chip.error_s(last), 3)}

    def _accepted_sample_times(self) -> dict[str, list[int]]:
        # True times of honest samples (the liar's are never counted as "a sample nearby").
        return self.sample_times


def _http_date(t_ns: int) -> str:
    import email.utils

    return email.utils.formatdate(t_ns // S, usegmt=True)


def _summary(values: list[float | None]) -> dict | None:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    return {"n": len(vals), "min": round(vals[0], 3), "median": round(statistics.median(vals), 3),
            "p95": round(vals[int(0.95 * (len(vals) - 1))], 3), "max": round(vals[-1], 3),
            "unbounded": len(values) - len(vals)}


def _flag_counts(records: list[dict]) -> dict:
    out: dict[str, int] = {}
    for r in records:
        for f in r["flags"]:
            out[f] = out.get(f, 0) + 1
    return out


def run_scenario(sc: Scenario, state_dir: Path, seed: int = 1) -> dict:
    sim = Sim(sc, state_dir, seed)
    try:
        return sim.run()
    finally:
        sim.log.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", action="append", help="run only these scenarios (default: all)")
    p.add_argument("--days", type=float, default=3.0, help="length of each scenario (drift ones: 7 days)")
    p.add_argument("--office-days", type=int, default=30, help="length of the offline-office scenarios")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="time-sim-") as tmp:
        for sc in scenarios(args.days, args.office_days):
            if args.scenario and sc.name not in args.scenario:
                continue
            results.append(run_scenario(sc, Path(tmp) / sc.name, args.seed))
    ok = all(r["all_inside"] and not r["near_sample_over_2s"] and r["stored_equals_annotate"]
             and not r.get("rtc_over_allowance") for r in results)
    print(json.dumps({"ok": ok, "scenarios": results}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
