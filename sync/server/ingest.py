"""Taking in a batch of punches: dedupe, chain and checkpoint checks, alarms, and the acknowledgement.

Rules (../shared/reference/time-and-durability.md §3):
- The key is (device, log_id, seq); insert-or-ignore, so a resend is harmless. The same key with a different
  hash is an edit after delivery: the first version stays, an alarm is raised.
- A batch says which records the terminal holds after `after_seq`: a seq it skips is a deletion on the
  terminal, stored as missing with an alarm, so it never blocks the acknowledgement.
- A record whose hash does not match its content, or that does not link to its predecessor, is kept and
  flagged (alarm) rather than refused: a poison record must not stall the queue.
- `acked_through` is the highest seq up to which every seq is stored or known missing.
- Nothing displaces a stored record: a second version of a stored (log_id, seq) is kept aside in
  `punch_conflicts`, alarmed, and named in the answer's `kept_aside`, so the terminal does not count it as
  delivered. (Every batch that gets here was signed by the device key: sync/server/app.py checks that.)
- A batch that skips seqs after the acknowledged ones is alarmed as a gap even without `after_seq`.
- Sizes are bounded: seq up to MAX_SEQ, every text field to its length in TEXT_LIMITS.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time

from sync.wire import signed
from terminal.log import chain

from .storage import PUNCH_COLUMNS, Store

INT_FIELDS = ("seq", "monoraw_ns", "boottime_ns", "realtime_ns")
STR_FIELDS = ("log_id", "employee", "method", "boot_id", "prev_hash", "hash")
DERIVED = ("utc", "earliest", "latest", "basis")
WALK_BATCH = 5000
MAX_ITEMS = 10_000  # records, times or events per request (as documented)
MAX_SKIP = 50_000  # seqs a batch may skip that are tracked one by one (beyond: one coarse alarm)
HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
# 2^31 - 1: a terminal with 10,000 punches a day reaches it in 580 years; anything bigger is an attack on
# the arithmetic of the acknowledgement, not a punch.
MAX_SEQ = 2**31 - 1
# Longest accepted text per field (characters); a NIP has 18 digits, ids are up to 64 characters.
TEXT_LIMITS = {"log_id": 64, "employee": 64, "method": 16, "kind": 32, "boot_id": 64, "photo_sha256": 64,
               "utc": 40, "earliest": 40, "latest": 40, "basis": 32, "flag": 64}
DETAILS_LIMIT = 8192  # a punch's details as JSON
MAX_FLAGS = 32
HEALTH_LIMIT = 64 * 1024  # a heartbeat's health summary as JSON


class BadBatch(ValueError):
    """The request is malformed (HTTP 400); the message says which field."""


def validate_record(rec, i: int) -> None:
    if not isinstance(rec, dict):
        raise BadBatch(f"records[{i}] is not an object")
    for k in INT_FIELDS:
        if not isinstance(rec.get(k), int) or isinstance(rec.get(k), bool):
            raise BadBatch(f"records[{i}].{k} must be an integer")
    for k in STR_FIELDS:
        if not isinstance(rec.get(k), str):
            raise BadBatch(f"records[{i}].{k} must be a string")
    if not (HEX64.match(rec["prev_hash"]) and HEX64.match(rec["hash"])):
        raise BadBatch(f"records[{i}].hash and prev_hash must be 64 lowercase hex digits")
    if not 1 <= rec["seq"] <= 2**62 or any(abs(rec[k]) >= 2**63 for k in INT_FIELDS):
        raise BadBatch(f"records[{i}] has an integer out of range")
    for k in ("latitude", "longitude"):
        v = rec.get(k)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not -180 <= v <= 180):
            raise BadBatch(f"records[{i}].{k} must be a number of degrees (-180 to 180) or null")
    for k in ("kind", "photo_sha256"):
        if rec.get(k) is not None and not isinstance(rec[k], str):
            raise BadBatch(f"records[{i}].{k} must be a string or null")
    if not isinstance(rec.get("flags") or [], list):
        raise BadBatch(f"records[{i}].flags must be a list")
    for k in ("timex_status", "maxerror_us"):
        v = rec.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or abs(v) >= 2**63):
            raise BadBatch(f"records[{i}].{k} must be a 64-bit integer or null")
    if not 1 <= rec["seq"] <= MAX_SEQ:
        raise BadBatch(f"records[{i}].seq must be from 1 to {MAX_SEQ}")
    check_lengths(rec, f"records[{i}]")
    if not isinstance(rec.get("details", {}), (dict, str)):
        raise BadBatch(f"records[{i}].details must be an object")
    for k in DERIVED:
        if rec.get(k) is not None and not isinstance(rec[k], str):
            raise BadBatch(f"records[{i}].{k} must be a string or null")
    validate_derived(rec.get("derived"), f"records[{i}].derived")


_DERIVED_TEXT = ("kind", "basis", "computed_from")
_DERIVED_OPTIONAL_TEXT = ("local_date", "local_time", "timezone", "day_name")


def validate_derived(d, where: str) -> None:
    """The terminal's derived values of one punch (kind, lateness, local time …), or None."""
    if d is None:
        return
    if not isinstance(d, dict):
        raise BadBatch(f"{where} must be an object or null")
    for k in _DERIVED_TEXT:
        if not isinstance(d.get(k), str):
            raise BadBatch(f"{where}.{k} must be a string")
    for k in _DERIVED_OPTIONAL_TEXT:
        if d.get(k) is not None and not isinstance(d[k], str):
            raise BadBatch(f"{where}.{k} must be a string or null")
    for k, hi in (("minutes_late", 100_000), ("minutes_early", 100_000), ("revision", 2**62)):
        if not _int_in(d.get(k, 0 if k != "revision" else None), 0 if k != "revision" else 1, hi):
            raise BadBatch(f"{where}.{k} must be a whole number in range")
    if d.get("zk_state") is not None and not _int_in(d["zk_state"], 0, 255):
        raise BadBatch(f"{where}.zk_state must be 0 to 255 or null")
    for k in ("workday", "time_verified"):
        if d.get(k) is not None and not isinstance(d[k], bool):
            raise BadBatch(f"{where}.{k} must be true, false or null")


def check_lengths(item: dict, where: str) -> None:
    """Text fields within TEXT_LIMITS, flags a short list of short strings, details a small object."""
    for k, limit in TEXT_LIMITS.items():
        v = item.get(k)
        if isinstance(v, str) and len(v) > limit:
            raise BadBatch(f"{where}.{k} is longer than {limit} characters")
    flags = item.get("flags") or []
    if isinstance(flags, list) and (len(flags) > MAX_FLAGS or any(
            not isinstance(f, str) or len(f) > TEXT_LIMITS["flag"] for f in flags)):
        raise BadBatch(f"{where}.flags must be at most {MAX_FLAGS} strings of at most {TEXT_LIMITS['flag']} "
                       "characters")
    details = item.get("details")
    if details is not None:
        size = len(details) if isinstance(details, str) else len(json.dumps(details, ensure_ascii=False))
        if size > DETAILS_LIMIT:
            raise BadBatch(f"{where}.details is larger than {DETAILS_LIMIT} characters")


def _int_in(value, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def validate_batch(body) -> tuple[str, int, list[dict], list[dict]]:
    if not isinstance(body, dict):
        raise BadBatch("the body must be a JSON object")
    log_id, after, records = body.get("log_id"), body.get("after_seq"), body.get("records")
    checkpoints = body.get("checkpoints", [])
    if "after_seq" in body and after is None:
        raise BadBatch("after_seq must be a non-negative integer (or left out)")
    if not isinstance(log_id, str) or not log_id or len(log_id) > TEXT_LIMITS["log_id"]:
        raise BadBatch(f"log_id must be a non-empty string of at most {TEXT_LIMITS['log_id']} characters")
    if not isinstance(records, list) or len(records) > MAX_ITEMS:
        raise BadBatch(f"records must be a list of at most {MAX_ITEMS}")
    if after is not None and not _int_in(after, 0, MAX_SEQ):
        raise BadBatch(f"after_seq must be a whole number from 0 to {MAX_SEQ}")
    if not isinstance(checkpoints, list):
        raise BadBatch("checkpoints must be a list")
    for i, rec in enumerate(records):
        validate_record(rec, i)
    for i, cp in enumerate(checkpoints):
        if not isinstance(cp, dict) or not _int_in(cp.get("seq"), 1, MAX_SEQ) or not all(
                isinstance(cp.get(k), str) and len(cp[k]) <= 128 for k in ("log_id", "hash", "signature")):
            raise BadBatch(f"checkpoints[{i}] needs log_id, seq (1 to {MAX_SEQ}), hash and signature")
        if "public_key" in cp and (not isinstance(cp["public_key"], str) or len(cp["public_key"]) > 128):
            raise BadBatch(f"checkpoints[{i}].public_key must be a string")
        if "signed_realtime_ns" in cp and not _int_in(cp["signed_realtime_ns"], -(2**63 - 1), 2**63 - 1):
            raise BadBatch(f"checkpoints[{i}].signed_realtime_ns must be a 64-bit integer")
    return log_id, after, records, checkpoints


def ranges(seqs: list[int]) -> str:
    """[1,2,3,7] -> '1-3, 7' (alarm messages stay short however many records are affected)."""
    out, seqs = [], sorted(seqs)
    start = prev = None
    for s in seqs:
        if start is None:
            start = prev = s
        elif s == prev + 1:
            prev = s
        else:
            out.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = s
    if start is not None:
        out.append(f"{start}-{prev}" if start != prev else str(start))
    text = ", ".join(out[:20])
    return text + (f" … ({len(out) - 20} more ranges)" if len(out) > 20 else "")


ALARM_TEXT = {
    "edited": "record content does not match its hash (edited on the terminal)",
    "broken-link": "record does not follow its predecessor (a record before it was edited or replaced)",
    "wrong-log": "record carries another log_id",
    "missing": "seq skipped by the terminal (deleted from the terminal's database)",
    "conflict": "a record already delivered arrived again with a different hash (edited after delivery)",
    "bad-signature": "checkpoint signature is not valid for this device's key",
    "rewritten": "a signed checkpoint does not match the stored record (the log was rewritten)",
    "gap": "the batch skips seqs the server does not hold (not yet delivered, or deleted on the terminal)",
    "time-moved": "a corrected time moved outside the interval delivered before",
}


def store_batch(store: Store, device_id: str, log_id: str, after_seq: int | None, records: list[dict],
                checkpoints: list[dict], source: str = "push") -> dict:
    """Store one batch in one transaction and return {"acked_through", "stored", "duplicates", "flagged"}."""
    records = sorted(records, key=lambda r: r["seq"])
    with store.transaction() as cur:
        store.execute(cur, "INSERT INTO logs (device_id, log_id, acked_through) VALUES (?, ?, 0) "
                      "ON CONFLICT DO NOTHING", (device_id, log_id))
        # Several server processes may share one PostgreSQL database: one batch per log at a time.
        store.rows(cur, "SELECT acked_through FROM logs WHERE device_id=? AND log_id=?" + store.lock_row,
                   (device_id, log_id))
        result = {"stored": 0, "duplicates": 0, "flagged": 0, "kept_aside": []}
        if records:
            result = _store_records(store, cur, device_id, log_id, after_seq, records, source)
        _check_checkpoints(store, cur, device_id, log_id, checkpoints)
        acked = _advance(store, cur, device_id, log_id)
        store.touch(cur, device_id)
    return {"acked_through": acked, **result}


def _store_records(store, cur, device_id, log_id, after_seq, records, source) -> dict:
    lo, hi = records[0]["seq"], records[-1]["seq"]
    if after_seq is None:
        _alarm_gap(store, cur, device_id, log_id, lo)
    if after_seq is not None and hi - after_seq > len(records) + MAX_SKIP:
        # Too many skipped seqs to account for one by one: alarm, store the records, and leave the
        # acknowledgement below the gap (nothing is assumed delivered that was not).
        store.raise_alarm(cur, device_id, log_id, after_seq + 1, "missing",
                          f"{ALARM_TEXT['missing']}: more than {MAX_SKIP} seqs between {after_seq} and {hi}",
                          once=True)
        after_seq = None
    low = lo - 1 if after_seq is None else min(lo - 1, after_seq + 1)
    existing = {s: (h, p) for s, h, p in store.rows(
        cur, "SELECT seq, hash, prev_hash FROM punches WHERE device_id=? AND log_id=? AND seq BETWEEN ? AND ?",
        (device_id, log_id, low, hi + 1))}
    problems: dict[str, list[int]] = {}
    batch_seqs = {r["seq"] for r in records}
    if after_seq is not None:
        skipped = [s for s in range(after_seq + 1, hi + 1) if s not in batch_seqs and s not in existing]
        if skipped:
            store.executemany(cur, "INSERT INTO missing VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                              [(device_id, log_id, s) for s in skipped])
            problems["missing"] = skipped
    hash_at = {s: v[0] for s, v in existing.items()}
    hash_at.update({r["seq"]: r["hash"] for r in records})
    rows, dup, now, kept = [], 0, time.time_ns(), []
    for rec in records:
        seq = rec["seq"]
        flags = _record_problems(rec, log_id, hash_at)
        following = existing.get(seq + 1)
        if following and seq + 1 not in batch_seqs and following[1] != rec["hash"]:
            problems.setdefault("broken-link", []).append(seq + 1)
        if seq in existing:
            dup += 1
            if existing[seq][0] != rec["hash"]:  # kept aside, never displacing the stored version
                problems.setdefault("conflict", []).append(seq)
                kept.append(seq)
                store.execute(cur, "INSERT INTO punch_conflicts VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                              (device_id, log_id, seq, rec["hash"], json.dumps(rec, sort_keys=True), now))
            continue
        for f in flags:
            problems.setdefault(f, []).append(seq)
        rows.append(_row(device_id, rec, flags, source, now))
    placeholders = ", ".join("?" * len(PUNCH_COLUMNS))
    store.executemany(cur, f"INSERT INTO punches ({', '.join(PUNCH_COLUMNS)}) VALUES ({placeholders}) "
                      "ON CONFLICT DO NOTHING", rows)
    # derived values (outside the hash) beside the record; never for a record that conflicts with the one
    # stored (an edit after delivery must not change what the stored record's kind reads as)
    conflicts = set(problems.get("conflict", []))
    store.upsert_derived(cur, device_id, log_id, [(r["seq"], r["derived"]) for r in records
                                                  if isinstance(r.get("derived"), dict) and r["seq"] not in conflicts])
    for kind, seqs in problems.items():
        store.raise_alarm(cur, device_id, log_id, min(seqs), kind,
                          f"{ALARM_TEXT[kind]}: seq {ranges(seqs)}")
    flagged = sum(1 for r in rows if r[PUNCH_COLUMNS.index("problems")] != "[]")
    return {"stored": len(rows), "duplicates": dup, "flagged": flagged, "kept_aside": kept}


def _alarm_gap(store, cur, device_id: str, log_id: str, lo: int) -> None:
    """A batch without after_seq that starts beyond what the server holds: alarm the gap (once per start).
    The seqs are not marked missing: the terminal did not say it lacks them, they may still come."""
    acked = store.rows(cur, "SELECT acked_through FROM logs WHERE device_id=? AND log_id=?",
                       (device_id, log_id))[0][0]
    if lo <= acked + 1:
        return
    held = store.rows(cur, "SELECT count(*) FROM punches WHERE device_id=? AND log_id=? AND seq > ? AND seq < ?",
                      (device_id, log_id, acked, lo))[0][0]
    if held < lo - acked - 1:
        store.raise_alarm(cur, device_id, log_id, acked + 1, "gap",
                          f"{ALARM_TEXT['gap']}: seq {acked + 1}-{lo - 1} (a batch without after_seq)", once=True)


def _record_problems(rec: dict, log_id: str, hash_at: dict) -> list[str]:
    flags = []
    if rec["log_id"] != log_id:
        flags.append("wrong-log")
    try:
        if chain.record_hash(rec["prev_hash"], rec) != rec["hash"]:
            flags.append("edited")
    except (UnicodeEncodeError, TypeError, ValueError):  # the transaction rolls back: nothing is stored
        raise BadBatch(f"record seq {rec['seq']} cannot be encoded canonically (invalid Unicode)") from None
    seq = rec["seq"]
    expected_prev = chain.GENESIS if seq == 1 else hash_at.get(seq - 1)
    if expected_prev is not None and rec["prev_hash"] != expected_prev:
        flags.append("broken-link")
    return flags


def _row(device_id: str, rec: dict, flags: list[str], source: str, now: int) -> tuple:
    details = rec.get("details", {})
    derived = rec.get("flags")
    values = {
        "device_id": device_id,
        "details": details if isinstance(details, str) else json.dumps(
            details or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        "flags": json.dumps(derived) if derived else "[]",
        "problems": json.dumps(flags) if flags else "[]",
        "source": source,
        "received_ns": now,
    }
    get = rec.get
    return tuple(values[k] if k in values else get(k) for k in PUNCH_COLUMNS)


def _check_checkpoints(store, cur, device_id: str, log_id: str, checkpoints: list[dict]) -> None:
    if not checkpoints:
        return
    pinned = store.rows(cur, "SELECT public_key FROM devices WHERE device_id=?", (device_id,))
    # The key bound at registration, never one a checkpoint brings along (a forger would bring their own).
    key_b64 = pinned[0][0] if pinned else None
    try:
        public_key = chain.public_key_from_b64(key_b64 or "")
    except ValueError:
        public_key = None
    bad: list[int] = []
    rewritten: list[int] = []
    for cp in checkpoints:
        seq = cp["seq"]
        message = chain.checkpoint_message(cp["log_id"], seq, cp["hash"])
        valid = (cp["log_id"] == log_id and public_key is not None
                 and chain.verify_b64(public_key, cp["signature"], message))
        if not valid:
            bad.append(seq)
        stored = store.rows(cur, "SELECT hash FROM punches WHERE device_id=? AND log_id=? AND seq=?",
                            (device_id, log_id, seq))
        if valid and stored and stored[0][0] != cp["hash"]:
            rewritten.append(seq)
        store.execute(cur, "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                      (device_id, log_id, seq, cp["hash"], cp.get("public_key"), cp["signature"],
                       cp.get("signed_realtime_ns"), int(valid)))
    for kind, seqs in (("bad-signature", bad), ("rewritten", rewritten)):
        if seqs:
            store.raise_alarm(cur, device_id, log_id, min(seqs), kind,
                              f"{ALARM_TEXT[kind]}: checkpoint seq {ranges(seqs)}", once=True)


def _advance(store, cur, device_id: str, log_id: str) -> int:
    """Move acked_through over every seq that is stored or known missing, in bounded steps."""
    acked = store.rows(cur, "SELECT acked_through FROM logs WHERE device_id=? AND log_id=?" + store.lock_row,
                       (device_id, log_id))[0][0]
    start = acked
    while True:
        seqs = [r[0] for r in store.rows(
            cur, """SELECT seq FROM (SELECT seq FROM punches WHERE device_id=? AND log_id=? AND seq > ?
                    UNION SELECT seq FROM missing WHERE device_id=? AND log_id=? AND seq > ?) AS known
                    ORDER BY seq LIMIT ?""",
            (device_id, log_id, acked, device_id, log_id, acked, WALK_BATCH))]
        for s in seqs:
            if s != acked + 1:
                break
            acked = s
        else:
            if len(seqs) == WALK_BATCH:
                continue
        break
    if acked != start:
        store.execute(cur, "UPDATE logs SET acked_through=? WHERE device_id=? AND log_id=?",
                      (acked, device_id, log_id))
    return acked


def _utc(text, where: str) -> dt.datetime | None:
    """An ISO 8601 UTC time ('Z' or +00:00), or None; anything else is refused."""
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > TEXT_LIMITS["utc"]:
        raise BadBatch(f"{where} must be an ISO 8601 UTC time or null")
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadBatch(f"{where} is not an ISO 8601 time: {text[:40]!r}") from None
    if value.utcoffset() != dt.timedelta(0):
        raise BadBatch(f"{where} must be in UTC")
    return value


def validate_time(t, i: int) -> dict:
    """One corrected time: seq, utc inside [earliest, latest], a basis from the fixed list, short flags."""
    if not isinstance(t, dict) or not _int_in(t.get("seq"), 1, MAX_SEQ):
        raise BadBatch(f"times[{i}].seq must be a whole number from 1 to {MAX_SEQ}")
    utc, lo, hi = (_utc(t.get(k), f"times[{i}].{k}") for k in ("utc", "earliest", "latest"))
    if lo is not None and hi is not None and lo > hi:
        raise BadBatch(f"times[{i}]: earliest is after latest")
    if utc is not None and ((lo is not None and utc < lo) or (hi is not None and utc > hi)):
        raise BadBatch(f"times[{i}]: utc lies outside [earliest, latest]")
    if t.get("basis") not in signed.TIME_BASES:
        raise BadBatch(f"times[{i}].basis must be one of {', '.join(signed.TIME_BASES)}")
    flags = t.get("flags") or []
    if not isinstance(flags, list):
        raise BadBatch(f"times[{i}].flags must be a list")
    check_lengths({"flags": flags}, f"times[{i}]")
    return {"seq": t["seq"], "utc": t.get("utc"), "earliest": t.get("earliest"), "latest": t.get("latest"),
            "basis": t["basis"], "flags": flags, "_utc": utc}


def update_times(store: Store, device_id: str, body) -> dict:
    """C3: update only the derived time columns of stored punches, keeping every revision in
    time_revisions; a new utc outside the interval delivered before is alarmed (`time-moved`)."""
    if not isinstance(body, dict) or not isinstance(body.get("log_id"), str) or not isinstance(
            body.get("times"), list) or len(body["times"]) > MAX_ITEMS:
        raise BadBatch(f"body must be {{\"log_id\": str, \"times\": [at most {MAX_ITEMS}]}}")
    log_id = body["log_id"]
    times, values = [], []
    for i, t in enumerate(body["times"]):
        if isinstance(t, dict) and "derived" in t:
            if not _int_in(t.get("seq"), 1, MAX_SEQ):
                raise BadBatch(f"times[{i}].seq must be a whole number from 1 to {MAX_SEQ}")
            validate_derived(t["derived"], f"times[{i}].derived")
            if isinstance(t["derived"], dict):
                values.append((t["seq"], t["derived"]))
            if all(k not in t for k in (*DERIVED, "flags")):
                continue  # only the derived values (kind, lateness) changed: the stored times stay as they are
        times.append(validate_time(t, i))
    now, known, moved = time.time_ns(), 0, []
    with store.transaction() as cur:
        if values:  # only beside punches the server holds: derived values never stand for a record
            held = set()
            for i in range(0, len(values), 500):
                part = [seq for seq, _ in values[i:i + 500]]
                held |= {r[0] for r in store.rows(
                    cur, "SELECT seq FROM punches WHERE device_id=? AND log_id=? AND seq IN "
                    f"({', '.join('?' * len(part))})", (device_id, log_id, *part))}
            store.upsert_derived(cur, device_id, log_id, [v for v in values if v[0] in held])
        for t in times:
            stored = store.rows(cur, "SELECT earliest, latest FROM punches WHERE device_id=? AND log_id=? AND seq=?",
                                (device_id, log_id, t["seq"]))
            if not stored:
                continue
            known += 1
            prev_lo, prev_hi = (_utc_or_none(v) for v in stored[0])
            new = t["_utc"]
            if new is not None and ((prev_lo is not None and new < prev_lo) or (prev_hi is not None and new > prev_hi)):
                moved.append(t["seq"])
            flags = json.dumps(t["flags"])
            store.execute(cur, "INSERT INTO time_revisions (device_id, log_id, seq, utc, earliest, latest, basis, "
                          "flags, received_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (device_id, log_id, t["seq"], t["utc"], t["earliest"], t["latest"], t["basis"], flags, now))
            store.execute(cur, "UPDATE punches SET utc=?, earliest=?, latest=?, basis=?, flags=? "
                          "WHERE device_id=? AND log_id=? AND seq=?",
                          (t["utc"], t["earliest"], t["latest"], t["basis"], flags, device_id, log_id, t["seq"]))
        if moved:
            store.raise_alarm(cur, device_id, log_id, min(moved), "time-moved",
                              f"{ALARM_TEXT['time-moved']}: seq {ranges(moved)}")
        store.touch(cur, device_id)
    return {"updated": known}


def _utc_or_none(text):
    try:
        return _utc(text, "stored")
    except BadBatch:  # stored by an older version without validation: no interval to compare with
        return None


def heartbeat(store: Store, device_id: str, body) -> dict:
    """Store the heartbeat; a head hash that differs from the stored record is a rewrite alarm."""
    if not isinstance(body, dict):
        raise BadBatch("the body must be a JSON object")
    log_id, head = body.get("log_id"), body.get("head", {})
    if not isinstance(head, dict):
        raise BadBatch("head must be an object {seq, hash}")
    seq = head.get("seq", 0)
    if (not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= 2**62):
        raise BadBatch("head.seq must be a whole number from 0 to 2^62")
    if head.get("hash") is not None and not isinstance(head["hash"], str):
        raise BadBatch("head.hash must be a string or null")
    for key, kind in (("version", str), ("log_id", str), ("backlog", int), ("acked_seq", int), ("health", dict)):
        value = body.get(key)
        if key in body and (not isinstance(value, kind) or isinstance(value, bool)):
            what = {str: "a string", int: "a whole number", dict: "an object"}[kind]
            raise BadBatch(f"{key} must be {what}")
        if isinstance(value, str) and len(value) > 64:
            raise BadBatch(f"{key} is longer than 64 characters")
    if head.get("hash") is not None and len(head["hash"]) > 64:
        raise BadBatch("head.hash is longer than 64 characters")
    if len(json.dumps(body.get("health") or {}, ensure_ascii=False)) > HEALTH_LIMIT:
        raise BadBatch(f"health is larger than {HEALTH_LIMIT} characters")
    with store.transaction() as cur:
        store.touch(cur, device_id, {**body, "received_ns": time.time_ns()})
        acked = 0
        if isinstance(log_id, str):
            row = store.rows(cur, "SELECT acked_through FROM logs WHERE device_id=? AND log_id=?",
                             (device_id, log_id))
            acked = row[0][0] if row else 0
            seq, hash_ = head.get("seq"), head.get("hash")
            if isinstance(seq, int) and isinstance(hash_, str):
                stored = store.rows(cur, "SELECT hash FROM punches WHERE device_id=? AND log_id=? AND seq=?",
                                    (device_id, log_id, seq))
                if stored and stored[0][0] != hash_:
                    store.raise_alarm(cur, device_id, log_id, seq, "rewritten",
                                      f"the terminal's head seq {seq} differs from the delivered record "
                                      "(the log was rewritten after delivery)", once=True)
    return {"ok": True, "acked_through": acked, "server_time_ns": time.time_ns()}
