"""Study searches read a page, not the archive: the Study Date blind index and paged study listings (ADR 0014).

Narrowing by blind indexes must never change what a search finds (every candidate
is still matched exactly once decrypted), a page must be exactly the first studies
of the full search, studies the principal may not query must not shape the page
(nor the "more results" warning), and a first page must not decrypt the archive.
"""

from __future__ import annotations

import pytest
from sqlalchemy import update

from dicomguard.core.access import Principal, PrincipalKind
from dicomguard.core.events import QueryPerformed
from dicomguard.core.matching import match_range
from dicomguard.core.query import IndexQuery, PatientFilter, StudyFilter
from dicomguard.core.study_dates import MAX_RANGE_DAYS, calendar_day, study_date_token
from dicomguard.index.db import write_session
from dicomguard.index.models import Study
from dicomguard.web.qido import answer, search_studies
from dicomguard.web.qido_params import Level, parse_query
from tests.dicom_factory import DEPARTMENT, FakePatient, ct_series, dataset_of, to_bytes

RAD = Principal(PrincipalKind.USER, "dr.rad", frozenset({"radiologist"}), attributes={"department": DEPARTMENT})

DATES = ["20240305", "20240306", "20240311", "20231231", "20240101", "20250228", "20240229", "2024", "20240230", "",
         "20230615", "20240305", "20240312", "20220101", "19991231"]
"""Study Dates of the generated studies: calendar dates, and values that are not (a year alone, 30 February, none)."""


def _store(archive, n: int, date: str) -> str:  # type: ignore[no-untyped-def]
    patient = FakePatient(f"PGX{n:04d}", f"PAGEFAM{n % 3}^GIVEN{n}", "19700101", f"ACCPG{n:04d}")
    ds = dataset_of(ct_series(patient, n=1, seed=n)[0])
    ds.StudyDate = date
    archive.operator.store.ingest(to_bytes(ds))
    return str(ds.StudyInstanceUID)


@pytest.fixture
def paged(archive):  # type: ignore[no-untyped-def]
    """45 studies: 3 rounds of :data:`DATES`; every third study, from the third on, belongs to another department (hidden from RAD)."""
    uids = [_store(archive, n, DATES[n % len(DATES)]) for n in range(45)]
    for uid in uids[2::3]:
        archive.operator.studies.set_access(uid, department="CARDIOLOGY")
    return archive, uids


PATTERNS = [
    "20240305", "20240230", "2024", "19991231", "20240305-20240311", "20240101-20241231", "20231231-20240101",
    "20240229-20240301", "20240311-20240305", "-20231231", "20240306-", "2024-2025", "20220101-20250228", "19000101-20991231",
    "202403-202403", "20240305-20240305",
]


@pytest.mark.parametrize("legacy", [False, True], ids=["tokens", "rows-without-tokens"])
def test_date_narrowing_finds_exactly_what_the_exact_match_finds(paged, legacy: bool) -> None:  # type: ignore[no-untyped-def]
    archive, _ = paged
    if legacy:  # rows stored before the day index existed: narrowed by their year only
        with write_session(archive.ctx.engine) as s:
            s.execute(update(Study).values(study_date_token=None))
    q = IndexQuery(archive.ctx)
    every = q.studies()
    assert len(every) == 45
    for pattern in PATTERNS:
        expected = [s.uid for s in every if match_range(pattern, s.date)]
        assert [s.uid for s in q.studies(StudyFilter(study_date=pattern))] == expected, pattern
        assert [s.uid for b in q.study_batches(StudyFilter(study_date=pattern), first=2) for s in b] == expected, pattern


def test_day_tokens_are_stored_for_calendar_dates_only(paged) -> None:  # type: ignore[no-untyped-def]
    archive, uids = paged
    with archive.ctx.engine.connect() as c:
        stored = dict(c.execute(Study.__table__.select().with_only_columns(Study.uid, Study.study_date_token)).all())
    for n, uid in enumerate(uids):
        date = DATES[n % len(DATES)]
        assert stored[uid] == study_date_token(archive.ctx.indexer, date)
        assert (stored[uid] is None) == (calendar_day(date) is None), date
    assert calendar_day("20240230") is None and calendar_day("2024031") is None and calendar_day("２０２４０３０５") is None


def test_a_long_range_is_narrowed_by_year_and_still_exact(paged) -> None:  # type: ignore[no-untyped-def]
    archive, _ = paged
    q = IndexQuery(archive.ctx)
    pattern = "20230101-20250101"
    assert MAX_RANGE_DAYS < 731
    assert {s.date for s in q.studies(StudyFilter(study_date=pattern))} == {d for d in DATES if match_range(pattern, d)}


@pytest.mark.parametrize("want", [1, 2, 5, 13, 29, 100])
def test_a_page_is_the_first_studies_of_the_whole_search(paged, want: int) -> None:  # type: ignore[no-untyped-def]
    archive, _ = paged
    query = archive.services(RAD).query
    for flt, accept in [
        (StudyFilter(), None),
        (StudyFilter(study_date="20240101-20241231"), None),
        (StudyFilter(patient=PatientFilter(name="PAGEFAM1*")), None),
        (StudyFilter(), lambda s: s.patient_id.endswith(("1", "4", "7"))),
    ]:
        whole = [s for s in query.find_studies(flt) if accept is None or accept(s)]
        assert query.find_studies_page(flt, want=want, accept=accept) == whole[:want]


def test_hidden_studies_neither_fill_the_page_nor_announce_more(paged) -> None:  # type: ignore[no-untyped-def]
    archive, uids = paged
    hidden = set(uids[2::3])
    visible = [u for u in uids if u not in hidden]
    query = archive.services(RAD).query
    page, more = answer(query, parse_query([("limit", "10")], {Level.STUDY}), "STUDY", search_studies)
    assert [r.study.uid for r in page if r.study] == visible[:10] and more
    # The last visible study is the end: hidden studies after it answer as if they did not exist.
    last = len(visible) - 1
    page, more = answer(query, parse_query([("limit", "5"), ("offset", str(last))], {Level.STUDY}), "STUDY", search_studies)
    assert [r.study.uid for r in page if r.study] == visible[last:] and not more
    assert uids[-1] in hidden  # a hidden study does come after the last visible one
    page, more = answer(query, parse_query([("limit", "5"), ("offset", str(len(visible)))], {Level.STUDY}), "STUDY", search_studies)
    assert page == [] and not more


def test_the_query_record_counts_the_rows_answered(paged, events) -> None:  # type: ignore[no-untyped-def]
    archive, _ = paged
    query = archive.services(RAD).query
    events.clear()
    page, _ = answer(query, parse_query([("limit", "4"), ("includefield", "PatientBirthDate")], {Level.STUDY}), "STUDY",
                     search_studies)
    recorded = [e for e in events if isinstance(e, QueryPerformed)]
    assert len(recorded) == 1 and recorded[0].results == len(page) == 4
    assert all(r.patient is not None and r.patient.birth_date == "19700101" for r in page)


def test_a_first_page_does_not_decrypt_the_archive(paged, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    archive, _ = paged
    opened: list[str] = []
    real = IndexQuery._open

    def counting(self, s, patient_ref, table, row_id, sealed):  # type: ignore[no-untyped-def]
        if table == "studies":
            opened.append(row_id)
        return real(self, s, patient_ref, table, row_id, sealed)

    monkeypatch.setattr(IndexQuery, "_open", counting)
    query = archive.services(RAD).query
    query.find_studies()
    assert len(opened) == 30  # the unpaged search decrypts every study the policies can permit, not the other department's 15
    opened.clear()
    assert len(query.find_studies_page(StudyFilter(), want=3)) == 3
    assert len(opened) <= 15  # a batch of 5, then of 10 at most: a page's worth, not the archive
    opened.clear()
    page, _ = answer(query, parse_query([("limit", "2")], {Level.STUDY}), "STUDY", search_studies)
    assert len(page) == 2 and len(opened) <= 15
