"""Encryption at rest for biometric data (face templates, enrolment photos, fingerprint templates).

One symmetric key per terminal, `state_dir/template.key` (32 random bytes, mode 0600, created on first
use), and AES-256-GCM with a fresh 96-bit nonce per message. A sealed blob is

    b"PSB1" || nonce (12 bytes) || ciphertext+tag

`aad` (associated data) binds a blob to where it is stored (e.g. b"roster:face:<employee>:<index>"), so a
blob copied into another employee's row fails to open instead of silently matching the wrong person.

Shared by the roster store and the face gallery so that one key protects all biometric data; losing the
key only means re-fetching the roster from the central server.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from terminal import durable

KEY_FILE = "template.key"
KEY_BYTES = 32
MAGIC = b"PSB1"
NONCE_BYTES = 12


class SecretBoxError(Exception):
    """The key file is unusable or a sealed blob does not open (damaged, or sealed with another key)."""


def key_path(state_dir: Path) -> Path:
    return Path(state_dir) / KEY_FILE


def load_or_create_key(state_dir: Path) -> bytes:
    """The terminal's template key; created (0600, fsynced) on first use. Concurrent creators agree."""
    path = key_path(state_dir)
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            # link() fails if another process won the race: then everyone uses the winner's key.
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    durable.fsync_dir(path.parent)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except PermissionError:
        raise SecretBoxError(f"{path}: cannot read the template key (permission denied); "
                             "run as the presensi user") from None
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # never leave the key readable by others
    if len(data) != KEY_BYTES:
        raise SecretBoxError(f"{path}: the template key is damaged ({len(data)} bytes, expected {KEY_BYTES}); "
                             "delete it and pull the roster again (`presensi roster pull`)")
    return data


def seal(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, bytes(plaintext), aad)


def open_(key: bytes, blob: bytes, aad: bytes = b"") -> bytes:
    blob = bytes(blob)
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE_BYTES + 16:
        raise SecretBoxError("not a sealed blob (damaged or written by another program)")
    nonce = blob[len(MAGIC):len(MAGIC) + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES:], aad)
    except InvalidTag:
        raise SecretBoxError("sealed blob does not open: damaged, moved, or sealed with another key") from None


class SecretBox:
    """seal/open with the key of one state directory (loaded or created once)."""

    def __init__(self, state_dir: Path):
        self.key = load_or_create_key(state_dir)

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        return seal(self.key, plaintext, aad)

    def open(self, blob: bytes, aad: bytes = b"") -> bytes:
        return open_(self.key, blob, aad)

