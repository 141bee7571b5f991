"""The terminal's roster: who may punch here, their biometric templates, the work schedule and holidays.

The roster lives in `state_dir/roster.db`, a SQLite file that is never modified in place: every change
(a new bundle from the central server, an ADMS USERINFO update) writes a complete new file beside it,
fsyncs it and renames it over the old one, then fsyncs the directory. A reader therefore sees either the
old roster or the new one, never a mixture, and a crash mid-write leaves the old roster in place. Readers
open the file with SQLite's `immutable=1` (no locks, no journal), which is exactly true of these files.

Biometric data (face templates, enrolment photos, fingerprint templates) is sealed with
`terminal.secretbox` (AES-GCM, key `state_dir/template.key`), bound to employee and position.

An employee, as every caller sees it:
    {"id": str, "name": str, "uid": int (1..65535, stable, the ZKTeco user number),
     "pin_allowed": bool, "face_templates": [[128 floats], ...], "face_photos": [bytes, ...],
     "finger_templates": [bytes (512), ...]}
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import sqlite3
import struct
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from terminal import durable
from terminal.secretbox import SecretBox

DB_FILE = "roster.db"
LOCK_FILE = "roster.lock"
FORMAT = 1
FACE_DIM = 128
FINGER_BYTES = 512
MAX_UID = 65535
EMPLOYEE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_FACE_STRUCT = struct.Struct(f"<{FACE_DIM}d")
BIOMETRIC_KINDS = ("face_templates", "face_photos", "finger_templates")

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE employees (id TEXT PRIMARY KEY, name TEXT NOT NULL, uid INTEGER NOT NULL UNIQUE,
                               pin_allowed INTEGER NOT NULL)""",
    """CREATE TABLE biometrics (employee TEXT NOT NULL REFERENCES employees(id), kind TEXT NOT NULL,
                                idx INTEGER NOT NULL, sealed BLOB NOT NULL, PRIMARY KEY (employee, kind, idx))""",
)


class RosterError(Exception):
    """The roster file is unreadable, or an update is invalid; the message says what to do."""


class StaleRoster(RosterError):
    """A newer roster was installed meanwhile (two pulls raced); the newer one stays."""


def db_path(state_dir: Path) -> Path:
    return Path(state_dir) / DB_FILE


# -- stable ZKTeco user numbers ------------------------------------------------------------------------

def stable_uid(employee_id: str, taken: set[int]) -> int:
    """A 16-bit user number for ZKTeco clients: the id itself when it is a number in range, else derived
    from a CRC of the id; on a collision the next free number. Deterministic for the same `taken` set."""
    if employee_id.isdigit() and 1 <= int(employee_id) <= MAX_UID and int(employee_id) not in taken:
        return int(employee_id)
    if len(taken) >= MAX_UID:
        raise RosterError("more than 65535 employees: ZKTeco user numbers are 16-bit")
    uid = zlib.crc32(employee_id.encode()) % MAX_UID + 1
    while uid in taken:
        uid = uid % MAX_UID + 1
    return uid


# -- reading -------------------------------------------------------------------------------------------

class Roster:
    """One consistent snapshot of the roster. Open a new one (or check `is_current()`) to see swaps."""

    def __init__(self, state_dir: Path, conn: sqlite3.Connection | None, meta: dict, inode: int | None):
        self.state_dir = Path(state_dir)
        self._conn = conn
        self._meta = meta
        self._inode = inode
        self._box: SecretBox | None = None

    @classmethod
    def open(cls, state_dir: Path) -> Roster:
        """The installed roster; an empty roster (version 0) when none was ever installed."""
        path = db_path(state_dir)
        try:
            # Stat BEFORE opening: if a swap slips in between, is_current() reports False and the caller
            # merely reloads once more (the safe direction). The file itself is always complete.
            inode = path.stat().st_ino
        except FileNotFoundError:
            return cls(state_dir, None, {"version": "0"}, None)
        try:
            conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            meta = {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM meta")}
        except sqlite3.DatabaseError as e:
            raise RosterError(f"{path}: the roster file is damaged ({e}); run `presensi roster pull` "
                              "to fetch a fresh copy from the central server") from None
        return cls(state_dir, conn, meta, inode)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def version(self) -> int:
        return int(self._meta.get("version", 0))

    def is_current(self) -> bool:
        """False once a newer roster file was swapped in (reopen to see it)."""
        try:
            return db_path(self.state_dir).stat().st_ino == self._inode
        except FileNotFoundError:
            return self._inode is None

    def info(self) -> dict:
        """Version, origin and counts (no biometric data)."""
        counts = {"employees": 0, **{k: 0 for k in BIOMETRIC_KINDS}}
        if self._conn is not None:
            counts["employees"] = self._conn.execute("SELECT count(*) FROM employees").fetchone()[0]
            for kind, n in self._conn.execute("SELECT kind, count(*) FROM biometrics GROUP BY kind"):
                counts[kind] = n
        return {
            "version": self.version,
            "installed_realtime_ns": int(self._meta.get("installed_realtime_ns", 0)) or None,
            "source": self._meta.get("source"),
            "bundle_sha256": self._meta.get("bundle_sha256") or None,
            "created_utc": self._meta.get("created_utc") or None,
            "local_changes": int(self._meta.get("local_changes", 0)),
            **counts,
        }

    def schedule(self) -> dict:
        return json.loads(self._meta.get("schedule", "{}"))

    def holidays(self) -> list:
        return json.loads(self._meta.get("holidays", "[]"))

    def messages(self) -> list[dict]:
        """The central server's messages to employees (per employee or all staff, with validity dates)."""
        return json.loads(self._meta.get("messages", "[]"))

    def enrolment_key(self) -> str | None:
        """The central server's X25519 key enrolled templates are sealed to (None: the roster has none)."""
        return self._meta.get("enrolment_key") or None

    def apel_cancelled(self) -> list[dict]:
        """The dates on which the central server cancelled apel pagi: [{"date", "reason"}]."""
        return json.loads(self._meta.get("apel_cancelled", "[]"))

    def people(self) -> list[dict]:
        """Employees without biometric data: id, name, uid, pin_allowed (cheap; for lists and ZK)."""
        if self._conn is None:
            return []
        rows = self._conn.execute("SELECT id, name, uid, pin_allowed FROM employees ORDER BY id")
        return [_person(r) for r in rows]

    def employees(self) -> list[dict]:
        """Every employee with their (decrypted) templates and photos."""
        if self._conn is None:
            return []
        people = {p["id"]: p for p in self.people()}
        for p in people.values():
            p.update({k: [] for k in BIOMETRIC_KINDS})
        for row in self._conn.execute("SELECT * FROM biometrics ORDER BY employee, kind, idx"):
            people[row["employee"]][row["kind"]].append(self._unseal(row))
        return list(people.values())

    def employee(self, employee_id: str) -> dict | None:
        if self._conn is None:
            return None
        row = self._conn.execute("SELECT id, name, uid, pin_allowed FROM employees WHERE id = ?",
                                 (employee_id,)).fetchone()
        if row is None:
            return None
        person = {**_person(row), **{k: [] for k in BIOMETRIC_KINDS}}
        for b in self._conn.execute("SELECT * FROM biometrics WHERE employee = ? ORDER BY kind, idx",
                                    (employee_id,)):
            person[b["kind"]].append(self._unseal(b))
        return person

    def by_uid(self, uid: int) -> dict | None:
        if self._conn is None:
            return None
        row = self._conn.execute("SELECT id FROM employees WHERE uid = ?", (uid,)).fetchone()
        return self.employee(row["id"]) if row else None

    def _unseal(self, row):
        if self._box is None:
            self._box = SecretBox(self.state_dir)
        plain = self._box.open(row["sealed"], _aad(row["employee"], row["kind"], row["idx"]))
        if row["kind"] == "face_templates":
            return list(_FACE_STRUCT.unpack(plain))
        return plain


def _person(row) -> dict:
    return {"id": row["id"], "name": row["name"], "uid": row["uid"], "pin_allowed": bool(row["pin_allowed"])}


def _aad(employee: str, kind: str, idx: int) -> bytes:
    return f"presensi-roster:{kind}:{employee}:{idx}".encode()


def current_version(state_dir: Path) -> int:
    with Roster.open(state_dir) as r:
        return r.version


# -- writing -------------------------------------------------------------------------------------------

@contextmanager
def _writer_lock(state_dir: Path):
    """One roster writer at a time (pull, import and ADMS updates may race); readers never wait."""
    Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(Path(state_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def install(state_dir: Path, *, version: int, employees: list[dict], schedule: dict | None = None,
            holidays: list | None = None, source: str = "bundle", bundle_sha256: str | None = None,
            created_utc: str | None = None, require_newer: bool = True, messages: list | None = None,
            apel_cancelled: list | None = None, enrolment_key: str | None = None) -> dict:
    """Write a complete new roster and swap it in atomically. `employees` must already be validated
    (sync.wire.rosterbundle.verify_bundle does that for bundles). Returns the new roster's info(). Raises
    StaleRoster when `version` is not newer than the installed one (checked under the writer lock, so a
    slow pull can never replace a newer roster another pull installed meanwhile)."""
    with _writer_lock(state_dir):
        installed = current_version(state_dir)
        if require_newer and version <= installed:
            raise StaleRoster(f"roster version {version} is not newer than the installed version {installed}")
        _check_employees(employees)
        meta = {"format": FORMAT, "version": int(version), "source": source,
                "installed_realtime_ns": time.time_ns(), "bundle_sha256": bundle_sha256 or "",
                "created_utc": created_utc or "", "local_changes": 0,
                "schedule": json.dumps(schedule or {}, sort_keys=True),
                "holidays": json.dumps(holidays or [], sort_keys=True),
                "messages": json.dumps(messages or [], sort_keys=True, ensure_ascii=False),
                "apel_cancelled": json.dumps(apel_cancelled or [], sort_keys=True, ensure_ascii=False),
                "enrolment_key": enrolment_key or ""}
        _write_file(state_dir, meta, employees)
    with Roster.open(state_dir) as r:
        return r.info()


def _check_employees(employees: list[dict]) -> None:
    """Last line of defence before a write: the structure the database relies on."""
    ids, uids = set(), set()
    for e in employees:
        if not isinstance(e.get("id"), str) or not EMPLOYEE_ID.match(e["id"]) or e["id"] in ids:
            raise RosterError(f"employee id {e.get('id')!r} is invalid or repeated")
        uid = e.get("uid")
        if not isinstance(uid, int) or not 1 <= uid <= MAX_UID or uid in uids:
            raise RosterError(f"employee {e['id']}: uid {uid!r} is invalid or repeated (1..65535, unique)")
        ids.add(e["id"])
        uids.add(uid)
        for t in e.get("face_templates") or []:
            if len(t) != FACE_DIM:
                raise RosterError(f"employee {e['id']}: a face template must have {FACE_DIM} values")
        for t in e.get("finger_templates") or []:
            if len(t) != FINGER_BYTES:
                raise RosterError(f"employee {e['id']}: a fingerprint template must be {FINGER_BYTES} bytes")


def _write_file(state_dir: Path, meta: dict, employees: list[dict]) -> None:
    state_dir = Path(state_dir)
    box = SecretBox(state_dir)
    final = db_path(state_dir)
    for stale in state_dir.glob(f".{DB_FILE}.*.tmp"):  # left by a writer killed mid-write (we hold the lock)
        stale.unlink(missing_ok=True)
    tmp = state_dir / f".{DB_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=OFF")  # a half-built temp file is simply thrown away
            conn.execute("BEGIN")
            for stmt in _SCHEMA:
                conn.execute(stmt)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in meta.items()])
            for e in employees:
                _insert_employee(conn, box, e)
            conn.execute("COMMIT")
        finally:
            conn.close()
        os.chmod(tmp, 0o600)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        durable.fsync_dir(state_dir)
    except OSError as e:
        raise RosterError(f"{final}: could not write the new roster ({e.strerror or e}); the previous "
                          "roster is still in use. Free disk space and pull again") from None
    finally:
        tmp.unlink(missing_ok=True)


def _insert_employee(conn: sqlite3.Connection, box: SecretBox, e: dict) -> None:
    conn.execute("INSERT INTO employees VALUES (?, ?, ?, ?)",
                 (e["id"], e.get("name") or "", e["uid"], 1 if e.get("pin_allowed") else 0))
    rows = []
    for kind in BIOMETRIC_KINDS:
        for idx, item in enumerate(e.get(kind) or []):
            plain = _FACE_STRUCT.pack(*item) if kind == "face_templates" else bytes(item)
            rows.append((e["id"], kind, idx, box.seal(plain, _aad(e["id"], kind, idx))))
    conn.executemany("INSERT INTO biometrics VALUES (?, ?, ?, ?)", rows)


def apply_user_update(state_dir: Path, update: dict, *, actor: str = "adms") -> dict:
    """Add, change or remove one employee locally (ADMS USERINFO / ZK user commands), keeping every other
    employee and the roster version; the next bundle from the central server replaces local changes.

    update: {"id", optional "name", "uid", "pin_allowed", "face_templates", "face_photos",
    "finger_templates", "delete": bool}. Fields not given keep their value. Returns the employee as
    stored (None when deleted)."""
    emp_id = update.get("id")
    if not isinstance(emp_id, str) or not EMPLOYEE_ID.match(emp_id):
        raise RosterError(f"employee id {emp_id!r} is not valid: use 1-64 letters, digits, '.', '_' or '-'")
    with _writer_lock(state_dir):
        with Roster.open(state_dir) as current:
            meta = dict(current._meta)
            employees = {e["id"]: e for e in current.employees()}
        if update.get("delete"):
            employees.pop(emp_id, None)
        else:
            merged = _merge(employees.get(emp_id), update, {e["uid"] for k, e in employees.items() if k != emp_id})
            employees[emp_id] = merged
        meta.update({"format": FORMAT, "local_changes": int(meta.get("local_changes", 0)) + 1,
                     "installed_realtime_ns": time.time_ns(), "source": f"local:{actor}"})
        meta.setdefault("version", 0)
        _check_employees(list(employees.values()))
        _write_file(state_dir, meta, list(employees.values()))
    return None if update.get("delete") else employees[emp_id]


def _merge(old: dict | None, update: dict, other_uids: set[int]) -> dict:
    base = old or {"id": update["id"], "name": "", "uid": None, "pin_allowed": False,
                   **{k: [] for k in BIOMETRIC_KINDS}}
    merged = {**base, **{k: v for k, v in update.items() if k in base and k != "id" and v is not None}}
    if merged["uid"] is None:
        merged["uid"] = stable_uid(update["id"], other_uids)
    if merged["uid"] in other_uids:
        raise RosterError(f"uid {merged['uid']} already belongs to another employee")
    merged["name"] = str(merged["name"])[:100]
    merged["pin_allowed"] = bool(merged["pin_allowed"])
    return merged



def status_part(cfg) -> dict:
    """The roster's line in `presensi status` (terminal.ops.status.PARTS)."""
    with Roster.open(cfg.state_dir) as r:
        info = r.info()
    summary = (f"version {info['version']}, {info['employees']} employees" if info["version"] or info["employees"]
               else "no roster installed; run `presensi roster pull`")
    return {"ok": True, "summary": summary, **info}
