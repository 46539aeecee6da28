"""Series and instance searches across all studies read a page, not the archive (ADR 0014, amended).

QIDO-RS ``/series`` and ``/instances`` (and C-FIND at SERIES and IMAGE level) walk
the studies in storage order a batch at a time and stop once the page is full.
A page must be exactly the first rows of the whole search (the studies of
``find_studies``, each study's series by number, each series' instances by
number), studies the principal may not query must not shape the page or the
"more results" warning, a named series or instance must read its own study
only, and a first page must not decrypt the archive.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import pytest
from pydicom.uid import generate_uid

from dicomguard.core.access import Principal, PrincipalKind
from dicomguard.core.events import QueryPerformed
from dicomguard.core.matching import match_value
from dicomguard.core.query import IndexQuery, PatientFilter, SeriesRecord, StudyFilter
from dicomguard.web.qido import answer, search_instances, search_series
from dicomguard.web.qido_params import Level, parse_query
from tests.dicom_factory import DEPARTMENT, FakePatient, ct_series, dataset_of, to_bytes

RAD = Principal(PrincipalKind.USER, "dr.rad", frozenset({"radiologist"}), attributes={"department": DEPARTMENT})
STUDIES = 15


def _store_study(archive, n: int) -> str:  # type: ignore[no-untyped-def]
    """One study of two series: a CT of 2 instances, then (series number 2) 3 instances numbered 3, 1, 2, of modality
    MR in every fourth study and CT in the others."""
    patient = FakePatient(f"SPX{n:04d}", f"SERFAM{n % 3}^GIVEN{n}", "19700101", f"ACCSP{n:04d}")
    first = [dataset_of(d) for d in ct_series(patient, n=2, seed=n)]
    for ds in first:
        archive.operator.store.ingest(to_bytes(ds))
    second_uid = generate_uid()
    for number in (3, 1, 2):
        ds = dataset_of(to_bytes(first[0]))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = second_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber, ds.InstanceNumber = 2, number
        ds.Modality = "MR" if n % 4 == 0 else "CT"
        ds.SeriesDescription = f"SECOND {n}"
        archive.operator.store.ingest(to_bytes(ds))
    return str(first[0].StudyInstanceUID)


@pytest.fixture
def studies(archive):  # type: ignore[no-untyped-def]
    """:data:`STUDIES` studies; every third, from the third on, belongs to another department (hidden from RAD)."""
    uids = [_store_study(archive, n) for n in range(STUDIES)]
    for uid in uids[2::3]:
        archive.operator.studies.set_access(uid, department="CARDIOLOGY")
    return archive, uids


@pytest.fixture
def opened(monkeypatch) -> defaultdict[str, list[str]]:
    """Rows decrypted, in order, per table (``opened["studies"]``)."""
    rows: defaultdict[str, list[str]] = defaultdict(list)
    real = IndexQuery._open

    def counting(self, s, patient_ref, table, row_id, sealed):  # type: ignore[no-untyped-def]
        rows[table].append(row_id)
        return real(self, s, patient_ref, table, row_id, sealed)

    monkeypatch.setattr(IndexQuery, "_open", counting)
    return rows


def _order(i):  # type: ignore[no-untyped-def]
    return (i.number is None, i.number or 0, i.sop_instance_uid)


def _whole_series(query, flt: StudyFilter, modality: str | None = None,
                  accept_series: Callable[[SeriesRecord], bool] | None = None) -> list:  # type: ignore[no-untyped-def]
    """The reference: every visible study of the unpaged search, each with its series by number."""
    return [(st, se) for st in query.find_studies(flt) for se in query.find_series(st.uid, modality)
            if accept_series is None or accept_series(se)]


SERIES_SEARCHES = [
    (StudyFilter(), None, None),
    (StudyFilter(modality="MR"), "MR", None),
    (StudyFilter(modality="CT"), "CT", None),
    (StudyFilter(patient=PatientFilter(name="SERFAM1*")), None, None),
    (StudyFilter(), None, lambda se: se.number == 2),
    (StudyFilter(modality="OT"), "OT", None),
]


@pytest.mark.parametrize("want", [1, 2, 5, 11, 100])
def test_a_page_of_series_is_the_first_series_of_the_whole_search(studies, want: int) -> None:  # type: ignore[no-untyped-def]
    archive, _ = studies
    query = archive.services(RAD).query
    for flt, modality, accept_series in SERIES_SEARCHES:
        whole = _whole_series(query, flt, modality, accept_series)
        page = query.find_series_page(flt, want=want, modality=modality, accept_series=accept_series)
        assert page == whole[:want], (flt, modality)
    assert len(_whole_series(query, StudyFilter())) == 2 * 10  # 10 visible studies of 2 series


@pytest.mark.parametrize("want", [1, 3, 4, 9, 100])
def test_a_page_of_instances_is_the_first_instances_of_the_whole_search(studies, want: int) -> None:  # type: ignore[no-untyped-def]
    archive, _ = studies
    query = archive.services(RAD).query
    for flt, modality, accept_series in SERIES_SEARCHES:
        whole = [(st, se, i) for st, se in _whole_series(query, flt, modality, accept_series)
                 for i in sorted(query.find_instances(series_uid=se.uid), key=_order)]
        page = query.find_instances_page(flt, want=want, modality=modality, accept_series=accept_series)
        assert page == whole[:want], (flt, modality)
        if whole:
            assert [i.number for _, se, i in whole if se.number == 2][:3] == [1, 2, 3]  # by Instance Number, not storage


def test_modality_narrowing_finds_exactly_what_the_exact_match_finds(studies, opened) -> None:  # type: ignore[no-untyped-def]
    archive, uids = studies
    q = IndexQuery(archive.ctx)
    every = q.studies()
    for modality in ("CT", "MR", "OT", " MR ", "M?", "C*"):
        expected = [s.uid for s in every if any(match_value(modality, m) for m in s.modalities)]
        assert [s.uid for s in q.studies(StudyFilter(modality=modality))] == expected, modality
    # A rare modality is narrowed in the index: only the studies holding it are decrypted.
    opened.clear()
    mr = [s.uid for s in q.studies(StudyFilter(modality="MR"))]
    assert mr == uids[0::4] and sorted(opened["studies"]) == sorted(mr)


def test_hidden_studies_neither_fill_the_page_nor_announce_more(studies) -> None:  # type: ignore[no-untyped-def]
    archive, uids = studies
    hidden = set(uids[2::3])
    query = archive.services(RAD).query

    def series_search(client, q, want):  # type: ignore[no-untyped-def]
        return search_series(client, q, None, want)

    def instance_search(client, q, want):  # type: ignore[no-untyped-def]
        return search_instances(client, q, None, None, want)

    levels = {Level.STUDY, Level.SERIES}
    page, more = answer(query, parse_query([("limit", "3")], levels), "SERIES", series_search)
    assert len(page) == 3 and more and all(r.study and r.study.uid not in hidden for r in page)
    whole, more = answer(query, parse_query([("limit", "1000")], levels), "SERIES", series_search)
    assert not more and len(whole) == 20 and {r.study.uid for r in whole if r.study} == set(uids) - hidden
    assert uids[-1] in hidden  # the archive's last study is hidden: the last visible series is the end
    page, more = answer(query, parse_query([("limit", "5"), ("offset", "18")], levels), "SERIES", series_search)
    assert [r.series.uid for r in page if r.series] == [r.series.uid for r in whole[18:] if r.series] and not more
    page, more = answer(query, parse_query([("limit", "5"), ("offset", "20")], levels), "SERIES", series_search)
    assert page == [] and not more

    levels = {Level.STUDY, Level.SERIES, Level.INSTANCE}
    whole, more = answer(query, parse_query([("limit", "1000")], levels), "IMAGE", instance_search)
    assert not more and len(whole) == 50 and not {r.study.uid for r in whole if r.study} & hidden
    page, more = answer(query, parse_query([("limit", "7"), ("offset", "45")], levels), "IMAGE", instance_search)
    assert [r.instance.sop_instance_uid for r in page if r.instance] == [r.instance.sop_instance_uid for r in whole[45:] if r.instance]
    assert len(page) == 5 and not more


def test_a_first_page_across_all_studies_does_not_decrypt_the_archive(studies, opened) -> None:  # type: ignore[no-untyped-def]
    archive, _ = studies
    query = archive.services(RAD).query
    page, _ = answer(query, parse_query([("limit", "2")], {Level.STUDY, Level.SERIES}), "SERIES",
                     lambda c, q, want: search_series(c, q, None, want))
    assert len(page) == 2 and len(opened["studies"]) <= 4  # the first batch of studies, not 15
    opened.clear()
    page, _ = answer(query, parse_query([("limit", "2")], {Level.STUDY, Level.SERIES, Level.INSTANCE}), "IMAGE",
                     lambda c, q, want: search_instances(c, q, None, None, want))
    assert len(page) == 2 and len(opened["studies"]) <= 4


def _by_uid(archive, principal, level: str, params: list[tuple[str, str]]) -> list:  # type: ignore[no-untyped-def]
    query = archive.services(principal).query
    if level == "SERIES":
        page, more = answer(query, parse_query(params, {Level.STUDY, Level.SERIES}), "SERIES",
                            lambda c, q, want: search_series(c, q, None, want))
    else:
        page, more = answer(query, parse_query(params, {Level.STUDY, Level.SERIES, Level.INSTANCE}), "IMAGE",
                            lambda c, q, want: search_instances(c, q, None, None, want))
    assert not more
    return page


def test_a_named_series_or_instance_reads_its_study_only(studies, opened) -> None:  # type: ignore[no-untyped-def]
    archive, uids = studies
    q = IndexQuery(archive.ctx)
    target = uids[4]
    series = q.series(study_uid=target)
    instance = q.instances(series_uid=series[1].uid)[0]
    opened.clear()
    page = _by_uid(archive, RAD, "SERIES", [("SeriesInstanceUID", series[1].uid)])
    assert [(r.study.uid, r.series.uid) for r in page if r.study and r.series] == [(target, series[1].uid)]
    assert set(opened["studies"]) == {target}
    opened.clear()
    page = _by_uid(archive, RAD, "IMAGE", [("SOPInstanceUID", instance.sop_instance_uid)])
    assert [r.instance.sop_instance_uid for r in page if r.instance] == [instance.sop_instance_uid] and set(opened["studies"]) == {target}
    # A list of UIDs (PS3.4 C.2.2.2.2) names several studies; another study's UID as well leaves nothing.
    other = q.series(study_uid=uids[6])[0]
    page = _by_uid(archive, RAD, "SERIES", [("SeriesInstanceUID", f"{series[0].uid}\\{other.uid}")])
    assert {r.series.uid for r in page if r.series} == {series[0].uid, other.uid}
    assert _by_uid(archive, RAD, "SERIES", [("SeriesInstanceUID", series[0].uid), ("StudyInstanceUID", uids[6])]) == []


def test_a_hidden_series_answers_like_one_that_does_not_exist(studies, events) -> None:  # type: ignore[no-untyped-def]
    archive, uids = studies
    q = IndexQuery(archive.ctx)
    hidden = q.series(study_uid=uids[2])[0]
    hidden_instance = q.instances(series_uid=hidden.uid)[0]
    unknown = generate_uid()
    for level, key, uid in (("SERIES", "SeriesInstanceUID", hidden.uid), ("IMAGE", "SOPInstanceUID", hidden_instance.sop_instance_uid),
                            ("IMAGE", "SeriesInstanceUID", hidden.uid)):
        assert _by_uid(archive, RAD, level, [(key, uid)]) == _by_uid(archive, RAD, level, [(key, unknown)]) == []


def test_a_share_link_limited_to_one_series_sees_that_series_across_all_studies(studies) -> None:  # type: ignore[no-untyped-def]
    archive, uids = studies
    q = IndexQuery(archive.ctx)
    shared = q.series(study_uid=uids[1])[1]
    recipient = Principal.share("link-1", studies=[uids[1]], series=[shared.uid])
    query = archive.services(recipient).query
    assert [(st.uid, se.uid) for st, se in query.find_series_page(want=100)] == [(uids[1], shared.uid)]
    assert {i.series_uid for _, _, i in query.find_instances_page(want=100)} == {shared.uid}
    assert len(query.find_instances_page(want=100)) == 3


def test_the_query_record_counts_the_rows_answered(studies, events) -> None:  # type: ignore[no-untyped-def]
    archive, _ = studies
    query = archive.services(RAD).query
    events.clear()
    page, _ = answer(query, parse_query([("limit", "3"), ("Modality", "CT"), ("includefield", "PatientBirthDate")],
                                        {Level.STUDY, Level.SERIES}), "SERIES", lambda c, q, want: search_series(c, q, None, want))
    recorded = [e for e in events if isinstance(e, QueryPerformed)]
    assert len(recorded) == 1 and recorded[0].results == len(page) == 3 and recorded[0].level == "SERIES"
    assert ("Modality", "CT") in recorded[0].keys
    assert all(r.patient is not None and r.patient.birth_date == "19700101" for r in page)


@pytest.mark.parametrize("want", [1, 2, 5, 100])
def test_a_page_of_patients_is_the_first_patients_of_the_whole_search(studies, want: int, opened) -> None:  # type: ignore[no-untyped-def]
    """Patient level (C-FIND PATIENT): the first patients of ``find_patients``, counted over visible studies only,
    read a batch of patients at a time."""
    archive, uids = studies
    # Patient 1 gets a second study in another department: one visible study of 5 instances, one hidden.
    patient = FakePatient("SPX0001", "SERFAM1^GIVEN1", "19700101", "ACCSPX2")
    extra = dataset_of(ct_series(patient, n=1, seed=999)[0])
    archive.operator.store.ingest(to_bytes(extra))
    archive.operator.studies.set_access(str(extra.StudyInstanceUID), department="CARDIOLOGY")
    query = archive.services(RAD).query
    for flt in (PatientFilter(), PatientFilter(name="SERFAM1*"), PatientFilter(patient_id="SPX0001")):
        whole = query.find_patients(flt)
        assert query.find_patients_page(flt, want=want) == whole[:want], flt
    (one,) = query.find_patients(PatientFilter(patient_id="SPX0001"))
    assert (one.studies, one.instances) == (1, 5)
    assert len(query.find_patients(PatientFilter())) == 10  # the 5 patients with only a hidden study do not exist for RAD

    opened.clear()
    assert len(query.find_patients_page(PatientFilter(), want=2)) == 2
    assert len(opened["patients"]) <= 4  # the first batch of patients, not 15
