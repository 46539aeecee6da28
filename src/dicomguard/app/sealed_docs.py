"""Small JSON documents kept sealed in index rows (incidents, transfer jobs, peers' keys).

AES-256-GCM under a key derived (HKDF, RFC 5869) from one of the archive's keys for one use,
with the table and row as associated data: a sealed value copied to another row or table does
not open (ADR 0001 sealed rows).
"""

from __future__ import annotations

import json
from typing import Any

from dicomguard.core.context import ArchiveContext
from dicomguard.crypto.aead import derive_key, open_sealed, seal


class SealedDocuments:
    def __init__(self, ctx: ArchiveContext, purpose: str, info: bytes) -> None:
        self.ctx, self.purpose, self.info = ctx, purpose, info
        self._key: bytes | None = None

    def ensure_key(self) -> bytes:
        """The derived key; its archive key is created (and committed) on first use: never call inside a write transaction."""
        if self._key is None:
            self._key = derive_key(self.ctx.keyring.ensure_archive_key(self.purpose), self.info)
        return self._key

    def seal(self, table: str, row_id: object, doc: object) -> bytes:
        return seal(self.ensure_key(), json.dumps(doc).encode(), f"{table}|{row_id}".encode())

    def open(self, table: str, row_id: object, sealed: bytes) -> Any:
        return json.loads(open_sealed(self.ensure_key(), sealed, f"{table}|{row_id}".encode()))
