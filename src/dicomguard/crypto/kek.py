"""The key-encryption key (KEK): sealed under a passphrase with argon2id.

Key hierarchy (docs/security.md)::

    passphrase --argon2id--> sealing key --AES-GCM--> KEK
    KEK --wraps--> index key (blind indexes), ledger signing key, identity key
    KEK --wraps--> one data key per patient --HKDF--> per-blob keys, index-row keys

Only the sealed form of the KEK touches the disk. Wrapped keys are bound (as
associated data) to the KEK's id, their purpose and their owner, so a wrapped
key cannot be moved to another patient or purpose.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw

from dicomguard.crypto.aead import DecryptionError, new_key, open_sealed, seal
from dicomguard.errors import UnsealError

SEALED_FORMAT = "dicomguard-sealed-kek/1"
MIN_PASSPHRASE_CHARS = 12


@dataclass(frozen=True)
class KdfParams:
    """argon2id parameters (RFC 9106 section 3.1), recorded with each sealed KEK."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 2


def _sealing_key(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    return hash_secret_raw(
        secret=passphrase.encode("utf-8"),
        salt=salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=32,
        type=Type.ID,
    )


def _aad(kek_id: str) -> bytes:
    return b"dicomguard kek v1|" + kek_id.encode("ascii")


def check_passphrase_strength(passphrase: str) -> None:
    """Refuse passphrases too short to resist an offline guess of a stolen home."""
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise ValueError(f"passphrase must have at least {MIN_PASSPHRASE_CHARS} characters")


class Kek:
    """An unsealed key-encryption key. Wraps and unwraps other keys; never leaves memory."""

    def __init__(self, kek_id: str, key: bytes) -> None:
        self.kek_id = kek_id
        self._key = key

    @classmethod
    def generate(cls) -> Kek:
        return cls(secrets.token_hex(8), new_key())

    def _wrap_aad(self, purpose: str, owner: str) -> bytes:
        return f"dicomguard wrap v1|{self.kek_id}|{purpose}|{owner}".encode()

    def wrap(self, purpose: str, owner: str, key: bytes) -> bytes:
        """Wrap ``key`` for one ``purpose`` and ``owner`` (e.g. ``patient-data``, patient ref)."""
        return seal(self._key, key, self._wrap_aad(purpose, owner))

    def unwrap(self, purpose: str, owner: str, wrapped: bytes) -> bytes:
        """Unwrap; raises :class:`UnsealError` if the key was wrapped by another KEK or altered."""
        try:
            return open_sealed(self._key, wrapped, self._wrap_aad(purpose, owner))
        except DecryptionError as exc:
            raise UnsealError("a wrapped key does not open with this key-encryption key") from exc

    def seal_with_passphrase(self, passphrase: str, params: KdfParams) -> bytes:
        """The sealed KEK file's content (JSON; safe to store: it holds no usable secret)."""
        salt = os.urandom(16)
        sealed = seal(_sealing_key(passphrase, salt, params), self._key, _aad(self.kek_id))
        doc = {
            "format": SEALED_FORMAT,
            "kek_id": self.kek_id,
            "kdf": {
                "alg": "argon2id",
                "time_cost": params.time_cost,
                "memory_kib": params.memory_kib,
                "parallelism": params.parallelism,
                "salt": base64.b64encode(salt).decode(),
            },
            "sealed": base64.b64encode(sealed).decode(),
        }
        return (json.dumps(doc, indent=2) + "\n").encode()

    def seal_to_recovery_key(self, recovery_public: bytes) -> bytes:
        """This KEK sealed to the recovery key (``crypto.recovery``): opened without the passphrase, by the printed key only."""
        from dicomguard.crypto import recovery

        return recovery.seal_to(recovery_public, self._key, _aad(self.kek_id))

    @classmethod
    def open_with_recovery_key(cls, kek_id: str, sealed: bytes, recovery_private: bytes) -> Kek:
        from dicomguard.crypto import recovery

        return cls(kek_id, recovery.open_with(recovery_private, sealed, _aad(kek_id)))

    @classmethod
    def unseal(cls, sealed_file: bytes, passphrase: str) -> Kek:
        """Open a sealed KEK. Any failure raises the same opaque :class:`UnsealError`."""
        try:
            doc = json.loads(sealed_file)
            if doc["format"] != SEALED_FORMAT or doc["kdf"]["alg"] != "argon2id":
                raise ValueError("format")
            params = KdfParams(
                int(doc["kdf"]["time_cost"]), int(doc["kdf"]["memory_kib"]), int(doc["kdf"]["parallelism"])
            )
            # Bounds stop a forged file from making us burn memory or time.
            if not (1 <= params.time_cost <= 64 and 8192 <= params.memory_kib <= 4 * 1024 * 1024):
                raise ValueError("kdf bounds")
            salt = base64.b64decode(doc["kdf"]["salt"], validate=True)
            key = open_sealed(_sealing_key(passphrase, salt, params), base64.b64decode(doc["sealed"]), _aad(doc["kek_id"]))
            return cls(str(doc["kek_id"]), key)
        except (ValueError, KeyError, TypeError, DecryptionError) as exc:
            raise UnsealError("cannot unseal the key-encryption key (wrong passphrase or damaged key file)") from exc
