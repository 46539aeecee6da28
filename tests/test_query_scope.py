"""Searches read only the studies the principal's policies can permit (ADR 0019).

The scope a search narrows by comes from Cedar's partial evaluation of the
policies. It must never drop a study the principal may query (soundness: checked
against the engine's own decision on every study of a generated archive, for
every default role, on SQLite and PostgreSQL), and for the shipped policies it
is exact, so the candidate budget counts what the principal can see. A policy
the translation does not understand widens the scope; it never narrows it.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from dicomguard.core.access import Action, Principal, PrincipalKind, RequestContext, Resource
from dicomguard.core.events import QueryPerformed
from dicomguard.core.query import IndexQuery, StudyFilter
from dicomguard.core.study_scope import EVERYTHING, NOTHING, AttributeIn, Everything, admits
from dicomguard.core.study_scope_sql import scope_condition
from dicomguard.crypto.blind_index import BlindField
from dicomguard.errors import SearchTooBroad
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import Series, Study
from dicomguard.policy.engine import PolicyEngine, default_policy_files
from tests.dicom_factory import FakePatient, ct_series, dataset_of, to_bytes
from tests.test_wildcard_search_bounds import _with_budget

CARD, RADIO = "CARDIOLOGY", "RADIOLOGY"


def _user(name: str, *roles: str, **attributes: object) -> Principal:
    return Principal(PrincipalKind.USER, name, frozenset(roles), attributes=attributes)


def _principals(token_hex: str, shared: list[str]) -> list[Principal]:
    return [
        _user("rad.card", "radiologist", department=CARD),
        _user("rad.radio", "radiologist", department=RADIO),
        _user("rad.none", "radiologist"),
        _user("rad.vip", "radiologist", department=CARD, clearances="vip"),
        _user("cardio", "cardiologist", department=CARD),
        _user("tech", "technologist", department=CARD, modalities="CT,US"),
        _user("sono", "sonographer", department=RADIO, modalities="US"),
        _user("referrer", "referring_physician", referring_token=token_hex),
        _user("researcher", "researcher"),
        _user("admin", "admin"),
        _user("officer", "security_officer"),
        _user("scoped", "radiologist", department=CARD, token_scopes=("store",)),
        Principal(PrincipalKind.DEVICE, "PEER", attributes={"operations": "query", "department": ""}),
        Principal(PrincipalKind.DEVICE, "WS", attributes={"operations": "query,retrieve", "department": CARD}),
        Principal(PrincipalKind.DEVICE, "CT1", attributes={"operations": "store", "department": CARD}),
        Principal(PrincipalKind.SHARE, "share", attributes={"studies": ",".join(shared)}),
        Principal(PrincipalKind.OPERATOR, "operator"),
    ]


@pytest.fixture
def population(archive):  # type: ignore[no-untyped-def]
    """24 studies whose access attributes are then set at random: departments (none, empty, two), sites, labels,
    referring tokens, modalities and storage times on both sides of the technologists' 7-day window."""
    for n in range(24):
        ds = dataset_of(ct_series(FakePatient(f"SC{n:03d}", f"SCOPE^{n}", "19700101", f"ACCSC{n:03d}"), n=1, seed=n)[0])
        archive.operator.store.ingest(to_bytes(ds))
    rng = random.Random(19)
    token_a = archive.ctx.indexer.token(BlindField.REFERRING_PHYSICIAN, "DR^A")
    token_b = archive.ctx.indexer.token(BlindField.REFERRING_PHYSICIAN, "DR^B")
    now = datetime.now(UTC)
    with write_session(archive.ctx.engine) as s:
        uids = list(s.scalars(select(Study.uid).order_by(Study.uid)))
        for uid in uids:
            labels = sorted(rng.sample(["vip", "deidentified", "share-copy", "teaching"], rng.randint(0, 2)))
            s.execute(update(Study).where(Study.uid == uid).values(
                department=rng.choice([CARD, CARD, RADIO, None, ""]),
                site=rng.choice(["NORTH", None]),
                labels=",".join(labels) or None,
                referring_token=rng.choice([token_a, token_b, None]),
                created_at=now - timedelta(days=rng.choice([0.5, 6.9, 7.1, 30]), seconds=rng.random()),
            ))
            s.execute(update(Series).where(Series.study_uid == uid).values(modality=rng.choice(["CT", "MR", "US", None])))
    return archive, token_a.hex(), uids


def _in_sql(archive, scope) -> set[str]:  # type: ignore[no-untyped-def]
    with read_session(archive.ctx.engine) as s:
        return set(s.scalars(select(Study.uid).where(scope_condition(scope))))


def _allowed(engine: PolicyEngine, archive, p: Principal, uids: list[str], context: RequestContext) -> set[str]:  # type: ignore[no-untyped-def]
    known = IndexQuery(archive.ctx).study_access(uids)
    resources = [Resource.study(uid, ref, a) for uid, (ref, a) in known.items()]
    decisions = engine.decide_many(p, Action.QUERY, resources, context)
    return {r.study_uid for r, d in zip(resources, decisions, strict=True) if d.allowed}


def test_the_scope_of_the_shipped_policies_is_exactly_what_they_permit(population) -> None:  # type: ignore[no-untyped-def]
    """Every role, with and without a break-glass grant: the studies the SQL scope admits are exactly those the
    engine permits, and exactly those the scope's own meaning (``admits``) admits."""
    archive, token_hex, uids = population
    engine = PolicyEngine.defaults()
    known = IndexQuery(archive.ctx).study_access(uids)
    emergency = frozenset({known[uids[5]][0]})
    narrowed = 0
    for p in _principals(token_hex, [uids[0], uids[3]]):
        for grants in (frozenset(), emergency):
            context = replace(RequestContext.now_for(p), emergency_patients=grants)
            scope = engine.study_scope(p, Action.QUERY, context)
            allowed = _allowed(engine, archive, p, uids, context)
            in_sql = _in_sql(archive, scope)
            assert in_sql == allowed, (p.name, bool(grants), scope)
            assert in_sql == {u for u in uids if admits(scope, u, *known[u])}, (p.name, scope)
            narrowed += len(allowed) < len(uids)
    assert narrowed >= 20  # most roles see part of the archive: the scope really narrows
    assert engine.study_scope(_user("scoped", "radiologist", department=CARD, token_scopes=("store",)), Action.QUERY) == NOTHING
    assert engine.study_scope(Principal(PrincipalKind.OPERATOR, "operator"), Action.QUERY) == EVERYTHING


CUSTOM = """
@id("like-department")
permit (principal is User, action == Action::"query", resource is Study)
when { principal.roles.contains("auditor") && resource.department like "CARD*" };

@id("if-then-else")
permit (principal is User, action == Action::"query", resource is Study)
when { if principal.roles.contains("fellow") then resource.site == "NORTH" else false };

@id("literal-holds-modalities")
permit (principal is User, action == Action::"query", resource is Study)
when { principal.roles.contains("fellow") && ["CT", "MR"].containsAll(resource.modalities) };

@id("all-labels")
permit (principal is User, action == Action::"query", resource is Study)
when { principal.roles.contains("teacher") && resource.labels.containsAll(["teaching", "deidentified"]) };

@id("stored-after")
permit (principal is User, action == Action::"query", resource is Study)
when { principal.roles.contains("archivist") && resource.stored_at > context.now - 86400 * 3 };

@id("fuzzy-forbid")
forbid (principal is User, action == Action::"query", resource is Study)
when { resource.site like "*TH" && principal.roles.contains("fellow") };

@id("unless-forbid")
forbid (principal is User, action == Action::"query", resource is Study)
when { principal.roles.contains("teacher") }
unless { resource.department == "CARDIOLOGY" || resource.department == "" };
"""


def test_a_policy_the_translation_cannot_read_widens_the_scope_and_never_hides_a_study(population) -> None:  # type: ignore[no-untyped-def]
    """``like``, ``if``, a literal set holding the study's set, a forbid with ``like``: read as "true" (a permit) or
    ignored (a forbid), so the scope is wider than the permitted studies, never narrower."""
    archive, token_hex, uids = population
    engine = PolicyEngine({**default_policy_files(), "custom.cedar": CUSTOM})
    for p in [_user("aud", "auditor"), _user("fel", "fellow"), _user("tea", "teacher"), _user("arc", "archivist"),
              _user("both", "fellow", "teacher", "radiologist", department=RADIO)]:
        context = RequestContext.now_for(p)
        scope = engine.study_scope(p, Action.QUERY, context)
        allowed = _allowed(engine, archive, p, uids, context)
        assert allowed <= _in_sql(archive, scope), (p.name, scope)
    # the exact ones still narrow: a teacher sees teaching + de-identified studies of CARDIOLOGY or of none
    teacher = _user("tea", "teacher")
    scope = engine.study_scope(teacher, Action.QUERY)
    assert _in_sql(archive, scope) == _allowed(engine, archive, teacher, uids, RequestContext.now_for(teacher))
    # and what cannot be read widens: the auditor's "like" is everything but the shipped forbids
    assert len(_in_sql(archive, engine.study_scope(_user("aud", "auditor"), Action.QUERY))) > len(
        _allowed(engine, archive, _user("aud", "auditor"), uids, RequestContext.now_for(_user("aud", "auditor"))))


def test_a_failing_partial_evaluation_reads_every_candidate(archive, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import cedarpy

    def broken(*_a, **_k):  # type: ignore[no-untyped-def]
        raise RuntimeError("experimental feature changed")

    monkeypatch.setattr(cedarpy, "is_authorized_partial", broken)
    assert isinstance(archive.ctx.authorizer.study_scope(_user("r", "radiologist", department=CARD), Action.QUERY), Everything)


def _store(archive, n: int, department: str) -> None:  # type: ignore[no-untyped-def]
    ds = dataset_of(ct_series(FakePatient(f"BU{n:03d}", f"BUDGET^{n}", "19800101", f"ACCBU{n:03d}"), n=1, seed=100 + n)[0])
    ds.InstitutionalDepartmentName = department
    archive.operator.store.ingest(to_bytes(ds))


def test_a_small_department_is_searched_within_the_budget_of_a_large_archive(archive) -> None:  # type: ignore[no-untyped-def]
    """The insider case ADR 0017 left open: with more studies of other departments than the budget, a radiologist of
    a small department was refused every broad search. Now the other departments' rows are never candidates; a
    radiologist of the large department is still refused, since its own studies exceed the budget."""
    for n in range(8):
        _store(archive, n, RADIO)
    for n in range(8, 10):
        _store(archive, n, "cardiology ")  # stored in the canonical form, matched by the principal's
    _with_budget(archive, 5)
    small = archive.services(_user("dr.card", "radiologist", department=CARD)).query
    assert len(small.find_studies()) == 2
    assert len(small.find_studies_page(want=10)) == 2
    assert len(small.find_patients()) == 2
    assert len(small.find_patients_page(want=10)) == 2
    assert len(small.find_series_page(want=10)) == 2
    assert len(small.find_instances_page(want=10)) == 2
    large = archive.services(_user("dr.radio", "radiologist", department=RADIO)).query
    with pytest.raises(SearchTooBroad):
        large.find_studies_page(want=10)
    assert len(large.find_studies_page(want=3)) == 3
    nobody = archive.services(_user("dr.none", "radiologist", department="NEUROLOGY")).query
    assert nobody.find_studies() == [] and nobody.find_patients_page(want=10) == []


def test_a_study_outside_the_scope_answers_like_one_that_does_not_exist(archive, events) -> None:  # type: ignore[no-untyped-def]
    _store(archive, 1, RADIO)
    with read_session(archive.ctx.engine) as s:
        (uid,) = s.scalars(select(Study.uid))
    other = archive.services(_user("dr.card", "radiologist", department=CARD)).query
    hidden = other.find_studies(StudyFilter(study_uid=uid))
    missing = other.find_studies(StudyFilter(study_uid="1.2.3.999"))
    assert hidden == missing == []
    recorded = [e for e in events if isinstance(e, QueryPerformed)][-2:]
    assert [e.results for e in recorded] == [0, 0]


def test_unknown_scope_values_match_nothing_in_sql(population) -> None:  # type: ignore[no-untyped-def]
    archive, _, _ = population
    assert _in_sql(archive, AttributeIn("referring_token", frozenset({"not-hex", "ABCD"}))) == set()
    assert _in_sql(archive, AttributeIn("department", frozenset())) == set()


def test_migration_0020_stores_departments_in_the_form_policies_compare(archive) -> None:  # type: ignore[no-untyped-def]
    """Rows written before it may hold a department Cedar sees differently (lower case, runs of spaces, a space left
    at the end by the 64-character cut); the scope compares the column itself, so the migration rewrites them."""
    from alembic import command

    from dicomguard.index.db import alembic_config

    for n in range(3):
        _store(archive, n, RADIO)
    cut = "A" * 63 + " B"  # the old cut kept 64 characters: "A"*63 + " "
    with write_session(archive.ctx.engine) as s:
        uids = list(s.scalars(select(Study.uid).order_by(Study.uid)))
    command.downgrade(alembic_config(archive.ctx.engine), "0019")
    with write_session(archive.ctx.engine) as s:
        for uid, raw in zip(uids, ["cardiology  unit", cut[:64], RADIO], strict=True):
            s.execute(update(Study).where(Study.uid == uid).values(department=raw))
    command.upgrade(alembic_config(archive.ctx.engine), "head")
    with read_session(archive.ctx.engine) as s:
        stored = dict(s.execute(select(Study.uid, Study.department)).all())
    assert [stored[u] for u in uids] == ["CARDIOLOGY UNIT", "A" * 63, RADIO]
    unit = archive.services(_user("dr.unit", "radiologist", department="Cardiology Unit")).query
    assert [s.uid for s in unit.find_studies()] == [uids[0]]


def test_a_scope_asked_again_with_the_same_inputs_is_the_one_a_fresh_engine_gives_and_not_evaluated_again(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Searches of one principal within one second ask the same partial evaluation: the engine answers it from its
    recent scopes. Another principal, another second or another context is evaluated; failures are not remembered;
    the memory is bounded."""
    import cedarpy

    from dicomguard.policy import engine as policy_engine

    engine = PolicyEngine(default_policy_files())
    evaluated: list[str] = []
    real = cedarpy.is_authorized_partial
    monkeypatch.setattr(cedarpy, "is_authorized_partial", lambda request, *rest: evaluated.append(request["principal"]) or real(request, *rest))
    card, radio = _user("dr.c", "radiologist", department=CARD), _user("dr.r", "radiologist", department=RADIO)
    now = RequestContext.now_for(card)
    first = engine.study_scope(card, Action.QUERY, now)
    fresh = PolicyEngine(default_policy_files()).study_scope(card, Action.QUERY, now)
    assert _canonical(first) == _canonical(fresh) and first != EVERYTHING  # Cedar may order the residuals either way
    assert engine.study_scope(card, Action.QUERY, now) == first and len(evaluated) == 2  # (one by the fresh engine)
    assert _canonical(engine.study_scope(radio, Action.QUERY, now)) != _canonical(first) and len(evaluated) == 3
    later = replace(now, now=now.now + timedelta(seconds=1))
    assert _canonical(engine.study_scope(card, Action.QUERY, later)) == _canonical(first) and len(evaluated) == 4

    def broken(*_a, **_k):  # type: ignore[no-untyped-def]
        raise RuntimeError("experimental feature changed")

    monkeypatch.setattr(cedarpy, "is_authorized_partial", broken)
    other = replace(now, studies_in_window=7)
    assert isinstance(engine.study_scope(card, Action.QUERY, other), Everything)
    monkeypatch.setattr(cedarpy, "is_authorized_partial", real)
    assert _canonical(engine.study_scope(card, Action.QUERY, other)) == _canonical(first)  # the failure was not remembered
    for i in range(policy_engine.RECENT_ANSWERS + 20):
        engine.study_scope(card, Action.QUERY, replace(now, studies_in_window=100 + i))
    assert len(engine._scopes) == policy_engine.RECENT_ANSWERS


def _canonical(scope: object) -> object:
    """A scope with the parts of every AllOf/AnyOf in a fixed order (equal scopes, equal forms)."""
    parts = getattr(scope, "parts", None)
    if parts is not None:
        return type(scope).__name__, tuple(sorted((_canonical(p) for p in parts), key=repr))
    if hasattr(scope, "part"):
        return "Not", _canonical(scope.part)  # type: ignore[attr-defined]
    return scope
