"""The punch log: an append-only, hash-chained SQLite table that every way of punching ends in.

Durability rules (../shared/reference/time-and-durability.md §2): WAL with synchronous=FULL, set and
checked on every connection; each punch is one BEGIN IMMEDIATE … COMMIT; evidence files are fsynced before
the record commits; the caller gives feedback only after `append` returned. There is no code path that
updates or deletes a punch: administrative actions go to the append-only audit table.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from terminal import identity
from terminal.errors import CorruptDatabase, LogError, NotInitialised, StorageError, StorageFull
from terminal.log import chain, evidence, schema
from terminal.log.writelock import WriterLock, WriterLockTimeout
from terminal.timing import clock

DB_FILE = "punches.db"
LOCK_DIR = "writer.lock.d"
METHODS = ("face", "finger", "pin")
SQLITE_SYNCHRONOUS_FULL = 2
# Values beside each record, outside the hash (schema step 7; computed by terminal/punch/derived.py).
DERIVED_FIELDS = ("kind", "minutes_late", "minutes_early", "local_date", "local_time", "timezone", "workday",
                  "day_name", "zk_state", "basis", "computed_from", "time_verified")
LOCK_TIMEOUT = 30.0  # seconds a punch waits for another writer before it is refused
SNAPSHOT_DIRS = ("/dev/shm",)  # RAM first: on a Pi /tmp is often on the same (full) SD card


def db_path(state_dir: Path) -> Path:
    return Path(state_dir) / DB_FILE


def connect(path: Path, *, create: bool = False) -> sqlite3.Connection:
    """Open the punch database with the pragmas durability depends on, and check that they hold."""
    path = Path(path)
    if not create and not path.exists():
        raise NotInitialised(f"{path}: no punch database; run `presensi init` first")
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise _classify(e, path) from None
    if mode.lower() != "wal" or sync != SQLITE_SYNCHRONOUS_FULL:
        conn.close()
        raise StorageError(
            f"{path}: SQLite refused journal_mode=WAL/synchronous=FULL (got {mode}/{sync}); "
            "the file system may not support WAL (use a local ext4 file system)"
        )
    conn.row_factory = sqlite3.Row
    return conn


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that never writes, for the read-only commands (`log list|export|verify`, `status`, the
    USB export), which must work on a full disk.

    A WAL reader needs the wal-index (the -shm file) and SQLite allocates its pages by writing to them: on
    a full disk that fails ("disk I/O error") once no other connection keeps the -shm mapped. Then: if the
    WAL holds nothing, the main file is the whole database and is read as immutable (no -shm, no locks);
    otherwise the database and its WAL are copied to a private folder in RAM and the copy is read.
    """
    path = Path(path)
    if not path.exists():
        raise NotInitialised(f"{path}: no punch database; run `presensi init` first")
    try:
        return _open_ro(_uri(path, mode="ro"))
    except sqlite3.DatabaseError as e:
        first = e
    wal = path.with_name(path.name + "-wal")
    try:
        if not wal.exists() or wal.stat().st_size == 0:
            return _open_ro(_uri(path, immutable="1"))
        return _open_snapshot(path, wal)
    except (sqlite3.DatabaseError, OSError):
        raise _classify(first, path, reading=True) from None


def _uri(path: Path, **params: str) -> str:
    return f"file:{urllib.parse.quote(str(path.resolve()))}?{urllib.parse.urlencode(params)}"


def _open_ro(uri: str, factory=sqlite3.Connection) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30, check_same_thread=False,
                           factory=factory)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA temp_store=MEMORY")  # sorting must not need a temporary file either
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the first read maps the WAL index
    except BaseException:
        conn.close()
        raise
    conn.row_factory = sqlite3.Row
    return conn


class _SnapshotConnection(sqlite3.Connection):
    """A connection to a private copy of the database; closing it removes the copy."""

    snapshot_dir: str | None = None

    def close(self) -> None:
        super().close()
        if self.snapshot_dir:
            shutil.rmtree(self.snapshot_dir, ignore_errors=True)
            self.snapshot_dir = None


def _open_snapshot(path: Path, wal: Path) -> sqlite3.Connection:
    base = next((d for d in SNAPSHOT_DIRS if os.path.isdir(d) and os.access(d, os.W_OK)), None)
    folder = tempfile.mkdtemp(prefix="presensi-ro-", dir=base)
    try:
        copy = Path(folder) / path.name
        shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))  # the WAL first: it only grows meanwhile
        shutil.copyfile(path, copy)
        conn = _open_ro(_uri(copy), factory=_SnapshotConnection)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    conn.snapshot_dir = folder
    return conn


def _disk_nearly_full(path: Path, margin: int = 256 * 1024) -> bool:
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < margin


def _classify(e: sqlite3.DatabaseError, path: Path, reading: bool = False) -> LogError:
    msg = str(e).lower()
    # SQLite reports ENOSPC as SQLITE_FULL or, when the WAL or shm write fails, as a plain I/O error.
    if "full" in msg or ("disk i/o" in msg and _disk_nearly_full(path)):
        if reading:
            return StorageFull(f"{path}: the disk is full and the punch log cannot be read ({e}); free space "
                               "(old photos, logs) and retry")
        return StorageFull(
            f"{path}: the disk is full; the punch was NOT recorded. Free space (old photos, logs) and retry"
        )
    if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
        return CorruptDatabase(
            f"{path}: the punch database is damaged ({e}). presensi will not write to it. To recover: stop "
            f"the service, copy the file aside (cp {path} {path}.damaged), run "
            f"`sqlite3 {path}.damaged .recover | sqlite3 recovered.db`, verify it with "
            "`presensi log verify`, and report the incident to the central server administrator; "
            "punches already delivered are safe on the server"
        )
    if "disk i/o" in msg or "readonly" in msg or "unable to open" in msg:
        return StorageError(
            f"{path}: storage error ({e}); the punch was NOT recorded. Check the SD card and free space; "
            "the service restarts and checks the database"
        )
    return StorageError(f"{path}: database error ({e})")


def classify_error(e: Exception, path: Path) -> LogError:
    """Any storage exception (SQLite, the file system, the writer lock) as the LogError that explains it."""
    if isinstance(e, LogError):
        return e
    if isinstance(e, sqlite3.DatabaseError):
        return _classify(e, path)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"{path}: the disk is full; the punch was NOT recorded. Free space (old photos, "
                           "logs) and retry")
    if isinstance(e, WriterLockTimeout):
        return StorageError(f"{path}: {e}; the punch was NOT recorded")
    return StorageError(f"{path}: storage error ({type(e).__name__}: {e}); the punch was NOT recorded")


def init(state_dir: Path) -> dict:
    """Create state_dir (0700), the database, the device key and a random log_id. Idempotent."""
    state_dir = Path(state_dir)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    path = db_path(state_dir)
    created_db = not path.exists()
    conn = connect(path, create=True)
    try:
        _check_integrity(conn, path, quick=True)
        schema.migrate(conn)
        has_checkpoints = conn.execute("SELECT EXISTS(SELECT 1 FROM checkpoints)").fetchone()[0] == 1
        key_file = state_dir / identity.KEY_FILE
        if not key_file.exists() and has_checkpoints:
            raise LogError(
                f"{key_file}: the device key is missing but the log has signed checkpoints; restore the key "
                "from backup (a new key would make every checkpoint unverifiable)"
            )
        created_key = identity.create_key(state_dir)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('log_id', ?)", (uuid.uuid4().hex,))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_realtime_ns', ?)", (str(time.time_ns()),))
        conn.execute("COMMIT")
        log_id = conn.execute("SELECT value FROM meta WHERE key='log_id'").fetchone()[0]
    finally:
        conn.close()
    return {"state_dir": str(state_dir), "database": str(path), "log_id": log_id,
            "created_database": created_db, "created_key": created_key}


def _check_integrity(conn: sqlite3.Connection, path: Path, quick: bool) -> str:
    pragma = "quick_check" if quick else "integrity_check"
    try:
        rows = [r[0] for r in conn.execute(f"PRAGMA {pragma}")]
    except sqlite3.DatabaseError as e:
        raise _classify(e, path) from None
    if rows != ["ok"]:
        raise CorruptDatabase(str(_classify(sqlite3.DatabaseError("malformed: " + "; ".join(rows[:3])), path)))
    return "ok"


class PunchLog:
    """The open punch log of one terminal. Safe to share between threads; one per process is enough."""

    def __init__(self, state_dir: Path, *, checkpoint_every: int = 100, check: bool = False,
                 readonly: bool = False, lock_timeout: float = LOCK_TIMEOUT):
        """`readonly`: never write (no migration, no writer lock), so that reading works on a full disk."""
        self.state_dir = Path(state_dir)
        self.path = db_path(self.state_dir)
        self.readonly = readonly
        self.conn = connect_readonly(self.path) if readonly else connect(self.path)
        if check:
            _check_integrity(self.conn, self.path, quick=True)
        try:
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version < schema.LATEST and not readonly:
                schema.migrate(self.conn)
            elif version > schema.LATEST:
                schema.migrate(self.conn)  # raises SchemaTooNew with the explanation
            row = self.conn.execute("SELECT value FROM meta WHERE key='log_id'").fetchone()
        except sqlite3.DatabaseError as e:
            raise _classify(e, self.path) from None
        except schema.SchemaTooNew as e:
            raise LogError(f"{self.path}: {e}") from None
        if row is None:
            raise NotInitialised(f"{self.path}: the database has no log_id; run `presensi init`")
        self.log_id: str = row[0]
        self._db = None
        self.checkpoint_every = checkpoint_every
        self.lock_timeout = lock_timeout
        self._lock = None if readonly else WriterLock(self.state_dir / LOCK_DIR)
        self._key = None

    @property
    def db(self):
        """The connection as a sqlite_utils.Database, for reading, exporting and administration.

        Imported lazily: sqlite_utils scans installed plugins at import (~0.25 s on a Pi-class CPU), which
        would double the time of every `presensi punch`; the append path uses plain SQL instead.
        """
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- writing ---------------------------------------------------------------------------------------

    def append(
        self,
        employee: str,
        method: str,
        *,
        kind: str = "",
        details: dict | None = None,
        photo_jpeg: bytes | None = None,
        latitude: float | None = None,
        longitude: float | None = None,
        reading: clock.ClockReading | None = None,
        derived: dict | None = None,
    ) -> dict:
        """Append one punch and return the committed record. Raises LogError if it was not recorded.

        `derived` (kind, lateness, local time … as terminal/punch/derived.py makes them) is stored beside the
        record in the same transaction, outside the hash; new records carry kind '' in the hash."""
        if method not in METHODS:
            raise LogError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        if not employee or not isinstance(employee, str):
            raise LogError("an employee id is required")
        photo = evidence.store_photo(self.state_dir, photo_jpeg) if photo_jpeg is not None else None
        with self._writer():
            reading = reading or clock.read()
            return self._write(
                {
                    "log_id": self.log_id, "employee": employee, "method": method, "kind": kind,
                    "details": _canonical_json(details or {}), **reading.as_dict(),
                    "latitude": latitude, "longitude": longitude,
                    "photo_path": photo.relative_path if photo else None,
                    "photo_sha256": photo.sha256 if photo else None,
                },
                derived,
            )

    @contextmanager
    def _writer(self):
        """The writer lock; waiting too long for it is a storage error of this punch, not a crash."""
        if self._lock is None:
            raise LogError(f"{self.path}: opened read-only; nothing can be written through this connection")
        try:
            with self._lock.hold(self.lock_timeout) as ticket:
                yield ticket
        except WriterLockTimeout as e:
            raise StorageError(f"{self.path}: {e}; the punch was NOT recorded. Retry; if it persists, "
                               "restart the service") from None
        except OSError as e:  # the lock's ticket files: on a full disk their creation fails first
            raise classify_error(e, self.path) from None

    def _write(self, record: dict, derived: dict | None = None) -> dict:
        with self._transaction():
            seq, prev_hash = self._head_in_txn()
            record["seq"] = seq + 1
            record["prev_hash"] = prev_hash
            record["hash"] = chain.record_hash(prev_hash, record)
            _insert(self.conn, "punches", record)
            if derived is not None:
                _insert(self.conn, "punch_derived", {
                    **{k: int(v) if isinstance(v, bool) else v for k, v in derived.items()},
                    "seq": record["seq"], "log_id": self.log_id, "updated_ns": record["realtime_ns"]})
            if record["seq"] % self.checkpoint_every == 0:
                self._insert_checkpoint(record["seq"], record["hash"])
        return self._public(record, self._derived_between(record["seq"], record["seq"]))

    @contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE … COMMIT; on any error ROLLBACK and raise a LogError that says what to do."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as e:
            raise _classify(e, self.path) from None

    def _head_in_txn(self) -> tuple[int, str]:
        row = self.conn.execute("SELECT seq, hash FROM punches ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else (0, chain.GENESIS)

    def _signing_key(self):
        if self._key is None:
            self._key = identity.load_key(self.state_dir)
        return self._key

    def _signed_checkpoint(self, seq: int, hash_: str) -> dict:
        key = self._signing_key()
        return {
            "log_id": self.log_id, "seq": seq, "hash": hash_, "signed_realtime_ns": time.time_ns(),
            "public_key": chain.public_key_b64(key),
            "signature": chain.sign_b64(key, chain.checkpoint_message(self.log_id, seq, hash_)),
        }

    def _insert_checkpoint(self, seq: int, hash_: str) -> dict:
        cp = self._signed_checkpoint(seq, hash_)
        _insert(self.conn, "checkpoints", cp)
        return cp

    def head_checkpoint(self) -> dict | None:
        """A signed checkpoint over the current head: stored (as `checkpoint()`) when the log can be written,
        else signed now and not stored (an export from a full disk or through a read-only connection)."""
        if not self.readonly:
            try:
                return self.checkpoint()
            except (StorageFull, StorageError):
                pass
        seq, hash_ = self.head()
        last = self.latest_checkpoint()
        if seq == 0 or (last and last["seq"] == seq):
            return last if seq else None
        return self._signed_checkpoint(seq, hash_)

    def checkpoint(self) -> dict | None:
        """Sign a checkpoint over the current head now (on demand). None when the log is empty."""
        with self._writer(), self._transaction():
            seq, hash_ = self._head_in_txn()
            last = self.latest_checkpoint()
            if seq == 0:
                return None
            if last and last["seq"] == seq:
                return last
            return self._insert_checkpoint(seq, hash_)

    def audit(self, actor: str, action: str, details: dict | None = None) -> None:
        """Record an administrative action (append-only)."""
        entry = {"realtime_ns": time.time_ns(), "actor": actor, "action": action,
                 "details": _canonical_json(details or {})}
        with self._writer(), self._transaction():
            _insert(self.conn, "audit", entry)

    # -- reading ---------------------------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        return self._head_in_txn()

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM punches").fetchone()[0]

    def records(self, after_seq: int = 0, limit: int | None = None, batch: int = 1000) -> Iterator[dict]:
        """Punches with seq > after_seq in seq order, read in bounded batches (memory stays flat)."""
        remaining = limit
        while remaining is None or remaining > 0:
            n = batch if remaining is None else min(batch, remaining)
            rows = self.conn.execute(
                "SELECT * FROM punches WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, n)
            ).fetchall()
            if not rows:
                return
            derived = self._derived_between(rows[0]["seq"], rows[-1]["seq"])
            for row in rows:
                yield self._public(dict(row), derived)
            after_seq = rows[-1]["seq"]
            if remaining is not None:
                remaining -= len(rows)
            if len(rows) < n:
                return

    def get(self, seq: int) -> dict | None:
        row = self.conn.execute("SELECT * FROM punches WHERE seq = ?", (seq,)).fetchone()
        return self._public(dict(row), self._derived_between(seq, seq)) if row else None

    def _derived_between(self, lo: int, hi: int) -> dict[int, dict]:
        """seq -> the punch's derived values (kind, lateness, local time, basis …; outside the hash)."""
        cur = self.conn.execute(f"SELECT seq, {', '.join(DERIVED_FIELDS)}, revision FROM punch_derived "
                                "WHERE seq BETWEEN ? AND ?", (lo, hi))
        out = {}
        for r in cur.fetchall():
            d = dict(r)
            seq = d.pop("seq")
            for k in ("workday", "time_verified"):
                d[k] = None if d[k] is None else bool(d[k])
            out[seq] = d
        return out

    def latest_checkpoint(self) -> dict | None:
        row = self.conn.execute("SELECT * FROM checkpoints ORDER BY seq DESC, id DESC LIMIT 1").fetchone()
        return _checkpoint_public(row) if row else None

    def audit_entries(self, limit: int = 100) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]

    def integrity(self, quick: bool = True) -> str:
        """'ok', or raises CorruptDatabase."""
        return _check_integrity(self.conn, self.path, quick)

    @staticmethod
    def _public(record: dict, derived: dict[int, dict] | None = None) -> dict:
        out = dict(record)
        if isinstance(out.get("details"), str):
            out["details"] = json.loads(out["details"])
        if derived is not None:
            out["derived"] = derived.get(out["seq"])
        return out

    # -- verification ----------------------------------------------------------------------------------

    def verify(self) -> list[chain.Problem]:
        """Every problem in the chain and the checkpoints, first bad seq first. Empty = the log is intact."""
        key = identity.load_key(self.state_dir)
        rows = (dict(r) for r in self.conn.execute("SELECT * FROM punches ORDER BY rowid"))
        problems = list(chain.check_records(rows, self.log_id))
        checkpoints = [dict(r) for r in self.conn.execute("SELECT * FROM checkpoints ORDER BY id")]
        problems += chain.check_checkpoints(
            checkpoints, self.log_id, key.public_key(), self._hash_at, self.head()[0]
        )
        return sorted(set(problems), key=lambda p: (p.seq, p.what))

    def _hash_at(self, seq: int) -> str | None:
        row = self.conn.execute("SELECT hash FROM punches WHERE seq = ?", (seq,)).fetchone()
        return row[0] if row else None


def kind_of(record: dict) -> str:
    """A record's kind as it stands now: the derived one, else what records before schema step 7 hashed."""
    derived = record.get("derived") or {}
    details = record.get("details") if isinstance(record.get("details"), dict) else {}
    return derived.get("kind") or record.get("kind") or details.get("kind") or ""


def _insert(conn: sqlite3.Connection, table: str, row: dict) -> None:
    cols = ", ".join(row)
    conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))


def _checkpoint_public(row) -> dict:
    return {k: row[k] for k in ("log_id", "seq", "hash", "signed_realtime_ns", "public_key", "signature")}


def _canonical_json(value: dict) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
