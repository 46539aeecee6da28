"""The backup key vault (ADR 0007): every key a restore needs, kept apart from the snapshots.

Snapshots never hold a key. The vault holds the archive keys and each *live* patient's
data key, all wrapped by the KEK, and the whole payload sealed (AES-256-GCM) under the
KEK, beside the KEK sealed under the passphrase (argon2id, RFC 9106) and sealed to the
recovery key (X25519). An erased patient's key is not in it, so a restore of any
earlier snapshot leaves that patient a tombstone (GDPR art. 17), while a rotation
(``keys rotate``) only changes the wrapping, so snapshots taken before it still restore.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from dicomguard.app.home import recovery_public_key, sealed_kek_path
from dicomguard.core.context import ArchiveContext
from dicomguard.core.keyring import META_ARCHIVE_ID, PURPOSE_BACKUP, PURPOSE_LEDGER
from dicomguard.crypto.kek import Kek
from dicomguard.errors import DicomGuardError, UnsealError
from dicomguard.index.db import read_session
from dicomguard.index.models import ArchiveMeta, Patient, WrappedKey

VAULT_FORMAT = "dicomguard-key-vault/1"
VAULT_NAME = "vault/vault.json"
_PURPOSE = "backup-vault"


class VaultError(DicomGuardError):
    """No vault copy on the target opens with the given passphrase or recovery key."""


@dataclass(frozen=True)
class VaultContents:
    """An opened vault: the KEK, the archive keys (wrapped), the live patients' data keys (wrapped)."""

    archive_id: str
    kek: Kek
    sealed_kek: bytes
    """The KEK sealed under the passphrase, as a sealed KEK file holds it."""
    written_at: datetime
    archive_keys: dict[str, bytes]
    patient_keys: dict[str, bytes]

    def archive_key(self, purpose: str) -> bytes:
        wrapped = self.archive_keys.get(purpose)
        if wrapped is None:
            raise VaultError(f"the key vault holds no {purpose} key")
        return self.kek.unwrap(purpose, "archive", wrapped)

    def ledger_public_key(self) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        private = Ed25519PrivateKey.from_private_bytes(self.archive_key(PURPOSE_LEDGER))
        return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def last_erasure(ctx: ArchiveContext) -> datetime | None:
    with read_session(ctx.engine) as s:
        return s.scalar(select(func.max(Patient.erased_at)))


def build_vault(ctx: ArchiveContext) -> bytes:
    """The vault document of the archive as it is now (read in one transaction)."""
    kek = ctx.keyring.kek
    ctx.keyring.ensure_archive_key(PURPOSE_BACKUP)
    with read_session(ctx.engine) as s:
        archive_id = s.get(ArchiveMeta, META_ARCHIVE_ID).value  # type: ignore[union-attr]
        archive_keys = {k.purpose: _b64(k.wrapped) for k in s.scalars(select(WrappedKey)) if k.kek_id == kek.kek_id}
        patients = {ref: _b64(w) for ref, w in s.execute(select(Patient.ref, Patient.wrapped_data_key)
                                                         .where(Patient.wrapped_data_key.is_not(None), Patient.kek_id == kek.kek_id))}
    now = datetime.now(UTC)
    payload = json.dumps({"written_at": now.isoformat(), "archive_keys": archive_keys, "patients": patients},
                         separators=(",", ":")).encode()
    recovery_public = recovery_public_key(ctx.home)
    doc = {
        "format": VAULT_FORMAT,
        "archive_id": archive_id,
        "kek_id": kek.kek_id,
        "written_at": now.isoformat(),
        "sealed_kek": sealed_kek_path(ctx.home, kek.kek_id).read_text(encoding="utf-8"),
        "recovery_sealed_kek": _b64(kek.seal_to_recovery_key(recovery_public)) if recovery_public else None,
        "payload": _b64(kek.wrap(_PURPOSE, archive_id, payload)),
    }
    return json.dumps(doc, indent=1).encode()


def open_vault(candidates: list[bytes] | object, *, passphrase: str | None = None, recovery_key: bytes | None = None,
               kek: Kek | None = None) -> VaultContents:
    """The newest vault copy that opens (candidates newest first); forged or damaged copies are skipped.

    Exactly one of ``passphrase``, ``recovery_key`` (the 32 private-key bytes) or an
    unsealed ``kek`` (a drill run by the live archive) opens it.
    """
    reasons: list[str] = []
    for raw in candidates:  # type: ignore[attr-defined]
        try:
            return _open_one(raw, passphrase, recovery_key, kek)
        except (UnsealError, ValueError, KeyError, TypeError) as exc:
            reasons.append(str(exc)[:200])
    if not reasons:
        raise VaultError("the target holds no key vault (was a backup ever completed there?)")
    raise VaultError("no key vault copy opens: " + "; ".join(reasons[:3]))


def _open_one(raw: bytes, passphrase: str | None, recovery_key: bytes | None, kek: Kek | None) -> VaultContents:
    doc = json.loads(raw)
    if doc.get("format") != VAULT_FORMAT:
        raise ValueError("not a dicomguard key vault")
    kek_id, archive_id = str(doc["kek_id"]), str(doc["archive_id"])
    sealed = str(doc["sealed_kek"]).encode()
    if kek is not None:
        if kek.kek_id != kek_id:
            raise UnsealError(f"the vault is under KEK {kek_id}, the archive under {kek.kek_id}")
        opened = kek
    elif recovery_key is not None:
        if not doc.get("recovery_sealed_kek"):
            raise UnsealError("this vault was written by a home without a recovery key")
        opened = Kek.open_with_recovery_key(kek_id, base64.b64decode(doc["recovery_sealed_kek"]), recovery_key)
    else:
        opened = Kek.unseal(sealed, passphrase or "")
        if opened.kek_id != kek_id:
            raise UnsealError("the vault's sealed KEK names another KEK")
    payload = json.loads(opened.unwrap(_PURPOSE, archive_id, base64.b64decode(doc["payload"])))
    return VaultContents(
        archive_id=archive_id, kek=opened, sealed_kek=sealed, written_at=datetime.fromisoformat(payload["written_at"]),
        archive_keys={p: base64.b64decode(w) for p, w in payload["archive_keys"].items()},
        patient_keys={r: base64.b64decode(w) for r, w in payload["patients"].items()},
    )


def write_sealed_kek(home: Path, vault: VaultContents, new_passphrase: str | None, kdf: object) -> None:
    """The restored home's sealed KEK: the vault's (same passphrase), or sealed anew under ``new_passphrase``."""
    from dicomguard.storage.filesystem import write_private_file

    content = vault.kek.seal_with_passphrase(new_passphrase, kdf) if new_passphrase else vault.sealed_kek  # type: ignore[arg-type]
    write_private_file(sealed_kek_path(home, vault.kek.kek_id), content)
