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


@dataclass(frozen=True)
class RetentionResult:
    """What one retention run did; `cap_removed_protected` > 0 means evidence was lost to the disk cap."""

    removed: int = 0  # files past keep_days that nothing needed any more
    kept_protected: int = 0  # files past keep_days kept: an unacknowledged punch or an open fault needs them
    cap_removed: int = 0  # files removed (oldest first) because photos exceeded the disk cap
    cap_removed_protected: int = 0  # of those, files that were still protected
    total_bytes: int = 0  # photo bytes left afterwards

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def apply_retention(state_dir: Path, keep_days: int, protected: set[str], *, max_bytes: int = 0,
                    now: float | None = None) -> RetentionResult:
    """Retention: delete photos older than keep_days (0: any age) unless `protected` names them (relative
    paths, as punch records and fault events store them); then, if photos still take more than max_bytes
    (0: no cap), delete the oldest until they fit, protected or not: a full disk would refuse every punch.
    Today's folder is never removed (a punch may be writing into it); nothing but *.jpg / *.png is touched."""
    root = Path(state_dir) / PHOTO_DIR
    if not root.exists():
        return RetentionResult()
    now = now or time.time()
    if now < BUILD_EPOCH:  # a clock in 1970 would make every photo look ancient: keep them
        return RetentionResult(total_bytes=_total_bytes(_photo_files(root)))
    today = time.strftime("%Y%m%d", time.gmtime(now))
    cutoff = time.strftime("%Y%m%d", time.gmtime(now - keep_days * 86400))
    removed = kept = 0
    for day, f in _photo_files(root):
        if not (day < cutoff or keep_days == 0):
            continue
        if f"{PHOTO_DIR}/{day}/{f.name}" in protected:
            kept += 1
            continue
        f.unlink(missing_ok=True)
        removed += 1
    cap_removed = cap_protected = 0
    files = _photo_files(root)
    total = _total_bytes(files)
    for day, f in files:  # oldest day first
        if not max_bytes or total <= max_bytes:
            break
        size = _size(f)
        f.unlink(missing_ok=True)
        total -= size
        cap_removed += 1
        cap_protected += f"{PHOTO_DIR}/{day}/{f.name}" in protected
    _remove_empty_days(root, today)
    return RetentionResult(removed, kept, cap_removed, cap_protected, total)


def _photo_files(root: Path) -> list[tuple[str, Path]]:
    """(day folder name, file) of every stored photo, oldest first: by day folder, then by when written."""
    out = []
    for day in sorted(root.iterdir()):
        if day.is_dir() and day.name.isdigit():
            files = [f for f in day.iterdir() if f.suffix in (".jpg", ".png")]
            out += [(day.name, f) for f in sorted(files, key=lambda f: (_mtime_ns(f), f.name))]
    return out


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _total_bytes(files: list[tuple[str, Path]]) -> int:
    return sum(_size(f) for _, f in files)


def _remove_empty_days(root: Path, today: str) -> None:
    for day in root.iterdir():
        if day.is_dir() and day.name.isdigit() and day.name < today:
            try:
                day.rmdir()  # only succeeds when empty
            except OSError:
                pass
