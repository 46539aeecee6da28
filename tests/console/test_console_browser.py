"""The console in a real browser: Playwright driving Debian's chromium (nothing downloaded).

Sign-in with password + TOTP, idle sign-off, an officer containing a user from an
alert (whose next DICOMweb request is then refused), a radiologist sharing a study
in one click (and the recipient opening it), a technologist kept out of officer
pages, and axe-core's accessibility rules on every page at desktop (1280x800) and
tablet (768x1024) widths. No page may log a Content-Security-Policy violation or
any other console error. Screenshots of every page are written to
``$DICOMGUARD_TEST_ARTIFACTS/console`` (default ``test-artifacts/console``; not committed).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from sqlalchemy import update

from dicomguard.identity.tokens import create_token
from dicomguard.index.db import write_session
from dicomguard.index.models import AuthSession
from tests.console.conftest import Site
from tests.console.test_console_actions import _raise_alert
from tests.identity.conftest import Account, forget_totp_step

DESKTOP, TABLET = {"width": 1280, "height": 800}, {"width": 768, "height": 1024}
ARTIFACTS = Path(os.environ.get("DICOMGUARD_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")) / "console"


class Tab:
    """One browser tab of the console, collecting console errors (a CSP violation is one)."""

    def __init__(self, browser, site: Site, viewport: dict[str, int] = DESKTOP, bypass_csp: bool = False) -> None:  # type: ignore[no-untyped-def]
        self.site = site
        self.context = browser.new_context(ignore_https_errors=True, viewport=viewport, bypass_csp=bypass_csp, accept_downloads=True)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))

    def goto(self, path: str):  # type: ignore[no-untyped-def]
        return self.page.goto(self.site.server.url + path)

    def sign_in(self, account: Account) -> None:
        forget_totp_step(self.site.archive, account.name)
        self.goto("/console/login")
        self.page.fill("#username", account.name)
        self.page.fill("#password", account.password)
        self.page.fill("#totp", account.code())
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state()
        assert "/console/login" not in self.page.url, self.page.content()[-800:]

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


def test_sign_in_idle_sign_off_and_sign_out(browser, site: Site) -> None:  # type: ignore[no-untyped-def]
    tab = Tab(browser, site)
    try:
        tab.goto("/console/overview")
        assert tab.page.url.endswith("/console/login")  # not signed in: the sign-in page
        tab.shot("login")
        tab.page.fill("#username", "sec.officer")
        tab.page.fill("#password", "wrong password, surely")
        tab.page.fill("#totp", "123456")
        tab.page.click("button[type=submit]")
        assert "Sign-in failed" in tab.page.inner_text(".error")
        assert tab.problems == ["Failed to load resource: the server responded with a status of 401 (Unauthorized)"]
        tab.problems.clear()
        tab.sign_in(site.accounts["officer"])
        assert tab.page.url.endswith("/console/overview") and tab.page.inner_text("#signed-in-as") == "sec.officer"
        cookies = {c["name"]: c for c in tab.context.cookies()}
        console_cookie = cookies["__Host-dicomguard-console"]
        assert console_cookie["httpOnly"] and console_cookie["secure"] and console_cookie["sameSite"] == "Strict"
        assert console_cookie["expires"] == -1  # a session cookie
        assert tab.page.evaluate("document.cookie") == ""  # nothing a script could read
        assert tab.page.evaluate("localStorage.length + sessionStorage.length") == 0
        idle = timedelta(minutes=site.archive.settings.sessions.idle_by_role["security_officer"])
        with write_session(site.archive.ctx.engine) as s:
            s.execute(update(AuthSession).where(AuthSession.user_name == "sec.officer")
                      .values(last_seen_at=datetime.now(UTC) - idle - timedelta(seconds=1)))
        tab.goto("/console/alerts")
        assert "/console/login" in tab.page.url and "without activity" in tab.page.inner_text("main")
        tab.shot("signed-out-idle")
        tab.sign_in(site.accounts["officer"])
        tab.page.click("text=Sign out")
        tab.page.wait_for_url("**/console/login?signed_out=bye")
        tab.goto("/console/overview")
        assert tab.page.url.endswith("/console/login")
        assert tab.problems == []
    finally:
        tab.close()


def test_officer_finds_the_alert_contains_the_user_and_their_next_request_is_refused(browser, site: Site) -> None:  # type: ignore[no-untyped-def]
    with write_session(site.archive.ctx.engine) as s:
        rad_token = create_token(s, "dr.rad", timedelta(hours=1))
    with site.server.http(rad_token) as rad:
        assert rad.get("/dicomweb/studies").status_code == 200
    alert_id = _raise_alert(site, "dr.rad", "high")
    tab = Tab(browser, site)
    try:
        tab.sign_in(site.accounts["officer"])
        assert tab.page.inner_text("#tile-alerts .big") == "1"
        tab.shot("overview")
        tab.page.click("#tile-alerts")
        tab.page.wait_for_url("**/console/alerts")
        tab.shot("alerts")
        tab.page.click(f"a[href='/console/alerts/{alert_id}']")
        tab.page.wait_for_url(f"**/console/alerts/{alert_id}")
        assert "none ordered by or assigned to the user" in tab.page.inner_text(".explanation")
        tab.shot("alert")
        tab.page.select_option("#level", "suspend")
        tab.page.click("#contain button[type=submit]")
        tab.page.wait_for_load_state()
        assert tab.page.inner_text("#alert-containment") == "suspend"
        with site.server.http(rad_token) as rad:
            assert rad.get("/dicomweb/studies").status_code == 401
        assert tab.problems == []
    finally:
        tab.close()


def test_a_radiologist_shares_a_study_in_one_click_and_the_recipient_opens_it(browser, site: Site) -> None:  # type: ignore[no-untyped-def]
    tab = Tab(browser, site)
    try:
        tab.sign_in(site.accounts["rad"])
        assert tab.page.url.endswith("/console/studies")
        tab.page.click("#study-search button[type=submit]")
        tab.page.wait_for_selector("#studies")
        tab.shot("studies")
        tab.page.click("#studies button.share >> nth=0")
        tab.page.wait_for_selector("#share")
        tab.shot("share-form")
        tab.page.fill("#sh-to", "Dr. B, tumour board")
        tab.page.select_option("#sh-kind", "internal")
        tab.page.click("#share-create")
        tab.page.wait_for_selector("#share-link")
        link, pin = tab.page.inner_text("#share-link"), tab.page.inner_text("#share-pin")
        tab.shot("share-done")
        tab.goto("/console/shares")
        assert "Dr. B, tumour board" in tab.page.inner_text("#shares") and pin not in tab.page.content()
        tab.shot("shares")
        assert tab.problems == []
    finally:
        tab.close()
    receiver = Tab(browser, site)
    try:
        receiver.page.goto(link)
        receiver.page.fill("#pin", pin)
        receiver.page.click("button[type=submit]")
        receiver.page.wait_for_url("**/s/view")
        assert receiver.page.locator("img.frame").count() >= 1
    finally:
        receiver.close()


def test_a_technologist_cannot_reach_officer_pages(browser, site: Site) -> None:  # type: ignore[no-untyped-def]
    tab = Tab(browser, site)
    try:
        tab.sign_in(site.accounts["tech"])
        nav = tab.page.inner_text("header nav")
        assert "Alerts" not in nav and "Audit" not in nav and "Studies" in nav
        for path in ("/console/overview", "/console/alerts", "/console/audit", "/console/people", "/console/incidents"):
            response = tab.goto(path)
            assert response.status == 403, path
            assert tab.page.locator("table, svg, form#audit-search").count() == 0, path
            assert tab.page.inner_text("h1") == "Not permitted"
        tab.shot("technologist-refused")
    finally:
        tab.close()


PAGES = {
    "officer": ("/console/overview", "/console/alerts", "/console/alerts/{alert}", "/console/audit", "/console/audit/patient",
                "/console/people", "/console/devices", "/console/incidents", "/console/risks", "/console/posture", "/console/backups"),
    "admin": ("/console/people", "/console/devices"),
    "rad": ("/console/studies", "/console/shares"),
}


@pytest.mark.parametrize("viewport", [DESKTOP, TABLET], ids=["desktop", "tablet"])
def test_every_page_passes_axe_at_desktop_and_tablet_width(browser, site: Site, viewport: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    alert_id = _raise_alert(site, "dr.rad")
    axe = Axe()
    failures: dict[str, list[str]] = {}
    for who, pages in PAGES.items():
        tab = Tab(browser, site, viewport, bypass_csp=True)  # axe is injected by the test: let it run
        try:
            tab.goto("/console/login")
            if who == "officer":
                results = axe.run(tab.page)
                failures.update({"/console/login": [v["id"] for v in results.response["violations"]]} if results.violations_count else {})
            tab.sign_in(site.accounts[who])
            for path in pages:
                path = path.format(alert=alert_id)
                response = tab.goto(path)
                assert response.status == 200, path
                results = axe.run(tab.page)
                assert len(results.response["passes"]) >= 10, path  # axe ran its rules on the page
                if results.violations_count:
                    failures[path] = [f"{v['id']}: {v['help']} ({len(v['nodes'])})" for v in results.response["violations"]]
                name = f"{viewport['width']}-{who}-" + path.strip("/").replace("/", "-")
                tab.shot(name)
            tab.page.keyboard.press("Tab")  # keyboard: the first stop is the skip link
            assert tab.page.evaluate("document.activeElement.className") == "skip"
        finally:
            tab.close()
    assert failures == {}
