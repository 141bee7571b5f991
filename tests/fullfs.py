"""A real full disk for tests: a small ext4 file system on a loop device, filled by a non-root user.

Why ext4 and why not root: ext4 keeps 5 % of its blocks for root (and for CAP_SYS_RESOURCE), so a full disk
that root fills still takes root's writes, and a tmpfs has no reserve and no directory blocks at all - the
terminal runs as the `presensi` user on ext4, and only that shows the failures a Pi shows. The test user is
uid 65534 (nobody) without CAP_SYS_RESOURCE; it keeps CAP_DAC_READ_SEARCH only, to read the interpreter and
the checkout wherever they live (CI's Python may sit under /root, which is 0700). Every write it makes is
checked as nobody's.

Tests run as root (CI does): a machine that cannot mount a loop device fails these tests with the reason;
they are never skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

UID = GID = 65534
SIZE_MB = 16
AS_USER = ["setpriv", f"--reuid={UID}", f"--regid={GID}", "--clear-groups", "--inh-caps=-all,+dac_read_search",
           "--ambient-caps=+dac_read_search", "--bounding-set=-all,+dac_read_search"]
REPO = Path(__file__).resolve().parents[1]

FILL = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
for size in (1 << 20, 65536, 4096, 512, 1):
    while True:
        try:
            os.write(fd, b"\\0" * size)
        except OSError:
            break
os.fsync(fd)
"""


def _run(cmd: list[str], what: str) -> None:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as e:
        pytest.fail(f"{what}: {e} (install e2fsprogs, mount and util-linux: scripts/test.sh does)")
    if result.returncode != 0:
        pytest.fail(f"{what} failed: {' '.join(cmd)}: {result.stderr.strip() or result.stdout.strip()}")


class FullDisk:
    """An ext4 file system mounted at `mnt` (owned by the test user), fillable and freeable on demand."""

    def __init__(self, root_reserve: bool = True):
        """`root_reserve=False` makes the file system without root's 5 % (mkfs.ext4 -m 0), for a daemon that
        runs inside the test process (as root): then a full disk is full for root too."""
        if os.geteuid() != 0:
            pytest.fail("the full-disk tests mount an ext4 image on a loop device and need root "
                        "(CI runs the suite as root; run them with sudo)")
        self.root = Path(tempfile.mkdtemp(prefix="presensi-fullfs-"))
        os.chmod(self.root, 0o755)  # the test user must reach the mount point and its config files
        self.image = self.root / "disk.img"
        self.mnt = self.root / "mnt"
        self.mnt.mkdir()
        self.mounted = False
        with open(self.image, "wb") as f:
            f.truncate(SIZE_MB << 20)
        reserve = [] if root_reserve else ["-m", "0"]
        self.root_reserve = root_reserve
        _run(["mkfs.ext4", "-q", "-F", *reserve, "-E", f"root_owner={UID}:{GID}", str(self.image)], "mkfs.ext4")
        _run(["mount", "-o", "loop", str(self.image), str(self.mnt)], "mount -o loop (a loop device)")
        self.mounted = True
        self.filler = self.mnt / "filler"

    def user_dir(self, name: str) -> Path:
        """A folder outside the small file system that the test user may write (the "USB stick")."""
        path = self.root / name
        path.mkdir(exist_ok=True)
        os.chown(path, UID, GID)
        return path

    def run(self, *cmd: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        """Run a command as the test user, from the checkout (so `-m terminal.cli` is this tree)."""
        return subprocess.run([*AS_USER, *cmd], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env=self.env(), **kw)

    def popen(self, *cmd: str, **kw) -> subprocess.Popen:
        return subprocess.Popen([*AS_USER, *cmd], cwd=REPO, env=self.env(), **kw)

    def env(self) -> dict:
        # no bytecode: the test user cannot write __pycache__ in root's checkout, and must not try
        return {**os.environ, "HOME": str(self.root), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONFAULTHANDLER": "1"}

    def presensi(self, *args: str, config: Path, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "terminal.cli", "-c", str(config), *args, timeout=timeout)

    def fill(self) -> None:
        """Fill the file system as the test user (as root without a root reserve), until not one more byte
        fits."""
        cmd = (sys.executable, "-c", FILL, str(self.filler))
        result = self.run(*cmd) if self.root_reserve else subprocess.run(cmd, capture_output=True, text=True,
                                                                          timeout=120)
        assert result.returncode == 0, result.stderr
        st = os.statvfs(self.mnt)
        assert st.f_bavail == 0, f"{st.f_bavail} blocks still available to the test user"
        if self.root_reserve:  # (without the reserve, root's own writes stopped: the disk is full for root)
            assert st.f_bfree * st.f_frsize > 256 * 1024, "root's reserve is used up: the test user wrote as root"

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        if self.mounted:
            if subprocess.run(["umount", str(self.mnt)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)
            self.mounted = False
        shutil.rmtree(self.root, ignore_errors=True)


def write_config(disk: FullDisk, extra: str = "", device_id: str = "full-01") -> Path:
    """A configuration whose state directory is on the small file system, readable by the test user."""
    path = disk.root / "presensi.toml"
    path.write_text(f'[device]\nid = "{device_id}"\n\n[paths]\nstate_dir = "{disk.mnt / "state"}"\n{extra}')
    os.chmod(path, 0o644)
    return path
