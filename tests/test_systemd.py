"""The operating-system side: the unit verifies and is hardened (systemd-analyze), the udev rule is well
formed, and install-pi.sh edits a Raspberry Pi OS boot partition correctly and idempotently."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO

UNIT = REPO / "systemd" / "presensi.service"
RULES = REPO / "systemd" / "60-presensi.rules"
INSTALL = REPO / "systemd" / "install-pi.sh"
STORAGE = REPO / "systemd" / "pi-storage.sh"
KIOSK = REPO / "systemd" / "presensi-kiosk"


def analyze(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`, in scripts/test.sh APT_PACKAGES)")
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


def unit_for_test(tmp_path, text: str | None = None):
    """The unit with ExecStart pointing at this checkout's `presensi` (verify checks the binary exists)."""
    text = text if text is not None else UNIT.read_text()
    exe = shutil.which("presensi") or str(REPO / ".venv" / "bin" / "presensi")
    if not shutil.os.access(exe, shutil.os.X_OK):
        exe = sys.executable
    path = tmp_path / "presensi.service"
    path.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={exe}", text, flags=re.M))
    return path


def test_unit_verifies(tmp_path):
    result = analyze("verify", "--man=no", "--recursive-errors=no", str(unit_for_test(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "presensi.service" not in result.stderr, result.stderr  # no warnings about our unit either


def test_verify_would_catch_a_misspelt_key(tmp_path):
    broken = UNIT.read_text().replace("WatchdogSec=", "WatchdogSecs=")
    result = analyze("verify", "--man=no", "--recursive-errors=no", str(unit_for_test(tmp_path, broken)))
    assert result.returncode != 0 and "WatchdogSecs" in result.stderr


def test_security_exposure_is_at_most_2_5(tmp_path):
    result = analyze("security", "--offline=yes", "--threshold=25", str(unit_for_test(tmp_path)))
    m = re.search(r"Overall exposure level for presensi\.service: (\d+\.\d)", result.stdout)
    assert m, result.stdout + result.stderr
    assert float(m.group(1)) <= 2.5, result.stdout
    assert result.returncode == 0


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_has_the_lifecycle_and_device_access_the_terminal_needs():
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["Restart"] == ["always"] and d["WatchdogSec"] == ["30s"]
    assert d["User"] == ["presensi"] and d["SupplementaryGroups"] == ["video dialout gpio systemd-journal"]
    assert d["StateDirectory"] == ["presensi"] and d["ProtectSystem"] == ["strict"]
    assert d["NoNewPrivileges"] == ["yes"] and d["DevicePolicy"] == ["closed"]
    allowed = {v.split()[0] for v in d["DeviceAllow"]}
    assert {"char-video4linux", "char-ttyS", "char-ttyAMA", "char-ttyUSB", "char-ttyACM", "char-gpiochip"} <= allowed
    assert "adjtimex" in d["SystemCallFilter"]  # clock.read() reads the kernel's sync status
    assert "time-set.target" in " ".join(d["After"])
    assert "network-online" not in UNIT.read_text().replace("never wait for the network", "")
    assert "PrivateDevices" not in d and "ProtectClock" not in d  # they would hide the camera / adjtimex


UDEV_KEYS = {"SUBSYSTEM", "KERNEL", "ENV", "ATTR", "ATTRS", "SYMLINK", "GROUP", "MODE", "ACTION", "DRIVERS"}


def test_udev_rule_is_well_formed_and_names_the_devices():
    symlinks = set()
    for n, line in enumerate(RULES.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        for item in (i.strip() for i in line.split(", ")):
            m = re.fullmatch(r'([A-Z]+)(\{[A-Za-z0-9_]+\})?(==|!=|\+=|=)"([^"]*)"', item)
            assert m, f"{RULES.name}:{n}: cannot parse {item!r}"
            key, _, op, value = m.groups()
            assert key in UDEV_KEYS, f"{RULES.name}:{n}: unknown key {key}"
            if key in ("SYMLINK", "GROUP", "MODE"):
                assert op in ("=", "+="), f"{RULES.name}:{n}: {key} must be assigned, not matched"
            if key == "SYMLINK":
                symlinks.add(value)
    assert symlinks == {"presensi-fingerprint", "presensi-camera"}


BOOKWORM_CONFIG = """\
# For more options and information see http://rptl.io/configtxt
dtparam=audio=on
camera_auto_detect=1
display_auto_detect=1
auto_initramfs=1
dtoverlay=vc4-kms-v3d
max_framebuffers=2
arm_64bit=1

[cm4]
otg_mode=1

[cm5]
dtoverlay=dwc2,dr_mode=host
"""
CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes "
           "rootwait quiet splash\n")


def boot_partition(tmp_path, config: str = BOOKWORM_CONFIG, cmdline: str = CMDLINE):
    boot = tmp_path / "root" / "boot" / "firmware"
    boot.mkdir(parents=True)
    (boot / "config.txt").write_text(config)
    (boot / "cmdline.txt").write_text(cmdline)
    return boot


def run_install(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=60)


def active_all_section(config: str) -> dict[str, list[str]]:
    section, out = "all", {}
    for line in config.splitlines():
        s = line.strip()
        if s.startswith("["):
            section = s[1:-1]
        elif section == "all" and "=" in s and not s.startswith("#"):
            k, _, v = s.partition("=")
            out.setdefault(k, []).append(v)
    return out


def test_install_sets_the_uart_for_the_sensor_and_is_idempotent(tmp_path):
    boot = boot_partition(tmp_path)
    first = run_install("--boot-only", "--root", str(tmp_path / "root"))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "changed"
    cmdline = (boot / "cmdline.txt").read_text()
    assert "console=serial0" not in cmdline and "console=tty1" in cmdline and cmdline.count("\n") == 1
    config = (boot / "config.txt").read_text()
    active = active_all_section(config)
    assert active["enable_uart"] == ["1"] and "disable-bt" in active["dtoverlay"]
    assert active["camera_auto_detect"] == ["1"]  # already there: not added twice
    assert config.count("camera_auto_detect") == 1
    assert (boot / "config.txt.presensi.bak").read_text() == BOOKWORM_CONFIG  # the original is kept

    second = run_install("--boot-only", "--root", str(tmp_path / "root"))
    assert second.stdout.strip() == "unchanged"
    assert (boot / "config.txt").read_text() == config


def test_install_switches_a_disabled_uart_and_respects_model_sections(tmp_path):
    config = "[all]\nenable_uart=0\n[pi4]\narm_boost=1\n"
    boot = boot_partition(tmp_path, config=config, cmdline="console=ttyAMA0,115200 root=/dev/mmcblk0p2\n")
    result = run_install("--boot-only", "--root", str(tmp_path / "root"), "--uart", "miniuart", "--camera", "usb")
    assert result.returncode == 0, result.stderr
    text = (boot / "config.txt").read_text()
    assert active_all_section(text).get("enable_uart") == ["1"] and "enable_uart=0" not in text
    assert "disable-bt" not in text  # the mini UART keeps Bluetooth
    assert "arm_boost=1" in text and active_all_section(text).get("arm_boost") is None  # still only [pi4]
    assert (boot / "cmdline.txt").read_text() == "root=/dev/mmcblk0p2\n"


def test_install_refuses_bad_options_and_a_missing_boot_partition(tmp_path):
    bad = run_install("--boot-only", "--root", str(tmp_path), "--uart", "bluetooth")
    assert bad.returncode != 0 and "--uart must be pl011, miniuart or usb" in bad.stderr
    missing = run_install("--boot-only", "--root", str(tmp_path))
    assert missing.returncode != 0 and "is this Raspberry Pi OS?" in missing.stderr


@pytest.mark.parametrize("script", [INSTALL, STORAGE, KIOSK])
def test_install_script_parses_and_passes_shellcheck(script):
    assert subprocess.run(["bash", "-n", str(script)], timeout=30).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed; bash -n passed")
    result = subprocess.run(["shellcheck", "-S", "warning", str(script)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout


PI_FSTAB = """\
proc            /proc           proc    defaults          0       0
PARTUUID=4e639091-01  /boot/firmware  vfat    defaults          0       2
PARTUUID=4e639091-02  /               ext4    defaults          0       1
"""


def pi_root(tmp_path):
    boot_partition(tmp_path, cmdline=CMDLINE.replace("fsck.repair=yes", "fsck.repair=no"))
    root = tmp_path / "root"
    (root / "etc").mkdir()
    (root / "etc" / "fstab").write_text(PI_FSTAB)
    return root


def run_storage(root, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(STORAGE), "--root", str(root), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PI_STORAGE_UUID": "5a1e-ca4d"})


def fstab_entries(root) -> dict[str, list[str]]:
    return {f[1]: f for line in (root / "etc" / "fstab").read_text().splitlines()
            if len(f := line.split()) >= 4 and not line.startswith("#")}


def test_pi_storage_moves_the_punches_to_their_own_partition_and_spares_the_sd_card(tmp_path):
    root = pi_root(tmp_path)
    args = ("--state-device", "/dev/sda1", "--noatime", "--fsck-repair", "--read-only-root")
    result = run_storage(root, *args)
    assert result.returncode == 0, result.stderr
    entries = fstab_entries(root)
    state = entries["/var/lib/presensi"]
    assert state[0] == "UUID=5a1e-ca4d" and state[2] == "ext4"
    assert {"noatime", "nofail", "errors=remount-ro"} <= set(state[3].split(","))
    assert "noatime" in entries["/"][3].split(",") and "noatime" in entries["/boot/firmware"][3].split(",")
    assert entries["/proc"][3] == "defaults"  # other entries untouched
    dropin = (root / "etc/systemd/system/presensi.service.d/state-mount.conf").read_text()
    assert "RequiresMountsFor=/var/lib/presensi" in dropin  # never punches onto the SD card underneath
    journald = (root / "etc/systemd/journald.conf.d/presensi-volatile.conf").read_text()
    assert "Storage=volatile" in journald and "RuntimeMaxUse=32M" in journald
    cmdline = (tmp_path / "root" / "boot" / "firmware" / "cmdline.txt").read_text()
    assert "fsck.repair=yes" in cmdline.split() and "fsck.repair=no" not in cmdline and cmdline.count("\n") == 1
    assert "enable_overlayfs" in result.stdout

    fstab = (root / "etc" / "fstab").read_text()
    again = run_storage(root, *args)
    assert again.returncode == 0 and (root / "etc" / "fstab").read_text() == fstab  # running it again is safe
    assert (tmp_path / "root" / "boot" / "firmware" / "cmdline.txt").read_text() == cmdline


def test_pi_storage_refuses_a_read_only_root_while_the_punches_live_on_it(tmp_path):
    root = pi_root(tmp_path)
    result = run_storage(root, "--read-only-root")
    assert result.returncode != 0
    assert "the punches would live in RAM" in result.stderr and "--state-device" in result.stderr
    assert not (root / "etc" / "systemd").exists()  # refused before anything changed
    assert (root / "etc" / "fstab").read_text() == PI_FSTAB


def test_kiosk_launcher_waits_for_the_page_and_restarts_a_crashed_browser(tmp_path):
    browser_log = tmp_path / "browser.log"
    browser = tmp_path / "chromium"
    browser.write_text(f"#!/bin/sh\necho \"$*\" >> {browser_log}\nexit 1\n")  # a browser that crashes at once
    browser.chmod(0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    stderr = tmp_path / "kiosk.err"
    env = {**os.environ, "PRESENSI_KIOSK_BROWSER": str(browser), "PRESENSI_KIOSK_RESTART_DELAY": "0.1"}
    with open(stderr, "w") as err:
        proc = subprocess.Popen(["bash", str(KIOSK), url], stdout=subprocess.DEVNULL, stderr=err, env=env,
                                start_new_session=True)
    try:
        assert wait_until(lambda: "waiting for" in stderr.read_text()), stderr.read_text()
        assert not browser_log.exists()  # no "site can't be reached" page: the daemon is not up yet
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            assert wait_until(lambda: browser_log.exists() and len(browser_log.read_text().splitlines()) >= 3), \
                stderr.read_text()
        finally:
            server.shutdown()
            server.server_close()
        first = browser_log.read_text().splitlines()[0].split()
        assert "--kiosk" in first and "--noerrdialogs" in first and first[-1] == url
        assert "exited with status 1; starting it again" in stderr.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def wait_until(pred, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False
