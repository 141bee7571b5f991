"""A full disk, as a Pi has one: ext4 on a loop device, filled by a non-root user (tests/fullfs.py).

What an employee and IT staff get: every punch is refused with the clear message ("the disk is full; the
punch was NOT recorded" on the CLI, "Penyimpanan penuh" on the screen) and nothing half-written survives;
reading the log, verifying it and the USB export still work; punching works again once space is freed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SHARED, presensi, wait_for
from fullfs import FullDisk, write_config
from kiosk_sse import Kiosk

from drivers.fingerprint.emulator import FingerprintEmulator
from drivers.fingerprint.emulator.sensorsim import Settings, synthetic_template
from terminal import identity
from terminal.log import chain, punchlog
from terminal.ops import faults


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
from terminal import identity
from terminal.log import chain, punchlog
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
from terminal import identity
from terminal.log import chain, punchlog
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

    for command in (("time", "status"), ("sync", "status")):
        result = disk.presensi(*command, config=cfg)
        assert result.returncode == 0, (command, result.stderr)

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
    key = chain.public_key_b64(identity.load_key(state))  # bound as an offline site's installer binds it
    assert presensi("server", "add-device", "full-01", "--public-key", key, "--db", str(central)).returncode == 0
    imported = presensi("server", "import", written["dir"], "--db", str(central), "--json")
    assert imported.returncode == 0, imported.stderr
    rows = presensi("server", "punches", "--device", "full-01", "--db", str(central), "--json").stdout
    assert len(rows.strip().splitlines()) == expected, rows


def start_central(tmp: Path):
    db = tmp / "central.db"
    proc = subprocess.Popen([sys.executable, "-m", "terminal.cli", "server", "run", "--db", str(db), "--listen",
                             "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    line = proc.stdout.readline()
    assert line.startswith("listening on "), proc.stderr.read()
    return proc, db, line.split()[-1]


def test_presensi_run_starts_degraded_on_a_full_disk_and_punches_again_when_space_returns(disk, tmp_path):
    pytest.importorskip("skimage", reason="the sample face comes from scikit-image (the demo extra)")
    from sync.server.storage import open_store
    from terminal.app import demo

    central, central_db, url = start_central(tmp_path)
    emu = FingerprintEmulator(Settings(capacity=162), link=disk.root / "ttyFP")
    emu.start()
    os.chmod(os.path.realpath(emu.path), 0o666)  # the test user opens the sensor (as `presensi` in dialout)
    try:
        reg = json.loads(presensi("server", "add-device", "full-01", "--db", str(central_db), "--json").stdout)
        photo = demo.sample_photo()
        demo.publish_roster(open_store(str(central_db)), photo)
        frames = disk.user_dir("camera")
        cfg = write_config(disk, f"""[central]
url = "{url}"
token = "{reg['token']}"
enrolment_code = "{reg['enrolment_code']}"
server_key = "{reg['server_key']}"
push_interval = 1.0
heartbeat_interval = 1.0
[web]
listen = "127.0.0.1:0"
[camera]
source = "{frames}"
fps = 10
[liveness]
mode = "off"
[fingerprint]
enabled = true
port = "{emu.path}"
""")
        assert disk.presensi("init", config=cfg).returncode == 0
        pulled = disk.presensi("roster", "pull", config=cfg)
        assert pulled.returncode == 0, pulled.stderr
        with running(disk, cfg, "first"):  # a day with space: the roster's fingers go into the sensor's slots
            wait_for(lambda: FINGER in slot_employees(disk.mnt / "state"), 60, "the fingerprint slot sync")
        disk.fill()
        with running(disk, cfg, "degraded") as (daemon, kiosk, output):
            degraded_then_recovered(disk, cfg, central_db, frames, photo, emu, daemon, kiosk)
    finally:
        emu.stop()
        central.kill()
        central.wait()


FINGER, PIN = "199002022015021002", "198803032012031003"  # terminal.app.demo's employees


def slot_employees(state: Path) -> set[str]:
    path = state / "fingerslots.db"
    if not path.exists():
        return set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT employee FROM slots")}
    except sqlite3.OperationalError:  # not created yet
        return set()
    finally:
        conn.close()


@contextlib.contextmanager
def running(disk: FullDisk, cfg: Path, name: str):
    """`presensi run` as the test user; yields (process, kiosk, its output file); SIGTERM must end it with 0."""
    output = disk.root / f"daemon-{name}.log"
    with open(output, "w") as out:
        daemon = disk.popen(sys.executable, "-m", "terminal.cli", "-c", str(cfg), "run", stdout=out,
                            stderr=subprocess.STDOUT)
    kiosk = None
    try:
        port = int(wait_for(lambda: re.search(r"web listening on http://127\.0\.0\.1:(\d+)/", output.read_text()),
                            60, "the kiosk to listen").group(1))
        kiosk = Kiosk(port)
        yield daemon, kiosk, output
    except BaseException:
        print(output.read_text()[-20000:])  # the daemon's own account, shown with the failure
        raise
    finally:
        if kiosk is not None:
            kiosk.close()
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(20)
        finally:
            if daemon.poll() is None:
                daemon.kill()
    assert code == 0, output.read_text()


def degraded_then_recovered(disk, cfg, central_db, frames, photo, emu, daemon, kiosk):
    from sync.server.storage import open_store
    from terminal.app import demo

    storage = kiosk.state()["indicators"]["storage"]
    assert storage["ok"] is False and storage["message"].startswith("Penyimpanan penuh"), storage
    assert "the disk is full" in storage["error"]
    assert daemon.poll() is None

    store = open_store(str(central_db))
    def degraded_heartbeat():  # (the first run's heartbeats said all was well)
        beat = (store.device("full-01") or {}).get("last_heartbeat")
        health = json.loads(beat)["health"] if beat else {}
        return health if health.get("storage", {}).get("ok") is False else None

    health = wait_for(degraded_heartbeat, 30, "a heartbeat that says punches are refused")
    assert any(f["fault_key"] == "storage:log" for f in health["faults"]), health

    pin = disk.presensi("punch", "--employee", PIN, "--method", "pin", config=cfg)
    assert pin.returncode != 0 and "the disk is full; the punch was NOT recorded" in pin.stderr, pin.stderr

    demo.make_frames(photo, frames, fps=10)  # the employee steps in front of the camera
    refused = wait_for(lambda: [d for d in kiosk.decisions() if d.get("method") == "face"], 60,
                       "the face punch's answer on the kiosk")
    assert refused[0]["accepted"] is False and refused[0]["message"].startswith("Penyimpanan penuh"), refused

    finger = synthetic_template(f"demo:{FINGER}")
    emu.place_finger(finger, score=140)
    refused = wait_for(lambda: [d for d in kiosk.decisions() if d.get("method") == "finger"], 60,
                       "the finger punch's answer on the kiosk")
    emu.remove_finger()
    assert refused[0]["accepted"] is False and refused[0]["message"].startswith("Penyimpanan penuh"), refused

    disk.free()
    wait_for(lambda: kiosk.state()["indicators"]["storage"]["ok"], 30, "the kiosk to say punches work again")
    seen = len(kiosk.decisions())  # the same daemon, no restart: the finger punches now
    emu.place_finger(finger, score=140)
    recorded = wait_for(lambda: [d for d in kiosk.decisions()[seen:] if d.get("method") == "finger"], 60,
                        "the finger's answer after space returned")
    emu.remove_finger()
    assert recorded[0]["recorded"] is True and recorded[0]["employee"] == FINGER, recorded
    pin = disk.presensi("punch", "--employee", PIN, "--method", "pin", config=cfg)
    assert pin.returncode == 0, pin.stderr
    with punchlog.PunchLog(disk.mnt / "state", readonly=True) as log:
        assert [(r["employee"], r["method"]) for r in log.records()] == [(FINGER, "finger"), (PIN, "pin")]
        events = faults.events(log.conn)
    storage_events = [e["event"] for e in events if e["fault_key"] == "storage:log"]
    assert storage_events == ["raised", "cleared"], events
    assert daemon.poll() is None, "the daemon restarted or stopped instead of recovering"
