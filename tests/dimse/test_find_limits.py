"""C-FIND is bounded: more than ``limits.max_find_results`` matches is refused, not truncated, with real findscu.

DIMSE has no paging, so a query that matches more than the limit is answered
"Refused: Out of Resources" (A700, PS3.4 C.4.1.1.4) with the reason in the
Error Comment and no match at all: a silently cut list would pass for the whole
worklist. A query within the limit, and a narrow one over a large archive,
answer as before. The refusal is still one Query record (0 results).
"""

from __future__ import annotations

import pytest

from dicomguard.core.events import QueryPerformed
from dicomguard.core.query import IndexQuery
from tests.dicom_factory import ALICE, BOB, CAROL, ct_series
from tests.dimse.conftest import dcmtk
from tests.dimse.test_dimse_dcmtk import _find

pytestmark = pytest.mark.slow  # real dcmtk peers over TLS

LIMIT = 4


@pytest.fixture
def limited(archive, request):  # type: ignore[no-untyped-def]
    """Three patients' CT studies of 2 instances each, and a DIMSE listener that answers at most :data:`LIMIT` matches."""
    for patient in (ALICE, BOB, CAROL):
        for data in ct_series(patient, n=2):
            archive.operator.store.ingest(data, source="test")
    archive.ctx.settings = archive.settings.model_copy(
        update={"limits": archive.settings.limits.model_copy(update={"max_find_results": LIMIT})})
    return request.getfixturevalue("dimse")  # started only now: the listener reads the limit when it starts


def _refused(creds, port: int, level: str, keys: dict[str, str]) -> str:  # type: ignore[no-untyped-def]
    args = ["-S", "-k", f"QueryRetrieveLevel={level}", *(a for k, v in keys.items() for a in ("-k", f"{k}={v}"))]
    r = dcmtk("findscu", creds, port, "-d", *args)  # -d prints the response status and its Error Comment
    return r.stdout + r.stderr


def test_a_find_over_the_limit_is_refused_whole_and_one_within_answers(archive, limited, issue, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pacs = issue("PACS", ("echo", "query"))
    seen: list[QueryPerformed] = []
    archive.ctx.bus.subscribe(lambda s, e: seen.append(e) if isinstance(e, QueryPerformed) else None)

    # 3 studies, 3 series: within the limit, every match.
    assert len(_find(pacs, limited.port, "STUDY", {"StudyInstanceUID": "", "PatientID": ""}, tmp_path / "s")) == 3
    assert len(_find(pacs, limited.port, "SERIES", {"SeriesInstanceUID": "", "Modality": "CT"}, tmp_path / "se")) == 3
    # 6 instances across all studies: over the limit, refused as a whole with the reason; nothing was sent.
    seen.clear()
    out = _refused(pacs, limited.port, "IMAGE", {"SOPInstanceUID": ""})
    assert "0xa700: Refused: Out of resources" in out, out
    assert f"more than {LIMIT} matches" in out, out
    assert _find(pacs, limited.port, "IMAGE", {"SOPInstanceUID": ""}, tmp_path / "i") == []
    assert [(e.level, e.results) for e in seen] == [("IMAGE", 0), ("IMAGE", 0)]
    # A narrow query over the same archive answers: one patient's series, by its study.
    study = next(s.uid for s in IndexQuery(archive.ctx).studies() if s.patient_id == BOB.patient_id)
    images = _find(pacs, limited.port, "IMAGE", {"StudyInstanceUID": study, "SOPInstanceUID": ""}, tmp_path / "n")
    assert len(images) == 2
    # A named instance reads its study: found across all studies without a study key.
    sop = images[0].SOPInstanceUID
    assert [i.SOPInstanceUID for i in _find(pacs, limited.port, "IMAGE", {"SOPInstanceUID": sop}, tmp_path / "o")] == [sop]


def test_a_find_past_the_candidate_budget_is_refused_whole(archive, limited, issue, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An infix name pattern has no blind index: past ``limits.max_search_candidates`` it is refused (A700, the reason
    in the Error Comment), recorded with 0 results, while a search narrowed to few candidates answers (ADR 0017)."""
    pacs = issue("PACS", ("echo", "query"))
    archive.ctx.settings = archive.settings.model_copy(
        update={"limits": archive.settings.limits.model_copy(update={"max_search_candidates": 2})})
    seen: list[QueryPerformed] = []
    archive.ctx.bus.subscribe(lambda s, e: seen.append(e) if isinstance(e, QueryPerformed) else None)
    out = _refused(pacs, limited.port, "STUDY", {"StudyInstanceUID": "", "PatientName": "*O*"})
    assert "0xa700: Refused: Out of resources" in out, out
    assert "over 2 candidates to examine: narrow the query" in out, out
    assert [(e.level, e.results) for e in seen] == [("STUDY", 0)]
    found = _find(pacs, limited.port, "STUDY", {"StudyInstanceUID": "", "PatientID": BOB.patient_id}, tmp_path / "b")
    assert len(found) == 1
