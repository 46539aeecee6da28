"""Policies at the point of use in the core (issue 5): attributes, filtering, break-glass, step-up, audit marks.

Runs on SQLite and PostgreSQL. Every adapter (DIMSE, DICOMweb, CLI) goes through
``ArchiveClient``, so what holds here holds for every protocol path; the
protocol tests check the mapping to HTTP and DIMSE statuses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from dicomguard.core.access import AccessDenied, Action, Principal, PrincipalKind, StepUpRequired
from dicomguard.core.break_glass import BreakGlassRefused
from dicomguard.core.events import AccessRefused, BreakGlassStarted, InstancesAccessed, QueryPerformed
from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.core.query import IndexQuery
from dicomguard.crypto.blind_index import BlindField
from dicomguard.identity.users import create_user
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import BreakGlassGrant, Study
from tests.audit.conftest import entries
from tests.dicom_factory import ALICE, BOB, DEPARTMENT, ct_series

RAD = Principal(PrincipalKind.USER, "dr.rad", frozenset({"radiologist"}), attributes={"department": DEPARTMENT})
CARDIO = Principal(PrincipalKind.USER, "dr.heart", frozenset({"cardiologist"}), attributes={"department": "CARDIOLOGY"})


def _store(archive, patient=ALICE, n: int = 2, principal: Principal | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    services = archive.services(principal) if principal else archive.operator
    return [services.store.ingest(obj).sop_instance_uid for obj in ct_series(patient, n=n)]


def test_study_department_comes_from_who_stored_it_then_the_header(archive) -> None:  # type: ignore[no-untyped-def]
    tech = Principal(PrincipalKind.USER, "t.cardio", frozenset({"technologist"}), attributes={"department": "CARDIOLOGY"})
    by_tech = _store(archive, ALICE, 1, tech)[0]
    by_operator = _store(archive, BOB, 1)[0]
    with read_session(archive.ctx.engine) as s:
        dept = dict(s.execute(select(Study.uid, Study.department)).all())
    tech_study = IndexQuery(archive.ctx).instances(sop_instance_uid=by_tech)[0].study_uid
    op_study = IndexQuery(archive.ctx).instances(sop_instance_uid=by_operator)[0].study_uid
    assert dept == {tech_study: "CARDIOLOGY", op_study: DEPARTMENT}


def test_referring_physician_is_a_blind_index_not_the_name(archive) -> None:  # type: ignore[no-untyped-def]
    _store(archive, ALICE, 1)
    with read_session(archive.ctx.engine) as s:
        (token,) = s.scalars(select(Study.referring_token)).all()
    assert bytes(token) == archive.ctx.indexer.token(BlindField.REFERRING_PHYSICIAN, "referrer^quentina")
    referrer = Principal(PrincipalKind.USER, "dr.q", frozenset({"referring_physician"}), attributes={"referring_token": bytes(token).hex()})
    other = Principal(PrincipalKind.USER, "dr.o", frozenset({"referring_physician"}),
                      attributes={"referring_token": archive.ctx.indexer.token(BlindField.REFERRING_PHYSICIAN, "OTHER^DOC").hex()})
    assert [s.patient_id for s in archive.services(referrer).query.find_studies()] == [ALICE.patient_id]
    assert archive.services(other).query.find_studies() == []


def test_other_department_sees_nothing_and_cannot_retrieve_by_guessed_uid(archive, events) -> None:  # type: ignore[no-untyped-def]
    uids = _store(archive)
    study_uid = IndexQuery(archive.ctx).instances(sop_instance_uid=uids[0])[0].study_uid
    assert [s.uid for s in archive.services(RAD).query.find_studies()] == [study_uid]
    cardio = archive.services(CARDIO)
    assert cardio.query.find_studies() == []
    assert cardio.query.find_patients() == []
    assert cardio.query.find_series(study_uid=study_uid) == []
    assert cardio.query.find_instances(study_uid=study_uid) == []
    with pytest.raises(AccessDenied):
        cardio.retrieve.instance(uids[0])  # IDOR: knowing the UID is not a permission
    with pytest.raises(AccessDenied):
        cardio.retrieve.plan(sop_instance_uids=uids)
    refused = [e for e in events if isinstance(e, AccessRefused) and e.principal.name == "dr.heart"]
    # listings of the named study filtered to nothing (queries), and the retrievals
    assert {e.action for e in refused} == {Action.QUERY, Action.RETRIEVE}
    assert not any(isinstance(e, InstancesAccessed) and e.principal.name == "dr.heart" for e in events)
    queries = [e for e in events if isinstance(e, QueryPerformed) and e.principal.name == "dr.heart"]
    assert queries and all(q.results == 0 for q in queries)


def test_vip_label_hides_a_study_from_its_own_department(archive) -> None:  # type: ignore[no-untyped-def]
    uid = _store(archive, ALICE, 1)[0]
    study_uid = IndexQuery(archive.ctx).instances(sop_instance_uid=uid)[0].study_uid
    with write_session(archive.ctx.engine) as s:
        s.execute(update(Study).where(Study.uid == study_uid).values(labels="vip"))
    assert archive.services(RAD).query.find_studies() == []
    with pytest.raises(AccessDenied, match="vip-needs-clearance"):
        archive.services(RAD).retrieve.instance(uid)
    cleared = Principal(PrincipalKind.USER, "dr.vip", frozenset({"radiologist"}), attributes={"department": DEPARTMENT, "clearances": ["vip"]})
    assert archive.services(cleared).retrieve.instance(uid).data


def test_break_glass_needs_a_reason_and_is_limited_to_one_patient_and_marked(archive, events) -> None:  # type: ignore[no-untyped-def]
    with write_session(archive.ctx.engine) as s:  # grants belong to accounts
        create_user(s, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), CARDIO.name, "cardiologist", department="CARDIOLOGY")
    alice = _store(archive, ALICE, 1)[0]
    bob = _store(archive, BOB, 1)[0]
    cardio = archive.services(CARDIO)
    for reason in ("", "   ", "urgent"):
        with pytest.raises(BreakGlassRefused, match="reason"):
            cardio.break_glass.claim(ALICE.patient_id, reason)
    assert sum(isinstance(e, AccessRefused) and e.action is Action.BREAK_GLASS for e in events) == 3
    # an unknown Patient ID is answered like a known one (no oracle); its grant opens nothing
    nothing = cardio.break_glass.claim("NO-SUCH-PATIENT", "trauma bay 2, unconscious, prior CT needed")
    assert nothing.patient_refs == () and sorted(nothing.to_json()) == ["expires_at", "grant_id"]
    assert cardio.query.find_studies() == []
    with pytest.raises(AccessDenied):
        archive.services(Principal(PrincipalKind.USER, "sec", frozenset({"security_officer"}))).break_glass.claim(
            ALICE.patient_id, "curious about the images here")

    grant = cardio.break_glass.claim(ALICE.patient_id, "trauma bay 2, unconscious, prior CT needed")
    assert grant.expires_at - datetime.now(UTC) > timedelta(minutes=59)
    started = [e for e in events if isinstance(e, BreakGlassStarted)]
    assert [e.patient_refs == () for e in started] == [True, False] and started[0].claimed_patient_id == "NO-SUCH-PATIENT"
    assert started[1].principal.name == "dr.heart" and started[1].reason.startswith("trauma")

    assert [s.patient_id for s in cardio.query.find_studies()] == [ALICE.patient_id]  # Alice only, not Bob
    assert cardio.retrieve.instance(alice).data
    with pytest.raises(AccessDenied):
        cardio.retrieve.instance(bob)
    accessed = [e for e in events if isinstance(e, InstancesAccessed) and e.principal.name == "dr.heart"]
    assert [e.emergency for e in accessed] == [True]
    assert any(isinstance(e, QueryPerformed) and e.emergency for e in events)
    # the radiologist's own-department access is not marked
    archive.services(RAD).retrieve.instance(alice)
    assert [e.emergency for e in events if isinstance(e, InstancesAccessed) and e.principal.name == "dr.rad"] == [False]

    # the audit trail: an Emergency Override Started alert with the reason, and the access marked BTG
    records = entries(archive)
    alerts = [r for r in records if r.event_type and "110127" in r.event_type.split()]
    assert len(alerts) == 2 and all("trauma bay 2" in (a.message.outcome_description or "") for a in alerts)
    assert [a.message.patient_ids() for a in alerts] == [["NO-SUCH-PATIENT"], [ALICE.patient_id]]
    transferred = [r for r in records if r.event_id == "110104" and r.user == "dr.heart"]
    assert transferred and all("BTG" in (r.event_type or "").split() for r in transferred)
    assert not any("BTG" in (r.event_type or "").split() for r in records if r.user == "dr.rad")

    # time-boxed: once expired, the access is gone again
    with write_session(archive.ctx.engine) as s:
        s.execute(update(BreakGlassGrant).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    late = archive.services(CARDIO)
    assert late.query.find_studies() == []
    with pytest.raises(AccessDenied):
        late.retrieve.instance(alice)


def test_bulk_retrieval_needs_step_up_and_the_window_outlives_the_client(archive, events) -> None:  # type: ignore[no-untyped-def]
    studies = [_store(archive, ALICE, 1)[0] for _ in range(21)]
    first = archive.services(RAD)
    for uid in studies[:20]:
        first.retrieve.instance(uid)
    with pytest.raises(StepUpRequired):
        archive.services(RAD).retrieve.instance(studies[20])  # a new request: the window is in the database
    refusal = [e for e in events if isinstance(e, AccessRefused) and e.principal.name == "dr.rad"][-1]
    assert "step-up-bulk-retrieve" in refusal.reason
    assert archive.services(RAD).retrieve.instance(studies[0]).data  # a study already in the window adds nothing
    fresh = Principal(PrincipalKind.USER, "dr.rad", RAD.roles, attributes={**RAD.attributes, "mfa_at": datetime.now(UTC)})
    assert archive.services(fresh).retrieve.instance(studies[20]).data


def test_erase_by_non_admin_is_refused_and_audited_and_admin_needs_fresh_mfa(archive, events) -> None:  # type: ignore[no-untyped-def]
    _store(archive, ALICE, 1)
    with pytest.raises(AccessDenied) as refused:
        archive.services(RAD).erase.patient(ALICE.patient_id, "request of the patient")
    assert not isinstance(refused.value, StepUpRequired)
    admin = Principal(PrincipalKind.USER, "a.admin", frozenset({"admin"}), attributes={"mfa_at": datetime.now(UTC) - timedelta(minutes=10)})
    with pytest.raises(StepUpRequired):
        archive.services(admin).erase.patient(ALICE.patient_id, "request of the patient")
    assert len(IndexQuery(archive.ctx).instances()) == 1  # nothing erased by a refused request
    assert [e.principal.name for e in events if isinstance(e, AccessRefused) and e.action is Action.ERASE] == ["dr.rad", "a.admin"]
    confirmed = Principal(PrincipalKind.USER, "a.admin", frozenset({"admin"}), attributes={"mfa_at": datetime.now(UTC)})
    archive.services(confirmed).erase.patient(ALICE.patient_id, "request of the patient")
    assert IndexQuery(archive.ctx).instances() == []


def test_archive_refuses_to_open_with_an_invalid_policy(home) -> None:  # type: ignore[no-untyped-def]
    from dicomguard.app.archive import Archive
    from dicomguard.policy.engine import PolicyError

    (home / "policies" / "broken.cedar").write_text("permit (principal, action, resource) when { principal.nope };")
    with pytest.raises(PolicyError, match="broken.cedar"):
        Archive.open(home)


def test_study_access_changes_are_administered_normalized_and_audited(archive, events) -> None:  # type: ignore[no-untyped-def]
    from dicomguard.core.events import SecurityConfigurationChanged

    uid = _store(archive, ALICE, 1)[0]
    study_uid = IndexQuery(archive.ctx).instances(sop_instance_uid=uid)[0].study_uid
    with pytest.raises(AccessDenied):
        archive.services(RAD).studies.set_access(study_uid, add_labels=["vip"])  # nobody labels their own way in
    access = archive.operator.studies.set_access(study_uid, department="  cardiology ", add_labels=["VIP", "teaching"])
    assert access.department == "CARDIOLOGY" and access.labels == {"vip", "teaching"}
    changes = [e for e in events if isinstance(e, SecurityConfigurationChanged)]
    assert [(e.subject, e.change) for e in changes] == [
        (f"study:{study_uid}", "department RADIOLOGY -> CARDIOLOGY; labels (none) -> teaching,vip")]
    # a cardiologist whose department was typed in lower case still matches
    lower = Principal(PrincipalKind.USER, "dr.lower", frozenset({"cardiologist"}), attributes={"department": "Cardiology", "clearances": ["vip"]})
    assert archive.services(lower).retrieve.instance(uid).data
    with pytest.raises(ValueError):
        archive.operator.studies.set_access(study_uid, add_labels=["not a label"])
    archive.operator.studies.set_access(study_uid, department="CARDIOLOGY")  # no change: no event
    assert len([e for e in events if isinstance(e, SecurityConfigurationChanged)]) == 1
    records = entries(archive)
    assert any(r.event_type and "110129" in r.event_type.split() for r in records)


def test_query_decisions_are_reused_within_a_request_but_not_across_attribute_changes(archive) -> None:  # type: ignore[no-untyped-def]
    _store(archive, ALICE, 1)
    _store(archive, BOB, 1)
    engine = archive.ctx.authorizer
    asked: list[tuple[Action, int]] = []

    class Counting:
        def decide(self, *a, **k):  # type: ignore[no-untyped-def]
            return engine.decide(*a, **k)

        def decide_many(self, principal, action, resources, context=None):  # type: ignore[no-untyped-def]
            asked.append((action, len(resources)))
            return engine.decide_many(principal, action, resources, context)

        def study_scope(self, *a, **k):  # type: ignore[no-untyped-def]
            return engine.study_scope(*a, **k)

    archive.ctx.authorizer = Counting()
    client = archive.services(RAD).query
    assert len(client.find_studies()) == 2
    assert len(client.find_patients()) == 2  # same studies: no new decisions
    assert asked == [(Action.QUERY, 2)]
    study_uid = client.find_studies()[0].uid
    archive.operator.studies.set_access(study_uid, add_labels=["teaching"])
    assert len(client.find_studies()) == 2  # the changed study is decided again (the other one is not)
    assert asked[-1] == (Action.QUERY, 1)
    archive.operator.studies.set_access(study_uid, add_labels=["vip"])
    asked.clear()
    assert len(client.find_studies()) == 1  # now hidden: outside the policies' scope, not even a candidate (ADR 0019)
    assert asked == []


def test_the_step_up_window_forgets_old_accesses(archive) -> None:  # type: ignore[no-untyped-def]
    from dicomguard.index.models import StudyAccessWindow

    old, new = _store(archive, ALICE, 1)[0], _store(archive, BOB, 1)[0]
    archive.services(RAD).retrieve.instance(old)
    with write_session(archive.ctx.engine) as s:
        s.execute(update(StudyAccessWindow).values(last_at=datetime.now(UTC) - timedelta(hours=2)))
    archive.services(RAD).retrieve.instance(new)  # records the new access and drops the one out of the window
    with read_session(archive.ctx.engine) as s:
        rows = s.execute(select(StudyAccessWindow.study_uid)).scalars().all()
    assert rows == [IndexQuery(archive.ctx).instances(sop_instance_uid=new)[0].study_uid]
