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


def test_other_departments_do_not_spend_a_radiologists_budget(named, web) -> None:  # type: ignore[no-untyped-def]
    """The insider case over HTTPS (ADR 0019): 12 studies of the generated department, 2 of CARDIOLOGY. With a budget
    of 3 the generated department's radiologist is refused a broad search, while CARDIOLOGY's gets its 2 studies
    (before the policy scope, the other department's rows filled the budget and it was refused too); a search for a
    study of the other department answers like one for a UID that does not exist."""
    for n in range(2):
        _store(named, 100 + n, f"CARDIO^{n}")
    from sqlalchemy import select

    from dicomguard.index.db import read_session
    from dicomguard.index.models import Study

    with read_session(named.ctx.engine) as s:
        cardio = list(s.scalars(select(Study.uid).order_by(Study.created_at.desc()).limit(2)))
    for uid in cardio:
        named.operator.studies.set_access(uid, department="CARDIOLOGY")
    web.user("dr.card", "radiologist", department="CARDIOLOGY")
    web.user("dr.rad", "radiologist")
    _with_budget(named, 3)
    card = web.http(web.token("dr.card")).get(f"{web.dicomweb}/studies", params={"PatientName": "*"})
    assert card.status_code == 200, card.text
    assert sorted(r["0020000D"]["Value"][0] for r in card.json()) == sorted(cardio)
    rad = web.http(web.token("dr.rad"))
    assert rad.get(f"{web.dicomweb}/studies", params={"PatientName": "*"}).status_code == 413
    hidden = rad.get(f"{web.dicomweb}/studies", params={"StudyInstanceUID": cardio[0]})
    missing = rad.get(f"{web.dicomweb}/studies", params={"StudyInstanceUID": "1.2.3.4.999"})
    assert (hidden.status_code, hidden.content) == (missing.status_code, missing.content)


def _next(response) -> str | None:  # type: ignore[no-untyped-def]
    link = response.headers.get("link")
    if link is None:
        return None
    assert link.startswith("<") and link.endswith('>; rel="next"'), link
    return str(link[1:-len('>; rel="next"')])


def test_a_continuation_walks_every_page_within_the_budget(named, web) -> None:  # type: ignore[no-untyped-def]
    """Offsets past the candidate budget are refused (413); the Link of each page names the next one, whose search
    starts after the last study answered, so every page costs at most the budget and together they answer every
    visible study once, in order."""
    web.user("dr.rad", "radiologist")
    http = web.http(web.token("dr.rad"))
    everything = http.get(f"{web.dicomweb}/studies", params={"limit": "100"}).json()
    assert len(everything) == len(NAMES)
    _with_budget(named, 4)
    assert http.get(f"{web.dicomweb}/studies", params={"limit": "3", "offset": "6"}).status_code == 413
    seen: list[str] = []
    response = http.get(f"{web.dicomweb}/studies", params={"limit": "3", "includefield": "PatientBirthDate"})
    while True:
        assert response.status_code == 200, response.text
        seen += [r["0020000D"]["Value"][0] for r in response.json()]
        url = _next(response)
        if url is None:
            break
        assert "offset" not in url and "includefield=PatientBirthDate" in url
        response = http.get(url)
    assert seen == [r["0020000D"]["Value"][0] for r in everything]
    last_page = http.get(f"{web.dicomweb}/studies", params={"limit": "100"})
    assert _next(last_page) is None  # everything fitted: no next page


def test_a_continuation_is_bound_to_its_principal_and_search(named, web) -> None:  # type: ignore[no-untyped-def]
    """The token shows nothing and opens only for who got it and the same keys: another user, other keys, a changed
    byte or an offset beside it are refused (400), never answered as another position."""
    web.user("dr.rad", "radiologist")
    web.user("dr.two", "radiologist")
    mine, theirs = web.http(web.token("dr.rad")), web.http(web.token("dr.two"))
    first = mine.get(f"{web.dicomweb}/studies", params={"limit": "2", "PatientName": "*"})
    url = _next(first)
    assert url is not None
    token = url.split("continuation=", 1)[1].split("&", 1)[0]
    assert first.json()[-1]["0020000D"]["Value"][0].encode() not in token.encode()
    assert mine.get(url).status_code == 200
    assert theirs.get(url).status_code == 400
    other_keys = mine.get(f"{web.dicomweb}/studies", params={"limit": "2", "PatientName": "S*", "continuation": token})
    assert other_keys.status_code == 400
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    assert mine.get(f"{web.dicomweb}/studies", params={"limit": "2", "PatientName": "*", "continuation": flipped}).status_code == 400
    both = mine.get(f"{web.dicomweb}/studies", params={"limit": "2", "offset": "2", "PatientName": "*", "continuation": token})
    assert both.status_code == 400
    assert mine.get(f"{web.dicomweb}/series", params={"continuation": token}).status_code == 400
