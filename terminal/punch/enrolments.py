"""Enrolments made at this terminal, on their way to the central server ("enrol once, punch anywhere").

Every enrolment (`presensi enroll-photos`, the admin page's camera enrolment, `presensi finger enroll`) puts
its templates here as well as into the local stores that let the employee punch at once. The table
`pending_enrolments` of the punch database is the outbox: templates sealed with the terminal's template key
(terminal/secretbox.py), one row per template, deduplicated by its hash. sync/device/enrol_client.py sends
what is unsent and records the server's answer (accepted, pending approval, duplicate, refused).

When a roster arrives, `settle` tells the local stores what to forget: a template the roster now carries
(the server took it), and every template of a person the roster no longer lists (removed from the roster,
so removed here too: the roster is the one source of truth for who may punch).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time

import numpy as np

from terminal.secretbox import SecretBox

MODALITIES = ("face", "finger")
SENT_OUTCOMES = ("accepted", "pending", "duplicate", "refused")


def template_bytes(modality: str, template) -> bytes:
    """What is sent and hashed: a face template as 128 little-endian float32, a finger template as is."""
    if modality == "face":
        return np.asarray(template, dtype="<f4").reshape(128).tobytes()
    return bytes(template)


def template_sha256(modality: str, template) -> str:
    return hashlib.sha256(template_bytes(modality, template)).hexdigest()


def _aad(modality: str, employee: str, sha: str) -> bytes:
    return f"presensi-enrolment:{modality}:{employee}:{sha}".encode()


def record(conn: sqlite3.Connection, state_dir, employee: str, modality: str, templates) -> int:
    """Queue templates for the central server; returns how many were new. A template already queued (the
    same photo enrolled twice) is not queued again."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}")
    box, added = SecretBox(state_dir), 0
    for t in templates:
        raw = template_bytes(modality, t)
        sha = hashlib.sha256(raw).hexdigest()
        cur = conn.execute("INSERT OR IGNORE INTO pending_enrolments (employee, modality, template_sha256, sealed, "
                           "created_ns) VALUES (?, ?, ?, ?, ?)",
                           (employee, modality, sha, box.seal(raw, _aad(modality, employee, sha)), time.time_ns()))
        added += cur.rowcount
    return added


def record_in(state_dir, employee: str, modality: str, templates) -> int:
    """record() on the terminal's own punch database (the enrolment commands and pages), brought to the
    current schema first (a terminal upgraded since its daemon last ran has no outbox yet)."""
    from terminal.log import punchlog

    with punchlog.PunchLog(state_dir) as plog:
        return record(plog.conn, state_dir, employee, modality, templates)


def unsent(conn: sqlite3.Connection, state_dir, limit: int = 100) -> list[dict]:
    """The oldest enrolments not yet answered by the server, unsealed: {"ref", "employee", "modality",
    "template" (bytes), "created_ns"}."""
    rows = conn.execute("SELECT id, employee, modality, template_sha256, sealed, created_ns FROM pending_enrolments "
                        "WHERE outcome IS NULL ORDER BY id LIMIT ?", (limit,)).fetchall()
    if not rows:
        return []
    box = SecretBox(state_dir)
    return [{"ref": r[0], "employee": r[1], "modality": r[2], "created_ns": r[5],
             "template": box.open(r[4], _aad(r[2], r[1], r[3]))} for r in rows]


def answer(conn: sqlite3.Connection, ref: int, outcome: str, reason: str | None = None) -> None:
    if outcome not in SENT_OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    conn.execute("UPDATE pending_enrolments SET outcome=?, reason=?, sent_ns=? WHERE id=?",
                 (outcome, (reason or "")[:500] or None, time.time_ns(), ref))


def summary(conn: sqlite3.Connection) -> dict:
    """Counts per state, for `presensi status` and the sync commands."""
    counts = {"unsent": 0, **{k: 0 for k in SENT_OUTCOMES}}
    for outcome, n in conn.execute("SELECT coalesce(outcome, 'unsent'), count(*) FROM pending_enrolments "
                                   "GROUP BY 1"):
        counts[outcome] = n
    return counts


def settle(roster_employees: list[dict], local: dict[str, list], modality: str) -> dict[str, list]:
    """What of the local templates (employee -> templates) to forget once `roster_employees` is installed:
    employee -> the local templates to drop. Carried by the roster: the server has them now. Employee not in
    the roster: removed everywhere."""
    key = "face_templates" if modality == "face" else "finger_templates"
    carried = {e["id"]: {template_sha256(modality, t) for t in e.get(key) or []} for e in roster_employees}
    drop: dict[str, list] = {}
    for employee, templates in local.items():
        gone = [t for t in templates if employee not in carried or template_sha256(modality, t) in carried[employee]]
        if gone:
            drop[employee] = gone
    return drop
