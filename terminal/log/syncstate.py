"""The push client's bookkeeping in the punch database: high-water marks per central server, stream and log
(`sync_state`), and a short history of delivery attempts (`sync_attempts`) that `presensi sync status`, the
status page and the heartbeat read. Terminal-side on purpose: status and export read it without sync/.

Streams: "punches" (acked seq of the punch log), "photos" (highest punch seq whose photo was delivered or
skipped), "faults" (highest fault_events id delivered).
"""

from __future__ import annotations

import json
import sqlite3
import time

ATTEMPTS_KEPT = 500


def target_of(url: str | None) -> str | None:
    """The key a central server's state is stored under: its base URL without a trailing slash."""
    return url.rstrip("/") if url else None


def acked(conn: sqlite3.Connection, target: str, stream: str, log_id: str) -> int:
    row = conn.execute(
        "SELECT acked_seq FROM sync_state WHERE target=? AND stream=? AND log_id=?", (target, stream, log_id)
    ).fetchone()
    return row[0] if row else 0


def set_acked(conn: sqlite3.Connection, target: str, stream: str, log_id: str, seq: int,
              attempt: dict | None = None) -> None:
    """Record the server's acknowledgement (and the attempt that got it, if given) in one transaction;
    a crash before COMMIT only causes a resend."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            """INSERT INTO sync_state (target, stream, log_id, acked_seq, updated_realtime_ns)
               VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (target, stream, log_id)
               DO UPDATE SET acked_seq = excluded.acked_seq, updated_realtime_ns = excluded.updated_realtime_ns""",
            (target, stream, log_id, int(seq), time.time_ns()),
        )
        if attempt is not None:
            _insert_attempt(conn, target, **attempt)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def record_attempt(
    conn: sqlite3.Connection, target: str, kind: str, *, started_ns: int, ok: bool,
    http_status: int | None = None, sent: int = 0, acked_seq: int | None = None, error: str | None = None,
) -> None:
    """Append one delivery attempt and keep only the last ATTEMPTS_KEPT rows."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        _insert_attempt(conn, target, kind, started_ns=started_ns, ok=ok, http_status=http_status, sent=sent,
                        acked_seq=acked_seq, error=error)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _insert_attempt(conn, target: str, kind: str, *, started_ns: int, ok: bool, http_status: int | None = None,
                    sent: int = 0, acked_seq: int | None = None, error: str | None = None) -> None:
    duration_ms = max(0, (time.time_ns() - started_ns) // 1_000_000)
    cur = conn.execute(
        """INSERT INTO sync_attempts (target, kind, started_realtime_ns, duration_ms, ok, http_status, sent,
                                      acked_seq, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (target, kind, started_ns, duration_ms, int(ok), http_status, sent, acked_seq,
         (error or None) and error[:500]),
    )
    if cur.lastrowid and cur.lastrowid % 50 == 0:
        conn.execute("DELETE FROM sync_attempts WHERE id <= ?", (cur.lastrowid - ATTEMPTS_KEPT,))


def kept_aside(conn: sqlite3.Connection, target: str | None) -> list[int]:
    """Seqs a central server kept aside (it holds another version of them, so they are NOT delivered),
    from the audit entries the push client writes ("sync.kept-aside")."""
    seqs: set[int] = set()
    for (details,) in conn.execute("SELECT details FROM audit WHERE action='sync.kept-aside'"):
        d = json.loads(details)
        if d.get("target") == target:
            seqs.update(s for s in d.get("seqs") or [] if isinstance(s, int))
    return sorted(seqs)


def summary(conn: sqlite3.Connection, target: str | None, log_id: str) -> dict:
    """Backlog, acked seq, last contact and last error for one central server."""
    head = conn.execute("SELECT coalesce(max(seq), 0) FROM punches").fetchone()[0]
    if target is None:
        return {"ok": True, "configured": False, "head_seq": head, "backlog": None,
                "summary": "no central server configured ([central] url); punches stay local"}
    acked_seq = acked(conn, target, "punches", log_id)
    backlog = conn.execute("SELECT count(*) FROM punches WHERE seq > ?", (acked_seq,)).fetchone()[0]
    last_ok = conn.execute(
        "SELECT started_realtime_ns FROM sync_attempts WHERE target=? AND ok=1 ORDER BY id DESC LIMIT 1",
        (target,),
    ).fetchone()
    last = conn.execute(
        "SELECT kind, ok, http_status, error, started_realtime_ns FROM sync_attempts WHERE target=? "
        "ORDER BY id DESC LIMIT 1", (target,),
    ).fetchone()
    last_err = conn.execute(
        "SELECT error, started_realtime_ns FROM sync_attempts WHERE target=? AND ok=0 ORDER BY id DESC LIMIT 1",
        (target,),
    ).fetchone()
    failing = bool(last) and not last[1]
    out = {
        "ok": not failing, "configured": True, "target": target, "log_id": log_id, "head_seq": head,
        "acked_seq": acked_seq, "backlog": backlog,
        "photos_acked_seq": acked(conn, target, "photos", log_id),
        "faults_acked_id": acked(conn, target, "faults", "faults"),
        "last_contact_ns": last_ok[0] if last_ok else None,
        "last_error": last_err[0] if last_err else None,
        "last_error_ns": last_err[1] if last_err else None,
        "last_attempt_failed": failing,
        "kept_aside": kept_aside(conn, target),
    }
    out["ok"] = out["ok"] and not out["kept_aside"]
    out["summary"] = f"backlog {backlog}, acked seq {acked_seq} of {head}" + (
        f"; last error: {out['last_error']}" if failing else "") + (
        f"; {len(out['kept_aside'])} punch(es) kept aside by the server, NOT delivered" if out["kept_aside"] else "")
    return out


def status_part(cfg) -> dict:
    """`presensi status` part "sync": backlog, acked seq, last contact and last error."""
    from terminal.log import punchlog  # punchlog does not import this module; imported here to keep it light

    with punchlog.PunchLog(cfg.state_dir, readonly=True) as log:
        return summary(log.conn, target_of(cfg.central.url), log.log_id)
