"""The punch database's schema, as numbered migrations tracked in PRAGMA user_version.

Append new steps at the end of MIGRATIONS; never edit a released step. Each step runs in the same
transaction as the user_version bump, so a crash leaves the database at the old or the new version.
Tests migrate from every earlier version (tests/test_schema.py).
"""

from __future__ import annotations

import sqlite3


def _v1_punches(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    # rowid is the storage order; `seq` is the log's own numbering. verify compares the two.
    db.execute(
        """CREATE TABLE punches (
            seq INTEGER NOT NULL UNIQUE,
            log_id TEXT NOT NULL,
            employee TEXT NOT NULL,
            method TEXT NOT NULL,
            kind TEXT NOT NULL DEFAULT '',
            details TEXT NOT NULL DEFAULT '{}',
            boot_id TEXT NOT NULL,
            monoraw_ns INTEGER NOT NULL,
            boottime_ns INTEGER NOT NULL,
            realtime_ns INTEGER NOT NULL,
            timex_status INTEGER,
            maxerror_us INTEGER,
            latitude REAL,
            longitude REAL,
            photo_path TEXT,
            photo_sha256 TEXT,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )"""
    )


def _v2_checkpoints_and_audit(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE checkpoints (
            id INTEGER PRIMARY KEY,
            log_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL,
            signed_realtime_ns INTEGER NOT NULL,
            public_key TEXT NOT NULL,
            signature TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            realtime_ns INTEGER NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            details TEXT NOT NULL DEFAULT '{}'
        )"""
    )


def _v3_append_only_triggers(db: sqlite3.Connection) -> None:
    # Defence in depth against our own bugs: the program has no UPDATE or DELETE of these tables, and
    # SQLite refuses one if it ever appears. (Anyone with the file can drop the trigger; the hash chain
    # and signed checkpoints are what prove integrity.)
    for table in ("punches", "checkpoints", "audit"):
        for op in ("UPDATE", "DELETE"):
            db.execute(
                f"""CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table}
                    BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"""
            )


MIGRATIONS = [_v1_punches, _v2_checkpoints_and_audit, _v3_append_only_triggers]
LATEST = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The database was written by a newer version of presensi-edge."""


def migrate(db: sqlite3.Connection, target: int = LATEST) -> int:
    """Bring the database to `target`; returns the version it started at."""
    start = db.execute("PRAGMA user_version").fetchone()[0]
    if start > LATEST:
        raise SchemaTooNew(
            f"the database has schema version {start}, this presensi-edge knows up to {LATEST}; "
            "install the newer version that wrote it"
        )
    for version in range(start + 1, target + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] >= version:  # another process did it
                db.execute("ROLLBACK")
                continue
            MIGRATIONS[version - 1](db)
            db.execute(f"PRAGMA user_version = {version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return start
