"""Errors of the punch log and its storage. Each message says what happened and what to do."""


class LogError(Exception):
    """A punch-log error whose message tells the user what to do."""


class NotInitialised(LogError):
    """No database (or no log_id) in state_dir: `presensi init` has not run."""


class CorruptDatabase(LogError):
    """SQLite reports the file damaged; presensi refuses to write to it."""


class StorageFull(LogError):
    """The disk is full; the punch was not recorded."""


class StorageError(LogError):
    """Another storage failure (I/O error, read-only file system)."""
