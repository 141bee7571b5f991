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
    """The installed roster's face templates; for employees the central server sent enrolment photos instead,
    templates computed here from those photos (cached by photo hash, so each photo is embedded once)."""
    from terminal.punch import roster

    out: dict[str, list[np.ndarray]] = {}
    cache = PhotoEmbeddings(state_dir)
    with roster.Roster.open(state_dir) as r:
        for e in r.employees():
            vecs = [np.asarray(t, dtype=np.float32) for t in e.get("face_templates") or []]
            vecs = [v for v in vecs if v.shape == (EMBEDDING_DIM,) and np.isfinite(v).all()]
            vecs += [v for v in (cache.embedding(photo) for photo in e.get("face_photos") or []) if v is not None]
            if vecs:
                out[e["id"]] = vecs
    cache.save()
    return out


class PhotoEmbeddings:
    """sha256 of an enrolment photo -> its template (or "no usable face"), sealed like the templates."""

    def __init__(self, state_dir):
        self.store = TemplateStore(state_dir)
        self.path = self.store.dir / "photo-templates.enc"
        self.entries: dict[str, list[float] | None] | None = None
        self.changed = False
        self._detector = None

    def _load(self) -> dict:
        if self.entries is None:
            try:
                blob = self.path.read_bytes()
                self.entries = json.loads(secretbox.open_(self.store._key(), blob, AAD + b"-photos"))
            except (FileNotFoundError, secretbox.SecretBoxError, ValueError):
                self.entries = {}  # unreadable cache: recompute
        return self.entries

    def embedding(self, photo: bytes) -> np.ndarray | None:
        import hashlib

        entries = self._load()
        key = hashlib.sha256(photo).hexdigest()
        if key not in entries:
            entries[key] = self._embed(photo)
            self.changed = True
        value = entries[key]
        return None if value is None else np.asarray(value, dtype=np.float32)

    def _embed(self, photo: bytes) -> list[float] | None:
        from terminal.config import Face
        from terminal.face import detect, quality, stills

        if self._detector is None:
            self._detector = detect.from_config(Face())
        try:
            image = stills.decode_image(photo)
        except stills.ImageError:
            return None
        found = stills.analyse(image, self._detector, quality.QualityLimits.from_config(Face()))
        best = stills.central_face([f for f in found if f.quality.ok], image.shape)
        return None if best is None else [float(x) for x in best.embedding]

    def save(self) -> None:
        if self.changed:
            self.store.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            blob = secretbox.seal(self.store._key(), json.dumps(self.entries).encode(), AAD + b"-photos")
            durable.write_atomic(self.path, blob)
            self.changed = False


def all_templates(state_dir) -> dict[str, list[np.ndarray]]:
    """Local enrolments plus the roster's templates (local ones first, capped per employee)."""
    merged = TemplateStore(state_dir).load()
    for emp, vecs in roster_templates(state_dir).items():
        merged[emp] = (merged.get(emp, []) + vecs)[:MAX_TEMPLATES_PER_EMPLOYEE * 2]
    return merged
