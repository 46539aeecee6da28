"""A patient's demographics come only from the objects a principal may see; one Patient ID with different demographics is kept apart.

The attack: a technologist of one department stores a dummy CT carrying another
department's Patient ID. Before, the archive filed it under the existing patient
record, so a query of *her own* study showed the other department's real patient
name and birth date, and a name stored first showed on every later real study.
"""

from __future__ import annotations

import base64
import json

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select, update
from typer.testing import CliRunner

from dicomguard.cli.main import app
from dicomguard.core.access import AccessDenied, Principal, PrincipalKind
from dicomguard.core.events import PatientIdentityConflict
from dicomguard.core.query import PatientFilter, StudyFilter
from dicomguard.core.services.patients import Decision
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import Patient, PatientConflict
from tests.audit.conftest import entries
from tests.dicom_factory import ALICE, DEPARTMENT, ct_series, dataset_of, to_bytes

runner = CliRunner()
TECH = Principal(PrincipalKind.USER, "t.cardio", frozenset({"technologist"}),
                 attributes={"department": "CARDIOLOGY", "modalities": ["CT"]})
RAD = Principal(PrincipalKind.USER, "dr.rad", frozenset({"radiologist"}), attributes={"department": DEPARTMENT})
OFFICER = Principal(PrincipalKind.USER, "sec", frozenset({"security_officer"}))
ADMIN = Principal(PrincipalKind.USER, "adm", frozenset({"admin"}))


def _dummy(name: str = "DUMMY^TEST", birth_date: str = "20000101", sex: str = "O", seed: int = 40) -> bytes:
    """A new CT study carrying ALICE's Patient ID with other demographics."""
    ds = dataset_of(ct_series(ALICE, n=1, seed=seed)[0])
    ds.PatientName, ds.PatientBirthDate, ds.PatientSex = name, birth_date, sex
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstitutionalDepartmentName = "CARDIOLOGY"
    return to_bytes(ds)


def test_a_dummy_under_another_departments_patient_id_shows_only_what_its_storer_sent(archive) -> None:  # type: ignore[no-untyped-def]
    real = ct_series(ALICE, n=1)[0]
    archive.operator.store.ingest(real)
    tech = archive.services(TECH)
    mine = tech.store.ingest(_dummy()).study_uid
    (study,) = tech.query.find_studies()
    assert study.uid == mine
    assert study.patient_name == "DUMMY^TEST" and ALICE.name not in json.dumps(study.to_json())
    # patient level: her patient is the one she sent, never the real record
    (patient,) = tech.query.find_patients()
    assert (patient.name, patient.birth_date) == ("DUMMY^TEST", "20000101") and patient.studies == 1
    # probing the real name through her own study finds nothing
    surname = ALICE.name.split("^")[0]
    assert tech.query.find_studies(StudyFilter(patient=PatientFilter(name=surname[:4] + "*"))) == []
    assert tech.query.find_patients(PatientFilter(name=surname + "*")) == []
    assert tech.query.find_studies(StudyFilter(patient=PatientFilter(birth_date=ALICE.birth_date))) == []
    # and the radiologist still sees the real patient, untouched by the dummy
    (rad_study,) = archive.services(RAD).query.find_studies()
    assert rad_study.patient_name == ALICE.name and rad_study.uid == dataset_of(real).StudyInstanceUID


def test_a_false_name_stored_first_never_shows_on_later_real_studies(archive) -> None:  # type: ignore[no-untyped-def]
    archive.services(TECH).store.ingest(_dummy(name="FALSE^NAME"))
    real = ct_series(ALICE, n=1, seed=3)[0]
    archive.operator.store.ingest(real)
    (study,) = archive.services(RAD).query.find_studies()
    assert study.uid == dataset_of(real).StudyInstanceUID and study.patient_name == ALICE.name
    assert {s.patient_name for s in archive.operator.query.find_studies()} == {ALICE.name, "FALSE^NAME"}


def test_conflicting_demographics_are_kept_apart_alerted_and_listed_for_the_officer(archive, events) -> None:  # type: ignore[no-untyped-def]
    archive.operator.store.ingest(ct_series(ALICE, n=1)[0])
    archive.services(TECH).store.ingest(_dummy(birth_date=ALICE.birth_date, name=ALICE.name, sex="M"))
    with read_session(archive.ctx.engine) as s:
        assert len(list(s.scalars(select(Patient.ref)))) == 2
    (alert,) = [e for e in events if isinstance(e, PatientIdentityConflict)]
    assert alert.fields == ("sex",) and "t.cardio" in alert.source
    # the audit trail holds a Security Alert naming the patient and the sender (what differs, no values)
    (record,) = [e for e in entries(archive) if "patient-identity-conflict" in (e.event_type or "").split()]
    assert record.message.patient_ids() == [ALICE.patient_id]
    assert "sex differ" in (record.message.outcome_description or "")
    # the officer lists it: references, fields, departments; no name or Patient ID
    (listed,) = archive.services(OFFICER).patients.conflicts()
    assert listed.fields == ["sex"] and listed.departments == ["CARDIOLOGY"] and listed.other_departments == [DEPARTMENT]
    assert ALICE.patient_id not in json.dumps(listed.to_json()) and ALICE.name not in json.dumps(listed.to_json())
    # a technologist may not
    with pytest.raises(AccessDenied):
        archive.services(TECH).patients.conflicts()


def test_same_demographics_join_one_patient_and_raise_nothing(archive, events) -> None:  # type: ignore[no-untyped-def]
    archive.operator.store.ingest(ct_series(ALICE, n=1)[0])
    # another study of the same patient, name written in lower case with a trailing empty component
    archive.operator.store.ingest(_dummy(name=ALICE.name.lower() + "^", birth_date=ALICE.birth_date, sex="F", seed=41))
    sexes = {dataset_of(ct_series(ALICE, n=1)[0]).PatientSex}
    assert sexes == {"F"}  # the factory's patients are F: the objects agree
    with read_session(archive.ctx.engine) as s:
        assert len(list(s.scalars(select(Patient.ref)))) == 1
        assert list(s.scalars(select(PatientConflict.id))) == []
    assert not [e for e in events if isinstance(e, PatientIdentityConflict)]


def test_reconciliation_is_recorded_with_its_reason_and_taken_once(archive) -> None:  # type: ignore[no-untyped-def]
    archive.operator.store.ingest(ct_series(ALICE, n=1)[0])
    archive.services(TECH).store.ingest(_dummy())
    listed = json.loads(runner.invoke(app, ["patient", "conflicts", "--json"], catch_exceptions=False).stdout)
    assert len(listed) == 1 and listed[0]["resolution"] is None
    conflict = listed[0]["id"]
    with pytest.raises(AccessDenied):  # a technologist cannot settle who a patient is
        archive.services(TECH).patients.resolve(conflict, Decision.DIFFERENT_PERSONS, "test object")
    r = runner.invoke(app, ["patient", "resolve", str(conflict), "--as", "different-persons", "--reason", "QA phantom sent with a real ID",
                            "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["resolution"] == "different-persons"
    (record,) = [e for e in entries(archive) if "patient-identity-resolved" in (e.event_type or "").split()]
    assert base64.b64encode(b"QA phantom sent with a real ID") in record.xml and record.message.patient_ids() == [ALICE.patient_id]
    again = runner.invoke(app, ["patient", "resolve", str(conflict), "--as", "same-person", "--reason", "changed my mind"])
    assert again.exit_code != 0 and "already resolved" in again.output
    assert json.loads(runner.invoke(app, ["patient", "conflicts", "--json"]).stdout) == []
    assert runner.invoke(app, ["patient", "resolve", "999", "--as", "same-person", "--reason", "x"]).exit_code != 0


def test_admin_may_reconcile(archive) -> None:  # type: ignore[no-untyped-def]
    archive.operator.store.ingest(ct_series(ALICE, n=1)[0])
    archive.services(TECH).store.ingest(_dummy())
    (c,) = archive.services(ADMIN).patients.conflicts()
    assert archive.services(ADMIN).patients.resolve(c.id, Decision.SAME_PERSON, "name corrected at the modality").resolution == "same-person"


def test_erasure_by_patient_id_reaches_every_kept_apart_row(archive) -> None:  # type: ignore[no-untyped-def]
    archive.operator.store.ingest(ct_series(ALICE, n=1)[0])
    archive.services(TECH).store.ingest(_dummy())
    result = archive.operator.erase.patient(ALICE.patient_id, "GDPR art. 17 request")
    assert len(result.patient_refs) == 2
    assert archive.operator.query.find_studies() == []
    with read_session(archive.ctx.engine) as s:  # no blind index of the identity or its demographics is left
        assert list(s.execute(select(Patient.identity_token, Patient.demographics_token))) == [(None, None), (None, None)]


def test_a_row_from_before_demographics_were_indexed_is_matched_and_indexed(archive) -> None:  # type: ignore[no-untyped-def]
    archive.operator.store.ingest(ct_series(ALICE, n=1)[0])
    with write_session(archive.ctx.engine) as s:
        s.execute(update(Patient).values(demographics_token=None))
    archive.ctx.patients.forget(next(iter(archive.ctx.patients._refs.values())))
    archive.operator.store.ingest(ct_series(ALICE, n=1, seed=9)[0])
    with read_session(archive.ctx.engine) as s:
        rows = list(s.execute(select(Patient.ref, Patient.demographics_token)))
    assert len(rows) == 1 and rows[0][1] is not None


def test_patient_level_counts_only_what_the_principal_may_see(archive) -> None:  # type: ignore[no-untyped-def]
    """NumberOfPatientRelated* (PS3.4 C.6.1.1.2) count visible studies only: no oracle of studies elsewhere."""
    archive.operator.store.ingest(ct_series(ALICE, n=1)[0])  # radiology
    for data in ct_series(ALICE, n=2, seed=12):
        ds = dataset_of(data)
        ds.InstitutionalDepartmentName = "CARDIOLOGY"
        archive.operator.store.ingest(to_bytes(ds))
    cardiologist = Principal(PrincipalKind.USER, "dr.heart", frozenset({"cardiologist"}), attributes={"department": "CARDIOLOGY"})
    (patient,) = archive.services(cardiologist).query.find_patients()
    assert (patient.patient_id, patient.studies, patient.instances) == (ALICE.patient_id, 1, 2)
    (everything,) = archive.operator.query.find_patients()
    assert (everything.studies, everything.instances) == (2, 3)


def test_two_storers_racing_with_different_demographics_for_a_new_id_raise_one_conflict(archive) -> None:  # type: ignore[no-untyped-def]
    """Concurrent first objects of one new Patient ID with different names: two rows, and the conflict is never missed."""
    import threading

    for round_ in range(4):
        patient_id = f"RACE-{round_}"
        objects = []
        for n, name in enumerate(("RACE^ONE", "RACE^TWO")):
            ds = dataset_of(_dummy(name=name, seed=60 + 2 * round_ + n))
            ds.PatientID = patient_id
            objects.append(to_bytes(ds))
        start = threading.Barrier(2)

        def store(data: bytes) -> None:
            start.wait()
            archive.operator.store.ingest(data)

        threads = [threading.Thread(target=store, args=(d,)) for d in objects]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    with read_session(archive.ctx.engine) as s:
        assert len(list(s.scalars(select(PatientConflict.id)))) == 4
