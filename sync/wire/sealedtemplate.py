"""A template sealed for the central server on its way from the terminal: ECIES over X25519.

    sealed = base64( ephemeral X25519 public key (32) || nonce (12) || AES-256-GCM ciphertext with tag )
    key    = HKDF-SHA256(X25519(ephemeral, server enrolment key), info "presensi-enrolment:v1")
    aad    = "presensi-enrolment:v1:<device>:<employee>:<modality>"

The server's enrolment public key reaches the terminal inside the signed roster bundle (`enrolment_key`),
so the terminal encrypts only to the key its pinned server key vouches for; the AAD binds the ciphertext to
the device, the employee and the modality, so a sealed template cannot be replayed as someone else's. The
request around it is signed by the device key as well (sync/wire/signed.py): TLS or not, a template is never
readable on the office LAN.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INFO = b"presensi-enrolment:v1"
KEY_BYTES = 32
NONCE_BYTES = 12


class SealError(ValueError):
    """The sealed template does not open: another key, another device/employee/modality, or damaged."""


def aad(device: str, employee: str, modality: str) -> bytes:
    return f"presensi-enrolment:v1:{device}:{employee}:{modality}".encode()


def public_b64(private: X25519PrivateKey) -> str:
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_from_b64(text: str) -> X25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("the enrolment key is not base64") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"the enrolment key is {len(raw)} bytes, not {KEY_BYTES}")
    return X25519PublicKey.from_public_bytes(raw)


def _key(shared: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(shared)


def seal(public: X25519PublicKey | str, plaintext: bytes, associated: bytes) -> str:
    public = public_from_b64(public) if isinstance(public, str) else public
    ephemeral = X25519PrivateKey.generate()
    nonce = os.urandom(NONCE_BYTES)
    box = AESGCM(_key(ephemeral.exchange(public))).encrypt(nonce, bytes(plaintext), associated)
    head = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(head + nonce + box).decode("ascii")


def open_(private: X25519PrivateKey, sealed: str, associated: bytes) -> bytes:
    try:
        raw = base64.b64decode(sealed, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise SealError("not base64") from None
    if len(raw) < KEY_BYTES + NONCE_BYTES + 16:
        raise SealError("too short to be a sealed template")
    ephemeral = X25519PublicKey.from_public_bytes(raw[:KEY_BYTES])
    try:
        shared = private.exchange(ephemeral)
        return AESGCM(_key(shared)).decrypt(raw[KEY_BYTES:KEY_BYTES + NONCE_BYTES], raw[KEY_BYTES + NONCE_BYTES:],
                                            associated)
    except (InvalidTag, ValueError):
        raise SealError("does not open with this server's enrolment key (sealed for another server, device, "
                        "employee or modality, or damaged)") from None
