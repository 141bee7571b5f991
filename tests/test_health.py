"""Health checks and faults: deduplicated raise/clear in the append-only fault_events table, the real camera
driver and fingerprint emulator unplugged and plugged back, a disk filling up (warning before punches are
refused), temperature and under-voltage flags, and the IT staff's `presensi fault` commands."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import presensi, presensi_json, wait_for, write_config

from terminal import config
from terminal.errors import StorageFull
from terminal.log import punchlog
from terminal.ops import faults, health


@pytest.fixture
def log(tmp_path):
    punchlog.init(tmp_path / "state")
    with punchlog.PunchLog(tmp_path / "state") as log:
        yield log


def make_cfg(state_dir: Path, **health_keys) -> config.Config:
    return config.from_dict({"device": {"id": "t"}, "paths": {"state_dir": str(state_dir)},
                             "health": health_keys}, "<test>")


# -- fault_events ----------------------------------------------------------------------------------------


def test_raise_is_deduplicated_and_clear_closes_it(log):
    first = faults.raise_fault(log.conn, "health:camera:fault", part="camera", category="camera",
                               message="no frames for 5 s", diagnostics={"frames": 0})
    assert first["event"] == "raised" and first["diagnostics"] == {"frames": 0}
    for _ in range(5):  # the check keeps failing: still one report
        assert faults.raise_fault(log.conn, "health:camera:fault", part="camera", category="camera",
                                  message="no frames for 10 s") is None
    assert [f["fault_key"] for f in faults.open_faults(log.conn)] == ["health:camera:fault"]
    cleared = faults.clear_fault(log.conn, "health:camera:fault", message="frames again")
    assert cleared["event"] == "cleared" and cleared["part"] == "camera"
    assert faults.clear_fault(log.conn, "health:camera:fault") is None  # nothing open any more
    assert faults.open_faults(log.conn) == []
    again = faults.raise_fault(log.conn, "health:camera:fault", part="camera", category="camera", message="x")
    assert again["id"] > cleared["id"]  # a new outage is a new event
    assert [e["event"] for e in faults.events(log.conn)] == ["raised", "cleared", "raised"]
    assert [e["id"] for e in faults.events(log.conn, after_id=first["id"], limit=1)] == [cleared["id"]]


def test_fault_events_are_append_only(log):
    faults.raise_fault(log.conn, "k", part="disk", category="disk", message="low")
    for sql in ("UPDATE fault_events SET message = 'edited'", "DELETE FROM fault_events"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            log.conn.execute(sql)


def test_fault_events_have_the_c5_columns(log):
    cols = [r[1] for r in log.conn.execute("PRAGMA table_info(fault_events)")]
    assert cols == ["id", "fault_key", "event", "part", "category", "message", "diagnostics", "photo_path",
                    "photo_sha256", "realtime_ns"]


# -- the checks ------------------------------------------------------------------------------------------


def test_temperature_from_thermal_zones(tmp_path):
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "type").write_text("cpu-thermal\n")
    pattern = str(tmp_path / "thermal_zone*")
    for millideg, level in (("52150", "ok"), ("77000", "warning"), ("84500", "fault")):
        (zone / "temp").write_text(millideg + "\n")
        result = health.check_temperature(75, 82, pattern)
        assert result.level == level, result
        assert result.diagnostics["celsius"] == {"cpu-thermal": int(millideg) / 1000}
    assert health.check_temperature(75, 82, str(tmp_path / "none*")).level == "skipped"


@pytest.mark.parametrize("bits, level, flag", [
    ("0x0", "ok", None),
    ("0x50000", "warning", "under-voltage has occurred"),
    ("0x50005", "fault", "under-voltage detected"),
    ("0x4", "fault", "currently throttled"),
])
def test_under_voltage_flags_from_sysfs(tmp_path, bits, level, flag):
    sysfs = tmp_path / "get_throttled"
    sysfs.write_text(bits.removeprefix("0x") + "\n")  # the firmware node prints bare hex
    result = health.check_power(str(sysfs), vcgencmd="no-such-vcgencmd")
    assert result.level == level
    if flag:
        assert flag in result.diagnostics["flags"]


def test_under_voltage_flags_from_vcgencmd(tmp_path):
    tool = tmp_path / "vcgencmd"
    tool.write_text("#!/bin/sh\n[ \"$1\" = get_throttled ] && echo throttled=0x50005\n")
    tool.chmod(0o755)
    result = health.check_power(str(tmp_path / "absent"), vcgencmd=str(tool))
    assert result.level == "fault" and result.diagnostics["throttled"] == "0x50005"
    assert health.check_power(str(tmp_path / "absent"), vcgencmd="no-such-vcgencmd").level == "skipped"


def test_a_broken_check_becomes_a_fault_not_a_crash(log, tmp_path):
    def boom():
        raise RuntimeError("sensor driver bug")

    monitor = health.HealthMonitor(make_cfg(tmp_path / "state"), log.conn, log_id=log.log_id,
                                   providers={"fingerprint": boom})
    events = monitor.tick()
    finger = [e for e in events if e["part"] == "fingerprint"]
    assert [e["event"] for e in finger] == ["raised"]
    assert "sensor driver bug" in finger[0]["message"]
    assert monitor.last["database"].level == "ok"


# -- real parts unplugged and plugged back --------------------------------------------------------------


class FrameFeeder:
    """Writes changing frames into a folder, like a camera delivering pictures; stops while unplugged."""

    def __init__(self, folder: Path):
        self.folder, self.n = folder, 0
        self.plugged = threading.Event()
        self.plugged.set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        import cv2

        rng = np.random.default_rng(1)
        while not self.stop.wait(0.05):
            if self.plugged.is_set():
                self.folder.mkdir(exist_ok=True)
                img = rng.integers(40, 220, (48, 64, 3), dtype=np.uint8)
                cv2.imwrite(str(self.folder / f"{self.n:06d}.png"), img)
                self.n += 1


def test_camera_removed_raises_a_fault_within_10_s_and_clears_on_return(log, tmp_path):
    import drivers.camera as camera_mod
    folder = tmp_path / "frames"
    feeder = FrameFeeder(folder)
    folder.mkdir()
    feeder.thread.start()
    cam = camera_mod.from_settings(str(folder), 64, 48, 15.0, stall_seconds=1.0)
    cam.start()
    monitor = health.HealthMonitor(make_cfg(tmp_path / "state"), log.conn, log_id=log.log_id,
                                   providers={"camera": cam.health}, checks={})
    try:
        wait_for(lambda: cam.frames_grabbed > 3, 10, "the camera to deliver frames")
        monitor.tick()
        assert faults.open_faults(log.conn) == []

        feeder.plugged.clear()
        shutil.rmtree(folder)  # the camera is gone
        t0 = time.monotonic()
        opened = wait_for(lambda: monitor.tick() and faults.open_faults(log.conn), 10, "a camera fault", step=0.5)
        assert time.monotonic() - t0 < 10
        assert opened[0]["part"] == "camera" and opened[0]["category"] == "camera"
        assert opened[0]["diagnostics"]["faults"], opened[0]

        feeder.plugged.set()  # plugged back
        wait_for(lambda: (monitor.tick(), not faults.open_faults(log.conn))[1], 15,
                 lambda: f"the camera fault to clear: {faults.open_faults(log.conn)}", step=0.5)
        assert [e["event"] for e in faults.events(log.conn) if e["part"] == "camera"] == ["raised", "cleared"]
    finally:
        feeder.stop.set()
        cam.stop()
        feeder.thread.join(2)


def test_fingerprint_emulator_unplugged_raises_a_fault_and_clears_on_return(log, tmp_path):
    from drivers.fingerprint import emulator, registry
    from drivers.fingerprint.base import SensorError
    from terminal.config import Fingerprint

    link = tmp_path / "ttyFP"
    emu = emulator.FingerprintEmulator(link=link)
    emu.start()
    sensor = registry.from_config(Fingerprint(port=str(link), reply_timeout=0.5), call_deadline=2.0)

    def handshake() -> dict:  # the periodic sensor self-test: one cheap command
        try:
            sensor.info()
        except SensorError:
            pass
        return sensor.health()

    monitor = health.HealthMonitor(make_cfg(tmp_path / "state"), log.conn, log_id=log.log_id,
                                   providers={"fingerprint": handshake}, checks={})
    try:
        monitor.tick()
        assert faults.open_faults(log.conn) == [], monitor.last["fingerprint"]
        emu.stop()  # unplugged
        t0 = time.monotonic()
        opened = wait_for(lambda: monitor.tick() and faults.open_faults(log.conn), 10, "a fingerprint fault",
                          step=0.5)
        assert time.monotonic() - t0 < 10, "no fingerprint fault within 10 s"
        assert opened[0]["part"] == "fingerprint" and opened[0]["category"] == "fingerprint"
        assert str(link) in opened[0]["message"]
        emu = emulator.FingerprintEmulator(link=link)
        emu.start()  # plugged back
        wait_for(lambda: (monitor.tick(), not faults.open_faults(log.conn))[1], 10,
                 lambda: f"the fingerprint fault to clear: {faults.open_faults(log.conn)}", step=0.5)
    finally:
        sensor.close()
        emu.stop()


# -- disk filling up -------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MB file system (tmpfs) as the state directory; needs mount permission (root in CI)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mnt)], check=True,
                       capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a small tmpfs to fill ({e}); run as root to test a full disk")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def _fill_to(path: Path, free_mb: float, name: str):
    """Grow a ballast file until about free_mb remain."""
    with open(path / name, "ab") as f:
        while shutil.disk_usage(path).free / 1e6 > free_mb:
            try:
                f.write(b"\0" * 65536)
                f.flush()
            except OSError:
                break


def test_disk_warning_comes_before_punches_are_refused(small_disk):
    state = small_disk / "state"
    punchlog.init(state)
    cfg = make_cfg(state, disk_warn_mb=4.0, disk_critical_mb=1.5)
    with punchlog.PunchLog(state) as log:
        disk_only = {"disk": lambda: health.check_disk(state, cfg.health.disk_warn_mb, cfg.health.disk_critical_mb)}
        monitor = health.HealthMonitor(cfg, log.conn, log_id=log.log_id, checks=disk_only)
        monitor.tick()
        assert monitor.last["disk"].level == "ok"

        _fill_to(small_disk, 3.0, "ballast1")
        monitor.tick()
        assert monitor.last["disk"].level == "warning"
        log.append("199001", "pin")  # still accepted: the warning comes first
        assert [f["fault_key"] for f in faults.open_faults(log.conn)] == ["health:disk:warning"]
        assert "free space before punches are refused" in faults.open_faults(log.conn)[0]["message"]

        _fill_to(small_disk, 1.0, "ballast2")
        monitor.tick()
        assert [f["fault_key"] for f in faults.open_faults(log.conn)] == ["health:disk:fault"]
        assert "punches will be refused" in monitor.last["disk"].message

        _fill_to(small_disk, 0.0, "ballast3")
        with pytest.raises(StorageFull):  # only now is a punch refused
            for i in range(2000):
                log.append(f"2000{i}", "pin", photo_jpeg=os.urandom(20_000))

        monitor.tick()  # the disk is full: recording may fail, the checks must go on
        assert monitor.last["disk"].level == "fault"

        (small_disk / "ballast3").unlink()
        (small_disk / "ballast2").unlink()
        (small_disk / "ballast1").unlink()
        monitor.tick()
        assert monitor.last["disk"].level == "ok"
        assert faults.open_faults(log.conn) == []
        assert log.verify() == []


# -- presensi fault / status -----------------------------------------------------------------------------


def jpeg_bytes() -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.full((40, 60, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def test_fault_report_with_photo_then_list_and_status(config_file, tmp_path):
    photo = tmp_path / "kerusakan.jpg"
    photo.write_bytes(jpeg_bytes())
    event = presensi_json("fault", "report", "--category", "camera", "--message", "Kamera pecah terbentur",
                          "--photo", str(photo), "--reporter", "Diskominfo", config=config_file)
    assert event["event"] == "report" and event["category"] == "camera"
    stored = tmp_path / "state" / event["photo_path"]
    assert stored.read_bytes() == photo.read_bytes()
    import hashlib
    assert event["photo_sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()

    listed = presensi_json("fault", "list", "--all", config=config_file)
    assert [(e["id"], e["message"]) for e in listed] == [(event["id"], "Kamera pecah terbentur")]
    assert presensi_json("fault", "list", config=config_file) == []  # a report is not an open fault

    state = tmp_path / "state"
    with punchlog.PunchLog(state) as log:
        faults.raise_fault(log.conn, "health:fingerprint:fault", part="fingerprint", category="fingerprint",
                           message="no answer from /dev/serial0")
        audit = [r[0] for r in log.conn.execute("SELECT action FROM audit")]
    assert "fault.report" in audit
    report = presensi_json("status", config=config_file)
    assert report["faults"]["ok"] is False and report["faults"]["count"] == 1
    text = presensi("status", config=config_file).stdout
    assert "faults   PROBLEM  1 open: fingerprint (no answer from /dev/serial0)" in text


@pytest.mark.parametrize("args, expected", [
    (["--category", "kamera", "--message", "x"], "invalid choice: 'kamera'"),
    (["--category", "camera", "--message", "  "], "--message must not be empty"),
    (["--category", "camera", "--message", "x", "--photo", "/nonexistent.jpg"], "cannot read the photo"),
])
def test_fault_report_errors_say_what_to_do(config_file, args, expected):
    result = presensi("fault", "report", *args, config=config_file)
    assert result.returncode != 0
    assert expected in result.stderr


def test_fault_report_refuses_a_file_that_is_not_a_photo(config_file, tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not a picture")
    result = presensi("fault", "report", "--category", "screen", "--message", "layar mati", "--photo",
                      str(bogus), config=config_file)
    assert result.returncode == 1 and "not a JPEG or PNG" in result.stderr
    assert presensi_json("fault", "list", "--all", config=config_file) == []  # nothing half-recorded


def test_fault_check_runs_the_self_tests(tmp_path):
    cfg = write_config(tmp_path / "p.toml", tmp_path / "state",
                       extra="[health]\ndisk_warn_mb = 1e12\n")  # always "low": a visible warning
    assert presensi("init", config=cfg).returncode == 0
    out = presensi_json("fault", "check", config=cfg)
    assert out["results"]["disk"]["level"] == "warning" and out["results"]["database"]["level"] == "ok"
    assert "health:disk:warning" in [e["fault_key"] for e in out["events"]]
    again = presensi_json("fault", "check", config=cfg)
    assert again["events"] == []  # deduplicated across runs
    listed = json.loads(presensi("fault", "list", "--json", config=cfg).stdout)
    assert "health:disk:warning" in [e["fault_key"] for e in listed]


def test_slow_checks_run_at_their_own_pace(tmp_path):
    state = tmp_path / "state"
    punchlog.init(state)
    now = [1000.0]
    cfg = make_cfg(state)
    monitor = health.HealthMonitor.open(cfg)
    monitor.clock = lambda: now[0]
    calls = []
    monitor.checks = {"database": lambda: calls.append("db") or health.check_database(monitor.conn),
                      "disk": lambda: calls.append("disk") or health.check_disk(state, 0, 0)}
    try:
        monitor.tick()
        for _ in range(3):
            now[0] += 5
            monitor.tick()
        assert calls.count("db") == 1 and calls.count("disk") == 4  # quick_check every 600 s, disk every tick
        now[0] += 600
        monitor.tick()
        assert calls.count("db") == 2
    finally:
        monitor.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own the state directory by another user")
def test_root_is_told_to_report_as_the_service_user(config_file, tmp_path):
    state = tmp_path / "state"
    os.chown(state, 65534, 65534)  # as if installed for the `presensi` service user
    try:
        result = presensi("fault", "report", "--category", "camera", "--message", "retak", config=config_file)
        assert result.returncode != 0 and "sudo -u " in result.stderr and "so the daemon can keep" in result.stderr
        assert not (state / "photos").exists()
    finally:
        os.chown(state, 0, 0)


def test_a_part_that_hangs_is_reported_and_the_status_still_answers(tmp_path):
    """A part that never returns (a file system that does not answer) is named in the report; the other
    parts and the command still answer instead of waiting forever."""
    import threading
    import time as _time

    from conftest import write_config

    from terminal.config import load
    from terminal.log import punchlog
    from terminal.ops import status

    cfg = load(write_config(tmp_path / "presensi.toml", tmp_path / "state"))
    punchlog.init(cfg.state_dir)
    never = threading.Event()
    started = _time.monotonic()
    report = status._within("stuck", lambda c: never.wait() or {}, cfg, 0.5)
    assert report["ok"] is False and report["error"].startswith("no answer within")
    assert _time.monotonic() - started < 30
    full = status.collect(cfg, {"database": status.database_part, "stuck": lambda c: never.wait() or {}})
    assert full["database"]["ok"] is True and full["stuck"]["ok"] is False
