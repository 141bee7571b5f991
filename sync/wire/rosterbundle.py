"""Roster bundles: the signed, versioned package in which the central server publishes who may punch.

Wire format (one file, `application/vnd.presensi.roster+gzip`):

    gzip( b"PRESENSI-ROSTER/1\\n" || header JSON (one line) || b"\\n" || manifest bytes )

    header   = {"alg": "Ed25519", "manifest_sha256": hex, "manifest_bytes": n, "signature": base64,
                "key": base64 public key (informational; the terminal trusts only its pinned key)}
    signature = Ed25519( b"presensi-roster:v1:" || manifest bytes )   -- exactly the bytes sent
    manifest = canonical JSON {"type": "presensi-roster", "version": int, "created_utc": str,
                "device": str | null, "employees": [...], "schedule": {...}, "holidays": [...],
                "messages": [...], "apel_cancelled": [...], "enrolment_key": base64 | null}
                (the last three optional: older bundles lack them)
    employee = {"id", "name", "uid" (1..65535), "pin_allowed": bool,
                "face_templates": [[128 floats]], "face_photos": [base64 JPEG/PNG],
                "finger_templates": [base64 of 512 bytes]}
    message  = {"id": int, "employee": str | null (null: all staff), "text": str,
                "valid_from": "YYYY-MM-DD", "valid_until": "YYYY-MM-DD"}   (office-local dates, inclusive)
    apel_cancelled = {"date": "YYYY-MM-DD", "reason": str}

Messages and apel cancellations travel in the signed bundle, so a forged one is refused like a forged
roster: only the central server's key can make a terminal show a message or drop an apel window.
`enrolment_key` is the server's X25519 key the terminal seals enrolled templates to (sync/wire/sealedtemplate.py).

The signature covers the exact manifest bytes, so the terminal never re-encodes anything to check it.
`verify_bundle` checks everything (size, compression, signature with the PINNED key, version, every
field and template) before the caller swaps anything in; any problem raises BundleRejected(reason).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from terminal.log import chain

# What an employee entry may hold. The terminal's roster store (terminal/punch/roster.py) checks the same
# rules on install; tests/test_roster.py keeps the two definitions equal.
EMPLOYEE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
FACE_DIM = 128  # a dlib face embedding
FINGER_BYTES = 512  # a ZhianTec characteristics file
MAX_UID = 65535  # ZKTeco user numbers are 16-bit

MAGIC = b"PRESENSI-ROSTER/1\n"
SIGNING_PREFIX = b"presensi-roster:v1:"
CONTENT_TYPE = "application/vnd.presensi.roster+gzip"
MANIFEST_TYPE = "presensi-roster"
MAX_HEADER_BYTES = 4096
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


class BundleRejected(Exception):
    """The bundle must not be installed. `code` is a short machine-readable category, `reason` the text."""

    def __init__(self, code: str, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class BundleLimits:
    max_bundle_bytes: int = 64 * 1024 * 1024       # compressed, as received
    max_manifest_bytes: int = 256 * 1024 * 1024    # after decompression (bounds a gzip bomb)
    max_employees: int = 10000
    max_face_templates: int = 10                   # per employee
    max_face_photos: int = 5                       # per employee
    max_finger_templates: int = 10                 # per employee
    max_photo_bytes: int = 1024 * 1024
    max_photo_side: int = 4096
    max_name_chars: int = 100
    max_schedule_bytes: int = 256 * 1024
    max_messages: int = 2000
    max_message_chars: int = 300
    max_apel_cancelled: int = 400


# -- building (central server) -------------------------------------------------------------------------

def build_bundle(server_key: Ed25519PrivateKey, version: int, employees: list[dict], schedule: dict | None,
                 holidays: list | None, *, device: str | None = None,
                 created_utc: str | None = None, limits: BundleLimits | None = None,
                 messages: list[dict] | None = None, apel_cancelled: list[dict] | None = None,
                 enrolment_key: str | None = None) -> bytes:
    """Validate and sign a roster. employees use bytes for photos and fingerprint templates. Raises
    BundleRejected when the content would be refused by the terminals (publish nothing broken)."""
    manifest = {
        "type": MANIFEST_TYPE, "version": version, "device": device,
        "created_utc": created_utc or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "employees": [_employee_to_wire(e) for e in employees],
        "schedule": schedule or {}, "holidays": holidays or [],
        "messages": list(messages or []), "apel_cancelled": list(apel_cancelled or []),
        "enrolment_key": enrolment_key,
    }
    _check_manifest(manifest, limits or BundleLimits())
    return sign_manifest(server_key, manifest)


def sign_manifest(server_key: Ed25519PrivateKey, manifest: dict) -> bytes:
    """Encode and sign a manifest as it is, without validation (build_bundle validates first)."""
    body = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    header = {"alg": "Ed25519", "manifest_sha256": hashlib.sha256(body).hexdigest(), "manifest_bytes": len(body),
              "signature": chain.sign_b64(server_key, SIGNING_PREFIX + body),
              "key": chain.public_key_b64(server_key)}
    payload = MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + body
    return _gzip(payload)


def _gzip(payload: bytes) -> bytes:
    comp = zlib.compressobj(3, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 6 is 4x slower for 5 % smaller
    return comp.compress(payload) + comp.flush()


def _employee_to_wire(e: dict) -> dict:
    return {
        "id": e["id"], "name": e.get("name", ""), "uid": e.get("uid"), "pin_allowed": bool(e.get("pin_allowed")),
        "face_templates": [[float(x) for x in t] for t in e.get("face_templates") or []],
        "face_photos": [base64.b64encode(p).decode() for p in e.get("face_photos") or []],
        "finger_templates": [base64.b64encode(t).decode() for t in e.get("finger_templates") or []],
    }


# -- verifying (terminal) ------------------------------------------------------------------------------

def verify_bundle(data: bytes, server_public_key: Ed25519PublicKey | str | None, current_version: int,
                  limits: BundleLimits | None = None, *, device_id: str | None = None,
                  schedule_check: Callable[[dict, list], None] | None = None) -> dict:
    """Check a bundle completely. Returns {"version", "created_utc", "device", "employees" (photos and
    fingerprint templates as bytes, face templates as lists of floats), "schedule", "holidays",
    "messages", "apel_cancelled", "sha256", "counts"}; raises BundleRejected(code, reason) for anything
    wrong. `schedule_check(schedule, holidays)` is the terminal's own check that it can use the published
    schedule (raises ValueError)."""
    limits = limits or BundleLimits()
    public_key = _public_key(server_public_key)
    if not isinstance(data, (bytes, bytearray)):
        raise BundleRejected("corrupt", "bundle is not bytes")
    if len(data) > limits.max_bundle_bytes:
        raise BundleRejected("oversized", f"bundle is {len(data)} bytes, over the limit of "
                                          f"{limits.max_bundle_bytes} bytes")
    payload = _gunzip(bytes(data), limits.max_manifest_bytes + len(MAGIC) + MAX_HEADER_BYTES)
    header, body = _split(payload)
    _check_signature(header, body, public_key)
    manifest = _parse_manifest(body)
    _check_version(manifest, current_version)
    if manifest.get("device") not in (None, device_id) and device_id is not None:
        raise BundleRejected("wrong-device", f"bundle is for device {manifest['device']!r}, not {device_id!r}")
    employees = _check_manifest(manifest, limits)
    if schedule_check is not None:
        try:
            schedule_check(manifest["schedule"], manifest["holidays"])
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise BundleRejected("bad-schedule", f"schedule or holidays unusable: {e}") from None
    return {
        "version": manifest["version"], "created_utc": manifest.get("created_utc"),
        "device": manifest.get("device"), "employees": employees,
        "schedule": manifest["schedule"], "holidays": manifest["holidays"],
        "messages": _check_messages(manifest.get("messages", []), employees, limits),
        "apel_cancelled": _check_apel(manifest.get("apel_cancelled", []), limits),
        "enrolment_key": manifest.get("enrolment_key"),
        "sha256": hashlib.sha256(data).hexdigest(),
        "counts": {"employees": len(employees),
                   **{k: sum(len(e[k]) for e in employees)
                      for k in ("face_templates", "face_photos", "finger_templates")}},
    }


def _public_key(key) -> Ed25519PublicKey:
    if key is None or key == "":
        raise BundleRejected("no-key", "no server key is pinned ([central] server_key), so no bundle can be "
                                       "trusted; copy server_key from `presensi server add-device`")
    if isinstance(key, Ed25519PublicKey):
        return key
    try:
        return chain.public_key_from_b64(key)
    except ValueError as e:
        raise BundleRejected("no-key", f"[central] server_key is unusable ({e})") from None


def _gunzip(data: bytes, max_out: int) -> bytes:
    if not data.startswith(b"\x1f\x8b"):
        raise BundleRejected("corrupt", "bundle is not gzip data (damaged download or not a roster bundle)")
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, max_out + 1)
    except zlib.error as e:
        raise BundleRejected("corrupt", f"bundle is damaged: gzip error ({e})") from None
    if len(out) > max_out or d.unconsumed_tail:
        raise BundleRejected("oversized", f"bundle expands to more than {max_out} bytes")
    if not d.eof:
        raise BundleRejected("corrupt", "bundle is truncated (gzip stream ends early)")
    if d.unused_data:
        raise BundleRejected("corrupt", "bundle has trailing bytes after the gzip stream")
    return out


def _split(payload: bytes) -> tuple[dict, bytes]:
    if not payload.startswith(MAGIC):
        raise BundleRejected("corrupt", "not a presensi roster bundle (wrong magic line)")
    end = payload.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER_BYTES)
    if end < 0:
        raise BundleRejected("corrupt", "bundle header is missing or too long")
    try:
        header = json.loads(payload[len(MAGIC):end])
    except (ValueError, UnicodeDecodeError):
        raise BundleRejected("corrupt", "bundle header is not valid JSON") from None
    if not isinstance(header, dict):
        raise BundleRejected("corrupt", "bundle header is not a JSON object")
    return header, payload[end + 1:]


def _check_signature(header: dict, body: bytes, public_key: Ed25519PublicKey) -> None:
    signature = header.get("signature")
    if not signature:
        raise BundleRejected("unsigned", "bundle carries no signature")
    if header.get("alg") != "Ed25519" or not isinstance(signature, str):
        raise BundleRejected("unsigned", f"unsupported signature algorithm {header.get('alg')!r}")
    if header.get("manifest_bytes") != len(body) or header.get("manifest_sha256") != hashlib.sha256(body).hexdigest():
        raise BundleRejected("corrupt", "manifest length or checksum does not match the header (damaged)")
    if not chain.verify_b64(public_key, signature, SIGNING_PREFIX + body):
        raise BundleRejected("bad-signature", "signature does not verify with the pinned server key (signed "
                                              "with another key, or altered after signing)")


def _parse_manifest(body: bytes) -> dict:
    try:
        # NaN/Infinity literals parse to NaN so that template checks report them with the employee.
        manifest = json.loads(body, parse_constant=lambda _: math.nan)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BundleRejected("malformed", f"manifest is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("type") != MANIFEST_TYPE:
        raise BundleRejected("malformed", "manifest is not a presensi roster")
    return manifest


def _check_version(manifest: dict, current_version: int) -> None:
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleRejected("malformed", f"version {version!r} is not a positive whole number")
    if version <= current_version:
        raise BundleRejected("old-version", f"bundle version {version} is not newer than the installed "
                                            f"version {current_version} (replayed or out of order)")


def _check_manifest(manifest: dict, limits: BundleLimits) -> list[dict]:
    """Every field of every employee; returns the employees decoded."""
    employees = manifest.get("employees")
    if not isinstance(employees, list):
        raise BundleRejected("malformed", "employees must be a list")
    if len(employees) > limits.max_employees:
        raise BundleRejected("oversized", f"{len(employees)} employees, over the limit of {limits.max_employees}")
    _check_schedule(manifest.get("schedule"), manifest.get("holidays"), limits)
    out, ids, uids = [], set(), set()
    for i, e in enumerate(employees):
        emp = _check_employee(i, e, limits)
        if emp["id"] in ids:
            raise BundleRejected("duplicate", f"employee id {emp['id']!r} appears more than once")
        if emp["uid"] in uids:
            raise BundleRejected("duplicate", f"uid {emp['uid']} is given to more than one employee "
                                              f"(again at {emp['id']!r})")
        ids.add(emp["id"])
        uids.add(emp["uid"])
        out.append(emp)
    _check_messages(manifest.get("messages", []), out, limits)
    _check_apel(manifest.get("apel_cancelled", []), limits)
    _check_enrolment_key(manifest.get("enrolment_key"))
    return out


def _check_enrolment_key(key) -> None:
    if key is None:
        return
    try:
        raw = base64.b64decode(key, validate=True) if isinstance(key, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise BundleRejected("malformed", "enrolment_key must be a base64 X25519 public key (32 bytes)")


def _date(what: str, value) -> str:
    if not isinstance(value, str) or not DATE.match(value):
        raise BundleRejected("malformed", f"{what} must be a date YYYY-MM-DD, not {value!r}")
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise BundleRejected("malformed", f"{what} {value!r} is not a real date") from None
    return value


def _text(what: str, value, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 for c in value):
        raise BundleRejected("malformed", f"{what} must be one line of text of at most {limit} characters")
    return value


def _check_messages(messages, employees: list[dict], limits: BundleLimits) -> list[dict]:
    """Messages for the screen: each for one employee of this roster or for everyone (null)."""
    if not isinstance(messages, list) or len(messages) > limits.max_messages:
        raise BundleRejected("malformed", f"messages must be a list of at most {limits.max_messages}")
    ids = {e["id"] for e in employees}
    out = []
    for i, m in enumerate(messages):
        where = f"message #{i}"
        if not isinstance(m, dict) or not isinstance(m.get("id"), int) or isinstance(m.get("id"), bool):
            raise BundleRejected("malformed", f"{where} must be an object with a whole-number id")
        if m.get("employee") is not None and m["employee"] not in ids:
            raise BundleRejected("malformed", f"{where} is for employee {m['employee']!r}, who is not in the roster")
        start, end = _date(f"{where} valid_from", m.get("valid_from")), _date(f"{where} valid_until",
                                                                              m.get("valid_until"))
        if end < start:
            raise BundleRejected("malformed", f"{where} ends ({end}) before it starts ({start})")
        out.append({"id": m["id"], "employee": m.get("employee"), "valid_from": start, "valid_until": end,
                    "text": _text(f"{where} text", m.get("text"), limits.max_message_chars)})
    return out


def _check_apel(cancelled, limits: BundleLimits) -> list[dict]:
    if not isinstance(cancelled, list) or len(cancelled) > limits.max_apel_cancelled:
        raise BundleRejected("malformed", f"apel_cancelled must be a list of at most {limits.max_apel_cancelled}")
    out = []
    for i, c in enumerate(cancelled):
        if not isinstance(c, dict):
            raise BundleRejected("malformed", f"apel_cancelled #{i} must be an object")
        out.append({"date": _date(f"apel_cancelled #{i} date", c.get("date")),
                    "reason": _text(f"apel_cancelled #{i} reason", c.get("reason", ""), limits.max_message_chars)})
    return out


def _check_employee(i: int, e, limits: BundleLimits) -> dict:
    if not isinstance(e, dict):
        raise BundleRejected("malformed", f"employee #{i} is not an object")
    emp_id = e.get("id")
    if not isinstance(emp_id, str) or not EMPLOYEE_ID.match(emp_id):
        raise BundleRejected("malformed", f"employee #{i}: id {emp_id!r} is not valid (1-64 of A-Z a-z 0-9 . _ -)")
    where = f"employee {emp_id}"
    name, uid = e.get("name"), e.get("uid")
    if not isinstance(name, str) or len(name) > limits.max_name_chars:
        raise BundleRejected("malformed", f"{where}: name must be text of at most {limits.max_name_chars} chars")
    if not isinstance(uid, int) or isinstance(uid, bool) or not 1 <= uid <= MAX_UID:
        raise BundleRejected("malformed", f"{where}: uid {uid!r} must be a whole number from 1 to {MAX_UID}")
    if not isinstance(e.get("pin_allowed"), bool):
        raise BundleRejected("malformed", f"{where}: pin_allowed must be true or false")
    return {
        "id": emp_id, "name": name, "uid": uid, "pin_allowed": e["pin_allowed"],
        "face_templates": [_face_template(where, j, t)
                           for j, t in enumerate(_items(e, "face_templates", limits.max_face_templates, where))],
        "face_photos": [_photo(where, j, p, limits)
                        for j, p in enumerate(_items(e, "face_photos", limits.max_face_photos, where))],
        "finger_templates": [_finger_template(where, j, t) for j, t in
                             enumerate(_items(e, "finger_templates", limits.max_finger_templates, where))],
    }


def _items(e: dict, key: str, limit: int, where: str) -> list:
    items = e.get(key, [])
    if not isinstance(items, list):
        raise BundleRejected("malformed", f"{where}: {key} must be a list")
    if len(items) > limit:
        raise BundleRejected("oversized", f"{where}: {len(items)} {key}, over the limit of {limit}")
    return items


def _face_template(where: str, j: int, t) -> list[float]:
    what = f"{where}: face template #{j}"
    if not isinstance(t, list) or len(t) != FACE_DIM:
        n = len(t) if isinstance(t, list) else type(t).__name__
        raise BundleRejected("bad-template", f"{what} has {n} values; a dlib embedding has {FACE_DIM}")
    if not set(map(type, t)) <= {float, int}:  # exact types: JSON true/false must not pass as numbers
        raise BundleRejected("bad-template", f"{what} contains something that is not a number")
    values = np.asarray(t, dtype=np.float64)
    if not np.isfinite(values).all():
        raise BundleRejected("bad-template", f"{what} contains NaN or infinity")
    norm = float(np.sqrt(values @ values))
    if not 0.1 <= norm <= 10:
        raise BundleRejected("bad-template", f"{what} has norm {norm:.3g}; dlib embeddings have norm near 1")
    return values.tolist()


def _b64(what: str, text) -> bytes:
    if not isinstance(text, str):
        raise BundleRejected("bad-base64", f"{what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BundleRejected("bad-base64", f"{what} is not valid base64") from None


def _finger_template(where: str, j: int, text) -> bytes:
    raw = _b64(f"{where}: fingerprint template #{j}", text)
    if len(raw) != FINGER_BYTES:
        raise BundleRejected("bad-template", f"{where}: fingerprint template #{j} is {len(raw)} bytes; "
                                             f"a ZhianTec characteristics file is {FINGER_BYTES}")
    return raw


def _photo(where: str, j: int, text, limits: BundleLimits) -> bytes:
    what = f"{where}: face photo #{j}"
    if isinstance(text, str) and len(text) > limits.max_photo_bytes * 4 // 3 + 8:
        raise BundleRejected("oversized", f"{what} is over the limit of {limits.max_photo_bytes} bytes")
    raw = _b64(what, text)
    if len(raw) > limits.max_photo_bytes:
        raise BundleRejected("oversized", f"{what} is {len(raw)} bytes, over the limit of {limits.max_photo_bytes}")
    if not raw.startswith(IMAGE_MAGIC):
        raise BundleRejected("bad-photo", f"{what} is not a JPEG or PNG image")
    import cv2  # lazily: only bundles with photos need the decoder

    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BundleRejected("bad-photo", f"{what} does not decode (damaged or truncated image)")
    h, w = image.shape[:2]
    if max(h, w) > limits.max_photo_side or min(h, w) < 32:
        raise BundleRejected("bad-photo", f"{what} is {w}x{h} pixels; use 32 to {limits.max_photo_side}")
    return raw


def _check_schedule(schedule, holidays, limits: BundleLimits) -> None:
    """The shape of the published schedule: an object (keys default, mon..sun with windows like
    {"masuk": "05:30-07:30-10:00"}, workdays, special) within its size limit, and a list of holidays. Whether
    the terminal can use every window is its own check (`schedule_check` of verify_bundle)."""
    if not isinstance(schedule, dict):
        raise BundleRejected("malformed", "schedule must be an object")
    if len(json.dumps(schedule)) > limits.max_schedule_bytes:
        raise BundleRejected("oversized", f"schedule is over {limits.max_schedule_bytes} bytes")
    if not isinstance(holidays, list):
        raise BundleRejected("malformed", "holidays must be a list")


def stable_uid(employee_id: str, taken: set[int]) -> int:
    """A 16-bit user number for ZKTeco clients: the id itself when it is a number in range, else derived
    from a CRC of the id; on a collision the next free number. Deterministic for the same `taken` set (the
    terminal assigns numbers by the same rule, terminal/punch/roster.py)."""
    if employee_id.isdigit() and 1 <= int(employee_id) <= MAX_UID and int(employee_id) not in taken:
        return int(employee_id)
    if len(taken) >= MAX_UID:
        raise ValueError("more than 65535 employees: ZKTeco user numbers are 16-bit")
    uid = zlib.crc32(employee_id.encode()) % MAX_UID + 1
    while uid in taken:
        uid = uid % MAX_UID + 1
    return uid


__all__ = ["BundleLimits", "BundleRejected", "build_bundle", "sign_manifest", "verify_bundle",
           "stable_uid", "CONTENT_TYPE"]
