"""Fast synthetic punch logs for sync tests and bench/sync_bench.py: real punch-log rows with the real hash
chain and signed checkpoints, written in one transaction instead of one fsync per punch (PunchLog.append
would take minutes for 100,000 punches). Records are exactly what PunchLog.append would store."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from terminal import identity
from terminal.log import chain, punchlog

COLUMNS = ("seq", "log_id", "employee", "method", "kind", "details", "boot_id", "monoraw_ns", "boottime_ns",
           "realtime_ns", "timex_status", "maxerror_us", "latitude", "longitude", "photo_path", "photo_sha256",
           "prev_hash", "hash")


def fill(state_dir: Path, n: int, *, checkpoint_every: int = 100, chunk: int = 20000) -> tuple[int, str]:
    """Append n punches to an initialised log; returns the new head (seq, hash)."""
    key = identity.load_key(state_dir)
    pub = chain.public_key_b64(key)
    boot = str(uuid.uuid4())
    with punchlog.PunchLog(state_dir) as log:
        seq, prev = log.head()
        conn, log_id = log.conn, log.log_id
        now = time.time_ns()
        remaining = n
        while remaining:
            rows, cps = [], []
            for _ in range(min(chunk, remaining)):
                seq += 1
                rec = {"seq": seq, "log_id": log_id, "employee": f"1985{seq % 997:06d}", "method": "face",
                       "kind": ("masuk", "pulang")[seq % 2], "details": '{"score":0.91}', "boot_id": boot,
                       "monoraw_ns": seq * 1_000_000, "boottime_ns": seq * 1_000_000,
                       "realtime_ns": now + seq * 1_000_000, "timex_status": 0, "maxerror_us": 16000,
                       "latitude": -7.25, "longitude": 112.77, "photo_path": None, "photo_sha256": None,
                       "prev_hash": prev}
                rec["hash"] = prev = chain.record_hash(prev, rec)
                rows.append(tuple(rec[c] for c in COLUMNS))
                if seq % checkpoint_every == 0:
                    cps.append((log_id, seq, prev, now, pub,
                                chain.sign_b64(key, chain.checkpoint_message(log_id, seq, prev))))
            remaining -= len(rows)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(f"INSERT INTO punches ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                             rows)
            conn.executemany("INSERT INTO checkpoints (log_id, seq, hash, signed_realtime_ns, public_key, "
                             "signature) VALUES (?, ?, ?, ?, ?, ?)", cps)
            conn.execute("COMMIT")
        return seq, prev
