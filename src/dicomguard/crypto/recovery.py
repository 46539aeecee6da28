"""The recovery key: opens the archive's key-encryption key when the passphrase holder is gone (ADR 0007).

An X25519 key pair (RFC 7748). ``init`` keeps the public key in the home and prints
the private key once, for a safe; anything can then be *sealed to* the recovery key
without knowing it (every new KEK after a rotation, every backup's key vault), and
only the printed key opens it. Sealing is ECIES-style: an ephemeral X25519 key
agreement, HKDF-SHA256 (RFC 5869) bound to both public keys and the caller's
context, and AES-256-GCM. The printed form carries a checksum so a mistyped key is
named as mistyped rather than as "wrong".
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from dicomguard.crypto.aead import DecryptionError, derive_key, open_sealed, seal
from dicomguard.errors import UnsealError

_PREFIX = "DGRK"
_RAW = serialization.Encoding.Raw


def _public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(_RAW, serialization.PublicFormat.Raw)


def generate() -> tuple[str, bytes]:
    """A new recovery key: (the printable private key, shown once; the public key, kept in the home)."""
    private = X25519PrivateKey.generate()
    raw = private.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return format_key(raw), _public_bytes(private.public_key())


def format_key(raw: bytes) -> str:
    """``DGRK-XXXXX-...``: base32 of the 32 key bytes and a 2-byte checksum, in groups of five."""
    text = base64.b32encode(raw + hashlib.sha256(raw).digest()[:2]).decode().rstrip("=")
    return _PREFIX + "-" + "-".join(text[i:i + 5] for i in range(0, len(text), 5))


def parse_key(text: str) -> bytes:
    """The 32 private-key bytes of a printed recovery key (spaces, dashes and case do not matter)."""
    compact = "".join(text.split()).replace("-", "").upper()
    if not compact.startswith(_PREFIX):
        raise ValueError("a recovery key starts with DGRK-")
    body = compact[len(_PREFIX):]
    try:
        data = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError:
        raise ValueError("the recovery key has characters that are not base32 (mistyped?)") from None
    raw, check = data[:32], data[32:]
    if len(raw) != 32 or hashlib.sha256(raw).digest()[:2] != check:
        raise ValueError("the recovery key's checksum does not match (mistyped?)")
    return raw


def public_key_of(raw_private: bytes) -> bytes:
    return _public_bytes(X25519PrivateKey.from_private_bytes(raw_private).public_key())


def _key(shared: bytes, ephemeral: bytes, recipient: bytes, context: bytes) -> bytes:
    return derive_key(shared, b"dicomguard recovery v1|" + context, salt=ephemeral + recipient)


def seal_to(recipient_public: bytes, plaintext: bytes, context: bytes) -> bytes:
    """Encrypt ``plaintext`` so that only the recovery key opens it; ``context`` is bound (as in the AEAD's associated data)."""
    ephemeral = X25519PrivateKey.generate()
    eph_pub = _public_bytes(ephemeral.public_key())
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    return eph_pub + seal(_key(shared, eph_pub, recipient_public, context), plaintext, context)


def open_with(raw_private: bytes, sealed: bytes, context: bytes) -> bytes:
    """Open what :func:`seal_to` sealed; raises :class:`UnsealError` for another key, another context or altered bytes."""
    private = X25519PrivateKey.from_private_bytes(raw_private)
    eph_pub, body = sealed[:32], sealed[32:]
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        return open_sealed(_key(shared, eph_pub, _public_bytes(private.public_key()), context), body, context)
    except (ValueError, DecryptionError) as exc:
        raise UnsealError("the recovery key does not open this (another archive's key, or altered)") from exc
