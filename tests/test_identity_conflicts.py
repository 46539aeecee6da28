"""A study UID belongs to one patient, a series UID to one study; stored data never breaks a query; one bad value fails alone.

The attack: a store-only modality (or a technologist over STOW) of one department
sends an object that reuses another department's Study Instance UID (or Series
Instance UID) under a different Patient ID. It must be refused as an identity
conflict, recorded and alerted, and the stored study must stay whole and
queryable for everyone.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import generate_uid
from sqlalchemy import select, update
from typer.testing import CliRunner

from dicomguard.app.verify import verify_archive
from dicomguard.cli.main import app
from dicomguard.core.access import Principal, PrincipalKind
from dicomguard.core.events import IdentityConflictRefused
from dicomguard.core.ingest import IngestStatus
from dicomguard.core.query import IndexQuery, StudyFilter
from dicomguard.errors import RejectedObject, RejectReason
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import Instance, Series
from tests.audit.conftest import entries
from tests.dicom_factory import ALICE, BOB, DEPARTMENT, ct_series, dataset_of, to_bytes

runner = CliRunner()
MODALITY = Principal(PrincipalKind.DEVICE, "CT_OTHER", frozenset({"device"}), "10.0.0.9",
                     {"operations": ("store",), "department": "CARDIOLOGY"})
RAD = Principal(PrincipalKind.USER, "dr.rad", frozenset({"radiologist"}), attributes={"department": DEPARTMENT})


def _as(data: bytes, **values: object) -> bytes:
    """The object with these values; a bytes value is written as it is (what a hostile sender can put on the wire)."""
    ds = dataset_of(data)
    for k, v in values.items():
        if isinstance(v, bytes):
            tag = Tag(tag_for_keyword(k))
            ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(v), v, 0, False, True)
        else:
            setattr(ds, k, v)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return to_bytes(ds)


def test_an_object_reusing_another_patients_study_is_refused_and_the_study_stays_whole(archive, events) -> None:  # type: ignore[no-untyped-def]
    alice = ct_series(ALICE, n=2)
    for d in alice:
        archive.operator.store.ingest(d)
    study = dataset_of(alice[0]).StudyInstanceUID
    bob = ct_series(BOB, n=1, seed=4)[0]
    forged = _as(bob, StudyInstanceUID=study)  # Bob's object claims Alice's study
    with pytest.raises(RejectedObject) as refused:
        archive.services(MODALITY).store.ingest(forged)
    assert refused.value.reason is RejectReason.IDENTITY_CONFLICT and "another patient" in refused.value.detail
    (alert,) = [e for e in events if isinstance(e, IdentityConflictRefused)]
    assert alert.study_uid == study and alert.source.startswith("device:CT_OTHER")
    # the study is untouched and every query path still works
    index = IndexQuery(archive.ctx)
    assert {i.patient_ref for i in index.instances(study_uid=study)} == {index.studies(StudyFilter(study_uid=study))[0].patient_ref}
    assert len(index.instances(study_uid=study)) == 2
    radiologist = archive.services(RAD)
    assert [s.patient_id for s in radiologist.query.find_studies(StudyFilter(study_uid=study))] == [ALICE.patient_id]
    assert len(radiologist.query.find_series(study_uid=study)) == 1
    assert len(radiologist.query.find_instances(study_uid=study)) == 2
    assert runner.invoke(app, ["ls", "series", "--study", study, "--json"], catch_exceptions=False).exit_code == 0
    assert verify_archive(archive.ctx, archive.ledger.verifier).ok
    # the officer sees it: a Security Alert naming the targeted study's patient and the sender
    (record,) = [e for e in entries(archive) if "identity-conflict-refused" in (e.event_type or "").split()]
    assert record.message.patient_ids() == [ALICE.patient_id] and record.user == "device:CT_OTHER"


def test_an_object_reusing_another_studys_series_is_refused(archive) -> None:  # type: ignore[no-untyped-def]
    alice = ct_series(ALICE, n=1)[0]
    archive.operator.store.ingest(alice)
    series = dataset_of(alice).SeriesInstanceUID
    other_study_same_patient = _as(ct_series(ALICE, n=1, seed=8)[0], SeriesInstanceUID=series)
    with pytest.raises(RejectedObject, match="another study"):
        archive.operator.store.ingest(other_study_same_patient)
    with read_session(archive.ctx.engine) as s:
        assert s.scalar(select(Series.study_uid).where(Series.uid == series)) == dataset_of(alice).StudyInstanceUID


def test_two_patients_in_one_batch_under_one_new_study_keep_the_first_and_refuse_the_second(archive) -> None:  # type: ignore[no-untyped-def]
    alice = ct_series(ALICE, n=1, seed=2)[0]
    study = dataset_of(alice).StudyInstanceUID
    bob = _as(ct_series(BOB, n=1, seed=3)[0], StudyInstanceUID=study)
    outcomes = list(archive.operator.store.ingest_many([("alice", lambda: alice), ("bob", lambda: bob), ("alice-again", lambda: alice)]))
    assert outcomes[0].result is not None and outcomes[0].result.status is IngestStatus.STORED
    assert outcomes[1].error is not None and outcomes[1].error.reason is RejectReason.IDENTITY_CONFLICT
    assert outcomes[1].identity.study_uid == study  # the refusal names the object
    assert outcomes[2].result is not None and outcomes[2].result.status is IngestStatus.DUPLICATE
    with read_session(archive.ctx.engine) as s:
        assert len(list(s.scalars(select(Instance)))) == 1


def test_a_row_sealed_under_another_patients_key_is_left_out_and_named_by_verify(archive) -> None:  # type: ignore[no-untyped-def]
    """Rows damaged in the database (or left by an older version) never break a query: verify names them."""
    alice, bob = ct_series(ALICE, n=1)[0], ct_series(BOB, n=1, seed=4)[0]
    archive.operator.store.ingest(alice)
    archive.operator.store.ingest(bob)
    a_series, b_series = dataset_of(alice).SeriesInstanceUID, dataset_of(bob).SeriesInstanceUID
    with write_session(archive.ctx.engine) as s:
        sealed = s.scalar(select(Series.phi).where(Series.uid == b_series))
        s.execute(update(Series).where(Series.uid == a_series).values(phi=sealed))  # Bob's sealed values on Alice's row
    index = IndexQuery(archive.ctx)
    assert [se.uid for se in index.series()] == [b_series]  # Alice's damaged row is left out, the query works
    assert runner.invoke(app, ["ls", "series", "--json"], catch_exceptions=False).exit_code == 0
    report = verify_archive(archive.ctx, archive.ledger.verifier)
    assert [(p.kind.value, p.subject) for p in report.problems] == [("index-row-unreadable", f"series:{a_series}")]


# -- total validation: one value that cannot be indexed fails its own object --------------------------------------

SURPRISES = {
    "superscript digits in StudyDate": {"StudyDate": b"\xb2\xb3\xb2\xb30101"},
    "department longer once upper-cased": {"InstitutionalDepartmentName": "\u00df" * 40},
    "superscript digits in SeriesNumber": {"SeriesNumber": b"\xb9\xb2"},
    "a control character in the name": {"PatientName": "DOE\x07^JOHN"},
    "a huge instance number": {"InstanceNumber": "9" * 12},
}


@pytest.mark.parametrize("name", list(SURPRISES))
def test_one_surprising_value_fails_alone_or_is_stored(archive, name: str) -> None:  # type: ignore[no-untyped-def]
    first, last = ct_series(ALICE, n=2, seed=21)
    odd = _as(ct_series(BOB, n=1, seed=22)[0], **SURPRISES[name])
    outcomes = list(archive.operator.store.ingest_many([("first", lambda: first), ("odd", lambda: odd), ("last", lambda: last)]))
    assert [o.label for o in outcomes] == ["first", "odd", "last"]
    assert outcomes[0].result is not None and outcomes[2].result is not None  # the others are stored whatever the odd one does
    if outcomes[1].error is not None:
        assert outcomes[1].error.reason is RejectReason.MALFORMED and outcomes[1].error.detail
    assert len(archive.operator.query.find_studies()) >= 1  # and everything stored is queryable


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=st.fixed_dictionaries({
    "PatientName": st.text(max_size=40), "PatientID": st.text(max_size=20), "StudyDate": st.text(max_size=10),
    "InstitutionalDepartmentName": st.text(max_size=70), "StudyDescription": st.text(max_size=60),
    "AccessionNumber": st.text(max_size=16), "ReferringPhysicianName": st.text(max_size=30), "SeriesNumber": st.text(max_size=6),
}))
def test_any_unicode_header_values_fail_alone(archive, values: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Property: whatever text arrives in these elements, the batch's good objects are stored and the import ends normally."""
    good = ct_series(ALICE, n=1, seed=int(datetime.now(UTC).timestamp() * 1e6) % 10_000)[0]
    try:
        odd = _as(ct_series(BOB, n=1, seed=5)[0], **values)
    except Exception:  # noqa: BLE001 - pydicom itself refuses to write the value: nothing to send
        return
    good = _as(good)
    outcomes = list(archive.operator.store.ingest_many([("odd", lambda: odd), ("good", lambda: good)]))
    assert outcomes[1].result is not None, outcomes[1].error
    if outcomes[0].error is not None:
        assert outcomes[0].error.reason in (RejectReason.MALFORMED, RejectReason.INVALID_UID, RejectReason.MISSING_UID,
                                            RejectReason.IDENTITY_CONFLICT)


def test_import_of_a_folder_lists_the_odd_file_as_rejected(archive, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in"
    folder.mkdir()
    first, last = ct_series(ALICE, n=2, seed=31)
    (folder / "a.dcm").write_bytes(first)
    (folder / "b.dcm").write_bytes(_as(ct_series(BOB, n=1, seed=32)[0], StudyDate=b"\xb2\xb3\xb2\xb30101"))
    (folder / "c.dcm").write_bytes(last)
    r = runner.invoke(app, ["import", str(folder), "--json"], catch_exceptions=False)
    summary = json.loads(r.stdout)
    assert summary["stored"] + summary["rejected"] == 3 and summary["stored"] >= 2


def test_the_same_objects_on_two_connections_at_once_are_stored_once_and_never_fail(archive) -> None:  # type: ignore[no-untyped-def]
    """Two writers racing on one SOP Instance UID: one stores it, the other answers duplicate (never an error)."""
    import threading

    objects = ct_series(ALICE, n=12, seed=77)
    outcomes: list = []
    start = threading.Barrier(2)

    def send() -> None:
        start.wait()
        for data in objects:
            outcomes.extend(archive.operator.store.ingest_many([("x", lambda d=data: d)]))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(outcomes) == 24
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes if o.error]
    assert sorted(o.result.status.value for o in outcomes).count(IngestStatus.STORED.value) == 12
