"""Erasure by crypto-shredding (GDPR art. 17; NIST SP 800-88 cryptographic erase).

Destroying the patient's data key makes every copy of the patient's blobs
(this store, replicas, backups) and of their sealed index rows permanently
unreadable: no key, no plaintext. The rows stay as tombstones (UIDs and
digests only) so that the integrity ledger and the audit trail stay whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from dicomguard.core.access import Principal
from dicomguard.core.context import ArchiveContext
from dicomguard.core.events import PatientErased
from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.crypto.aead import derive_key, seal
from dicomguard.errors import DicomGuardError, NotFoundError
from dicomguard.index.db import checkpoint_and_shrink, write_session
from dicomguard.index.models import Instance, Patient, PatientToken, Series, Study


class AmbiguousPatientError(DicomGuardError):
    """The Patient ID exists under several issuers; name the issuer."""


@dataclass(frozen=True)
class EraseResult:
    patient_refs: tuple[str, ...]
    studies: int
    instances: int


def erase_patient(
    ctx: ArchiveContext, patient_id: str, reason: str, issuer: str | None = None, principal: Principal | None = None
) -> EraseResult:
    """Crypto-shred one patient identified by Patient ID (and issuer when ambiguous)."""
    if not reason.strip():
        raise ValueError("an erasure needs a reason")
    matches = ctx.patients.find(patient_id, issuer)
    if not matches:
        raise NotFoundError("no such patient")
    if issuer is None and len({i for _, i in matches}) > 1:
        raise AmbiguousPatientError(f"Patient ID exists under {len(matches)} issuers; pass --issuer")
    refs = tuple(ref for ref, _ in matches)
    now = datetime.now(UTC)
    reason_key = derive_key(ctx.keyring.archive_key(PURPOSE_IDENTITY), b"dicomguard erase reason v1")
    with write_session(ctx.engine) as s:
        rows = s.execute(select(Instance.sop_instance_uid, Instance.blob_id, Instance.study_uid).where(Instance.patient_ref.in_(refs))).all()
        study_uids = tombstone_patients(s, refs, now, {ref: seal(reason_key, reason.encode(), ref.encode()) for ref in refs})
        ctx.bus.publish(s, PatientErased(",".join(refs), tuple(r.sop_instance_uid for r in rows), study_uids, now, principal))
    for ref in refs:
        ctx.patients.forget(ref)
    # The key is gone; the ciphertext is now noise. Removing it frees space.
    for r in rows:
        ctx.store.delete(r.blob_id)
    checkpoint_and_shrink(ctx.engine)
    return EraseResult(refs, len(study_uids), len(rows))


def tombstone_patients(s: Session, refs: tuple[str, ...], now: datetime, sealed_reasons: dict[str, bytes] | None = None) -> tuple[str, ...]:
    """Leave these patients as tombstones in ``s``: key, sealed PHI and blind-index tokens gone; UIDs and digests kept.

    Shared by ``erase`` and by a restore from backup, where a patient whose key the
    key vault no longer holds (erased after the snapshot) must come back exactly as
    ``erase`` would have left it (ADR 0007). Returns the patients' study UIDs.
    """
    study_uids = tuple(sorted(set(s.scalars(select(Study.uid).where(Study.patient_ref.in_(refs))))))
    for ref in refs:
        s.execute(
            update(Patient)
            .where(Patient.ref == ref)
            .values(
                wrapped_data_key=None, phi=None, identity_token=None, demographics_token=None, id_token=None, name_token=None,
                birth_date_token=None, erased_at=now, erase_reason=(sealed_reasons or {}).get(ref),
            )
        )
    s.execute(delete(PatientToken).where(PatientToken.patient_ref.in_(refs)))
    s.execute(update(Study).where(Study.patient_ref.in_(refs)).values(phi=None, accession_token=None, study_date_token=None))
    s.execute(update(Series).where(Series.study_uid.in_(study_uids)).values(phi=None))
    s.execute(update(Instance).where(Instance.patient_ref.in_(refs)).values(erased=True))
    return study_uids
