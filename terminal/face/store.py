"""Face templates at rest: one AES-256-GCM encrypted file, sealed with the terminal's template key.

    state_dir/face/templates.enc   terminal/secretbox.py's sealed JSON, "presensi-face-templates" as AAD
    state_dir/template.key         the key shared with the roster and fingerprint stores (0600)

A wrong key or a modified file is refused with a clear error; writes are atomic (temp file, fsync,
rename), so a power cut leaves either the old or the new set. Templates are never logged.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np

from terminal import durable, secretbox
from terminal.face.embed import EMBEDDING_DIM
from terminal.face.gallery import Gallery

AAD = b"presensi-face-templates"
MAX_TEMPLATES_PER_EMPLOYEE = 10


class TemplateStoreError(Exception):
    """The template file or its key cannot be used; the message says what to do."""


class TemplateStore:
    def __init__(self, state_dir: str | os.PathLike):
        self.state_dir = Path(state_dir)
        self.dir = Path(state_dir) / "face"
        self.path = self.dir / "templates.enc"
        self.key_path = secretbox.key_path(self.state_dir)

    def load(self) -> dict[str, list[np.ndarray]]:
        """employee id -> templates; empty when nobody is enrolled yet."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        if not self.key_path.exists():
            raise TemplateStoreError(f"{self.key_path}: key file missing, {self.path} cannot be decrypted; "
                                     "restore the key or delete the template file and re-enrol")
        try:
            plain = secretbox.open_(self._key(), blob, AAD)
        except secretbox.SecretBoxError:
            raise TemplateStoreError(f"{self.path}: cannot be decrypted (wrong key or the file was modified); "
                                     "restore both files from backup or re-enrol") from None
        data = json.loads(plain)
        return {emp: [np.frombuffer(base64.b64decode(t), dtype="<f4").copy() for t in ts]
                for emp, ts in data["employees"].items()}

    def save(self, templates: dict[str, list[np.ndarray]]) -> None:
        payload = {"version": 1, "employees": {
            emp: [base64.b64encode(np.asarray(t, dtype="<f4").reshape(EMBEDDING_DIM).tobytes()).decode()
                  for t in ts]
            for emp, ts in sorted(templates.items()) if ts}}
        blob = secretbox.seal(self._key(), json.dumps(payload).encode(), AAD)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        durable.write_atomic(self.path, blob)

    def _key(self) -> bytes:
        try:
            return secretbox.load_or_create_key(self.state_dir)
        except secretbox.SecretBoxError as e:
            raise TemplateStoreError(str(e)) from None

    def add(self, employee: str, embeddings: list[np.ndarray], replace: bool = False) -> int:
        """Add templates for one employee (keeping the newest MAX_TEMPLATES_PER_EMPLOYEE); returns the count."""
        templates = self.load()
        kept = [] if replace else templates.get(employee, [])
        templates[employee] = (kept + [np.asarray(e, np.float32) for e in embeddings])[-MAX_TEMPLATES_PER_EMPLOYEE:]
        self.save(templates)
        return len(templates[employee])

    def remove(self, employee: str) -> bool:
        templates = self.load()
        if employee not in templates:
            return False
        del templates[employee]
        self.save(templates)
        return True

    def gallery(self) -> Gallery:
        """The gallery to identify against: these templates plus the roster's (see all_templates)."""
        return Gallery(all_templates(self.state_dir))


def roster_templates(state_dir) -> dict[str, list[np.ndarray]]:
    """Face templates the central server published in the roster (contract C4), 128 floats each.

    (Roster enrolment photos are not embedded here yet; enrol them with `presensi enroll-photos`.)"""
    from terminal import roster

    out: dict[str, list[np.ndarray]] = {}
    with roster.Roster.open(state_dir) as r:
        for e in r.employees():
            vecs = [np.asarray(t, dtype=np.float32) for t in e.get("face_templates") or []]
            vecs = [v for v in vecs if v.shape == (EMBEDDING_DIM,) and np.isfinite(v).all()]
            if vecs:
                out[e["id"]] = vecs
    return out


def all_templates(state_dir) -> dict[str, list[np.ndarray]]:
    """Local enrolments plus the roster's templates (local ones first, capped per employee)."""
    merged = TemplateStore(state_dir).load()
    for emp, vecs in roster_templates(state_dir).items():
        merged[emp] = (merged.get(emp, []) + vecs)[:MAX_TEMPLATES_PER_EMPLOYEE * 2]
    return merged
