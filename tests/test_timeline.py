"""terminal/timing/timeline.py on a real punch log: samples, intervals, re-anchoring, contradictions, sanity states.

Readings are synthetic ClockReadings (a chosen boot, raw clock and wall clock) so the true time is known;
everything else (SQLite, migrations, the punch log, the estimation) is the real code.
"""

from __future__ import annotations

import email.utils
import json

import pytest

from sync.device import time_client
from terminal.log import punchlog
from terminal.timing import timeline
from terminal.timing.clock import TIME_ERROR, ClockReading

S = 1_000_000_000
H = 3600 * S
T0 = 1_795_000_000 * S  # true UTC when the simulated boot's raw clock reads 0


def reading(t: int, *, boot: str = "boot-a", wall_offset: int = 0, rate_ppm: float = 0.0,
            synced: bool = False, maxerror_us: int = 16_000_000) -> ClockReading:
    m = int((t - T0) * (1 + rate_ppm * 1e-6))
    return ClockReading(boot, m, m, t + wall_offset, 0 if synced else TIME_ERROR, maxerror_us)


@pytest.fixture
def log(tmp_path):
    punchlog.init(tmp_path / "state")
    with punchlog.PunchLog(tmp_path / "state") as lg:
        yield lg


def punch(log, t: int, **kw) -> dict:
    return log.append("emp1", "pin", reading=reading(t, **kw))


def sample(log, t: int, *, error_s: float = 0.0, unc_ns: int = 5_000_000, source: str = "server-signed",
           rtt_ns: int = 20_000_000, trusted_by: str | None = None, **kw) -> dict:
    sent = reading(t - rtt_ns, **kw)
    return timeline.record_sample(log.conn, source=source, reading=reading(t, **kw), sent=sent,
                                  utc_ns=t - rtt_ns // 2 + int(error_s * S), uncertainty_ns=unc_ns,
                                  trusted_by=trusted_by)


VOUCHED = "[zk] trust_set_time"  # the operator trusts this LAN peer's time: its samples take part


def bounds(rec: dict) -> tuple[int, int]:
    return timeline.parse_iso(rec["earliest"]), timeline.parse_iso(rec["latest"])


def test_one_sample_re_anchors_earlier_punches_of_its_boot_with_the_drift_allowance(log):
    p1 = punch(log, T0 + 1 * H, wall_offset=-3 * H)  # the wall clock is 3 h behind
    p2 = punch(log, T0 + 5 * H, wall_offset=-3 * H)
    before = timeline.annotate(log.conn, [p1, p2])
    assert before[0]["earliest"] is None and "no-time-sample" in before[0]["flags"]

    s = sample(log, T0 + 9 * H, wall_offset=-3 * H, rate_ppm=0)
    assert s["status"] == "accepted" and s["source"] == "server-signed"
    a1, a2 = timeline.annotate(log.conn, [p1, p2])
    for rec, true in ((a1, T0 + 1 * H), (a2, T0 + 5 * H)):
        lo, hi = bounds(rec)
        assert lo <= true <= hi
        assert rec["basis"] == "server-signed" and "wall-clock-off" in rec["flags"]
        assert abs(timeline.parse_iso(rec["utc"]) - true) < 20_000_000
    # one sample: half-width = uncertainty + RTT/2 + 50 ppm × distance to the sample (8 h for p1)
    lo, hi = bounds(a1)
    expected_half = 5_000_000 + 10_000_000 + 50e-6 * 8 * H
    assert abs((hi - lo) / 2 - expected_half) < 2_000_000
    # the derived times were stored beside the punches; the punches and the chain are untouched
    stored = dict(log.conn.execute("SELECT seq, utc FROM punch_times").fetchall())
    assert stored == {1: a1["utc"], 2: a2["utc"]}
    assert log.verify() == []
    assert log.get(1)["realtime_ns"] == p1["realtime_ns"]


def test_two_samples_measure_the_drift_and_narrow_the_interval(log):
    p = punch(log, T0 + 12 * H, rate_ppm=40)
    sample(log, T0 + 4 * H, rate_ppm=40)
    one = timeline.annotate(log.conn, [p])[0]
    sample(log, T0 + 20 * H, rate_ppm=40)
    two = timeline.annotate(log.conn, [p])[0]
    lo1, hi1 = bounds(one)
    lo2, hi2 = bounds(two)
    assert lo2 <= T0 + 12 * H <= hi2
    assert hi2 - lo2 < (hi1 - lo1) / 3, "measuring the drift must shrink the interval"
    assert hi2 - lo2 <= 2 * S
    st = timeline.status(log.conn, reading=reading(T0 + 21 * H, rate_ppm=40))
    assert st["drift"]["measured"] and abs(st["drift"]["ppm"] + 40) < 6  # raw runs fast: UTC rate −40 ppm


def test_a_contradicting_sample_is_kept_as_evidence_raises_the_alarm_and_does_not_move_the_estimate(log):
    p = punch(log, T0 + 2 * H)
    for h in (1, 3, 5):
        sample(log, T0 + h * H)
    before = timeline.annotate(log.conn, [p])[0]
    liar = sample(log, T0 + 6 * H, error_s=90, source="zk-settime", unc_ns=2 * S, trusted_by=VOUCHED)
    assert liar["status"] == "contradicting"
    after = timeline.annotate(log.conn, [p])[0]
    assert (after["earliest"], after["latest"]) == (before["earliest"], before["latest"])
    assert "sample-contradiction" in after["flags"]
    st = timeline.status(log.conn, reading=reading(T0 + 7 * H))
    assert st["contradicting_samples"] == 1 and st["ok"] is False
    assert timeline.samples(log.conn, sample_id=liar["id"])[0]["evidence"] == {"trusted_by": VOUCHED}  # kept


@pytest.mark.parametrize("source", timeline.CLAIM_SOURCES)
def test_an_unvouched_lan_time_is_a_claim_that_never_verifies_or_moves_a_punch(log, source):
    """ZK SetTime with the default key 0, or an ADMS DateTime: anyone on the LAN can send one. Two hours
    back, it is stored as a claim: the time stays "not verified" and no punch moves."""
    p = punch(log, T0 + 1 * H)
    before = timeline.annotate(log.conn, [p])[0]
    claim = sample(log, T0 + 2 * H, error_s=-2 * 3600, source=source, unc_ns=2 * S)
    assert claim["status"] == "claim"
    now = timeline.now(log.conn, reading=reading(T0 + 2 * H))
    assert now["verified"] is False and now["state"] == "unverified" and now["basis"] != source
    assert timeline.annotate(log.conn, [p])[0] == before
    st = timeline.status(log.conn, reading=reading(T0 + 2 * H))
    assert st["time_claims"] == 1 and st["ok"] is False
    # a claim stored as an ordinary sample by an older version is set aside as well, and re-marked
    log.conn.execute("UPDATE time_samples SET status = 'accepted' WHERE id = ?", (claim["id"],))
    assert timeline.now(log.conn, reading=reading(T0 + 2 * H))["verified"] is False
    sample(log, T0 + 3 * H)  # an honest sample: verified, and from its own source only
    now = timeline.now(log.conn, reading=reading(T0 + 3 * H))
    assert now["verified"] is True and now["basis"] == "server-signed"
    assert timeline.samples(log.conn, sample_id=claim["id"])[0]["status"] == "claim"


def test_a_liar_first_is_outvoted_when_honest_samples_arrive(log):
    p = punch(log, T0 + 1 * H)
    liar = sample(log, T0 + 2 * H, error_s=-300, source="adms-datetime", unc_ns=S, trusted_by=VOUCHED)
    wrong = timeline.annotate(log.conn, [p])[0]
    assert not bounds(wrong)[0] <= T0 + H <= bounds(wrong)[1]  # alone, a liar cannot be detected
    sample(log, T0 + 3 * H)
    sample(log, T0 + 4 * H)
    right = timeline.annotate(log.conn, [p])[0]
    assert bounds(right)[0] <= T0 + H <= bounds(right)[1]
    assert timeline.samples(log.conn, sample_id=liar["id"])[0]["status"] == "contradicting"
    stored = log.conn.execute("SELECT earliest, latest, revision FROM punch_times WHERE seq = 1").fetchone()
    assert (stored[0], stored[1]) == (right["earliest"], right["latest"]) and stored[2] >= 2


def test_boot_without_sample_is_bounded_by_order_and_flagged_for_review(log):
    sample(log, T0 + 1 * H, boot="boot-1")
    punch(log, T0 + 2 * H, boot="boot-1")
    orphan = punch(log, T0 + 5 * H, boot="boot-2", wall_offset=-T0 + 3600 * S)  # 1970 wall clock
    # boot 3 starts later (its raw clock counts from its own boot at T0 + 8 h) and gets a sample
    late = ClockReading("boot-3", 1 * H, 1 * H, 0, TIME_ERROR, 16_000_000)
    timeline.record_sample(log.conn, source="server-signed", reading=late, utc_ns=T0 + 9 * H,
                           uncertainty_ns=5_000_000)
    rec = timeline.annotate(log.conn, [orphan])[0]
    assert rec["basis"] == "order"
    assert {"no-time-sample", "review", "wall-clock-implausible"} <= set(rec["flags"])
    lo, hi = bounds(rec)
    assert T0 + 2 * H - S <= lo <= T0 + 5 * H <= hi <= T0 + 8 * H + S


def test_sanity_states_wall_clock_1970_is_implausible_and_punches_are_still_recorded(log):
    rec = punch(log, T0, wall_offset=-T0)  # the wall clock says 1970
    assert rec["seq"] == 1
    now = timeline.now(log.conn, reading=reading(T0 + S, wall_offset=-T0))
    assert now["state"] == "implausible" and now["verified"] is False
    assert "build date" in now["message"]
    now = timeline.now(log.conn, reading=reading(T0 + S))
    assert now["state"] == "unverified" and now["verified"] is False
    sample(log, T0 + 2 * S)
    now = timeline.now(log.conn, reading=reading(T0 + 3 * S, wall_offset=-T0))
    assert now["state"] == "verified" and now["verified"] is True
    assert abs(timeline.parse_iso(now["utc"]) - (T0 + 3 * S)) < 20_000_000
    assert now["wall_clock_error_s"] < -1e9


def test_kernel_ntp_is_a_sample_only_while_synchronised(log):
    assert timeline.observe_kernel(log.conn, reading(T0, synced=False)) is None
    s = timeline.observe_kernel(log.conn, reading(T0, synced=True, maxerror_us=40_000))
    assert s["source"] == "kernel-ntp" and s["uncertainty_ns"] == 40_000_000


@pytest.mark.parametrize("kwargs, message", [
    ({"source": "gps-guess"}, "unknown time source"),
    ({"utc_ns": 0}, "before the software's build date"),
    ({"uncertainty_ns": -1}, "outside"),
])
def test_malformed_samples_are_refused_with_a_reason(log, kwargs, message):
    args = {"source": "manual", "reading": reading(T0), "utc_ns": T0, "uncertainty_ns": S, **kwargs}
    with pytest.raises(timeline.TimeSampleError, match=message):
        timeline.record_sample(log.conn, **args)
    assert log.conn.execute("SELECT count(*) FROM time_samples").fetchone()[0] == 0


def test_http_date_sample_is_half_a_second_plus_half_the_round_trip(log):
    p = punch(log, T0 + 10 * S)
    sent, received = reading(T0 + 12 * S), reading(T0 + 12 * S + 200_000_000)
    date = email.utils.formatdate((T0 + 12 * S) // S, usegmt=True)  # "Wed, 18 Nov 2026 11:06:52 GMT"
    kwargs = time_client.sample_from_date_header(date, sent, received)
    assert kwargs["utc_ns"] % S == 500_000_000 and kwargs["uncertainty_ns"] == 500_000_000
    timeline.record_sample(log.conn, **kwargs)
    rec = timeline.annotate(log.conn, [p])[0]
    lo, hi = bounds(rec)
    assert rec["basis"] == "http-date" and lo <= T0 + 10 * S <= hi
    assert 1.19 * S <= hi - lo <= 1.22 * S  # 2 × (0.5 s + 0.1 s) plus the drift allowance over 2 s
    with pytest.raises(ValueError, match="not an HTTP date"):
        time_client.sample_from_date_header("yesterday", sent, received)


def test_pending_times_track_revisions_until_marked_pushed(log):
    punch(log, T0 + 1 * H)
    sample(log, T0 + 2 * H)
    pending = timeline.pending_times(log.conn)
    assert [(t["seq"], t["revision"]) for t in pending] == [(1, 1)]
    timeline.mark_pushed(log.conn, pending)
    assert timeline.pending_times(log.conn) == []
    sample(log, T0 + 3 * H)  # a second sample narrows the interval: a new revision to send
    pending = timeline.pending_times(log.conn)
    assert [(t["seq"], t["revision"]) for t in pending] == [(1, 2)]
    assert isinstance(pending[0]["flags"], list)


def test_annotate_formats_iso_utc_with_milliseconds_and_keeps_the_record(log):
    p = punch(log, T0 + 123_456_789)
    sample(log, T0 + S)
    rec = timeline.annotate(log.conn, [p])[0]
    for key in ("utc", "earliest", "latest"):
        assert rec[key].endswith("Z") and len(rec[key]) == len("2026-11-17T08:53:20.123Z")
    assert {k: rec[k] for k in p} == p
    assert json.dumps(rec)  # JSON-able as the push client sends it


def test_a_reading_without_a_boot_id_cannot_anchor_anything(log):
    unknown = ClockReading("unknown", 5 * S, 5 * S, T0, TIME_ERROR, None)
    with pytest.raises(timeline.TimeSampleError, match="boot id is unknown"):
        timeline.record_sample(log.conn, source="manual", reading=unknown, utc_ns=T0, uncertainty_ns=S)
