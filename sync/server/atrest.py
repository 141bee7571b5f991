"""The central server's secrets at rest: file modes, the roster-signing key, and the data key.

The server's database holds every employee's face and fingerprint templates (inside the roster bundles) and
punch photos: sensitive personal data under UU 27/2022. A copy of the database file alone must not give
them away, nor the Ed25519 key that signs rosters (whoever holds it can push a roster of their own to every
terminal). So:

- the database file (and its -wal/-shm) is 0600 and a directory we create is 0700; an existing file with a
  looser mode is tightened with a warning;
- the signing key lives in a key directory beside the database (`<db>.keys/server_key.pem`, 0600), never
  in the database; a key found in an older database is moved there (with a warning) and deleted from it;
- photos and roster bundles are stored encrypted with AES-256-GCM under `<db>.keys/data.key` (0600); each
  ciphertext is bound to its row (associated data), so rows cannot be swapped.

Back up the key directory separately from the database (docs/security.md): the database without it is
unreadable, which is the point.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("presensi.server")

MAGIC = b"PSE1"  # encrypted blob: MAGIC || 12-byte nonce || AES-GCM ciphertext and tag
SIGNING_KEY = "server_key.pem"
DATA_KEY = "data.key"


def warn(message: str) -> None:
    log.warning(message)


def tighten(path: Path, mode: int) -> None:
    """chmod an existing file or directory to `mode` when it allows more, with a warning."""
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if current & ~mode:
        os.chmod(path, mode)
        warn(f"{path} was mode {current:04o}; changed to {mode:04o} (it holds personal data or keys)")


def default_key_dir(db: str) -> Path:
    """Beside a SQLite file; for PostgreSQL, PRESENSI_SERVER_KEY_DIR or a directory in the home."""
    if db.startswith(("postgresql://", "postgres://")):
        env = os.environ.get("PRESENSI_SERVER_KEY_DIR")
        if env:
            return Path(env)
        name = hashlib.sha256(db.encode()).hexdigest()[:16]
        return Path.home() / ".local" / "state" / "presensi-server" / f"{name}.keys"
    return Path(db + ".keys")


class Keys:
    """The key directory of one server database."""

    def __init__(self, key_dir: Path):
        self.dir = Path(key_dir)
        existed = self.dir.exists()
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if existed:
            tighten(self.dir, 0o700)
        self._aead: AESGCM | None = None

    # -- the roster-signing key ---------------------------------------------------------------------

    def signing_key_path(self) -> Path:
        return self.dir / SIGNING_KEY

    def has_signing_key(self) -> bool:
        return self.signing_key_path().exists()

    def write_signing_key(self, pem: bytes) -> None:
        _write_new(self.signing_key_path(), pem)

    def signing_key(self) -> Ed25519PrivateKey:
        path = self.signing_key_path()
        tighten(path, 0o600)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 key")
        return key

    def ensure_signing_key(self) -> None:
        if not self.has_signing_key():
            self.write_signing_key(Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    # -- the data key -------------------------------------------------------------------------------

    def aead(self) -> AESGCM:
        if self._aead is None:
            path = self.dir / DATA_KEY
            if not path.exists():
                _write_new(path, AESGCM.generate_key(bit_length=256))
            tighten(path, 0o600)
            key = path.read_bytes()
            if len(key) != 32:
                raise ValueError(f"{path}: the data key is damaged (not 32 bytes); restore it from backup")
            self._aead = AESGCM(key)
        return self._aead

    def encrypt(self, data: bytes, row: str) -> bytes:
        nonce = os.urandom(12)
        return MAGIC + nonce + self.aead().encrypt(nonce, bytes(data), row.encode())

    def decrypt(self, blob: bytes, row: str) -> bytes:
        """The plaintext of an encrypted blob; a blob stored before encryption (no MAGIC) as it is."""
        blob = bytes(blob)
        if not is_encrypted(blob):
            return blob
        return self.aead().decrypt(blob[4:16], blob[16:], row.encode())


def is_encrypted(blob: bytes) -> bool:
    return bytes(blob[:4]) == MAGIC


def _write_new(path: Path, data: bytes) -> None:
    """Create `path` 0600 with `data` (O_EXCL: two servers starting at once never overwrite a key)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
