"""Queries over the encrypted index: exact, wildcard, case-insensitive names, ranges (PS3.4 C.2.2.2)."""

from __future__ import annotations

import pytest

from dicomguard.core.matching import match_range, match_uid_list, match_value
from dicomguard.core.query import IndexQuery, PatientFilter, StudyFilter
from tests.dicom_factory import ALICE, BOB, CAROL, ct_series, dataset_of, to_bytes, us_multiframe


@pytest.fixture
def loaded(archive):
    for d in ct_series(ALICE, n=2):
        archive.operator.store.ingest(d)
    archive.operator.store.ingest(us_multiframe(BOB))
    ds = dataset_of(ct_series(CAROL, n=1, seed=4)[0])
    ds.StudyDate = "20230110"
    archive.operator.store.ingest(to_bytes(ds))
    return archive


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (PatientFilter(), {ALICE, BOB, CAROL}),
        (PatientFilter(patient_id=ALICE.patient_id), {ALICE}),
        (PatientFilter(patient_id="PIDQX*"), {ALICE, BOB, CAROL}),
        (PatientFilter(patient_id="PIDQX88*"), {BOB}),
        (PatientFilter(patient_id="*CHARLIE"), {CAROL}),
        (PatientFilter(patient_id="PIDQX?731ALPHA"), {ALICE}),
        (PatientFilter(patient_id="PIDQX7731"), set()),  # exact match is exact
        (PatientFilter(name="ZEBRAFINCH^ALICIANNA"), {ALICE}),
        (PatientFilter(name="zebrafinch^alicianna"), {ALICE}),  # PN: case-insensitive
        (PatientFilter(name="MAR*"), {BOB}),
        (PatientFilter(name="ma*"), {BOB}),
        (PatientFilter(name="*CAROL*"), {CAROL}),
        (PatientFilter(name="ZEBRAFINCH"), set()),
        (PatientFilter(name="ZEBRAFINCH*"), {ALICE}),
        (PatientFilter(birth_date="19610417"), {ALICE}),
        (PatientFilter(birth_date="19700101-19851231"), {BOB}),
        (PatientFilter(birth_date="-19700101"), {ALICE}),
        (PatientFilter(patient_id="PIDQX*", name="OCE*"), {CAROL}),
    ],
)
def test_patient_matching(loaded, flt, expected) -> None:
    got = {p.patient_id for p in IndexQuery(loaded.ctx).patients(flt)}
    assert got == {p.patient_id for p in expected}


def test_study_level_filters(loaded) -> None:
    q = IndexQuery(loaded.ctx)
    assert {s.patient_id for s in q.studies(StudyFilter(accession_number=BOB.accession))} == {BOB.patient_id}
    assert {s.patient_id for s in q.studies(StudyFilter(accession_number="ACCQ7*"))} == {CAROL.patient_id}
    assert {s.patient_id for s in q.studies(StudyFilter(study_date="20230101-20231231"))} == {CAROL.patient_id}
    assert {s.patient_id for s in q.studies(StudyFilter(study_date="20240305"))} == {ALICE.patient_id, BOB.patient_id}
    assert {s.patient_id for s in q.studies(StudyFilter(modality="US"))} == {BOB.patient_id}
    uid = q.studies(StudyFilter(patient=PatientFilter(patient_id=ALICE.patient_id)))[0].uid
    assert [s.uid for s in q.studies(StudyFilter(study_uid=f"1.2.3\\{uid}"))] == [uid]
    st = q.studies(StudyFilter(study_uid=uid))[0]
    assert (st.series, st.instances, st.modalities, st.accession_number) == (1, 2, ["CT"], ALICE.accession)


def test_series_and_instances(loaded) -> None:
    q = IndexQuery(loaded.ctx)
    study = q.studies(StudyFilter(patient=PatientFilter(name="ZEBRA*")))[0]
    (series,) = q.series(study_uid=study.uid)
    assert series.modality == "CT" and series.instances == 2 and series.description == "AXIAL"
    insts = q.instances(series_uid=series.uid)
    assert [i.number for i in insts] == [1, 2]
    assert all(i.rows == 64 and i.columns == 64 for i in insts)


@pytest.mark.parametrize(
    ("pattern", "value", "pn", "result"),
    [
        ("", "anything", False, True),
        ("*", "", False, True),
        ("AB?D", "ABCD", False, True),
        ("AB?D", "ABD", False, False),
        ("A*D", "AxxxD", False, True),
        ("a*", "ABC", False, False),  # case-sensitive outside PN
        ("a*", "ABC", True, True),
        ("DOE^JOHN", "DOE^JOHN^^^", True, True),  # trailing empty components
        ("A.B", "AxB", False, False),  # regex metacharacters are literal
    ],
)
def test_match_value(pattern, value, pn, result) -> None:
    assert match_value(pattern, value, person_name=pn) is result


def test_ranges_and_uid_lists() -> None:
    assert match_range("20200101-20201231", "20200615")
    assert not match_range("20200101-20201231", "20210101")
    assert match_range("-20200101", "19991231") and match_range("20200101-", "20990101")
    assert not match_range("20200101-", "")
    assert match_uid_list("1.2\\1.3", "1.3") and not match_uid_list("1.2\\1.3", "1.4")


def test_counts_are_the_same_whether_counted_per_match_or_over_the_archive(archive, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Few matches: series and instances are counted for the matched studies only; many: once over the archive."""
    from dicomguard.core import query as index_query
    from dicomguard.core.query import PatientFilter, StudyFilter
    from tests.dicom_factory import ALICE, BOB, ct_series

    for data in ct_series(ALICE, n=3, seed=41) + ct_series(BOB, n=2, seed=42):
        archive.operator.store.ingest(data)
    q = archive.operator.query

    def snapshot():  # type: ignore[no-untyped-def]
        studies = sorted((s.uid, s.series, s.instances, tuple(s.modalities)) for s in q.find_studies(StudyFilter()))
        patients = sorted((p.patient_id, p.studies, p.instances) for p in q.find_patients(PatientFilter()))
        one = [(s.series, s.instances) for s in q.find_studies(StudyFilter(patient=PatientFilter(patient_id=ALICE.patient_id)))]
        return studies, patients, one

    per_match = snapshot()
    monkeypatch.setattr(index_query, "WHOLE_ARCHIVE_ABOVE", 0)
    assert snapshot() == per_match
    studies, patients, one = per_match
    assert sorted(s[1:3] for s in studies) == [(1, 2), (1, 3)] and all(s[3] == ("CT",) for s in studies)
    assert sorted(p[1:] for p in patients) == [(1, 2), (1, 3)] and one == [(1, 3)]
