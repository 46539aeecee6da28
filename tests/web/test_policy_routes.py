"""Policy routes over real HTTPS (SQLite and PostgreSQL): break-glass, step-up (RFC 9470) before erasure, STOW permission.

Each scenario checks the status *and* the audit trail the core must have written
(refusals as Security Alerts, the emergency override as 110127, accesses under a
grant marked BTG).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from dicomguard.audit.store import AuditStore
from dicomguard.core.access import Action
from dicomguard.core.events import AccessRefused, UserAuthentication
from dicomguard.core.query import IndexQuery
from dicomguard.identity.tokens import token_digest
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import ApiToken, AuthSession, BreakGlassGrant, User
from tests.dicom_factory import ALICE, BOB, ct_series, dataset_of
from tests.identity.conftest import Account, add_user
from tests.web.multipart_util import encode, split

SECURITY_ALERT, TRANSFERRED, QUERY, STUDY_DELETED = "110113", "110104", "110112", "110105"
EMERGENCY_OVERRIDE_STARTED, BTG = "110127", "BTG"


# -- helpers -----------------------------------------------------------------------------------


def _account(archive, name: str, role: str, department: str | None = "RADIOLOGY") -> Account:  # type: ignore[no-untyped-def]
    return add_user(archive, name, role, department)


def _audit(archive, user: str | None = None) -> list[dict]:  # type: ignore[no-untyped-def]
    """Every audit record's summary (decrypted; bypasses the audited reader), optionally of one user."""
    found = [e.summary() for e in AuditStore(archive.ctx).iter_all()]
    return [e for e in found if user is None or e["user"] == user]


def _store(web, *patients) -> dict[str, tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    """Ingest one CT slice per patient as the operator (department RADIOLOGY); (study, series, sop) by Patient ID."""
    stored = {}
    for n, patient in enumerate(patients):
        data = ct_series(patient, n=1, seed=n + 1)[0]
        web.archive.operator.store.ingest(data)
        ds = dataset_of(data)
        stored[patient.patient_id] = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    return stored


def _study_uids(r) -> list[str]:  # type: ignore[no-untyped-def]
    return [] if r.status_code == 204 else sorted(s["0020000D"]["Value"][0] for s in r.json())


# -- break-glass -------------------------------------------------------------------------------


def test_break_glass_opens_one_patient_for_a_time_and_is_alerted(web, events) -> None:
    stored = _store(web, ALICE, BOB)
    alice_study, alice_series, alice_sop = stored[ALICE.patient_id]
    bob_study = stored[BOB.patient_id][0]
    token = web.token("dr.cardio", "radiologist", department="CARDIOLOGY")
    with web.http(token) as http:
        # Another department: nothing to find, nothing to retrieve (answered like "not found").
        assert http.get("/dicomweb/studies").status_code == 204
        assert http.get(f"/dicomweb/studies/{alice_study}").status_code == 404
        assert http.get(f"/dicomweb/studies/{alice_study}/series/{alice_series}/instances/{alice_sop}").status_code == 404

        # No reason, or a token one: refused with a clear message, and the refusal is a Security Alert.
        no_reason = http.post("/auth/break-glass", json={"patient_id": ALICE.patient_id})
        assert no_reason.status_code == 400, no_reason.text
        assert "reason of at least 10 characters" in no_reason.json()["detail"]
        assert http.post("/auth/break-glass", json={"patient_id": ALICE.patient_id, "reason": "  urgent  "}).status_code == 400
        refused = [e for e in events if isinstance(e, AccessRefused) and e.action is Action.BREAK_GLASS]
        assert len(refused) == 2 and all(e.principal.name == "dr.cardio" for e in refused)
        alerts = [e for e in _audit(web.archive, "dr.cardio")
                  if e["event_id"] == SECURITY_ALERT and "break-glass refused" in e["description"]]
        assert len(alerts) == 2 and all(e["outcome"] != 0 for e in alerts)
        assert not [e for e in _audit(web.archive) if EMERGENCY_OVERRIDE_STARTED in e["event_types"]]

        # A proper reason: granted for this patient only, for the configured time.
        before = datetime.now(UTC)
        r = http.post("/auth/break-glass",
                      json={"patient_id": ALICE.patient_id, "reason": "Trauma bay 2: unconscious patient, prior CT needed"})
        assert r.status_code == 201, r.text
        grant = r.json()
        assert set(grant) == {"grant_id", "expires_at"}
        expires = datetime.fromisoformat(grant["expires_at"])
        assert timedelta(minutes=59) < expires - before <= timedelta(minutes=61)

        # Now the patient is readable and findable; the other patient is not.
        got = http.get(f"/dicomweb/studies/{alice_study}", headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert got.status_code == 200, got.text
        parts = split(got.headers["content-type"], got.content)
        assert [dataset_of(body).SOPInstanceUID for _, body in parts] == [alice_sop]
        assert _study_uids(http.get("/dicomweb/studies")) == [alice_study]
        assert http.get(f"/dicomweb/studies/{bob_study}").status_code == 404
        assert http.get("/dicomweb/studies", params={"PatientID": BOB.patient_id}).status_code == 204

    trail = _audit(web.archive, "dr.cardio")
    started = [e for e in trail if EMERGENCY_OVERRIDE_STARTED in e["event_types"]]
    assert len(started) == 1 and started[0]["event_id"] == SECURITY_ALERT
    assert started[0]["patients"] == [ALICE.patient_id] and "Trauma bay 2" in started[0]["description"]
    transfers = [e for e in trail if e["event_id"] == TRANSFERRED]
    assert len(transfers) == 1 and BTG in transfers[0]["event_types"] and transfers[0]["patients"] == [ALICE.patient_id]
    queries = [e for e in trail if e["event_id"] == QUERY]
    # The query before the grant is an ordinary one; the ones answered under the grant are marked.
    assert BTG not in queries[0]["event_types"]
    assert any(BTG in q["event_types"] for q in queries[1:])

    # Expiry: the grant ends, and so does the access.
    with write_session(web.archive.ctx.engine) as s:
        s.execute(update(BreakGlassGrant).where(BreakGlassGrant.user_name == "dr.cardio")
                  .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with web.http(token) as http:
        assert http.get(f"/dicomweb/studies/{alice_study}").status_code == 404
        assert http.get("/dicomweb/studies").status_code == 204


def test_break_glass_is_for_clinical_roles_and_no_oracle_of_who_is_a_patient(web, events) -> None:
    _store(web, ALICE)
    claim = {"patient_id": ALICE.patient_id, "reason": "Checking something for an emergency"}
    for name, role in (("sec.officer", "security_officer"), ("root.admin", "admin")):
        with web.http(web.token(name, role)) as http:
            r = http.post("/auth/break-glass", json=claim)
            assert r.status_code == 403, (role, r.text)
            assert r.json()["error"] == "forbidden"
    with read_session(web.archive.ctx.engine) as s:
        assert s.scalars(select(BreakGlassGrant)).all() == []
    assert not [e for e in _audit(web.archive) if EMERGENCY_OVERRIDE_STARTED in e["event_types"]]
    # An unknown Patient ID answers exactly like a known one: same status, same fields; the grant opens nothing.
    with web.http(web.token("dr.elsewhere", "cardiologist", department="CARDIOLOGY")) as http:
        unknown = http.post("/auth/break-glass", json={"patient_id": "PID-NOBODY-HERE", "reason": "Trauma bay 2: no such patient"})
        known = http.post("/auth/break-glass", json={"patient_id": ALICE.patient_id, "reason": "Trauma bay 2: the real patient"})
        assert (unknown.status_code, sorted(unknown.json())) == (known.status_code, sorted(known.json())) == (201, ["expires_at", "grant_id"])
        missing = http.post("/auth/break-glass", json={"reason": "Trauma bay 2: no patient id"})
        assert missing.status_code == 400 and "patient_id" in missing.json()["detail"]
    with read_session(web.archive.ctx.engine) as s:
        assert [g.id for g in s.scalars(select(BreakGlassGrant))] == [known.json()["grant_id"]]
    refused = {(e.principal.name, e.action) for e in events if isinstance(e, AccessRefused)}
    assert {("sec.officer", Action.BREAK_GLASS), ("root.admin", Action.BREAK_GLASS)} <= refused
    # the officer sees both claims, and which Patient ID matched nothing
    started = [e for e in _audit(web.archive) if EMERGENCY_OVERRIDE_STARTED in e["event_types"]]
    assert sorted(e["patients"] for e in started) == sorted([["PID-NOBODY-HERE"], [ALICE.patient_id]])


# -- step-up before erasure ----------------------------------------------------------------------


def _age_mfa(archive, token: str, by: timedelta) -> None:  # type: ignore[no-untyped-def]
    with write_session(archive.ctx.engine) as s:
        session_id = s.scalar(select(ApiToken.session_id).where(ApiToken.token_sha256 == token_digest(token)))
        s.execute(update(AuthSession).where(AuthSession.id == session_id).values(mfa_at=datetime.now(UTC) - by))


def test_erase_needs_a_fresh_totp_confirmation(web, events) -> None:
    _store(web, ALICE, BOB)
    admin = _account(web.archive, "root.admin", "admin", department=None)
    erase = {"patient_id": ALICE.patient_id, "reason": "GDPR art. 17 request #42"}
    with web.http() as http:
        login_code = admin.code()
        r = http.post("/auth/login", json={"username": admin.name, "password": admin.password, "totp": login_code})
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        _age_mfa(web.archive, token, timedelta(minutes=10))

        stale = http.post("/admin/erase", json=erase, headers=bearer)
        assert stale.status_code == 401, stale.text
        challenge = stale.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert 'error="insufficient_user_authentication"' in challenge and "max_age=300" in challenge
        assert 'error_description="' in challenge
        assert stale.json()["error"] == "insufficient_user_authentication"
        assert len(web.archive.ctx.patients.find(ALICE.patient_id, None)) == 1  # nothing erased
        assert [e.action for e in events if isinstance(e, AccessRefused)] == [Action.ERASE]

        # The code that opened the session cannot confirm anything again (replay), nor can a wrong one.
        assert http.post("/auth/step-up", json={"totp": login_code}, headers=bearer).status_code == 401
        assert http.post("/auth/step-up", json={"totp": "abc"}, headers=bearer).status_code == 401
        assert http.post("/admin/erase", json=erase, headers=bearer).status_code == 401  # still stale

        fresh = admin.code(1)
        up = http.post("/auth/step-up", json={"totp": fresh}, headers=bearer)
        assert up.status_code == 200, up.text
        assert up.json()["max_age"] == 300
        assert abs(datetime.fromisoformat(up.json()["mfa_at"]) - datetime.now(UTC)) < timedelta(seconds=30)
        assert http.post("/auth/step-up", json={"totp": fresh}, headers=bearer).status_code == 401  # replayed

        done = http.post("/admin/erase", json=erase, headers=bearer)
        assert done.status_code == 200, done.text
        result = done.json()
        assert result["studies"] == 1 and result["instances"] == 1 and len(result["patient_refs"]) == 1
        assert web.archive.ctx.patients.find(ALICE.patient_id, None) == []
        assert {i.patient_ref for i in IndexQuery(web.archive.ctx).instances()} == {
            ref for ref, _ in web.archive.ctx.patients.find(BOB.patient_id, None)}  # Bob untouched
        assert http.post("/admin/erase", json=erase, headers=bearer).status_code == 404  # gone

    auth = [e for e in events if isinstance(e, UserAuthentication) and e.user == "root.admin"]
    assert [e.kind for e in auth] == ["login", "failure", "failure", "login", "failure"]
    assert all("step-up" in e.reason for e in auth[1:])
    assert [e for e in _audit(web.archive) if e["event_id"] == STUDY_DELETED and e["patients"] == [ALICE.patient_id]]


def test_step_up_needs_a_login_session_and_the_erase_role(web, events) -> None:
    _store(web, ALICE)
    erase = {"patient_id": ALICE.patient_id, "reason": "GDPR art. 17 request #43"}
    with web.http(web.token("api.admin", "admin", department=None)) as http:
        # An API token has no second factor at all: the erasure asks for step-up, which needs a login session.
        r = http.post("/admin/erase", json=erase)
        assert r.status_code == 401 and "insufficient_user_authentication" in r.headers["www-authenticate"]
        no_session = http.post("/auth/step-up", json={"totp": "123456"})
        assert no_session.status_code == 400 and "login session" in no_session.json()["detail"]
    dr = _account(web.archive, "dr.rad", "radiologist")
    with web.http() as http:
        token = http.post("/auth/login", json={"username": dr.name, "password": dr.password, "totp": dr.code()}).json()["access_token"]
        refused = http.post("/admin/erase", json=erase, headers={"Authorization": f"Bearer {token}"})  # fresh MFA, wrong role
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
        assert "www-authenticate" not in refused.headers
    assert len(web.archive.ctx.patients.find(ALICE.patient_id, None)) == 1
    erase_refusals = [e.principal.name for e in events if isinstance(e, AccessRefused) and e.action is Action.ERASE]
    assert erase_refusals == ["api.admin", "dr.rad"]
    alerts = [e for e in _audit(web.archive, "dr.rad") if e["event_id"] == SECURITY_ALERT and "erase refused" in e["description"]]
    assert len(alerts) == 1


# -- STOW permission ---------------------------------------------------------------------------


def test_stow_needs_the_store_permission(web, events) -> None:
    data = ct_series(ALICE, n=2)
    ctype, body = encode(data)
    with web.http(web.token("dr.readonly", "radiologist")) as http:
        r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert IndexQuery(web.archive.ctx).instances() == []
    assert [(e.principal.name, e.action) for e in events if isinstance(e, AccessRefused)] == [("dr.readonly", Action.STORE)]
    alerts = [e for e in _audit(web.archive, "dr.readonly") if e["event_id"] == SECURITY_ALERT]
    assert len(alerts) == 1 and "store refused" in alerts[0]["description"]
    with web.http(web.token("tech.tina", "technologist")) as http:
        r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype, "Accept": "application/dicom+json"})
        assert r.status_code == 200, r.text
    assert {i.sop_instance_uid for i in IndexQuery(web.archive.ctx).instances()} == {dataset_of(d).SOPInstanceUID for d in data}


# -- scoped API tokens ---------------------------------------------------------------------------


def test_scoped_tokens_cannot_step_outside_their_scope(web, events) -> None:
    """A store-only service token is write-only even for a user whose role may read; a query-only one cannot store."""
    from tests.web.conftest import issue_token

    stored = _store(web, ALICE)
    study, series, sop = stored[ALICE.patient_id]
    web.user("svc.upload", "radiologist")  # the account could read RADIOLOGY studies; the token may not
    store_only = issue_token(web.archive.ctx.engine, "svc.upload", timedelta(hours=1), ["store"])
    query_only = issue_token(web.archive.ctx.engine, "svc.upload", timedelta(hours=1), ["query"])
    unscoped = issue_token(web.archive.ctx.engine, "svc.upload", timedelta(hours=1))
    ctype, body = encode(ct_series(BOB, n=1, seed=9))
    with web.http(store_only) as http:
        assert http.get("/dicomweb/studies").status_code == 204  # nothing visible
        assert http.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}").status_code == 404
    with web.http(query_only) as http:
        assert _study_uids(http.get("/dicomweb/studies")) == [study]
        assert http.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}").status_code == 404  # no retrieve
        assert http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype}).status_code == 403
    with web.http(unscoped) as http:
        assert http.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}").status_code == 200
    refused = [e for e in events if isinstance(e, AccessRefused) and e.principal.name == "svc.upload"]
    assert {e.action for e in refused} == {Action.RETRIEVE, Action.STORE}
    assert all("limited to" in e.reason for e in refused)
    with read_session(web.archive.ctx.engine) as s:
        assert set(s.scalars(select(ApiToken.scopes).where(ApiToken.user_name == "svc.upload"))) == {None, "query", "store"}

    # an upload service: a technologist account (store + recent own work) behind a store-only token
    web.user("svc.modality", "technologist")
    with write_session(web.archive.ctx.engine) as s:
        s.execute(update(User).where(User.name == "svc.modality").values(attributes='{"modalities": ["CT"]}'))
    uploader = issue_token(web.archive.ctx.engine, "svc.modality", timedelta(hours=1), ["store"])
    with web.http(uploader) as http:
        assert http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype}).status_code == 200
        assert http.get("/dicomweb/studies").status_code == 204  # cannot read back even what it stored
    assert len(IndexQuery(web.archive.ctx).instances()) == 2
    with web.http(issue_token(web.archive.ctx.engine, "svc.modality", timedelta(hours=1))) as http:
        assert len(_study_uids(http.get("/dicomweb/studies"))) == 2  # the account itself may: the scope is what refused
