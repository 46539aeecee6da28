"""Administration over HTTPS: the same services, the same policies, the same records as the CLI; insiders refused."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomguard.cli.main import app
from dicomguard.core.events import AccessRefused, SecurityConfigurationChanged
from dicomguard.identity import users
from dicomguard.index.db import read_session
from dicomguard.index.models import GatewayAllow, User
from tests.dicom_factory import ALICE, DEPARTMENT, ct_series, dataset_of

runner = CliRunner()


@pytest.fixture
def people(web) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Bearer tokens of an admin, a radiologist, a security officer and a second admin."""
    return {
        "admin": web.token("it.admin", "admin", department=None),
        "other_admin": web.token("it.other", "admin", department=None),
        "rad": web.token("dr.rad", "radiologist"),
        "officer": web.token("sec.officer", "security_officer", department=None),
    }


def test_an_admin_creates_and_manages_an_account_and_each_change_is_recorded(web, people, events) -> None:  # type: ignore[no-untyped-def]
    with web.http(people["admin"]) as http:
        r = http.post("/admin/users", json={"name": "dr.new", "role": "cardiologist", "department": "cardiology",
                                             "referring_name": "DOE^JOHN"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["password"] and body["totp_secret"] and body["provisioning_uri"].startswith("otpauth://")
        assert body["attributes"]["department"] == "CARDIOLOGY"
        # The name is kept only as a token. Checked outside the random TOTP secret, whose base32 letters may spell "DOE".
        assert "DOE^JOHN" not in r.text and "DOE" not in str(body["attributes"])
        assert r.headers["cache-control"] == "no-store"
        assert http.patch("/admin/users/dr.new", json={"modalities": ["us"]}).json()["attributes"]["modalities"] == ["US"]
        assert http.post("/admin/users/dr.new/roles", json={"role": "researcher"}).json()["granted"] is True
        assert http.delete("/admin/users/dr.new/roles/researcher").status_code == 204
        assert http.delete("/admin/users/dr.new/roles/researcher").status_code == 404
        assert http.post("/admin/users/dr.new/disable").status_code == 204
        listed = {u["name"]: u for u in http.get("/admin/users").json()}
        assert listed["dr.new"]["disabled"] is True and "password" not in str(listed)
        assert http.post("/admin/users", json={"name": "dr.new", "role": "radiologist"}).status_code == 400  # exists
        assert http.post("/admin/users", json={"name": "x", "role": "radiologist"}).status_code == 400  # bad name
        assert http.post("/admin/users", json={"name": "dr.bad", "role": "superuser"}).status_code == 400
        assert http.post("/admin/users/nobody.here/unlock").status_code == 404
    changes = [(e.subject, e.change) for e in events if isinstance(e, SecurityConfigurationChanged)]
    assert [c for _, c in changes] == ["account created with role cardiologist", "policy attributes changed: modalities",
                                       "role researcher granted", "role researcher revoked", "account disabled"]
    assert all(e.principal.name == "it.admin" for e in events if isinstance(e, SecurityConfigurationChanged))


def test_insiders_with_valid_tokens_cannot_administer_or_elevate_themselves(web, people, events) -> None:  # type: ignore[no-untyped-def]
    with web.http(people["rad"]) as http:  # a clinician with a valid token
        assert http.post("/admin/users", json={"name": "dr.mine", "role": "admin"}).status_code == 403
        assert http.post("/admin/users/dr.rad/roles", json={"role": "admin"}).status_code == 403
        assert http.get("/admin/users").status_code == 403
        assert http.post("/admin/devices", json={"ae_title": "ROGUE", "name": "x"}).status_code == 403
        assert http.post("/admin/gateway/allow-list", json={"ae_title": "ROGUE", "ip": "10.0.0.66"}).status_code == 403
        # no oracle: an unknown account answers like a known one
        assert http.post("/admin/users/nobody.here/unlock").status_code == 403
        assert http.post("/admin/users/it.admin/unlock").status_code == 403
    with web.http(people["admin"]) as http:  # an admin: never on their own account
        assert http.post("/admin/users/it.admin/roles", json={"role": "security_officer"}).status_code == 403
        assert http.patch("/admin/users/it.admin", json={"clearances": ["vip"]}).status_code == 403
        assert http.post("/admin/users/it.admin/reset-mfa").status_code == 403
        assert http.post("/admin/users/it.admin/recovery-codes").status_code == 403
        # nor can they read images by making a study theirs: no image access at all
        data = ct_series(ALICE, n=1)[0]
        web.archive.operator.store.ingest(data)
        study = dataset_of(data).StudyInstanceUID
        assert http.get(f"/dicomweb/studies/{study}").status_code == 404
    with web.http(people["officer"]) as http:  # reads the trail, administers nothing
        assert http.post("/admin/users/dr.rad/disable").status_code == 403
        assert http.get("/metrics").status_code == 200
    refused = [e for e in events if isinstance(e, AccessRefused)]
    assert {e.principal.name for e in refused} >= {"dr.rad", "it.admin", "sec.officer"}
    assert sum(e.action.value.startswith("account") for e in refused) >= 8
    with read_session(web.archive.ctx.engine) as s:
        assert s.get(User, "dr.mine") is None
        assert users.user_roles(s, "dr.rad") == ("radiologist",) and users.user_roles(s, "it.admin") == ("admin",)
        assert s.query(GatewayAllow).count() == 0


def test_an_oversized_or_hostile_admin_body_is_refused_without_a_change(web, people) -> None:  # type: ignore[no-untyped-def]
    with web.http(people["admin"]) as http:
        assert http.post("/admin/users", json={"name": "dr.long", "role": "radiologist", "modalities": ["CT"] * 1000}).status_code == 400
        assert http.post("/admin/users", json={"name": "dr.long", "role": "radiologist", "site": "x" * 10_000}).status_code == 400
        assert http.post("/admin/users", content=b"{" * 100_000, headers={"Content-Type": "application/json"}).status_code == 400
        assert http.post("/admin/gateway/allow-list", json={"ae_title": "OK", "ip": "10.0.0.0/8"}).status_code == 400
        assert http.post("/admin/devices", json={"ae_title": "../../etc", "name": "x"}).status_code == 400
    with read_session(web.archive.ctx.engine) as s:
        assert s.get(User, "dr.long") is None


def test_devices_and_allow_list_over_https(web, people, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with web.http(people["admin"]) as http:
        r = http.post("/admin/devices", json={"ae_title": "USCART", "name": "echo cart", "operations": ["echo", "store"],
                                              "department": DEPARTMENT})
        assert r.status_code == 201 and "BEGIN" in r.json()["key_pem"]
        assert http.post("/admin/devices", json={"ae_title": "USCART", "name": "again"}).status_code == 400
        (device,) = [d for d in http.get("/admin/devices").json() if d["ae_title"] == "USCART"]
        assert device["department"] == DEPARTMENT and not device["revoked"]
        assert http.post("/admin/devices/USCART/revoke").status_code == 204
        assert http.post("/admin/devices/NOSUCH/revoke").status_code == 404
        assert http.post("/admin/gateway/allow-list", json={"ae_title": "OLDCT", "ip": "10.1.2.3"}).json() == {"added": True}
        assert http.get("/admin/gateway/allow-list").json()[0]["ae_title"] == "OLDCT"
        assert http.post("/admin/gateway/allow-list/deny", json={"ae_title": "OLDCT"}).json() == {"removed": 1}


def test_a_policy_edit_refuses_account_creation_in_the_cli_and_over_https_alike(web, people, home, events) -> None:  # type: ignore[no-untyped-def]
    """No hard-coded rule: forbid account-create in a policy file and both entry points refuse, and record it."""
    (home / "policies" / "zz-freeze-accounts.cedar").write_text(
        '@id("freeze-account-creation")\nforbid (principal, action == Action::"account-create", resource);\n')
    web.archive.operator.policies.reload()
    r = runner.invoke(app, ["user", "add", "dr.cli", "--role", "radiologist"], catch_exceptions=False)
    assert r.exit_code == 1 and "freeze-account-creation" in r.output
    with web.http(people["admin"]) as http:
        assert http.post("/admin/users", json={"name": "dr.web", "role": "radiologist"}).status_code == 403
        assert http.post("/admin/users/dr.rad/unlock").status_code == 204  # the rest of administration is untouched
    refused = [e for e in events if isinstance(e, AccessRefused) and e.action.value == "account-create"]
    assert [e.principal.name for e in refused] == ["it.admin"]  # the CLI ran in its own process: its refusal is in the trail
    found = runner.invoke(app, ["audit", "search", "--event", "security-alert", "--failures"], catch_exceptions=False).stdout
    assert '"local-operator"' in found and '"it.admin"' in found and "account-create refused" in found
    with read_session(web.archive.ctx.engine) as s:
        assert s.get(User, "dr.cli") is None and s.get(User, "dr.web") is None


def test_token_scopes_limit_administration_to_the_administer_scope(web) -> None:  # type: ignore[no-untyped-def]
    from tests.web.conftest import issue_token

    web.user("it.svc", "admin", department=None)
    query_only = issue_token(web.archive.ctx.engine, "it.svc", timedelta(hours=1), ["query"])
    admin_only = issue_token(web.archive.ctx.engine, "it.svc", timedelta(hours=1), ["administer"])
    with web.http(query_only) as http:
        assert http.get("/admin/users").status_code == 403
    with web.http(admin_only) as http:
        assert http.get("/admin/users").status_code == 200
        assert http.get("/admin/devices").status_code == 200
        assert http.get("/dicomweb/studies", headers={"Accept": "application/dicom+json"}).status_code == 204  # filtered: nothing
