"""The read side of the central server's pages, on SQLite and on a throwaway PostgreSQL cluster: the indexes
reach a database made before them and the page queries use them; the fleet overview gives every terminal's
last contact, last heartbeat and open faults; punches from terminals older than derived values still reach
the recap through the kind and day in their hashed details, and a punch without any day is said, not lost."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from sync.server import ingest, recap
from sync.server.storage import INDEXES, open_store
from terminal.log import chain


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    return str(tmp_path / "central.db") if request.param == "sqlite" else request.getfixturevalue("pg")()


def _indexes(store) -> set[str]:
    if store.placeholder == "?":
        return {r[0] for r in store.query_rows("SELECT name FROM sqlite_master WHERE type = 'index'")}
    return {r[0] for r in store.query_rows("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}


def test_indexes_reach_an_existing_database_and_the_page_queries_use_them(db, tmp_path):
    store = open_store(db, key_dir=tmp_path / "keys")
    with store.transaction() as cur:  # the database as the version before these indexes left it
        for name in INDEXES:
            cur.execute(f"DROP INDEX {name}")
    assert not _indexes(store) & set(INDEXES)
    store.close()
    store = open_store(db, key_dir=tmp_path / "keys")  # the next start of the server
    assert set(INDEXES) <= _indexes(store)
    if store.placeholder != "?":
        return
    executed: list[str] = []
    store.conn.set_trace_callback(executed.append)
    store.punches_of_device_day("dev-01", "2026-11-03")
    store.punches_of_employee("198501012010011001", "2026-11-01", "2026-11-30")
    list(store.month_punches("2026-11-01", "2026-11-30"))
    store.conn.set_trace_callback(None)
    plans = [" ".join(r[-1] for r in store.query_rows("EXPLAIN QUERY PLAN " + sql)) for sql in executed]
    assert "USING INDEX punch_derived_day (local_date=? AND device_id=?)" in plans[0]
    assert "USING INDEX punches_employee (employee=?)" in plans[1]
    # each page of the month seeks where the last one ended (not from the month's first row again)
    assert "punch_derived_day ((local_date,device_id,log_id,seq)>(?,?,?,?) AND local_date<?)" in plans[2]
    store.close()


def test_fleet_overview_gives_contact_heartbeat_and_open_faults_of_every_terminal(db, tmp_path):
    """sync/server/fleet.py's overview(), the one fleet query (the page's and the bench's): a fault is open
    until the terminal clears it or Diskominfo closes it (acknowledged ones stay open), reports count, and a
    silent terminal's server-raised fault is among them."""
    from sync.server import fleet as server_fleet

    store = open_store(db, key_dir=tmp_path / "keys")
    for dev in ("dev-a", "dev-b", "dev-c"):
        store.add_device(dev, dev * 8, None)
    ingest.heartbeat(store, "dev-a", {"log_id": "l1", "version": "0.1.0", "backlog": 7, "health": {
        "parts": {"camera": {"ok": False, "summary": "no frame"}, "roster": {"ok": True, "version": 4}}}})

    def event(i, key, what):
        return {"id": i, "fault_key": key, "event": what, "part": key, "category": "missing",
                "message": f"{key} {what}", "realtime_ns": i}

    store.store_faults("dev-a", [event(1, "camera", "raised"), event(2, "finger", "raised"),
                                 event(3, "finger", "cleared")])
    store.store_faults("dev-b", [event(1, "disk", "raised"), event(2, "disk", "cleared"), event(3, "disk", "raised"),
                                 {**event(4, "report:1", "report"), "part": "camera"}])
    assert server_fleet.act(store, "dev-b", 3, "acknowledge", "dk", "teknisi berangkat") == "done"
    assert server_fleet.act(store, "dev-b", 4, "close", "dk", "sudah diganti") == "done"
    store.alarm("dev-b", "gap", "seq skipped")
    with store.transaction() as cur:  # dev-c was registered a day ago and never called in
        store.execute(cur, "UPDATE devices SET created_ns = created_ns - ? WHERE device_id = 'dev-c'", (86400 * 10**9,))
    assert server_fleet.check_silent(store, 3600)["raised"] == ["dev-c"]
    fleet = {d["device_id"]: d for d in server_fleet.overview(store, 3600)}
    assert list(fleet) == ["dev-a", "dev-b", "dev-c"]
    a, b, c = fleet["dev-a"], fleet["dev-b"], fleet["dev-c"]
    assert a["heartbeat"]["backlog"] == 7 and a["backlog"] == 7 and a["version"] == "0.1.0"
    assert a["last_contact_ns"] is not None and not a["silent"]
    assert [(p.ok, p.summary) for p in a["parts"] if p.name == "camera"] == [(False, "no frame")]
    assert a["roster_version"] == 4
    assert [f["fault_key"] for f in a["open_faults"]] == ["camera"]  # the finger fault was cleared
    # raised again after a clear, and acknowledged: still open; the closed report is not
    assert [(f["fault_key"], f["event_id"], f["state"]) for f in b["open_faults"]] == [("disk", 3, "acknowledged")]
    assert b["heartbeat"] is None and b["alarms"] == 1 and a["alarms"] == 0
    assert c["last_contact_ns"] is None and c["silent"]  # never heard from
    assert [(f["fault_key"], f["reporter"], f["state"]) for f in c["open_faults"]] == [
        (server_fleet.SILENT_KEY, "server", "open")]
    assert server_fleet.overview(store, 3600, device_id="dev-b")[0]["open_faults"] == b["open_faults"]
    store.close()


def _old_record(seq: int, prev: str, details: dict) -> dict:
    """A record as terminals hashed it before derived values: kind and lateness inside the record."""
    rec = {"log_id": "old0", "seq": seq, "employee": "198501012010011001", "method": "pin",
           "kind": details.get("kind", ""), "details": json.dumps(details, sort_keys=True, separators=(",", ":")),
           "boot_id": "b", "monoraw_ns": seq, "boottime_ns": seq, "realtime_ns": 1_790_000_000 * 10**9 + seq,
           "timex_status": 0, "maxerror_us": 16000, "latitude": None, "longitude": None, "photo_sha256": None,
           "prev_hash": prev}
    rec["hash"] = chain.record_hash(prev, rec)
    return rec


def test_punches_older_than_derived_values_count_by_their_recorded_day_and_undated_ones_are_said(db, tmp_path):
    store = open_store(db, key_dir=tmp_path / "keys")
    store.add_device("dev-old", "o" * 64, None)
    first = _old_record(1, chain.GENESIS, {"kind": "masuk", "minutes_late": 7, "minutes_early": 0,
                                           "local_date": "2026-11-03", "local_time": "07:37:00", "work_code": "4"})
    second = _old_record(2, first["hash"], {"operator": "cli"})  # no day recorded at all
    result = ingest.store_batch(store, "dev-old", "old0", 0, [first, second], [])
    assert result["stored"] == 2 and result["flagged"] == 0
    out = recap.build(store, "2026-11", until=dt.date(2026, 11, 30))
    (row,) = out.employees
    assert (row.days_present, row.minutes_late, row.missing_pulang, row.work_codes) == (1, 7, 1, {"4": 1})
    assert row.punches["minutes_late"] == [recap.punch_id("dev-old", "old0", 1)]
    assert row.unverified == 1  # delivered without any time basis: counted, and listed for a check
    assert out.undated == 1 and any("1 stored punches carry no local date" in n for n in out.notes)
    store.close()
