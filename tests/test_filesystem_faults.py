"""File-system errors as faults (terminal/ops/fscheck.py, the `filesystem` check of terminal/ops/health.py):
what a Pi whose SD card was damaged by power cuts shows IT staff.

Real parts: a real ext4 file system on a loop device (tests/fullfs.py) whose superblock error counter is set
with debugfs before it is mounted, exactly as ext4 leaves it after it found errors, so the kernel reports the
counters in /sys/fs/ext4/<dev>/ itself; e2fsck then clears them as it would on the Pi; a real read-only
remount. The kernel log is a readable file of kernel lines (`[health] kernel_log`), the same text journalctl
or /var/log/kern.log give on the Pi.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import presensi, write_config
from fullfs import FullDisk
from fullfs import write_config as write_disk_config

from terminal import config
from terminal.app.daemon import Daemon
from terminal.log import punchlog
from terminal.web import ensure_admin_password


@pytest.fixture
def disk():
    d = FullDisk()
    try:
        yield d
    finally:
        d.close()


def sh(*cmd: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(cmd)}: {result.stderr or result.stdout}"


def remount_with(disk: FullDisk, *debugfs_commands: str, fsck: bool = False) -> None:
    """Unmount the disk, change its superblock (debugfs) or repair it (e2fsck), mount it again."""
    sh("umount", str(disk.mnt))
    for command in debugfs_commands:
        sh("debugfs", "-w", "-R", command, str(disk.image))
    if fsck:
        result = subprocess.run(["e2fsck", "-f", "-y", str(disk.image)], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode in (0, 1), result.stdout + result.stderr  # 1 = errors corrected
    sh("mount", "-o", "loop", str(disk.image), str(disk.mnt))


def device_of(path: Path) -> str:
    """The block device name of the file system holding `path`, read from sysfs."""
    dev = os.stat(path).st_dev
    return Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve().name


def fault_check(run, config: Path) -> tuple[int, dict]:
    result = run("fault", "check", "--json", config=config)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_ext4_errors_on_the_state_partition_are_a_fault_until_e2fsck_clears_them(disk, tmp_path):
    quiet_log = tmp_path / "kern.log"
    quiet_log.write_text("")
    cfg = write_disk_config(disk, f'[health]\nkernel_log = "{quiet_log}"\n')
    os.chmod(tmp_path, 0o755)
    os.chmod(quiet_log, 0o644)
    assert disk.presensi("init", config=cfg).returncode == 0
    code, report = fault_check(disk.presensi, cfg)
    assert report["results"]["filesystem"]["level"] == "ok", report["results"]["filesystem"]

    # a power cut: ext4 found errors and counted them in the superblock (what the Pi boots with)
    remount_with(disk, "ssv error_count 3", "ssv first_error_time 20261201120000",
                 "ssv first_error_func ext4_journal_check_start", "ssv last_error_time 20261201121500")
    code, report = fault_check(disk.presensi, cfg)
    fs = report["results"]["filesystem"]
    assert code == 1 and fs["level"] == "fault" and fs["category"] == "disk"
    assert f"{device_of(disk.mnt)} ({disk.mnt / 'state'}): ext4 counted 3 error(s) since the last e2fsck" \
        in fs["message"]
    assert "2026-12-01 12:00 UTC in ext4_journal_check_start" in fs["message"]
    assert "presensi export" in fs["message"] and "fsck" in fs["message"]
    assert "kartu SD" in fs["screen"] and "Hubungi Diskominfo" in fs["screen"]
    raised = [e for e in report["events"] if e["fault_key"] == "health:filesystem:fault"]
    assert raised and raised[0]["event"] == "raised" and "kartu SD" in raised[0]["diagnostics"]["screen"]
    assert fault_check(disk.presensi, cfg)[1]["events"] == []  # still broken: one fault, not one per check

    remount_with(disk, fsck=True)  # what IT staff do: e2fsck, which clears the counter
    code, report = fault_check(disk.presensi, cfg)
    assert report["results"]["filesystem"]["level"] == "ok", report["results"]["filesystem"]
    assert [e["event"] for e in report["events"] if e["fault_key"] == "health:filesystem:fault"] == ["cleared"]
    listed = presensi("fault", "list", "--json", config=cfg)
    assert all(e["fault_key"] != "health:filesystem:fault" for e in json.loads(listed.stdout))


def test_a_state_partition_remounted_read_only_shows_in_status(disk, tmp_path):
    cfg = write_disk_config(disk, '[health]\nkernel_log = "off"\n')
    assert disk.presensi("init", config=cfg).returncode == 0
    sh("mount", "-o", "remount,ro", str(disk.mnt))  # what errors=remount-ro does after an error
    result = disk.presensi("status", "--json", config=cfg)
    fs = json.loads(result.stdout)["health"]["parts"]["filesystem"]
    assert fs["level"] == "fault" and "mounted read-only" in fs["message"], fs
    assert "hanya-baca" in fs["screen"]


def test_io_errors_of_the_state_device_in_the_kernel_log_are_a_fault(tmp_path):
    device = device_of(tmp_path)
    kern = tmp_path / "kern.log"
    kern.write_text(
        "[  12.345] usb 1-1.3: new high-speed USB device number 4 using dwc_otg\n"
        "[ 812.001] I/O error, dev sdz, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 2\n"
        f"[ 903.417] I/O error, dev {device}, sector 1234567 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 2\n"
        f"[ 903.420] Buffer I/O error on dev {device}, logical block 98765, lost async page write\n")
    cfg = write_config(tmp_path / "p.toml", tmp_path / "state", f'[health]\nkernel_log = "{kern}"\n')
    assert presensi("init", config=cfg).returncode == 0
    code, report = fault_check(presensi, cfg)
    fs = report["results"]["filesystem"]
    assert code == 1 and fs["level"] == "fault"
    assert "2 I/O error line(s) in the kernel log" in fs["message"], fs["message"]  # not the USB stick's sdz
    assert "Buffer I/O error on dev" in fs["message"]
    lines = fs["diagnostics"]["io_errors"]
    assert fs["diagnostics"]["io_error_count"] == 2 and all("sdz" not in line for line in lines)


def test_a_kernel_log_that_cannot_be_read_is_a_warning_not_silence(tmp_path):
    cfg = write_config(tmp_path / "p.toml", tmp_path / "state", f'[health]\nkernel_log = "{tmp_path / "nope"}"\n')
    assert presensi("init", config=cfg).returncode == 0
    code, report = fault_check(presensi, cfg)
    fs = report["results"]["filesystem"]
    assert fs["level"] == "warning" and "kernel log cannot be read" in fs["message"]
    assert "systemd-journal" in fs["message"]


def test_the_admin_page_says_in_bahasa_indonesia_that_the_sd_card_is_failing(tmp_path):
    """The daemon's own health loop finds the I/O errors; IT staff read the fault on the admin page."""
    state = tmp_path / "state"
    kern = tmp_path / "kern.log"
    kern.write_text(f"[ 903.417] I/O error, dev {device_of(tmp_path)}, sector 1234567 op 0x1:(WRITE) flags 0x800\n")
    punchlog.init(state)
    password = ensure_admin_password(state)
    cfg = config.from_dict({"device": {"id": "fs-01"}, "paths": {"state_dir": str(state)},
                            "web": {"listen": "127.0.0.1:0"}, "camera": {"enabled": False},
                            "health": {"kernel_log": str(kern), "interval": 0.5}})
    daemon = Daemon(cfg)
    thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: daemon.web_port or not thread.is_alive()) and daemon.web_port
        base = f"http://127.0.0.1:{daemon.web_port}"
        session = requests.Session()
        page = session.get(base + "/admin/login", timeout=10)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = session.post(base + "/admin/login", data={"csrf": csrf, "password": password}, timeout=10)
        assert r.status_code == 200 and r.url.endswith("/admin/"), r.text[:300]

        def faults_table() -> str:
            text = session.get(base + "/admin/", timeout=10).text
            return text[text.index("id='faults'"):]

        assert wait_until(lambda: "Penyimpanan (kartu SD) bermasalah" in faults_table()), faults_table()
        parts = session.get(base + "/admin/", timeout=10).text
        assert "Hubungi Diskominfo" in parts[parts.index("id='parts'"):parts.index("id='faults'")]
    finally:
        daemon.stop_event.set()
        thread.join(20)


def wait_until(pred, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False
