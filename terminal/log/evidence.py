"""Photo evidence for punches: written and fsynced before the punch record that names it commits.

Files are named by their sha256 so a retried punch never writes a second copy, and the record keeps the
hash (inside the chain) even after the retention period has deleted the file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from terminal import durable
from terminal.errors import StorageError, StorageFull

PHOTO_DIR = "photos"
BUILD_EPOCH = 1_790_000_000  # 2026-09: no correct clock reads earlier than this software


@dataclass(frozen=True)
class StoredPhoto:
    relative_path: str
    sha256: str


class EvidenceError(StorageError):
    """The photo could not be written for another reason than a full disk."""


def store_photo(state_dir: Path, jpeg: bytes) -> StoredPhoto:
    digest = hashlib.sha256(jpeg).hexdigest()
    day = time.strftime("%Y%m%d", time.gmtime())
    rel = f"{PHOTO_DIR}/{day}/{digest}.jpg"
    path = Path(state_dir) / rel
    if path.exists():
        return StoredPhoto(rel, digest)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        # inside the handling: the day's first photo creates its folder, and on a full disk that is the
        # write that fails (a directory needs a block of its own)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(jpeg)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        durable.fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(
                f"{path.parent}: the disk is full; the punch was NOT recorded. Free space and retry"
            ) from None
        raise EvidenceError(
            f"{path}: cannot store the punch photo ({e.strerror}); the punch was NOT recorded"
        ) from None
    return StoredPhoto(rel, digest)


def delete_older_than(state_dir: Path, keep_days: int, now: float | None = None) -> int:
    """Retention: remove photo day-folders older than keep_days. Returns how many files were removed."""
    root = Path(state_dir) / PHOTO_DIR
    if not root.exists():
        return 0
    now = now or time.time()
    if now < BUILD_EPOCH:  # a clock in 1970 would make every photo look ancient: keep them
        return 0
    cutoff = time.strftime("%Y%m%d", time.gmtime(now - keep_days * 86400))
    removed = 0
    for day in sorted(root.iterdir()):
        if day.is_dir() and day.name.isdigit() and (day.name < cutoff or keep_days == 0):
            for f in day.iterdir():
                f.unlink(missing_ok=True)
                removed += 1
            day.rmdir()
    return removed
