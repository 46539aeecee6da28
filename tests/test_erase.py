"""Crypto-shredding: after erase nothing of the patient reads; others are untouched."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from dicomguard.app.archive import Archive
from dicomguard.core.query import IndexQuery, PatientFilter
from dicomguard.errors import ErasedError, NotFoundError, RejectedObject, RejectReason
from dicomguard.index.db import read_session
from dicomguard.index.models import Instance, Patient, PatientToken, Study
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, BOB, ct_series


def _load(archive):
    alice = [archive.operator.store.ingest(d).sop_instance_uid for d in ct_series(ALICE, n=3)]
    bob = [archive.operator.store.ingest(d).sop_instance_uid for d in ct_series(BOB, n=2, seed=9)]
    return alice, bob


def test_erase_makes_patient_unreadable_and_leaves_others(archive, home) -> None:
    alice, bob = _load(archive)
    with read_session(archive.ctx.engine) as s:
        alice_blobs = [r.blob_id for r in s.scalars(select(Instance).where(Instance.sop_instance_uid.in_(alice)))]
    result = archive.operator.erase.patient(ALICE.patient_id, "GDPR art. 17 request #42")
    assert result.instances == 3 and result.studies == 1
    for uid in alice:
        with pytest.raises(ErasedError):
            archive.operator.retrieve.instance(uid)
    for uid in bob:
        assert archive.operator.retrieve.instance(uid).data
    # a fresh process (no cached keys) cannot read them either
    with Archive.open(home, PASSPHRASE) as other:
        for uid in alice:
            with pytest.raises(ErasedError):
                other.operator.retrieve.instance(uid)
        assert [p.patient_id for p in IndexQuery(other.ctx).patients()] == [BOB.patient_id]
        assert IndexQuery(other.ctx).patients(PatientFilter(patient_id=ALICE.patient_id)) == []
        assert all(s.patient_id == BOB.patient_id for s in IndexQuery(other.ctx).studies())
    with read_session(archive.ctx.engine) as s:
        p = s.scalar(select(Patient).where(Patient.erased_at.is_not(None)))
        assert p.wrapped_data_key is None and p.phi is None and p.id_token is None
        assert not list(s.scalars(select(PatientToken).where(PatientToken.patient_ref == p.ref)))
        assert s.scalar(select(Study).where(Study.patient_ref == p.ref)).phi is None
        # tombstones keep UIDs and digests for the ledger and audit trail
        assert {r.sop_instance_uid for r in s.scalars(select(Instance).where(Instance.erased.is_(True)))} == set(alice)
    assert not any(archive.ctx.store.exists(b) for b in alice_blobs)


def test_erased_blob_copied_back_from_a_backup_stays_unreadable(archive) -> None:
    """A backup restores the ciphertext, but the key is gone: crypto-shredding reaches backups."""
    alice, _ = _load(archive)
    with read_session(archive.ctx.engine) as s:
        row = s.get(Instance, alice[0])
    backup = archive.ctx.store.read(row.blob_id)
    archive.operator.erase.patient(ALICE.patient_id, "retention period over")
    archive.ctx.store.put(row.blob_id, [backup])
    with pytest.raises(ErasedError):
        archive.operator.retrieve.instance(alice[0])


def test_resend_of_an_erased_instance_is_refused(archive) -> None:
    data = ct_series(ALICE, n=1)[0]
    archive.operator.store.ingest(data)
    archive.operator.erase.patient(ALICE.patient_id, "request")
    with pytest.raises(RejectedObject) as exc:
        archive.operator.store.ingest(data)
    assert exc.value.reason is RejectReason.PATIENT_ERASED


def test_new_study_after_erasure_gets_a_fresh_key(archive) -> None:
    archive.operator.store.ingest(ct_series(ALICE, n=1)[0])
    archive.operator.erase.patient(ALICE.patient_id, "request")
    uid = archive.operator.store.ingest(ct_series(ALICE, n=1, seed=77)[0]).sop_instance_uid
    assert archive.operator.retrieve.instance(uid).data
    assert [p.patient_id for p in IndexQuery(archive.ctx).patients()] == [ALICE.patient_id]


def test_erase_unknown_patient_and_empty_reason(archive) -> None:
    _load(archive)
    with pytest.raises(NotFoundError):
        archive.operator.erase.patient("NO-SUCH-PATIENT", "reason")
    with pytest.raises(ValueError):
        archive.operator.erase.patient(ALICE.patient_id, "  ")
