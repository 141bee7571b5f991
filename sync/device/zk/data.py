"""What the ZKTeco protocols see of this terminal: users with 16-bit uids, punches as (state, verify,
local time), per-client "collected" marks, the ADMS high-water mark and the stamps it posted (by device and
log_id), and a fallback user store.

Sources: the punch log (never changed here), the roster (`terminal.punch.roster`), else the distinct
employees of the log plus users an ADMS server sent; `terminal.timing.timeline` for the corrected time.
Where the timeline fails, delivery must not stall (the raw, signed records are what counts), so the punch's
raw wall clock is served instead, but never silently: a clock fault names how many punches went out that
way. Our own bookkeeping lives in state_dir/zkcompat.db, so nothing here touches the punch database's schema.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from terminal.config import Config, ConfigError
from terminal.log.punchlog import PunchLog
from terminal.ops import faults
from terminal.punch import roster
from terminal.timing import timeline

log = logging.getLogger(__name__)
COMPAT_DB = "zkcompat.db"
RAW_TIME_FAULT = "zk:raw-wall-clock"
FIXED_OFFSETS = {"Asia/Jakarta": 7, "Asia/Makassar": 8, "Asia/Jayapura": 9}
MAX_UID = 65534


def zone(name: str) -> dt.tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:  # no tzdata: these three zones have had fixed offsets since 1964
        return dt.timezone(dt.timedelta(hours=FIXED_OFFSETS.get(name, 7)))


@dataclass(frozen=True)
class ZkUser:
    uid: int
    user_id: str
    name: str
    privilege: int = 0


@dataclass(frozen=True)
class ZkPunch:
    seq: int
    uid: int
    user_id: str
    verify: int
    state: int
    local: dt.datetime
    work_code: int = 0  # 0 = none, as ZK machines record it


def _work_code(value) -> int:
    """The record's work code as ZK carries it (u32; 0 = none)."""
    return value if isinstance(value, int) and 0 <= value <= 0xFFFFFFFF else 0


def check_mappings(cfg: Config) -> None:
    """Raise ConfigError (naming the key) when a mapping holds something other than codes 0-255."""
    for key, mapping, hi in (("state_map", cfg.zk.state_map, 255), ("verify_map", cfg.zk.verify_map, 255)):
        for k, v in mapping.items():
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= hi:
                raise ConfigError(f"{cfg.path}: [zk] {key}.{k} = {v!r} must be a whole number 0-{hi}")


def serial_number(cfg: Config) -> str:
    return cfg.zk.serial_number or cfg.device.id


class CompatStore:
    """state_dir/zkcompat.db: uid assignments, collected marks, ADMS state and fallback users."""

    def __init__(self, state_dir: Path):
        self.conn = sqlite3.connect(Path(state_dir) / COMPAT_DB, timeout=30, isolation_level=None,
                                    check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(
            """CREATE TABLE IF NOT EXISTS uids (employee TEXT PRIMARY KEY, uid INTEGER NOT NULL UNIQUE);
               CREATE TABLE IF NOT EXISTS collected (client TEXT PRIMARY KEY, through_seq INTEGER NOT NULL,
                   realtime_ns INTEGER NOT NULL);
               CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
               CREATE TABLE IF NOT EXISTS sent_lines (log_id TEXT NOT NULL, seq INTEGER NOT NULL,
                   line TEXT NOT NULL, PRIMARY KEY (log_id, seq));
               CREATE TABLE IF NOT EXISTS adms_stamps (sn TEXT NOT NULL, log_id TEXT NOT NULL,
                   stamp INTEGER NOT NULL, PRIMARY KEY (sn, log_id, stamp));
               CREATE TABLE IF NOT EXISTS users (pin TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '',
                   privilege INTEGER NOT NULL DEFAULT 0, card TEXT NOT NULL DEFAULT '',
                   deleted INTEGER NOT NULL DEFAULT 0, realtime_ns INTEGER NOT NULL);"""
        )

    def close(self) -> None:
        self.conn.close()

    def get(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def put(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value))

    def collected_through(self, client: str) -> int:
        row = self.conn.execute("SELECT through_seq FROM collected WHERE client=?", (client,)).fetchone()
        return row[0] if row else 0

    def mark_collected(self, client: str, through_seq: int) -> None:
        self.conn.execute(
            "INSERT INTO collected VALUES (?, ?, ?) ON CONFLICT(client) DO UPDATE SET "
            "through_seq=max(through_seq, excluded.through_seq), realtime_ns=excluded.realtime_ns",
            (client, through_seq, time.time_ns()),
        )

    def sent_lines(self, log_id: str, seqs: list[int]) -> dict[int, str]:
        """ATTLOG lines as first sent, so that any re-send is byte-identical (servers dedupe on PIN + time,
        and a later time sample may re-anchor the corrected time of a punch already delivered)."""
        if not seqs:
            return {}
        rows = self.conn.execute("SELECT seq, line FROM sent_lines WHERE log_id=? AND seq BETWEEN ? AND ?",
                                 (log_id, min(seqs), max(seqs)))
        return dict(rows.fetchall())

    def remember_lines(self, log_id: str, lines: dict[int, str]) -> None:
        self.conn.executemany("INSERT OR IGNORE INTO sent_lines VALUES (?, ?, ?)",
                              [(log_id, seq, line) for seq, line in lines.items()])

    def remember_stamp(self, sn: str, log_id: str, stamp: int) -> None:
        """An ATTLOG batch ending at `stamp` of log `log_id` is about to be posted as device `sn`."""
        self.conn.execute("INSERT OR IGNORE INTO adms_stamps VALUES (?, ?, ?)", (sn, log_id, stamp))

    def sent_stamp(self, sn: str, log_id: str, stamp: int) -> bool:
        """Did this device post a batch of this log ending at `stamp`? Only then may a server's stamp count."""
        row = self.conn.execute("SELECT 1 FROM adms_stamps WHERE sn=? AND log_id=? AND stamp=?",
                                (sn, log_id, stamp)).fetchone()
        return row is not None

    def uid_map(self, employees: list[str], reserved: set[int] = frozenset()) -> dict[str, int]:
        """Stable uids: assigned once (the numeric id itself when it fits, else a hash probe), kept forever."""
        known = dict(self.conn.execute("SELECT employee, uid FROM uids"))
        if not employees:
            return {}
        missing = [e for e in employees if e not in known]
        if missing:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                known = dict(self.conn.execute("SELECT employee, uid FROM uids"))
                taken = set(known.values()) | set(reserved)
                for emp in sorted(set(missing) - set(known)):
                    uid = _preferred_uid(emp)
                    for _ in range(MAX_UID):
                        if uid not in taken:
                            break
                        uid = uid % MAX_UID + 1
                    else:
                        raise RuntimeError("all 65534 ZK uids are in use")
                    taken.add(uid)
                    known[emp] = uid
                    self.conn.execute("INSERT INTO uids VALUES (?, ?)", (emp, uid))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return known

    def upsert_user(self, pin: str, name: str, privilege: int, card: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?, 0, ?)", (pin, name, privilege, card, time.time_ns())
        )

    def delete_user(self, pin: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO users (pin, deleted, realtime_ns) VALUES (?, 1, ?)",
                          (pin, time.time_ns()))

    def fallback_users(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT pin, name, privilege, deleted FROM users ORDER BY pin").fetchall()


def _preferred_uid(employee: str) -> int:
    if employee.isdigit() and 1 <= int(employee) <= MAX_UID:
        return int(employee)
    return zlib.crc32(employee.encode()) % MAX_UID + 1


class TerminalView:
    """One per thread (it owns SQLite connections). Read-only towards the punch log, except audit."""

    def __init__(self, cfg: Config, state_dir: Path):
        check_mappings(cfg)
        self.cfg = cfg
        self.state_dir = Path(state_dir)
        self.log = PunchLog(self.state_dir)
        self.store = CompatStore(self.state_dir)
        self.tz = zone(cfg.device.timezone)
        self.timeline = timeline
        self.roster_mod = roster
        self._raw_time_open = True  # unknown at start: the first clean annotation clears a stale fault

    def close(self) -> None:
        self.log.close()
        self.store.close()

    # -- people ------------------------------------------------------------------------------------------

    def users(self) -> list[ZkUser]:
        """The roster's employees with its uids (C4) when it has any; else the fallback store's users.
        Employees who punched but are in neither still get a stable uid, so every punch has a user."""
        fallback = {r["pin"]: r for r in self.store.fallback_users()}
        roster = self._roster_people()
        if roster:
            users = {u.user_id: u for u in roster}
        else:
            users = {}
            for pin, row in fallback.items():
                if not row["deleted"]:
                    users[pin] = ZkUser(0, pin, row["name"], row["privilege"])
        logged = {r[0] for r in self.log.conn.execute("SELECT DISTINCT employee FROM punches")}
        extra = sorted(set(users) - {u for u, v in users.items() if v.uid} | (logged - set(users)))
        uids = self.store.uid_map(extra, reserved={u.uid for u in users.values() if u.uid})
        for emp in extra:
            old = users.get(emp)
            users[emp] = ZkUser(uids[emp], emp, old.name if old else "", old.privilege if old else 0)
        return sorted(users.values(), key=lambda u: u.uid)

    def _roster_people(self) -> list[ZkUser] | None:
        try:
            with self.roster_mod.Roster.open(self.state_dir) as roster:
                people = roster.people()
        except Exception as e:  # a damaged roster must not stop punches from being served
            log.warning("roster unavailable (%s); serving employees from the punch log", e)
            return None
        return [ZkUser(int(e["uid"]), str(e["id"]), str(e.get("name", ""))) for e in people]

    # -- punches -----------------------------------------------------------------------------------------

    def head(self) -> int:
        return self.log.head()[0]

    def state_of(self, kind: str) -> int:
        return self.cfg.zk.state_map.get(kind, self.cfg.zk.unknown_state)

    def verify_of(self, method: str) -> int:
        return self.cfg.zk.verify_map.get(method, 0)

    def local_times(self, records: list[dict]) -> list[dt.datetime]:
        """Naive local time of each punch in [device] timezone, from the corrected UTC when known."""
        utcs: list[str | None] = [None] * len(records)
        try:
            utcs = [r.get("utc") for r in self.timeline.annotate(self.log.conn, records)]
            self._raw_time_cleared()
        except Exception as e:  # serve the raw clock (delivery never stalls), and raise the fault
            self._raw_time_fault(f"{len(records)} punches (seq {records[0]['seq']}-{records[-1]['seq']}) "
                                 f"served with the raw wall clock: corrected times failed ({type(e).__name__}: {e})")
        out = []
        for rec, utc in zip(records, utcs, strict=False):
            if utc:
                t = dt.datetime.fromisoformat(utc.replace("Z", "+00:00"))
            else:
                t = dt.datetime.fromtimestamp(rec["realtime_ns"] / 1e9, dt.UTC)
            out.append(t.astimezone(self.tz).replace(tzinfo=None, microsecond=0))
        return out

    def punches(self, after_seq: int, through_seq: int, uids: dict[str, int],
                batch: int = 2000) -> Iterator[ZkPunch]:
        """Punches with after_seq < seq <= through_seq, in seq order, read in bounded batches."""
        while after_seq < through_seq:
            n = min(batch, through_seq - after_seq)
            # only the columns needed (annotate reads seq, boot_id, monoraw_ns, realtime_ns): no JSON
            # decoding of details for 100,000 records
            # the kind is the derived one (punch_derived, outside the hash): it follows re-anchoring; records
            # older than that table keep their hashed kind
            records = [dict(r) for r in self.log.conn.execute(
                "SELECT p.seq, p.employee, p.method, coalesce(nullif(d.kind, ''), p.kind) AS kind, p.boot_id, "
                "p.monoraw_ns, p.boottime_ns, p.realtime_ns, p.timex_status, p.maxerror_us, "
                "json_extract(p.details, '$.work_code') AS work_code FROM punches p "
                "LEFT JOIN punch_derived d ON d.seq = p.seq WHERE p.seq > ? AND p.seq <= ? ORDER BY p.seq",
                (after_seq, after_seq + n))]
            if not records:
                return
            for rec, local in zip(records, self.local_times(records), strict=False):
                yield ZkPunch(rec["seq"], uids.get(rec["employee"], 0), rec["employee"],
                              self.verify_of(rec["method"]), self.state_of(rec["kind"]), local,
                              _work_code(rec["work_code"]))
            after_seq = records[-1]["seq"]

    def now_local(self) -> dt.datetime:
        utc = None
        try:
            utc = self.timeline.now(self.log.conn).get("utc")
        except Exception as e:
            self._raw_time_fault(f"the time served to ZK/ADMS clients is the raw wall clock: the corrected "
                                 f"time failed ({type(e).__name__}: {e})")
        t = dt.datetime.fromisoformat(utc.replace("Z", "+00:00")) if utc else dt.datetime.now(dt.UTC)
        return t.astimezone(self.tz).replace(tzinfo=None, microsecond=0)

    def _raw_time_fault(self, message: str) -> None:
        log.error("%s", message)
        try:
            faults.raise_fault(self.log.conn, RAW_TIME_FAULT, part="clock", category="clock", message=message)
            self._raw_time_open = True
        except Exception as e:  # the fault store is the punch database: when it fails, the log line remains
            log.error("clock fault not recorded: %s", e)

    def _raw_time_cleared(self) -> None:
        if self._raw_time_open:  # once per view and after each failure: not a write per batch
            try:
                faults.clear_fault(self.log.conn, RAW_TIME_FAULT, message="corrected times available again")
                self._raw_time_open = False
            except Exception as e:
                log.error("clock fault not cleared: %s", e)

    def record_time_sample(self, source: str, local: dt.datetime, actor: str, uncertainty_s: float,
                           trusted_by: str | None = None) -> dict:
        """A peer told us the time: an audit entry, and a time claim in the timeline (evidence only) or,
        when the operator vouched for the peer (`trusted_by` names the config key), a C2 time sample.
        Never a change of any clock."""
        from terminal.timing import clock

        reading = clock.read()
        utc = local.replace(tzinfo=self.tz).astimezone(dt.UTC)
        utc_ns = int(utc.timestamp()) * 1_000_000_000
        details = {"source": source, "peer_local_time": local.isoformat(), "utc_ns": utc_ns,
                   "wall_clock_ns": reading.realtime_ns, "recorded_as_sample": False,
                   "recorded_as": None, "trusted_by": trusted_by}
        try:
            stored = self.timeline.record_sample(
                self.log.conn, source=source, reading=reading, utc_ns=utc_ns,
                uncertainty_ns=int(uncertainty_s * 1e9), evidence={"actor": actor}, trusted_by=trusted_by)
            details["recorded_as"] = "claim" if stored["status"] == self.timeline.CLAIM else "sample"
            details["recorded_as_sample"] = details["recorded_as"] == "sample"
        except Exception as e:
            details["sample_error"] = f"{type(e).__name__}: {e}"
            log.warning("time from %s not recorded: %s", actor, e)
        self.log.audit(actor, "set-time-received", details)
        return details
