"""Small helpers for files that must survive a power cut: fsync a directory after creating or renaming a
file in it (the rename itself is only durable once the directory is), and write a file atomically."""

from __future__ import annotations

import os


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
