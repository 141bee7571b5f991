"""Templates enrolled at the terminals ("enrol once, punch anywhere"): received from a device, kept (encrypted at
rest, sync/server/atrest.py) until approved or at once, and merged into the next roster for every terminal.

A terminal uploads what it enrolled (POST /api/v1/devices/{id}/enrolments, signed by its device key like every
upload), each template sealed to this server's enrolment key (X25519, `enrolment.key` in the key directory,
published in every roster: sync/wire/sealedtemplate.py). The server takes an enrolment only for an employee of
the published roster, with a template of the right form sealed for this device, employee and modality;
anything else is answered "refused" and nothing is stored. With approval off (the default) an
enrolment is "accepted" at once and the caller publishes the next roster version; with approval on
(`presensi server enrolments settings --approval on`) it waits as "pending" for `approve` or `reject`.

How conflicting enrolments resolve (docs/roster-and-pull-api.md): enrolments never replace each other. Per
employee and modality every accepted template is kept, the newest first, then the templates the roster had;
beyond the per-employee limit (10 per modality, as the terminals accept) the oldest are dropped. The same
template from two terminals is one enrolment (the first one's). A rejected template is taken out of the
roster it may already be in.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sync.wire import sealedtemplate

MODALITIES = ("face", "finger")
FACE_DIM = 128
FINGER_BYTES = 512
PER_MODALITY = 10  # templates per employee and modality in a roster (sync.wire.rosterbundle.BundleLimits)
APPROVAL_KEY = "enrolment_approval"
KEY_FILE = "enrolment.key"


class EnrolmentError(ValueError):
    """An enrolment command cannot be carried out; the message says what to do."""


def template_sha256(modality: str, template) -> str:
    """The identity of a template: sha256 of its bytes (a face template as 128 little-endian float32)."""
    if modality == "face":
        return hashlib.sha256(np.asarray(template, dtype="<f4").tobytes()).hexdigest()
    return hashlib.sha256(bytes(template)).hexdigest()


def approval_required(store) -> bool:
    rows = store.query("SELECT value FROM server_meta WHERE key=?", (APPROVAL_KEY,))
    return bool(rows) and rows[0]["value"] == "on"


def set_approval(store, on: bool) -> None:
    with store.transaction() as cur:
        store.execute(cur, "DELETE FROM server_meta WHERE key=?", (APPROVAL_KEY,))
        store.execute(cur, "INSERT INTO server_meta VALUES (?, ?)", (APPROVAL_KEY, "on" if on else "off"))


def enrolment_key(store) -> X25519PrivateKey:
    """This server's X25519 key for sealed templates, created 0600 beside the signing key on first use."""
    path = store.keys.dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(X25519PrivateKey.generate().private_bytes_raw())
            f.flush()
            os.fsync(f.fileno())
    raw = path.read_bytes()
    if len(raw) != 32:
        raise ValueError(f"{path}: the enrolment key is damaged (not 32 bytes); restore it from backup")
    return X25519PrivateKey.from_private_bytes(raw)


def public_key_b64(store) -> str:
    return sealedtemplate.public_b64(enrolment_key(store))


def decode(modality: str, raw: bytes | None) -> bytes | None:
    """The template's bytes, or None when it is not a template of that modality."""
    if raw is None or len(raw) != (FACE_DIM * 4 if modality == "face" else FINGER_BYTES):
        return None
    if modality == "face":
        values = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        norm = float(np.sqrt(values @ values)) if np.isfinite(values).all() else 0.0
        if not 0.1 <= norm <= 10:  # NaN, infinity or no embedding at all
            return None
    return raw


def receive(store, device: str, items: list[dict], roster_ids: set[str]) -> list[dict]:
    """Store the enrolments of one upload. Returns per item {"ref", "status", "reason"}: accepted, pending,
    duplicate (already known: the earlier decision stands) or refused (nothing stored)."""
    status = "pending" if approval_required(store) else "accepted"
    private = enrolment_key(store)
    results, now = [], time.time_ns()
    with store.transaction() as cur:
        for item in items:
            ref, employee, modality = item["ref"], item["employee"], item["modality"]
            try:
                raw = decode(modality, sealedtemplate.open_(private, item["sealed"],
                                                            sealedtemplate.aad(device, employee, modality)))
            except sealedtemplate.SealError as e:
                results.append({"ref": ref, "status": "refused", "reason": f"sealed template {e}"})
                continue
            if employee not in roster_ids:
                results.append({"ref": ref, "status": "refused", "reason": f"employee {employee} is not in the "
                                "published roster; add them to the roster first"})
                continue
            if raw is None:
                results.append({"ref": ref, "status": "refused", "reason": f"not a {modality} template"})
                continue
            sha = hashlib.sha256(raw).hexdigest()
            known = store.rows(cur, "SELECT status FROM template_enrolments WHERE employee=? AND modality=? AND "
                               "template_sha256=?", (employee, modality, sha))
            if known:
                results.append({"ref": ref, "status": "duplicate", "decision": known[0][0]})
                continue
            store.execute(cur, "INSERT INTO template_enrolments (device_id, device_ref, employee, modality, "
                          "template_sha256, template, created_ns, received_ns, status) VALUES (?, ?, ?, ?, ?, ?, ?, "
                          "?, ?)", (device, ref, employee, modality, sha,
                                    store.keys.encrypt(raw, f"template_enrolments:{sha}"), item.get("created_ns"),
                                    now, status))
            results.append({"ref": ref, "status": status})
    return results


def listing(store, status: str | None = None) -> list[dict]:
    """Enrolments without their templates, oldest first."""
    sql = ("SELECT id, device_id, employee, modality, template_sha256, received_ns, status, decided_by, decided_ns "
           "FROM template_enrolments" + (" WHERE status=?" if status else "") + " ORDER BY id")
    return store.query(sql, (status,) if status else ())


def decide(store, ids: list[int], status: str, actor: str) -> int:
    """approve (accepted) or reject (rejected) enrolments by id; returns how many changed."""
    if status not in ("accepted", "rejected"):
        raise EnrolmentError(f"unknown decision {status!r}")
    changed = 0
    with store.transaction() as cur:
        for i in ids:
            rows = store.rows(cur, "SELECT status FROM template_enrolments WHERE id=?", (i,))
            if not rows:
                raise EnrolmentError(f"no enrolment with id {i}; see `presensi server enrolments list`")
            if rows[0][0] != status:
                store.execute(cur, "UPDATE template_enrolments SET status=?, decided_by=?, decided_ns=? WHERE id=?",
                              (status, actor, time.time_ns(), i))
                changed += 1
    return changed


def _templates(store, status: str) -> dict[tuple[str, str], list]:
    """(employee, modality) -> templates with `status`, newest first (face as floats, finger as bytes)."""
    out: dict[tuple[str, str], list] = {}
    for r in store.query("SELECT employee, modality, template_sha256, template FROM template_enrolments "
                         "WHERE status=? ORDER BY received_ns DESC, id DESC", (status,)):
        raw = store.keys.decrypt(r["template"], f"template_enrolments:{r['template_sha256']}")
        value = np.frombuffer(raw, dtype="<f4").astype(float).tolist() if r["modality"] == "face" else raw
        out.setdefault((r["employee"], r["modality"]), []).append(value)
    return out


def accepted_hashes(store) -> set[tuple[str, str, str]]:
    """(employee, modality, sha256) of every accepted enrolment (sync/server/offices.py scopes them)."""
    return {(r["employee"], r["modality"], r["template_sha256"]) for r in
            store.query("SELECT employee, modality, template_sha256 FROM template_enrolments WHERE status=?",
                        ("accepted",))}


def merge(store, employees: list[dict]) -> list[dict]:
    """The employees with their accepted enrolments added (the rule in the module docstring). Enrolments of
    people no longer in `employees` are left out: removing someone from the roster removes them everywhere."""
    accepted = _templates(store, "accepted")
    rejected = {(emp, mod, template_sha256(mod, t)) for (emp, mod), ts in _templates(store, "rejected").items()
                for t in ts}
    out = []
    for e in employees:
        e = dict(e)
        for modality, key in (("face", "face_templates"), ("finger", "finger_templates")):
            seen, kept = set(), []
            for t in accepted.get((e["id"], modality), []) + list(e.get(key) or []):
                sha = template_sha256(modality, t)
                if sha in seen or (e["id"], modality, sha) in rejected:
                    continue
                seen.add(sha)
                kept.append(t)
            e[key] = kept[:PER_MODALITY]
        out.append(e)
    return out
