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


def _sync_state(db: sqlite3.Connection) -> None:
    # The push client's high-water marks (one row per central server, stream and log) and a short,
    # trimmed history of delivery attempts for `presensi sync status`. Not hash-chained: derived state.
    db.execute(
        """CREATE TABLE sync_state (
            target TEXT NOT NULL,
            stream TEXT NOT NULL,
            log_id TEXT NOT NULL,
            acked_seq INTEGER NOT NULL DEFAULT 0,
            updated_realtime_ns INTEGER NOT NULL,
            PRIMARY KEY (target, stream, log_id)
        )"""
    )
    db.execute(
        """CREATE TABLE sync_attempts (
            id INTEGER PRIMARY KEY,
            target TEXT NOT NULL,
            kind TEXT NOT NULL,
            started_realtime_ns INTEGER NOT NULL,
            duration_ms INTEGER NOT NULL,
            ok INTEGER NOT NULL,
            http_status INTEGER,
            sent INTEGER NOT NULL DEFAULT 0,
            acked_seq INTEGER,
            error TEXT
        )"""
    )


def _fault_events(db: sqlite3.Connection) -> None:
    # Contract C5: append-only fault history (raised/cleared by the health checks, reports by IT staff);
    # the push client sends rows with id above its "faults" high-water mark. The index serves the
    # schedule's look-up of an employee's recent punches (repeat detection) without a scan of the log.
    db.execute(
        """CREATE TABLE fault_events (
            id INTEGER PRIMARY KEY,
            fault_key TEXT NOT NULL,
            event TEXT NOT NULL CHECK (event IN ('raised', 'cleared', 'report')),
            part TEXT NOT NULL,
            category TEXT NOT NULL,
            message TEXT NOT NULL,
            diagnostics TEXT NOT NULL DEFAULT '{}',
            photo_path TEXT,
            photo_sha256 TEXT,
            realtime_ns INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX fault_events_key ON fault_events (fault_key, id)")
    for op in ("UPDATE", "DELETE"):
        db.execute(
            f"""CREATE TRIGGER fault_events_no_{op.lower()} BEFORE {op} ON fault_events
                BEGIN SELECT RAISE(ABORT, 'fault_events is append-only'); END"""
        )
    db.execute("CREATE INDEX punches_employee_seq ON punches (employee, seq)")


def _time_samples_and_punch_times(db: sqlite3.Connection) -> None:
    # Time samples (terminal/timing/timeline.py): trusted or semi-trusted observations "at this raw reading, UTC
    # was X ± u", kept forever as evidence; `status` is derived (accepted | contradicting). punch_times holds
    # each punch's derived UTC interval beside the punch (never inside the hash chain); `revision` grows when
    # re-anchoring changes it, `pushed_revision` is what the central server has.
    db.execute(
        """CREATE TABLE time_samples (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            boot_id TEXT NOT NULL,
            sent_monoraw_ns INTEGER,
            monoraw_ns INTEGER NOT NULL,
            realtime_ns INTEGER NOT NULL,
            utc_ns INTEGER NOT NULL,
            uncertainty_ns INTEGER NOT NULL,
            head_seq INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'accepted',
            evidence TEXT NOT NULL DEFAULT '{}'
        )"""
    )
    db.execute("CREATE INDEX time_samples_boot ON time_samples (boot_id, monoraw_ns)")
    # Where each boot's punches begin and end (ordering bounds for boots without samples); an index only.
    db.execute("CREATE INDEX punches_boot_seq ON punches (boot_id, seq)")
    db.execute(
        """CREATE TABLE punch_times (
            seq INTEGER PRIMARY KEY,
            utc TEXT,
            earliest TEXT,
            latest TEXT,
            basis TEXT NOT NULL,
            flags TEXT NOT NULL DEFAULT '[]',
            revision INTEGER NOT NULL DEFAULT 1,
            pushed_revision INTEGER NOT NULL DEFAULT 0,
            computed_realtime_ns INTEGER NOT NULL
        )"""
    )


def _punch_derived(db: sqlite3.Connection) -> None:
    # Kind, lateness, local date/time and workday are derived from the punch's corrected time (issue 15):
    # computed at the punch from the best estimate then, recomputed when re-anchoring changes the punch's
    # time (`times_revision` = the punch_times revision they were computed from), beside the record and
    # outside the hash. `revision` grows when a value changes; `pushed_revision` is what the central server
    # has. Records written before this step keep their hashed kind and details (never rewritten); their
    # rows here start from those, with basis 'recorded', and follow later re-anchoring like any other.
    db.execute(
        """CREATE TABLE punch_derived (
            seq INTEGER PRIMARY KEY,
            log_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            minutes_late INTEGER NOT NULL DEFAULT 0,
            minutes_early INTEGER NOT NULL DEFAULT 0,
            local_date TEXT,
            local_time TEXT,
            timezone TEXT,
            workday INTEGER,
            day_name TEXT NOT NULL DEFAULT '',
            zk_state INTEGER,
            basis TEXT NOT NULL,
            computed_from TEXT NOT NULL,
            time_verified INTEGER NOT NULL DEFAULT 0,
            times_revision INTEGER NOT NULL DEFAULT 0,
            revision INTEGER NOT NULL DEFAULT 1,
            pushed_revision INTEGER NOT NULL DEFAULT 0,
            updated_ns INTEGER NOT NULL
        )"""
    )
    db.execute(
        """INSERT INTO punch_derived (seq, log_id, kind, minutes_late, minutes_early, local_date, local_time,
               timezone, workday, day_name, zk_state, basis, computed_from, time_verified, times_revision,
               updated_ns)
           SELECT p.seq, p.log_id, p.kind,
                  coalesce(json_extract(p.details, '$.minutes_late'), 0),
                  coalesce(json_extract(p.details, '$.minutes_early'), 0),
                  json_extract(p.details, '$.local_date'), json_extract(p.details, '$.local_time'),
                  json_extract(p.details, '$.timezone'), json_extract(p.details, '$.workday'),
                  coalesce(json_extract(p.details, '$.day_name'), ''), json_extract(p.details, '$.zk_state'),
                  'recorded', 'recorded', 0, coalesce(t.revision, 0), p.realtime_ns
           FROM punches p LEFT JOIN punch_times t ON t.seq = p.seq
           WHERE json_valid(p.details)"""
    )


def _enrolment_outbox_messages_apel(db: sqlite3.Connection) -> None:
    """Enrolments made here that wait for (or got) the central server's answer; messages to employees the
    terminal received itself (ZK SMS/UDATA), and apel cancellations made on the admin page. Templates are
    sealed (terminal/secretbox.py); none of these rows is part of the hash chain."""
    db.execute(
        """CREATE TABLE pending_enrolments (
            id INTEGER PRIMARY KEY,
            employee TEXT NOT NULL,
            modality TEXT NOT NULL,
            template_sha256 TEXT NOT NULL,
            sealed BLOB NOT NULL,
            created_ns INTEGER NOT NULL,
            sent_ns INTEGER,
            outcome TEXT,
            reason TEXT,
            UNIQUE (modality, template_sha256)
        )"""
    )
    db.execute(
        """CREATE TABLE local_messages (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            ext_id INTEGER NOT NULL,
            audience TEXT NOT NULL,
            text TEXT NOT NULL,
            valid_from TEXT NOT NULL,
            valid_until TEXT NOT NULL,
            created_ns INTEGER NOT NULL,
            UNIQUE (source, ext_id)
        )"""
    )
    db.execute(
        """CREATE TABLE local_message_recipients (
            source TEXT NOT NULL,
            ext_id INTEGER NOT NULL,
            employee TEXT NOT NULL,
            PRIMARY KEY (source, ext_id, employee)
        )"""
    )
    db.execute(
        """CREATE TABLE local_apel_cancellations (
            date TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            created_ns INTEGER NOT NULL
        )"""
    )


MIGRATIONS = [
    _v1_punches, _v2_checkpoints_and_audit, _v3_append_only_triggers, _sync_state, _fault_events,
    _time_samples_and_punch_times, _punch_derived, _enrolment_outbox_messages_apel,
]
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
