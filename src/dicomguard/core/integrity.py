"""Verification reports and the check of one stored object against its recorded digests.

A report lists every problem with the object it concerns; nothing stops at the
first failure (like tuf's ``get_verification_result``). The ledger, the audit
trail and the archive-wide verification (``app/verify.py``) add to one report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomguard.core.context import ArchiveContext
from dicomguard.core.dicom_structure import walk_part10
from dicomguard.core.hashing import digest_object
from dicomguard.core.phi import RowSealer
from dicomguard.core.retrieve import READ_LIMITS
from dicomguard.crypto.aead import DecryptionError
from dicomguard.crypto.blob_cipher import blob_identity, blob_salt, decrypt_blob
from dicomguard.errors import DicomGuardError, ErasedError, RejectedObject, UnsealError
from dicomguard.index.models import Instance, Patient, Series, Study
from dicomguard.storage.base import BlobMissingError


class ProblemKind(StrEnum):
    """What verification found wrong with an object, the index or the ledger (the audit trail has its own kinds)."""

    PIXEL_CHANGED = "pixel-changed"
    HEADER_CHANGED = "header-changed"
    BLOB_MISSING = "blob-missing"
    BLOB_SWAPPED = "blob-swapped"
    BLOB_ALTERED = "blob-altered"
    UNKNOWN_BLOB = "unknown-blob"
    INDEX_ROW_ALTERED = "index-row-altered"
    INDEX_ROW_MISSING = "index-row-missing"
    INDEX_ROW_UNLEDGERED = "index-row-unledgered"
    INDEX_ROW_UNREADABLE = "index-row-unreadable"
    LEDGER_TRUNCATED = "ledger-truncated"
    LEDGER_FORKED = "ledger-forked"
    CHECKPOINT_SIGNATURE_BAD = "checkpoint-signature-bad"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Problem:
    kind: StrEnum
    subject: str
    detail: str


class Findings:
    """A list of named problems (a check passes when it is empty); mixed into reports as their ``problems`` field."""

    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: StrEnum, subject: str, detail: str) -> None:
        self.problems.append(Problem(kind, subject, detail))

    def problems_json(self) -> list[dict[str, str]]:
        return [{"kind": p.kind.value, "subject": p.subject, "detail": p.detail} for p in self.problems]


@dataclass
class VerifyReport(Findings):
    mode: str
    tree_size: int = 0
    leaves_checked: int = 0
    checkpoints_checked: int = 0
    trusted_checked: int = 0
    objects_checked: int = 0
    bytes_checked: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["problems"] = self.problems_json()
        return d


def check_blob(ctx: ArchiveContext, row: Instance, leaf: dict[str, Any], by_salt: dict[bytes, str], report: VerifyReport) -> None:
    """Decrypt one object's blob under its identity and compare both digests with its leaf (``leaf``: the decoded leaf).

    A blob that does not authenticate is named ``blob-swapped`` when its header salt
    belongs to another object (``by_salt``), else ``blob-altered``.
    """
    uid = row.sop_instance_uid
    try:
        blob = ctx.store.read(row.blob_id)
    except BlobMissingError:
        report.add(ProblemKind.BLOB_MISSING, uid, f"blob {row.blob_id} is missing")
        return
    try:
        key = ctx.keyring.patient_key(row.patient_ref)
        data = decrypt_blob(key, blob_identity(uid, row.series_uid, row.study_uid, row.patient_ref), blob)
    except ErasedError:
        return
    except (DecryptionError, DicomGuardError):
        owner = by_salt.get(blob_salt(blob[:64]) or b"")
        if owner is not None and owner != uid:
            report.add(ProblemKind.BLOB_SWAPPED, uid, f"its blob file holds the blob of {owner}")
        else:
            report.add(ProblemKind.BLOB_ALTERED, uid, "blob fails authentication (ciphertext altered or replaced)")
        return
    try:
        digests = digest_object(data, walk_part10(data, READ_LIMITS))
    except RejectedObject as exc:
        report.add(ProblemKind.HEADER_CHANGED, uid, f"decrypted object is malformed: {exc}")
        return
    want_pixel = leaf.get("pixel_sha256", row.pixel_sha256.hex())
    want_header = leaf.get("header_sha256", row.header_sha256.hex())
    if digests.pixel_sha256.hex() != want_pixel:
        report.add(ProblemKind.PIXEL_CHANGED, uid, "pixel data differs from the ledgered digest")
    if digests.header_sha256.hex() != want_header:
        report.add(ProblemKind.HEADER_CHANGED, uid, "header differs from the ledgered digest")




def check_index_rows(ctx: ArchiveContext, s: Session, report: VerifyReport) -> None:
    """Every sealed patient, study and series row of a live patient opens under that patient's key.

    A row altered, copied from another row, or sealed under another patient's key
    (which is what an object mixing two patients under one study would have left)
    is named, so that no such row hides until a query trips over it.
    """
    rows = [("patients", ref, ref, sealed) for ref, sealed in s.execute(
        select(Patient.ref, Patient.phi).where(Patient.erased_at.is_(None)))]
    rows += [("studies", uid, ref, sealed) for uid, ref, sealed in s.execute(
        select(Study.uid, Study.patient_ref, Study.phi).join(Patient, Patient.ref == Study.patient_ref).where(Patient.erased_at.is_(None)))]
    rows += [("series", uid, ref, sealed) for uid, ref, sealed in s.execute(
        select(Series.uid, Study.patient_ref, Series.phi).join(Study, Study.uid == Series.study_uid)
        .join(Patient, Patient.ref == Study.patient_ref).where(Patient.erased_at.is_(None)))]
    for table, row_id, ref, sealed in rows:
        try:
            RowSealer(ctx.keyring.patient_key(ref, s)).open(table, row_id, sealed or b"")
        except ErasedError:
            continue
        except UnsealError:
            report.add(ProblemKind.INDEX_ROW_UNREADABLE, f"{table}:{row_id}"[:200], "its patient's data key does not unwrap under the KEK")
        except (DecryptionError, ValueError):
            report.add(ProblemKind.INDEX_ROW_UNREADABLE, f"{table}:{row_id}"[:200], "does not open under its patient's key")
