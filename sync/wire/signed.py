"""The signed request envelope: how the terminal proves to the central server that an upload is its own.

A bearer token only says which device a connection claims to be; it sits in presensi.toml and anyone who
copies that file has it. What makes an upload count is the device's Ed25519 key (made by `presensi init`,
bound to the device on the server by `presensi server add-device`). Every request of the device API carries
four headers:

    X-Presensi-Key        base64 of the raw public key that signed (the server compares it to the bound key)
    X-Presensi-Timestamp  the device's wall clock in ns (informative: terminal clocks are not trusted)
    X-Presensi-Nonce      16 random bytes, hex; the server refuses a nonce it has seen (replay)
    X-Presensi-Signature  base64 Ed25519 signature over `message()` below

and, once, X-Presensi-Enrol with the one-time enrolment code `add-device` printed, when no key was given there.

The signature covers the method, the path with its query, the device id, the timestamp, the nonce and the
SHA-256 of the body exactly as sent (gzip-compressed if it was): a punch batch's records carry log_id, seq,
prev_hash and hash, so the signature covers each record's content and its chain position.

A log announcement binds a new log_id (a new punch database on the terminal) to the device:
`presensi-log:v1:<device_id>:<log_id>` signed by the device key, sent with every punch batch; the server
accepts a log_id it has not seen only with a valid announcement.

Both sides import this module (sync/device/central.py signs, sync/server/app.py verifies).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from terminal.log import chain

PROTOCOL = "presensi-request:v1"
KEY, TIMESTAMP, NONCE, SIGNATURE, ENROL = (
    "X-Presensi-Key", "X-Presensi-Timestamp", "X-Presensi-Nonce", "X-Presensi-Signature", "X-Presensi-Enrol")
NONCE_BYTES = 16
MAX_HEADER = 200  # every envelope header is far shorter; longer ones are refused unread


def body_hash(body: bytes | None) -> str:
    return hashlib.sha256(body or b"").hexdigest()


def message(method: str, path_and_query: str, device_id: str, timestamp_ns: int, nonce: str,
            body_sha256: str) -> bytes:
    """The exact bytes the device signs: one field a line, so no field can run into the next."""
    return "\n".join((PROTOCOL, method.upper(), path_and_query, device_id, str(timestamp_ns), nonce,
                      body_sha256)).encode()


def sign_request(key: Ed25519PrivateKey, method: str, path_and_query: str, device_id: str,
                 body: bytes | None, enrolment_code: str | None = None) -> dict[str, str]:
    """The envelope headers for one request (a fresh nonce each call)."""
    ts, nonce = time.time_ns(), secrets.token_hex(NONCE_BYTES)
    msg = message(method, path_and_query, device_id, ts, nonce, body_hash(body))
    headers = {KEY: chain.public_key_b64(key), TIMESTAMP: str(ts), NONCE: nonce,
               SIGNATURE: chain.sign_b64(key, msg)}
    if enrolment_code:
        headers[ENROL] = enrolment_code
    return headers


@dataclass(frozen=True)
class Envelope:
    public_key: str
    timestamp_ns: int
    nonce: str
    signature: str
    enrolment_code: str | None


class BadEnvelope(ValueError):
    """The request is unsigned or its envelope is malformed or its signature does not verify."""


def parse(headers) -> Envelope:
    """The envelope from request headers (any case-insensitive mapping); BadEnvelope when absent/malformed."""
    values = {h: headers.get(h) for h in (KEY, TIMESTAMP, NONCE, SIGNATURE, ENROL)}
    missing = [h for h in (KEY, TIMESTAMP, NONCE, SIGNATURE) if not values[h]]
    if missing:
        raise BadEnvelope(f"unsigned request (no {', '.join(missing)}): every upload must be signed by the "
                          "device key; update the terminal's software")
    if any(v is not None and len(v) > MAX_HEADER for v in values.values()):
        raise BadEnvelope("a signature header is too long")
    ts, nonce = values[TIMESTAMP], values[NONCE]
    if not ts.isdigit() or len(ts) > 19 or len(nonce) != 2 * NONCE_BYTES or not all(
            c in "0123456789abcdef" for c in nonce):
        raise BadEnvelope(f"{TIMESTAMP} must be decimal ns and {NONCE} {NONCE_BYTES} bytes of lowercase hex")
    return Envelope(values[KEY], int(ts), nonce, values[SIGNATURE], values[ENROL])


def verify(env: Envelope, method: str, path_and_query: str, device_id: str, body: bytes | None) -> None:
    """Raises BadEnvelope unless env's signature (by env.public_key) covers exactly this request."""
    try:
        public_key = chain.public_key_from_b64(env.public_key)
    except ValueError:
        raise BadEnvelope(f"{KEY} is not a base64 Ed25519 public key") from None
    msg = message(method, path_and_query, device_id, env.timestamp_ns, env.nonce, body_hash(body))
    if not chain.verify_b64(public_key, env.signature, msg):
        raise BadEnvelope("the request signature does not verify (the request was altered, or signed for "
                          "another path or body)")


def announcement_message(device_id: str, log_id: str) -> bytes:
    return f"presensi-log:v1:{device_id}:{log_id}".encode()


def announce_log(key: Ed25519PrivateKey, device_id: str, log_id: str) -> str:
    return chain.sign_b64(key, announcement_message(device_id, log_id))


def announcement_valid(public_key_b64: str, device_id: str, log_id: str, signature: str | None) -> bool:
    if not isinstance(signature, str):
        return False
    try:
        public_key = chain.public_key_from_b64(public_key_b64)
    except ValueError:
        return False
    return chain.verify_b64(public_key, signature, announcement_message(device_id, log_id))


# The bases a corrected punch time may name (terminal/timing/timeline.py SOURCES plus the fallbacks it
# uses when no sample anchors a boot); tests/test_trust.py keeps this list and the terminal's in step.
TIME_BASES = ("server-signed", "http-date", "kernel-ntp", "rtc", "gps", "zk-settime", "adms-datetime", "manual",
              "order", "none", "unanchored", "wall-clock", "unavailable")
