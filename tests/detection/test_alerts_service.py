"""Alerts in the archive: sealed, recorded as Security Alerts, graded containment and its release, dispositions, insiders."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from dicomguard.app.archive import Archive
from dicomguard.core.access import AccessDenied, Principal, StepUpRequired
from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.errors import NotFoundError
from dicomguard.identity import users
from dicomguard.identity.tokens import InvalidToken, create_token, verify_token
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import AlertRow, Containment, DetectionContext, User
from tests.audit.conftest import entries
from tests.dicom_factory import ALICE, BOB, DEPARTMENT, ct_series

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def _user(archive: Archive, name: str, role: str) -> Principal:
    with write_session(archive.ctx.engine) as s:
        users.create_user(s, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), name, role, department=DEPARTMENT)
    with read_session(archive.ctx.engine) as s:
        return users.user_principal(s, name)


def _raise(archive: Archive, user: str, severity: str) -> tuple[int, str]:
    detector = archive.services(Principal.operator("detector")).detection
    return detector.raise_alert(user, "bulk-retrieve", severity, NOW - timedelta(minutes=5), NOW, (ALICE.patient_id, BOB.patient_id),
                                "retrieved 40 studies of CARDIOLOGY in 5 minutes; none ordered by or assigned to the user",
                                ["evt-1", "evt-2", "distinct patients 40 (peer p99: 6)"])


def test_an_alert_is_sealed_and_recorded_as_a_valid_security_alert(archive: Archive, valid) -> None:  # type: ignore[no-untyped-def]
    _user(archive, "dr.snoop", "radiologist")
    alert_id, containment = _raise(archive, "dr.snoop", "medium")
    assert containment == "record"
    with read_session(archive.ctx.engine) as s:
        row = s.get(AlertRow, alert_id)
        assert row is not None and ALICE.patient_id.encode() not in row.sealed and b"CARDIOLOGY" not in row.sealed
    [record] = [e for e in entries(archive) if b"bulk-retrieve" in e.xml]
    valid(record.xml)
    assert ALICE.patient_id.encode() in record.xml and b"dr.snoop" in record.xml
    listed = archive.operator.detection.alerts()
    assert [(a.id, a.user, a.kind, a.patients, a.explanation) for a in listed] == [(alert_id, "dr.snoop", "bulk-retrieve", (), "")]
    before = len(entries(archive))
    shown = archive.operator.detection.show(alert_id)
    assert shown.patients == (ALICE.patient_id, BOB.patient_id) and "CARDIOLOGY" in shown.explanation
    assert len(entries(archive)) == before + 1  # reading an alert's patients is itself recorded


def test_step_up_containment_until_released(archive: Archive) -> None:
    principal = _user(archive, "dr.snoop", "radiologist")
    study = archive.operator.store.ingest(ct_series(BOB, n=1)[0]).study_uid
    assert archive.services(principal).query.find_studies()  # sees the department's study before
    _, containment = _raise(archive, "dr.snoop", "high")
    assert containment == "step-up"
    contained = archive.services(principal)
    with pytest.raises(StepUpRequired):
        contained.retrieve.plan(study_uids=[study])
    # with a fresh TOTP confirmation (the session's MFA time) the request goes through (RFC 9470 step-up)
    fresh = Principal(principal.kind, principal.name, principal.roles, attributes={**principal.attributes, "mfa_at": datetime.now(UTC)})
    assert list(archive.services(fresh).retrieve.plan(study_uids=[study]).verified())
    with pytest.raises(ValueError, match="reason"):
        archive.operator.detection.release("dr.snoop", "ok")
    assert archive.operator.detection.release("dr.snoop", "interviewed: covering for a colleague on leave") == "step-up"
    assert list(archive.services(principal).retrieve.plan(study_uids=[study]).verified())


def test_suspend_containment_disables_and_revokes_and_release_restores(archive: Archive) -> None:
    _user(archive, "dr.leaver", "radiologist")
    with write_session(archive.ctx.engine) as s:
        token = create_token(s, "dr.leaver", timedelta(hours=1))
    assert verify_token(archive.ctx.engine, token) is not None
    _, containment = _raise(archive, "dr.leaver", "critical")
    assert containment == "suspend"
    with read_session(archive.ctx.engine) as s:
        assert s.get(User, "dr.leaver").disabled  # type: ignore[union-attr]
        assert s.get(Containment, "dr.leaver").disabled_account  # type: ignore[union-attr]
    with pytest.raises(InvalidToken):
        verify_token(archive.ctx.engine, token)
    archive.operator.detection.release("dr.leaver", "exit interview done, exports were handover material")
    with read_session(archive.ctx.engine) as s:
        assert not s.get(User, "dr.leaver").disabled  # type: ignore[union-attr]
        assert s.get(Containment, "dr.leaver") is None
    with pytest.raises(InvalidToken):  # revoked tokens stay revoked
        verify_token(archive.ctx.engine, token)


def test_an_account_disabled_before_stays_disabled_after_release(archive: Archive) -> None:
    _user(archive, "dr.gone", "radiologist")
    archive.operator.accounts.disable("dr.gone")
    _raise(archive, "dr.gone", "critical")
    archive.operator.detection.release("dr.gone", "the alert was about an account already closed")
    with read_session(archive.ctx.engine) as s:
        assert s.get(User, "dr.gone").disabled  # type: ignore[union-attr]


def test_dispositions_and_feedback(archive: Archive) -> None:
    _user(archive, "dr.rita", "radiologist")
    alert_id, _ = _raise(archive, "dr.rita", "low")
    with pytest.raises(ValueError, match="disposition"):
        archive.operator.detection.handle(alert_id, "resolve")
    archive.operator.detection.handle(alert_id, "acknowledge", note="calling the department head")
    archive.operator.detection.handle(alert_id, "resolve", "false-positive", note="tumour board preparation")
    assert archive.operator.detection.alerts() == []
    [resolved] = archive.operator.detection.alerts(None)
    assert resolved.status == "resolved" and resolved.disposition == "false-positive"
    assert len(archive.operator.detection.show(alert_id).notes) == 2
    files = archive.operator.detection.context_files()
    assert sorted(map(tuple, files["feedback"])) == [("dr.rita", ALICE.patient_id), ("dr.rita", BOB.patient_id)]
    with read_session(archive.ctx.engine) as s:
        assert ALICE.patient_id.encode() not in s.get(DetectionContext, "feedback").sealed  # type: ignore[union-attr]
    with pytest.raises(NotFoundError):
        archive.operator.detection.handle(999, "acknowledge")


def test_who_may_read_handle_and_raise_alerts(archive: Archive) -> None:
    _user(archive, "dr.snoop", "radiologist")
    alert_id, _ = _raise(archive, "dr.snoop", "low")
    radiologist = archive.services(_user(archive, "dr.other", "radiologist"))
    for call in (lambda: radiologist.detection.alerts(), lambda: radiologist.detection.show(alert_id),
                 lambda: radiologist.detection.handle(alert_id, "acknowledge"),
                 lambda: radiologist.detection.release("dr.snoop", "a long enough reason"),
                 lambda: radiologist.detection.raise_alert("dr.other", "x", "low", NOW, NOW, (), "", [])):
        with pytest.raises(AccessDenied):
            call()
    sam = _user(archive, "sec.sam", "security_officer")
    officer = archive.services(sam)
    assert [a.id for a in officer.detection.alerts()] == [alert_id]
    with pytest.raises(StepUpRequired):  # guard step-up-alert-response: acting on an alert needs a fresh TOTP
        officer.detection.handle(alert_id, "resolve", "true-positive")
    officer = archive.services(dataclasses.replace(sam, attributes={**sam.attributes, "mfa_at": datetime.now(UTC)}))
    officer.detection.handle(alert_id, "resolve", "true-positive")
    with pytest.raises(AccessDenied):  # an officer cannot forge an alert against a colleague
        officer.detection.raise_alert("dr.other", "forged", "critical", NOW, NOW, (), "", [])
    with read_session(archive.ctx.engine) as s:
        assert s.scalar(select(Containment)) is None


def _paused_in(name: str, release: threading.Event) -> Callable[[Any], Any]:
    """Wrap a method so that thread ``name`` waits in it (at most 3 s) until ``release`` is set, after it ran."""
    def wrap(real: Any) -> Any:
        def paused(*args: Any, **kwargs: Any) -> Any:
            out = real(*args, **kwargs)
            if threading.current_thread().name == name and not getattr(paused, "done", False):
                paused.done = True  # type: ignore[attr-defined]
                release.wait(3)
            return out
        return paused
    return wrap


def test_concurrent_handlings_lose_no_note_and_no_feedback(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forced interleavings: B has read an alert's notes (or found no feedback document) and waits while A handles
    the same alert (or creates the feedback document). Neither A's note nor A's feedback may be lost when B writes."""
    from dicomguard.app.detection.service import DetectionService

    _user(archive, "dr.one", "radiologist")
    _user(archive, "dr.two", "radiologist")
    first, _ = _raise(archive, "dr.one", "low")
    second, _ = _raise(archive, "dr.two", "low")
    postgresql = archive.ctx.engine.dialect.name == "postgresql"

    def race(b_call: Callable[[], None], a_call: Callable[[], None], pause: str) -> None:
        release = threading.Event()
        monkeypatch.setattr(DetectionService, pause, _paused_in("handler-B", release)(getattr(DetectionService, pause)))
        errors: list[BaseException] = []

        def run(call: Callable[[], None]) -> None:
            try:
                call()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        b = threading.Thread(target=run, args=(b_call,), name="handler-B")
        b.start()
        time.sleep(0.3)  # B is inside its transaction, paused
        a = threading.Thread(target=run, args=(a_call,), name="handler-A")
        a.start()
        a.join(1.0 if postgresql else 0.3)  # on PostgreSQL A either finishes (nothing locked) or waits for B's lock
        release.set()
        b.join(30)
        a.join(30)
        monkeypatch.undo()
        assert errors == []

    officer = archive.operator.detection
    race(lambda: officer.handle(first, "acknowledge", note="note of B"),
         lambda: officer.handle(first, "acknowledge", note="note of A"), "_noted")
    notes = archive.operator.detection.show(first).notes
    assert any("note of A" in n for n in notes) and any("note of B" in n for n in notes)
    race(lambda: officer.handle(first, "resolve", "false-positive"),
         lambda: officer.handle(second, "resolve", "false-positive"), "_seal")
    users = {u for u, _ in archive.operator.detection.context_files()["feedback"]}
    assert users == {"dr.one", "dr.two"}
