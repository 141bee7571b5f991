"""The hash chain and checkpoint signatures of the punch log, as pure functions.

Both the terminal (`presensi log verify`) and the central server check records with these functions, so
the canonical encoding is defined once, here:

    hash_i = sha256( prev_hash_i (64 hex chars, ASCII) || canonical(record_i) )
    canonical(record) = JSON of the fields in HASHED_FIELDS, keys sorted, no spaces, UTF-8
    prev_hash_1 = GENESIS (64 zeros)

A checkpoint signs ``b"presensi-checkpoint:v1:" + log_id + ":" + seq + ":" + hash``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from terminal import identity

GENESIS = "0" * 64

# The immutable fields of a punch. Everything else (corrected time, sync state) lives beside the record.
HASHED_FIELDS = (
    "log_id", "seq", "employee", "method", "kind", "details",
    "boot_id", "monoraw_ns", "boottime_ns", "realtime_ns", "timex_status", "maxerror_us",
    "latitude", "longitude", "photo_sha256",
)


def canonical(record: dict) -> bytes:
    body = {k: record.get(k) for k in HASHED_FIELDS}
    if not isinstance(body["details"], str):  # records travel with details as an object
        body["details"] = json.dumps(body["details"] or {}, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(prev_hash: str, record: dict) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(record)).hexdigest()


def checkpoint_message(log_id: str, seq: int, hash_: str) -> bytes:
    return f"presensi-checkpoint:v1:{log_id}:{seq}:{hash_}".encode()


@dataclass(frozen=True)
class Problem:
    seq: int
    what: str  # edited | missing | reordered | bad-signature | truncated | broken-link | wrong-log

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.what}"


def check_records(
    records: Iterable[dict], log_id: str, prev_seq: int = 0, prev_hash: str = GENESIS
) -> Iterator[Problem]:
    """Yield every problem found in records (ordered by storage position, expected seq prev_seq+1, …).

    Distinguishes an edited record (its own hash does not match its content), a missing record (a gap in
    seq), a reordering (seq goes backwards or links point to a later record) and a broken link (the record
    is intact but does not follow its predecessor).
    """
    expect_seq, expect_prev = prev_seq + 1, prev_hash
    for rec in records:
        seq = rec["seq"]
        if rec.get("log_id") != log_id:
            yield Problem(seq, "wrong-log")
        if record_hash(rec["prev_hash"], rec) != rec["hash"]:
            yield Problem(seq, "edited")
        if seq < expect_seq:
            yield Problem(seq, "reordered")
        elif seq > expect_seq:
            yield Problem(expect_seq, "missing")
        elif rec["prev_hash"] != expect_prev:
            yield Problem(seq, "broken-link")
        expect_seq, expect_prev = max(expect_seq, seq + 1), rec["hash"]


def check_checkpoints(
    checkpoints: Iterable[dict], log_id: str, public_key, hash_at, head_seq: int
) -> Iterator[Problem]:
    """Check each checkpoint's signature (against the pinned device key) and that the log still holds the
    signed record: a checkpoint beyond the head means the tail was cut; a different hash means rewriting."""
    for cp in checkpoints:
        seq = cp["seq"]
        message = checkpoint_message(cp["log_id"], seq, cp["hash"])
        if cp["log_id"] != log_id or not identity.verify_b64(public_key, cp["signature"], message):
            yield Problem(seq, "bad-signature")
            continue
        if seq > head_seq:
            yield Problem(head_seq + 1, "truncated")
            continue
        stored = hash_at(seq)
        if stored is None:
            yield Problem(seq, "missing")
        elif stored != cp["hash"]:
            yield Problem(seq, "rewritten")
