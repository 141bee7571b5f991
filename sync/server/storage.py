"""Storage of the reference central server behind one small interface, on SQLite (default) or PostgreSQL.

Both backends run the same SQL (written with `?` placeholders, translated for psycopg); they differ only in
how they connect, their DDL types and their transactions. Every write is one transaction under a lock, so
the batch logic in sync/server/ingest.py sees a consistent view and a SIGKILL leaves either all of a batch
or none of it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from terminal.log import chain

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
"""


_DERIVED_SELECT = ", ".join(f"d.{c} AS d_{c}" for c in DERIVED_COLUMNS)


def _sql_value(v):
    return int(v) if isinstance(v, bool) else v


def is_postgres(db: str) -> bool:
    return str(db).startswith(("postgresql://", "postgres://"))


def open_store(db: str | Path) -> Store:
    """SQLite for a file path, PostgreSQL for a postgresql:// URL. Creates the schema and server key."""
    store = PostgresStore(str(db)) if is_postgres(str(db)) else SQLiteStore(Path(db))
    store.setup()
    return store


class Store:
    """SQL shared by both backends. Subclasses provide _connect, _ddl, _sql, transaction."""

    placeholder = "?"
    lock_row = ""  # SQLite: BEGIN IMMEDIATE already excludes other writers

    def __init__(self):
        self._lock = threading.RLock()
        self._server_key: Ed25519PrivateKey | None = None

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
            row = self.rows(cur, "SELECT value FROM server_meta WHERE key='server_key'")
            if not row:
                pem = Ed25519PrivateKey.generate().private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
                self.execute(cur, "INSERT INTO server_meta VALUES ('server_key', ?)", (pem.decode(),))

    def server_key(self) -> Ed25519PrivateKey:
        if self._server_key is None:
            pem = self.query("SELECT value FROM server_meta WHERE key='server_key'")[0]["value"]
            self._server_key = serialization.load_pem_private_key(pem.encode(), password=None)
        return self._server_key

    def server_public_key(self) -> str:
        return chain.public_key_b64(self.server_key())

    # -- devices --------------------------------------------------------------------------------------

    def add_device(self, device_id: str, token_sha256: str, public_key: str | None) -> bool:
        """Register a device. Registering it again (a re-imaged terminal) issues a new token and pins the
        given key, or forgets the pinned one so the next signed checkpoint pins it. True when new."""
        with self.transaction() as cur:
            known = self.rows(cur, "SELECT 1 FROM devices WHERE device_id=?", (device_id,))
            if known:
                self.execute(cur, "UPDATE devices SET token_sha256=?, public_key=? WHERE device_id=?",
                             (token_sha256, public_key, device_id))
            else:
                self.execute(cur, "INSERT INTO devices (device_id, token_sha256, public_key, created_ns) "
                             "VALUES (?, ?, ?, ?)", (device_id, token_sha256, public_key, time.time_ns()))
        return not known

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

    # -- photos, faults, rosters ----------------------------------------------------------------------

    def put_photo(self, device_id: str, sha256: str, data: bytes) -> bool:
        with self.transaction() as cur:
            if self.rows(cur, "SELECT 1 FROM photos WHERE sha256=?", (sha256,)):
                return False
            self.execute(cur, "INSERT INTO photos VALUES (?, ?, ?, ?)", (sha256, device_id, data, time.time_ns()))
            self.touch(cur, device_id)
        return True

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
            self.execute(cur, "INSERT INTO rosters VALUES (?, ?, ?)", (version, bundle, time.time_ns()))

    def latest_roster(self) -> dict | None:
        rows = self.query("SELECT version, bundle FROM rosters ORDER BY version DESC LIMIT 1")
        if not rows:
            return None
        return {"version": rows[0]["version"], "bundle": bytes(rows[0]["bundle"])}


class SQLiteStore(Store):
    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.describe = f"sqlite:{self.path}"

    def _ddl(self) -> str:
        return DDL.format(serial="INTEGER", blob="BLOB")

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

    def _ddl(self) -> str:
        return DDL.format(serial="BIGSERIAL", blob="BYTEA")

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
