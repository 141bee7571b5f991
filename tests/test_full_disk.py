"""A full disk, as a Pi has one: ext4 on a loop device, filled by a non-root user (tests/fullfs.py).

What an employee and IT staff get: every punch is refused with the clear message ("the disk is full; the
punch was NOT recorded" on the CLI, "Penyimpanan penuh" on the screen) and nothing half-written survives;
reading the log, verifying it and the USB export still work; punching works again once space is freed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from conftest import SHARED, presensi
from fullfs import FullDisk, write_config

from terminal.log import punchlog


@pytest.fixture
def disk():
    d = FullDisk()
    try:
        yield d
    finally:
        d.close()


def init(disk: FullDisk, punches: int = 3):
    cfg = write_config(disk)
    result = disk.presensi("init", config=cfg)
    assert result.returncode == 0, result.stderr
    for i in range(punches):
        result = disk.presensi("punch", "--employee", f"E{i}", "--method", "pin", config=cfg)
        assert result.returncode == 0, result.stderr
    return cfg


def face_photo() -> bytes:
    photos = sorted(SHARED.glob("**/*.jpg"))
    assert photos, f"no photos in {SHARED}: the shared test data lives beside the repository"
    return photos[0].read_bytes()


# A long-lived punch writer, as the daemon keeps one: opened while there is space, it punches after the
# disk filled (the first face punch of the day creates that day's photo folder).
WRITER = """
import json, sys
from terminal import config
from terminal.log import punchlog
from terminal.punch.service import PunchService
cfg = config.load(sys.argv[1])
service = PunchService(cfg, punchlog.PunchLog(cfg.state_dir))
photo = open(sys.argv[2], "rb").read()
print("ready", flush=True)
for line in sys.stdin:
    employee, method = line.split()
    out = service.punch(employee, method, photo_jpeg=photo if method == "face" else None)
    print(json.dumps({"acknowledged": out.acknowledged, "recorded": out.recorded, "message": out.message,
                      "error": out.error}), flush=True)
"""


def test_face_and_pin_punches_are_refused_with_the_clear_message_and_work_again_after(disk):
    cfg = init(disk)
    photo = disk.user_dir("photos") / "face.jpg"
    photo.write_bytes(face_photo())
    writer = disk.popen(sys.executable, "-c", WRITER, str(cfg), str(photo), stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read()

        def punch(employee, method):
            writer.stdin.write(f"{employee} {method}\n")
            writer.stdin.flush()
            line = writer.stdout.readline()
            assert line, f"the punch writer died: {writer.stderr.read()}"
            return json.loads(line)

        disk.fill()
        face = punch("F1", "face")
        assert face["acknowledged"] is False and face["recorded"] is False
        assert face["message"].startswith("Penyimpanan penuh"), face
        assert "the disk is full; the punch was NOT recorded" in face["error"], face

        pin = disk.presensi("punch", "--employee", "P1", "--method", "pin", config=cfg)
        assert pin.returncode != 0
        assert "the disk is full; the punch was NOT recorded" in pin.stderr, pin.stderr
        assert "Traceback" not in pin.stderr

        disk.free()
        face = punch("F1", "face")
        assert face["recorded"] is True, face
    finally:
        writer.stdin.close()
        writer.wait(30)
    pin = disk.presensi("punch", "--employee", "P1", "--method", "pin", config=cfg)
    assert pin.returncode == 0, pin.stderr
    with punchlog.PunchLog(disk.mnt / "state", readonly=True) as log:
        assert [r["employee"] for r in log.records()] == ["E0", "E1", "E2", "F1", "P1"]
        face_record = log.get(4)
    assert (disk.mnt / "state" / face_record["photo_path"]).read_bytes() == photo.read_bytes()
    leftovers = [p.name for p in (disk.mnt / "state" / "photos").rglob("*.tmp*")]
    assert not leftovers, f"half-written photos were left behind: {leftovers}"


# A writer that dies with punches still in the WAL (power cut), so that a reader must replay the WAL
CRASHED_WRITER = """
import os, sys
from terminal.log import punchlog
log = punchlog.PunchLog(sys.argv[1])
log.conn.execute("PRAGMA wal_autocheckpoint=0")
for i in range(int(sys.argv[2])):
    log.append(f"W{i}", "pin")
os.kill(os.getpid(), 9)
"""


@pytest.mark.parametrize("wal", ["checkpointed", "crashed-with-wal"])
def test_log_list_export_verify_status_and_usb_export_work_on_a_full_disk(disk, wal):
    cfg = init(disk, punches=3)
    state = disk.mnt / "state"
    expected = 3
    if wal == "crashed-with-wal":
        result = disk.run(sys.executable, "-c", CRASHED_WRITER, str(state), "4")
        assert result.returncode == -signal.SIGKILL, result.stderr
        assert (state / "punches.db-wal").stat().st_size > 0
        (state / "punches.db-shm").unlink()  # the WAL index must be rebuilt: on a full disk it cannot be
        expected = 7
    disk.fill()

    listed = disk.presensi("log", "list", "--json", config=cfg)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == expected

    for fmt in ("csv", "jsonl"):
        exported = disk.presensi("log", "export", "--format", fmt, config=cfg)
        assert exported.returncode == 0, exported.stderr
        lines = exported.stdout.strip().splitlines()
        assert len(lines) == expected + (fmt == "csv"), exported.stdout

    verified = disk.presensi("log", "verify", config=cfg)
    assert verified.returncode == 0, verified.stderr
    assert f"log verify ok: {expected} punches" in verified.stdout

    status = disk.presensi("status", "--json", config=cfg)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["database"]["ok"] and report["database"]["head"]["seq"] == expected
    assert report["health"]["parts"]["disk"]["level"] == "fault", report["health"]

    stick = disk.user_dir("usb")
    usb = disk.presensi("export", "--to", str(stick), "--json", config=cfg)
    assert usb.returncode == 0, usb.stderr
    written = json.loads(usb.stdout)
    assert written["count"] == expected and written["last_seq"] == expected
    manifest = json.loads((stick / written["dir"].split("/")[-1] / "manifest.json").read_text())
    assert manifest["head_checkpoint"]["seq"] == expected

    assert not list(state.glob("*.tmp*")), "a read-only command left a file in the state directory"

    central = disk.root / "central.db"  # the central server takes the stick in: signature and hashes hold
    assert presensi("server", "add-device", "full-01", "--db", str(central)).returncode == 0
    imported = presensi("server", "import", written["dir"], "--db", str(central), "--json")
    assert imported.returncode == 0, imported.stderr
    rows = presensi("server", "punches", "--device", "full-01", "--db", str(central), "--json").stdout
    assert len(rows.strip().splitlines()) == expected, rows
