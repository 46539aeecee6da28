"""What people do in the console, through the real server: each action goes through its service, is decided by the
policies, asks for a fresh second factor where they say so, and is recorded as exactly one action (or none, for reads
without PHI)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from dicomguard.core.access import Principal
from dicomguard.identity.tokens import create_token
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import AuditRecord, AuthSession, User
from tests.console.conftest import ConsoleClient, Site
from tests.dicom_factory import ALICE
from tests.sharing.conftest import open_link, recipient
from tests.test_every_action_recorded import _check_nothing, _check_one_action, _state


def _raise_alert(site: Site, user: str, severity: str = "medium") -> int:
    now = datetime.now(UTC)
    alert_id, _ = site.archive.services(Principal.operator("detector")).detection.raise_alert(
        user, "bulk-retrieve", severity, now - timedelta(minutes=5), now, (ALICE.patient_id,),
        "retrieved 40 studies of another department in 5 minutes; none ordered by or assigned to the user",
        ["evt-1: retrieve 1.2.3 at 10:01", "distinct patients 40 (peer p99: 6)"])
    return alert_id


def _stale_mfa(site: Site, user: str) -> None:
    """The session's second factor was confirmed an hour ago (step-up policies want 5 minutes)."""
    with write_session(site.archive.ctx.engine) as s:
        s.execute(update(AuthSession).where(AuthSession.user_name == user).values(mfa_at=datetime.now(UTC) - timedelta(hours=1)))


def _bearer(site: Site, user: str) -> str:
    with write_session(site.archive.ctx.engine) as s:
        return create_token(s, user, timedelta(hours=1))


def test_each_console_action_is_one_recorded_action_and_each_listing_none(site: Site, client: ConsoleClient) -> None:
    archive = site.archive
    alert_id = _raise_alert(site, "dr.rad")
    before = _state(archive)
    assert client.sign_in(site.accounts["officer"]).status_code == 303
    _check_one_action(archive, before, 1, "POST /console/login")
    for page in ("/console/", "/console/login", "/console/static/console.css", "/console/overview", "/console/alerts",
                 "/console/audit", "/console/audit/patient", "/console/people", "/console/devices", "/console/incidents",
                 "/console/risks", "/console/posture", "/console/backups", "/console/studies", "/console/shares"):
        before = _state(archive)
        assert client.get(page).status_code in (200, 303), page
        _check_nothing(archive, before, f"GET {page}")
    steps = [
        ("GET", f"/console/alerts/{alert_id}", None),
        ("POST", f"/console/alerts/{alert_id}/handle", {"action": "acknowledge", "note": "calling the head of department"}),
        ("POST", f"/console/alerts/{alert_id}/contain", {"level": "step-up"}),
        ("POST", f"/console/alerts/{alert_id}/release", {"user": "dr.rad", "reason": "interviewed: covering for a colleague"}),
        ("POST", "/console/audit", {"user": "dr.rad"}),
        ("POST", "/console/audit", {"user": "dr.rad", "format": "csv"}),
        ("POST", "/console/audit/patient", {"patient": ALICE.patient_id}),
    ]
    for method, path, data in steps:
        before = _state(archive)
        r = client.get(path) if method == "GET" else client.post(path, data)
        assert r.status_code in (200, 303), f"{method} {path}: {r.status_code} {r.text[-500:]}"
        _check_one_action(archive, before, 1, f"{method} {path}")
    before = _state(archive)
    assert client.post("/console/logout").status_code == 303
    _check_one_action(archive, before, 1, "POST /console/logout")

    client.sign_in(site.accounts["admin"])
    for path, data in (("/console/people/t.tech/disable", {}), ("/console/people/t.tech/enable", {}),
                       ("/console/people/t.tech/reset-mfa", {}), ("/console/devices/allow-list", {"ae_title": "OLDCT", "ip": "127.0.0.9"}),
                       ("/console/devices/allow-list", {"change": "remove", "ae_title": "OLDCT", "ip": "127.0.0.9"})):
        before = _state(archive)
        r = client.post(path, data)
        assert r.status_code in (200, 303), f"POST {path}: {r.status_code} {r.text[-500:]}"
        _check_one_action(archive, before, 1, f"POST {path}")
    archive.operator.devices.add("CT9", "CT scanner 9", operations=("echo", "store"))
    before = _state(archive)
    assert client.post("/console/devices/CT9/revoke").status_code == 303
    _check_one_action(archive, before, 1, "POST /console/devices/{ae_title}/revoke")
    client.post("/console/logout")

    client.sign_in(site.accounts["rad"])
    for path, data, status in (("/console/studies", {"name": "*"}, 200), ("/console/studies/share", {"study": site.alice_study}, 200),
                               ("/console/shares", {"study": site.alice_study, "to": "Dr. B, tumour board", "recipient": "internal"}, 200)):
        before = _state(archive)
        r = client.post(path, data)
        assert r.status_code == status, f"POST {path}: {r.status_code} {r.text[-500:]}"
        _check_one_action(archive, before, 1, f"POST {path}")
    share_id = re.search(r'id="share-([0-9a-f]+)"', client.get("/console/shares").text).group(1)  # type: ignore[union-attr]
    before = _state(archive)
    assert client.post(f"/console/shares/{share_id}/revoke").status_code == 303
    _check_one_action(archive, before, 1, "POST /console/shares/{share_id}/revoke")


def test_officer_contains_a_user_from_an_alert_after_step_up_and_the_users_next_request_is_refused(site: Site,
                                                                                                    client: ConsoleClient) -> None:
    rad_token = _bearer(site, "dr.rad")
    with site.server.http(rad_token) as rad:
        assert rad.get("/dicomweb/studies").status_code == 200
    alert_id = _raise_alert(site, "dr.rad")
    officer = site.accounts["officer"]
    client.sign_in(officer)
    listing = client.get("/console/alerts").text
    assert f'href="/console/alerts/{alert_id}"' in listing and ALICE.patient_id not in listing  # the list shows no patient
    page = client.get(f"/console/alerts/{alert_id}").text
    assert "none ordered by or assigned to the user" in page and "distinct patients 40 (peer p99: 6)" in page
    assert ALICE.patient_id in page
    _stale_mfa(site, officer.name)
    asked = client.post(f"/console/alerts/{alert_id}/contain", {"level": "suspend", "note": "bulk export before leaving"})
    assert asked.status_code == 401 and 'id="step-up"' in asked.text
    assert 'name="level" value="suspend"' in asked.text  # the form comes back with what was entered
    with read_session(site.archive.ctx.engine) as s:
        assert not s.get(User, "dr.rad").disabled  # nothing happened yet
    wrong = client.post(f"/console/alerts/{alert_id}/contain", {"level": "suspend", "step_up_totp": "000000"})
    assert wrong.status_code == 401 and "not accepted" in wrong.text
    done = client.post(f"/console/alerts/{alert_id}/contain", {"level": "suspend", "note": "bulk export before leaving",
                                                               "step_up_totp": officer.code(1)})
    assert done.status_code == 303, done.text[-800:]
    assert 'id="alert-containment">suspend' in client.get(f"/console/alerts/{alert_id}").text
    with site.server.http(rad_token) as rad:
        assert rad.get("/dicomweb/studies").status_code == 401  # the user's next DICOMweb request
    released = client.post(f"/console/alerts/{alert_id}/release", {"user": "dr.rad", "reason": "interviewed, handover material"})
    assert released.status_code == 303
    with read_session(site.archive.ctx.engine) as s:
        assert not s.get(User, "dr.rad").disabled
    with site.server.http(_bearer(site, "dr.rad")) as rad:
        assert rad.get("/dicomweb/studies").status_code == 200


def test_a_false_positive_disposition_with_a_note_resolves_the_alert(site: Site, client: ConsoleClient) -> None:
    alert_id = _raise_alert(site, "dr.rad", "low")
    client.sign_in(site.accounts["officer"])
    r = client.post(f"/console/alerts/{alert_id}/handle", {"action": "resolve", "disposition": "false-positive",
                                                           "note": "tumour board preparation"})
    assert r.status_code == 303
    page = client.get(f"/console/alerts/{alert_id}").text
    assert "resolved (false-positive)" in page and "tumour board preparation" in page
    assert f'href="/console/alerts/{alert_id}"' not in client.get("/console/alerts").text  # unresolved only, by default
    assert f'href="/console/alerts/{alert_id}"' in client.get("/console/alerts?status=all").text
    missing = client.post(f"/console/alerts/{alert_id}/handle", {"action": "resolve"})
    assert missing.status_code == 400 and "disposition" in missing.text


def test_audit_search_patient_history_and_csv_export_are_recorded_reads(site: Site, client: ConsoleClient) -> None:
    with site.server.http(_bearer(site, "dr.rad")) as rad:
        assert rad.get(f"/dicomweb/studies/{site.alice_study}/metadata").status_code == 200
    client.sign_in(site.accounts["officer"])
    found = client.post("/console/audit", {"patient": ALICE.patient_id, "since": "1d"})
    assert found.status_code == 200 and "dr.rad" in found.text and 'id="audit-results"' in found.text
    assert ALICE.patient_id not in str(found.url)  # POSTed, never in the URL
    export = client.post("/console/audit", {"patient": ALICE.patient_id, "format": "csv"})
    assert export.headers["content-type"].startswith("text/csv") and export.headers["cache-control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert rows and all(ALICE.patient_id in r["patients"] for r in rows) and any(r["user"] == "dr.rad" for r in rows)
    history = client.post("/console/audit/patient", {"patient": ALICE.patient_id})
    assert history.status_code == 200 and "<td>dr.rad</td>" in history.text
    bad = client.post("/console/audit", {"since": "last tuesday"})
    assert bad.status_code == 400 and "since" in bad.text
    used = [e for e in site.archive.operator.audit.search(_used_filter())
            if e.message.requestor() and e.message.requestor().user_id == "sec.officer"]  # type: ignore[union-attr]
    purposes = " ".join(str(value) for e in used for o in e.message.objects for key, value in o.details if key == "Purpose")
    for purpose in ("console search", "console export", "patient history"):
        assert purpose in purposes, purposes


def _used_filter():  # type: ignore[no-untyped-def]
    from dicomguard.audit.store import AuditFilter

    return AuditFilter(event="audit-log-used")


def test_a_radiologist_sees_only_their_studies_and_an_invisible_study_answers_like_a_missing_one(site: Site,
                                                                                                client: ConsoleClient) -> None:
    site.archive.operator.studies.set_access(site.bob_study, department="CARDIOLOGY")
    client.sign_in(site.accounts["rad"])
    listing = client.post("/console/studies", {"name": "*"}).text
    assert site.alice_study in listing and site.bob_study not in listing
    hidden = client.post("/console/studies/share", {"study": site.bob_study})
    missing = client.post("/console/studies/share", {"study": "1.2.826.0.1.3680043.99.1"})
    assert hidden.status_code == missing.status_code == 404 and hidden.text == missing.text
    forged = client.post("/console/shares", {"study": site.bob_study, "to": "my brother-in-law", "recipient": "internal"})
    forged_missing = client.post("/console/shares", {"study": "1.2.826.0.1.3680043.99.1", "to": "x", "recipient": "internal"})
    assert forged.status_code == forged_missing.status_code == 404 and forged.text == forged_missing.text


def test_one_click_share_shows_link_and_pin_once_and_the_link_opens(site: Site, client: ConsoleClient) -> None:
    client.sign_in(site.accounts["rad"])
    form = client.post("/console/studies/share", {"study": site.alice_study})
    assert form.status_code == 200 and 'id="share"' in form.text
    done = client.post("/console/shares", {"study": site.alice_study, "to": "Dr. B, tumour board", "recipient": "internal",
                                           "expires_hours": "24", "download": "on"})
    assert done.status_code == 200, done.text[-500:]
    link = re.search(r'id="share-link">([^<]+)<', done.text).group(1)  # type: ignore[union-attr]
    pin = re.search(r'id="share-pin">(\d+)<', done.text).group(1)  # type: ignore[union-attr]
    assert pin not in client.get("/console/shares").text  # shown once
    with recipient(site.server) as browser:
        assert open_link(browser, link, pin).status_code == 303
        assert browser.get("/s/view").status_code == 200
    research = client.post("/console/shares", {"study": site.alice_study, "to": "registry study 12", "recipient": "research"})
    assert research.status_code == 200 and "de-identified (required by policy)" in research.text
    external = client.post("/console/shares", {"study": site.alice_study, "to": "Dr. C, St. Elsewhere", "recipient": "external"})
    assert external.status_code == 200  # signed in a moment ago: the TOTP of the sign-in is fresh enough
    _stale_mfa(site, "dr.rad")
    asked = client.post("/console/shares", {"study": site.alice_study, "to": "Dr. D, elsewhere", "recipient": "external"})
    assert asked.status_code == 401 and 'id="step-up"' in asked.text  # the policy: external shares need a fresh factor


def test_an_administrator_disables_an_account_and_its_console_session_ends(site: Site, client: ConsoleClient) -> None:
    rad = site.client()
    try:
        rad.sign_in(site.accounts["rad"])
        assert rad.get("/console/studies").status_code == 200
        client.sign_in(site.accounts["admin"])
        assert client.post("/console/people/dr.rad/disable").status_code == 303
        assert rad.get("/console/studies").status_code == 303  # signed out at once
        secret = client.post("/console/people/dr.rad/reset-mfa")
        assert secret.status_code == 200 and "Provisioning URI" in secret.text and "otpauth://" in secret.text
        assert "otpauth://" not in client.get("/console/people").text
        own = client.post("/console/people/it.admin/disable")
        assert own.status_code == 403  # nobody administers their own account (a policy)
        assert client.post("/console/people/dr.rad/rename").status_code == 400
    finally:
        rad.close()


def test_failed_sign_ins_are_throttled_then_locked(site: Site, client: ConsoleClient) -> None:
    officer = site.accounts["officer"]
    statuses = []
    for _ in range(6):
        client.get("/console/login")
        statuses.append(client.post("/console/login", {"username": officer.name, "password": "wrong-password-1",
                                                       "totp": "000000"}).status_code)
    assert statuses[0] == 401 and statuses[-1] == 429
    client.get("/console/login")
    locked = client.post("/console/login", {"username": officer.name, "password": officer.password, "totp": officer.code()})
    assert locked.status_code == 429  # the right factors do not open a locked account


def test_the_overview_counts_this_hours_accesses_and_refusals(site: Site, client: ConsoleClient) -> None:
    with site.server.http(_bearer(site, "dr.rad")) as rad:
        for _ in range(3):
            assert rad.get("/dicomweb/studies").status_code == 200
    with site.server.http(_bearer(site, "t.tech")) as tech:
        assert tech.get(f"/dicomweb/studies/{site.bob_study}/metadata").status_code in (403, 404)  # refused and recorded
    with read_session(site.archive.ctx.engine) as s:
        assert s.scalar(select(AuditRecord.seq).limit(1)) is not None
    client.sign_in(site.accounts["officer"])
    page = client.get("/console/overview").text
    accesses = int(re.search(r'id="tile-activity">.*?<p class="big">(\d+)</p>.*?(\d+) refused', page, re.S).group(1))  # type: ignore[union-attr]
    refused = int(re.search(r'id="tile-activity">.*?(\d+) refused', page, re.S).group(1))  # type: ignore[union-attr]
    assert accesses >= 3 and refused >= 1
    assert 'id="chart-accesses"' in page and 'id="chart-refused"' in page and 'id="chart-alerts"' in page
    assert 'id="tile-posture"' in page and 'id="tile-alerts"' in page


def test_the_buttons_offered_follow_the_policies(site: Site, client: ConsoleClient) -> None:
    site.archive.operator.devices.add("CT9", "CT scanner 9", operations=("echo", "store"))
    client.sign_in(site.accounts["officer"])  # reads accounts and devices (access review), changes nothing
    people, devices = client.get("/console/people").text, client.get("/console/devices").text
    assert 'id="account-dr.rad"' in people and "/console/people/dr.rad/disable" not in people
    assert 'id="device-CT9"' in devices and "/console/devices/CT9/revoke" not in devices and 'id="allow-add"' not in devices
    assert client.post("/console/people/dr.rad/disable").status_code == 403  # and a forged form is refused
    client.post("/console/logout")
    client.sign_in(site.accounts["admin"])
    people, devices = client.get("/console/people").text, client.get("/console/devices").text
    assert "/console/people/dr.rad/disable" in people and "/console/devices/CT9/revoke" in devices and 'id="allow-add"' in devices
