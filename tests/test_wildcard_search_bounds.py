"""Leading-wildcard searches narrow by suffix indexes, and no search reads more than its candidate budget (ADR 0017).

Narrowing must never change what a search finds: every pattern here is checked
against the exact match over every study, with suffix indexes, without them
(rows written before migration 0019) and after ``index backfill``. The budget
(``limits.max_search_candidates``) is observed through what it refuses: a search
narrowed to few candidates answers under a budget of 3, one that would read the
archive is refused whole, recorded with 0 results (QIDO-RS answers 413:
``tests/web/test_qido_search_bounds.py``).
"""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select, update

from dicomguard.core.access import AccessDenied, Principal, PrincipalKind
from dicomguard.core.events import QueryPerformed, SecurityConfigurationChanged
from dicomguard.core.matching import match_value
from dicomguard.core.query import IndexQuery, PatientFilter, StudyFilter
from dicomguard.core.wildcard_tokens import SUFFIX_TOKENS_KEY, suffix_tokens_complete
from dicomguard.crypto.blind_index import BlindField
from dicomguard.errors import SearchTooBroad
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import ArchiveMeta, PatientToken, Study
from tests.dicom_factory import DEPARTMENT, FakePatient, ct_series, dataset_of, to_bytes

RAD = Principal(PrincipalKind.USER, "dr.rad", frozenset({"radiologist"}), attributes={"department": DEPARTMENT})

NAMES = ["SMITH^JOHN", "GOLDSMITH^ANNA", "smith^jo", "DOE^JANE^^", "O'NEIL^K", "MÜLLER^JÜRGEN", "STRAẞE^X", "Y^BAKER\u212a",
         "LI", "NGUYEN^VAN^THI^^", "DOE", "SMITHSON^JOHN"]
"""Patient's Names of the generated studies: shared suffixes, lower case, trailing separators, non-ASCII upper cases
(ẞ, and U+212A KELVIN SIGN, which a case-insensitive regex matches to ``k`` but which is its own upper case)."""

PATTERNS = ["*SMITH^JOHN", "*JOHN", "*john", "*N", "*^K", "*K", "*k", "*JÜRGEN", "*jürgen", "*SSE^X", "*ẞE^X", "*Y",
            "*AN^THI", "*THI^^", "*JANE^", "*E", "*LI", "*I", "*?", "*", "*SMITH*", "*MI?H^JO*", "S*N", "DOE*", "*DOE",
            "*^", "* JOHN", "*ZZZZ", "*ITH^JOHN", "G*SMITH^ANNA", "*OLDSMITH^ANNA"]


def _store(archive, n: int, name: str) -> None:  # type: ignore[no-untyped-def]
    ds = dataset_of(ct_series(FakePatient(f"WC{n:04d}X{n % 3}", name, "19700101", f"ACCWC{n:04d}"), n=1, seed=n)[0])
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: every name above (set again under it)
    ds.PatientName = name
    archive.operator.store.ingest(to_bytes(ds))


@pytest.fixture
def named(archive):  # type: ignore[no-untyped-def]
    for n, name in enumerate(NAMES):
        _store(archive, n, name)
    return archive


def _forget_suffixes(archive) -> None:  # type: ignore[no-untyped-def]
    """The archive as an earlier version left it: no suffix indexes, not marked complete."""
    with write_session(archive.ctx.engine) as s:
        s.execute(delete(PatientToken).where(PatientToken.field.in_([int(BlindField.PATIENT_ID_SUFFIX), int(BlindField.PATIENT_NAME_SUFFIX)])))
        s.execute(delete(ArchiveMeta).where(ArchiveMeta.key == SUFFIX_TOKENS_KEY))
    archive.ctx.suffix_tokens_complete = False


def _suffix_rows(archive) -> int:  # type: ignore[no-untyped-def]
    with read_session(archive.ctx.engine) as s:
        return s.scalar(select(func.count()).select_from(PatientToken).where(
            PatientToken.field.in_([int(BlindField.PATIENT_ID_SUFFIX), int(BlindField.PATIENT_NAME_SUFFIX)]))) or 0


def _check_every_pattern(archive) -> None:  # type: ignore[no-untyped-def]
    q = IndexQuery(archive.ctx)
    every = q.studies()
    assert len(every) == len(NAMES)
    for pattern in PATTERNS:
        expected = [s.uid for s in every if match_value(pattern, s.patient_name, person_name=True)]
        f = StudyFilter(patient=PatientFilter(name=pattern))
        assert [s.uid for s in q.studies(f)] == expected, pattern
        assert [s.uid for b in q.study_batches(f, first=2) for s in b] == expected, pattern
        assert [p.ref for p in q.patients(f.patient)] == [p.ref for p in q.patients() if match_value(pattern, p.name, person_name=True)]
    # Patient IDs too: the suffix of an ID (the last digits of an MRN) narrows like a name's.
    for pattern in ("*X1", "*1X1", "*0001X1", "*X?", "WC*X2", "*00*"):
        expected = [s.uid for s in every if match_value(pattern, s.patient_id)]
        assert [s.uid for s in q.studies(StudyFilter(patient=PatientFilter(patient_id=pattern)))] == expected, pattern


def test_suffix_narrowing_finds_exactly_what_the_exact_match_finds(named) -> None:  # type: ignore[no-untyped-def]
    with read_session(named.ctx.engine) as s:
        assert suffix_tokens_complete(s)  # a new archive is complete from its first patient on (migration 0019)
    assert _suffix_rows(named) > 0
    _check_every_pattern(named)


def test_rows_without_suffix_indexes_are_still_found_then_backfilled(named, events) -> None:  # type: ignore[no-untyped-def]
    written = _suffix_rows(named)
    _forget_suffixes(named)
    with write_session(named.ctx.engine) as s:  # and studies stored before the Study Date index (migration 0016)
        s.execute(update(Study).values(study_date_token=None))
    _check_every_pattern(named)  # narrowed by their other keys only: the same results

    done = named.operator.index_maintenance.backfill(batch=5)  # several batches
    assert (done.patients, done.studies, done.unreadable) == (len(NAMES), len(NAMES), 0)
    assert _suffix_rows(named) == written  # the very indexes ingest writes
    with read_session(named.ctx.engine) as s:
        assert suffix_tokens_complete(s)
        assert s.scalar(select(func.count()).select_from(Study).where(Study.study_date_token.is_(None))) == 0
    _check_every_pattern(named)
    recorded = [e for e in events if isinstance(e, SecurityConfigurationChanged)]
    assert len(recorded) == 1 and recorded[0].subject == "archive:index" and f"{len(NAMES)} patient rows" in recorded[0].change

    again = named.operator.index_maintenance.backfill()  # idempotent: nothing doubled
    assert (again.patients, again.studies) == (0, 0)
    assert _suffix_rows(named) == written


def test_only_a_principal_the_policy_permits_may_backfill(named, events) -> None:  # type: ignore[no-untyped-def]
    _forget_suffixes(named)
    radiologist = named.services(RAD).index_maintenance
    with pytest.raises(AccessDenied):
        radiologist.backfill()
    assert _suffix_rows(named) == 0  # nothing indexed, and the refusal is recorded
    assert any(type(e).__name__ == "AccessRefused" and e.action.value == "index-maintain" for e in events)


def _with_budget(archive, budget: int) -> None:  # type: ignore[no-untyped-def]
    archive.ctx.settings = archive.settings.model_copy(
        update={"limits": archive.settings.limits.model_copy(update={"max_search_candidates": budget})})


def test_a_search_past_its_candidate_budget_is_refused_whole_and_recorded(named, events) -> None:  # type: ignore[no-untyped-def]
    _with_budget(named, 3)
    query = named.services(RAD).query
    # Narrowed by a suffix index to one patient: answers under a budget of 3 candidates.
    assert [s.patient_name for s in query.find_studies(StudyFilter(patient=PatientFilter(name="*OLDSMITH^ANNA")))] == ["GOLDSMITH^ANNA"]
    assert [s.patient_name for s in query.find_studies_page(StudyFilter(patient=PatientFilter(name="*SMITH^ANNA")), want=10)] \
        == ["GOLDSMITH^ANNA"]
    # An infix pattern has no index: it would read every study, and is refused before any match is returned.
    events.clear()
    for search in (lambda: query.find_studies(StudyFilter(patient=PatientFilter(name="*MIT*"))),
                   lambda: query.find_studies_page(StudyFilter(patient=PatientFilter(name="*MIT*")), want=10),
                   lambda: query.find_series_page(StudyFilter(patient=PatientFilter(name="*MIT*")), want=10),
                   lambda: query.find_instances_page(StudyFilter(patient=PatientFilter(name="*MIT*")), want=10),
                   lambda: query.find_patients(PatientFilter(name="*MIT*")),
                   lambda: query.find_patients_page(PatientFilter(name="*MIT*"), want=10)):
        with pytest.raises(SearchTooBroad, match="more than 3 candidate records: narrow it"):
            search()
    recorded = [e for e in events if isinstance(e, QueryPerformed)]
    assert [(e.level, e.results) for e in recorded] == [("STUDY", 0), ("STUDY", 0), ("SERIES", 0), ("IMAGE", 0), ("PATIENT", 0),
                                                        ("PATIENT", 0)]
    assert all(dict(e.keys).get("PatientName") == "*MIT*" for e in recorded)
    # A page that fills within the budget answers even though more would match: the first page of everything.
    assert len(query.find_studies_page(StudyFilter(), want=2)) == 2
    # ... and a deep page (a large offset) is what would exceed it.
    with pytest.raises(SearchTooBroad):
        query.find_studies_page(StudyFilter(), want=4)



def test_a_page_deeper_than_the_budget_is_refused_before_any_candidate_is_opened(named, events, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    opened: list[str] = []
    real_open = IndexQuery._open

    def counting_open(self, s, patient_ref, table, row_id, sealed):  # type: ignore[no-untyped-def]
        opened.append(row_id)
        return real_open(self, s, patient_ref, table, row_id, sealed)

    monkeypatch.setattr(IndexQuery, "_open", counting_open)
    query = named.services(RAD).query
    # The whole archive (12 studies, 12 patients) fits a budget of 12: a page past its end answers, empty, not refused.
    _with_budget(named, len(NAMES))
    assert len(query.find_studies_page(StudyFilter(), want=len(NAMES) + 5)) == len(NAMES) and opened
    assert len(query.find_patients_page(PatientFilter(), want=len(NAMES) + 5)) == len(NAMES)
    # Under a budget of 4, a page needing 5 or more candidates cannot be answered: refused before anything is decrypted.
    _with_budget(named, 4)
    opened.clear()
    events.clear()
    with pytest.raises(SearchTooBroad, match="more than 4 candidate records"):
        query.find_studies_page(StudyFilter(), want=5)
    with pytest.raises(SearchTooBroad, match="more than 4 candidate records"):
        query.find_patients_page(PatientFilter(), want=50)
    assert opened == []
    assert [(e.level, e.results) for e in events if isinstance(e, QueryPerformed)] == [("STUDY", 0), ("PATIENT", 0)]
    # A page within the budget still reads candidates and answers.
    assert len(query.find_studies_page(StudyFilter(), want=4)) == 4 and opened
