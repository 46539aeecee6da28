"""Small AES-256-GCM recipes with random nonces (NIST SP 800-38D).

Callers never handle nonces: :func:`seal` draws a fresh 96-bit random nonce and
prepends it. Each key sealed with these helpers protects far fewer than 2**32
messages (keys, index rows), well inside the random-nonce bound of SP 800-38D
section 8.3.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12


class DecryptionError(Exception):
    """Authentication failed: wrong key, wrong associated data, or altered bytes."""


def new_key() -> bytes:
    """A fresh 256-bit key from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


def seal(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext``; the result is ``nonce || ciphertext || tag``.

    ``associated_data`` binds the ciphertext to its context (which row, which
    column, which key): the same bytes moved elsewhere no longer open.
    """
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def open_sealed(key: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    """Inverse of :func:`seal`. Raises :class:`DecryptionError` on any mismatch."""
    if len(sealed) < NONCE_BYTES + 16:
        raise DecryptionError("sealed value too short")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
    except InvalidTag as exc:
        raise DecryptionError("authentication failed") from exc


def derive_key(key: bytes, info: bytes, salt: bytes | None = None, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 (RFC 5869): an independent subkey per purpose ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)
