"""Incident response drill over real HTTPS: a compromised clinician account reads 30 patients and shares two studies;
the officer opens an incident, contains the account, scopes the breach and drafts the notifications.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest

from dicomguard.core.events import IncidentRecorded
from dicomguard.errors import DicomGuardError, NotFoundError
from tests.dicom_factory import FakePatient, ct_series
from tests.identity.conftest import add_user
from tests.sharing.conftest import open_link, recipient
from tests.web.conftest import start_server


def _patients(n: int) -> list[FakePatient]:
    return [FakePatient(f"PIDDRILL{i:04d}", f"DRILLPATIENT^NUMBER{i:04d}", "19700101", f"ACCDRILL{i:04d}") for i in range(n)]


@pytest.fixture
def drill(archive):  # type: ignore[no-untyped-def]
    studies: dict[str, str] = {}
    for i, patient in enumerate(_patients(35)):
        data = ct_series(patient, n=1, size=16, seed=100 + i)[0]
        archive.operator.store.ingest(data)
        studies[patient.patient_id] = str(pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID)
    server, stop = start_server(archive)
    try:
        yield server, studies
    finally:
        stop()


def test_contain_scope_and_report_a_compromised_account(drill, events) -> None:  # type: ignore[no-untyped-def]
    server, studies = drill
    archive = server.archive
    mole = add_user(archive, "dr.mole", "radiologist", "RADIOLOGY")
    start = datetime.now(UTC) - timedelta(seconds=1)
    touched = sorted(studies)[:30]
    with server.http() as http:
        login = http.post("/auth/login", json={"username": mole.name, "password": mole.password, "totp": mole.code()})
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        for pid in touched:  # a fresh login's TOTP also covers the bulk step-up
            assert http.get(f"/dicomweb/studies/{studies[pid]}", headers=bearer).status_code == 200
        links = [http.post("/shares", json={"study": studies[pid], "to": "outside drive", "recipient": "internal"}, headers=bearer).json()
                 for pid in touched[:2]]
        assert all("pin" in link for link in links)
        browser = recipient(server)
        assert open_link(browser, links[0]["url"], links[0]["pin"]).status_code == 303
        assert browser.get(f"/dicomweb/studies/{studies[touched[0]]}").status_code == 200  # the recipient reads the study

        officer = archive.operator.incidents
        number = officer.open("dr.mole's account used from an unknown address", severity="critical")
        step = officer.contain_user(number, "dr.mole", "bulk retrieval reported by the detector")
        # The next request of the account is refused and the shares are dead.
        assert http.get(f"/dicomweb/studies/{studies[touched[0]]}", headers=bearer).status_code == 401
        assert browser.get("/s/view").status_code == 401
        browser.close()

    scope = officer.scope(number, user="dr.mole", since=start, until=datetime.now(UTC) + timedelta(seconds=1))
    assert scope.patients == set(touched)
    assert len(scope.shares) == 2 and scope.shares == {link["id"] for link in links}
    counts = scope.counts()
    assert counts["by_action"]["retrieve"]["patients"] == 30 and counts["by_action"]["share"]["patients"] == 2
    assert counts["categories"]["images"] == 30
    assert set(scope.studies) == {studies[pid] for pid in touched}
    # What the first link's recipient read: exactly that study's patient (recorded under share:<id>).
    by_link = officer.scope(number, share=links[0]["id"], since=start, until=datetime.now(UTC) + timedelta(seconds=1))
    assert by_link.patients == {touched[0]} and by_link.addresses == {"127.0.0.1"}
    with pytest.raises(NotFoundError):
        officer.scope(number, share="0" * 16, since=start, until=datetime.now(UTC))
    scope = officer.scope(number, user="dr.mole", since=start, until=datetime.now(UTC) + timedelta(seconds=1))  # for the reports
    shown = officer.show(number)
    assert [s.kind for s in shown.steps] == ["open", "contain-user", "scope", "scope", "scope"]
    assert shown.steps[1].detail["share_links_revoked"] == 2 and shown.steps[1].active
    assert shown.scope is not None and shown.scope["patients"] == 30 and "patient_ids" not in shown.scope

    for kind in ("gdpr-art33", "hipaa-164.404"):
        text = officer.report(number, kind, render="json", organisation="St Example Hospital")
        report = json.loads(text)
        assert not any(pid in text for pid in touched) and "DRILLPATIENT" not in text
        keys = {f["key"] for f in report["fields"]}
        from dicomguard.incident.reports import REQUIRED_FIELDS

        assert set(REQUIRED_FIELDS[kind]) <= keys
        assert any(f["to_complete"] for f in report["fields"])  # what a person must write stands out
        assert "30" in text

    deadlines = {d["name"]: d for d in officer.deadlines(number)}
    aware = officer.show(number).aware_at
    assert datetime.fromisoformat(deadlines["gdpr-authority"]["due"]) == aware + timedelta(hours=72)
    assert deadlines["gdpr-authority"]["status"] == "open" and deadlines["hipaa-individuals"]["status"] == "open"
    officer.note(number, "notified-authority", "phased notification to the supervisory authority")
    assert {d["name"]: d["status"] for d in officer.deadlines(number)}["gdpr-authority"] == "met"
    letters = officer.letters(number, organisation="St Example Hospital")
    assert set(letters) == set(touched)
    for pid, letter in letters.items():
        own = f"DRILLPATIENT NUMBER{pid[-4:]}"
        assert own in letter and letter.count("DRILLPATIENT") == 1  # their own name, nobody else's
    officer.release(number, step, "account holder re-verified; password and TOTP reset")
    with pytest.raises(DicomGuardError, match="closed"):
        officer.close(number, "contained, scoped, notified")
        officer.close(number, "again")
    recorded = [e for e in events if isinstance(e, IncidentRecorded)]
    assert [e.action for e in recorded] == ["open", "contain-user", "scope", "scope", "scope", "report", "report",
                                                      "notified-authority",
                                                      "letters", "release", "close"]


def test_bad_input_gets_clear_errors(archive) -> None:  # type: ignore[no-untyped-def]
    officer = archive.operator.incidents
    number = officer.open("suspicious exports")
    with pytest.raises(NotFoundError, match="no user"):
        officer.contain_user(number, "nobody", "checking a rumour")
    with pytest.raises(NotFoundError, match="no device"):
        officer.contain_device(number, "NOSUCHAE", "checking a rumour")
    with pytest.raises(ValueError, match="before"):
        officer.scope(number, network="10.0.0.0/8", since=datetime.now(UTC), until=datetime.now(UTC) - timedelta(days=1))
    with pytest.raises(ValueError, match="not a network"):
        officer.contain_network(number, "10.0.0.300/8", "checking a rumour")
    with pytest.raises(ValueError, match="reason"):
        officer.read_only(number, "no")
    with pytest.raises(NotFoundError):
        officer.show(number + 100)
    officer.close(number, "false alarm, nothing found")
    with pytest.raises(DicomGuardError, match="already closed"):
        officer.close(number, "false alarm, nothing found")
    with pytest.raises(DicomGuardError, match="closed"):
        officer.contain_user(number, "nobody", "too late for this")


def test_only_security_officers_respond_and_with_a_fresh_totp(archive) -> None:  # type: ignore[no-untyped-def]
    from dicomguard.core.access import AccessDenied, Principal, PrincipalKind, StepUpRequired

    add_user(archive, "sec.sam", "security_officer")
    add_user(archive, "dr.x", "radiologist", "RADIOLOGY")
    officer = Principal(PrincipalKind.USER, "sec.sam", frozenset({"security_officer"}))
    with pytest.raises(StepUpRequired):
        archive.services(officer).incidents.open("needs a fresh TOTP")
    fresh = Principal(PrincipalKind.USER, "sec.sam", frozenset({"security_officer"}), attributes={"mfa_at": datetime.now(UTC)})
    number = archive.services(fresh).incidents.open("opened with a fresh TOTP")
    assert archive.services(officer).incidents.show(number).title == "opened with a fresh TOTP"  # reading needs no step-up
    clinician = Principal(PrincipalKind.USER, "dr.x", frozenset({"radiologist"}), attributes={"mfa_at": datetime.now(UTC)})
    with pytest.raises(AccessDenied):
        archive.services(clinician).incidents.contain_user(number, "sec.sam", "a clinician tries to lock out the officer")
    with pytest.raises(AccessDenied):
        archive.services(clinician).incidents.show(number)


def test_scope_html_and_csv_name_the_patients_and_escape(archive, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dicomguard.app.incidents import Scope, scope_html

    s = Scope("user <script>x</script>", datetime.now(UTC) - timedelta(days=1), datetime.now(UTC))
    s.patients = {"PID<1>"}
    s.by_action = {"retrieve": {"patients": {"PID<1>"}, "studies": {"1.2.3"}}}
    page = scope_html(7, s)
    assert "<script>x" not in page and "&lt;script&gt;" in page and "PID&lt;1&gt;" in page
    assert ["retrieve", "PID<1>", ""] in s.csv_rows()
