"""Keyed, table-free pseudonyms: UIDs, patient IDs and names, date offsets (RFC 2104 HMAC-SHA256).

Every replacement value is ``HMAC-SHA256(project key, purpose || project || original)``:

* deterministic: the same original and the same project key give the same
  replacement on any machine and in any run, so the objects of one study released
  at different times still reference each other (PS3.15 E.1.1 note 3: replaced UIDs
  "internally consistent within a set of Instances") without a lookup table that
  would itself be a re-identification file;
* unlinkable across projects: another project key gives unrelated values, so two
  releases of the same patient to two projects cannot be joined;
* one-way: without the key, recovering an original takes a brute-force search
  over candidate originals *and* the 256-bit key, which is out of reach. With the
  key, candidates can be confirmed (e.g. a guessed patient ID): the project key is
  as sensitive as the identities themselves and never leaves the archive.

The purpose label separates the derivations, so a patient ID and a UID with the
same text never yield related outputs.
"""

from __future__ import annotations

import base64
import hmac
from typing import Final

_DOMAIN: Final = b"dicomguard deid v1\x00"
_PSEUDONYM_CHARS: Final = 20
"""Base32 characters of a patient pseudonym: 100 bits, no collision in any realistic archive."""
MAX_DAY_SHIFT: Final = 3650
"""Dates move back by 1 to this many days (about ten years)."""
_CACHE_LIMIT: Final = 200_000


class Pseudonymizer:
    """All keyed derivations for one project key. Thread-safe (the cache is only a memo)."""

    def __init__(self, key: bytes, project: str) -> None:
        self._key = key
        self._project = project.encode("utf-8") + b"\x00"
        self._uids: dict[str, str] = {}
        self._patients: dict[str, str] = {}

    def _mac(self, purpose: bytes, value: str) -> bytes:
        return hmac.digest(self._key, _DOMAIN + purpose + b"\x00" + self._project + value.encode("utf-8"), "sha256")

    def uid(self, original: str) -> str:
        """A ``2.25`` UID (PS3.5 B.2) whose UUID is the keyed hash of the original UID.

        The 128-bit value is shaped as an RFC 9562 version-8 ("custom") UUID, so the
        result is a well-formed UUID-derived UID of at most 44 characters.
        """
        cached = self._uids.get(original)
        if cached is not None:
            return cached
        raw = bytearray(self._mac(b"uid", original)[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80  # version 8
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
        new = "2.25." + str(int.from_bytes(raw, "big"))
        if len(self._uids) >= _CACHE_LIMIT:
            self._uids.clear()
        self._uids[original] = new
        return new

    def _token(self, purpose: bytes, value: str, length: int) -> str:
        return base64.b32encode(self._mac(purpose, value)).decode("ascii")[:length]

    def patient_id(self, original: str) -> str:
        """``DG-`` and 20 base32 characters (a valid LO value)."""
        cached = self._patients.get(original)
        if cached is None:
            cached = "DG-" + self._token(b"patient-id", original, _PSEUDONYM_CHARS)
            if len(self._patients) >= _CACHE_LIMIT:
                self._patients.clear()
            self._patients[original] = cached
        return cached

    def patient_name(self, original_id: str) -> str:
        """``Pseudo^<pseudonym>``: the name is derived from the patient ID, so all objects agree."""
        return "Pseudo^" + self.patient_id(original_id)

    def day_shift(self, original_id: str) -> int:
        """Days (1..MAX_DAY_SHIFT) by which this patient's dates move back (PS3.15 E.3.6)."""
        return 1 + int.from_bytes(self._mac(b"date-shift", original_id)[:8], "big") % MAX_DAY_SHIFT

    def ae_title(self, original: str) -> str:
        """A 16-character AE title standing for the original (clean action of PS3.15 E.3.8 on AE values)."""
        return "DG" + self._token(b"ae-title", original.strip(), 14)
