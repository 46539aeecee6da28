"""QIDO-RS answers 413 for a search past its candidate budget (PS3.18 Table 11.9.3-1, ADR 0017), a page within it as before."""

from __future__ import annotations

import pytest

from tests.test_wildcard_search_bounds import NAMES, _store, _with_budget


@pytest.fixture
def named(archive):  # type: ignore[no-untyped-def]
    for n, name in enumerate(NAMES):
        _store(archive, n, name)
    return archive


def test_qido_answers_413_past_the_budget_and_the_page_within_it(named, web) -> None:  # type: ignore[no-untyped-def]
    web.user("dr.rad", "radiologist")
    http = web.http(web.token("dr.rad"))
    _with_budget(named, 3)
    broad = http.get(f"{web.dicomweb}/studies", params={"PatientName": "*MIT*"})
    assert broad.status_code == 413, broad.text
    assert broad.json()["detail"].startswith("the search would examine more than 3 candidate records")
    deep = http.get(f"{web.dicomweb}/studies", params={"limit": "2", "offset": "5"})
    assert deep.status_code == 413
    first = http.get(f"{web.dicomweb}/studies", params={"limit": "2"})
    assert first.status_code == 200 and len(first.json()) == 2
    narrow = http.get(f"{web.dicomweb}/studies", params={"PatientName": "*SMITH^JOHN"})
    assert narrow.status_code == 200
    assert sorted(r["00100010"]["Value"][0]["Alphabetic"] for r in narrow.json()) == ["SMITH^JOHN"]
