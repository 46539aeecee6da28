"""Keyed blind indexes: search encrypted fields without storing them in clear.

A blind index is ``HMAC-SHA256(field_key, normalized value)`` truncated to 16
bytes (RFC 2104; the field key is an HKDF subkey of the index key, so indexes of
different fields are unlinkable). Exact match compares indexes; prefix and
wildcard match (PS3.4 C.2.2.2.4) use indexes of value prefixes of length 1 to
:data:`MAX_PREFIX` to find candidates, and a pattern that starts with a wildcard
(``*SMITH``) indexes of value suffixes of the same lengths (ADR 0017); the
candidates are then decrypted and matched exactly.

Leakage, stated plainly: someone holding the database (but not the keys) can
see which rows share a value, a prefix or a suffix of a value, and nothing else.
Values themselves are not recoverable without the index key.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import IntEnum

from dicomguard.crypto.aead import derive_key

TOKEN_BYTES = 16
MAX_PREFIX = 8


class BlindField(IntEnum):
    """Searchable encrypted fields. The number is stored; never renumber."""

    PATIENT_ID = 1
    PATIENT_NAME = 2
    PATIENT_BIRTH_DATE = 3
    ACCESSION_NUMBER = 4
    PATIENT_IDENTITY = 5
    """Issuer of Patient ID and Patient ID together: one patient row per identity."""
    REFERRING_PHYSICIAN = 6
    """Referring Physician's Name of a study, matched against a user's account for policies."""
    PATIENT_DEMOGRAPHICS = 7
    """A patient identity with its name, birth date and sex: objects join a patient row only when all agree."""
    STUDY_DATE = 8
    """Study Date of a study as a calendar date ``YYYYMMDD``: date searches enumerate the days of a range (ADR 0014)."""
    PATIENT_ID_PREFIX = 11
    PATIENT_NAME_PREFIX = 12
    PATIENT_ID_SUFFIX = 13
    """Suffixes of a Patient ID, for patterns that start with a wildcard (ADR 0017)."""
    PATIENT_NAME_SUFFIX = 14
    """Suffixes of a Patient's Name, for patterns that start with a wildcard (ADR 0017)."""

NAME_FIELDS = frozenset({BlindField.PATIENT_NAME, BlindField.PATIENT_NAME_PREFIX, BlindField.PATIENT_NAME_SUFFIX,
                         BlindField.REFERRING_PHYSICIAN})
"""Person-name fields: normalized to upper case without trailing component separators (PS3.4 C.2.2.2.1)."""


def normalize(field: BlindField, value: str) -> str:
    """Canonical form before hashing. Person names match case-insensitively (PS3.4 C.2.2.2.1)."""
    value = value.strip(" \x00")
    if field in NAME_FIELDS:
        value = value.rstrip("^=").upper()
    return value


class BlindIndexer:
    """Computes blind indexes with per-field keys derived from the index key."""

    def __init__(self, index_key: bytes) -> None:
        self._keys = {f: derive_key(index_key, b"dicomguard blind index v1:" + str(int(f)).encode()) for f in BlindField}

    def _mac(self, field: BlindField, normalized: str) -> bytes:
        return hmac.new(self._keys[field], normalized.encode("utf-8"), hashlib.sha256).digest()[:TOKEN_BYTES]

    def token(self, field: BlindField, value: str) -> bytes:
        """Blind index of a whole (normalized) value."""
        return self._mac(field, normalize(field, value))

    def prefix_tokens(self, field: BlindField, value: str) -> list[bytes]:
        """Blind indexes of the prefixes of length 1..MAX_PREFIX (PS3.4 wildcard support)."""
        norm = normalize(field, value)
        return [self._mac(field, norm[:n]) for n in range(1, min(len(norm), MAX_PREFIX) + 1)]

    def suffix_tokens(self, field: BlindField, value: str) -> list[bytes]:
        """Blind indexes of the suffixes of length 1..MAX_PREFIX (patterns with a leading wildcard, ADR 0017)."""
        norm = normalize(field, value)
        return [self._mac(field, norm[-n:]) for n in range(1, min(len(norm), MAX_PREFIX) + 1)]

    def query_prefix_token(self, field: BlindField, prefix: str) -> bytes | None:
        """Token that every value starting with ``prefix`` carries, or None if the prefix is empty."""
        norm = normalize(field, prefix)[:MAX_PREFIX]
        return self._mac(field, norm) if norm else None

    def query_suffix_token(self, field: BlindField, suffix: str) -> bytes | None:
        """Token that every value ending with ``suffix`` carries (its last MAX_PREFIX characters), or None if empty.

        ``suffix`` is the literal tail of a pattern; normalizing it may drop characters at its start (padding), which
        only shortens what a matching value must end with, so the token stays one that value carries.
        """
        norm = normalize(field, suffix)[-MAX_PREFIX:]
        return self._mac(field, norm) if norm else None
