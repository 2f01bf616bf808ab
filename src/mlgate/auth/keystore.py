"""Signing keys: made on first start, stored in the database (shared by every replica),
private halves encrypted at rest with AES-GCM under the key-encryption key."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mlgate.settings import Settings

KEK_FILE = "key-encryption.key"


def load_kek(settings: Settings) -> bytes:
    """The 256-bit key-encryption key: from settings, else a 0600 file in DATA_DIR."""
    if settings.key_encryption_key is not None:
        return hashlib.sha256(settings.key_encryption_key.get_secret_value().encode()).digest()
    path = settings.data_dir / KEK_FILE
    if not path.exists():
        _write_private_file(path, base64.b64encode(secrets.token_bytes(32)) + b"\n")
    return base64.b64decode(path.read_bytes().strip())


def _write_private_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def encrypt(kek: bytes, plaintext: bytes, *, aad: bytes) -> str:
    nonce = secrets.token_bytes(12)
    return base64.b64encode(nonce + AESGCM(kek).encrypt(nonce, plaintext, aad)).decode()


def decrypt(kek: bytes, blob: str, *, aad: bytes) -> bytes:
    raw = base64.b64decode(blob)
    return AESGCM(kek).decrypt(raw[:12], raw[12:], aad)


@dataclass(frozen=True)
class KeyMaterial:
    kid: str
    algorithm: str
    public_pem: str
    private_pem: bytes


def generate_key(algorithm: str) -> KeyMaterial:
    private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(f"no key pair for {algorithm}")
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    kid = hashlib.sha256(public_pem.encode()).hexdigest()[:16]
    return KeyMaterial(kid=kid, algorithm=algorithm, public_pem=public_pem, private_pem=private_pem)


@dataclass(frozen=True)
class StoredKey:
    kid: str
    algorithm: str
    public_pem: str
    private_encrypted: str
    active: bool
    retired_at: datetime | None
