"""Default-deny authorization in the core: every service checks the principal, refusals are events."""

from __future__ import annotations

import pytest

from dicomguard.core.access import AccessDenied, Action, Principal, PrincipalKind
from dicomguard.core.events import AccessRefused, InstancesAccessed, QueryPerformed
from dicomguard.core.query import IndexQuery
from dicomguard.errors import NotFoundError
from tests.dicom_factory import ALICE, DEPARTMENT, ct_series

STORE_ONLY = Principal(PrincipalKind.DEVICE, "CT_SCANNER", attributes={"operations": ("store",)})
VIEWER = Principal(PrincipalKind.DEVICE, "VIEWER", attributes={"operations": ("query", "retrieve")})
RADIOLOGIST = Principal(PrincipalKind.USER, "dr.who", frozenset({"radiologist"}), attributes={"department": DEPARTMENT})
ADMIN = Principal(PrincipalKind.USER, "root", frozenset({"admin"}))
NOBODY = Principal(PrincipalKind.USER, "mallory")


def test_store_only_device_can_store_but_not_read_or_query(archive, events) -> None:
    modality = archive.services(STORE_ONLY)
    uid = modality.store.ingest(ct_series(ALICE, n=1)[0]).sop_instance_uid
    with pytest.raises(AccessDenied):
        modality.retrieve.instance(uid)
    assert modality.query.find_studies() == []  # filtered, not an error: nothing visible
    refusals = [e for e in events if isinstance(e, AccessRefused)]
    assert [(r.principal.name, r.action) for r in refusals] == [("CT_SCANNER", Action.RETRIEVE)]


def test_read_only_device_cannot_store(archive, events) -> None:
    with pytest.raises(AccessDenied):
        archive.services(VIEWER).store.ingest(ct_series(ALICE, n=1)[0])
    assert IndexQuery(archive.ctx).instances() == []
    assert any(isinstance(e, AccessRefused) and e.action is Action.STORE for e in events)


def test_roles_and_default_deny(archive, events) -> None:
    uid = archive.operator.store.ingest(ct_series(ALICE, n=1)[0]).sop_instance_uid
    assert archive.services(RADIOLOGIST).retrieve.instance(uid).data
    assert [s.patient_id for s in archive.services(RADIOLOGIST).query.find_studies()] == [ALICE.patient_id]
    for who in (ADMIN, NOBODY):
        with pytest.raises(AccessDenied):
            archive.services(who).retrieve.instance(uid)
        assert archive.services(who).query.find_studies() == []
        assert archive.services(who).query.find_patients() == []
        with pytest.raises(AccessDenied):
            archive.services(who).erase.patient(ALICE.patient_id, "because")
    accessed = [e for e in events if isinstance(e, InstancesAccessed)]
    assert [(e.principal.name, e.sop_instance_uids) for e in accessed] == [("dr.who", (uid,))]
    queries = [e for e in events if isinstance(e, QueryPerformed)]
    assert {(q.principal.name, q.results) for q in queries} >= {("dr.who", 1), ("root", 0), ("mallory", 0)}


def test_unknown_uid_is_not_found_for_everyone(archive) -> None:
    with pytest.raises(NotFoundError):
        archive.services(RADIOLOGIST).retrieve.instance("1.2.3.4.5.6")


def test_listing_a_forbidden_study_is_empty_and_recorded(archive, events) -> None:
    study = archive.operator.store.ingest(ct_series(ALICE, n=2)[0]).study_uid
    assert archive.services(NOBODY).query.find_instances(study_uid=study) == []
    refusals = [e for e in events if isinstance(e, AccessRefused)]
    assert [(r.principal.name, r.resource_kind, r.resource_uid) for r in refusals] == [("mallory", "study", study)]
