"""Kind, lateness and local time are derived values beside the record: computed at the punch, recomputed
when re-anchoring moves the punch's time, delivered and stored beside the record by the central server;
records made before the change keep their hashed kind and stay verifiable."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3

import pytest
import requests
from conftest import presensi
from test_pullapi import AUTH, Served

from sync.server import ingest
from sync.server.storage import open_store
from terminal import config, identity
from terminal.log import chain, punchlog, schema
from terminal.punch import derived
from terminal.punch.service import PunchService, recomputer
from terminal.timing import clock, timeline

S = 10**9
WIB = dt.timezone(dt.timedelta(hours=7))
# masuk 07:00 (due 07:30) - 10:00, pulang 13:00 - 16:00 (due) - 23:00; every day a workday
SCHEDULE = {"workdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "holidays": [],
            "default": {"masuk": "07:00-07:30-10:00", "pulang": "13:00-16:00-23:00"}}
TRUE_LOCAL = dt.datetime(2026, 12, 2, 7, 42, 0, tzinfo=WIB)  # masuk, 12 minutes late


def make_cfg(state):
    return config.from_dict({"device": {"id": "opd-01"}, "paths": {"state_dir": str(state)},
                             "schedule": SCHEDULE})


def reading(boot: str, mono_s: float, wall: dt.datetime) -> clock.ClockReading:
    real = clock.read()
    return dataclasses.replace(real, boot_id=boot, monoraw_ns=int(mono_s * S), boottime_ns=int(mono_s * S),
                               realtime_ns=int(wall.timestamp() * S), timex_status=clock.TIME_ERROR,
                               maxerror_us=16_000_000)


def test_a_punch_on_a_wrong_clock_is_recomputed_when_a_sample_re_anchors_its_boot(tmp_path):
    state = tmp_path / "state"
    punchlog.init(state)
    cfg = make_cfg(state)
    wrong = TRUE_LOCAL + dt.timedelta(hours=8)  # 15:42 on the clock: pulang, 18 minutes early
    with punchlog.PunchLog(state) as log:
        service = PunchService(cfg, log)
        out = service.punch("199001", "pin", details={"operator": "cli", "work_code": "3"},
                            reading=reading("boot-a", 100.0, wrong))
        assert (out.kind, out.time_verified, out.decision["minutes_early"]) == ("pulang", False, 18)
        rec = out.record
        # the hashed record holds what the employee chose; the kind is beside it, outside the hash
        assert rec["kind"] == "" and rec["details"] == {"operator": "cli", "work_code": "3"}
        assert rec["derived"] == {**rec["derived"], "kind": "pulang", "minutes_early": 18, "basis": "wall-clock",
                                  "time_verified": False, "revision": 1, "local_time": "15:42:00"}
        hash_before = rec["hash"]

        # a trusted sample of the same boot 60 s later says the true time: the punch was at 07:42 WIB
        true_then = TRUE_LOCAL.astimezone(dt.UTC)
        timeline.record_sample(log.conn, source="manual", reading=reading("boot-a", 160.0, wrong),
                               utc_ns=int((true_then + dt.timedelta(seconds=60)).timestamp() * S),
                               uncertainty_ns=50_000_000)
        assert recomputer(cfg)(log.conn) == 1
        now = log.get(rec["seq"])
        assert now["hash"] == hash_before and now["kind"] == "" and log.verify() == []
        assert now["derived"] == {**now["derived"], "kind": "masuk", "minutes_late": 12, "minutes_early": 0,
                                  "local_date": "2026-12-02", "local_time": "07:42:00", "basis": "manual",
                                  "computed_from": "utc", "time_verified": True, "revision": 2, "zk_state": 0}
        assert recomputer(cfg)(log.conn) == 0  # nothing changed since: no new revision
        assert derived.pending(log.conn) == [{**now["derived"], "seq": rec["seq"]}]


def test_the_rules_see_recomputed_kinds_of_earlier_punches(tmp_path):
    """Two punches on one wrong boot: after re-anchoring, the second (true 11:00, nearer the masuk window)
    is pulang because the first is now the day's masuk (the recomputation goes in seq order and reads the
    recomputed kinds, not the hashed ones)."""
    state = tmp_path / "state"
    punchlog.init(state)
    cfg = make_cfg(state)
    offset = dt.timedelta(hours=-5)
    first, second = TRUE_LOCAL, TRUE_LOCAL.replace(hour=11, minute=0)
    with punchlog.PunchLog(state) as log:
        service = PunchService(cfg, log)
        a = service.punch("199002", "pin", reading=reading("boot-b", 1000.0, first + offset))
        b = service.punch("199002", "pin", reading=reading("boot-b", 1000.0 + (second - first).total_seconds(),
                                                          second + offset))
        # on the clock 02:42 and 06:00: masuk (nearest), then pulang (masuk already punched), wrong lateness
        assert (a.kind, a.decision["minutes_late"], b.kind, b.decision["minutes_early"]) == ("masuk", 0, "pulang",
                                                                                            600)
        timeline.record_sample(log.conn, source="manual", reading=reading("boot-b", 1000.0, first + offset),
                               utc_ns=int(first.timestamp() * S), uncertainty_ns=10_000_000)
        recomputer(cfg)(log.conn)
        kinds = [(r["derived"]["kind"], r["derived"]["minutes_late"], r["derived"]["minutes_early"])
                 for r in log.records()]
        assert kinds == [("masuk", 12, 0), ("pulang", 0, 300)]


def _old_style_log(state):
    """A database at schema 6 holding records hashed the way they were before derived kinds: kind and
    lateness inside the hash."""
    state.mkdir(parents=True)
    conn = sqlite3.connect(state / punchlog.DB_FILE, isolation_level=None)
    schema.migrate(conn, target=6)
    conn.execute("INSERT INTO meta VALUES ('log_id', 'old0')")
    prev = chain.GENESIS
    rows = []
    for seq, (kind, late) in enumerate([("masuk", 5), ("pulang", 0)], start=1):
        details = {"kind": kind, "minutes_late": late, "minutes_early": 0, "local_date": "2026-11-30",
                   "local_time": "07:35:00", "timezone": "Asia/Jakarta", "workday": True, "zk_state": 0}
        rec = {"log_id": "old0", "seq": seq, "employee": "197001", "method": "pin", "kind": kind,
               "details": json.dumps(details, sort_keys=True, separators=(",", ":")), "boot_id": "boot-old",
               "monoraw_ns": seq * S, "boottime_ns": seq * S, "realtime_ns": 1796000000 * S + seq * S,
               "timex_status": 5, "maxerror_us": 16_000_000, "latitude": None, "longitude": None,
               "photo_path": None, "photo_sha256": None}
        rec["prev_hash"] = prev
        rec["hash"] = prev = chain.record_hash(prev, rec)
        conn.execute(f"INSERT INTO punches ({', '.join(rec)}) VALUES ({', '.join('?' * len(rec))})",
                     tuple(rec.values()))
        rows.append(rec)
    conn.close()
    identity.create_key(state)
    return rows


def test_migration_keeps_old_records_verifiable_and_copies_their_kind_beside_them(tmp_path):
    state = tmp_path / "state"
    old = _old_style_log(state)
    cfg_file = tmp_path / "presensi.toml"
    cfg_file.write_text(f'[device]\nid = "opd-01"\n[paths]\nstate_dir = "{state}"\n')
    with punchlog.PunchLog(state) as log:
        assert log.conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
        recs = list(log.records())
        assert [r["hash"] for r in recs] == [r["hash"] for r in old]  # nothing hashed was rewritten
        assert [(r["kind"], r["derived"]["kind"], r["derived"]["minutes_late"], r["derived"]["basis"])
                for r in recs] == [("masuk", "masuk", 5, "recorded"), ("pulang", "pulang", 0, "recorded")]
        assert [punchlog.kind_of(r) for r in recs] == ["masuk", "pulang"]
        PunchService(make_cfg(state), log).punch("197002", "pin")  # a new record after the old ones
        assert log.verify() == []
    verify = presensi("log", "verify", config=cfg_file)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    listed = presensi("log", "list", config=cfg_file).stdout
    assert "masuk" in listed and "pulang" in listed


def test_the_server_keeps_the_newest_revision_and_no_derived_value_without_its_record(tmp_path):
    """A holder of the device token replays an older revision, sends derived values for punches the
    server never received, and sends malformed ones: none changes what the server holds."""
    state = tmp_path / "state"
    punchlog.init(state)
    cfg = make_cfg(state)
    with punchlog.PunchLog(state) as log:
        out = PunchService(cfg, log).punch("199003", "pin", reading=reading("boot-c", 50.0, TRUE_LOCAL))
        rec = {k: out.record.get(k) for k in (*chain.HASHED_FIELDS, "prev_hash", "hash")}
    store = open_store(tmp_path / "central.db")
    store.add_device("opd-01", "t" * 64, None)
    newer = {**out.record["derived"], "kind": "pulang", "revision": 3}
    times = {"utc": "2026-12-02T00:42:00.000Z", "earliest": "2026-12-02T00:41:59.900Z",
             "latest": "2026-12-02T00:42:00.100Z", "basis": "manual", "flags": []}
    ingest.store_batch(store, "opd-01", rec["log_id"], 0, [{**rec, **times, "derived": newer}], [])
    older = {**out.record["derived"], "revision": 2}
    ingest.update_times(store, "opd-01", {"log_id": rec["log_id"], "times": [{"seq": 1, "derived": older},
                                                                             {"seq": 99, "derived": older}]})
    rows = list(store.iter_punches("opd-01"))
    assert len(rows) == 1 and rows[0]["derived"]["kind"] == "pulang" and rows[0]["derived"]["revision"] == 3
    assert store.query("SELECT count(*) AS n FROM punch_derived")[0]["n"] == 1  # nothing for seq 99
    assert (rows[0]["utc"], rows[0]["basis"]) == (times["utc"], "manual")  # derived-only: times left alone
    assert rows[0]["problems"] == "[]"  # the record itself checked out (hash, chain)
    for bad in ({**older, "kind": 5}, {**older, "revision": 0}, {**older, "minutes_late": -1},
                {**older, "time_verified": "yes"}, "masuk"):
        with pytest.raises(ingest.BadBatch):
            ingest.update_times(store, "opd-01", {"log_id": rec["log_id"], "times": [{"seq": 1, "derived": bad}]})
        with pytest.raises(ingest.BadBatch):
            ingest.validate_batch({"log_id": rec["log_id"], "records": [{**rec, "derived": bad}]})


def test_the_pull_api_carries_the_derived_values(tmp_path):
    state = tmp_path / "state"
    punchlog.init(state)
    with punchlog.PunchLog(state) as log:
        PunchService(make_cfg(state), log).punch("199004", "pin", reading=reading("boot-d", 50.0, TRUE_LOCAL))
    served = Served(state)
    try:
        body = requests.get(served.url + "/api/v1/punches", headers=AUTH, timeout=10).json()
    finally:
        served.close()
    rec = body["records"][0]
    assert rec["kind"] == "" and rec["derived"]["kind"] == "masuk" and rec["derived"]["minutes_late"] == 12
    assert list(chain.check_records(body["records"], body["log_id"])) == []  # still verifiable as pulled
