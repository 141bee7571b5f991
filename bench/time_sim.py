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

Run: python bench/time_sim.py [--scenario NAME] [--days N] — prints one JSON document with interval widths
per scenario (tests/test_time_sim.py runs the same scenarios, shorter).
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
from terminal.log import punchlog  # noqa: E402
from terminal.timing import timeline  # noqa: E402
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


def scenarios(days: float) -> list[Scenario]:
    d = int(days * DAY)
    return [
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
            else:
                self.lie(t, boot)
                self.check(t, boot)
        return self.final_report()

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
        return {
            "scenario": self.sc.name, "description": self.sc.description, "punches": len(records),
            "samples": self.conn.execute("SELECT count(*) FROM time_samples").fetchone()[0],
            "contradicting_samples": self.conn.execute(
                "SELECT count(*) FROM time_samples WHERE status='contradicting'").fetchone()[0],
            "drift_bound_ppm": self.sc.drift_bound_ppm, "checks": self.checks,
            "all_inside": not self.violations, "violations": self.violations[:5],
            "width_s": _summary(widths), "width_within_8h_of_sample_s": _summary(near_widths),
            "near_sample_over_2s": too_wide[:5], "unanchored_width_s": _summary(unanchored),
            "unanchored_punches": len(unanchored),
            "stored_equals_annotate": stored_mismatch == 0 and missing == 0,
            "flags": _flag_counts(annotated),
        }

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
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="time-sim-") as tmp:
        for sc in scenarios(args.days):
            if args.scenario and sc.name not in args.scenario:
                continue
            results.append(run_scenario(sc, Path(tmp) / sc.name, args.seed))
    ok = all(r["all_inside"] and not r["near_sample_over_2s"] and r["stored_equals_annotate"] for r in results)
    print(json.dumps({"ok": ok, "scenarios": results}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
