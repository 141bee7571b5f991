"""Storage faults: a full disk (a real size-limited tmpfs), a damaged database, a second writer."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import REPO, presensi, readline, write_config

from terminal import config
from terminal.log import punchlog


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs as root)")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory):
    """Fill the file system completely; return the filler path."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def test_disk_full_refuses_punch_cleanly_and_recovers(small_fs, tmp_path):
    cfg = write_config(tmp_path / "p.toml", small_fs / "state")
    assert presensi("init", config=cfg).returncode == 0
    for i in range(5):
        assert presensi("punch", "--employee", f"ok{i}", "--method", "pin", config=cfg).returncode == 0
    state = config.load(cfg).state_dir
    daemon_log = punchlog.PunchLog(state)  # a long-lived writer, as the daemon keeps one
    filler = fill(small_fs)

    refused = 0
    for i in range(40):  # the WAL may still have room for a few punches; keep going until refused
        result = presensi("punch", "--employee", f"full{i}", "--method", "pin", "--json", config=cfg)
        if result.returncode == 0:
            assert json.loads(result.stdout)["employee"] == f"full{i}"
            continue
        assert "disk is full" in result.stderr and "NOT recorded" in result.stderr, result.stderr
        refused += 1
        if refused == 3:
            break
    assert refused == 3, "the punch was never refused on a full disk"

    with pytest.raises(punchlog.StorageFull):  # a photo punch: the evidence write itself hits ENOSPC
        daemon_log.append("photo", "face", photo_jpeg=os.urandom(256 * 1024))
    leftovers = [p for p in (state / "photos").rglob("*")] if (state / "photos").exists() else []
    assert not [p for p in leftovers if p.is_file()], "a half-written photo was left behind"

    filler.unlink()
    assert daemon_log.append("daemon-after", "pin")["seq"] > 5  # the open writer works again too
    daemon_log.close()
    result = presensi("punch", "--employee", "after", "--method", "pin", "--json", config=cfg)
    assert result.returncode == 0, result.stderr
    assert presensi("log", "verify", config=cfg).returncode == 0
    with punchlog.PunchLog(state) as log:
        seqs = [r["seq"] for r in log.records()]
        assert seqs == list(range(1, len(seqs) + 1))
        assert log.records(after_seq=len(seqs) - 1).__next__()["employee"] == "after"
        assert log.integrity(quick=False) == "ok"


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_damaged_database_is_refused_explained_and_left_untouched(config_file):
    state = config.load(config_file).state_dir
    assert presensi("punch", "--employee", "1", "--method", "pin", config=config_file).returncode == 0
    db = state / punchlog.DB_FILE
    with sqlite3.connect(db) as conn:  # fold the WAL into the main file so the damage below hits it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray(db.read_bytes())
    raw[0:16] = b"garbage-garbage!"
    db.write_bytes(raw)
    before = digest(db)
    for args in (("punch", "--employee", "2", "--method", "pin"), ("status",), ("init",), ("log", "list")):
        result = presensi(*args, config=config_file)
        assert result.returncode != 0, args
        assert "damaged" in result.stderr and ".recover" in result.stderr, result.stderr
    assert digest(db) == before, "the damaged database was modified"


def test_damaged_page_is_found_at_start(config_file):
    state = config.load(config_file).state_dir
    with punchlog.PunchLog(state) as log:
        for i in range(300):
            log.append(f"{i:06d}", "pin", details={"pad": "x" * 200})
        log.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db = state / punchlog.DB_FILE
    raw = bytearray(db.read_bytes())
    page = 4096
    raw[page * 5: page * 5 + 100] = os.urandom(100)  # a b-tree page in the middle of the punches
    db.write_bytes(raw)
    with pytest.raises(punchlog.CorruptDatabase, match="damaged"):
        punchlog.PunchLog(state, check=True)
    assert presensi("status", config=config_file).returncode != 0


HOLD_LOCK = """
import sys
from terminal.log import punchlog
log = punchlog.PunchLog(sys.argv[1])
with log._lock.hold():
    print("holding", flush=True)
    sys.stdin.readline()  # until the test says every waiter has queued (no fixed time a busy machine can beat)
rec = log.append("holder", "pin")
print(rec["seq"], flush=True)
"""


def tickets(state) -> int:
    """How many writers have taken a place in the punch log's queue so far."""
    entry = state / punchlog.LOCK_DIR / "entry"
    return int(entry.read_text().strip() or 0) if entry.exists() else 0


def test_second_writer_waits_and_writers_are_served_in_order(config_file):
    state = config.load(config_file).state_dir
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(state)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert readline(holder.stdout, 30).strip() == "holding"
    waiters = []
    for name in ("first", "second", "third"):
        queued = tickets(state)
        waiters.append(subprocess.Popen(
            [sys.executable, "-m", "terminal.cli", "-c", str(config_file), "punch", "--employee", name,
             "--method", "pin", "--json"], stdout=subprocess.PIPE, text=True, cwd=REPO))
        deadline = time.monotonic() + 30
        while tickets(state) == queued and time.monotonic() < deadline:  # wait until it has queued
            time.sleep(0.01)
        assert tickets(state) > queued, f"{name} never queued for the write lock"
    holder.stdin.write("release\n")
    holder.stdin.flush()
    results = [json.loads(w.communicate(timeout=30)[0]) for w in waiters]
    holder.communicate(timeout=30)
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(seqs), f"writers were not served in arrival order: {seqs}"
    assert holder.returncode == 0
    with punchlog.PunchLog(state) as log:
        assert [r["employee"] for r in log.records()][:3] == ["first", "second", "third"]
