"""Punch times that are right and provably so, although the terminal's wall clock is not (contract C2).

A punch stores raw clock readings only (terminal/timing/clock.py). Time samples ("at this raw reading UTC was
X ± u", from the central server's signed time endpoint, an HTTP Date header, the kernel's NTP status, a
ZKTeco/ADMS server's set-time) are stored in `time_samples` and kept forever as evidence. Per boot, the
samples map CLOCK_MONOTONIC_RAW to UTC (terminal/timing/fitting.py: offset, rate error, contradictions); every
punch gets an interval [earliest, latest], a best `utc`, its `basis` and `flags`. A new sample re-anchors
the punches of its boot (and the ordering bounds of boots without samples) in `punch_times`, beside the
punches: raw fields and the hash chain never change.

Punches of a boot with no sample are bounded by order: after everything known from earlier boots, before
the start of any later boot with samples; they carry the flags `no-time-sample` and `review`.

The terminal never sets the system clock. A wall clock before BUILD_DATE or implausibly far ahead puts
the terminal in the "time not verified" state (status, kiosk) while punches are still recorded.

Claims: ZK SetTime and ADMS DateTime come from peers anyone on the office LAN can be (ZK's default comm key
is 0, ADMS is plain HTTP), so a sample from those sources is stored with status `claim`: kept and audited as
evidence, never fitted, never able to make the time "verified" or move a punch. Only a caller that names the
operator's explicit vouching (`trusted_by`, e.g. "[zk] trust_set_time") records one as a sample.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass

from terminal.timing import clock, fitting
from terminal.timing.clock import ClockReading

SOURCES = ("server-signed", "http-date", "kernel-ntp", "zk-settime", "adms-datetime", "manual", "rtc", "gps")
# sources an unauthenticated LAN peer can speak for: claims unless an operator vouched (trusted_by)
CLAIM_SOURCES = ("zk-settime", "adms-datetime")
CLAIM = "claim"
BUILD_DATE_NS = int(dt.datetime(2026, 9, 1, tzinfo=dt.UTC).timestamp()) * 10**9
PLAUSIBLE_AHEAD_NS = 15 * 365 * 86400 * 10**9  # a wall clock beyond the build date + 15 years is not believed
WALL_CLOCK_OFF_NS = 60 * 10**9  # punches whose wall clock was this far from the estimate get a flag
MAX_UNCERTAINTY_NS = 3600 * 10**9  # a sample vaguer than an hour tells us nothing worth storing
BATCH = 2000


@dataclass(frozen=True)
class Params:
    drift_bound_ppm: float = 50.0  # rate error assumed for a boot until its samples measure it
    wander_ppm: float = 5.0  # how far the rate may wander (temperature) around its measured value


DEFAULT_PARAMS = Params()


class TimeSampleError(ValueError):
    """A sample that cannot be stored (wrong source, impossible readings); the message says why."""


# -- samples -----------------------------------------------------------------------------------------------


def record_sample(conn: sqlite3.Connection, *, source: str, reading: ClockReading, utc_ns: int,
                  uncertainty_ns: int, evidence: dict | None = None, sent: ClockReading | None = None,
                  params: Params = DEFAULT_PARAMS, trusted_by: str | None = None) -> dict:
    """Store "at local reading `reading`, UTC was utc_ns ± uncertainty_ns" and re-anchor its boot.

    With `sent` (round-trip samples), the remote stamped utc_ns at some instant between `sent` and
    `reading`: the sample then refers to their midpoint and half the round trip is added to its
    uncertainty. Returns the stored sample with its status after re-anchoring ("accepted" or
    "contradicting"; a contradicting sample is kept as evidence and raises the alarm flag).

    A sample of a CLAIM_SOURCES source without `trusted_by` is stored as a claim (status "claim"): evidence
    only, nothing is re-anchored. `trusted_by` names what vouched for it and is kept in its evidence.
    """
    _check_sample(source, reading, utc_ns, uncertainty_ns, sent)
    evidence = dict(evidence or {})
    if trusted_by:
        evidence["trusted_by"] = trusted_by
    if source in CLAIM_SOURCES and not trusted_by:
        return _record_claim(conn, source, reading, utc_ns, uncertainty_ns, evidence, sent)
    conn.execute("BEGIN IMMEDIATE")
    try:
        head = conn.execute("SELECT coalesce(max(seq), 0) FROM punches").fetchone()[0]
        cur = conn.execute(
            """INSERT INTO time_samples (source, boot_id, sent_monoraw_ns, monoraw_ns, realtime_ns, utc_ns,
               uncertainty_ns, head_seq, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (source, reading.boot_id, sent.monoraw_ns if sent else None, reading.monoraw_ns,
             reading.realtime_ns, int(utc_ns), int(uncertainty_ns), head,
             json.dumps(evidence, sort_keys=True, separators=(",", ":"))),
        )
        sample_id = cur.lastrowid
        _mark_claims(conn)
        fits = _Fits(conn, params)
        _store_statuses(conn, fits)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    _reanchor(conn, fits, reading.boot_id)
    return samples(conn, sample_id=sample_id)[0]


def _record_claim(conn, source, reading, utc_ns, uncertainty_ns, evidence, sent) -> dict:
    """Store a peer's time claim as evidence (status "claim"); the fits never read it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        head = conn.execute("SELECT coalesce(max(seq), 0) FROM punches").fetchone()[0]
        cur = conn.execute(
            """INSERT INTO time_samples (source, boot_id, sent_monoraw_ns, monoraw_ns, realtime_ns, utc_ns,
               uncertainty_ns, head_seq, status, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (source, reading.boot_id, sent.monoraw_ns if sent else None, reading.monoraw_ns,
             reading.realtime_ns, int(utc_ns), int(uncertainty_ns), head, CLAIM,
             json.dumps(evidence, sort_keys=True, separators=(",", ":"))),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return samples(conn, sample_id=cur.lastrowid)[0]


_UNVOUCHED = (f"source IN ({', '.join(repr(s) for s in CLAIM_SOURCES)}) "
              "AND json_extract(evidence, '$.trusted_by') IS NULL")


def _mark_claims(conn: sqlite3.Connection) -> None:
    """Samples a database recorded before claims existed (a ZK/ADMS time without vouching) become claims."""
    conn.execute(f"UPDATE time_samples SET status = '{CLAIM}' WHERE status != '{CLAIM}' AND {_UNVOUCHED}")


def _check_sample(source, reading, utc_ns, uncertainty_ns, sent) -> None:
    if reading.boot_id == "unknown":
        raise TimeSampleError("the boot id is unknown (no /proc/sys/kernel/random/boot_id): a raw clock reading "
                              "cannot be tied to its boot, so it cannot anchor anything")
    if source not in SOURCES:
        raise TimeSampleError(f"unknown time source {source!r}; use one of {', '.join(SOURCES)}")
    if not 0 <= int(uncertainty_ns) <= MAX_UNCERTAINTY_NS:
        raise TimeSampleError(f"uncertainty {uncertainty_ns} ns is outside 0 … {MAX_UNCERTAINTY_NS} ns")
    if not plausible_utc(int(utc_ns)):
        raise TimeSampleError(f"sample time {iso(int(utc_ns))} is before the software's build date or "
                              "implausibly far ahead; the time source is broken or lying")
    if sent is not None:
        if sent.boot_id != reading.boot_id or sent.monoraw_ns > reading.monoraw_ns:
            raise TimeSampleError("the send reading must come from the same boot and precede the receive reading")


def samples(conn: sqlite3.Connection, *, boot_id: str | None = None, sample_id: int | None = None,
            limit: int = 100) -> list[dict]:
    """Stored samples, newest first, with their evidence decoded."""
    where, args = [], []
    if boot_id is not None:
        where.append("boot_id = ?")
        args.append(boot_id)
    if sample_id is not None:
        where.append("id = ?")
        args.append(sample_id)
    sql = "SELECT * FROM time_samples" + (" WHERE " + " AND ".join(where) if where else "")
    cur = conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
    names = [c[0] for c in cur.description]
    out = []
    for r in cur.fetchall():
        d = dict(zip(names, tuple(r), strict=True))
        d["evidence"] = json.loads(d["evidence"])
        d["utc"] = iso(d["utc_ns"])
        out.append(d)
    return out


def _as_fit_sample(row) -> fitting.Sample:
    sent_m, m = row["sent_monoraw_ns"], row["monoraw_ns"]
    if sent_m is None:
        return fitting.Sample(row["id"], row["source"], m, row["utc_ns"], row["uncertainty_ns"])
    rtt = m - sent_m
    return fitting.Sample(row["id"], row["source"], sent_m + rtt // 2, row["utc_ns"],
                          row["uncertainty_ns"] + (rtt + 1) // 2)


# -- per-boot fits -----------------------------------------------------------------------------------------


# claims never take part, also those stored before claims existed (read-only paths cannot re-mark them)
_FITTED = f"status != '{CLAIM}' AND NOT ({_UNVOUCHED})"
_FIT_CACHE: dict[tuple, fitting.BootFit] = {}  # samples are append-only: (db, boot, count, max id) is a version
_FIT_CACHE_MAX = 512


class _Fits:
    """The fits of every boot with samples (cached per database, boot and sample set: never stale)."""

    def __init__(self, conn: sqlite3.Connection, params: Params):
        self.conn, self.params = conn, params
        db = conn.execute("PRAGMA database_list").fetchone()[2]
        rows = conn.execute(f"""SELECT boot_id, count(*), max(id), min(head_seq), max(head_seq) FROM time_samples
                                WHERE {_FITTED} GROUP BY boot_id""").fetchall()
        self.head_range: dict[str, tuple[int, int]] = {}
        self.fits: dict[str, fitting.BootFit] = {}
        for boot, n, max_id, head_lo, head_hi in (tuple(r) for r in rows):
            self.head_range[boot] = (head_lo, head_hi)
            key = (db, boot, n, max_id, params)
            fit = _FIT_CACHE.get(key)
            if fit is None:
                fit = fitting.fit_boot(self._boot_samples(boot), params.drift_bound_ppm, params.wander_ppm)
                if len(_FIT_CACHE) >= _FIT_CACHE_MAX:
                    _FIT_CACHE.clear()
                _FIT_CACHE[key] = fit
            self.fits[boot] = fit
        self._spans: dict[str, dict | None] = {}

    def _boot_samples(self, boot_id: str) -> list[fitting.Sample]:
        names = ("id", "source", "sent_monoraw_ns", "monoraw_ns", "utc_ns", "uncertainty_ns")
        rows = self.conn.execute(f"SELECT {', '.join(names)} FROM time_samples WHERE boot_id = ? AND {_FITTED}",
                                 (boot_id,))
        return [_as_fit_sample(_row(tuple(r), names)) for r in rows]

    def get(self, boot_id: str) -> fitting.BootFit | None:
        fit = self.fits.get(boot_id)
        return fit if fit is not None and fit.anchored else None

    def span(self, boot_id: str) -> dict | None:
        """First/last seq and raw reading of a boot's punches (raw readings grow with seq within a boot)."""
        if boot_id not in self._spans:
            first = self.conn.execute("SELECT seq, monoraw_ns FROM punches WHERE boot_id = ? ORDER BY seq LIMIT 1",
                                      (boot_id,)).fetchone()
            last = self.conn.execute("SELECT seq, monoraw_ns FROM punches WHERE boot_id = ? ORDER BY seq DESC "
                                     "LIMIT 1", (boot_id,)).fetchone()
            self._spans[boot_id] = None if first is None else {
                "min_seq": first[0], "max_seq": last[0], "min_m": first[1], "max_m": last[1]}
        return self._spans[boot_id]

    def order_bounds(self, boot_id: str, seq: int | None) -> tuple[int | None, int | None]:
        """UTC bounds for an event of an unanchored boot from the boots known to come before and after it.
        `seq` is the event's punch seq (None = now, after every punch)."""
        lower, upper = None, None
        for other, fit in self.fits.items():
            if other == boot_id or not fit.anchored:
                continue
            span = self.span(other)
            heads = self.head_range.get(other)
            before = (span is not None and seq is not None and span["min_seq"] < seq) or (
                heads is not None and seq is not None and heads[0] < seq) or seq is None
            after = seq is not None and ((span is not None and span["max_seq"] > seq) or (
                heads is not None and heads[1] >= seq))
            if before and not after:
                last_m = max([s.m_ns for s in fit.accepted] + ([span["max_m"]] if span else []))
                lo = fit.interval(last_m)[0]
                lower = lo if lower is None else max(lower, lo)
            elif after and not before:
                hi = fit.interval(0)[1]  # the later boot started after this event
                upper = hi if upper is None else min(upper, hi)
        return lower, upper


def _row(r, names) -> dict:
    return r if isinstance(r, dict) else {n: r[i] for i, n in enumerate(names)}


# -- punches -----------------------------------------------------------------------------------------------


def annotate(conn: sqlite3.Connection, records: list[dict], *, params: Params = DEFAULT_PARAMS) -> list[dict]:
    """Copies of punch records with `utc`, `earliest`, `latest` (ISO 8601 UTC, ms, 'Z', or None),
    `basis` and `flags` added, computed from every sample stored now."""
    fits = _Fits(conn, params)
    return [{**rec, **_public(_estimate(fits, rec))} for rec in records]


def _estimate(fits: _Fits, rec: dict) -> dict:
    """{utc_ns, earliest_ns, latest_ns, basis, flags} for one punch record."""
    flags: list[str] = []
    wall = rec["realtime_ns"]
    if not plausible_utc(wall):
        flags.append("wall-clock-implausible")
    fit = fits.get(rec["boot_id"])
    if fit is not None:
        lo, hi, best, tightest, conflict = fit.interval(rec["monoraw_ns"])
        flags += fit.flags + (["interval-conflict"] if conflict else [])
        if abs(wall - best) > WALL_CLOCK_OFF_NS:
            flags.append("wall-clock-off")
        return {"utc_ns": best, "earliest_ns": lo, "latest_ns": hi, "basis": tightest.source,
                "flags": _unique(flags)}
    return _order_estimate(fits, rec, wall, flags + ["no-time-sample", "review"])


def _order_estimate(fits: _Fits, rec: dict, wall: int, flags: list[str]) -> dict:
    lower, upper = fits.order_bounds(rec["boot_id"], rec["seq"])
    span = fits.span(rec["boot_id"])
    rho = fits.params.drift_bound_ppm * fitting.PPM
    if span is not None:  # the rest of this boot's punches lie between the bounds too: use the elapsed time
        if lower is not None:
            lower += int((rec["monoraw_ns"] - span["min_m"]) * (1 - rho))
        if upper is not None:
            upper -= int((span["max_m"] - rec["monoraw_ns"]) * (1 - rho))
    if lower is not None and upper is not None and lower > upper:
        flags.append("interval-conflict")
        lower, upper = upper, lower
    if plausible_utc(wall) and (lower is None or wall >= lower) and (upper is None or wall <= upper):
        best = wall  # the unverified wall clock is the best guess while it respects the bounds
    elif lower is not None and upper is not None:
        best = (lower + upper) // 2
    else:
        best = None
    basis = "order" if lower is not None or upper is not None else "none"
    return {"utc_ns": best, "earliest_ns": lower, "latest_ns": upper, "basis": basis, "flags": _unique(flags)}


def _public(est: dict) -> dict:
    return {"utc": iso(est["utc_ns"]), "earliest": iso(est["earliest_ns"]), "latest": iso(est["latest_ns"], up=True),
            "basis": est["basis"], "flags": est["flags"]}


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def reanchor(conn: sqlite3.Connection, *, params: Params = DEFAULT_PARAMS) -> int:
    """Recompute every punch's derived time (e.g. after a change of params). Returns rows changed."""
    return _reanchor(conn, _Fits(conn, params), None)


def _store_statuses(conn: sqlite3.Connection, fits: _Fits) -> None:
    for fit in fits.fits.values():
        for s, status in [(s, "accepted") for s in fit.accepted] + [(s, "contradicting") for s in fit.rejected]:
            conn.execute("UPDATE time_samples SET status = ? WHERE id = ? AND status != ?", (status, s.id, status))


def _reanchor(conn: sqlite3.Connection, fits: _Fits, boot_id: str | None) -> int:
    """Refresh punch_times for the punches of `boot_id` (None = all), of every unanchored boot and those
    without a stored time yet. Computed outside any transaction, written in short ones per batch, so a
    punch never waits long for the write lock; punch_times is derived, so an interrupted run only leaves
    some rows for the next one (annotate() always computes afresh)."""
    anchored = [b for b in fits.fits if fits.get(b) is not None]
    if boot_id is None:
        where, args = "", ()
    else:
        marks = ",".join("?" * len(anchored))
        where = (f" AND (boot_id = ? OR boot_id NOT IN ({marks}) "
                 "OR NOT EXISTS (SELECT 1 FROM punch_times t WHERE t.seq = punches.seq))")
        args = (boot_id, *anchored)
    changed, after = 0, 0
    cols = ("seq", "boot_id", "monoraw_ns", "realtime_ns")
    while True:
        rows = conn.execute(f"SELECT seq, boot_id, monoraw_ns, realtime_ns FROM punches WHERE seq > ?{where} "
                            "ORDER BY seq LIMIT ?", (after, *args, BATCH)).fetchall()
        if not rows:
            return changed
        times = {r[0]: _public(_estimate(fits, _row(tuple(r), cols))) for r in rows}
        changed += _store_times(conn, times)
        after = rows[-1][0]


def _store_times(conn: sqlite3.Connection, times: dict[int, dict]) -> int:
    """Upsert the rows that changed, in one short transaction; a changed row gets a new revision."""
    now_ns = clock.read().realtime_ns
    conn.execute("BEGIN IMMEDIATE")
    try:
        lo, hi = min(times), max(times)
        old = {r[0]: tuple(r[1:]) for r in conn.execute(
            "SELECT seq, utc, earliest, latest, basis, flags FROM punch_times WHERE seq BETWEEN ? AND ?", (lo, hi))}
        rows = []
        for seq, t in times.items():
            new = (t["utc"], t["earliest"], t["latest"], t["basis"], json.dumps(t["flags"]))
            if old.get(seq) != new:
                rows.append((seq, *new, now_ns))
        conn.executemany(
            """INSERT INTO punch_times (seq, utc, earliest, latest, basis, flags, computed_realtime_ns)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (seq) DO UPDATE SET utc = excluded.utc, earliest = excluded.earliest,
                 latest = excluded.latest, basis = excluded.basis, flags = excluded.flags,
                 revision = punch_times.revision + 1, computed_realtime_ns = excluded.computed_realtime_ns""",
            rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(rows)


def pending_times(conn: sqlite3.Connection, limit: int = 500, up_to_seq: int | None = None) -> list[dict]:
    """Derived punch times the central server has not seen in their current revision (C3), oldest first;
    with `up_to_seq`, only those of punches it already stored."""
    rows = conn.execute(
        """SELECT seq, utc, earliest, latest, basis, flags, revision FROM punch_times
           WHERE revision > pushed_revision AND seq <= ? ORDER BY seq LIMIT ?""",
        (2**62 if up_to_seq is None else up_to_seq, limit)
    ).fetchall()
    names = ("seq", "utc", "earliest", "latest", "basis", "flags", "revision")
    return [{**(d := _row(tuple(r), names)), "flags": json.loads(d["flags"])} for r in rows]


def stored_times(conn: sqlite3.Connection, seqs: list[int]) -> dict[int, dict]:
    """seq -> the punch_times row (utc, earliest, latest, basis, flags) of these punches, where one exists."""
    out = {}
    for i in range(0, len(seqs), 500):
        part = seqs[i:i + 500]
        for r in conn.execute(f"SELECT seq, utc, earliest, latest, basis, flags FROM punch_times WHERE seq IN "
                              f"({','.join('?' * len(part))})", part):
            out[r[0]] = {"utc": r[1], "earliest": r[2], "latest": r[3], "basis": r[4], "flags": json.loads(r[5])}
    return out


def mark_pushed(conn: sqlite3.Connection, times: list[dict]) -> None:
    """Record that the server stored these revisions (one transaction; a crash only causes a resend)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "UPDATE punch_times SET pushed_revision = max(pushed_revision, ?) WHERE seq = ?",
            [(t["revision"], t["seq"]) for t in times],
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# -- now, sanity and status --------------------------------------------------------------------------------


def plausible_utc(ns: int) -> bool:
    return BUILD_DATE_NS <= ns <= BUILD_DATE_NS + PLAUSIBLE_AHEAD_NS


def now(conn: sqlite3.Connection, *, reading: ClockReading | None = None,
        params: Params = DEFAULT_PARAMS) -> dict:
    """The best knowledge of UTC now: {utc, earliest, latest, basis, verified, state, flags, ...}."""
    reading = reading or clock.read()
    fits = _Fits(conn, params)
    fit = fits.get(reading.boot_id)
    wall_ok = plausible_utc(reading.realtime_ns)
    flags = [] if wall_ok else ["wall-clock-implausible"]
    if fit is not None:
        lo, hi, best, tightest, conflict = fit.interval(reading.monoraw_ns)
        flags += fit.flags + (["interval-conflict"] if conflict else [])
        est = {"utc_ns": best, "earliest_ns": lo, "latest_ns": hi, "basis": tightest.source}
        verified = True  # contradicting samples are set aside; they raise the alarm in status, not here
    elif reading.kernel_synced and reading.maxerror_us is not None and wall_ok:
        err = reading.maxerror_us * 1000
        est = {"utc_ns": reading.realtime_ns, "earliest_ns": reading.realtime_ns - err,
               "latest_ns": reading.realtime_ns + err, "basis": "kernel-ntp"}
        verified = True
    else:
        lower, upper = fits.order_bounds(reading.boot_id, None)
        best = reading.realtime_ns if wall_ok and (lower is None or reading.realtime_ns >= lower) else lower
        est = {"utc_ns": best, "earliest_ns": lower, "latest_ns": upper, "basis": "wall-clock" if best else "none"}
        verified = False
        flags.append("no-time-sample")
    state = "verified" if verified else ("implausible" if not wall_ok else "unverified")
    wall_error = None if est["utc_ns"] is None else (reading.realtime_ns - est["utc_ns"]) / 1e9
    return {**_public({**est, "flags": _unique(flags)}), "verified": verified, "state": state,
            "message": STATE_MESSAGES[state], "wall_clock": iso(reading.realtime_ns),
            "wall_clock_error_s": wall_error,
            "uncertainty_s": None if est["earliest_ns"] is None or est["latest_ns"] is None
            else (est["latest_ns"] - est["earliest_ns"]) / 2e9}


STATE_MESSAGES = {
    "verified": "time verified",
    "unverified": "time not verified: no time sample since this boot (waiting for the central server)",
    "implausible": "time not verified: the wall clock is before the software's build date or implausibly far "
                   "ahead; punches are recorded and will be re-anchored when the central server is reached",
}


def status(conn: sqlite3.Connection, *, reading: ClockReading | None = None,
           params: Params = DEFAULT_PARAMS) -> dict:
    """`presensi time status`: now, drift in ppm, samples of this boot, uncertainty, alarms."""
    reading = reading or clock.read()
    current = now(conn, reading=reading, params=params)
    fit = _Fits(conn, params).fits.get(reading.boot_id)
    contradicting = conn.execute("SELECT count(*) FROM time_samples WHERE status = 'contradicting'").fetchone()[0]
    drift = None
    if fit is not None and fit.anchored:
        drift = {"ppm": round(fit.rate_hat / fitting.PPM, 3), "measured": fit.rate_measured,
                 "bound_ppm": [round(fit.rate_lo / fitting.PPM, 3), round(fit.rate_hi / fitting.PPM, 3)]}
    boot_samples = samples(conn, boot_id=reading.boot_id, limit=20)
    return {
        "ok": current["verified"] and contradicting == 0, "now": current, "boot_id": reading.boot_id,
        "drift": drift, "samples_this_boot": len(boot_samples), "samples_total": _count(conn, "time_samples"),
        "contradicting_samples": contradicting, "time_claims": _count(conn, "time_samples", f"status = '{CLAIM}'"),
        "recent_samples": [_brief(s) for s in boot_samples[:8]],
        "unanchored_punches": _count(conn, "punch_times", "flags LIKE '%no-time-sample%'"),
        # the central server signed these while its own kernel said it was not NTP-synchronised
        "server_clock_unsynced_samples": sum(1 for s in boot_samples
                                             if s["evidence"].get("server_clock_synced") is False),
        "kernel": {"synced": reading.kernel_synced, "maxerror_us": reading.maxerror_us},
    }


def _count(conn, table: str, where: str = "1") -> int:
    return conn.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]


def _brief(s: dict) -> dict:
    return {k: s[k] for k in ("id", "source", "utc", "uncertainty_ns", "status")} | {
        "round_trip_ms": None if s["sent_monoraw_ns"] is None else (s["monoraw_ns"] - s["sent_monoraw_ns"]) / 1e6}


def observe_kernel(conn: sqlite3.Connection, reading: ClockReading | None = None,
                   params: Params = DEFAULT_PARAMS) -> dict | None:
    """Record the kernel's NTP view as a sample, only while it says it is synchronised (adjtimex maxerror)."""
    reading = reading or clock.read()
    if not reading.kernel_synced or reading.maxerror_us is None or not plausible_utc(reading.realtime_ns):
        return None
    return record_sample(conn, source="kernel-ntp", reading=reading, utc_ns=reading.realtime_ns,
                         uncertainty_ns=reading.maxerror_us * 1000, params=params,
                         evidence={"timex_status": reading.timex_status, "maxerror_us": reading.maxerror_us})


def iso(ns: int | None, *, up: bool = False) -> str | None:
    """ISO 8601 UTC with milliseconds; truncated, or rounded up with up=True (so a latest bound stays one)."""
    if ns is None:
        return None
    if up:
        ns = -(-ns // 1_000_000) * 1_000_000
    t = dt.datetime.fromtimestamp(ns // 10**9, dt.UTC).replace(microsecond=(ns % 10**9) // 1000)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> int:
    """ns since the epoch from an ISO 8601 UTC string as written by iso()."""
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(t.timestamp()) * 10**9 + t.microsecond * 1000
