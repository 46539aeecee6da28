"""Share links over real HTTPS (SQLite and PostgreSQL): create, open with the PIN, read exactly the scope, download, revoke.

Each insider attempt is made with valid credentials and valid-looking data: the link
without its PIN, a wrong PIN, an expired, revoked or used-up link, another study's UID
in the path, QIDO for other studies, a write with the recipient's cookie, a cross-site
form, a de-identified share asking for the identified original, a series-limited link
asking for another series. Each is refused (looking like "nothing there" where it
must) and leaves its trace in the audit trail.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta

import pydicom
import pytest
from sqlalchemy import select, update

from dicomguard.audit.store import AuditStore
from dicomguard.core.access import Action
from dicomguard.core.events import AccessRefused, ShareCreated, ShareRevoked, UserAuthentication
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import AuthSession, ShareLink, ShareSession
from dicomguard.web.auth import SHARE_COOKIE
from tests.identity.conftest import add_user
from tests.sharing.conftest import Shared, open_link, recipient, token_of
from tests.web.multipart_util import encode

QIDO_STUDIES = "/dicomweb/studies"


def _create(shared: Shared, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("recipient", "Dr. Second Opinion, St Elsewhere: review of the chest CT")
    kw.setdefault("recipient_kind", "internal")
    return shared.archive.operator.shares.create(kw.pop("study", shared.alice_study), **kw)


def _url(created) -> str:  # type: ignore[no-untyped-def]
    return f"https://x/s/{created.token}"


def _audit(shared: Shared, user: str) -> list[dict]:  # type: ignore[type-arg]
    return [e.summary() for e in AuditStore(shared.archive.ctx).iter_all() if e.summary()["user"] == user]


def test_create_over_https_open_with_pin_and_read_exactly_the_study(shared: Shared, events) -> None:  # type: ignore[no-untyped-def]
    token = shared.server.token("dr.ann", "radiologist")
    with shared.server.http(token) as http:
        r = http.post("/shares", json={"study": shared.alice_study, "to": "Dr. B, cardiology, second opinion", "recipient": "internal",
                                       "expires_hours": 24, "download": True})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["url"].startswith(shared.server.url + "/s/") and len(token_of(body["url"])) == 43
    assert body["pin"].isdigit() and len(body["pin"]) == 6
    assert [e.share_id for e in events if isinstance(e, ShareCreated)] == [body["id"]]
    with read_session(shared.archive.ctx.engine) as s:
        row = s.get(ShareLink, body["id"])
        assert row is not None and body["pin"].encode() not in row.sealed and token_of(body["url"]).encode() not in row.token_sha256

    with recipient(shared.server) as browser:
        page = browser.get(f"/s/{token_of(body['url'])}")
        assert page.status_code == 200 and 'name="pin"' in page.text
        assert "script" not in page.headers["content-security-policy"] and page.headers["cache-control"] == "no-store"
        opened = open_link(browser, body["url"], body["pin"])
        assert opened.status_code == 303 and opened.headers["location"] == "/s/view"
        cookie = opened.headers["set-cookie"]
        assert SHARE_COOKIE in cookie and "HttpOnly" in cookie and "Secure" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        view = browser.get("/s/view")
        assert view.status_code == 200, view.text
        assert view.text.count('class="frame"') == 6  # 4 + 2 images, all shown (at most 6 per series)
        assert shared.alice_study in view.text and shared.bob_study not in view.text
        img = browser.get(f"/dicomweb/studies/{shared.alice_study}/series/{shared.alice_series[0]}/instances/"
                          + _first_instance(shared, shared.alice_series[0]) + "/rendered", headers={"Accept": "image/*"})
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"

        # QIDO with the recipient's session: exactly the shared study.
        studies = browser.get(QIDO_STUDIES, headers={"Accept": "application/dicom+json"})
        assert studies.status_code == 200
        assert [s["0020000D"]["Value"][0] for s in studies.json()] == [shared.alice_study]
        # Another study by UID answers like one that does not exist.
        assert browser.get(f"/dicomweb/studies/{shared.bob_study}/metadata").status_code == 404
        assert browser.get(f"/dicomweb/studies/{shared.bob_study}/series", headers={"Accept": "application/dicom+json"}
                           ).status_code in (200, 204)
        assert browser.get(f"/dicomweb/studies/{shared.bob_study}/series", headers={"Accept": "application/dicom+json"}).text in ("", "[]")

        download = browser.get("/s/download")
        assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(download.content)) as z:
        names = z.namelist()
        assert "DICOMDIR" in names
        members = {str(pydicom.dcmread(io.BytesIO(z.read(n))).SOPInstanceUID): z.read(n) for n in names if n != "DICOMDIR"}
    alice = {uid: data for uid, data in shared.objects.items() if pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID == shared.alice_study}
    assert members == alice  # byte-identical to what the archive stored

    # Every use is audited with the recipient's address; the owner sees the uses.
    records = _audit(shared, f"share:{body['id']}")
    events = [r["event"] for r in records]
    assert len(events) >= 5 and {r["address"] for r in records} == {"127.0.0.1"}, records
    assert any(r["studies"] == [shared.alice_study] for r in records)
    assert not any(shared.bob_study in r["studies"] for r in records if r["outcome"] == "0")
    shown = shared.archive.operator.shares.show(body["id"])
    assert [u[1] for u in shown.uses_log] == ["opened", "viewed", "downloaded"]
    assert all(u[2] == "127.0.0.1" for u in shown.uses_log) and shown.uses == 1


def _first_instance(shared: Shared, series_uid: str) -> str:
    for uid, data in shared.objects.items():
        if pydicom.dcmread(io.BytesIO(data)).SeriesInstanceUID == series_uid:
            return uid
    raise AssertionError(series_uid)


def test_the_token_alone_or_a_wrong_pin_opens_nothing_and_a_few_wrong_pins_lock_the_link(shared: Shared, events) -> None:  # type: ignore[no-untyped-def]
    created = _create(shared)
    with recipient(shared.server) as browser:
        assert browser.get("/s/view").status_code == 401
        assert browser.get(QIDO_STUDIES, headers={"Accept": "application/dicom+json"}).status_code == 401
        unknown = browser.post("/s/" + "A" * 43, data={"pin": created.pin})
        wrong = open_link(browser, _url(created), "000000" if created.pin != "000000" else "111111")
        assert unknown.status_code == wrong.status_code == 401
        assert _message(unknown.text) == _message(wrong.text)  # unknown link and wrong PIN look alike
        for _ in range(4):
            open_link(browser, _url(created), "999999" if created.pin != "999999" else "888888")
        locked = open_link(browser, _url(created), created.pin)  # the right PIN, too late
        assert locked.status_code == 403 and "locked" in locked.text
        assert SHARE_COOKIE not in locked.headers.get("set-cookie", "")
    auth = [e for e in events if isinstance(e, UserAuthentication)]
    assert [e.kind for e in auth] == ["failure", "failure", "failure", "failure", "failure", "lockout", "failure"]
    assert all(e.address == "127.0.0.1" for e in auth) and auth[0].user == "share:unknown" and auth[1].user == f"share:{created.id}"
    assert shared.archive.operator.shares.show(created.id).state == "locked"


def _message(html: str) -> str:
    start = html.index('role="alert">') + len('role="alert">')
    return html[start:html.index("<", start)]


def test_expired_revoked_and_used_up_links_stop_at_once(shared: Shared, events) -> None:  # type: ignore[no-untyped-def]
    once = _create(shared, max_uses=1)
    revoked = _create(shared)
    expiring = _create(shared)
    with recipient(shared.server) as first, recipient(shared.server) as second:
        assert open_link(first, _url(once), once.pin).status_code == 303
        used_up = open_link(second, _url(once), once.pin)
        assert used_up.status_code == 403 and "used" in used_up.text

        assert open_link(second, _url(revoked), revoked.pin).status_code == 303
        assert second.get("/s/view").status_code == 200
        shared.archive.operator.shares.revoke(revoked.id, "sent to the wrong colleague")
        assert second.get("/s/view").status_code == 401  # the open session died with the link
        assert second.get(QIDO_STUDIES, headers={"Accept": "application/dicom+json"}).status_code == 401
        assert open_link(second, _url(revoked), revoked.pin).status_code == 403

        third = recipient(shared.server)
        assert open_link(third, _url(expiring), expiring.pin).status_code == 303
        with write_session(shared.archive.ctx.engine) as s:
            s.execute(update(ShareLink).where(ShareLink.id == expiring.id).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        assert third.get("/s/view").status_code == 401
        late = open_link(third, _url(expiring), expiring.pin)
        assert late.status_code == 403 and "expired" in late.text
        third.close()
    assert [e.share_id for e in events if isinstance(e, ShareRevoked)] == [revoked.id]
    with read_session(shared.archive.ctx.engine) as s:
        assert s.scalar(select(ShareSession).where(ShareSession.share_id == revoked.id)) is None


def test_the_recipient_cookie_cannot_write_and_forms_refuse_other_sites(shared: Shared) -> None:
    created = _create(shared)
    with recipient(shared.server) as browser:
        assert open_link(browser, _url(created), created.pin).status_code == 303
        content_type, body = encode([next(iter(shared.objects.values()))])
        stow = browser.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
        assert stow.status_code == 401  # the share cookie authenticates reads only
        assert browser.post("/shares", json={"study": shared.bob_study, "to": "me"}).status_code == 401
        cross = browser.post(f"/s/{created.token}", data={"pin": created.pin}, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403
        cross = browser.post(f"/s/{created.token}", data={"pin": created.pin}, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403


def test_a_series_limited_link_shows_only_its_series(shared: Shared) -> None:
    first, second = shared.alice_series
    created = _create(shared, series=[second], download=True)
    with recipient(shared.server) as browser:
        assert open_link(browser, _url(created), created.pin).status_code == 303
        series = browser.get(f"/dicomweb/studies/{shared.alice_study}/series", headers={"Accept": "application/dicom+json"}).json()
        assert [s["0020000E"]["Value"][0] for s in series] == [second]
        assert browser.get(f"/dicomweb/studies/{shared.alice_study}/series/{first}/metadata").status_code == 404
        other = _first_instance(shared, first)
        assert browser.get(f"/dicomweb/studies/{shared.alice_study}/series/{first}/instances/{other}/rendered").status_code == 404
        assert browser.get(f"/dicomweb/studies/{shared.alice_study}/metadata").status_code == 200
        assert browser.get("/s/view").text.count('class="frame"') == 2
        with zipfile.ZipFile(io.BytesIO(browser.get("/s/download").content)) as z:
            assert len([n for n in z.namelist() if n != "DICOMDIR"]) == 2


def test_download_only_when_the_link_allows_it(shared: Shared, events) -> None:  # type: ignore[no-untyped-def]
    created = _create(shared)
    with recipient(shared.server) as browser:
        assert open_link(browser, _url(created), created.pin).status_code == 303
        assert "/s/download" not in browser.get("/s/view").text
        assert browser.get("/s/download").status_code == 403
    refused = [e for e in events if isinstance(e, AccessRefused)]
    assert refused and refused[-1].action is Action.EXPORT and refused[-1].principal.name == f"share:{created.id}"


def test_a_deidentified_share_serves_only_the_copy(shared: Shared) -> None:
    created = _create(shared, deidentify=True, download=True)
    assert created.deidentified and created.served_study_uid != shared.alice_study and created.copied == 6
    with recipient(shared.server) as browser:
        assert open_link(browser, _url(created), created.pin).status_code == 303
        studies = browser.get(QIDO_STUDIES, headers={"Accept": "application/dicom+json"}).json()
        assert [s["0020000D"]["Value"][0] for s in studies] == [created.served_study_uid]
        assert browser.get(f"/dicomweb/studies/{shared.alice_study}/metadata").status_code == 404  # the identified original
        zipped = browser.get("/s/download").content
    with zipfile.ZipFile(io.BytesIO(zipped)) as z:
        for name in z.namelist():
            if name == "DICOMDIR":
                continue
            ds = pydicom.dcmread(io.BytesIO(z.read(name)))
            assert ds.PatientIdentityRemoved == "YES" and "ZEBRAFINCH" not in str(ds.PatientName)
            assert ds.StudyInstanceUID == created.served_study_uid
    # The copy is for the link only: no user of the department finds it.
    token = shared.server.token("dr.ann", "radiologist")
    with shared.server.http(token) as http:
        found = http.get(QIDO_STUDIES, headers={"Accept": "application/dicom+json"}).json()
        assert created.served_study_uid not in {s["0020000D"]["Value"][0] for s in found}
        assert shared.alice_study in {s["0020000D"]["Value"][0] for s in found}  # the source is untouched and still there


def test_policies_decide_step_up_and_de_identification_for_the_person_sharing(shared: Shared) -> None:
    token = shared.server.token("dr.ann", "radiologist")
    base = {"study": shared.alice_study, "to": "a colleague"}
    with shared.server.http(token) as http:
        external = http.post("/shares", json={**base, "recipient": "external"})
        assert external.status_code == 401 and 'error="insufficient_user_authentication"' in external.headers["www-authenticate"]
        # Research: outside, and de-identified by policy; the copy is made only after the step-up.
        research = http.post("/shares", json={**base, "recipient": "research"})
        assert research.status_code == 401, research.text
    by_operator = shared.archive.operator.shares.create(shared.alice_study, recipient="AI vendor X, model validation",
                                                        recipient_kind="research")
    assert by_operator.deidentified and by_operator.deidentified_by_policy and by_operator.served_study_uid != shared.alice_study
    identified = shared.archive.operator.shares.create(shared.alice_study, recipient="referring GP", recipient_kind="external")
    assert not identified.deidentified and identified.served_study_uid == shared.alice_study
    # A login session's TOTP is fresh for 300 s: an external share goes through, and asks again once it is stale.
    account = add_user(shared.archive, "dr.out", "radiologist", "RADIOLOGY")
    with shared.server.http() as http:
        login = http.post("/auth/login", json={"username": account.name, "password": account.password, "totp": account.code()})
        assert login.status_code == 200, login.text
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        fresh = http.post("/shares", json={**base, "recipient": "external"}, headers=bearer)
        assert fresh.status_code == 201 and not fresh.json()["deidentified"], fresh.text
        with write_session(shared.archive.ctx.engine) as s:
            s.execute(update(AuthSession).where(AuthSession.user_name == "dr.out").values(mfa_at=datetime.now(UTC) - timedelta(minutes=10)))
        assert http.post("/shares", json={**base, "recipient": "external"}, headers=bearer).status_code == 401
    other = shared.server.token("dr.cardio", "cardiologist", department="CARDIOLOGY")
    with shared.server.http(other) as http:
        # Another department's study: like a study that does not exist.
        assert http.post("/shares", json={**base, "recipient": "internal"}).status_code == 404
    tech = shared.server.token("tech.tom", "technologist")
    with shared.server.http(tech) as http:
        assert http.post("/shares", json={**base, "recipient": "internal"}).status_code in (403, 404)


def test_owners_see_their_links_others_do_not_and_officers_see_all(shared: Shared) -> None:
    ann = shared.server.token("dr.ann", "radiologist")
    bea = shared.server.token("dr.bea", "radiologist")
    officer = shared.server.token("sec.sam", "security_officer", department=None)
    with shared.server.http(ann) as http:
        mine = http.post("/shares", json={"study": shared.alice_study, "to": "colleague", "recipient": "internal"}).json()
        assert [v["id"] for v in http.get("/shares").json()] == [mine["id"]]
    with shared.server.http(bea) as http:
        assert http.get("/shares").json() == []
        assert http.get("/shares", params={"everyone": "true"}).status_code == 403  # whether or not others have links
        assert http.get(f"/shares/{mine['id']}").status_code == 404
        assert http.post(f"/shares/{mine['id']}/revoke", json={"reason": "mine now"}).status_code == 404
        assert http.get(f"/shares/{'0' * 16}").status_code == 404
    with shared.server.http(officer) as http:
        assert [v["id"] for v in http.get("/shares", params={"everyone": "true"}).json()] == [mine["id"]]
        revoked = http.post(f"/shares/{mine['id']}/revoke", json={"reason": "policy breach"})
        assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"


def test_bad_input_gets_clear_errors(shared: Shared) -> None:
    with pytest.raises(ValueError, match="who the share is for"):
        _create(shared, recipient="   ")
    with pytest.raises(ValueError, match="at most"):
        _create(shared, expires_in=timedelta(days=400))
    with pytest.raises(ValueError, match="not in study"):
        _create(shared, series=["1.2.3.4"])
    with pytest.raises(ValueError, match="recipient kind"):
        _create(shared, recipient_kind="friend")
    from dicomguard.errors import NotFoundError

    with pytest.raises(NotFoundError):
        _create(shared, study="1.2.3.999")
    with recipient(shared.server) as browser:
        assert browser.get("/s/short").status_code == 404
        assert browser.post("/s/" + "A" * 43, data={"pin": "x" * 40}).status_code == 422


def test_suspending_a_user_after_an_alert_revokes_their_links(shared: Shared) -> None:
    from dicomguard.core.access import Principal, PrincipalKind

    add_user(shared.archive, "dr.gone", "radiologist", "RADIOLOGY")
    gone = shared.archive.services(Principal(PrincipalKind.USER, "dr.gone", frozenset({"radiologist"}),
                                             attributes={"department": "RADIOLOGY"}))
    created = gone.shares.create(shared.alice_study, recipient="a friend outside", recipient_kind="internal")
    with recipient(shared.server) as browser:
        assert open_link(browser, _url(created), created.pin).status_code == 303
        now = datetime.now(UTC)
        _, containment = shared.archive.services(Principal.operator("detector")).detection.raise_alert(
            "dr.gone", "bulk-retrieve", "critical", now, now, (), "bulk export before leaving", [])
        assert containment == "suspend"
        assert browser.get("/s/view").status_code == 401  # the recipient's session died with the link
    shown = shared.archive.operator.shares.show(created.id)
    assert shown.state == "revoked" and shown.revoked_by == "operator:detector"
