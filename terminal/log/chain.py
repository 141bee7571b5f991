"""The hash chain and checkpoint signatures of the punch log, as pure functions.

Both the terminal (`presensi log verify`) and the central server check records with these functions, so
the canonical encoding is defined once, here:

    hash_i = sha256( prev_hash_i (64 hex chars, ASCII) || canonical(record_i) )
    canonical(record) = JSON of the fields in HASHED_FIELDS, keys sorted, no spaces, UTF-8
    prev_hash_1 = GENESIS (64 zeros)

A checkpoint signs ``b"presensi-checkpoint:v1:" + log_id + ":" + seq + ":" + hash``. Keys and signatures
travel as base64 of their raw Ed25519 bytes (the helpers at the end).

This module is the only code the reference central server shares with the terminal: it imports nothing else
of the project.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

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
        if cp["log_id"] != log_id or not verify_b64(public_key, cp["signature"], message):
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


# -- Ed25519 keys and signatures as base64 text (device checkpoints, manifests, server answers) ---------


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as e:
        raise ValueError(f"not a base64 Ed25519 public key ({e})") from None


def sign_b64(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode()


def verify_b64(public_key: Ed25519PublicKey, signature_b64: str, message: bytes) -> bool:
    try:
        public_key.verify(base64.b64decode(signature_b64, validate=True), message)
        return True
    except (InvalidSignature, ValueError):
        return False



def key_fingerprint(public_key_b64: str) -> str:
    """What an installer compares by eye: `presensi init` prints it on the terminal and `presensi server
    add-device` prints the fingerprint of the key it bound (SHA-256 of the raw key, like OpenSSH's)."""
    raw = public_key_from_b64(public_key_b64).public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
