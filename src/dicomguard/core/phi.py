"""Sealing of identifying index attributes under the patient's data key.

Each row's identifying attributes are one AES-256-GCM sealed JSON document,
bound by associated data to its table and row id, so a sealed value copied to
another row does not open. The key is an HKDF subkey of the patient's data
key: crypto-shredding the patient also shreds their index rows.
"""

from __future__ import annotations

import json
from typing import Any

from dicomguard.crypto.aead import derive_key, open_sealed, seal

_INFO = b"dicomguard index row v1"


class RowSealer:
    def __init__(self, data_key: bytes) -> None:
        self._key = derive_key(data_key, _INFO)

    @staticmethod
    def _aad(table: str, row_id: str) -> bytes:
        return f"{table}|{row_id}".encode()

    def seal(self, table: str, row_id: str, values: dict[str, Any]) -> bytes:
        return self.seal_document(table, row_id, self.document(values))

    @staticmethod
    def document(values: dict[str, Any]) -> bytes:
        """The JSON document :meth:`seal` seals: made apart where a value that cannot be encoded must fail early."""
        return json.dumps(values, separators=(",", ":"), sort_keys=True).encode("utf-8")

    def seal_document(self, table: str, row_id: str, doc: bytes) -> bytes:
        return seal(self._key, doc, self._aad(table, row_id))

    def open(self, table: str, row_id: str, sealed: bytes) -> dict[str, Any]:
        """Raises :class:`dicomguard.crypto.aead.DecryptionError` if the row was altered or moved."""
        return json.loads(open_sealed(self._key, sealed, self._aad(table, row_id)))
