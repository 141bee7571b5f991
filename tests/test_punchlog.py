"""The punch log library on a real SQLite file: durability settings, chain, checkpoints, init."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from terminal import identity
from terminal.log import chain, punchlog


@pytest.fixture
def state(tmp_path):
    punchlog.init(tmp_path / "state")
    return tmp_path / "state"


def test_init_creates_private_state_key_and_random_log_id(tmp_path):
    a = punchlog.init(tmp_path / "a")
    b = punchlog.init(tmp_path / "b")
    assert a["log_id"] != b["log_id"] and len(a["log_id"]) == 32
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "a" / identity.KEY_FILE).st_mode) == 0o600


def test_init_is_idempotent_and_never_overwrites(state):
    key_before = (state / identity.KEY_FILE).read_bytes()
    with punchlog.PunchLog(state) as log:
        log.append("1001", "pin")
        log_id = log.log_id
    again = punchlog.init(state)
    assert again["log_id"] == log_id and not again["created_database"] and not again["created_key"]
    assert (state / identity.KEY_FILE).read_bytes() == key_before
    with punchlog.PunchLog(state) as log:
        assert log.count() == 1


def test_init_refuses_new_key_when_checkpoints_exist(state):
    with punchlog.PunchLog(state) as log:
        log.append("1001", "pin")
        log.checkpoint()
    (state / identity.KEY_FILE).unlink()
    with pytest.raises(punchlog.LogError, match="restore the key"):
        punchlog.init(state)


def test_every_connection_uses_wal_and_synchronous_full(state):
    with punchlog.PunchLog(state) as log:
        assert log.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert log.conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_append_returns_committed_chained_record(state):
    with punchlog.PunchLog(state) as log:
        r1 = log.append("1001", "pin", details={"operator": "op1"}, latitude=-7.25, longitude=112.77)
        r2 = log.append("1002", "finger", details={"score": 87})
    assert (r1["seq"], r2["seq"]) == (1, 2)
    assert r1["prev_hash"] == chain.GENESIS and r2["prev_hash"] == r1["hash"]
    assert r2["hash"] == chain.record_hash(r1["hash"], r2)
    # what append returned is what another connection reads back
    with punchlog.PunchLog(state) as log:
        assert log.get(2) == r2
        assert [r["employee"] for r in log.records()] == ["1001", "1002"]
    assert r1["latitude"] == -7.25 and r1["boot_id"] and r1["monoraw_ns"] > 0


def test_photo_evidence_is_on_disk_before_the_record(state):
    jpeg = b"\xff\xd8fake-jpeg\xff\xd9"
    with punchlog.PunchLog(state) as log:
        rec = log.append("1001", "face", photo_jpeg=jpeg, details={"distance": 0.31})
    assert (state / rec["photo_path"]).read_bytes() == jpeg
    assert rec["photo_sha256"] == __import__("hashlib").sha256(jpeg).hexdigest()


def test_checkpoints_signed_periodically_and_on_demand(state):
    with punchlog.PunchLog(state, checkpoint_every=5) as log:
        for i in range(12):
            log.append(f"e{i}", "pin")
        assert [c["seq"] for c in log.db["checkpoints"].rows] == [5, 10]
        cp = log.checkpoint()
        assert cp["seq"] == 12
        assert log.checkpoint()["seq"] == 12  # nothing new: no second checkpoint
        pub = identity.load_key(state).public_key()
        assert chain.verify_b64(pub, cp["signature"], chain.checkpoint_message(log.log_id, 12, cp["hash"]))
        assert log.verify() == []


def test_no_update_or_delete_of_punches(state):
    with punchlog.PunchLog(state) as log:
        log.append("1001", "pin")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            log.conn.execute("UPDATE punches SET employee = 'x'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            log.conn.execute("DELETE FROM punches")


def test_audit_is_append_only(state):
    with punchlog.PunchLog(state) as log:
        log.audit("admin", "export", {"to": "/media/usb"})
        assert log.audit_entries()[0]["details"] == {"to": "/media/usb"}
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            log.conn.execute("DELETE FROM audit")


@pytest.mark.parametrize("bad", [("", "pin"), ("1001", "password")])
def test_append_rejects_bad_input(state, bad):
    with punchlog.PunchLog(state) as log, pytest.raises(punchlog.LogError):
        log.append(*bad)


def test_uninitialised_state_says_run_init(tmp_path):
    with pytest.raises(punchlog.NotInitialised, match="presensi init"):
        punchlog.PunchLog(tmp_path / "none")
