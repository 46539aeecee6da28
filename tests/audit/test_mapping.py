"""Every core event type has an audit mapping; each mapping yields schema-valid PS3.15 messages with the right codes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from dicomguard.app.recorder import RECORDINGS
from dicomguard.audit.codes import EventIds, EventTypes, Roles
from dicomguard.audit.mapping import encode_query
from dicomguard.audit.message import from_xml, to_xml
from dicomguard.audit.store import AuditStore
from dicomguard.core.access import Action, Principal, PrincipalKind
from dicomguard.core.events import (
    AccessRefused,
    ApplicationActivity,
    AuditLogUsed,
    Event,
    UserAuthentication,
)
from dicomguard.index.db import write_session
from tests.audit.conftest import entries

NOW = datetime(2026, 3, 1, 8, 30, 0, 123456, tzinfo=UTC)
DR = Principal(PrincipalKind.USER, "dr.house", frozenset({"radiologist"}), "10.1.2.3")


def _event_classes() -> set[type]:
    found, todo = set(), [Event]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_every_event_class_has_exactly_one_recording() -> None:
    """Fails as soon as the core grows an event class the recorder would not turn into an audit record and a leaf."""
    import dicomguard.core.events as events_module

    declared = {v for v in vars(events_module).values() if isinstance(v, type) and issubclass(v, Event) and v is not Event}
    classes = _event_classes()
    assert declared and declared <= classes
    missing = sorted(c.__name__ for c in classes - RECORDINGS.keys())
    assert not missing, f"event classes without a recording in app.recorder.RECORDINGS: {missing}"
    assert set(RECORDINGS) == classes


def _publish(archive, *events) -> None:  # type: ignore[no-untyped-def]
    with write_session(archive.ctx.engine) as s:
        for e in events:
            archive.ctx.bus.publish(s, e)


@pytest.mark.parametrize(("kind", "types", "outcome"), [
    ("login", [EventTypes.LOGIN.code], 0),
    ("logout", [EventTypes.LOGOUT.code], 0),
    ("failure", [EventTypes.LOGIN.code, EventTypes.LOGIN_FAILED.code], 4),
    ("lockout", [EventTypes.LOGIN.code, EventTypes.LOCKOUT.code], 8),
])
def test_user_authentication_is_ready_for_the_identity_service(archive, valid, kind, types, outcome) -> None:
    """A.5.3.12 with a synthetic event (the identity issue will publish it on logins over HTTPS)."""
    _publish(archive, UserAuthentication("dr.house", kind, NOW, "10.1.2.3", "bad TOTP" if outcome else ""))
    (e,) = entries(archive)
    valid(e.xml)
    m = e.message
    assert (m.event_id.code, [c.code for c in m.event_types], m.outcome, m.action) == (EventIds.USER_AUTHENTICATION.code, types, outcome, "E")
    user = m.requestor()
    assert (user.user_id, user.nap_id, user.nap_type) == ("dr.house", "10.1.2.3", 2)


def test_audit_log_used_and_application_activity(archive, valid) -> None:
    _publish(archive, ApplicationActivity(True, "dicomguard serve", "pacsadmin", NOW), AuditLogUsed(DR, "search {}", NOW),
             ApplicationActivity(False, "dicomguard serve", "pacsadmin", NOW))
    start, used, stop = entries(archive)
    for e in (start, used, stop):
        valid(e.xml)
    assert [c.code for c in start.message.event_types] == [EventTypes.APPLICATION_START.code]
    assert [c.code for c in stop.message.event_types] == [EventTypes.APPLICATION_STOP.code]
    app, launcher = start.message.participants
    assert app.roles == (Roles.APPLICATION,) and launcher.roles == (Roles.APPLICATION_LAUNCHER,) and launcher.user_id == "pacsadmin"
    (log,) = used.message.objects
    assert (log.name, log.type_code, log.role, log.id_type.code) == ("Security Audit Log", 2, 13, "12")
    assert used.message.action == "R" and used.user == "dr.house"


def test_refused_association_is_a_node_authentication_alert(archive, valid) -> None:
    device = Principal(PrincipalKind.DEVICE, "ROGUE", frozenset(), "192.0.2.7")
    _publish(archive, AccessRefused(device, Action.CONNECT, "association", "", "certificate is not registered", NOW))
    (e,) = entries(archive)
    valid(e.xml)
    assert e.event_id == EventIds.SECURITY_ALERT.code and e.outcome == 4
    assert EventTypes.NODE_AUTHENTICATION.code in (e.event_type or "").split()
    (subject,) = e.message.objects
    assert (subject.object_id, subject.id_type.code, dict(subject.details)["Alert Description"]) == (
        "192.0.2.7", "110182", b"certificate is not registered")


def test_query_keys_are_a_dicom_dataset() -> None:
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO

    raw = encode_query("STUDY", [("PatientName", "ZEBRA*"), ("StudyInstanceUID", "1.2.3")])
    ds = dcmread(DicomBytesIO(raw), force=True)
    ds.file_meta = None
    assert (ds.QueryRetrieveLevel, str(ds.PatientName), ds.StudyInstanceUID) == ("STUDY", "ZEBRA*", "1.2.3")


def test_hostile_strings_stay_well_formed_and_valid(archive, valid) -> None:
    """Names and reasons come from peers: markup, quotes, control characters and non-BMP text must not break XML."""
    evil = 'a"b<c>&d\x07\n\tz \U0001F600 ]]> <!--'
    device = Principal(PrincipalKind.DEVICE, evil, frozenset(), evil)
    _publish(archive, AccessRefused(device, Action.RETRIEVE, "instance", evil, evil, NOW))
    (e,) = entries(archive)
    valid(e.xml)
    back = from_xml(to_xml(e.message))
    assert to_xml(back) == e.xml  # canonical: parse and write again gives the same bytes


def test_store_reads_back_what_was_written(archive) -> None:
    _publish(archive, UserAuthentication("dr.house", "login", NOW))
    creation, e = AuditStore(archive.ctx).iter_all()
    assert "archive created" in (creation.message.outcome_description or "")
    assert e.event_time == NOW and e.summary()["user"] == "dr.house" and base64.b64encode(b"") == b""


def test_a_study_listing_refused_names_the_study_and_its_patient(archive, valid) -> None:
    from tests.dicom_factory import ALICE, ct_series

    study = archive.operator.store.ingest(ct_series(ALICE, n=1)[0]).study_uid
    assert archive.services(Principal(PrincipalKind.USER, "mallory")).query.find_instances(study_uid=study) == []
    (refusal,) = [e for e in entries(archive) if e.event_id == EventIds.SECURITY_ALERT.code]
    valid(refusal.xml)
    assert refusal.message.patient_ids() == [ALICE.patient_id] and refusal.message.study_uids() == [study]
