"""The console's web security: cookie, headers, CSRF on every form, no script anywhere, stored XSS inert, insiders.

Every test signs in through the real sign-in form over HTTPS (password + TOTP) and
talks to the real server as a browser would (cookies, Origin header).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from dicomguard.identity import users
from dicomguard.identity.tokens import create_token
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import AuthSession
from dicomguard.web.console import PAGE_MODULES, PREFIX
from tests.audit.test_import import foreign
from tests.console.conftest import ConsoleClient, Site

OFFICER_PAGES = ("/console/overview", "/console/alerts", "/console/audit", "/console/audit/patient", "/console/incidents",
                 "/console/risks", "/console/posture", "/console/backups", "/console/people", "/console/devices")
# What each officer page renders (its table or form): a refused request must show none of it.
OFFICER_MARKERS = ('id="chart-accesses"', 'id="alerts"', 'id="audit-search"', 'id="patient-history"', 'id="incidents"',
                   'id="risks"', 'id="findings"', 'id="rules"', 'id="accounts"', 'id="devices"')


def _form_routes() -> list[str]:
    """Every state-changing console route, with sample path parameters."""
    samples = {"alert_id": "1", "name": "dr.rad", "action": "disable", "ae_title": "CT1", "share_id": "0123456789abcdef"}
    paths = []
    for module in PAGE_MODULES:
        for route in module.router.routes:
            if "POST" in getattr(route, "methods", ()):
                paths.append(PREFIX + re.sub(r"\{(\w+)\}", lambda m: samples[m.group(1)], route.path))
    return sorted(set(paths))


def test_sign_in_sets_a_host_only_secure_httponly_strict_session_cookie(site: Site, client: ConsoleClient) -> None:
    r = client.sign_in(site.accounts["officer"])
    assert r.status_code == 303 and r.headers["location"] == "/console/overview"
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("__Host-dicomguard-console="))
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"secure", "httponly", "path"} <= attributes and "samesite=strict" in cookie.lower()
    assert "domain" not in attributes and "max-age" not in attributes and "expires" not in attributes  # dies with the browser
    assert client.get("/console/overview").status_code == 200


def test_wrong_factors_sign_nobody_in_and_say_not_which(site: Site, client: ConsoleClient) -> None:
    officer = site.accounts["officer"]
    client.get("/console/login")
    wrong_code = client.post("/console/login", {"username": officer.name, "password": officer.password, "totp": "000000"})
    client.get("/console/login")
    wrong_password = client.post("/console/login", {"username": officer.name, "password": "nope-nope-nope", "totp": officer.code()})
    client.get("/console/login")
    nobody = client.post("/console/login", {"username": "no.such.user", "password": "x" * 12, "totp": "123456"})
    for r in (wrong_code, wrong_password, nobody):
        assert r.status_code == 401 and "Sign-in failed: check your name, password and code." in r.text
        assert "__Host-dicomguard-console=" not in r.headers.get("set-cookie", "")
    assert client.get("/console/overview").status_code == 303  # still signed out


def test_the_sign_in_form_needs_its_own_token_and_this_origin(site: Site, client: ConsoleClient) -> None:
    officer = site.accounts["officer"]
    fields = {"username": officer.name, "password": officer.password, "totp": officer.code()}
    assert client.post("/console/login", fields).status_code == 403  # no pre-session cookie or token: login CSRF
    client.get("/console/login")
    client.origin = "https://evil.example"
    assert client.post("/console/login", fields).status_code == 403


@pytest.mark.parametrize("page", ["/console/login", "/console/overview", "/console/alerts", "/console/audit", "/console/studies",
                                  "/console/shares", "/console/people"])
def test_every_page_forbids_script_framing_and_caching(site: Site, client: ConsoleClient, page: str) -> None:
    if page != "/console/login":
        client.sign_in(site.accounts["officer"])
    r = client.get(page)
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "script-src" not in csp  # falls back to default-src 'none': no script at all
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    assert r.headers["referrer-policy"] == "no-referrer" and "max-age=" in r.headers["strict-transport-security"]
    assert "<script" not in r.text.lower()  # the page ships no script
    assert not re.search(r"<[^>]+\son[a-z]+=", r.text, re.I)  # and no inline event handler


def test_every_form_refuses_a_missing_or_foreign_csrf_token_and_another_origin(site: Site, client: ConsoleClient) -> None:
    client.sign_in(site.accounts["admin"])
    routes = _form_routes()
    assert len(routes) >= 12, routes
    other = site.client()
    other.sign_in(site.accounts["officer"])  # a valid token, of another session
    try:
        for path in routes:
            assert client.post(path, csrf=False).status_code == 403, path
            assert client.post(path, {"csrf": other.csrf}).status_code == 403, path
            cross = client.http.post(path, data={"csrf": client.csrf}, headers={"Origin": "https://evil.example"})
            assert cross.status_code == 403, path
            site_header = client.http.post(path, data={"csrf": client.csrf}, headers={"Sec-Fetch-Site": "cross-site"})
            assert site_header.status_code == 403, path
    finally:
        other.close()
    assert "Not permitted" not in client.get("/console/people").text  # nothing was changed or refused along the way
    assert 'id="account-dr.rad"' in client.get("/console/people").text and "disabled" not in client.get("/console/people").text


def test_the_cookie_is_no_bearer_token_and_no_bearer_token_is_a_cookie(site: Site, client: ConsoleClient) -> None:
    client.sign_in(site.accounts["rad"])
    cookie = client.http.cookies.get("__Host-dicomguard-console")
    assert cookie
    assert site.server.http(cookie).get("/dicomweb/studies").status_code == 401
    with write_session(site.archive.ctx.engine) as s:
        api_token = create_token(s, "dr.rad", timedelta(hours=1))
    stranger = site.client()
    try:
        stranger.http.cookies.set("__Host-dicomguard-console", api_token, domain="127.0.0.1")
        assert stranger.get("/console/studies").status_code == 303  # to the sign-in page
    finally:
        stranger.close()


def test_sign_out_ends_the_session_on_the_server(site: Site, client: ConsoleClient) -> None:
    client.sign_in(site.accounts["officer"])
    cookie = client.http.cookies.get("__Host-dicomguard-console")
    client.get("/console/overview")
    r = client.post("/console/logout")
    assert r.status_code == 303 and r.headers["location"] == "/console/login?signed_out=bye"
    replay = site.client()
    try:
        replay.http.cookies.set("__Host-dicomguard-console", cookie, domain="127.0.0.1")  # a copied cookie is dead too
        assert replay.get("/console/overview").status_code == 303
    finally:
        replay.close()


def test_an_idle_session_is_signed_off_after_the_configured_time(site: Site, client: ConsoleClient) -> None:
    client.sign_in(site.accounts["officer"])
    idle = timedelta(minutes=site.archive.settings.sessions.idle_by_role["security_officer"])

    def idle_for(delta: timedelta) -> None:
        with write_session(site.archive.ctx.engine) as s:
            s.execute(update(AuthSession).where(AuthSession.user_name == "sec.officer").values(last_seen_at=datetime.now(UTC) - delta))

    idle_for(idle - timedelta(seconds=30))
    assert client.get("/console/overview").status_code == 200  # just inside the timeout: still signed in
    idle_for(idle + timedelta(seconds=1))
    r = client.get("/console/overview")
    assert r.status_code == 303 and r.headers["location"] == "/console/login?signed_out=idle"
    assert "signed out after a period without activity" in client.get("/console/login?signed_out=idle").text


def test_a_technologist_reaches_no_officer_page_and_sees_none_of_it(site: Site, client: ConsoleClient) -> None:
    r = client.sign_in(site.accounts["tech"])
    assert r.headers["location"] == "/console/studies"
    menu = client.get("/console/studies").text
    for page in OFFICER_PAGES:
        assert f'href="{page}"' not in menu
    for page, marker in zip(OFFICER_PAGES, OFFICER_MARKERS, strict=True):
        r = client.get(page)
        assert r.status_code == 403, page
        assert marker not in r.text and "Not permitted" in r.text, page
    for path, data in (("/console/audit", {"patient": "ALICE"}), ("/console/audit/patient", {"patient": "ALICE"}),
                       ("/console/alerts/1/contain", {"level": "suspend"}), ("/console/people/dr.rad/disable", {}),
                       ("/console/devices/allow-list", {"ae_title": "CT9", "ip": "127.0.0.9"})):
        r = client.post(path, data)
        assert r.status_code == 403, path
        assert "<table" not in r.text, path


def test_stored_script_in_names_recipients_and_audit_fields_is_rendered_inert(site: Site, client: ConsoleClient) -> None:
    payload = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    archive = site.archive
    operator = archive.operator
    operator.accounts.create("x.user", "radiologist", department=payload[:64])
    operator.devices.add("XSS1", payload, operations=("echo", "store"))
    with read_session(archive.ctx.engine) as s:
        rad = archive.services(users.user_principal(s, "dr.rad"))
    rad.shares.create(site.alice_study, recipient=payload, recipient_kind="internal")
    result = operator.audit.import_messages([("line 1", foreign(1, user=payload, patient="ALICE-X"))], "import:xss")
    assert result.stored == 1, result.rejected
    client.sign_in(site.accounts["officer"])
    pages = [client.get("/console/people").text, client.get("/console/devices").text,
             client.post("/console/audit", {"patient": "ALICE-X"}).text]
    client.post("/console/logout")
    client.sign_in(site.accounts["rad"])
    pages.append(client.get("/console/shares").text)
    for text in (p.lower() for p in pages):  # departments are stored upper-case
        assert "&lt;script&gt;alert(" in text and "&lt;img src=x onerror=alert(1)&gt;" in text
        assert "<script" not in text and "<img src=x" not in text


def test_a_forged_token_of_any_shape_is_a_403_not_an_error(site: Site, client: ConsoleClient) -> None:
    client.sign_in(site.accounts["officer"])
    for forged in ("é" * 43, "\x00", "x" * 5000, ""):
        assert client.post("/console/audit", {"csrf": forged}).status_code == 403
    client.get("/console/login")
    officer = site.accounts["officer"]
    r = client.post("/console/login", {"csrf": "ü", "username": officer.name, "password": officer.password, "totp": officer.code()})
    assert r.status_code == 403
