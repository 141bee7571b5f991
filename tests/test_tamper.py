"""Tampering with the database file is caught by `presensi log verify`, naming the first bad seq."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import presensi

from terminal import config
from terminal.log import chain, punchlog


@pytest.fixture
def log_of_20(config_file):
    state = config.load(config_file).state_dir
    with punchlog.PunchLog(state, checkpoint_every=10) as log:
        for i in range(1, 21):
            log.append(f"19800101200001{i:04d}", "pin")
    assert presensi("log", "verify", config=config_file).returncode == 0
    return config_file, state


def attacker(state):
    """Open the file as an attacker would: raw sqlite3, append-only triggers dropped."""
    conn = sqlite3.connect(state / punchlog.DB_FILE, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def verify(cfg):
    result = presensi("log", "verify", "--json", config=cfg)
    return result.returncode, json.loads(result.stdout)


def first_problem(cfg):
    code, report = verify(cfg)
    assert code != 0 and not report["ok"]
    return report["problems"][0]


def test_edited_field(log_of_20):
    cfg, state = log_of_20
    attacker(state).execute("UPDATE punches SET employee = '199901012020011999' WHERE seq = 7")
    assert first_problem(cfg) == {"seq": 7, "what": "edited"}
    human = presensi("log", "verify", config=cfg)
    assert "first bad seq 7" in human.stderr and "edited" in human.stderr


def test_edited_time_with_recomputed_hashes_is_caught_by_checkpoint(log_of_20):
    """An attacker who recomputes the chain after editing seq 7 still cannot forge the signed checkpoint."""
    cfg, state = log_of_20
    conn = attacker(state)
    cur = conn.execute("SELECT * FROM punches ORDER BY seq")
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    prev = chain.GENESIS
    for row in rows:
        if row["seq"] == 7:
            row["realtime_ns"] -= 15 * 60 * 10**9  # "arrived 15 minutes earlier"
        row["prev_hash"], row["hash"] = prev, chain.record_hash(prev, row)
        conn.execute("UPDATE punches SET realtime_ns=?, prev_hash=?, hash=? WHERE seq=?",
                     (row["realtime_ns"], row["prev_hash"], row["hash"], row["seq"]))
        prev = row["hash"]
    assert first_problem(cfg) == {"seq": 10, "what": "rewritten"}


def test_middle_record_deleted(log_of_20):
    cfg, state = log_of_20
    attacker(state).execute("DELETE FROM punches WHERE seq = 13")
    assert first_problem(cfg) == {"seq": 13, "what": "missing"}


def test_tail_after_checkpoint_deleted(log_of_20):
    cfg, state = log_of_20
    attacker(state).execute("DELETE FROM punches WHERE seq > 15")
    assert first_problem(cfg) == {"seq": 16, "what": "truncated"}


def test_two_records_swapped(log_of_20):
    cfg, state = log_of_20
    conn = attacker(state)
    conn.execute("UPDATE punches SET seq = -1 WHERE seq = 4")
    conn.execute("UPDATE punches SET seq = 4 WHERE seq = 5")
    conn.execute("UPDATE punches SET seq = 5 WHERE seq = -1")
    problems = verify(cfg)[1]["problems"]
    assert problems[0]["seq"] == 4
    assert {p["what"] for p in problems} >= {"edited"}


def test_records_reordered_in_storage(log_of_20):
    """Rows moved so that storage order disagrees with seq (contents intact)."""
    cfg, state = log_of_20
    conn = attacker(state)
    row = conn.execute("SELECT * FROM punches WHERE seq = 6").fetchone()
    conn.execute("DELETE FROM punches WHERE seq = 6")
    conn.execute(f"INSERT INTO punches VALUES ({','.join('?' * len(row))})", row)  # now stored last
    problems = verify(cfg)[1]["problems"]
    assert problems[0] == {"seq": 6, "what": "missing"} or problems[0]["seq"] == 6
    assert "reordered" in {p["what"] for p in problems}


def test_checkpoint_signature_altered(log_of_20):
    cfg, state = log_of_20
    conn = attacker(state)
    sig = conn.execute("SELECT signature FROM checkpoints WHERE seq = 10").fetchone()[0]
    forged = ("A" if sig[0] != "A" else "B") + sig[1:]
    conn.execute("UPDATE checkpoints SET signature = ? WHERE seq = 10", (forged,))
    assert first_problem(cfg) == {"seq": 10, "what": "bad-signature"}
