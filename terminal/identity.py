"""The device's identity: its Ed25519 signing key, kept in state_dir with mode 0600.

Checkpoints, offline-export manifests and anything else the device vouches for are signed with this key;
the central server binds the public key when the device is registered (`presensi init` prints it and its
fingerprint; `presensi server add-device --public-key` binds it), and every request to the server is signed
with it (sync/wire/signed.py). How keys
and signatures are encoded (base64 Ed25519) is defined once, in terminal/log/chain.py, shared with the server.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from terminal import durable

KEY_FILE = "device_key.pem"


class KeyError_(Exception):
    """The device key is missing or unreadable."""


def create_key(state_dir: Path) -> bool:
    """Create the device key unless one exists. Returns True when a key was created."""
    path = Path(state_dir) / KEY_FILE
    if path.exists():
        return False
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # O_EXCL: two concurrent `presensi init` never overwrite each other's key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    durable.fsync_dir(path.parent)
    return True


def load_key(state_dir: Path) -> Ed25519PrivateKey:
    path = Path(state_dir) / KEY_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyError_(f"{path}: device key not found; run `presensi init`") from None
    except PermissionError:
        raise KeyError_(f"{path}: cannot read the device key (permission denied); run as the presensi user") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise KeyError_(f"{path}: the device key is damaged; restore it from backup") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{path}: not an Ed25519 key")
    return key


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The public half as the central server binds it (base64 of the raw 32 bytes, as terminal/log/chain.py
    encodes keys): what `presensi init` prints for `presensi server add-device --public-key`."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()
