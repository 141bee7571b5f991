"""Storage of the reference central server behind one small interface, on SQLite (default) or PostgreSQL.

Both backends run the same SQL (written with `?` placeholders, translated for psycopg); they differ only in
how they connect, their DDL types and their transactions. Every write is one transaction under a lock, so
the batch logic in sync/server/ingest.py sees a consistent view and a SIGKILL leaves either all of a batch
or none of it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from terminal.log import chain

from . import atrest
from .pagequeries import PageQueries

PUNCH_COLUMNS = (
    "device_id", "log_id", "seq", "employee", "method", "kind", "details", "boot_id", "monoraw_ns",
    "boottime_ns", "realtime_ns", "timex_status", "maxerror_us", "latitude", "longitude", "photo_sha256",
    "prev_hash", "hash", "utc", "earliest", "latest", "basis", "flags", "problems", "source", "received_ns",
)

# Kind, lateness and local time as the terminal derives them from the corrected time (outside the hash,
# beside the record): a higher revision replaces a lower one; the record's own `kind` column is the hashed
# value ('' for records made since derived kinds, the kind itself for older ones).
DERIVED_COLUMNS = ("kind", "minutes_late", "minutes_early", "local_date", "local_time", "timezone", "workday",
                   "day_name", "zk_state", "basis", "computed_from", "time_verified", "revision")

DDL = """
CREATE TABLE IF NOT EXISTS server_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, public_key TEXT,
    created_ns BIGINT NOT NULL, last_contact_ns BIGINT, last_heartbeat TEXT);
CREATE TABLE IF NOT EXISTS logs (
    device_id TEXT NOT NULL, log_id TEXT NOT NULL, acked_through BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, log_id));
CREATE TABLE IF NOT EXISTS punches (
    device_id TEXT NOT NULL, log_id TEXT NOT NULL, seq BIGINT NOT NULL, employee TEXT, method TEXT,
    kind TEXT, details TEXT, boot_id TEXT, monoraw_ns BIGINT, boottime_ns BIGINT, realtime_ns BIGINT,
    timex_status BIGINT, maxerror_us BIGINT, latitude DOUBLE PRECISION, longitude DOUBLE PRECISION,
    photo_sha256 TEXT, prev_hash TEXT, hash TEXT, utc TEXT, earliest TEXT, latest TEXT, basis TEXT,
    flags TEXT, problems TEXT, source TEXT, received_ns BIGINT,
    PRIMARY KEY (device_id, log_id, seq));
CREATE TABLE IF NOT EXISTS punch_derived (
    device_id TEXT NOT NULL, log_id TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT, minutes_late BIGINT,
    minutes_early BIGINT, local_date TEXT, local_time TEXT, timezone TEXT, workday INTEGER, day_name TEXT,
    zk_state INTEGER, basis TEXT, computed_from TEXT, time_verified INTEGER, revision BIGINT NOT NULL,
    received_ns BIGINT NOT NULL, PRIMARY KEY (device_id, log_id, seq));
CREATE TABLE IF NOT EXISTS missing (
    device_id TEXT NOT NULL, log_id TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (device_id, log_id, seq));
CREATE TABLE IF NOT EXISTS checkpoints (
    device_id TEXT NOT NULL, log_id TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL,
    public_key TEXT, signature TEXT, signed_realtime_ns BIGINT, valid INTEGER NOT NULL,
    PRIMARY KEY (device_id, log_id, seq));
CREATE TABLE IF NOT EXISTS alarms (
    id {serial} PRIMARY KEY, device_id TEXT NOT NULL, log_id TEXT, seq BIGINT, kind TEXT NOT NULL,
    message TEXT NOT NULL, created_ns BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS faults (
    device_id TEXT NOT NULL, event_id BIGINT NOT NULL, fault_key TEXT, event TEXT, part TEXT, category TEXT,
    message TEXT, diagnostics TEXT, photo_sha256 TEXT, realtime_ns BIGINT, received_ns BIGINT NOT NULL,
    PRIMARY KEY (device_id, event_id));
CREATE TABLE IF NOT EXISTS photos (
    sha256 TEXT PRIMARY KEY, device_id TEXT NOT NULL, data {blob} NOT NULL, received_ns BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS rosters (version BIGINT PRIMARY KEY, bundle {blob} NOT NULL, created_ns BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS time_samples (
    device_id TEXT NOT NULL, log_id TEXT NOT NULL, sample_id BIGINT NOT NULL, source TEXT NOT NULL,
    boot_id TEXT NOT NULL, sent_monoraw_ns BIGINT, monoraw_ns BIGINT NOT NULL, realtime_ns BIGINT,
    utc_ns BIGINT NOT NULL, uncertainty_ns BIGINT NOT NULL, head_seq BIGINT, status TEXT NOT NULL,
    evidence TEXT NOT NULL, received_ns BIGINT NOT NULL, PRIMARY KEY (device_id, log_id, sample_id));
CREATE TABLE IF NOT EXISTS enrolments (
    device_id TEXT PRIMARY KEY, code_sha256 TEXT NOT NULL, expires_ns BIGINT NOT NULL, created_ns BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS request_nonces (
    device_id TEXT NOT NULL, nonce TEXT NOT NULL, received_ns BIGINT NOT NULL, PRIMARY KEY (device_id, nonce));
CREATE TABLE IF NOT EXISTS device_audit (
    id {serial} PRIMARY KEY, device_id TEXT NOT NULL, action TEXT NOT NULL, details TEXT NOT NULL,
    created_ns BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS log_announcements (
    device_id TEXT NOT NULL, log_id TEXT NOT NULL, public_key TEXT NOT NULL, signature TEXT NOT NULL,
    created_ns BIGINT NOT NULL, PRIMARY KEY (device_id, log_id));
CREATE TABLE IF NOT EXISTS punch_conflicts (
    device_id TEXT NOT NULL, log_id TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL, record TEXT NOT NULL,
    received_ns BIGINT NOT NULL, PRIMARY KEY (device_id, log_id, seq, hash));
CREATE TABLE IF NOT EXISTS time_revisions (
    id {serial} PRIMARY KEY, device_id TEXT NOT NULL, log_id TEXT NOT NULL, seq BIGINT NOT NULL, utc TEXT,
    earliest TEXT, latest TEXT, basis TEXT, flags TEXT, received_ns BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS template_enrolments (
    id {serial} PRIMARY KEY, device_id TEXT NOT NULL, device_ref BIGINT NOT NULL, employee TEXT NOT NULL,
    modality TEXT NOT NULL, template_sha256 TEXT NOT NULL, template {blob} NOT NULL, created_ns BIGINT,
    received_ns BIGINT NOT NULL, status TEXT NOT NULL, decided_by TEXT, decided_ns BIGINT,
    UNIQUE (employee, modality, template_sha256));
CREATE TABLE IF NOT EXISTS staff_messages (
    id {serial} PRIMARY KEY, employee TEXT, text TEXT NOT NULL, valid_from TEXT NOT NULL,
    valid_until TEXT NOT NULL, created_ns BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS apel_cancellations (
    date TEXT PRIMARY KEY, reason TEXT NOT NULL, created_ns BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS device_offices (device_id TEXT PRIMARY KEY, office TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS employee_offices (employee TEXT PRIMARY KEY, office TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS office_rosters (
    version BIGINT NOT NULL, office TEXT NOT NULL, bundle {blob} NOT NULL, PRIMARY KEY (version, office));
"""

# What the pages and the recap read by (sync/server/pagequeries.py; timed in bench/server_bench.py). Created
# with IF NOT EXISTS at every start, so a database made by an older version gets them at its next start
# (building them on 600,000 punches takes a few seconds; writers wait meanwhile).
INDEXES = {
    # the punches of one device-day, and the month a recap scans (keyset order of PageQueries.month_punches)
    "punch_derived_day": "punch_derived (local_date, device_id, log_id, seq)",
    # one employee's punches (a day or a month of them: the day is in punch_derived, reached by its key)
    "punches_employee": "punches (employee, device_id, log_id, seq)",
    # the open faults per device: the latest raised/cleared event of each fault key
    "faults_device_key": "faults (device_id, fault_key, event_id)",
    "alarms_device": "alarms (device_id, id)",
    # terminals silent since a moment
    "devices_last_contact": "devices (last_contact_ns)",
}


def index_ddl() -> list[str]:
    return [f"CREATE INDEX IF NOT EXISTS {name} ON {target}" for name, target in INDEXES.items()]


_DERIVED_SELECT = ", ".join(f"d.{c} AS d_{c}" for c in DERIVED_COLUMNS)


def _sql_value(v):
    return int(v) if isinstance(v, bool) else v


def is_postgres(db: str) -> bool:
    return str(db).startswith(("postgresql://", "postgres://"))


ENROL_VALID_NS = 72 * 3600 * 10**9  # an enrolment code unused for three days expires
NONCES_KEPT_NS = 35 * 24 * 3600 * 10**9


def open_store(db: str | Path, key_dir: str | Path | None = None) -> Store:
    """SQLite for a file path, PostgreSQL for a postgresql:// URL. Creates the schema, the key directory
    (sync/server/atrest.py) and the server key; moves a key found in the database out of it."""
    store = PostgresStore(str(db)) if is_postgres(str(db)) else SQLiteStore(Path(db))
    store.keys = atrest.Keys(Path(key_dir) if key_dir else atrest.default_key_dir(str(db)))
    store.setup()
    return store


def code_hash(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


class Store(PageQueries):
    """SQL shared by both backends. Subclasses provide _connect, _ddl, _sql, transaction."""

    DERIVED_SELECT = _DERIVED_SELECT
    punch_columns = PUNCH_COLUMNS
    placeholder = "?"
    lock_row = ""  # SQLite: BEGIN IMMEDIATE already excludes other writers

    keys: atrest.Keys

    def __init__(self):
        self._lock = threading.RLock()
        self._server_key: Ed25519PrivateKey | None = None
        self._nonces_seen = 0
        self.refusal_alarms: dict[tuple[str, str], int] = {}  # (device, kind) -> when last alarmed (app.py)

    # -- backend primitives -------------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def execute(self, cur, sql: str, params=()):
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def executemany(self, cur, sql: str, rows) -> None:
        rows = list(rows)
        if rows:
            cur.executemany(self._sql(sql), rows)

    def query(self, sql: str, params=()) -> list[dict]:
        with self.reading() as cur:
            self.execute(cur, sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def rows(self, cur, sql: str, params=()) -> list[tuple]:
        self.execute(cur, sql, params)
        return cur.fetchall()

    # -- setup ----------------------------------------------------------------------------------------

    def setup(self) -> None:
        with self.transaction() as cur:
            for stmt in self._ddl().split(";"):
                if stmt.strip():
                    cur.execute(stmt)
            for stmt in index_ddl():
                cur.execute(stmt)
            row = self.rows(cur, "SELECT value FROM server_meta WHERE key='server_key'")
            if row:  # written by an older version: move it out of the database
                if not self.keys.has_signing_key():
                    self.keys.write_signing_key(row[0][0].encode())
                self.execute(cur, "DELETE FROM server_meta WHERE key='server_key'")
                atrest.warn(f"the server signing key was stored in the database; moved to "
                            f"{self.keys.signing_key_path()} (0600) and deleted from the database (old backups "
                            "of the database still hold it: destroy them)")
            self.keys.ensure_signing_key()
        self._encrypt_old_blobs()

    def _encrypt_old_blobs(self) -> None:
        """Photos and roster bundles stored in clear by an older version are encrypted in place."""
        for table, key, column in (("photos", "sha256", "data"), ("rosters", "version", "bundle")):
            done = 0
            for (k,) in self.query_rows(f"SELECT {key} FROM {table} WHERE substr({column}, 1, 4) <> ?",
                                        (atrest.MAGIC,)):
                with self.transaction() as cur:
                    blob = self.rows(cur, f"SELECT {column} FROM {table} WHERE {key}=?", (k,))[0][0]
                    if not atrest.is_encrypted(blob):
                        self.execute(cur, f"UPDATE {table} SET {column}=? WHERE {key}=?",
                                     (self.keys.encrypt(bytes(blob), f"{table}:{k}"), k))
                        done += 1
            if done:
                atrest.warn(f"encrypted {done} {table} row(s) stored in clear by an older version")

    def run_ddl(self, ddl: str) -> None:
        """Create the tables of another module (accounts, fault states) with this backend's types:
        `{serial}` an auto-increment key, `{blob}` bytes. Idempotent (CREATE … IF NOT EXISTS)."""
        with self.transaction() as cur:
            for stmt in ddl.format(**self._types()).split(";"):
                if stmt.strip():
                    cur.execute(stmt)

    def query_rows(self, sql: str, params=()) -> list[tuple]:
        with self.reading() as cur:
            self.execute(cur, sql, params)
            return cur.fetchall()

    def server_key(self) -> Ed25519PrivateKey:
        if self._server_key is None:
            self._server_key = self.keys.signing_key()
        return self._server_key

    def server_public_key(self) -> str:
        return chain.public_key_b64(self.server_key())

    # -- devices --------------------------------------------------------------------------------------

    def add_device(self, device_id: str, token_sha256: str, public_key: str | None,
                   enrol_sha256: str | None = None, *, rebind: bool = False, actor: str = "cli",
                   reason: str = "") -> bool:
        """Register a device with its key (or a one-time enrolment code the device's first signed request
        redeems). A known device is refused unless rebind=True: re-imaging a terminal (a new key) is an
        explicit act, audited in device_audit and raised as an alarm so nobody misses it. True when new."""
        now = time.time_ns()
        with self.transaction() as cur:
            known = self.rows(cur, "SELECT public_key FROM devices WHERE device_id=?", (device_id,))
            if known and not rebind:
                raise ValueError(f"device {device_id} is already registered; a re-imaged terminal (new key) is "
                                 f"bound with `presensi server rebind-device {device_id}`")
            if not known and rebind:
                raise ValueError(f"device {device_id} is not registered; use `presensi server add-device`")
            if known:
                self.execute(cur, "UPDATE devices SET token_sha256=?, public_key=? WHERE device_id=?",
                             (token_sha256, public_key, device_id))
            else:
                self.execute(cur, "INSERT INTO devices (device_id, token_sha256, public_key, created_ns) "
                             "VALUES (?, ?, ?, ?)", (device_id, token_sha256, public_key, now))
            self.execute(cur, "DELETE FROM enrolments WHERE device_id=?", (device_id,))
            if enrol_sha256:
                self.execute(cur, "INSERT INTO enrolments VALUES (?, ?, ?, ?)",
                             (device_id, enrol_sha256, now + ENROL_VALID_NS, now))
            details = {"public_key": public_key, "fingerprint": chain.key_fingerprint(public_key)
                       if public_key else None, "enrolment_code": bool(enrol_sha256), "actor": actor,
                       "reason": reason, "previous_key": known[0][0] if known else None}
            self.audit(cur, device_id, "rebind" if known else "add", details)
            if known:
                self.raise_alarm(cur, device_id, None, None, "rebound",
                                 f"device key re-bound by {actor} ({reason or 'no reason given'}); previous key "
                                 f"{chain.key_fingerprint(known[0][0]) if known[0][0] else 'none'}, new "
                                 f"{details['fingerprint'] or 'by enrolment code'}")
        return not known

    def audit(self, cur, device_id: str, action: str, details: dict) -> None:
        self.execute(cur, "INSERT INTO device_audit (device_id, action, details, created_ns) VALUES (?, ?, ?, ?)",
                     (device_id, action, json.dumps(details, sort_keys=True), time.time_ns()))

    def device_audit(self, device_id: str | None = None) -> list[dict]:
        if device_id:
            return self.query("SELECT * FROM device_audit WHERE device_id=? ORDER BY id", (device_id,))
        return self.query("SELECT * FROM device_audit ORDER BY id")

    def redeem_enrolment(self, device_id: str, code: str | None, public_key: str) -> str:
        """Bind `public_key` to a device that has none yet, if `code` is its unexpired enrolment code.
        Returns "bound", or the reason it was not: "no-code", "wrong-code", "expired", "already-bound"."""
        now = time.time_ns()
        with self.transaction() as cur:
            row = self.rows(cur, "SELECT public_key FROM devices WHERE device_id=?" + self.lock_row, (device_id,))
            if not row or row[0][0]:
                return "already-bound"
            enrol = self.rows(cur, "SELECT code_sha256, expires_ns FROM enrolments WHERE device_id=?", (device_id,))
            if not enrol or not code:
                return "no-code"
            if not secrets_equal(enrol[0][0], code_hash(code)):
                return "wrong-code"
            if enrol[0][1] < now:
                return "expired"
            self.execute(cur, "UPDATE devices SET public_key=? WHERE device_id=?", (public_key, device_id))
            self.execute(cur, "DELETE FROM enrolments WHERE device_id=?", (device_id,))
            self.audit(cur, device_id, "enrolled", {"public_key": public_key,
                                                    "fingerprint": chain.key_fingerprint(public_key)})
        return "bound"

    def use_nonce(self, device_id: str, nonce: str) -> bool:
        """Record a request nonce; False if this device used it before (a replayed request)."""
        now = time.time_ns()
        with self.transaction() as cur:
            if self.rows(cur, "SELECT 1 FROM request_nonces WHERE device_id=? AND nonce=?", (device_id, nonce)):
                return False
            self.execute(cur, "INSERT INTO request_nonces VALUES (?, ?, ?)", (device_id, nonce, now))
            self._nonces_seen += 1
            if self._nonces_seen % 1000 == 0:  # bounded table: nonces older than the window are dropped
                self.execute(cur, "DELETE FROM request_nonces WHERE received_ns < ?", (now - NONCES_KEPT_NS,))
        return True

    def log_known(self, device_id: str, log_id: str) -> bool:
        return bool(self.query("SELECT 1 AS x FROM logs WHERE device_id=? AND log_id=?", (device_id, log_id)))

    def announce_log(self, device_id: str, log_id: str, public_key: str, signature: str) -> bool:
        """Store a device-signed log announcement (audited); True when the device had other logs already."""
        with self.transaction() as cur:
            others = self.rows(cur, "SELECT count(*) FROM logs WHERE device_id=? AND log_id<>?",
                               (device_id, log_id))[0][0]
            self.execute(cur, "INSERT INTO log_announcements VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                         (device_id, log_id, public_key, signature, time.time_ns()))
            self.execute(cur, "INSERT INTO logs (device_id, log_id, acked_through) VALUES (?, ?, 0) "
                         "ON CONFLICT DO NOTHING", (device_id, log_id))
            self.audit(cur, device_id, "log-announced", {"log_id": log_id})
        return others > 0

    def alarm(self, device_id: str, kind: str, message: str, log_id: str | None = None,
              seq: int | None = None) -> None:
        """An alarm in its own transaction (for requests refused before anything is stored)."""
        with self.transaction() as cur:
            self.raise_alarm(cur, device_id, log_id, seq, kind, message)

    def device_for_token(self, token_sha256: str) -> str | None:
        rows = self.query("SELECT device_id FROM devices WHERE token_sha256=?", (token_sha256,))
        return rows[0]["device_id"] if rows else None

    def device(self, device_id: str) -> dict | None:
        rows = self.query("SELECT * FROM devices WHERE device_id=?", (device_id,))
        return rows[0] if rows else None

    def devices(self) -> list[dict]:
        out = []
        for d in self.query("SELECT device_id, public_key, created_ns, last_contact_ns, last_heartbeat "
                            "FROM devices ORDER BY device_id"):
            d["heartbeat"] = json.loads(d.pop("last_heartbeat") or "null")
            d["logs"] = self.query("SELECT log_id, acked_through FROM logs WHERE device_id=? ORDER BY log_id",
                                   (d["device_id"],))
            d["punches"] = self.query("SELECT count(*) AS n FROM punches WHERE device_id=?",
                                      (d["device_id"],))[0]["n"]
            d["alarms"] = self.query("SELECT count(*) AS n FROM alarms WHERE device_id=?",
                                     (d["device_id"],))[0]["n"]
            out.append(d)
        return out

    def touch(self, cur, device_id: str, heartbeat: dict | None = None) -> None:
        if heartbeat is None:
            self.execute(cur, "UPDATE devices SET last_contact_ns=? WHERE device_id=?", (time.time_ns(), device_id))
        else:
            self.execute(cur, "UPDATE devices SET last_contact_ns=?, last_heartbeat=? WHERE device_id=?",
                         (time.time_ns(), json.dumps(heartbeat), device_id))

    # -- alarms ---------------------------------------------------------------------------------------

    def raise_alarm(self, cur, device_id: str, log_id: str | None, seq: int | None, kind: str, message: str,
                    once: bool = False) -> None:
        """Store an alarm with the device. once=True: not again if the same (log, seq, kind) is stored."""
        if once and self.rows(cur, "SELECT 1 FROM alarms WHERE device_id=? AND log_id=? AND seq=? AND kind=?",
                              (device_id, log_id, seq, kind)):
            return
        self.execute(cur, "INSERT INTO alarms (device_id, log_id, seq, kind, message, created_ns) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (device_id, log_id, seq, kind, message, time.time_ns()))

    def alarms(self, device_id: str | None = None, limit: int = 1000) -> list[dict]:
        if device_id:
            return self.query("SELECT * FROM alarms WHERE device_id=? ORDER BY id DESC LIMIT ?", (device_id, limit))
        return self.query("SELECT * FROM alarms ORDER BY id DESC LIMIT ?", (limit,))

    # -- derived values ------------------------------------------------------------------------------

    def upsert_derived(self, cur, device_id: str, log_id: str, rows: list[tuple[int, dict]]) -> None:
        """Store (seq, derived) pairs; a revision never replaces a higher one (resends arrive late)."""
        cols = ", ".join(DERIVED_COLUMNS)
        sets = ", ".join(f"{c} = excluded.{c}" for c in DERIVED_COLUMNS) + ", received_ns = excluded.received_ns"
        now = time.time_ns()
        self.executemany(
            cur, f"INSERT INTO punch_derived (device_id, log_id, seq, {cols}, received_ns) VALUES "
                 f"({', '.join('?' * (len(DERIVED_COLUMNS) + 4))}) ON CONFLICT (device_id, log_id, seq) DO UPDATE "
                 f"SET {sets} WHERE punch_derived.revision < excluded.revision",
            [(device_id, log_id, seq, *(_sql_value(d.get(c)) for c in DERIVED_COLUMNS), now) for seq, d in rows])

    def _with_derived(self, rows: list[dict]) -> list[dict]:
        """Each punch row with `derived` (None when the terminal sent none)."""
        for r in rows:
            values = {c: r.pop(f"d_{c}") for c in DERIVED_COLUMNS}
            if values["revision"] is None:
                r["derived"] = None
                continue
            for c in ("workday", "time_verified"):
                values[c] = None if values[c] is None else bool(values[c])
            r["derived"] = values
        return rows

    # -- punches (read side) --------------------------------------------------------------------------

    def iter_punches(self, device_id: str | None = None, batch: int = 2000):
        """Every stored punch ordered by (device, log, seq), read in bounded batches."""
        key: tuple = ("", "", -1)
        cond = "AND device_id=?" if device_id else ""
        while True:
            rows = self._with_derived(self.query(
                f"""SELECT p.*, {_DERIVED_SELECT} FROM punches p LEFT JOIN punch_derived d
                    ON d.device_id = p.device_id AND d.log_id = p.log_id AND d.seq = p.seq
                    WHERE (p.device_id, p.log_id, p.seq) > (?, ?, ?) {cond.replace('device_id', 'p.device_id')}
                    ORDER BY p.device_id, p.log_id, p.seq LIMIT ?""",
                (*key, *([device_id] if device_id else []), batch),
            ))
            if not rows:
                return
            yield from rows
            last = rows[-1]
            key = (last["device_id"], last["log_id"], last["seq"])

    def recent_punches(self, limit: int = 50) -> list[dict]:
        return self._with_derived(self.query(
            f"""SELECT p.*, {_DERIVED_SELECT} FROM punches p LEFT JOIN punch_derived d
                ON d.device_id = p.device_id AND d.log_id = p.log_id AND d.seq = p.seq
                ORDER BY p.received_ns DESC, p.seq DESC LIMIT ?""", (limit,)))

    def punch_count(self, device_id: str | None = None) -> int:
        if device_id:
            return self.query("SELECT count(*) AS n FROM punches WHERE device_id=?", (device_id,))[0]["n"]
        return self.query("SELECT count(*) AS n FROM punches")[0]["n"]

    def acked_through(self, device_id: str, log_id: str) -> int:
        rows = self.query("SELECT acked_through FROM logs WHERE device_id=? AND log_id=?", (device_id, log_id))
        return rows[0]["acked_through"] if rows else 0

    # -- time samples (offline import: the evidence behind the punches' intervals) ----------------------

    SAMPLE_COLUMNS = ("sample_id", "source", "boot_id", "sent_monoraw_ns", "monoraw_ns", "realtime_ns", "utc_ns",
                      "uncertainty_ns", "head_seq", "status", "evidence")

    def store_samples(self, device_id: str, log_id: str, samples: list[dict]) -> int:
        """Insert new samples; a known one only gets its (derived, revisable) status updated."""
        now = time.time_ns()
        with self.transaction() as cur:
            self.executemany(
                cur, f"INSERT INTO time_samples (device_id, log_id, {', '.join(self.SAMPLE_COLUMNS)}, received_ns) "
                     f"VALUES (?, ?, {', '.join('?' * len(self.SAMPLE_COLUMNS))}, ?) "
                     "ON CONFLICT (device_id, log_id, sample_id) DO UPDATE SET status = excluded.status",
                [(device_id, log_id, *(s[c] for c in self.SAMPLE_COLUMNS), now) for s in samples])
            self.touch(cur, device_id)
        return len(samples)

    def time_samples(self, device_id: str, log_id: str | None = None, boot_id: str | None = None) -> list[dict]:
        where, args = ["device_id=?"], [device_id]
        for col, value in (("log_id", log_id), ("boot_id", boot_id)):
            if value is not None:
                where.append(f"{col}=?")
                args.append(value)
        rows = self.query(f"SELECT * FROM time_samples WHERE {' AND '.join(where)} ORDER BY log_id, sample_id", args)
        for r in rows:
            r["evidence"] = json.loads(r["evidence"])
        return rows

    # -- photos, faults, rosters ----------------------------------------------------------------------

    def put_photo(self, device_id: str, sha256: str, data: bytes) -> bool:
        with self.transaction() as cur:
            if self.rows(cur, "SELECT 1 FROM photos WHERE sha256=?", (sha256,)):
                return False
            self.execute(cur, "INSERT INTO photos VALUES (?, ?, ?, ?)",
                         (sha256, device_id, self.keys.encrypt(data, f"photos:{sha256}"), time.time_ns()))
            self.touch(cur, device_id)
        return True

    def photo(self, sha256: str) -> bytes | None:
        rows = self.query("SELECT data FROM photos WHERE sha256=?", (sha256,))
        return self.keys.decrypt(rows[0]["data"], f"photos:{sha256}") if rows else None

    def photo_count(self) -> int:
        return self.query("SELECT count(*) AS n FROM photos")[0]["n"]

    def store_faults(self, device_id: str, events: list[dict]) -> int:
        now = time.time_ns()
        with self.transaction() as cur:
            self.executemany(
                cur,
                "INSERT INTO faults VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(device_id, e["id"], e.get("fault_key"), e.get("event"), e.get("part"), e.get("category"),
                  e.get("message"), json.dumps(e.get("diagnostics")), e.get("photo_sha256"),
                  e.get("realtime_ns"), now) for e in events],
            )
            self.touch(cur, device_id)
        return max((e["id"] for e in events), default=0)

    def faults(self, device_id: str | None = None, limit: int = 200) -> list[dict]:
        sql = "SELECT * FROM faults " + ("WHERE device_id=? " if device_id else "") + \
            "ORDER BY received_ns DESC, event_id DESC LIMIT ?"
        return self.query(sql, (device_id, limit) if device_id else (limit,))

    def publish_roster(self, version: int, bundle: bytes) -> None:
        with self.transaction() as cur:
            self.execute(cur, "INSERT INTO rosters VALUES (?, ?, ?)",
                         (version, self.keys.encrypt(bundle, f"rosters:{version}"), time.time_ns()))

    def latest_roster(self) -> dict | None:
        rows = self.query("SELECT version, bundle FROM rosters ORDER BY version DESC LIMIT 1")
        if not rows:
            return None
        version = rows[0]["version"]
        return {"version": version, "bundle": self.keys.decrypt(rows[0]["bundle"], f"rosters:{version}")}


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class SQLiteStore(Store):
    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True)
        # created 0600 before SQLite opens it (its -wal and -shm then get the same mode); tightened if older
        atrest.tighten(self.path, 0o600)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        for suffix in ("-wal", "-shm"):
            atrest.tighten(Path(str(self.path) + suffix), 0o600)
        self.describe = f"sqlite:{self.path}"

    def _types(self) -> dict:
        return {"serial": "INTEGER", "blob": "BLOB"}

    def _ddl(self) -> str:
        return DDL.format(**self._types())

    @contextmanager
    def transaction(self):
        with self._lock:
            cur = self.conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise

    @contextmanager
    def reading(self):
        """A read outside any write transaction (WAL: never blocks the writer)."""
        with self._lock:
            yield self.conn.cursor()

    def close(self) -> None:
        self.conn.close()


class PostgresStore(Store):
    placeholder = "%s"
    lock_row = " FOR UPDATE"

    def __init__(self, url: str):
        super().__init__()
        import psycopg  # only needed for PostgreSQL

        self.conn = psycopg.connect(url, autocommit=True)
        self.describe = "postgresql:" + url.rsplit("/", 1)[-1]

    def _types(self) -> dict:
        return {"serial": "BIGSERIAL", "blob": "BYTEA"}

    def _ddl(self) -> str:
        return DDL.format(**self._types())

    @contextmanager
    def transaction(self):
        with self._lock, self.conn.transaction():
            with self.conn.cursor() as cur:
                yield cur

    @contextmanager
    def reading(self):
        with self._lock, self.conn.cursor() as cur:
            yield cur

    def close(self) -> None:
        self.conn.close()
