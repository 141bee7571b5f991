"""Face templates at rest: one AES-256-GCM encrypted file, the key in a separate 0600 file.

    state_dir/face/templates.enc   b"PFT1" + 12-byte nonce + AES-GCM(JSON), the magic as associated data
    state_dir/face/templates.key   32 random bytes, mode 0600

A wrong key or a modified file is refused with a clear error; writes are atomic (temp file, fsync,
rename), so a power cut leaves either the old or the new set. Templates are never logged.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from terminal.face.embed import EMBEDDING_DIM
from terminal.face.gallery import Gallery

MAGIC = b"PFT1"
MAX_TEMPLATES_PER_EMPLOYEE = 10


class TemplateStoreError(Exception):
    """The template file or its key cannot be used; the message says what to do."""


class TemplateStore:
    def __init__(self, state_dir: str | os.PathLike):
        self.state_dir = Path(state_dir)
        self.dir = Path(state_dir) / "face"
        self.path = self.dir / "templates.enc"
        self.key_path = self.dir / "templates.key"

    def _key(self, create: bool) -> bytes | None:
        try:
            key = self.key_path.read_bytes()
        except FileNotFoundError:
            if not create:
                return None
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = AESGCM.generate_key(bit_length=256)
            try:
                fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process created it first: use theirs
                return self._key(create=False)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
            return key
        except PermissionError:
            raise TemplateStoreError(f"{self.key_path}: permission denied; run as the presensi user") from None
        if len(key) != 32:
            raise TemplateStoreError(f"{self.key_path}: not a 32-byte key; restore it from backup or re-enrol")
        if self.key_path.stat().st_mode & 0o077:
            os.chmod(self.key_path, 0o600)  # the key must never be readable by others
        return key

    def load(self) -> dict[str, list[np.ndarray]]:
        """employee id -> templates; empty when nobody is enrolled yet."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        key = self._key(create=False)
        if key is None:
            raise TemplateStoreError(f"{self.key_path}: key file missing, {self.path} cannot be decrypted; "
                                     "restore the key or delete the template file and re-enrol")
        if len(blob) < len(MAGIC) + 12 + 16 or blob[:4] != MAGIC:
            raise TemplateStoreError(f"{self.path}: not a presensi template file; restore it or re-enrol")
        try:
            plain = AESGCM(key).decrypt(blob[4:16], blob[16:], MAGIC)
        except InvalidTag:
            raise TemplateStoreError(f"{self.path}: cannot be decrypted (wrong key or the file was modified); "
                                     "restore both files from backup or re-enrol") from None
        data = json.loads(plain)
        return {emp: [np.frombuffer(base64.b64decode(t), dtype="<f4").copy() for t in ts]
                for emp, ts in data["employees"].items()}

    def save(self, templates: dict[str, list[np.ndarray]]) -> None:
        key = self._key(create=True)
        payload = {"version": 1, "employees": {
            emp: [base64.b64encode(np.asarray(t, dtype="<f4").reshape(EMBEDDING_DIM).tobytes()).decode()
                  for t in ts]
            for emp, ts in sorted(templates.items()) if ts}}
        nonce = secrets.token_bytes(12)
        blob = MAGIC + nonce + AESGCM(key).encrypt(nonce, json.dumps(payload).encode(), MAGIC)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

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
