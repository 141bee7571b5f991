"""Schema migrations: a database at any earlier version migrates to the latest and keeps its punches."""

from __future__ import annotations

import sqlite3

import pytest

from terminal.log import punchlog, schema


@pytest.mark.parametrize("start", range(0, schema.LATEST))
def test_migrates_from_every_earlier_version(tmp_path, start):
    state = tmp_path / "state"
    state.mkdir()
    conn = sqlite3.connect(state / punchlog.DB_FILE, isolation_level=None)
    schema.migrate(conn, target=start)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == start
    if start >= 1:  # a version with the punches table: put a punch-shaped row and meta there
        conn.execute("INSERT INTO meta VALUES ('log_id', 'abc')")
    conn.close()

    punchlog.init(state)  # migrates, never recreates
    with punchlog.PunchLog(state) as log:
        assert log.conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
        if start >= 1:
            assert log.log_id == "abc"
        rec = log.append("1001", "pin")
        assert rec["seq"] == 1
        assert log.verify() == []


def test_newer_database_is_refused_with_explanation(tmp_path):
    state = tmp_path / "state"
    punchlog.init(state)
    conn = sqlite3.connect(state / punchlog.DB_FILE)
    conn.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    conn.close()
    with pytest.raises(punchlog.LogError, match="install the newer version"):
        punchlog.PunchLog(state)
