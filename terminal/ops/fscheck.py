"""What the kernel knows about the health of the file systems the terminal lives on: the ext4 error counters,
a read-only remount, and I/O errors in the kernel log. Plain data out; health.py turns it into a fault.

Why: the SD card is the first part of a Pi appliance to die, usually after power cuts. ext4 counts the
errors it found (in the superblock, so the count survives reboots until e2fsck clears it) and shows them in
/sys/fs/ext4/<device>/errors_count, first_error_time, first_error_func, last_error_time; a file system
mounted errors=remount-ro turns read-only; the block layer logs "I/O error, dev mmcblk0, sector ..." lines.
Each of these is visible long before the punch database itself fails.

The kernel log comes from one of three sources (`[health] kernel_log`): "journal" (journalctl -k of this
boot, which the service can read as a member of the systemd-journal group; ProtectKernelLogs= keeps it away
from /dev/kmsg), a path (a text file such as /var/log/kern.log, or the /dev/kmsg device itself), or "off".
Only lines about the devices of the checked file systems count, so a USB stick's error is not the SD card's.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

EXT4_SYSFS = "/sys/fs/ext4"
BLOCK_SYSFS = "/sys/dev/block"
COUNTERS = ("errors_count", "first_error_time", "first_error_func", "first_error_errcode", "last_error_time",
            "last_error_func", "last_error_errcode")
# Kernel messages that mean data may have been lost; "error count since last fsck" (printed at mount) is left
# to the counters, which say the same with numbers.
IO_ERROR = re.compile(r"I/O error|EXT4-fs error|EXT4-fs \([^)]*\): (Remounting filesystem read-only|"
                      r"failed to convert unwritten)|JBD2: .*[Ee]rror|error -\d+ (transferring|sending)|"
                      r"critical medium error|Aborting journal")
TAIL_BYTES = 256 * 1024  # of a text kernel log: the recent part
JOURNAL_LINES = "2000"
KEEP_LINES = 5


def block_names(path: str | os.PathLike) -> list[str]:
    """The block device names of the file system holding `path`: the partition and its disk
    (["mmcblk0p2", "mmcblk0"]); [] for a file system without a block device (tmpfs, overlay)."""
    dev = os.stat(path).st_dev
    node = Path(BLOCK_SYSFS, f"{os.major(dev)}:{os.minor(dev)}")
    if not node.exists():
        return []
    real = node.resolve()
    names = [real.name]
    if (real / "partition").exists():
        names.append(real.parent.name)
    return names


def ext4_counters(name: str, root: str = EXT4_SYSFS) -> dict | None:
    """The ext4 error counters of device `name`, or None when it is not an ext4 file system."""
    folder = Path(root, name)
    if not folder.is_dir():
        return None
    out: dict = {}
    for key in COUNTERS:
        try:
            text = (folder / key).read_text().strip()
        except OSError:
            continue
        out[key] = int(text) if text.lstrip("-").isdigit() else text
    return out


def filesystem(path: str | os.PathLike) -> dict:
    """What the kernel says about the file system holding `path`."""
    names = block_names(path)
    info: dict = {"path": str(path), "device": names[0] if names else None, "devices": names,
                  "read_only": bool(os.statvfs(path).f_flag & os.ST_RDONLY)}
    counters = ext4_counters(names[0]) if names else None
    info["ext4"] = counters is not None
    if counters is not None:
        info.update(counters)
    return info


def kernel_lines(source: str) -> tuple[list[str], str | None]:
    """Recent kernel messages from `source` and, when it cannot be read, why (else None)."""
    if source == "off":
        return [], None
    if source == "journal":
        return _journal()
    try:
        if stat.S_ISCHR(os.stat(source).st_mode):
            return _kmsg(source), None
        with open(source, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - TAIL_BYTES))
            return f.read().decode("utf-8", "replace").splitlines(), None
    except OSError as e:
        return [], f"{source}: {e.strerror}"


def _journal() -> tuple[list[str], str | None]:
    if shutil.which("journalctl") is None:
        return [], "journalctl is not installed"
    try:
        result = subprocess.run(["journalctl", "-k", "-b", "-p", "err", "-n", JOURNAL_LINES, "-o", "cat",
                                 "--no-pager"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], f"journalctl failed: {e}"
    if "insufficient permissions" in result.stderr or result.returncode != 0:
        return [], f"journalctl: {result.stderr.strip()[:200] or f'exit {result.returncode}'}"
    return result.stdout.splitlines(), None


def _kmsg(device: str) -> list[str]:
    """Every record the kernel's ring buffer still holds (/dev/kmsg: one "prio,seq,time,flags;text" per read)."""
    lines = []
    fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:  # records were overwritten while reading: go on with the next
                continue
            if not record:
                break
            lines.append(record.decode("utf-8", "replace").partition(";")[2].split("\n")[0])
    finally:
        os.close(fd)
    return lines


def io_errors(lines: list[str], devices: list[str]) -> list[str]:
    """The lines that report an I/O or file-system error on one of `devices` (whole words: sda is not sda1's)."""
    if not devices:
        return []
    names = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, devices)) + r")(?![\w-])")
    return [line.strip() for line in lines if IO_ERROR.search(line) and names.search(line)]


def inspect(paths: list[str | os.PathLike], kernel_log: str) -> dict:
    """The file systems of `paths` (each once) and the kernel's I/O error lines about their devices."""
    seen, systems = set(), []
    for path in paths:
        if not os.path.exists(path):
            continue
        info = filesystem(path)
        key = info["device"] or str(path)
        if key not in seen:
            seen.add(key)
            systems.append(info)
    devices = [d for info in systems for d in info["devices"]]
    lines, unreadable = kernel_lines(kernel_log)
    errors = io_errors(lines, devices)
    return {"filesystems": systems, "kernel_log": kernel_log, "kernel_log_error": unreadable,
            "io_errors": errors[-KEEP_LINES:], "io_error_count": len(errors)}
